//! The one client core: everything a heartsync client decides, without a
//! socket, a timer or a screen. The browser page (`frontend`) and the
//! terminal client (`term`) are thin shells around it: they own the socket,
//! the timers and the drawing, feed events and the time in, and do what
//! comes out. Pure: times are local milliseconds as `f64`, randomness comes
//! in as numbers, so every rule is tested natively.
//!
//! # Layout
//! - [`session`]: the conversation with a room: what to send when, what each
//!   server message changes, when a connection is lost, what to show.
//! - [`heart`]: the client's heart, its phase and rate and the Kuramoto pull
//!   toward the room; the resting beat [`RESTING_BPM`] and coupling
//!   [`COUPLING`] every client (and the server's empty room) uses.
//! - [`love`]: the love ledger: cumulative taps, what is acknowledged, one
//!   batching and resend policy.
//! - [`sync`]: the offset to the server's clock: a burst of samples, then
//!   one a second, filtered as NTP does and slewed so it never jumps.
//! - [`link`]: where the connection stands, its timeouts, the retry delay.
//! - [`address`]: the room a page path opens, socket URLs, client ids.

pub mod address;
pub mod heart;
pub mod link;
pub mod love;
pub mod session;
pub mod sync;

pub use heart::{COUPLING, Heart, RESTING_BPM};
pub use link::{Link, Stuck};
pub use love::Love;
pub use session::{Reaction, RoomNumbers, RoomView, Session, Visible};
pub use sync::Clock;
