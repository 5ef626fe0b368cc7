//! Love taps: this client's cumulative tap count in its room, what the
//! server has made durable, what still has to be sent, and how the room's
//! total grows from other people's taps. Pure: the session sends what
//! [`Love::due`] says, and a client that can (the page) persists
//! [`Love::taps`] and [`Love::acked`], so a tap made offline is delivered,
//! once, later.
//!
//! The server counts taps by `seq`, this client's cumulative count, so
//! sending the same `seq` twice is harmless: resending until acknowledged
//! cannot count a tap twice. One message may add at most [`MAX_LOVE_STEP`]
//! taps, so a long burst goes out in steps, each sent once the previous one
//! is acknowledged.

use crate::LoveAck;
use crate::protocol::MAX_LOVE_STEP;

/// Taps are batched: at most one `love` message per this many milliseconds,
/// carrying the newest count.
pub const BATCH_MS: f64 = 100.0;

/// How long to wait for an acknowledgement before sending the same count
/// again on the same connection; it doubles up to [`MAX_RESEND_MS`], so a
/// server that cannot store love yet is not flooded.
pub const FIRST_RESEND_MS: f64 = 3_000.0;

/// The longest wait between resends on one connection.
pub const MAX_RESEND_MS: f64 = 60_000.0;

/// One client's love in one room.
#[derive(Debug, Clone, PartialEq)]
pub struct Love {
    /// Every tap ever made on this browser in this room (persisted).
    taps: u64,
    /// The highest count the server has acknowledged as durable (persisted).
    acked: u64,
    /// The highest count sent on the current connection, 0 for none yet.
    sent: u64,
    /// When (local ms) the last `love` message went out on this connection.
    sent_at: f64,
    /// How long to wait before resending an unacknowledged count.
    resend_ms: f64,
    /// The highest count ever sent, on any connection of this client.
    highest_sent: u64,
    /// The room's total as the server last told it; `None` before it has.
    total: Option<u64>,
    /// How many of this client's taps are known to be inside `total`, so its
    /// growth can be split into ours and other people's.
    counted: u64,
}

impl Love {
    /// The state after a reload: `taps` made so far, `acked` of them durable.
    pub fn new(taps: u64, acked: u64) -> Self {
        Self {
            taps: taps.max(acked),
            acked,
            sent: 0,
            sent_at: f64::NEG_INFINITY,
            resend_ms: FIRST_RESEND_MS,
            highest_sent: acked,
            total: None,
            counted: acked,
        }
    }

    /// Every tap made (what to persist as the count).
    pub fn taps(&self) -> u64 {
        self.taps
    }

    /// The highest count the server acknowledged (what to persist as acked).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Taps not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.taps - self.acked
    }

    /// Counts one tap and returns the new count.
    pub fn tap(&mut self) -> u64 {
        self.taps += 1;
        self.taps
    }

    /// A new connection is up: nothing has been sent on it yet, so whatever
    /// is unacknowledged goes out again.
    pub fn connected(&mut self) {
        self.sent = 0;
        self.sent_at = f64::NEG_INFINITY;
        self.resend_ms = FIRST_RESEND_MS;
    }

    /// The `seq` to send now (local time `now`), if any, noting it as sent.
    pub fn due(&mut self, now: f64) -> Option<u64> {
        // The server refuses a count that jumps more than MAX_LOVE_STEP past
        // what it has, so a pile of offline taps goes out in steps.
        let seq = self.taps.min(self.acked + MAX_LOVE_STEP);
        if seq <= self.acked {
            return None;
        }
        // Deadlines as `next_due` computes them, so the two agree to the
        // last bit of rounding.
        let send = if seq > self.sent {
            now >= self.sent_at + BATCH_MS
        } else if now >= self.sent_at + self.resend_ms {
            self.resend_ms = (self.resend_ms * 2.0).min(MAX_RESEND_MS);
            true
        } else {
            false
        };
        if send {
            self.sent = seq;
            self.sent_at = now;
            self.highest_sent = self.highest_sent.max(seq);
        }
        send.then_some(seq)
    }

    /// The local time at which [`Self::due`] will next have a count to send
    /// (it may be now or past), or `None` while everything is acknowledged.
    pub fn next_due(&self) -> Option<f64> {
        let seq = self.taps.min(self.acked + MAX_LOVE_STEP);
        if seq <= self.acked {
            None
        } else if seq > self.sent {
            Some(self.sent_at + BATCH_MS)
        } else {
            Some(self.sent_at + self.resend_ms)
        }
    }

    /// Takes the server's acknowledgement. Returns how many taps by other
    /// people the new total reveals.
    pub fn acknowledged(&mut self, ack: LoveAck) -> u64 {
        if ack.seq > self.acked {
            self.acked = ack.seq;
            self.resend_ms = FIRST_RESEND_MS;
        }
        // A count the server knows but this browser forgot (its storage was
        // cleared) is taken over, so new taps are not mistaken for old ones.
        self.taps = self.taps.max(self.acked);
        self.highest_sent = self.highest_sent.max(self.acked);
        self.sent = self.sent.max(self.acked);
        let others = self.observe_total(ack.total);
        self.counted = self.counted.max(self.acked);
        others
    }

    /// Takes the room's total from a consensus or an acknowledgement.
    /// Returns how many taps by other people it reveals (0 the first time:
    /// love given before the client joined is not news).
    pub fn observe_total(&mut self, total: u64) -> u64 {
        let Some(known) = self.total else {
            self.total = Some(total);
            return 0;
        };
        // A total that shrinks (a server that lost its storage) is believed,
        // without bursts.
        self.total = Some(total);
        let growth = total.saturating_sub(known);
        // Growth is ours as far as our sent taps are not yet counted in it.
        let ours = growth.min(self.highest_sent.saturating_sub(self.counted));
        self.counted += ours;
        growth - ours
    }

    /// The room's total as the server last told it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The total to show: the server's, plus this client's taps it cannot
    /// include yet, so a tap counts up at once even when offline.
    pub fn shown_total(&self) -> u64 {
        self.total.unwrap_or(0) + self.taps.saturating_sub(self.counted.max(self.acked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64, total: u64) -> LoveAck {
        LoveAck { seq, total }
    }

    #[test]
    fn taps_are_batched_and_carry_the_newest_count() {
        let mut love = Love::new(0, 0);
        assert_eq!(love.due(0.0), None);
        love.tap();
        assert_eq!(love.due(0.0), Some(1));
        love.tap();
        love.tap();
        // Within the batch window nothing goes out; then the newest count.
        assert_eq!(love.due(50.0), None);
        assert_eq!(love.due(100.0), Some(3));
        assert_eq!(love.due(150.0), None);
        love.acknowledged(ack(3, 3));
        assert_eq!(love.pending(), 0);
        assert_eq!(love.due(10_000.0), None);
    }

    #[test]
    fn unacknowledged_taps_are_resent_after_a_reconnect() {
        let mut love = Love::new(0, 0);
        love.tap();
        assert_eq!(love.due(0.0), Some(1));
        // The connection drops before the acknowledgement.
        love.connected();
        assert_eq!(love.due(10.0), Some(1));
        love.acknowledged(ack(1, 1));
        assert_eq!(love.acked(), 1);
    }

    #[test]
    fn offline_taps_survive_a_reload() {
        // Two taps made while offline, persisted, then the page reloads.
        let mut love = Love::new(2, 0);
        love.observe_total(10);
        assert_eq!(love.shown_total(), 12);
        love.connected();
        assert_eq!(love.due(0.0), Some(2));
        // The server counts them once; nothing is shown twice.
        assert_eq!(love.acknowledged(ack(2, 12)), 0);
        assert_eq!(love.shown_total(), 12);
    }

    #[test]
    fn resends_on_one_connection_back_off() {
        let mut love = Love::new(1, 0);
        assert_eq!(love.due(0.0), Some(1));
        assert_eq!(love.due(FIRST_RESEND_MS - 1.0), None);
        assert_eq!(love.due(FIRST_RESEND_MS), Some(1));
        assert_eq!(love.due(FIRST_RESEND_MS + FIRST_RESEND_MS * 1.5), None);
        assert_eq!(love.due(FIRST_RESEND_MS * 3.0), Some(1));
    }

    #[test]
    fn a_pile_of_offline_taps_goes_out_in_steps_the_server_accepts() {
        let mut love = Love::new(120, 0);
        assert_eq!(love.due(0.0), Some(MAX_LOVE_STEP));
        love.acknowledged(ack(MAX_LOVE_STEP, MAX_LOVE_STEP));
        assert_eq!(love.due(100.0), Some(2 * MAX_LOVE_STEP));
        love.acknowledged(ack(2 * MAX_LOVE_STEP, 2 * MAX_LOVE_STEP));
        assert_eq!(love.due(200.0), Some(120));
    }

    #[test]
    fn growth_of_the_total_is_split_into_ours_and_others() {
        let mut love = Love::new(0, 0);
        assert_eq!(love.observe_total(40), 0, "the first total is not news");
        love.tap();
        love.tap();
        assert_eq!(love.shown_total(), 42);
        assert_eq!(love.due(0.0), Some(2));
        // The consensus includes our two taps before the acknowledgement,
        // and three from someone else.
        assert_eq!(love.observe_total(45), 3);
        assert_eq!(love.shown_total(), 45);
        assert_eq!(love.acknowledged(ack(2, 45)), 0);
        assert_eq!(love.observe_total(46), 1);
        assert_eq!(love.shown_total(), 46);
    }

    #[test]
    fn a_server_that_knows_more_taps_wins() {
        let mut love = Love::new(0, 0);
        love.acknowledged(ack(7, 7));
        assert_eq!(love.taps(), 7);
        assert_eq!(love.tap(), 8);
    }

    #[test]
    fn next_due_says_when_due_will_send() {
        let mut love = Love::new(0, 0);
        assert_eq!(love.next_due(), None);
        love.tap();
        assert!(love.next_due().is_some_and(|at| at <= 0.0), "at once");
        assert_eq!(love.due(0.0), Some(1));
        assert_eq!(love.next_due(), Some(FIRST_RESEND_MS));
        love.tap();
        assert_eq!(love.next_due(), Some(BATCH_MS));
        assert_eq!(love.due(BATCH_MS - 1.0), None);
        assert_eq!(love.due(BATCH_MS), Some(2));
        love.acknowledged(ack(2, 2));
        assert_eq!(love.next_due(), None);
    }

    #[test]
    fn taps_are_sent_once_and_then_acknowledged() {
        let mut love = Love::new(0, 0);
        assert_eq!(love.due(0.0), None, "nothing tapped yet");
        for _ in 0..3 {
            love.tap();
        }
        assert_eq!(love.due(0.0), Some(3));
        assert_eq!(love.due(0.0), None, "already on its way");
        love.acknowledged(ack(3, 3));
        assert_eq!(love.acked(), 3);
        assert_eq!(love.due(FIRST_RESEND_MS * 2.0), None);
    }

    #[test]
    fn unacknowledged_taps_go_again_after_a_while_and_on_a_new_connection() {
        let mut love = Love::new(0, 0);
        love.tap();
        love.tap();
        assert_eq!(love.due(0.0), Some(2));
        assert_eq!(love.due(FIRST_RESEND_MS), Some(2), "resent after a while");
        love.connected();
        assert_eq!(love.due(FIRST_RESEND_MS), Some(2), "resent on a new connection");
    }
}
