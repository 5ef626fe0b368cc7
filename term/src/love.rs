//! Love taps: this session's cumulative tap count, what the server has
//! acknowledged as durable, and what to send next. Pure: the connection
//! sends what [`Love::due`] says, at most every 100 ms.
//!
//! The server counts taps by `seq`, this client's cumulative count, so
//! sending the same `seq` twice cannot count a tap twice: unacknowledged taps
//! are simply sent again on the next connection (or after a while on this
//! one). One message may add at most [`MAX_LOVE_STEP`] taps, so a long burst
//! goes out in steps, each sent once the previous one is acknowledged.

use shared::protocol::MAX_LOVE_STEP;
use std::time::{Duration, Instant};

/// How long to wait for an acknowledgement before sending the same count
/// again on the same connection.
pub const RESEND: Duration = Duration::from_secs(3);

/// One session's love in one room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Love {
    /// Every tap made this session.
    taps: u64,
    /// The highest count the server has acknowledged.
    acked: u64,
    /// The count last sent on the current connection (0 for none yet).
    sent: u64,
    /// When it was sent.
    sent_at: Option<Instant>,
}

impl Love {
    /// Takes the session's tap count (it only ever grows).
    pub fn set_taps(&mut self, taps: u64) {
        self.taps = self.taps.max(taps);
    }

    /// A new connection: nothing has been sent on it yet.
    pub fn connected(&mut self) {
        self.sent = 0;
        self.sent_at = None;
    }

    /// The server acknowledged the count `seq`.
    pub fn acked(&mut self, seq: u64) {
        self.acked = self.acked.max(seq.min(self.taps));
    }

    /// The count the server has acknowledged.
    pub fn acknowledged(&self) -> u64 {
        self.acked
    }

    /// The count to send now, if any: the newest one the server may take in
    /// one message, unless it was already sent on this connection less than
    /// [`RESEND`] ago.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        let target = self.taps.min(self.acked + MAX_LOVE_STEP);
        if target <= self.acked {
            return None;
        }
        let waited = self.sent_at.is_none_or(|at| now.duration_since(at) >= RESEND);
        if target > self.sent || waited {
            self.sent = target;
            self.sent_at = Some(now);
            return Some(target);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_are_sent_once_and_then_acknowledged() {
        let now = Instant::now();
        let mut love = Love::default();
        assert_eq!(love.due(now), None, "nothing tapped yet");
        love.set_taps(3);
        assert_eq!(love.due(now), Some(3));
        assert_eq!(love.due(now), None, "already on its way");
        love.acked(3);
        assert_eq!(love.acknowledged(), 3);
        assert_eq!(love.due(now + RESEND * 2), None);
    }

    #[test]
    fn unacknowledged_taps_go_again() {
        let now = Instant::now();
        let mut love = Love::default();
        love.set_taps(2);
        assert_eq!(love.due(now), Some(2));
        assert_eq!(love.due(now + RESEND), Some(2), "resent after a while");
        love.connected();
        assert_eq!(love.due(now + RESEND), Some(2), "resent on a new connection");
    }

    #[test]
    fn a_burst_goes_in_steps_the_server_accepts() {
        let now = Instant::now();
        let mut love = Love::default();
        love.set_taps(120);
        assert_eq!(love.due(now), Some(MAX_LOVE_STEP));
        love.acked(MAX_LOVE_STEP);
        assert_eq!(love.due(now), Some(2 * MAX_LOVE_STEP));
        love.acked(2 * MAX_LOVE_STEP);
        assert_eq!(love.due(now), Some(120));
    }

    #[test]
    fn an_ack_beyond_the_taps_is_ignored() {
        let mut love = Love::default();
        love.set_taps(1);
        love.acked(99);
        assert_eq!(love.acknowledged(), 1);
    }
}
