//! What crosses the wire between a heartsync page and the server, the
//! phase math both sides agree on, and the one client core every client
//! (the page, the terminal) is a thin shell around.
//!
//! This crate is the single source of protocol v1 (see `PROTOCOL.md`). It
//! builds for `wasm32-unknown-unknown` and for the host, and depends on
//! nothing heavier than serde, so the page, the server, the tests and the
//! tools all speak through the same types.
//!
//! # Layout
//! - [`protocol`]: the messages, their parsing and validation with typed
//!   errors, and the names (rooms, client ids) that appear in URLs.
//! - [`phase`]: pure functions on beat phases: wrapping, projecting a report
//!   to another instant, circular mean and coherence, the Kuramoto step.
//! - [`clock`]: estimating the offset between a client clock and the server
//!   clock from request/response samples (Cristian's algorithm).
//! - [`beat`]: the lub-dub envelope, how strongly a heart contracts at each
//!   phase, so that every client's heart beats alike.
//! - [`backoff`]: when a client reconnects after losing the server:
//!   full-jitter exponential backoff, in milliseconds.
//! - [`client`]: the client core: session, heart, love ledger, clock sync,
//!   link state and the URL and client-id rules, pure and without I/O.

pub mod backoff;
pub mod beat;
pub mod client;
pub mod clock;
pub mod phase;
pub mod protocol;

pub use clock::{ClockSample, best_offset};
pub use phase::{OrderParameter, PhaseSum, kuramoto_step, project, wrap};
pub use protocol::{
    ClientId, ClientMessage, Consensus, ErrorCode, LoveAck, LoveFolded, PROTOCOL_VERSION,
    PhaseReport, ProtocolError, RoomName, ServerMessage, TimeReply, Welcome,
};
