//! History in Redis (`--redis-url`), so every instance answers the same.
//!
//! Each instance samples the rooms it has members in, as when alone, into
//! its [`MemoryHistory`]. Once a bucket has ended, the instance's entry for
//! it (its summary: ticks, seq range, sum, min, max, hearts, love; see
//! [`merge`](super::merge)) goes to a writer task, which adds it to the
//! room's sorted set `heartsync:history:{room}` (score: the bucket's index;
//! member: the entry as JSON, the instance's id in it). A read fetches the
//! room's entries from the requested window (and the bucket before it, for
//! love) in one `ZRANGEBYSCORE` and merges every instance's entries, so an
//! instance answers for buckets in which it had no member, or before it
//! started. The bucket still filling is not in Redis yet: it appears once
//! it has ended (at most 10 s later), the same on every instance. An
//! instance that shuts down hands over the bucket it was filling on its
//! way out, so what it alone saw is kept.
//!
//! Redis traffic is per room and bucket, never per tick: one `ZADD` for
//! each (instance, room, bucket) with members, pipelined with a trim of the
//! set to the last hour (`ZREMRANGEBYSCORE`) and an expiry an hour and two
//! minutes ahead (`PEXPIRE`), so a room that goes quiet is gone from Redis
//! an hour later, and no set holds more than an hour of entries.
//!
//! Redis never holds a room up: the sampler only queues entries (a full
//! queue drops them, counted), and the writer keeps what it could not write
//! (bounded) and tries again every second. A read that fails is answered
//! from this instance's memory, and for the next second reads do not try
//! Redis at all, so a Redis that hangs does not make every request wait.
//! `heartsync_history_redis_up` and a log line on each change tell the
//! operator; everything recovers by itself.

use super::memory::MemoryHistory;
use super::merge::{Entry, merge};
use super::{BUCKET_MS, Bucket, HistoryError, HistoryStore, MAX_BUCKETS, SPAN, StoreFuture};
use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use shared::{Consensus, RoomName};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{OnceCell, mpsc};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// After a failure, how long reads answer from memory without trying Redis,
/// and the writer waits before writing again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Entries that may wait for the writer before new ones are dropped: a
/// bucket's worth for this many rooms.
const QUEUE: usize = 4096;

/// Entries the writer keeps while Redis is away; past it the oldest go.
/// Enough for a thousand rooms over two minutes of outage.
const BACKLOG: usize = 12_288;

/// Most entries written in one pipelined round trip.
const BATCH: usize = 512;

/// How long a room's set outlives its last write.
const KEEP: Duration = Duration::from_secs(SPAN.as_secs() + 120);

/// The sorted set of `room`'s entries.
fn key(room: &RoomName) -> String {
    format!("heartsync:history:{room}")
}

/// History shared through Redis.
#[derive(Debug)]
pub struct RedisHistory {
    /// What this instance sampled: the source of its entries, and its
    /// answer while Redis is away.
    memory: MemoryHistory,
    /// The connection, shared by the writer and the readers.
    link: Arc<Link>,
    /// To the writer task.
    queue: mpsc::Sender<(RoomName, Entry)>,
    /// The writer's end of `queue`, until [`HistoryStore::start`] takes it.
    writer: Mutex<Option<mpsc::Receiver<(RoomName, Entry)>>>,
    /// Cancelled by [`HistoryStore::finish`]: the writer writes what it has
    /// once more and ends.
    finished: CancellationToken,
    /// Until when reads skip Redis after one failed.
    quiet_until: Mutex<Option<Instant>>,
    /// Whether the last read failed, so each change is logged once.
    reads_failing: AtomicBool,
}

/// A lazily made connection to Redis: the store is made before anything
/// awaits, and Redis may be away then.
#[derive(Debug)]
struct Link {
    client: redis::Client,
    /// Made on first use; it reconnects by itself afterwards.
    manager: OnceCell<ConnectionManager>,
}

impl Link {
    async fn manager(&self) -> Result<ConnectionManager, HistoryError> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(RETRY_DELAY);
                match timeout(
                    COMMAND_TIMEOUT,
                    self.client.get_connection_manager_with_config(config),
                )
                .await
                {
                    Ok(Ok(manager)) => Ok(manager),
                    Ok(Err(error)) => Err(HistoryError(format!("cannot reach Redis: {error}"))),
                    Err(_) => Err(HistoryError("Redis did not answer".into())),
                }
            })
            .await?;
        Ok(manager.clone())
    }
}

/// The outcome of a Redis call, which counts as failed after
/// [`COMMAND_TIMEOUT`].
async fn within<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, HistoryError> {
    match timeout(COMMAND_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(HistoryError(error.to_string())),
        Err(_) => Err(HistoryError("Redis did not answer in time".into())),
    }
}

impl RedisHistory {
    /// A store on Redis at `url` for `instance`, keeping at most
    /// `max_rooms` rooms in memory. Does not connect yet: Redis is reached
    /// on first use, and again whenever it comes back.
    pub fn new(url: &str, instance: &str, max_rooms: usize) -> Result<Self, HistoryError> {
        let client = redis::Client::open(url)
            .map_err(|e| HistoryError(format!("bad --redis-url for history: {e}")))?;
        let (queue, writer) = mpsc::channel(QUEUE);
        let _ = history_metrics();
        Ok(Self {
            memory: MemoryHistory::for_instance(max_rooms, instance),
            link: Arc::new(Link { client, manager: OnceCell::new() }),
            queue,
            writer: Mutex::new(Some(writer)),
            finished: CancellationToken::new(),
            quiet_until: Mutex::new(None),
            reads_failing: AtomicBool::new(false),
        })
    }

    /// Queues entries for the writer, never waiting.
    fn hand_over(&self, entries: Vec<(RoomName, Entry)>) {
        for entry in entries {
            if self.queue.try_send(entry).is_err() {
                history_metrics().dropped.increment(1);
            }
        }
    }

    /// Whether a read failed less than [`RETRY_DELAY`] ago.
    fn quiet(&self) -> bool {
        let until = *self.quiet_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|until| Instant::now() < until)
    }

    /// Every instance's entries for `room` from bucket `from` on.
    async fn read(&self, room: &RoomName, from: i64) -> Result<Vec<Entry>, HistoryError> {
        let mut manager = self.link.manager().await?;
        let mut command = redis::cmd("ZRANGEBYSCORE");
        command.arg(key(room)).arg(from).arg("+inf");
        let members: Vec<Vec<u8>> = within(command.query_async(&mut manager)).await?;
        let mut entries = Vec::with_capacity(members.len());
        for member in members {
            match serde_json::from_slice::<Entry>(&member) {
                Ok(entry) => entries.push(entry),
                // Not ours (another version, or someone else's key):
                // leave it out rather than fail the whole answer.
                Err(error) => tracing::debug!(%error, %room, "ignored a bad history entry"),
            }
        }
        Ok(entries)
    }

    async fn answer(&self, room: &RoomName, since_ms: f64) -> Result<Vec<Bucket>, HistoryError> {
        let since = (since_ms / BUCKET_MS).ceil() as i64;
        if !self.quiet() {
            // The bucket before the first shown tells the love added in it.
            match self.read(room, since - 1).await {
                Ok(entries) => {
                    history_metrics().redis_up.set(1.0);
                    if self.reads_failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("history is read from Redis again");
                    }
                    return Ok(merge(&entries, since));
                }
                Err(error) => {
                    *self.quiet_until.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now() + RETRY_DELAY);
                    history_metrics().redis_up.set(0.0);
                    if !self.reads_failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            %error,
                            "cannot read history from Redis: answering from this instance's memory"
                        );
                    }
                }
            }
        }
        history_metrics().fallbacks.increment(1);
        self.memory.buckets(room, since_ms).await
    }
}

impl HistoryStore for RedisHistory {
    fn record(&self, room: &RoomName, consensus: &Consensus) {
        self.memory.record(room, consensus);
    }

    fn buckets(&self, room: &RoomName, since_ms: f64) -> StoreFuture<'_, Vec<Bucket>> {
        let room = room.clone();
        Box::pin(async move { self.answer(&room, since_ms).await })
    }

    fn forget_before(&self, before_ms: f64) {
        self.memory.forget_before(before_ms);
    }

    fn sampled(&self, now_ms: f64) {
        self.hand_over(self.memory.take_ended(now_ms));
    }

    fn start(&self, tracker: &TaskTracker) {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(queue) = writer {
            tracker.spawn(write_loop(self.link.clone(), queue, self.finished.clone()));
        }
    }

    fn finish(&self) {
        self.hand_over(self.memory.take_ended(f64::INFINITY));
        self.finished.cancel();
    }
}

/// Writes queued entries to Redis, each batch in one pipelined round trip,
/// keeping what failed (up to [`BACKLOG`]) to try again.
async fn write_loop(
    link: Arc<Link>,
    mut queue: mpsc::Receiver<(RoomName, Entry)>,
    finished: CancellationToken,
) {
    let metrics = history_metrics();
    let mut backlog: VecDeque<(RoomName, Entry)> = VecDeque::new();
    let mut failing = false;
    loop {
        let last = tokio::select! {
            biased;
            () = finished.cancelled() => true,
            next = queue.recv() => match next {
                Some(entry) => {
                    backlog.push_back(entry);
                    false
                }
                None => true,
            },
            () = tokio::time::sleep(RETRY_DELAY), if !backlog.is_empty() => false,
        };
        while let Ok(entry) = queue.try_recv() {
            backlog.push_back(entry);
        }
        while backlog.len() > BACKLOG {
            backlog.pop_front();
            metrics.dropped.increment(1);
        }
        while !backlog.is_empty() {
            let count = backlog.len().min(BATCH);
            let batch = backlog.make_contiguous();
            match write(&link, &batch[..count]).await {
                Ok(()) => {
                    backlog.drain(..count);
                    metrics.written.increment(count as u64);
                    metrics.redis_up.set(1.0);
                    if failing {
                        tracing::info!("history is written to Redis again");
                        failing = false;
                    }
                }
                Err(error) => {
                    metrics.write_failures.increment(1);
                    metrics.redis_up.set(0.0);
                    if !failing {
                        tracing::warn!(
                            %error,
                            waiting = backlog.len(),
                            "cannot write history to Redis: keeping it to try again"
                        );
                        failing = true;
                    }
                    break;
                }
            }
        }
        if last {
            return;
        }
    }
}

/// Adds `entries` to their rooms' sets, trims each set to the last hour
/// and pushes its expiry on, all in one round trip.
async fn write(link: &Link, entries: &[(RoomName, Entry)]) -> Result<(), HistoryError> {
    let mut pipe = redis::pipe();
    let mut newest: HashMap<String, i64> = HashMap::new();
    for (room, entry) in entries {
        let member = serde_json::to_vec(entry)
            .map_err(|e| HistoryError(format!("cannot encode a history entry: {e}")))?;
        let key = key(room);
        pipe.cmd("ZADD").arg(&key).arg(entry.index).arg(member).ignore();
        let newest = newest.entry(key).or_insert(entry.index);
        *newest = (*newest).max(entry.index);
    }
    for (key, newest) in &newest {
        let oldest_kept = newest - MAX_BUCKETS as i64;
        pipe.cmd("ZREMRANGEBYSCORE").arg(key).arg("-inf").arg(format!("({oldest_kept}")).ignore();
        pipe.cmd("PEXPIRE").arg(key).arg(KEEP.as_millis() as u64).ignore();
    }
    let mut manager = link.manager().await?;
    within(pipe.query_async::<()>(&mut manager)).await
}

/// What `/metrics` shows about shared history.
#[derive(Debug)]
struct HistoryMetrics {
    /// 1 while the last read or write of history in Redis succeeded.
    redis_up: Gauge,
    /// Entries written.
    written: Counter,
    /// Write round trips that failed (their entries are tried again).
    write_failures: Counter,
    /// Entries dropped: a full queue, or a backlog too long while Redis was
    /// away.
    dropped: Counter,
    /// Reads answered from this instance's memory instead of Redis.
    fallbacks: Counter,
}

fn history_metrics() -> &'static HistoryMetrics {
    static METRICS: OnceLock<HistoryMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        // The recorder must be installed before the handles are taken.
        let _ = crate::metrics::metrics();
        describe_gauge!(
            "heartsync_history_redis_up",
            "1 while history is read from and written to Redis."
        );
        describe_counter!(
            "heartsync_history_entries_written_total",
            "Instance summaries of a room's 10 s bucket written to Redis."
        );
        describe_counter!(
            "heartsync_history_write_failures_total",
            "History writes to Redis that failed (tried again)."
        );
        describe_counter!(
            "heartsync_history_entries_dropped_total",
            "History entries dropped: a full queue, or too many waiting for Redis."
        );
        describe_counter!(
            "heartsync_history_fallbacks_total",
            "History requests answered from this instance's memory, Redis being away."
        );
        let redis_up = gauge!("heartsync_history_redis_up");
        redis_up.set(1.0);
        HistoryMetrics {
            redis_up,
            written: counter!("heartsync_history_entries_written_total"),
            write_failures: counter!("heartsync_history_write_failures_total"),
            dropped: counter!("heartsync_history_entries_dropped_total"),
            fallbacks: counter!("heartsync_history_fallbacks_total"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("a room name")
    }

    fn consensus(seq: u64, at: f64) -> Consensus {
        Consensus { seq, at, coherence: 0.5, hearts: 2, ..Consensus::default() }
    }

    #[test]
    fn a_bad_url_is_refused_with_a_clear_message() {
        let error = RedisHistory::new("not a url", "a", 10).unwrap_err().to_string();
        assert!(error.contains("bad --redis-url"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failed_read_memory_answers_for_a_second_then_redis_is_tried_again() {
        let history = RedisHistory::new("redis://127.0.0.1:1/0", "a", 10).expect("a store");
        assert!(!history.quiet());
        history.buckets(&room("kitchen"), 0.0).await.expect("memory answers");
        assert!(history.quiet());
        tokio::time::advance(RETRY_DELAY - Duration::from_millis(1)).await;
        assert!(history.quiet());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!history.quiet());
    }

    #[tokio::test]
    async fn without_redis_reads_answer_from_memory_and_nothing_waits() {
        // Port 1 on loopback: nothing listens there.
        let history = RedisHistory::new("redis://127.0.0.1:1/0", "a", 10).expect("a store");
        let tracker = TaskTracker::new();
        history.start(&tracker);
        let r = room("kitchen");
        let started = std::time::Instant::now();
        for seq in 1..=80 {
            let at = 1_700_000_000_000.0 + seq as f64 * 250.0;
            history.record(&r, &consensus(seq, at));
            history.sampled(at);
        }
        assert!(started.elapsed() < Duration::from_millis(500), "recording never waits on Redis");

        let started = std::time::Instant::now();
        let first = history.buckets(&r, 0.0).await.expect("an answer from memory");
        assert!(started.elapsed() < COMMAND_TIMEOUT * 3, "a refused read falls back at once");
        assert_eq!(first.len(), 3, "{first:?}");
        assert!(first.iter().all(|b| b.hearts == 2 && b.coherence_mean == 0.5));
        // Within the quiet second, memory answers without trying Redis.
        let started = std::time::Instant::now();
        assert_eq!(history.buckets(&r, 0.0).await.expect("an answer"), first);
        assert!(started.elapsed() < Duration::from_millis(100));

        // Shutdown: the writer tries once more and ends.
        history.finish();
        tracker.close();
        timeout(Duration::from_secs(10), tracker.wait()).await.expect("the writer ends");
    }
}
