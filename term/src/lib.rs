//! heartsync-term: a real heart in a heartsync room, drawn in the terminal.
//!
//! It joins a room over WebSocket like the browser page does, syncs its
//! clock with the server, beats at 72 bpm and is pulled into step with the
//! room's consensus, reporting its phase as it goes. The heart is the curve
//! `(x² + y² − 1)³ − x²y³ ≤ 0`, drawn with half-block characters in red and
//! pink and swelling with each lub-dub.
//!
//! # Layout
//! - [`config`]: the flags, and the socket address they make.
//! - [`shape`]: the heart on a grid of cells (pure).
//! - [`beat`]: the heart's scale through the shared lub-dub envelope (pure).
//! - [`paint`]: colours and ANSI escapes for a frame; the `--static` heart.
//! - [`heart`]: this client's heart and the pull towards the room (pure).
//! - [`love`]: love taps to send and their acknowledgements (pure).
//! - [`status`]: what the screen knows of the room, and its status lines.
//! - [`clock`]: the local monotonic clock that clock sync offsets.
//! - [`connection`]: the socket task: join, sync, report, love, reconnect.
//! - [`screen`]: the terminal, keys and the frame loop.
//!
//! Data flows one way round: keys and frames step the heart in [`screen`],
//! which publishes it (and the tap count) over `watch` channels to
//! [`connection`], which reports to the server and publishes what it hears
//! as a [`status::RoomView`] that the next frame draws.

pub mod beat;
pub mod clock;
pub mod config;
pub mod connection;
pub mod heart;
pub mod love;
pub mod paint;
pub mod screen;
pub mod shape;
pub mod status;
