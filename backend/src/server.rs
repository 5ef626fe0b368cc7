//! The accept loop and graceful shutdown.
//!
//! axum's own `serve` has no header-read timeout and does not wait for
//! upgraded WebSockets, so the server drives hyper itself: each TCP
//! connection gets `--header-timeout` to send its request headers, and
//! shutdown waits for every WebSocket to be closed (spread over `--drain`).

use crate::{AppState, Config, app};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Extra time, past `--drain`, that shutdown waits for connections to close
/// before giving up on them.
const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// How often recorded histogram samples are folded into buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Serves `config` on `listener` until `shutdown` completes, then closes
/// every WebSocket (spread over `--drain`) and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (love, cluster) = crate::open_storage(&config).await?;
    let state = AppState::clustered(config, love, cluster);
    let router = app(state.clone());
    let header_timeout = state.config.header_timeout;
    let drain = state.config.drain;
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
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().map_request(
            |request: axum::http::Request<Incoming>| request.map(axum::body::Body::new),
        ));
        let stop = http_stop.clone();
        http_tasks.spawn(async move {
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
    http_stop.cancel();
    http_tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), http_tasks.wait()).await;
    tracing::info!("shut down");
    Ok(())
}
