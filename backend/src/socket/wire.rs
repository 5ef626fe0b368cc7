//! The socket itself: writes under a deadline, close frames, and sorting
//! what is read into what the handler cares about.

use super::{CloseReason, Socket};
use crate::metrics::metrics;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{SinkExt, StreamExt};
use shared::ServerMessage;
use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::timeout;

/// How long a close frame may take to write before the connection is simply
/// dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the client sent, as far as the handler is concerned.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame: a protocol message, to be parsed.
    Text(Utf8Bytes),
    /// A binary frame, which protocol v1 does not have.
    Binary,
    /// The answer to our ping.
    Pong,
    /// A ping, which tungstenite answers by itself; it counts against the
    /// connection's message budget.
    Ping,
}

/// The connection's socket and the deadline its writes run under.
#[derive(Debug)]
pub struct Wire<S> {
    socket: S,
    /// A write that cannot finish within this long closes the connection.
    write_timeout: Duration,
}

impl<S: Socket> Wire<S> {
    /// `socket`, whose writes must finish within `write_timeout`.
    pub fn new(socket: S, write_timeout: Duration) -> Self {
        Self { socket, write_timeout }
    }

    /// Writes `message`, or says why the connection is done.
    pub async fn send(&mut self, message: Message) -> Result<(), CloseReason> {
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
                Err(_) => return Err(CloseReason::Slow),
            },
        };
        result.map_err(|_| CloseReason::ClientGone)
    }

    /// Writes a protocol message, counting it by type.
    pub async fn send_json(&mut self, message: &ServerMessage) -> Result<(), CloseReason> {
        let m = metrics();
        match message {
            ServerMessage::Welcome(_) => m.sent_welcome.increment(1),
            ServerMessage::Consensus(_) => m.sent_consensus.increment(1),
            ServerMessage::Time(_) => m.sent_time.increment(1),
            ServerMessage::Error(e) => m.error_sent(e.code),
            ServerMessage::LoveAck(_) | ServerMessage::LoveFolded(_) => {
                m.sent_love_ack.increment(1)
            }
        }
        self.send(Message::Text(Utf8Bytes::from(message.to_json()))).await
    }

    /// Reads the next frame; the connection ends when the client closes, the
    /// stream fails, a message is over the size limit, or the client breaks
    /// RFC 6455. A poll, so the handler keeps no future between polls.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, CloseReason>> {
        self.socket.poll_next_unpin(cx).map(sort)
    }

    /// Sends the close frame `reason` calls for (best effort, briefly). A
    /// client's own close is answered by tungstenite, which queued the echo
    /// when it read the close: flushing completes the handshake, so a
    /// well-behaved client sees its close acknowledged rather than 1006.
    pub async fn close(&mut self, reason: CloseReason) {
        if let Some((code, text)) = reason.close_frame() {
            let frame = CloseFrame { code, reason: Utf8Bytes::from_static(text) };
            let _ = timeout(CLOSE_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
        } else if reason == CloseReason::ClientClosed {
            let _ = timeout(CLOSE_TIMEOUT, self.socket.flush()).await;
        }
    }
}

/// What was read, sorted.
fn sort(next: Option<Result<Message, axum::Error>>) -> Result<Incoming, CloseReason> {
    match next {
        None => Err(CloseReason::ClientGone),
        Some(Ok(Message::Close(_))) => Err(CloseReason::ClientClosed),
        Some(Err(error)) => Err(read_failure(&error)),
        Some(Ok(Message::Text(text))) => Ok(Incoming::Text(text)),
        Some(Ok(Message::Binary(_))) => Ok(Incoming::Binary),
        Some(Ok(Message::Pong(_))) => Ok(Incoming::Pong),
        Some(Ok(Message::Ping(_))) => Ok(Incoming::Ping),
    }
}

/// Whether a read failed on the connection's byte budget.
fn is_read_flood(error: &std::io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<super::upgrade::ReadFlood>())
}

/// Why a read failed: a message or frame over the limit, a broken rule of
/// RFC 6455, bad UTF-8, or the connection itself.
fn read_failure(error: &axum::Error) -> CloseReason {
    use std::error::Error as _;
    use tungstenite::error::ProtocolError;
    let mut source = error.source();
    while let Some(e) = source {
        match e.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => return CloseReason::TooLarge,
            Some(tungstenite::Error::Utf8(_)) => return CloseReason::BadUtf8,
            Some(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                return CloseReason::ClientGone;
            }
            Some(tungstenite::Error::Protocol(_)) => return CloseReason::ProtocolViolation,
            Some(tungstenite::Error::Io(io)) if is_read_flood(io) => return CloseReason::Flood,
            Some(_) => return CloseReason::ClientGone,
            None => source = e.source(),
        }
    }
    CloseReason::ClientGone
}
