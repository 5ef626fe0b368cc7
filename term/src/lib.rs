//! heartsync-term: a real heart in a heartsync room, drawn in the terminal.
//!
//! It joins a room over WebSocket like the browser page does, syncs its
//! clock with the server, beats at 72 bpm and is pulled into step with the
//! room's consensus, reporting its phase as it goes: all of that is the
//! client core it shares with the page, [`shared::client`]. This crate is
//! the shell around it: the socket, the timers, the keys and the drawing. The heart is the curve
//! `(x² + y² − 1)³ − x²y³ ≤ 0`, drawn with half-block characters in red and
//! pink and swelling with each lub-dub.
//!
//! # Layout
//! - [`config`]: the flags, and the socket address they make.
//! - [`shape`]: the heart on a grid of cells (pure).
//! - [`beat`]: the heart's scale through the shared lub-dub envelope (pure).
//! - [`paint`]: colours and ANSI escapes for a frame; the `--static` heart.
//! - [`status`]: the status lines under the heart (pure).
//! - [`clock`]: the local monotonic clock the session's times are read on.
//! - [`connection`]: the socket task: it feeds the [`shared::client::Session`]
//!   and sends what it says, until the person quits.
//! - [`screen`]: the terminal, keys and the frame loop.
//!
//! The screen and the connection share one [`connection::Shared`] session
//! (a lock held only for a call, never across an `.await`): each frame steps
//! the heart and reads the room's view from it, a key taps love into it and
//! pokes the connection, and the connection feeds it the server's messages.

pub mod beat;
pub mod clock;
pub mod config;
pub mod connection;
pub mod paint;
pub mod screen;
pub mod shape;
pub mod status;
