//! Love taps: this client's cumulative tap count in its room, what the
//! server has made durable, what still has to be sent, and how the room's
//! total grows from other people's taps. Pure: the session sends what
//! [`Love::due`] says, and a client that can (the page) persists
//! [`Love::taps`], [`Love::acked`] and [`Love::epoch`], so a tap made
//! offline is delivered, once, later.
//!
//! The server counts taps by `seq`, this client's cumulative count, so
//! sending the same `seq` twice is harmless: resending until acknowledged
//! cannot count a tap twice. One message may add at most [`MAX_LOVE_STEP`]
//! taps, so a long burst goes out in steps, each sent once the previous one
//! is acknowledged.
//!
//! Counts belong to a ledger, named by its `epoch`: the server's clock when
//! it started, which the client proposes with its first count (from its
//! synced clock; before the first sync it names none and the server's
//! first acknowledgement names it). A server keeps a ledger only while its
//! client comes back now and then; an idle one is folded into the room's
//! total, and the next count the client sends in it is answered
//! `love_folded`. A ledger's epoch is never older than the server's
//! retention while the ledger can be new, so even the first count of a
//! ledger, resent after a fold, is recognised.
//! The client then starts a new ledger holding only the taps that cannot be
//! in the total: those never sent, and those sent only on the connection
//! that was told (the server answers a connection's counts in order, so the
//! fold came before them). A tap sent on an earlier connection (or before a
//! reload) and never acknowledged may already be in the total, so it is
//! given up rather than risk counting it twice.
//!
//! Every count is saturating: a hostile server acknowledging a count near
//! `u64::MAX` cannot make this overflow.

use crate::protocol::MAX_LOVE_STEP;
use crate::{LoveAck, LoveFolded};

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
    /// Every tap made on this browser in this room in the current ledger
    /// (persisted).
    taps: u64,
    /// The highest count the server has acknowledged as durable (persisted).
    acked: u64,
    /// The server's name for the current ledger, 0 before it has named one
    /// (persisted): sent with every count, so a resend to a ledger the
    /// server has folded is refused instead of counted again.
    epoch: u64,
    /// The highest count sent on the current connection, 0 for none yet.
    sent: u64,
    /// When (local ms) the last `love` message went out on this connection.
    sent_at: f64,
    /// How long to wait before resending an unacknowledged count.
    resend_ms: f64,
    /// The highest count sent, on any connection of this client.
    highest_sent: u64,
    /// The highest count sent on an earlier connection, or before a reload:
    /// taps up to it that are not acknowledged may be in the total without
    /// this client knowing. (What went out on the current connection is
    /// known: the server answers it in order.)
    sent_before: u64,
    /// The room's total as the server last told it; `None` before it has.
    total: Option<u64>,
    /// How many of this client's taps are known to be inside `total`, so its
    /// growth can be split into ours and other people's.
    counted: u64,
}

impl Love {
    /// The state after a reload: `taps` made so far, `acked` of them durable,
    /// in a ledger the server has not named yet (as before epochs).
    pub fn new(taps: u64, acked: u64) -> Self {
        Self::resume(taps, acked, 0)
    }

    /// The state after a reload: `taps` made so far in ledger `epoch`,
    /// `acked` of them durable. Taps not acknowledged may have been sent
    /// before the reload, so they count as sent.
    pub fn resume(taps: u64, acked: u64, epoch: u64) -> Self {
        let taps = taps.max(acked);
        Self {
            taps,
            acked,
            epoch,
            sent: 0,
            sent_at: f64::NEG_INFINITY,
            resend_ms: FIRST_RESEND_MS,
            highest_sent: taps,
            sent_before: taps,
            total: None,
            counted: acked,
        }
    }

    /// Every tap made in the current ledger (what to persist as the count).
    pub fn taps(&self) -> u64 {
        self.taps
    }

    /// The highest count the server acknowledged (what to persist as acked).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The server's name for the current ledger (what to persist with the
    /// counts, and what to send with them); 0 before it has named one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The epoch to send with a count: the ledger's, or for a new ledger
    /// (nothing acknowledged in it yet), one proposed from `server_now_ms`,
    /// the server's clock as synced (`None` before the first sync: the
    /// count then names no ledger, and the ack names it). Once proposed, it
    /// is the ledger's.
    pub fn epoch_to_send(&mut self, server_now_ms: Option<f64>) -> u64 {
        if self.epoch == 0
            && self.acked == 0
            && let Some(now) = server_now_ms.filter(|now| *now >= 2.0 && now.is_finite())
        {
            // Whole milliseconds; the protocol's largest count bounds it.
            self.epoch = (now as u64).min(crate::protocol::MAX_LOVE_SEQ);
        }
        self.epoch
    }

    /// Taps not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.taps.saturating_sub(self.acked)
    }

    /// Counts one tap and returns the new count.
    pub fn tap(&mut self) -> u64 {
        self.taps = self.taps.saturating_add(1);
        self.taps
    }

    /// A new connection is up: nothing has been sent on it yet, so whatever
    /// is unacknowledged goes out again.
    pub fn connected(&mut self) {
        self.sent_before = self.sent_before.max(self.highest_sent);
        self.sent = 0;
        self.sent_at = f64::NEG_INFINITY;
        self.resend_ms = FIRST_RESEND_MS;
    }

    /// The count one message may carry now: the server refuses a count that
    /// jumps more than [`MAX_LOVE_STEP`] past what it has, so a pile of
    /// offline taps goes out in steps.
    fn next_seq(&self) -> u64 {
        self.taps.min(self.acked.saturating_add(MAX_LOVE_STEP))
    }

    /// The `seq` to send now (local time `now`), if any, noting it as sent.
    /// It goes with [`Self::epoch_to_send`].
    pub fn due(&mut self, now: f64) -> Option<u64> {
        let seq = self.next_seq();
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
        let seq = self.next_seq();
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
        if ack.epoch != 0 && ack.epoch != self.epoch {
            if self.epoch != 0 && self.acked > 0 {
                // An answer about another ledger (one given up): its count
                // is not ours to take; its total is still news.
                return self.observe_total(ack.total);
            }
            // The server names the ledger our counts went to: ours was
            // unnamed, or only proposed (the server kept the ledger our
            // first count started before we could hear of it).
            self.epoch = ack.epoch;
        }
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

    /// Takes the server's word that the ledger `folded.epoch` was folded into
    /// the room's total. If that is this client's ledger, a new one starts
    /// (epoch 0, named by the server's next acknowledgement) with only the
    /// taps that cannot be in the total, so nothing is counted twice; taps
    /// sent on an earlier connection but never acknowledged are given up.
    /// Returns how many were given up.
    pub fn folded(&mut self, folded: LoveFolded) -> u64 {
        self.observe_total(folded.total);
        if self.epoch == 0 || folded.epoch != self.epoch {
            // Not about our ledger (a stale answer, or a hostile one).
            return 0;
        }
        let maybe_counted = self.sent_before.max(self.acked);
        let carried = self.taps.saturating_sub(maybe_counted);
        let given_up = maybe_counted - self.acked;
        *self = Self { total: self.total, ..Self::resume(carried, 0, 0) };
        // Nothing of the new ledger has been sent.
        self.highest_sent = 0;
        self.sent_before = 0;
        self.counted = 0;
        given_up
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
        self.counted = self.counted.saturating_add(ours);
        growth - ours
    }

    /// The room's total as the server last told it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The total to show: the server's, plus this client's taps it cannot
    /// include yet, so a tap counts up at once even when offline.
    pub fn shown_total(&self) -> u64 {
        self.total
            .unwrap_or(0)
            .saturating_add(self.taps.saturating_sub(self.counted.max(self.acked)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64, total: u64) -> LoveAck {
        LoveAck { seq, total, epoch: EPOCH }
    }

    /// The ledger the tests' server names.
    const EPOCH: u64 = 1_700_000_000_000;

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

    #[test]
    fn a_hostile_ack_near_u64_max_does_not_overflow() {
        let mut love = Love::new(3, 0);
        love.observe_total(10);
        assert_eq!(love.acknowledged(LoveAck { seq: u64::MAX - 1, total: u64::MAX, epoch: 0 }), 0);
        assert_eq!(love.acked(), u64::MAX - 1);
        assert_eq!(love.due(0.0), None, "nothing past what the server claims");
        assert_eq!(love.next_due(), None);
        assert_eq!(love.tap(), u64::MAX);
        assert_eq!(love.tap(), u64::MAX, "taps saturate");
        assert_eq!(love.due(1.0), Some(u64::MAX));
        assert_eq!(love.shown_total(), u64::MAX);
        assert_eq!(love.pending(), 1);
        love.acknowledged(LoveAck { seq: u64::MAX, total: u64::MAX, epoch: 0 });
        assert_eq!(love.pending(), 0);
        // And from a fresh state, straight to the top.
        let mut love = Love::new(u64::MAX, u64::MAX - 10);
        assert_eq!(love.due(0.0), Some(u64::MAX));
        assert_eq!(love.shown_total(), 10);
    }

    #[test]
    fn a_new_ledger_is_named_from_the_synced_clock_once() {
        let mut love = Love::new(0, 0);
        love.tap();
        assert_eq!(love.epoch_to_send(None), 0, "not synced: no name yet");
        assert_eq!(love.epoch_to_send(Some(1.7e12 + 0.5)), 1_700_000_000_000);
        assert_eq!(love.epoch_to_send(Some(1.8e12)), 1_700_000_000_000, "named once");
        // A client whose count the server acknowledged before epochs keeps
        // naming none until an ack names its ledger.
        let mut legacy = Love::new(5, 5);
        assert_eq!(legacy.epoch_to_send(Some(1.7e12)), 0);
        // Nor can a hostile clock push it past what the protocol takes.
        let mut love = Love::new(0, 0);
        assert_eq!(love.epoch_to_send(Some(f64::MAX)), crate::protocol::MAX_LOVE_SEQ);
    }

    #[test]
    fn the_first_ack_names_the_ledger_and_later_counts_carry_it() {
        let mut love = Love::new(0, 0);
        assert_eq!(love.epoch(), 0);
        love.tap();
        assert_eq!(love.due(0.0), Some(1));
        love.acknowledged(ack(1, 1));
        assert_eq!(love.epoch(), EPOCH);
        // A reload keeps it.
        let love = Love::resume(love.taps(), love.acked(), love.epoch());
        assert_eq!(love.epoch(), EPOCH);
    }

    #[test]
    fn a_folded_ledger_starts_a_new_one_with_only_the_taps_that_cannot_be_counted() {
        let mut love = Love::resume(10, 10, EPOCH);
        love.observe_total(100);
        // Two taps go out, and are lost with their connection; one more is
        // made offline.
        love.tap();
        love.tap();
        assert_eq!(love.due(0.0), Some(12));
        love.tap();
        love.connected();
        assert_eq!(love.due(10.0), Some(13));
        // The server had folded the ledger: the two taps sent on the lost
        // connection may be in the total already, so they are given up; the
        // one sent only on this connection (answered in order) is not.
        let given_up = love.folded(LoveFolded { epoch: EPOCH, seq: 13, total: 100 });
        assert_eq!(given_up, 2);
        assert_eq!((love.epoch(), love.taps(), love.acked()), (0, 1, 0));
        assert_eq!(love.shown_total(), 101);
        assert_eq!(love.due(200.0), Some(1), "the new ledger starts from its own count");
        love.acknowledged(LoveAck { seq: 1, total: 101, epoch: EPOCH + 1 });
        assert_eq!((love.epoch(), love.acked()), (EPOCH + 1, 1));
        assert_eq!(love.shown_total(), 101);
    }

    #[test]
    fn a_fold_of_another_ledger_changes_nothing_but_the_total() {
        let mut love = Love::resume(5, 5, EPOCH);
        love.observe_total(5);
        assert_eq!(love.folded(LoveFolded { epoch: EPOCH - 1, seq: 5, total: 7 }), 0);
        assert_eq!((love.epoch(), love.taps(), love.acked()), (EPOCH, 5, 5));
        assert_eq!(love.total(), Some(7));
        // Nor does an ack about a ledger given up.
        love.acknowledged(LoveAck { seq: 40, total: 9, epoch: EPOCH - 1 });
        assert_eq!((love.epoch(), love.acked()), (EPOCH, 5));
        // But a proposal nothing was acknowledged in yields to the server's
        // ledger (a first count that went there before a reload).
        let mut reloaded = Love::new(3, 0);
        assert_eq!(reloaded.epoch_to_send(Some(EPOCH as f64 + 50.0)), EPOCH + 50);
        reloaded.acknowledged(LoveAck { seq: 3, total: 3, epoch: EPOCH });
        assert_eq!((reloaded.epoch(), reloaded.acked()), (EPOCH, 3));
        // A client whose server never named a ledger ignores folds.
        let mut old = Love::new(3, 3);
        assert_eq!(old.folded(LoveFolded { epoch: EPOCH, seq: 3, total: 3 }), 0);
        assert_eq!(old.taps(), 3);
    }

    #[test]
    fn a_proposal_refused_as_stale_is_made_again_from_the_clock_keeping_its_taps() {
        // Found by fuzzing: a proposal that waited longer than the
        // retention before the server read it is answered love_folded.
        // Nothing of it was counted (it went only on this connection), so
        // its taps carry over, and the next proposal is from the clock
        // now; falling back to naming no ledger would let a later fold
        // count them twice.
        let mut love = Love::new(0, 0);
        love.tap();
        assert_eq!(love.due(0.0), Some(1));
        assert_eq!(love.epoch_to_send(Some(1_000.0)), 1_000);
        let folded = LoveFolded { epoch: 1_000, seq: 1, total: 0 };
        assert_eq!(love.folded(folded), 0, "nothing sent before");
        assert_eq!((love.taps(), love.acked()), (1, 0), "the tap is kept");
        assert_eq!(love.due(100.0), Some(1));
        assert_eq!(love.epoch_to_send(Some(9_000.0)), 9_000, "a new proposal, from the clock");
    }
}
