//! The fan-out: puts each room's consensus on every socket of the room.
//!
//! The room serializes and frames its consensus once a tick
//! ([`frame_text`]: server-to-client frames are unmasked, so the whole frame,
//! header and payload, is the same for every client). The room has one
//! writer task per worker thread and its sockets are split into
//! [`shard::SHARDS_PER_WRITER`] shards per writer; each writer wakes once a
//! tick, claims shards until none is left, and offers the same bytes to
//! each socket's [`Outbox`]: one non-blocking write, no wake-up, poll or
//! copy per delivery. A socket that does not take
//! the frame whole keeps it (newest only) for its own connection task to
//! drain under `--write-timeout`; the shard goes on to the next socket.
//!
//! # Layout
//! - [`outbox`]: one connection's writes, shared by its handler and its
//!   shard, with the slow path's newest-only slot.
//! - [`shard`]: a room's shards, and the writers that claim and walk them.

pub mod outbox;
pub mod shard;

pub use outbox::{Offer, Outbox};
pub use shard::{Fanout, Registration};

use bytes::Bytes;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// `text` as one complete, unmasked WebSocket text frame (header and
/// payload), ready to be written as is to any client. The header comes from
/// tungstenite, the same code that frames every other message.
pub fn frame_text(text: &str) -> Bytes {
    let frame =
        Frame::message(Bytes::copy_from_slice(text.as_bytes()), OpCode::Data(Data::Text), true);
    let mut out = Vec::with_capacity(frame.len());
    // Formatting into a `Vec` cannot fail.
    let _ = frame.format(&mut out);
    Bytes::from(out)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod frame_tests {
    use super::*;

    #[test]
    fn a_framed_text_is_a_final_unmasked_text_frame() {
        let short = frame_text("hello");
        assert_eq!(&short[..], b"\x81\x05hello");
        let long = frame_text(&"x".repeat(300));
        assert_eq!(&long[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }
}
