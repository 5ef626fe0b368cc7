//! heartsync's integration tests: one binary, one module per behaviour family.

mod consensus;
mod love;
mod protocol;
