//! One WebSocket connection: read, validate and rate-limit what the client
//! sends; write the room's newest consensus; ping; close when told to.
//!
//! # Layout
//! - [`handler`]: one connection's state (the wire, the room membership, the
//!   limiter, the violation window, the deadlines, the love taps on their way
//!   to disk) and its short `select!`.
//! - [`messages`]: one function per message the client sends, and one for the
//!   love store's answer, each returning a [`Reply`]: a message to send back
//!   or the reason to close, so that a close is a `?`.
//! - [`wire`]: the socket: writes under a deadline, close frames, and sorting
//!   what is read.
//! - [`upgrade`]: the handshake answered by the server, which keeps the
//!   upgraded `TcpStream` so that the room's fan-out can write to it.
//!
//! The connection is one task with one `select!` loop. Writes have a
//! deadline (`--write-timeout`): a client that stops reading is closed, and
//! because every connection has its own task and reads the room's consensus
//! from a `watch` channel, it delays no one else. A love tap is handed to the
//! store and its answer comes back through the same `select!`, so no socket
//! waits for a disk.
//!
//! The handler is generic over the socket ([`Socket`]: any `Sink` and
//! `Stream` of axum messages, as in axum's testing-websockets example), so
//! its unit tests drive it over channels under `tokio::time::pause()`.

mod handler;
mod messages;
mod upgrade;
mod wire;

pub use upgrade::{RawUpgrade, accept};

#[cfg(test)]
mod tests;

use crate::AppState;
use crate::fanout::Outbox;
use crate::limits::ConnectionSlot;
use crate::metrics::metrics;
use crate::room::ConnId;
use axum::extract::ws::{Message, close_code};
use futures_util::{Sink, Stream};
use handler::Handler;
use shared::{ClientId, RoomName, ServerMessage};

/// What a message (or the love store's answer) leads to: something to send
/// back, nothing, or the end of the connection.
pub type Reply = Result<Option<ServerMessage>, CloseReason>;

/// A WebSocket as the handler sees it: axum's, or a pair of channels in tests.
pub trait Socket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

impl<S> Socket for S where
    S: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Unpin
        + Send
{
}

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
    /// When its join token expires (private rooms): the socket is closed
    /// then with 1008.
    pub expires: Option<tokio::time::Instant>,
}

/// Why a connection ended; used for logs (and metrics labels), and it
/// decides the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The TCP connection ended (or failed) without a close handshake.
    ClientGone,
    /// The client sent a close frame: it is echoed, then the socket closes.
    ClientClosed,
    /// The client broke RFC 6455 (an unmasked frame, reserved bits or
    /// opcodes, a bad control frame): closed with 1002.
    ProtocolViolation,
    /// A text message that is not UTF-8: closed with 1007.
    BadUtf8,
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
    /// The join token the connection came with expired.
    TokenExpired,
}

impl CloseReason {
    /// A bounded, stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientGone | CloseReason::ClientClosed => "client",
            CloseReason::ProtocolViolation => "protocol",
            CloseReason::BadUtf8 => "bad_utf8",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Slow => "slow",
            CloseReason::PongTimeout => "pong_timeout",
            CloseReason::Flood => "flood",
            CloseReason::Violations => "violations",
            CloseReason::TooLarge => "too_large",
            CloseReason::RoomGone => "room_gone",
            CloseReason::TokenExpired => "token_expired",
        }
    }

    /// The close frame the client is sent (code and reason), if any: a
    /// client that is gone or cannot be written to gets none, and a client
    /// that closed gets its own close frame back (tungstenite's echo).
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            CloseReason::ClientGone | CloseReason::ClientClosed | CloseReason::Slow => None,
            CloseReason::ProtocolViolation => Some((close_code::PROTOCOL, "protocol error")),
            CloseReason::BadUtf8 => Some((close_code::INVALID, "text is not UTF-8")),
            CloseReason::Shutdown | CloseReason::RoomGone => {
                Some((close_code::AWAY, "server shutting down"))
            }
            CloseReason::PongTimeout => Some((close_code::AWAY, "no pong")),
            CloseReason::Flood => Some((close_code::POLICY, "flooding")),
            CloseReason::Violations => Some((close_code::POLICY, "too many protocol violations")),
            CloseReason::TooLarge => Some((close_code::SIZE, "message too large")),
            CloseReason::TokenExpired => Some((close_code::POLICY, "token expired")),
        }
    }
}

/// Serves one upgraded connection until it ends, the handler writing every
/// consensus itself (the shape of the channel tests).
pub async fn serve(socket: impl Socket, state: AppState, connection: Connection) -> CloseReason {
    serve_on(socket, None, state, connection).await
}

/// Serves one upgraded connection until it ends. With an `outbox` (the
/// socket's own writes, see [`crate::fanout`]) the room's shard writer puts
/// the consensus on the wire and the handler only drains what a slow socket
/// left; without one, the handler writes each consensus from the room's
/// `watch`.
pub async fn serve_on(
    socket: impl Socket,
    outbox: Option<std::sync::Arc<Outbox>>,
    state: AppState,
    connection: Connection,
) -> CloseReason {
    let Connection { conn, room, client_id, slot, expires } = connection;
    let m = metrics();
    m.connections_opened.increment(1);
    m.connections_open.increment(1.0);
    // Boxed, so that what only the start needs is freed once it is done.
    let started =
        Box::pin(Handler::start(socket, outbox, state, conn, room.clone(), client_id.clone()));
    let reason = match started.await {
        Ok(mut handler) => {
            handler.deadlines.expires = expires;
            handler.love.address = Some(slot.address());
            handler.run().await
        }
        Err(reason) => reason,
    };
    m.connections_open.decrement(1.0);
    m.connection_closed(reason.as_str());
    tracing::debug!(conn, %room, %client_id, reason = reason.as_str(), "connection closed");
    reason
}
