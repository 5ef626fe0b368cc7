//! How in sync each room has been: coherence, hearts and love per 10-second
//! bucket over the last hour, and `GET /api/rooms/{room}/history`.
//!
//! A sampler task reads every open room's newest consensus once a tick (the
//! registry's `watch` values, so rooms do not know it exists) and folds each
//! new one into the room's current bucket. Buckets are aligned to the
//! server clock (`at / 10 s`), so instances sharing a store agree on them.
//!
//! # Layout
//! - [`HistoryStore`]: where buckets live, the seam between the sampler and
//!   the endpoint and the stores.
//! - [`memory`]: [`MemoryHistory`], this instance's own samples, bounded (an
//!   hour per room, `--history-rooms` rooms): the store of an instance alone.
//! - [`redis`]: [`RedisHistory`], with `--redis-url`: every instance writes
//!   its summary of each room's bucket once the bucket has ended, and
//!   answers from every instance's summaries, so all answer the same (the
//!   bucket still filling appears once it has ended).
//! - [`merge`]: the summary of a bucket ([`merge::Entry`]) and how the
//!   summaries of several instances make one bucket.

pub mod memory;
pub mod merge;
pub mod redis;

pub use memory::MemoryHistory;
pub use redis::RedisHistory;

use super::{ApiError, Refused};
use crate::AppState;
use crate::auth::ErrorBody;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use shared::{Consensus, RoomName};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;
use utoipa::{IntoParams, ToSchema};

/// The width of one bucket.
pub const BUCKET: Duration = Duration::from_secs(10);

/// How far back history goes.
pub const SPAN: Duration = Duration::from_secs(3600);

const BUCKET_MS: f64 = 10_000.0;
const SPAN_MS: f64 = 3_600_000.0;
/// An hour of buckets and the one being filled.
const MAX_BUCKETS: usize = 361;

/// The bucket holding the instant `ms` (server clock).
fn bucket_index(ms: f64) -> i64 {
    // `as` saturates, so an infinite `ms` is the last bucket there is.
    (ms / BUCKET_MS).floor() as i64
}

/// One 10-second bucket of a room's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Bucket {
    /// When the bucket starts (server clock, ms since the Unix epoch, a
    /// multiple of 10 000).
    pub start: f64,
    /// The lowest coherence seen in the bucket.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub coherence_min: f64,
    /// The mean coherence over the bucket's ticks.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub coherence_mean: f64,
    /// The highest coherence seen in the bucket.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub coherence_max: f64,
    /// The most hearts the room had in the bucket.
    pub hearts: u32,
    /// Love added during the bucket: the rise of the room's total since the
    /// bucket before.
    pub love_added: u64,
}

/// A room's history as the endpoint answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// The room.
    pub room: String,
    /// The width of every bucket, in seconds (10).
    pub bucket_seconds: u32,
    /// Buckets in time order, oldest first; a bucket in which the room was
    /// closed is absent. With several instances sharing Redis, every
    /// instance answers the same, and a bucket appears once it has ended.
    pub buckets: Vec<Bucket>,
}

/// Why history could not be read (a remote store's failure).
#[derive(Debug, thiserror::Error)]
#[error("history store: {0}")]
pub struct HistoryError(pub String);

/// A future a store answers with.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HistoryError>> + Send + 'a>>;

/// Where history is kept: in this process, or in Redis for every instance.
pub trait HistoryStore: Send + Sync + fmt::Debug {
    /// Folds a room's consensus into its bucket. Called from the sampler for
    /// every new consensus of every open room, so it must not block: a
    /// remote store writes in the background.
    fn record(&self, room: &RoomName, consensus: &Consensus);

    /// The room's buckets that start at or after `since_ms`, oldest first.
    fn buckets(&self, room: &RoomName, since_ms: f64) -> StoreFuture<'_, Vec<Bucket>>;

    /// Forgets rooms with nothing recorded since `before_ms`.
    fn forget_before(&self, before_ms: f64);

    /// Called by the sampler after each round of records: a shared store
    /// hands the buckets that ended before `now_ms` to its writer (without
    /// waiting for it).
    fn sampled(&self, _now_ms: f64) {}

    /// Starts what the store runs in the background (a shared store's
    /// writer), on `tracker` so that shutdown waits for it.
    fn start(&self, _tracker: &TaskTracker) {}

    /// The server is stopping: a shared store hands over the buckets still
    /// filling too, so what this instance saw is kept, and its writer ends
    /// after one last write.
    fn finish(&self) {}
}

/// The history store the server uses, shared.
pub type SharedHistory = Arc<dyn HistoryStore>;

/// The store for `config`: in Redis when this instance is part of a
/// `cluster` (so every instance answers the same), else in memory.
pub fn store(config: &crate::Config, cluster: Option<&crate::cluster::Cluster>) -> SharedHistory {
    if let (Some(url), Some(cluster)) = (&config.redis_url, cluster) {
        match RedisHistory::new(url, cluster.id(), config.history_rooms) {
            Ok(store) => return Arc::new(store),
            // The cluster already reached this URL, so this is not expected;
            // history is still answered, by this instance alone.
            Err(error) => tracing::warn!(%error, "history stays in this instance's memory"),
        }
    }
    Arc::new(MemoryHistory::new(config.history_rooms))
}

/// Starts the store's background work and samples every open room once a
/// tick until shutdown.
pub fn spawn_sampler(state: AppState) {
    let tracker = state.tracker.clone();
    state.history.start(&tracker);
    tracker.spawn(async move {
        let mut every = tokio::time::interval(state.config.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweeps = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => {
                    state.history.finish();
                    break;
                }
                _ = every.tick() => {
                    // Seq 0 is a room's placeholder before its first tick.
                    for (room, consensus) in state.rooms.snapshot() {
                        if consensus.seq > 0 {
                            state.history.record(&room, &consensus);
                        }
                    }
                    state.history.sampled(state.clock.now_ms());
                }
                _ = sweeps.tick() => state.history.forget_before(state.clock.now_ms() - SPAN_MS),
            }
        }
    });
}

/// The query of the history endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many minutes back (default and most 60).
    #[param(minimum = 1, maximum = 60)]
    pub minutes: Option<u32>,
}

/// A room's coherence over the last hour, per 10-second bucket.
#[utoipa::path(
    get,
    path = "/api/rooms/{room}/history",
    tag = "rooms",
    params(
        ("room" = String, Path, description = "The room's name", pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        HistoryQuery,
    ),
    security((), ("join_token" = [])),
    responses(
        (status = 200, description = "The room's buckets, oldest first (none for a room never seen)", body = History),
        (status = 400, description = "Not a room name, or minutes outside 1-60", body = ErrorBody),
        (status = 401, description = "A private room, and no token", body = ErrorBody),
        (status = 403, description = "A private room, and a bad, expired or other room's token", body = ErrorBody),
        (status = 503, description = "The history store is not answering", body = ErrorBody),
    )
)]
pub async fn endpoint(
    State(state): State<AppState>,
    Path(room): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<History>, Refused> {
    let (room, _) = super::enter(&state, &room, &headers, None)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let minutes = match query.minutes {
        None => 60,
        Some(m @ 1..=60) => m,
        Some(_) => return Err(ApiError::bad_request("minutes is 1 to 60").into()),
    };
    let now = state.clock.now_ms();
    // The bucket holding `now - minutes` is the first shown.
    let since = ((now - f64::from(minutes) * 60_000.0) / BUCKET_MS).floor() * BUCKET_MS;
    let buckets = state.history.buckets(&room, since).await.map_err(|error| {
        tracing::warn!(%error, "history unavailable");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "history is not available now",
        )
    })?;
    Ok(Json(History { room: room.to_string(), bucket_seconds: 10, buckets }))
}
