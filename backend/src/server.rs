//! The accept loop and graceful shutdown.
//!
//! axum's own `serve` has no header-read timeout, no write deadline and
//! does not wait for upgraded WebSockets, so the server drives hyper
//! itself: at most `--max-http-connections` HTTP connections are open (one
//! over it gets a bare 503); each gets `--header-timeout` to send its
//! request headers, and its responses `--write-timeout` to make progress;
//! shutdown waits for every WebSocket to be closed (spread over `--drain`).
//! Refusals are logged here as one summary line a minute at most.

use crate::limits::{HttpConnections, RefusalKind};
use crate::metrics::metrics;
use crate::{AppState, Config, app};
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Extra time, past `--drain`, that shutdown waits for connections to close
/// before giving up on them.
const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// How often recorded histogram samples are folded into buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// How often, at most, refusals are summed up in the log.
const REFUSAL_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// What a connection over `--max-http-connections` is told before it is
/// closed: written without waiting (a fresh socket's buffer has room), so a
/// flood of them costs no task and no timer.
const HTTP_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain\r\nContent-Length: 33\r\nConnection: close\r\n\r\n\
the server is busy; retry later\r\n";

/// Serves `config` on `listener` until `shutdown` completes, then closes
/// every WebSocket (spread over `--drain`) and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    config.check()?;
    let (love, cluster) = crate::open_storage(&config).await?;
    let state = AppState::clustered(config, love, cluster);
    let router = app(state.clone());
    crate::api::start(&state);
    let header_timeout = state.config.header_timeout;
    let write_timeout = state.config.write_timeout;
    let drain = state.config.drain;
    let http_connections = HttpConnections::new(state.config.max_http_connections);
    // HTTP connections are tracked apart from WebSockets and rooms: they keep
    // being served while the WebSockets drain (so `/readyz` can say 503), and
    // are stopped last.
    let http_stop = CancellationToken::new();
    let http_tasks = TaskTracker::new();
    let mut drain_deadline: Option<Instant> = None;
    let upkeep = tokio::spawn(async {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            crate::metrics::metrics().run_upkeep();
        }
    });
    let trimmer = crate::memory::spawn_trimmer(state.config.trim_interval);
    let summaries = tokio::spawn({
        let state = state.clone();
        async move {
            let mut every = tokio::time::interval(REFUSAL_SUMMARY_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                log_refusals(&state);
            }
        }
    });
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown, if drain_deadline.is_none() => {
                tracing::info!(open = state.limits.open(), ?drain, "shutting down: draining connections");
                state.draining.store(true, Ordering::Relaxed);
                state.shutdown.cancel();
                state.tracker.close();
                drain_deadline = Some(Instant::now() + drain + DRAIN_GRACE);
                continue;
            }
            () = state.tracker.wait(), if drain_deadline.is_some() => break,
            () = sleep_until(drain_deadline.unwrap_or_else(Instant::now)), if drain_deadline.is_some() => {
                tracing::warn!(open = state.limits.open(), "some connections did not close in time");
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: back off briefly
                    // rather than spin, and keep serving those already in.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = http_connections.admit() else {
            refuse_http(stream);
            state.limits.refusals.record(RefusalKind::HttpFull);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let deadline = WriteDeadline::default();
        let stream = DeadlineStream::new(stream, write_timeout, deadline.clone());
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(deadline.clone());
                request.map(axum::body::Body::new)
            },
        ));
        let stop = http_stop.clone();
        http_tasks.spawn(async move {
            // Held until hyper is done with the connection: after an upgrade
            // that is as soon as the WebSocket takes the socket over.
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = &mut connection => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
                    }
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }

    drop(listener);
    upkeep.abort();
    if let Some(trimmer) = trimmer {
        trimmer.abort();
    }
    summaries.abort();
    log_refusals(&state);
    http_stop.cancel();
    http_tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), http_tasks.wait()).await;
    tracing::info!("shut down");
    Ok(())
}

/// Logs the refusals since the last summary, if there were any.
fn log_refusals(state: &AppState) {
    if let Some(refused) = state.limits.refusals.take_summary() {
        tracing::warn!(%refused, "connections refused since the last summary");
    }
}

/// Tells a connection over the HTTP cap to come back later, and closes it.
fn refuse_http(stream: TcpStream) {
    let _ = stream.try_write(HTTP_FULL);
    // Reading what already came keeps the kernel from answering the close
    // with a reset, which could discard the 503 before the client reads it.
    let mut request = [0u8; 4096];
    let _ = stream.try_read(&mut request);
}

/// Whether an HTTP connection's writes still run under `--write-timeout`.
/// A WebSocket lifts it after the upgrade: its writes have a deadline of
/// their own, which closes it with the right reason.
#[derive(Debug, Clone, Default)]
pub struct WriteDeadline {
    lifted: Arc<AtomicBool>,
}

impl WriteDeadline {
    /// No deadline for this connection's writes from now on.
    pub fn lift(&self) {
        self.lifted.store(true, Ordering::Relaxed);
    }
}

/// A TCP stream whose writes fail with `TimedOut` once one has been
/// pending (the peer's window closed, our buffer full) for `timeout`: hyper
/// then drops the connection. Without it a client that pipelines requests
/// and never reads holds a descriptor and megabytes of kernel buffers for
/// as long as it likes. Hand-written because hyper has no write timeout
/// and the crates that add one cannot be turned off after an upgrade.
pub(crate) struct DeadlineStream {
    inner: TcpStream,
    timeout: Duration,
    deadline: WriteDeadline,
    /// Armed when a write first finds the socket full; disarmed by any
    /// progress. Boxed so the stream stays `Unpin`; allocated only for a
    /// connection that ever stalls.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Whether `stalled` is running for the current wait.
    armed: bool,
}

impl DeadlineStream {
    fn new(inner: TcpStream, timeout: Duration, deadline: WriteDeadline) -> Self {
        Self { inner, timeout, deadline, stalled: None, armed: false }
    }

    /// The TCP stream, for a WebSocket that takes it over after the upgrade
    /// (its writes have their own deadline; see `socket/upgrade.rs`).
    pub(crate) fn into_inner(self) -> TcpStream {
        self.inner
    }

    /// Called when a write is pending: `Ready(Err)` once it has been for
    /// `timeout`.
    fn poll_stalled<T>(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<T>> {
        if self.deadline.lifted.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        if !self.armed {
            let at = Instant::now() + self.timeout;
            match &mut self.stalled {
                Some(timer) => timer.as_mut().reset(at),
                None => self.stalled = Some(Box::pin(sleep_until(at))),
            }
            self.armed = true;
        }
        let Some(timer) = self.stalled.as_mut() else {
            return Poll::Pending;
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                metrics().http_write_timeouts.increment(1);
                // Close with a reset rather than a FIN queued behind the
                // unsent data: otherwise the kernel keeps the socket, and
                // its full send buffer, for minutes after we let go of it,
                // probing a window the client never opens.
                let _ = self.inner.set_zero_linger();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the response in time",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_stalled(cx),
        }
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progressed(result, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair on the loopback; the client side never reads.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (server, client)
    }

    /// Writes until the stream fails or `patience` passes; how it ended.
    async fn write_until_stuck(
        stream: &mut DeadlineStream,
        patience: Duration,
    ) -> Option<io::ErrorKind> {
        let chunk = vec![0u8; 64 * 1024];
        let result = tokio::time::timeout(patience, async {
            loop {
                if let Err(error) = stream.write_all(&chunk).await {
                    return error.kind();
                }
            }
        })
        .await;
        result.ok()
    }

    #[tokio::test]
    async fn a_write_that_stays_pending_fails_after_the_timeout_and_resets() {
        let (server, mut client) = pair().await;
        let mut stream =
            DeadlineStream::new(server, Duration::from_millis(200), WriteDeadline::default());
        let started = Instant::now();
        let ended = write_until_stuck(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(ended, Some(io::ErrorKind::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Dropped, it resets the connection instead of leaving the kernel
        // to deliver everything still queued: the client, reading at last,
        // meets a reset, not the end of a stream.
        drop(stream);
        let mut buffer = vec![0u8; 64 * 1024];
        let read_to_the_end = async {
            loop {
                match client.read(&mut buffer).await {
                    Ok(0) => return None,
                    Ok(_) => continue,
                    Err(error) => return Some(error.kind()),
                }
            }
        };
        let end = tokio::time::timeout(Duration::from_secs(10), read_to_the_end).await;
        assert_eq!(end.ok(), Some(Some(io::ErrorKind::ConnectionReset)));
    }

    #[tokio::test]
    async fn a_lifted_deadline_lets_writes_wait() {
        let (server, _client) = pair().await;
        let deadline = WriteDeadline::default();
        deadline.lift();
        let mut stream = DeadlineStream::new(server, Duration::from_millis(100), deadline);
        assert_eq!(write_until_stuck(&mut stream, Duration::from_secs(1)).await, None);
    }
}
