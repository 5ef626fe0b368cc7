//! The upgrade that keeps the socket: after the HTTP checks, the server
//! answers the handshake itself and takes hyper's upgraded connection back
//! as the `TcpStream` it is, so that the room's shard writers can write the
//! consensus frame to it directly (see [`crate::fanout`]).
//!
//! axum's `WebSocketUpgrade` still checks the request (and answers a bad
//! one); then [`accept`] answers `101` with tungstenite's accept key, and the
//! connection's task builds tungstenite's WebSocket over [`ConnIo`]: reads
//! from the stream, writes through the connection's [`Outbox`], which it
//! shares with its shard. Everything RFC 6455 asks of a server's reading
//! (masking, control frames, fragments, size limits, UTF-8) is still
//! tungstenite's. No extension is negotiated (trunk's proxy cannot read
//! permessage-deflate).

use super::{Connection, Running, start};
use crate::AppState;
use crate::fanout::Outbox;
use crate::server::{DeadlineStream, WriteDeadline};
use axum::extract::FromRequestParts;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tungstenite::protocol::{Role, WebSocketConfig};

/// The bytes tungstenite reads at a time, and the buffer every connection
/// holds for them. A protocol message is about 80 bytes (a phase report
/// with its frame header), so one read takes it, or a few arriving
/// together; a larger one (up to `--max-message-bytes`) takes several reads
/// into a buffer that grows for it.
const READ_BUFFER: usize = 256;

/// What the upgrade needs from the request, taken before axum's
/// `WebSocketUpgrade` (which keeps its own copy private): hyper's pending
/// upgrade and the client's key.
#[derive(Debug)]
pub struct RawUpgrade {
    on_upgrade: Option<OnUpgrade>,
    key: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for RawUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self {
            on_upgrade: parts.extensions.get::<OnUpgrade>().cloned(),
            key: parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned(),
        })
    }
}

/// Answers a checked upgrade request with `101 Switching Protocols`, and
/// serves the connection once hyper hands it over. `token` keeps shutdown
/// waiting for it.
pub fn accept(
    raw: RawUpgrade,
    state: AppState,
    connection: Connection,
    deadline: Option<WriteDeadline>,
    token: TaskTrackerToken,
) -> Response {
    let (Some(on_upgrade), Some(key)) = (raw.on_upgrade, raw.key) else {
        return (StatusCode::UPGRADE_REQUIRED, "this endpoint takes WebSocket upgrades")
            .into_response();
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let max = state.config.max_message_bytes;
    // Small messages only: a small read buffer instead of tungstenite's
    // 128 KiB, writes sent at once, and a bounded queue.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    // The handshake and the welcome run in a box of their own, freed once
    // the connection is up: at rest, the task holds only a pointer to the
    // running connection.
    let upgrade = Box::pin(upgrade_and_start(on_upgrade, state, connection, deadline, config));
    tokio::spawn(connection_task(upgrade, token));
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// One connection's task: the upgrade and the welcome (`upgrade`, boxed
/// and freed once done), then the running connection. `token` keeps
/// shutdown waiting for it.
async fn connection_task<F>(upgrade: Pin<Box<F>>, token: TaskTrackerToken)
where
    F: Future<Output = Option<Running>> + ?Sized,
{
    if let Some(running) = upgrade.await {
        running.await;
    }
    drop(token);
}

/// Starts serving the connection once hyper hands the upgraded socket over:
/// on the bare `TcpStream` with its outbox (the fast path), or else on
/// whatever hyper gives, the handler writing every consensus itself.
/// `None` when it ended before it was up.
async fn upgrade_and_start(
    on_upgrade: OnUpgrade,
    state: AppState,
    connection: Connection,
    deadline: Option<WriteDeadline>,
    config: WebSocketConfig,
) -> Option<Running> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "the upgrade did not complete");
            return None;
        }
    };
    // The socket's own writes have a deadline (and close with a
    // reason); the HTTP one would race it.
    if let Some(deadline) = deadline {
        deadline.lift();
    }
    match upgraded.downcast::<TokioIo<DeadlineStream>>() {
        Ok(parts) => {
            let (read, outbox) = Outbox::split(parts.io.into_inner().into_inner());
            let outbox = Arc::new(outbox);
            // A copy of what hyper read past the request (usually
            // nothing): a slice would keep hyper's whole read buffer.
            let prefix = Bytes::copy_from_slice(&parts.read_buf);
            drop(parts.read_buf);
            let budget = read_budget(&state.config);
            let io = ConnIo { read, outbox: outbox.clone(), prefix, budget };
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            start(Ws(ws), Some(outbox), state, connection).await.ok()
        }
        // Not a plain TCP stream (nothing in this server does that):
        // still served, with the consensus written by the handler.
        Err(upgraded) => {
            let io = TokioIo::new(upgraded);
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            start(Ws(ws), None, state, connection).await.ok()
        }
    }
}

/// The upgraded stream as tungstenite reads and writes it: reads straight
/// from the socket (first the bytes hyper had read past the request), writes
/// through the connection's [`Outbox`].
#[derive(Debug)]
pub struct ConnIo {
    /// The socket's read half: tokio's own reads, which take a short read
    /// as the socket drained (no extra `recv` that would block).
    read: OwnedReadHalf,
    outbox: Arc<Outbox>,
    /// Bytes read with the HTTP request but belonging to the WebSocket.
    prefix: Bytes,
    /// Every byte read counts against this, whatever frame it belongs to.
    /// tungstenite assembles fragments below the handler, so a flood of
    /// empty continuation frames never reaches the message limiter; it
    /// cannot get past this (issue 16, defect 1).
    budget: ReadBudget,
}

/// A token bucket of bytes on tokio's clock.
type ReadBudget = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    crate::limits::TokioClock,
    governor::middleware::NoOpMiddleware<std::time::Instant>,
>;

/// Twice what the message limit lets through at the largest message size
/// (`2 × --message-rate × --max-message-bytes` a second, twice the burst):
/// no client within the message limit comes near it, and every frame, even
/// an empty one, costs at least 6 bytes.
fn read_budget(config: &crate::Config) -> ReadBudget {
    let bytes = |n: u32| {
        let total = u64::from(n).saturating_mul(2).saturating_mul(config.max_message_bytes as u64);
        NonZeroU32::new(u32::try_from(total).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MAX)
    };
    let quota = governor::Quota::per_second(bytes(config.message_rate))
        .allow_burst(bytes(config.message_burst));
    governor::RateLimiter::direct_with_clock(quota, crate::limits::TokioClock)
}

/// The error a read ends with when the client sent more than its budget.
#[derive(Debug, thiserror::Error)]
#[error("the client sent more bytes than its budget allows")]
pub struct ReadFlood;

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Free it: an advanced `Bytes` still holds its allocation.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.read).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if let Some(n) = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))
            && !matches!(this.budget.check_n(n), Ok(Ok(())))
        {
            return Poll::Ready(Err(io::Error::other(ReadFlood)));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.outbox.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.poll_drain(cx)
    }
}

/// tungstenite's WebSocket with axum's message type, which the handler
/// speaks (and its channel tests too).
pub struct Ws<T>(WebSocketStream<T>);

fn to_axum(message: tungstenite::Message) -> Option<Result<Message, axum::Error>> {
    use tungstenite::Message as T;
    let text = |bytes: tungstenite::Utf8Bytes| Utf8Bytes::try_from(Bytes::from(bytes));
    Some(match message {
        T::Text(t) => text(t).map(Message::Text).map_err(axum::Error::new),
        T::Binary(b) => Ok(Message::Binary(b)),
        T::Ping(b) => Ok(Message::Ping(b)),
        T::Pong(b) => Ok(Message::Pong(b)),
        T::Close(None) => Ok(Message::Close(None)),
        T::Close(Some(frame)) => text(frame.reason)
            .map(|reason| Message::Close(Some(CloseFrame { code: frame.code.into(), reason })))
            .map_err(axum::Error::new),
        // Raw frames are only ever written, never read.
        T::Frame(_) => return None,
    })
}

fn to_tungstenite(message: Message) -> Result<tungstenite::Message, axum::Error> {
    use tungstenite::Message as T;
    let text = |t: Utf8Bytes| tungstenite::Utf8Bytes::try_from(Bytes::from(t));
    Ok(match message {
        Message::Text(t) => T::Text(text(t).map_err(axum::Error::new)?),
        Message::Binary(b) => T::Binary(b),
        Message::Ping(b) => T::Ping(b),
        Message::Pong(b) => T::Pong(b),
        Message::Close(None) => T::Close(None),
        Message::Close(Some(frame)) => T::Close(Some(tungstenite::protocol::CloseFrame {
            code: frame.code.into(),
            reason: text(frame.reason).map_err(axum::Error::new)?,
        })),
    })
}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream for Ws<T> {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let next = ready!(Pin::new(&mut self.0).poll_next(cx));
            match next {
                None => return Poll::Ready(None),
                Some(Err(error)) => return Poll::Ready(Some(Err(axum::Error::new(error)))),
                Some(Ok(message)) => {
                    if let Some(message) = to_axum(message) {
                        return Poll::Ready(Some(message));
                    }
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Sink<Message> for Ws<T> {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(axum::Error::new)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.0).start_send(to_tungstenite(item)?).map_err(axum::Error::new)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(axum::Error::new)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(axum::Error::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::love::LoveStore;
    use crate::love::memory::MemoryLove;
    use shared::{ClientId, RoomName};
    use std::mem::{size_of, size_of_val};
    use tokio::net::TcpStream;

    /// What an idle connection holds in the server's memory, apart from the
    /// kernel's socket buffers: the task's future, the running connection's
    /// future, the handler's box (the WebSocket state in it), the outbox and
    /// the keepalive's share. The figures are measured (ARCHITECTURE.md
    /// lists them); the bounds keep them from creeping up.
    #[tokio::test]
    async fn an_idle_connection_fits_in_its_budget() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.expect("connected");
        let (read, outbox) = Outbox::split(server.expect("accepted").0);
        let outbox = Arc::new(outbox);
        let budget = read_budget(&crate::Config::default());
        let io = ConnIo { read, outbox: outbox.clone(), prefix: Bytes::new(), budget };
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let websocket = size_of_val(&ws);
        let state = AppState::with_clock(
            crate::Config::default(),
            LoveStore::start(MemoryLove::default()),
            Clock::following_tokio(0.0),
        );
        let connection = Connection {
            conn: 1,
            room: RoomName::main(),
            client_id: ClientId::parse("abcdefgh").expect("a valid client id"),
            slot: state
                .limits
                .admit(std::net::Ipv4Addr::LOCALHOST.into())
                .expect("room under the cap"),
            expires: None,
        };
        let running =
            start(Ws(ws), Some(outbox), state.clone(), connection).await.expect("started");
        let running = size_of_val(&*running);
        let tracker = tokio_util::task::TaskTracker::new();
        let task = size_of_val(&connection_task(Box::pin(async { None }), tracker.token()));
        let handler = size_of::<super::super::handler::Handler<Ws<ConnIo>>>();
        let outbox = size_of::<Outbox>();
        let liveness = size_of::<super::super::keepalive::Liveness>();
        println!(
            "task {task} B, running {running} B, handler {handler} B (the WebSocket {websocket} B in it), \
             outbox {outbox} B, liveness {liveness} B, read buffer {READ_BUFFER} B"
        );
        assert!(task <= 64, "the connection's task future is {task} B");
        assert!(running <= 256, "the running connection's future is {running} B");
        assert!(handler <= 1024, "the handler is {handler} B");
        assert!(outbox <= 192, "the outbox is {outbox} B");
        assert!(liveness <= 64, "the liveness is {liveness} B");
    }
}

/// RFC 6455 over the real server: the close handshake and the close codes
/// of protocol violations (issue 16, defect 8).
#[cfg(test)]
mod rfc_tests {
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::{WebSocketStream, client_async};
    use tokio_util::sync::CancellationToken;

    /// The real server on a free port; it stops when the token is dropped
    /// with the test.
    struct Server {
        addr: SocketAddr,
        stop: CancellationToken,
        _data: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn start() -> Server {
        start_with(crate::Config::default()).await
    }

    async fn start_with(config: crate::Config) -> Server {
        let data = tempfile::tempdir().expect("a temp dir");
        let config = crate::Config { data_dir: data.path().to_owned(), ..config };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(crate::run(listener, config, async move { stopped.cancelled().await }));
        Server { addr, stop, _data: data }
    }

    /// A client past its welcome and first consensus.
    async fn join(server: &Server) -> WebSocketStream<TcpStream> {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let url = format!("ws://{}/ws/rfc", server.addr);
        let (mut ws, _) = client_async(url, stream).await.expect("upgraded");
        for _ in 0..2 {
            let _ = next(&mut ws).await.expect("the welcome and a consensus");
        }
        ws
    }

    async fn next(
        ws: &mut WebSocketStream<TcpStream>,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        use futures_util::StreamExt;
        tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer in time")
    }

    /// Reads past consensus ticks to the server's close frame, if any.
    async fn close_code(ws: &mut WebSocketStream<TcpStream>) -> Option<u16> {
        loop {
            match next(ws).await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clients_close_is_echoed_so_the_handshake_completes() {
        use futures_util::SinkExt;
        let server = start().await;
        let mut ws = join(&server).await;
        let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
        ws.send(Message::Close(Some(bye))).await.expect("close sent");
        // Before the fix the server dropped the socket at once: the client
        // read a reset, not a close (1006 in a browser).
        assert_eq!(close_code(&mut ws).await, Some(1000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn protocol_violations_close_with_1002_and_bad_utf8_with_1007() {
        let server = start().await;
        let cases: [(&[u8], u16, &str); 3] = [
            (b"\x81\x02hi", 1002, "an unmasked frame"),
            (b"\xc1\x80\0\0\0\0", 1002, "a reserved bit"),
            (b"\x81\x82\0\0\0\0\xff\xfe", 1007, "text that is not UTF-8"),
        ];
        for (frame, code, what) in cases {
            let mut ws = join(&server).await;
            ws.get_mut().write_all(frame).await.expect("written");
            assert_eq!(close_code(&mut ws).await, Some(code), "{what}");
        }
    }

    /// Issue 16, defect 1: an open text message followed by endless empty
    /// continuation frames never completes a message, so it got round the
    /// message limiter and cost the server a core. Its bytes now count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_empty_continuation_frames_is_closed_with_1008() {
        use tokio::io::AsyncReadExt;
        let server = start().await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let request = format!(
            "GET /ws/rfc HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.expect("request sent");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.expect("the response head");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        let (mut reader, mut writer) = stream.into_split();
        let flood = tokio::spawn(async move {
            // A masked text frame that is not final, then empty masked
            // continuation frames, as fast as the socket takes them.
            writer.write_all(b"\x01\x81\0\0\0\0a").await.expect("the open message");
            let chunk = b"\x00\x80\0\0\0\0".repeat(1000);
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                if writer.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        // Read the server's frames until its close frame.
        let code = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let mut header = [0u8; 2];
                reader.read_exact(&mut header).await.ok()?;
                let len = match header[1] {
                    126 => {
                        let mut ext = [0u8; 2];
                        reader.read_exact(&mut ext).await.ok()?;
                        usize::from(u16::from_be_bytes(ext))
                    }
                    n => usize::from(n),
                };
                let mut payload = vec![0u8; len];
                reader.read_exact(&mut payload).await.ok()?;
                if header[0] == 0x88 {
                    return Some(u16::from_be_bytes([payload[0], payload[1]]));
                }
            }
        })
        .await
        .expect("the flood was not closed within 15 s");
        flood.abort();
        assert_eq!(code, Some(1008));
    }

    /// Issue 16, defect 3 (its idle half), over real sockets: a client whose
    /// library answers every ping but that sends nothing is closed with 1000
    /// once `--idle-timeout` has passed; one that sends messages stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn defect_3_a_real_socket_that_only_answers_pings_is_closed_and_a_talking_one_stays() {
        use futures_util::{SinkExt, StreamExt};
        let idle = Duration::from_secs(1);
        let server = start_with(crate::Config {
            tick: Duration::from_millis(100),
            ping_interval: Duration::from_millis(200),
            idle_timeout: idle,
            ..crate::Config::default()
        })
        .await;
        // Taken before the silent socket connects, so before the server
        // starts its idle clock.
        let joined = std::time::Instant::now();
        let mut silent = join(&server).await;
        let mut talker = join(&server).await;
        let (mut pings, mut silent_close) = (0, None);
        let deadline = joined + Duration::from_secs(4);
        let time = Message::text(shared::ClientMessage::Time { t0: 1.0 }.to_json());
        let mut ask = tokio::time::interval(Duration::from_millis(250));
        while std::time::Instant::now() < deadline {
            tokio::select! {
                // tungstenite answers each ping as it reads it.
                frame = silent.next(), if silent_close.is_none() => match frame {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    Some(Ok(Message::Close(frame))) => {
                        silent_close = Some((joined.elapsed(), frame));
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the silent socket ended without a close frame: {other:?}"),
                },
                frame = talker.next() => match frame {
                    Some(Ok(Message::Close(frame))) => panic!("the talker was closed: {frame:?}"),
                    Some(Ok(_)) => {}
                    other => panic!("the talker's socket ended: {other:?}"),
                },
                _ = ask.tick() => talker.send(time.clone()).await.expect("sent"),
            }
        }
        let (after, frame) = silent_close.expect("the silent socket was not closed within 4 s");
        let frame = frame.expect("a close frame with a code");
        assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1000, "idle timeout"));
        assert!(after >= idle, "closed after {after:?}, before the idle timeout");
        assert!(pings >= 2, "it answered {pings} pings: the pong timeout is not what closed it");
    }
}
