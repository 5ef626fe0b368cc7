//! One function per message a client sends, and one for the love store's
//! answer. Each returns a [`Reply`]: what to send back, or why to close, so
//! that every close is a `?` in the handler.
//!
//! Love is bounded twice here: a connection adds at most its budget of taps
//! (`--love-rate` a second, `--love-burst` at once), and its client's first
//! love in the room, which starts a ledger, comes out of its address's
//! quota (`--love-ledgers-per-ip`). Either refusal is a `rate_limited`
//! error that counts nothing and is not a violation: the client's resend
//! comes later, within bounds.

use super::handler::{Handler, TapAnswer};
use super::{CloseReason, Reply, Socket};
use crate::limits::Verdict;
use crate::love::bounds::LoveBudget;
use crate::love::{Tap, TapOutcome, TapResult};
use crate::metrics::metrics;
use crate::room::{Control, Report};
use shared::protocol::MAX_LOVE_STEP;
use shared::{
    ClientMessage, ErrorCode, LoveAck, LoveFolded, PhaseReport, ProtocolError, ServerMessage,
    TimeReply,
};
use tokio::time::Instant;

impl<S: Socket> Handler<S> {
    /// A text frame (`Some`) or a binary one (`None`): rate-limited, parsed
    /// and validated, then handled by its type.
    pub(super) fn message(&mut self, text: Option<&str>) -> Reply {
        let now = self.state.clock.now();
        match self.limiter.check(now) {
            Verdict::Accept => {}
            Verdict::Drop { notify } => return Ok(rate_limited(notify)),
            Verdict::Close => return Err(CloseReason::Flood),
        }
        let parsed = match text {
            Some(text) => ClientMessage::parse(text, self.state.clock.now_ms()),
            None => Err(ProtocolError::new(
                ErrorCode::BinaryFrame,
                "binary frames are not part of protocol v1; send JSON text",
            )),
        };
        match parsed {
            Ok(ClientMessage::Phase(report)) => Ok(self.phase(report, now)),
            Ok(ClientMessage::Time { t0 }) => Ok(Some(self.time(t0))),
            Ok(ClientMessage::Love { seq, epoch }) => Ok(self.love(LoveCount { seq, epoch }, now)),
            Err(error) => self.invalid(error, now),
        }
    }

    /// A phase report goes to the room with `try_send`: a full queue drops
    /// it, since the next report replaces it anyway.
    fn phase(&mut self, report: PhaseReport, now: Instant) -> Option<ServerMessage> {
        metrics().received_phase.increment(1);
        let report = Report { conn: self.membership.conn, report, received: now };
        if self.membership.handle.reports.try_send(report).is_err() {
            metrics().reports_dropped.increment(1);
        }
        None
    }

    /// A clock-sync request is answered at once.
    fn time(&mut self, t0: f64) -> ServerMessage {
        metrics().received_time.increment(1);
        ServerMessage::Time(TimeReply { t0, server_time: self.state.clock.now_ms() })
    }

    /// A love tap is handed to the store, or waits behind the one there;
    /// the answer comes later, through [`Handler::love_answered`].
    fn love(&mut self, count: LoveCount, now: Instant) -> Option<ServerMessage> {
        metrics().received_love.increment(1);
        if self.love.at_store.is_some() {
            self.love.waiting = Some((count, now));
        } else {
            self.hand_to_store(count, now);
        }
        None
    }

    fn hand_to_store(&mut self, count: LoveCount, received: Instant) {
        let store = self.state.love.clone();
        let config = &self.state.config;
        let now = self.state.clock.now();
        let bounds = &mut self.love.bounds;
        let budget = bounds.budget.get_or_insert_with(|| LoveBudget::new(config.love_burst, now));
        let limit = budget.available(now, config.love_rate, config.love_burst).min(MAX_LOVE_STEP);
        // A new ledger comes out of the address's quota, taken before the
        // store knows whether one is needed and given back if it was not.
        let may_create = bounds.ledger_known
            || bounds.holds_ledger
            || match self.love.address {
                None => true,
                Some(address) => {
                    bounds.holds_ledger = store.quota().take(address, now);
                    bounds.holds_ledger
                }
            };
        // Whole milliseconds of a clock after 1970.
        let at_ms = self.state.clock.now_ms().max(0.0) as u64;
        let retention_ms = u64::try_from(config.love_retention.as_millis()).unwrap_or(u64::MAX);
        let tap = Tap {
            room: self.membership.name.clone(),
            client: self.client_id.clone(),
            seq: count.seq,
            epoch: count.epoch,
            limit,
            may_create,
            at_ms,
            fresh_after_ms: at_ms.saturating_sub(retention_ms),
        };
        let answer: TapAnswer = Box::pin(async move {
            let outcome = store.tap(tap).await;
            if let Ok(TapOutcome::Counted { .. }) = outcome {
                metrics().love_ack.record(received.elapsed().as_secs_f64());
            }
            outcome
        });
        self.love.at_store = Some((count, answer));
    }

    /// The store answered the tap it had: the waiting tap (if any) goes to
    /// the store, and the client hears what happened to its own.
    pub(super) fn love_answered(&mut self, outcome: TapResult) -> Reply {
        let Some((LoveCount { seq, epoch }, _)) = self.love.at_store.take() else {
            return Ok(None);
        };
        self.settle_ledger(&outcome);
        if let Some((next, received)) = self.love.waiting.take() {
            self.hand_to_store(next, received);
        }
        match outcome {
            Ok(TapOutcome::Counted { added, total, epoch, created }) => {
                metrics().love_taps.increment(added);
                if created {
                    metrics::counter!("heartsync_love_ledgers_created_total").increment(1);
                }
                if let Some(budget) = &mut self.love.bounds.budget {
                    budget.spend(added);
                }
                if added > 0 {
                    let _ = self.membership.handle.control.send(Control::Love { total });
                }
                Ok(Some(ServerMessage::LoveAck(LoveAck { seq, total, epoch })))
            }
            Ok(TapOutcome::TooBig { last }) if seq.saturating_sub(last) <= MAX_LOVE_STEP => {
                refused("rate");
                let rate = self.state.config.love_rate;
                Ok(Some(ServerMessage::Error(ProtocolError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too much love at once: one connection adds at most {rate} taps a \
                         second; nothing was counted, send seq {seq} again in a moment"
                    ),
                ))))
            }
            Ok(TapOutcome::TooBig { last }) => {
                let error = ProtocolError::new(
                    ErrorCode::BadLove,
                    format!(
                        "seq {seq} jumps more than {MAX_LOVE_STEP} past the last one ({last}); nothing was counted"
                    ),
                );
                self.violation(self.state.clock.now())?;
                Ok(Some(ServerMessage::Error(error)))
            }
            Ok(TapOutcome::Folded { total }) => {
                metrics::counter!("heartsync_love_folded_answers_total").increment(1);
                Ok(Some(ServerMessage::LoveFolded(LoveFolded { epoch, seq, total })))
            }
            Ok(TapOutcome::NoLedger) => {
                refused("ledgers");
                let config = &self.state.config;
                Ok(Some(ServerMessage::Error(ProtocolError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many new love ledgers from your address: at most {} per {}; \
                         nothing was counted, send your love again later",
                        config.love_ledgers_per_ip,
                        humantime::format_duration(config.love_ledger_window)
                    ),
                ))))
            }
            Err(error) => {
                tracing::error!(%error, "love not saved");
                Ok(Some(ServerMessage::Error(ProtocolError::new(
                    ErrorCode::Internal,
                    "your love could not be saved; send it again later",
                ))))
            }
        }
    }

    /// After the store's answer, the ledger this connection took from its
    /// address's quota is kept if the tap started one, and given back if
    /// not; once the client is known to have a ledger, its later taps need
    /// none (one connection is one client in one room: it can start a
    /// ledger again only after its last was folded, a retention later).
    fn settle_ledger(&mut self, outcome: &TapResult) {
        let bounds = &mut self.love.bounds;
        let (known, started) = match outcome {
            Ok(TapOutcome::Counted { epoch, created, .. }) => (*epoch != 0, *created),
            _ => (false, false),
        };
        if bounds.holds_ledger
            && !started
            && let Some(address) = self.love.address
        {
            self.state.love.quota().give_back(address);
        }
        bounds.holds_ledger = false;
        bounds.ledger_known |= known;
    }

    /// A message that broke the protocol gets its error, and counts towards
    /// the violation limit.
    fn invalid(&mut self, error: ProtocolError, now: Instant) -> Reply {
        if error.code == ErrorCode::BinaryFrame {
            metrics().received_binary.increment(1);
        } else {
            metrics().received_invalid.increment(1);
        }
        self.violation(now)?;
        Ok(Some(ServerMessage::Error(error)))
    }

    /// Records a violation at `now`; too many in the window close the
    /// connection.
    fn violation(&mut self, now: Instant) -> Result<(), CloseReason> {
        if self.violations.record(now) { Err(CloseReason::Violations) } else { Ok(()) }
    }
}

/// A `love` message: the count and the ledger it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LoveCount {
    /// The client's cumulative count.
    pub(super) seq: u64,
    /// The ledger it names (0: its ledger, whichever it is, or a new one).
    pub(super) epoch: u64,
}

/// One connection's bounds on love.
#[derive(Debug, Default)]
pub(super) struct LoveBounds {
    /// The taps it may still add; made at its first love.
    pub(super) budget: Option<LoveBudget>,
    /// A new ledger taken from the address's quota for the tap at the
    /// store, to keep or give back when the store answers.
    pub(super) holds_ledger: bool,
    /// The store has answered with the client's ledger: later taps start
    /// none.
    pub(super) ledger_known: bool,
}

/// Counts a love message refused for a bound (`rate`: the connection's
/// budget; `ledgers`: the address's quota of new ledgers).
fn refused(reason: &'static str) {
    metrics::counter!("heartsync_love_refused_total", "reason" => reason).increment(1);
}

/// A dropped message: the client hears so at most once a second.
fn rate_limited(notify: bool) -> Option<ServerMessage> {
    metrics().rate_limited.increment(1);
    notify.then(|| {
        ServerMessage::Error(ProtocolError::new(
            ErrorCode::RateLimited,
            "too many messages; this one and others were dropped",
        ))
    })
}

#[cfg(test)]
mod tests {
    use shared::{ClientMessage, ServerMessage, TimeReply};

    #[test]
    fn a_clock_samples_t0_is_echoed_to_the_bit() {
        // The socket fuzz target found a subnormal that serde_json's fast
        // parser read one ulp off: the neighbours of the one it reported,
        // some edge cases, and numbers spread over every exponent.
        let found = f64::from_bits(1.390671099200837e-309_f64.to_bits());
        let near = (0..20_000_u64).map(|k| f64::from_bits(found.to_bits() - 10_000 + k));
        let spread =
            (1..2_000_u64).map(|k| f64::from_bits(k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 12));
        for t0 in [5e-324, 2.2250738585072014e-308, 0.1 + 0.2, 1.7e308]
            .into_iter()
            .chain(near)
            .chain(spread)
        {
            let request = ClientMessage::Time { t0 }.to_json();
            let Ok(ClientMessage::Time { t0: parsed }) = ClientMessage::parse(&request, 1.0) else {
                panic!("{request} is a clock sample");
            };
            let reply = ServerMessage::Time(TimeReply { t0: parsed, server_time: 1.0 }).to_json();
            let Ok(ServerMessage::Time(echo)) = ServerMessage::parse(&reply) else {
                panic!("{reply} is a time reply");
            };
            assert_eq!(echo.t0.to_bits(), t0.to_bits(), "{t0:e} came back as {:e}", echo.t0);
        }
    }
}
