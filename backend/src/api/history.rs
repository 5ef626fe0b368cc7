//! How in sync each room has been: coherence, hearts and love per 10-second
//! bucket over the last hour, and `GET /api/rooms/{room}/history`.
//!
//! A sampler task reads every open room's newest consensus once a tick (the
//! registry's `watch` values, so rooms do not know it exists) and folds each
//! new one into the room's current bucket. Buckets are aligned to the
//! server clock (`at / 10 s`), so instances sharing a store agree on them.
//!
//! Where buckets live is behind [`HistoryStore`]: [`MemoryHistory`] keeps
//! them in this process, bounded (an hour per room, `--history-rooms`
//! rooms). A Redis store, so that every instance answers the same, is
//! another implementation of the same trait.

use super::{ApiError, Refused};
use crate::AppState;
use crate::auth::ErrorBody;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use shared::{Consensus, RoomName};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// The width of one bucket.
pub const BUCKET: Duration = Duration::from_secs(10);

/// How far back history goes.
pub const SPAN: Duration = Duration::from_secs(3600);

const BUCKET_MS: f64 = 10_000.0;
const SPAN_MS: f64 = 3_600_000.0;
/// An hour of buckets and the one being filled.
const MAX_BUCKETS: usize = 361;

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
    /// Love added during the bucket.
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
    /// closed is absent.
    pub buckets: Vec<Bucket>,
}

/// Why history could not be read (a remote store's failure).
#[derive(Debug, thiserror::Error)]
#[error("history store: {0}")]
pub struct HistoryError(pub String);

/// A future a store answers with.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HistoryError>> + Send + 'a>>;

/// Where history is kept: the seam for a shared (Redis) store.
pub trait HistoryStore: Send + Sync + fmt::Debug {
    /// Folds a room's consensus into its bucket. Called from the sampler for
    /// every new consensus of every open room, so it must not block: a
    /// remote store queues and writes in the background.
    fn record(&self, room: &RoomName, consensus: &Consensus);

    /// The room's buckets that start at or after `since_ms`, oldest first.
    fn buckets(&self, room: &RoomName, since_ms: f64) -> StoreFuture<'_, Vec<Bucket>>;

    /// Forgets rooms with nothing recorded since `before_ms`.
    fn forget_before(&self, before_ms: f64);
}

/// History kept in this process.
#[derive(Debug)]
pub struct MemoryHistory {
    rooms: Mutex<HashMap<RoomName, RoomHistory>>,
    /// The most rooms kept; past it, the room recorded longest ago goes.
    max_rooms: usize,
}

/// One room's recent buckets and what the next sample is measured against.
#[derive(Debug, Default)]
struct RoomHistory {
    buckets: VecDeque<Accumulator>,
    /// The `at` of the last consensus folded in: a sample no newer is one
    /// already seen.
    last_at: f64,
    /// The love total last seen: love added is the rise from it.
    last_love: u64,
}

/// A bucket being filled.
#[derive(Debug, Clone)]
struct Accumulator {
    index: i64,
    min: f64,
    max: f64,
    sum: f64,
    count: u32,
    hearts: u32,
    love_added: u64,
}

impl Accumulator {
    fn bucket(&self) -> Bucket {
        Bucket {
            start: self.index as f64 * BUCKET_MS,
            coherence_min: self.min,
            coherence_mean: if self.count == 0 { 0.0 } else { self.sum / f64::from(self.count) },
            coherence_max: self.max,
            hearts: self.hearts,
            love_added: self.love_added,
        }
    }
}

impl MemoryHistory {
    /// An empty history for at most `max_rooms` rooms.
    pub fn new(max_rooms: usize) -> Self {
        Self { rooms: Mutex::new(HashMap::new()), max_rooms: max_rooms.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomHistory>> {
        // Every critical section leaves the map whole, so a poisoned lock
        // (a panic elsewhere) is still safe to use.
        self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl HistoryStore for MemoryHistory {
    fn record(&self, room: &RoomName, c: &Consensus) {
        let mut rooms = self.lock();
        if !rooms.contains_key(room) && rooms.len() >= self.max_rooms {
            let oldest = rooms
                .iter()
                .min_by(|a, b| a.1.last_at.total_cmp(&b.1.last_at))
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                rooms.remove(&oldest);
            }
        }
        let history = rooms
            .entry(room.clone())
            .or_insert_with(|| RoomHistory { last_love: c.love, ..RoomHistory::default() });
        if c.at <= history.last_at {
            return;
        }
        history.last_at = c.at;
        let love_added = c.love.saturating_sub(history.last_love);
        history.last_love = history.last_love.max(c.love);
        let index = (c.at / BUCKET_MS).floor() as i64;
        match history.buckets.back_mut() {
            Some(bucket) if bucket.index == index => {
                bucket.min = bucket.min.min(c.coherence);
                bucket.max = bucket.max.max(c.coherence);
                bucket.sum += c.coherence;
                bucket.count += 1;
                bucket.hearts = bucket.hearts.max(c.hearts);
                bucket.love_added += love_added;
            }
            _ => history.buckets.push_back(Accumulator {
                index,
                min: c.coherence,
                max: c.coherence,
                sum: c.coherence,
                count: 1,
                hearts: c.hearts,
                love_added,
            }),
        }
        let oldest_kept = ((c.at - SPAN_MS) / BUCKET_MS).floor() as i64;
        while history
            .buckets
            .front()
            .is_some_and(|b| b.index < oldest_kept || history.buckets.len() > MAX_BUCKETS)
        {
            history.buckets.pop_front();
        }
    }

    fn buckets(&self, room: &RoomName, since_ms: f64) -> StoreFuture<'_, Vec<Bucket>> {
        let buckets = self
            .lock()
            .get(room)
            .map(|h| {
                h.buckets.iter().map(Accumulator::bucket).filter(|b| b.start >= since_ms).collect()
            })
            .unwrap_or_default();
        Box::pin(std::future::ready(Ok(buckets)))
    }

    fn forget_before(&self, before_ms: f64) {
        self.lock().retain(|_, h| h.last_at >= before_ms);
    }
}

/// The history store the server uses, shared.
pub type SharedHistory = Arc<dyn HistoryStore>;

/// The store for `config`: in memory (the seam where a Redis store plugs in
/// when one is configured).
pub fn store(config: &crate::Config) -> SharedHistory {
    Arc::new(MemoryHistory::new(config.history_rooms))
}

/// Samples every open room once a tick until shutdown.
pub fn spawn_sampler(state: AppState) {
    let tracker = state.tracker.clone();
    tracker.spawn(async move {
        let mut every = tokio::time::interval(state.config.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweeps = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                _ = every.tick() => {
                    // Seq 0 is a room's placeholder before its first tick.
                    for (room, consensus) in state.rooms.snapshot() {
                        if consensus.seq > 0 {
                            state.history.record(&room, &consensus);
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_700_000_000_000.0;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("a room name")
    }

    fn at(ms: f64, coherence: f64, hearts: u32, love: u64) -> Consensus {
        Consensus { at: T0 + ms, coherence, hearts, love, ..Consensus::default() }
    }

    async fn buckets(history: &MemoryHistory, name: &str) -> Vec<Bucket> {
        history.buckets(&room(name), 0.0).await.expect("memory answers")
    }

    #[tokio::test]
    async fn a_bucket_holds_min_mean_max_most_hearts_and_love_added() {
        let history = MemoryHistory::new(10);
        let r = room("kitchen");
        history.record(&r, &at(0.0, 0.2, 1, 5));
        history.record(&r, &at(250.0, 0.8, 3, 7));
        history.record(&r, &at(500.0, 0.5, 2, 9));
        history.record(&r, &at(500.0, 0.0, 9, 100)); // already seen: ignored
        let b = buckets(&history, "kitchen").await;
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].start, T0);
        assert_eq!((b[0].coherence_min, b[0].coherence_max), (0.2, 0.8));
        assert!((b[0].coherence_mean - 0.5).abs() < 1e-9);
        assert_eq!((b[0].hearts, b[0].love_added), (3, 4), "love counted from the first total");
    }

    #[tokio::test]
    async fn buckets_are_ten_seconds_on_the_clock_and_only_an_hour_is_kept() {
        let history = MemoryHistory::new(10);
        let r = room("kitchen");
        for i in 0..400 {
            history.record(&r, &at(f64::from(i) * 10_000.0 + 9_999.0, 0.5, 1, 0));
        }
        let b = buckets(&history, "kitchen").await;
        assert_eq!(b.len(), 361, "an hour of buckets and the current one");
        assert!(b.windows(2).all(|w| w[1].start - w[0].start == 10_000.0));
        assert_eq!(b.last().map(|b| b.start), Some(T0 + 399.0 * 10_000.0));
    }

    #[tokio::test]
    async fn the_room_recorded_longest_ago_is_forgotten_first() {
        let history = MemoryHistory::new(2);
        history.record(&room("a"), &at(0.0, 0.1, 1, 0));
        history.record(&room("b"), &at(1.0, 0.1, 1, 0));
        history.record(&room("a"), &at(2.0, 0.1, 1, 0));
        history.record(&room("c"), &at(3.0, 0.1, 1, 0));
        assert!(buckets(&history, "b").await.is_empty());
        assert_eq!(buckets(&history, "a").await.len(), 1);
        history.forget_before(T0 + 3.0);
        assert!(buckets(&history, "a").await.is_empty());
        assert_eq!(buckets(&history, "c").await.len(), 1);
    }
}
