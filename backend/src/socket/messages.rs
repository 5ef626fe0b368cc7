//! One function per message a client sends, and one for the love store's
//! answer. Each returns a [`Reply`]: what to send back, or why to close, so
//! that every close is a `?` in the handler.

use super::handler::{Handler, TapAnswer};
use super::{CloseReason, Reply, Socket};
use crate::limits::Verdict;
use crate::love::{Tap, TapOutcome, TapResult};
use crate::metrics::metrics;
use crate::room::{Control, Report};
use shared::protocol::MAX_LOVE_STEP;
use shared::{
    ClientMessage, ErrorCode, LoveAck, PhaseReport, ProtocolError, ServerMessage, TimeReply,
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
            Ok(ClientMessage::Love { seq }) => Ok(self.love(seq, now)),
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
    fn love(&mut self, seq: u64, now: Instant) -> Option<ServerMessage> {
        metrics().received_love.increment(1);
        if self.love.at_store.is_some() {
            self.love.waiting = Some((seq, now));
        } else {
            self.hand_to_store(seq, now);
        }
        None
    }

    fn hand_to_store(&mut self, seq: u64, received: Instant) {
        let store = self.state.love.clone();
        let room = self.membership.name.clone();
        let tap = Tap { room, client: self.client_id.clone(), seq };
        let answer: TapAnswer = Box::pin(async move {
            let outcome = store.tap(tap).await;
            if let Ok(TapOutcome::Counted { .. }) = outcome {
                metrics().love_ack.record(received.elapsed().as_secs_f64());
            }
            outcome
        });
        self.love.at_store = Some((seq, answer));
    }

    /// The store answered the tap it had: the waiting tap (if any) goes to
    /// the store, and the client hears what happened to its own.
    pub(super) fn love_answered(&mut self, outcome: TapResult) -> Reply {
        let Some((seq, _)) = self.love.at_store.take() else {
            return Ok(None);
        };
        if let Some((next, received)) = self.love.waiting.take() {
            self.hand_to_store(next, received);
        }
        match outcome {
            Ok(TapOutcome::Counted { added, total }) => {
                metrics().love_taps.increment(added);
                if added > 0 {
                    let _ = self.membership.handle.control.send(Control::Love { total });
                }
                Ok(Some(ServerMessage::LoveAck(LoveAck { seq, total })))
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
            Err(error) => {
                tracing::error!(%error, "love not saved");
                Ok(Some(ServerMessage::Error(ProtocolError::new(
                    ErrorCode::Internal,
                    "your love could not be saved; send it again later",
                ))))
            }
        }
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
