//! One connection's state and its loop, in the shape of mini-redis's
//! `Handler`: the struct holds what outlives one message, and each event of
//! the loop is one call.
//!
//! The loop waits on everything at once with one hand-written poll
//! ([`Handler::poll_event`]) rather than a `select!`: a `select!` keeps a
//! future for each of its branches inside the connection's future for the
//! connection's whole life, and every byte of that is paid once per
//! connection. Here the sources are polled in place (the socket, the love
//! store's answer, the outbox, the keepalive's flags), so a connection at
//! rest holds only the handler itself.

use super::keepalive::{Due, Keepalive, Registration as KeepaliveEntry};
use super::messages::{LoveBounds, LoveCount};
use super::wire::{Incoming, Wire};
use super::{CloseReason, Connection, Reply, Socket};
use crate::AppState;
use crate::fanout::{Outbox, Registration};
use crate::limits::{ConnectionSlot, MessageLimiter, Verdict, ViolationCounter};
use crate::love::TapResult;
use crate::metrics::metrics;
use crate::room::ConsensusFrame;
use crate::rooms::Membership;
use axum::extract::ws::{Message, Utf8Bytes};
use shared::{ClientId, PROTOCOL_VERSION, ServerMessage, Welcome};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_util::sync::ReusableBoxFuture;

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
    /// The connection's entry in the keepalive sweep, which decides when to
    /// ping and when to close (pong timeout, idle timeout, token expiry,
    /// drain); dropping it takes the connection out.
    keepalive: KeepaliveEntry,
    /// Love taps between this socket and the disk.
    pub(super) love: LoveInFlight,
    /// The socket's writes, shared with the room's shard writer, which
    /// writes the consensus; `None` when the handler writes it itself.
    outbox: Option<Arc<Outbox>>,
    /// The socket's place in its room's shard; dropping it takes the
    /// socket out (before the close frame is written).
    registration: Option<Registration>,
    /// The wait for the room's next consensus, when the handler writes it
    /// itself (no outbox): boxed once, and kept between polls.
    consensus: Option<ReusableBoxFuture<'static, Changed>>,
    /// Its place under the connection cap, held for its whole life.
    _slot: ConnectionSlot,
}

/// A change of the room's consensus, and the receiver to wait on for the
/// next.
type Changed = (Result<(), watch::error::RecvError>, watch::Receiver<ConsensusFrame>);

async fn next_change(mut consensus: watch::Receiver<ConsensusFrame>) -> Changed {
    (consensus.changed().await, consensus)
}

/// What woke the loop.
enum Event {
    /// The keepalive sweep found a ping or a close due.
    Due(Due),
    /// The room published a consensus (handler-written path): its text,
    /// and when the room ticked.
    Consensus(Utf8Bytes, Instant),
    /// The shard writer left something in the outbox.
    Stalled,
    /// The love store answered the tap at the store.
    LoveAnswered(TapResult),
    /// The client sent something.
    Incoming(Incoming),
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

impl<S: Socket> Handler<S> {
    /// Joins the room and sends the welcome and the room's consensus as of
    /// now; on failure the close frame has been sent. With an `outbox`, the
    /// socket then joins its room's shard, which writes every later
    /// consensus. The handler is boxed: it is the bulk of what a connection
    /// holds for its life, and a box of its own is exactly its size.
    pub async fn start(
        socket: S,
        outbox: Option<Arc<Outbox>>,
        state: AppState,
        connection: Connection,
    ) -> Result<Box<Self>, CloseReason> {
        let Connection { conn, room, client_id, slot, expires } = connection;
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
        match &outbox {
            // Framed here and written through the outbox, as the consensus
            // is: the welcome is the largest frame a connection is sent,
            // and written by tungstenite it would leave tungstenite's write
            // buffer that large for the connection's whole life.
            Some(outbox) => {
                metrics().sent_welcome.increment(1);
                let frame = crate::fanout::frame_text(&welcome.to_json());
                std::future::poll_fn(|cx| outbox.poll_write(cx, &frame))
                    .await
                    .map_err(|_| CloseReason::ClientGone)?;
            }
            None => wire.send_json(&welcome).await?,
        }
        metrics().sent_consensus.increment(1);
        let (registration, consensus) = match &outbox {
            None => {
                wire.send(Message::Text(first.text)).await?;
                let next = ReusableBoxFuture::new(next_change(membership.consensus.clone()));
                (None, Some(next))
            }
            Some(outbox) => {
                outbox.offer(first.consensus.seq, &first.wire);
                let registration = membership.fanout.register(conn, outbox.clone());
                // A tick published before the shard had this socket is
                // written here; the outbox takes each `seq` once, so a tick
                // the shard also wrote does not go twice.
                let newest = membership.consensus.borrow().clone();
                outbox.offer(newest.consensus.seq, &newest.wire);
                (Some(registration), None)
            }
        };
        let keepalive: &Keepalive = &state.keepalive;
        Ok(Box::new(Self {
            wire,
            limiter: MessageLimiter::new(
                config.message_rate,
                config.message_burst,
                config.flood_close_after,
            ),
            violations: ViolationCounter::new(config.max_violations, config.violation_window),
            keepalive: keepalive.register(conn, expires),
            love: LoveInFlight { address: Some(slot.address()), ..LoveInFlight::default() },
            outbox,
            registration,
            consensus,
            membership,
            client_id,
            _slot: slot,
            state,
        }))
    }

    /// Serves the connection until it ends, sends the close frame its end
    /// calls for, and says why it ended.
    pub async fn run(mut self: Box<Self>) -> CloseReason {
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
        let (conn, room) = (self.membership.conn, &self.membership.name);
        let client_id = &self.client_id;
        tracing::debug!(conn, %room, %client_id, reason = reason.as_str(), "connection closed");
        reason
    }

    async fn serve(&mut self) -> Result<Infallible, CloseReason> {
        // Each event's work is boxed: a write future is large and rare (an
        // idle connection writes nothing itself), and every byte of this
        // future is held by every connection for its whole life.
        loop {
            match std::future::poll_fn(|cx| self.poll_event(cx)).await? {
                Event::Due(Due::Ping) => Box::pin(self.ping()).await?,
                Event::Due(Due::Close(reason)) => return Err(reason),
                Event::Consensus(text, ticked) => {
                    Box::pin(self.write_consensus(text, ticked)).await?;
                }
                Event::Stalled => Box::pin(self.drain_stalled()).await?,
                Event::LoveAnswered(answer) => {
                    let reply = self.love_answered(answer)?;
                    Box::pin(self.reply(reply)).await?;
                }
                Event::Incoming(incoming) => {
                    let reply = self.received(incoming)?;
                    if reply.is_some() {
                        Box::pin(self.reply(reply)).await?;
                    }
                }
            }
        }
    }

    /// The next event, in order of precedence: what the keepalive found
    /// due (a close for shutdown comes before anything else), the
    /// consensus, the love store's answer, and then what the client sent
    /// (not read while a love tap waits behind the one at the store).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, CloseReason>> {
        if let Poll::Ready(due) = self.keepalive.liveness().poll_due(cx) {
            return Poll::Ready(Ok(Event::Due(due)));
        }
        if let Some(next) = &mut self.consensus
            && let Poll::Ready((changed, mut receiver)) = next.poll(cx)
        {
            changed.map_err(|_| CloseReason::RoomGone)?;
            let (text, ticked) = {
                let frame = receiver.borrow_and_update();
                (frame.text.clone(), frame.ticked)
            };
            next.set(next_change(receiver));
            return Poll::Ready(Ok(Event::Consensus(text, ticked)));
        }
        if let Some(outbox) = &self.outbox
            && outbox.poll_stalled(cx).is_ready()
        {
            return Poll::Ready(Ok(Event::Stalled));
        }
        if let Some((_, answer)) = &mut self.love.at_store
            && let Poll::Ready(answer) = answer.as_mut().poll(cx)
        {
            return Poll::Ready(Ok(Event::LoveAnswered(answer)));
        }
        if self.love.waiting.is_none()
            && let Poll::Ready(incoming) = self.wire.poll_recv(cx)
        {
            return Poll::Ready(incoming.map(Event::Incoming));
        }
        Poll::Pending
    }

    /// The keepalive asks for a ping.
    async fn ping(&mut self) -> Result<(), CloseReason> {
        metrics().pings_sent.increment(1);
        self.wire.send(Message::Ping(Default::default())).await
    }

    /// Writes the room's newest consensus (the room has published one since
    /// the last), which the room ticked at `ticked`. This is the whole of
    /// the consensus path through the handler.
    async fn write_consensus(
        &mut self,
        text: Utf8Bytes,
        ticked: Instant,
    ) -> Result<(), CloseReason> {
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
            Incoming::Text(text) => {
                self.keepalive.liveness().heard_message();
                self.message(Some(text.as_str()))
            }
            Incoming::Binary => self.message(None),
            Incoming::Pong => {
                self.control_frame()?;
                self.keepalive.liveness().heard_pong();
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

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
