//! One WebSocket connection: read, validate and rate-limit what the client
//! sends; write the room's newest consensus; ping; close when told to.
//!
//! # Layout
//! - [`handler`]: one connection's state (the wire, the room membership, the
//!   limiter, the violation window, its keepalive entry, the love taps on
//!   their way to disk) and its loop, which waits on all of them at once
//!   without holding a future for each.
//! - [`messages`]: one function per message the client sends, and one for the
//!   love store's answer, each returning a [`Reply`]: a message to send back
//!   or the reason to close, so that a close is a `?`.
//! - [`wire`]: the socket: writes under a deadline, close frames, and sorting
//!   what is read.
//! - [`upgrade`]: the handshake answered by the server, which keeps the
//!   upgraded `TcpStream` so that the room's fan-out can write to it.
//! - [`keepalive`]: every connection's deadlines (pings, pong timeout, idle
//!   timeout, token expiry, the drain's close), kept by one sweep per shard
//!   rather than a timer per connection.
//!
//! The connection is one task with one loop. Writes have a deadline
//! (`--write-timeout`): a client that stops reading is closed, and it delays
//! no one else (the room's shard writers never wait for a socket). A love
//! tap is handed to the store and its answer comes back through the same
//! loop, so no socket waits for a disk.
//!
//! Memory: a connection at rest holds its task (a few dozen bytes: the
//! task awaits a boxed [`Running`] future), that future (the handler in a
//! box of its own, and the loop's state), the outbox and its keepalive
//! entry; see ARCHITECTURE.md, "Where an idle connection's memory goes".
//!
//! The handler is generic over the socket ([`Socket`]: any `Sink` and
//! `Stream` of axum messages, as in axum's testing-websockets example), so
//! its unit tests drive it over channels under `tokio::time::pause()`.

mod handler;
mod keepalive;
mod messages;
mod upgrade;
mod wire;

pub use keepalive::{Keepalive, Settings as KeepaliveSettings};
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
use std::future::Future;
use std::pin::Pin;

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
    /// No data message for `--idle-timeout` (issue 16, defect 3).
    Idle,
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
            CloseReason::Idle => "idle",
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
            CloseReason::Idle => Some((close_code::NORMAL, "idle timeout")),
            CloseReason::Flood => Some((close_code::POLICY, "flooding")),
            CloseReason::Violations => Some((close_code::POLICY, "too many protocol violations")),
            CloseReason::TooLarge => Some((close_code::SIZE, "message too large")),
            CloseReason::TokenExpired => Some((close_code::POLICY, "token expired")),
        }
    }
}

/// A connection past its welcome, being served: the future ends with the
/// connection, and says why. Boxed, so that the task serving it holds a
/// pointer, not the state of the handshake and the welcome.
pub type Running = Pin<Box<dyn Future<Output = CloseReason> + Send>>;

/// Serves one upgraded connection until it ends, the handler writing every
/// consensus itself (the shape of the channel tests).
pub async fn serve(
    socket: impl Socket + 'static,
    state: AppState,
    connection: Connection,
) -> CloseReason {
    match start(socket, None, state, connection).await {
        Ok(running) => running.await,
        Err(reason) => reason,
    }
}

/// Starts serving one upgraded connection: joins its room, sends the welcome
/// and the room's consensus, and returns the rest of its life (or why it
/// ended already; its close frame has been sent). With an `outbox` (the
/// socket's own writes, see [`crate::fanout`]) the room's shard writer puts
/// the consensus on the wire and the handler only drains what a slow socket
/// left; without one, the handler writes each consensus from the room's
/// `watch`.
pub async fn start(
    socket: impl Socket + 'static,
    outbox: Option<std::sync::Arc<Outbox>>,
    state: AppState,
    connection: Connection,
) -> Result<Running, CloseReason> {
    let m = metrics();
    m.connections_opened.increment(1);
    m.connections_open.increment(1.0);
    // Boxed, so that what only the start needs is freed once it is done.
    match Box::pin(Handler::start(socket, outbox, state, connection)).await {
        Ok(handler) => Ok(Box::pin(async move {
            let reason = handler.run().await;
            closed(reason);
            reason
        })),
        Err(reason) => {
            closed(reason);
            Err(reason)
        }
    }
}

/// Counts a connection that ended.
fn closed(reason: CloseReason) {
    let m = metrics();
    m.connections_open.decrement(1.0);
    m.connection_closed(reason.as_str());
}
