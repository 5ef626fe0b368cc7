//! One WebSocket connection: read, validate and rate-limit what the client
//! sends; write the room's newest consensus; ping; close when told to.
//!
//! The connection is one task with one `select!` loop. Writes have a
//! deadline (`--write-timeout`): a client that stops reading is closed, and
//! because every connection has its own task and reads the room's consensus
//! from a `watch` channel, it delays no one else.

use crate::AppState;
use crate::clock::now_ms;
use crate::limits::{ConnectionSlot, MessageLimiter, Verdict, ViolationCounter};
use crate::love::{Tap, TapOutcome};
use crate::metrics::metrics;
use crate::room::{ConnId, Control, Report};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use rand::Rng;
use shared::{
    ClientId, ClientMessage, ErrorCode, LoveAck, PROTOCOL_VERSION, ProtocolError, RoomName,
    ServerMessage, TimeReply, Welcome, protocol::MAX_LOVE_STEP,
};
use std::future::Future;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, sleep_until, timeout};

/// Everything the HTTP layer decided about a connection before the upgrade.
#[derive(Debug)]
pub struct Connection {
    /// This connection's id within the server.
    pub conn: ConnId,
    /// The room it joins.
    pub room: RoomName,
    /// The client's identity.
    pub client_id: ClientId,
    /// Its place under the connection cap, held for its whole life.
    pub slot: ConnectionSlot,
}

/// Why a connection ended; used for logs (and metrics labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or the TCP connection ended.
    ClientGone,
    /// The server is shutting down.
    Shutdown,
    /// A write did not finish within the write timeout.
    Slow,
    /// No pong in time.
    PongTimeout,
    /// The client kept flooding.
    Flood,
    /// Too many protocol violations.
    Violations,
    /// A message over the size limit.
    TooLarge,
    /// The room stopped (only while shutting down).
    RoomGone,
}

impl CloseReason {
    /// A bounded, stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientGone => "client",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Slow => "slow",
            CloseReason::PongTimeout => "pong_timeout",
            CloseReason::Flood => "flood",
            CloseReason::Violations => "violations",
            CloseReason::TooLarge => "too_large",
            CloseReason::RoomGone => "room_gone",
        }
    }
}

/// A write failed or timed out: the connection is done.
struct WriteFailed(CloseReason);

/// The connection's socket and the deadline its writes run under.
struct Wire {
    socket: WebSocket,
    write_timeout: Duration,
}

impl Wire {
    async fn send(&mut self, message: Message) -> Result<(), WriteFailed> {
        let send = self.socket.send(message);
        tokio::pin!(send);
        // Almost every write completes at once (the kernel buffer has room),
        // so try once before arming a timer: a timer per delivery is a
        // measurable share of the fan-out's cost.
        let first = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
        let result = match first {
            Poll::Ready(result) => result,
            Poll::Pending => match timeout(self.write_timeout, send).await {
                Ok(result) => result,
                Err(_) => return Err(WriteFailed(CloseReason::Slow)),
            },
        };
        result.map_err(|_| WriteFailed(CloseReason::ClientGone))
    }

    async fn send_json(&mut self, message: &ServerMessage) -> Result<(), WriteFailed> {
        let m = metrics();
        match message {
            ServerMessage::Welcome(_) => m.sent_welcome.increment(1),
            ServerMessage::Consensus(_) => m.sent_consensus.increment(1),
            ServerMessage::Time(_) => m.sent_time.increment(1),
            ServerMessage::Error(e) => m.error_sent(e.code),
            ServerMessage::LoveAck(_) => m.sent_love_ack.increment(1),
        }
        self.send(Message::Text(Utf8Bytes::from(message.to_json()))).await
    }

    async fn send_error(&mut self, error: ProtocolError) -> Result<(), WriteFailed> {
        self.send_json(&ServerMessage::Error(error)).await
    }

    /// Sends a close frame (best effort, briefly) and ends the connection.
    async fn close(mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
        let _ =
            timeout(Duration::from_secs(1), self.socket.send(Message::Close(Some(frame)))).await;
    }
}

/// Serves one upgraded connection until it ends.
pub async fn serve(socket: WebSocket, state: AppState, connection: Connection) {
    let Connection { conn, room, client_id, slot: _slot } = connection;
    let m = metrics();
    m.connections_opened.increment(1);
    m.connections_open.increment(1.0);
    let reason = run(socket, &state, conn, room.clone(), &client_id).await;
    m.connections_open.decrement(1.0);
    m.connection_closed(reason.as_str());
    tracing::debug!(conn, %room, %client_id, reason = reason.as_str(), "connection closed");
}

async fn run(
    socket: WebSocket,
    state: &AppState,
    conn: ConnId,
    room: RoomName,
    client_id: &ClientId,
) -> CloseReason {
    let config = &state.config;
    let mut wire = Wire { socket, write_timeout: config.write_timeout };
    let Ok((mut membership, first)) = state.rooms.join(room.clone(), conn).await else {
        wire.close(close_code::AWAY, "server shutting down").await;
        return CloseReason::RoomGone;
    };
    tracing::debug!(conn, %room, %client_id, "connection opened");

    let welcome = ServerMessage::Welcome(Welcome {
        protocol: PROTOCOL_VERSION,
        client_id: client_id.to_string(),
        room: room.to_string(),
        server_time: now_ms(),
        tick_ms: duration_ms(config.tick),
        report_ms: duration_ms(config.report_interval),
    });
    if let Err(WriteFailed(reason)) = wire.send_json(&welcome).await {
        return reason;
    }
    metrics().sent_consensus.increment(1);
    if let Err(WriteFailed(reason)) = wire.send(Message::Text(first.text)).await {
        return reason;
    }

    let mut limiter =
        MessageLimiter::new(config.message_rate, config.message_burst, config.flood_close_after);
    let mut violations = ViolationCounter::new(config.max_violations, config.violation_window);
    let mut pings =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The futures that outlive one turn of the loop are made once and
    // pinned, rather than re-registered on every wake-up.
    let shutdown = state.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut pong_deadline: Option<Instant> = None;
    let pong_timer = sleep_until(Instant::now());
    tokio::pin!(pong_timer);
    let mut close_at: Option<Instant> = None;
    let close_timer = sleep_until(Instant::now());
    tokio::pin!(close_timer);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown, if close_at.is_none() => {
                // Spread the closes over the drain period so that clients do
                // not all reconnect to the next instance at the same instant.
                let spread = config.drain.mul_f64(rand::rng().random::<f64>());
                let at = Instant::now() + spread;
                close_at = Some(at);
                close_timer.as_mut().reset(at);
            }
            () = &mut close_timer, if close_at.is_some() => {
                wire.close(close_code::AWAY, "server shutting down").await;
                return CloseReason::Shutdown;
            }
            () = &mut pong_timer, if pong_deadline.is_some() => {
                wire.close(close_code::AWAY, "no pong").await;
                metrics().pongs_missed.increment(1);
                return CloseReason::PongTimeout;
            }
            changed = membership.consensus.changed() => {
                if changed.is_err() {
                    wire.close(close_code::AWAY, "server shutting down").await;
                    return CloseReason::RoomGone;
                }
                let (text, ticked) = {
                    let frame = membership.consensus.borrow_and_update();
                    (frame.text.clone(), frame.ticked)
                };
                if let Err(WriteFailed(reason)) = wire.send(Message::Text(text)).await {
                    return reason;
                }
                let m = metrics();
                m.sent_consensus.increment(1);
                m.broadcast_lag.record(ticked.elapsed().as_secs_f64());
            }
            _ = pings.tick() => {
                if pong_deadline.is_none() {
                    let deadline = Instant::now() + config.pong_timeout;
                    pong_deadline = Some(deadline);
                    pong_timer.as_mut().reset(deadline);
                    metrics().pings_sent.increment(1);
                    if let Err(WriteFailed(reason)) = wire.send(Message::Ping(Default::default())).await {
                        return reason;
                    }
                }
            }
            incoming = wire.socket.recv() => {
                let message = match incoming {
                    None | Some(Ok(Message::Close(_))) => return CloseReason::ClientGone,
                    Some(Err(error)) => {
                        if is_too_large(&error) {
                            wire.close(close_code::SIZE, "message too large").await;
                            return CloseReason::TooLarge;
                        }
                        return CloseReason::ClientGone;
                    }
                    Some(Ok(message)) => message,
                };
                let text = match message {
                    Message::Pong(_) => {
                        pong_deadline = None;
                        continue;
                    }
                    // tungstenite answers pings by itself.
                    Message::Ping(_) | Message::Close(_) => continue,
                    Message::Text(text) => Some(text),
                    Message::Binary(_) => None,
                };
                let now = Instant::now();
                match limiter.check(now) {
                    Verdict::Accept => {}
                    Verdict::Drop { notify } => {
                        metrics().rate_limited.increment(1);
                        if notify {
                            let error = ProtocolError::new(
                                ErrorCode::RateLimited,
                                "too many messages; this one and others were dropped",
                            );
                            if let Err(WriteFailed(reason)) = wire.send_error(error).await {
                                return reason;
                            }
                        }
                        continue;
                    }
                    Verdict::Close => {
                        wire.close(close_code::POLICY, "flooding").await;
                        return CloseReason::Flood;
                    }
                }
                let parsed = match text {
                    Some(text) => ClientMessage::parse(text.as_str(), now_ms()),
                    None => Err(ProtocolError::new(
                        ErrorCode::BinaryFrame,
                        "binary frames are not part of protocol v1; send JSON text",
                    )),
                };
                let reply = match parsed {
                    Ok(ClientMessage::Phase(report)) => {
                        // A full queue drops the report: the next one replaces it.
                        metrics().received_phase.increment(1);
                        if membership.handle.reports.try_send(Report { conn, report, received: now }).is_err() {
                            metrics().reports_dropped.increment(1);
                        }
                        None
                    }
                    Ok(ClientMessage::Time { t0 }) => {
                        metrics().received_time.increment(1);
                        Some(ServerMessage::Time(TimeReply { t0, server_time: now_ms() }))
                    }
                    Ok(ClientMessage::Love { seq }) => {
                        metrics().received_love.increment(1);
                        let tap = Tap { room: room.clone(), client: client_id.clone(), seq };
                        match state.love.tap(tap).await {
                            Ok(TapOutcome::Counted { added, total }) => {
                                metrics().love_taps.increment(added);
                                metrics().love_ack.record(now.elapsed().as_secs_f64());
                                if added > 0 {
                                    let _ = membership.handle.control.send(Control::Love { total });
                                }
                                Some(ServerMessage::LoveAck(LoveAck { seq, total }))
                            }
                            Ok(TapOutcome::TooBig { last }) => {
                                let error = ProtocolError::new(
                                    ErrorCode::BadLove,
                                    format!("seq {seq} jumps more than {MAX_LOVE_STEP} past the last one ({last}); nothing was counted"),
                                );
                                if violations.record(now) {
                                    wire.close(close_code::POLICY, "too many protocol violations").await;
                                    return CloseReason::Violations;
                                }
                                Some(ServerMessage::Error(error))
                            }
                            Err(error) => {
                                tracing::error!(%error, "love not saved");
                                Some(ServerMessage::Error(ProtocolError::new(
                                    ErrorCode::Internal,
                                    "your love could not be saved; send it again later",
                                )))
                            }
                        }
                    }
                    Err(error) => {
                        if error.code == ErrorCode::BinaryFrame {
                            metrics().received_binary.increment(1);
                        } else {
                            metrics().received_invalid.increment(1);
                        }
                        if violations.record(now) {
                            wire.close(close_code::POLICY, "too many protocol violations").await;
                            return CloseReason::Violations;
                        }
                        Some(ServerMessage::Error(error))
                    }
                };
                if let Some(reply) = reply
                    && let Err(WriteFailed(reason)) = wire.send_json(&reply).await
                {
                    return reason;
                }
            }
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a read failed because the message or frame was over the limit.
fn is_too_large(error: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}
