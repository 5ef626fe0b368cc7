//! One connection's state and its short `select!`, in the shape of
//! mini-redis's `Handler`: the struct holds what outlives one message, and
//! each arm of the loop is one call.

use super::messages::{LoveBounds, LoveCount};
use super::wire::{Incoming, Wire};
use super::{CloseReason, Reply, Socket};
use crate::AppState;
use crate::fanout::{Outbox, Registration};
use crate::limits::{MessageLimiter, Verdict, ViolationCounter};
use crate::love::TapResult;
use crate::metrics::metrics;
use crate::room::ConnId;
use crate::rooms::Membership;
use axum::extract::ws::Message;
use rand::Rng;
use shared::{ClientId, PROTOCOL_VERSION, RoomName, ServerMessage, Welcome};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

/// One connection, from its welcome to its close.
pub struct Handler<S> {
    /// The socket, and the deadline its writes run under.
    pub(super) wire: Wire<S>,
    /// The server's configuration, love store, clock and shutdown signal.
    pub(super) state: AppState,
    /// This connection's place in its room: the room's channels and this
    /// connection's view of its newest consensus. Dropping it leaves.
    pub(super) membership: Membership,
    /// Who the client is, for its love taps.
    pub(super) client_id: ClientId,
    /// The message rate limit and flood detector.
    pub(super) limiter: MessageLimiter,
    /// Protocol violations in the recent window.
    pub(super) violations: ViolationCounter,
    /// When to ping, when the pong is due, when to close for shutdown.
    pub(super) deadlines: Deadlines,
    /// Love taps between this socket and the disk.
    pub(super) love: LoveInFlight,
    /// The socket's writes, shared with the room's shard writer, which
    /// writes the consensus; `None` when the handler writes it itself.
    outbox: Option<Arc<Outbox>>,
    /// The socket's place in its room's shard; dropping it takes the
    /// socket out (before the close frame is written).
    registration: Option<Registration>,
}

/// A love tap handed to the store: the future resolves when it is durable
/// (or failed). One boxed future per tap, which a tap already paid for its
/// reply channel; an idle connection holds none.
pub(super) type TapAnswer = Pin<Box<dyn Future<Output = TapResult> + Send>>;

/// Love taps on their way to disk: at most one at the store, and one waiting
/// behind it. With both taken the handler stops reading until the store
/// answers (a client tapping faster than the disk commits waits, and only
/// that client), so every `love` still gets its own answer, in order.
#[derive(Default)]
pub(super) struct LoveInFlight {
    /// The tap at the store: its count and ledger, and its answer.
    pub(super) at_store: Option<(LoveCount, TapAnswer)>,
    /// The next count to hand over, and when it arrived.
    pub(super) waiting: Option<(LoveCount, Instant)>,
    /// The bounds on this connection's love (see `messages.rs`).
    pub(super) bounds: LoveBounds,
    /// The client's address, whose quota a new ledger comes out of; `None`
    /// in tests that make a handler without one.
    pub(super) address: Option<std::net::IpAddr>,
}

impl LoveInFlight {
    /// Waits for the store's answer to the tap at the store (forever if none).
    async fn answer(&mut self) -> TapResult {
        match &mut self.at_store {
            Some((_, answer)) => answer.await,
            None => std::future::pending().await,
        }
    }
}

/// The connection's deadlines. One timer serves them all: it is set for the
/// earliest, and moved only when that changes.
#[derive(Debug)]
pub(super) struct Deadlines {
    /// Time between pings (`--ping-interval`).
    ping_interval: Duration,
    /// How long a pong may take (`--pong-timeout`).
    pong_timeout: Duration,
    /// When the next ping is due.
    next_ping: Instant,
    /// When the pong to the last ping must have come; `None` when no ping
    /// is unanswered.
    pub(super) pong_due: Option<Instant>,
    /// When a draining server closes this connection; `None` until it drains.
    pub(super) close_at: Option<Instant>,
    /// When the connection's join token expires (private rooms only).
    pub(super) expires: Option<Instant>,
}

impl Deadlines {
    fn new(now: Instant, ping_interval: Duration, pong_timeout: Duration) -> Self {
        let next_ping = now + ping_interval;
        Self {
            ping_interval,
            pong_timeout,
            next_ping,
            pong_due: None,
            close_at: None,
            expires: None,
        }
    }

    /// The earliest deadline.
    fn next(&self) -> Instant {
        [self.pong_due, self.close_at, self.expires]
            .into_iter()
            .flatten()
            .fold(self.next_ping, Instant::min)
    }

    /// What is due at `now`: `Ok(true)` to send a ping, or the reason to
    /// close. A ping is not sent while the last one is unanswered.
    fn fire(&mut self, now: Instant) -> Result<bool, CloseReason> {
        if self.close_at.is_some_and(|at| at <= now) {
            return Err(CloseReason::Shutdown);
        }
        if self.expires.is_some_and(|at| at <= now) {
            return Err(CloseReason::TokenExpired);
        }
        if self.pong_due.is_some_and(|at| at <= now) {
            metrics().pongs_missed.increment(1);
            return Err(CloseReason::PongTimeout);
        }
        if self.next_ping > now {
            return Ok(false);
        }
        // A late ping moves the next one on, rather than sending a burst.
        self.next_ping = (self.next_ping + self.ping_interval).max(now + self.ping_interval);
        if self.pong_due.is_some() {
            return Ok(false);
        }
        self.pong_due = Some(now + self.pong_timeout);
        Ok(true)
    }
}

impl<S: Socket> Handler<S> {
    /// Joins the room and sends the welcome and the room's consensus as of
    /// now; on failure the close frame has been sent. With an `outbox`, the
    /// socket then joins its room's shard, which writes every later
    /// consensus.
    pub async fn start(
        socket: S,
        outbox: Option<Arc<Outbox>>,
        state: AppState,
        conn: ConnId,
        room: RoomName,
        client_id: ClientId,
    ) -> Result<Self, CloseReason> {
        let config = &state.config;
        let mut wire = Wire::new(socket, config.write_timeout);
        let Ok((membership, first)) = state.rooms.join(room.clone(), conn).await else {
            wire.close(CloseReason::RoomGone).await;
            return Err(CloseReason::RoomGone);
        };
        tracing::debug!(conn, %room, %client_id, "connection opened");
        let welcome = ServerMessage::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            client_id: client_id.clone(),
            room,
            server_time: state.clock.now_ms(),
            tick_ms: duration_ms(config.tick),
            report_ms: duration_ms(config.report_interval),
        });
        wire.send_json(&welcome).await?;
        metrics().sent_consensus.increment(1);
        let registration = match &outbox {
            None => {
                wire.send(Message::Text(first.text)).await?;
                None
            }
            Some(outbox) => {
                outbox.offer(first.consensus.seq, &first.wire);
                let registration = membership.fanout.register(conn, outbox.clone());
                // A tick published before the shard had this socket is
                // written here; the outbox takes each `seq` once, so a tick
                // the shard also wrote does not go twice.
                let newest = membership.consensus.borrow().clone();
                outbox.offer(newest.consensus.seq, &newest.wire);
                Some(registration)
            }
        };
        let now = state.clock.now();
        Ok(Self {
            wire,
            limiter: MessageLimiter::new(
                config.message_rate,
                config.message_burst,
                config.flood_close_after,
            ),
            violations: ViolationCounter::new(config.max_violations, config.violation_window),
            deadlines: Deadlines::new(now, config.ping_interval, config.pong_timeout),
            love: LoveInFlight::default(),
            outbox,
            registration,
            membership,
            client_id,
            state,
        })
    }

    /// Serves the connection until it ends, sends the close frame its end
    /// calls for, and says why it ended.
    pub async fn run(mut self) -> CloseReason {
        let reason = match self.serve().await {
            Err(reason) => reason,
            Ok(never) => match never {},
        };
        // No consensus after the close frame.
        self.registration = None;
        if let Some(outbox) = &self.outbox {
            outbox.seal();
        }
        Box::pin(self.wire.close(reason)).await;
        reason
    }

    async fn serve(&mut self) -> Result<Infallible, CloseReason> {
        // The futures that outlive one turn of the loop are made once and
        // pinned, rather than re-registered on every wake-up.
        let shutdown = self.state.shutdown.clone();
        let shutdown = shutdown.cancelled();
        tokio::pin!(shutdown);
        let timer = sleep_until(self.deadlines.next());
        tokio::pin!(timer);
        let outbox = self.outbox.clone();
        let fanned_out = outbox.is_some();
        // The arms that write are boxed: a write future is large and rare
        // (an idle connection writes nothing itself), and every byte of
        // this future is held by every connection for its whole life.
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown, if self.deadlines.close_at.is_none() => self.drain(),
                () = &mut timer => Box::pin(self.on_deadline()).await?,
                changed = self.membership.consensus.changed(), if !fanned_out => {
                    Box::pin(self.write_consensus(changed)).await?
                }
                () = stalled(outbox.as_deref()), if fanned_out => {
                    Box::pin(self.drain_stalled()).await?
                }
                answer = self.love.answer(), if self.love.at_store.is_some() => {
                    let reply = self.love_answered(answer)?;
                    Box::pin(self.reply(reply)).await?;
                }
                incoming = self.wire.recv(), if self.love.waiting.is_none() => {
                    let reply = self.received(incoming?)?;
                    if reply.is_some() {
                        Box::pin(self.reply(reply)).await?;
                    }
                }
            }
            let next = self.deadlines.next();
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
        }
    }

    /// The server is shutting down: close at a random point of the drain
    /// period, so that clients do not all reconnect to the next instance at
    /// the same instant.
    fn drain(&mut self) {
        let spread = self.state.config.drain.mul_f64(rand::rng().random::<f64>());
        self.deadlines.close_at = Some(self.state.clock.now() + spread);
    }

    /// The timer went off: ping, or close.
    async fn on_deadline(&mut self) -> Result<(), CloseReason> {
        if self.deadlines.fire(self.state.clock.now())? {
            metrics().pings_sent.increment(1);
            self.wire.send(Message::Ping(Default::default())).await?;
        }
        Ok(())
    }

    /// Writes the room's newest consensus (the room has published one since
    /// the last), or ends when the room has stopped. This is the whole of
    /// the consensus path through the handler.
    async fn write_consensus(
        &mut self,
        changed: Result<(), watch::error::RecvError>,
    ) -> Result<(), CloseReason> {
        changed.map_err(|_| CloseReason::RoomGone)?;
        let (text, ticked) = {
            let frame = self.membership.consensus.borrow_and_update();
            (frame.text.clone(), frame.ticked)
        };
        self.wire.send(Message::Text(text)).await?;
        let m = metrics();
        m.sent_consensus.increment(1);
        m.broadcast_lag.record(ticked.elapsed().as_secs_f64());
        Ok(())
    }

    /// The shard writer left a consensus (or its rest) that the socket did
    /// not take: drain it, under the write timeout, as a slow write would
    /// be. Meanwhile the shard keeps only the newest consensus for it.
    async fn drain_stalled(&mut self) -> Result<(), CloseReason> {
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        match timeout(self.state.config.write_timeout, outbox.drain()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(CloseReason::ClientGone),
            Err(_) => Err(CloseReason::Slow),
        }
    }

    /// What the client sent, sorted: a pong meets its deadline, a message
    /// is handled.
    fn received(&mut self, incoming: Incoming) -> Reply {
        match incoming {
            Incoming::Text(text) => self.message(Some(text.as_str())),
            Incoming::Binary => self.message(None),
            Incoming::Pong => {
                self.control_frame()?;
                self.deadlines.pong_due = None;
                Ok(None)
            }
            Incoming::Ping => {
                self.control_frame()?;
                Ok(None)
            }
        }
    }

    /// A ping or a pong counts against the same budget as a message, so a
    /// flood of control frames is closed like a flood of messages (1008).
    /// Over the rate it is simply not counted further: a control frame gets
    /// no error message.
    fn control_frame(&mut self) -> Result<(), CloseReason> {
        match self.limiter.check(self.state.clock.now()) {
            Verdict::Close => Err(CloseReason::Flood),
            Verdict::Accept | Verdict::Drop { .. } => Ok(()),
        }
    }

    /// Sends `reply`, if there is one.
    async fn reply(&mut self, reply: Option<ServerMessage>) -> Result<(), CloseReason> {
        match reply {
            Some(message) => self.wire.send_json(&message).await,
            None => Ok(()),
        }
    }
}

/// Completes when the shard writer left something in `outbox` (never
/// without one).
async fn stalled(outbox: Option<&Outbox>) {
    match outbox {
        Some(outbox) => outbox.stalled().await,
        None => std::future::pending().await,
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines() -> (Instant, Deadlines) {
        let start = Instant::now();
        (start, Deadlines::new(start, Duration::from_secs(25), Duration::from_secs(10)))
    }

    #[test]
    fn a_ping_is_due_every_interval_and_its_pong_after_the_timeout() {
        let (start, mut d) = deadlines();
        let s = Duration::from_secs;
        assert_eq!(d.next(), start + s(25));
        assert_eq!(d.fire(start + s(24)), Ok(false));
        assert_eq!(d.fire(start + s(25)), Ok(true));
        assert_eq!(d.next(), start + s(35), "the pong is due before the next ping");
        d.pong_due = None;
        assert_eq!(d.next(), start + s(50));
        assert_eq!(d.fire(start + s(50)), Ok(true));
        assert_eq!(d.fire(start + s(60)), Err(CloseReason::PongTimeout));
    }

    #[test]
    fn no_ping_while_the_last_is_unanswered() {
        let s = Duration::from_secs;
        let start = Instant::now();
        // A pong timeout longer than the ping interval.
        let mut d = Deadlines::new(start, s(5), s(12));
        assert_eq!(d.fire(start + s(5)), Ok(true));
        assert_eq!(d.fire(start + s(10)), Ok(false));
        assert_eq!(d.next(), start + s(15));
        assert_eq!(d.fire(start + s(17)), Err(CloseReason::PongTimeout));
    }

    #[test]
    fn a_late_ping_does_not_make_a_burst() {
        let (start, mut d) = deadlines();
        let s = Duration::from_secs;
        assert_eq!(d.fire(start + s(100)), Ok(true));
        d.pong_due = None;
        assert_eq!(d.next(), start + s(125));
    }

    #[test]
    fn the_drain_deadline_comes_first() {
        let (start, mut d) = deadlines();
        let s = Duration::from_secs;
        d.close_at = Some(start + s(3));
        assert_eq!(d.next(), start + s(3));
        assert_eq!(d.fire(start + s(3)), Err(CloseReason::Shutdown));
    }

    #[test]
    fn an_expiring_token_closes_the_socket_when_it_expires() {
        let (start, mut d) = deadlines();
        let s = Duration::from_secs;
        d.expires = Some(start + s(7));
        assert_eq!(d.next(), start + s(7));
        assert_eq!(d.fire(start + s(6)), Ok(false));
        assert_eq!(d.fire(start + s(7)), Err(CloseReason::TokenExpired));
    }
}
