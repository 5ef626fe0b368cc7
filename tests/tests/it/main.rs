//! heartsync's integration tests: one binary, one module per behaviour family.

mod api;
mod browser;
mod budget;
mod cluster;
mod consensus;
mod deploy;
mod hostile;
mod limits;
mod love;
mod metrics;
mod pages;
mod protocol;
mod tools;
