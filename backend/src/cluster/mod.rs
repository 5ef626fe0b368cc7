//! Several instances, one room: partial sums out to Redis, partials in.
//!
//! With `--redis-url`, every instance that has members in room `r` publishes
//! one [`Partial`] per tick on the room's channel (`heartsync:room:r`) and
//! subscribes to that channel while it has members there; each room's task
//! combines the partials of every live instance ([`combine`]) into the one
//! consensus all instances broadcast. Redis traffic grows with instances
//! and rooms, never with hearts: per tick, one PUBLISH per (instance, room
//! with members) and one delivery per (instance, subscribed room).
//!
//! Rooms never wait on Redis. Publishing goes through a bounded queue to one
//! publisher task (a full queue drops the partial, which the combine then
//! carries forward); partials come in through one subscriber task that
//! routes each to its room's bounded queue. When Redis goes away the
//! subscriber reconnects by itself and subscribes again to every room that
//! still has members, and meanwhile each instance's rooms run on their
//! local members (the other instances fall silent and are dropped after
//! [`combine::SILENT_TICKS`]). `heartsync_redis_up` and `/readyz` tell the
//! operator.
//!
//! Data flows one way: room → cluster (partial out), cluster → room
//! (partials in); sockets never touch Redis.

pub mod combine;
pub mod room;
pub mod wire;

pub use combine::{Combined, Combiner, Partial};

use futures_util::StreamExt;
use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub, PubSubSink};
use shared::RoomName;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// How long the server waits for Redis at start before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause between attempts to reach a Redis that went away.
const RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// Partials that may wait for the publisher before new ones are dropped.
const PUBLISH_QUEUE: usize = 4096;

/// Most partials sent to Redis in one pipelined round trip.
const PUBLISH_BATCH: usize = 512;

/// Partials that may wait for one room's task before new ones are dropped;
/// a room reads its queue continuously, so this is only reached when a room
/// is stuck, and then newer partials matter more than a backlog.
const ROOM_QUEUE: usize = 256;

/// Why the server could not join the cluster at start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL does not parse.
    #[error(
        "bad --redis-url {url:?}: {source} (expected redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0)"
    )]
    BadUrl { url: String, source: redis::RedisError },
    /// Redis did not answer.
    #[error(
        "cannot reach Redis at {url} within {}s: {reason} (is redis-server running there? without --redis-url heartsync runs alone)",
        CONNECT_TIMEOUT.as_secs()
    )]
    Unreachable { url: String, reason: String },
}

/// A default instance id: the hostname, the pid and a random suffix, so two
/// instances on one host, or a restarted one, never share an id.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "heartsync".to_owned());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// The Redis channel of a room.
pub fn channel(room: &RoomName) -> String {
    format!("heartsync:room:{room}")
}

/// This instance's link to the others; cloning shares it.
#[derive(Debug, Clone)]
pub struct Cluster(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// This instance's id, in every partial it publishes.
    id: String,
    /// To the publisher task: (channel, payload).
    publish: mpsc::Sender<(String, Vec<u8>)>,
    /// Shared with the subscriber task.
    routes: Arc<Routes>,
    /// Stops the publisher and subscriber when the last handle goes.
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Where the subscriber task delivers partials, and what it subscribes to.
#[derive(Debug)]
struct Routes {
    /// Channel name → the queue of the room task subscribed to it.
    rooms: Mutex<HashMap<String, mpsc::Sender<Partial>>>,
    /// Subscription changes for the subscriber task, in order.
    changes: mpsc::UnboundedSender<Change>,
    /// Whether the subscriber is connected and subscribed.
    up: AtomicBool,
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Partial>>> {
        // Every critical section is one map operation: a poisoned lock
        // still guards a consistent map.
        self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        cluster_metrics().redis_up.set(if up { 1.0 } else { 0.0 });
    }
}

#[derive(Debug)]
enum Change {
    Subscribe(String),
    Unsubscribe(String),
}

/// One room task's link to the cluster: partials in, and its own out. The
/// subscription lasts as long as the link (dropping it unsubscribes).
#[derive(Debug)]
pub struct RoomLink {
    cluster: Cluster,
    channel: String,
    /// The room's own end of its route, to know whether the route is still
    /// this link's when it is dropped (a room reopened under the same name
    /// may have taken it over).
    route: mpsc::Sender<Partial>,
    /// Partials from the other instances.
    pub partials: mpsc::Receiver<Partial>,
}

impl Cluster {
    /// Connects to Redis at `url` (within [`CONNECT_TIMEOUT`]) and starts the
    /// publisher and subscriber tasks.
    pub async fn connect(url: &str, id: String) -> Result<Self, ClusterError> {
        let client = redis::Client::open(url)
            .map_err(|source| ClusterError::BadUrl { url: url.to_owned(), source })?;
        let unreachable =
            |reason: String| ClusterError::Unreachable { url: url.to_owned(), reason };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(RECONNECT_DELAY);
        let manager = timeout(CONNECT_TIMEOUT, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| unreachable("no answer".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let pubsub = timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| unreachable("no answer".into()))?
            .map_err(|e| unreachable(e.to_string()))?;

        // Registers the cluster's metrics, then labels this instance. The
        // label is `instance_id`, since Prometheus sets `instance` itself.
        let _ = cluster_metrics();
        gauge!("heartsync_instance_info", "instance_id" => id.clone()).set(1.0);
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let routes = Arc::new(Routes {
            rooms: Mutex::new(HashMap::new()),
            changes,
            up: AtomicBool::new(false),
        });
        routes.set_up(true);
        let stop = CancellationToken::new();
        tokio::spawn(publish_loop(manager, queue, stop.clone()));
        tokio::spawn(subscribe_loop(
            client,
            Some(pubsub),
            routes.clone(),
            changes_rx,
            id.clone(),
            stop.clone(),
        ));
        tracing::info!(instance = %id, redis = %redacted(url), "joined the cluster");
        Ok(Cluster(Arc::new(Inner { id, publish, routes, stop })))
    }

    /// This instance's id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// Whether Redis is reachable (the subscriber is connected).
    pub fn redis_up(&self) -> bool {
        self.0.routes.up.load(Ordering::Relaxed)
    }

    /// A cluster link with no Redis behind it, for unit tests: what it
    /// publishes goes nowhere, and [`deliver`](Self::deliver) plays the
    /// other instances.
    #[cfg(test)]
    pub(crate) fn offline(id: &str) -> Self {
        let (publish, _) = mpsc::channel(1);
        let (changes, _) = mpsc::unbounded_channel();
        let routes = Arc::new(Routes {
            rooms: Mutex::new(HashMap::new()),
            changes,
            up: AtomicBool::new(true),
        });
        Cluster(Arc::new(Inner {
            id: id.to_owned(),
            publish,
            routes,
            stop: CancellationToken::new(),
        }))
    }

    /// Hands `partial` to `room`'s task as if it came from Redis.
    #[cfg(test)]
    pub(crate) fn deliver(&self, room: &RoomName, partial: Partial) -> bool {
        let route = self.0.routes.lock().get(&channel(room)).cloned();
        route.is_some_and(|route| route.try_send(partial).is_ok())
    }

    /// Subscribes to `room`'s partials for as long as the returned link lives.
    pub fn join_room(&self, room: &RoomName) -> RoomLink {
        let channel = channel(room);
        let (route, partials) = mpsc::channel(ROOM_QUEUE);
        self.0.routes.lock().insert(channel.clone(), route.clone());
        let _ = self.0.routes.changes.send(Change::Subscribe(channel.clone()));
        RoomLink { cluster: self.clone(), channel, route, partials }
    }
}

impl RoomLink {
    /// This instance's id.
    pub fn instance(&self) -> &str {
        self.cluster.id()
    }

    /// Publishes this instance's partial for the room; never waits (a full
    /// queue drops it, and the other instances carry the previous one).
    pub fn publish(&self, partial: &Partial) {
        let payload = wire::encode(partial);
        if self.cluster.0.publish.try_send((self.channel.clone(), payload)).is_err() {
            cluster_metrics().dropped.increment(1);
        }
    }
}

impl Drop for RoomLink {
    fn drop(&mut self) {
        let mut rooms = self.cluster.0.routes.lock();
        let ours = rooms.get(&self.channel).is_some_and(|r| r.same_channel(&self.route));
        if ours {
            rooms.remove(&self.channel);
            let _ = self.cluster.0.routes.changes.send(Change::Unsubscribe(self.channel.clone()));
        }
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match url.split_once('@') {
        Some((before, after)) => match before.rsplit_once(':') {
            Some((scheme_user, _password)) if scheme_user.contains("//") => {
                format!("{scheme_user}:***@{after}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Sends queued partials to Redis, each batch in one pipelined round trip.
async fn publish_loop(
    mut manager: ConnectionManager,
    mut queue: mpsc::Receiver<(String, Vec<u8>)>,
    stop: CancellationToken,
) {
    let metrics = cluster_metrics();
    let mut failing = false;
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            next = queue.recv() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let mut pipe = redis::pipe();
        pipe.publish(first.0, first.1).ignore();
        let mut count = 1;
        while count < PUBLISH_BATCH {
            let Ok((channel, payload)) = queue.try_recv() else { break };
            pipe.publish(channel, payload).ignore();
            count += 1;
        }
        let sent = timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut manager)).await;
        match sent {
            Ok(Ok(())) => {
                metrics.published.increment(count as u64);
                if failing {
                    tracing::info!("publishing partials to Redis again");
                    failing = false;
                }
            }
            Ok(Err(error)) => {
                metrics.publish_failures.increment(count as u64);
                if !failing {
                    tracing::warn!(%error, "cannot publish partials to Redis; rooms run on local members");
                    failing = true;
                }
            }
            Err(_) => {
                metrics.publish_failures.increment(count as u64);
                if !failing {
                    tracing::warn!(
                        "Redis did not answer a publish in time; rooms run on local members"
                    );
                    failing = true;
                }
            }
        }
    }
}

/// Keeps one pub/sub connection subscribed to every room with members here,
/// reconnecting and subscribing again whenever Redis comes back, and routes
/// each partial to its room.
async fn subscribe_loop(
    client: redis::Client,
    mut connected: Option<PubSub>,
    routes: Arc<Routes>,
    mut changes: mpsc::UnboundedReceiver<Change>,
    me: String,
    stop: CancellationToken,
) {
    loop {
        let pubsub = match connected.take() {
            Some(pubsub) => Some(pubsub),
            None => match timeout(COMMAND_TIMEOUT, client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => Some(pubsub),
                _ => None,
            },
        };
        if let Some(pubsub) = pubsub {
            let (mut sink, mut stream) = pubsub.split();
            // Changes queued while disconnected are folded into subscribing
            // to every routed room now.
            while changes.try_recv().is_ok() {}
            let channels: Vec<String> = routes.lock().keys().cloned().collect();
            if channels.is_empty() || command(sink.subscribe(&channels)).await {
                if !routes.up.load(Ordering::Relaxed) {
                    tracing::info!(rooms = channels.len(), "Redis is back: subscribed again");
                }
                routes.set_up(true);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        change = changes.recv() => match change {
                            Some(change) => if !apply(&mut sink, change).await { break },
                            None => return,
                        },
                        message = stream.next() => match message {
                            Some(message) => route(&routes, &message, &me),
                            None => break,
                        },
                    }
                }
            }
            if routes.up.load(Ordering::Relaxed) {
                tracing::warn!("lost Redis: rooms run on local members until it is back");
            }
            routes.set_up(false);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}

/// Runs a subscription change; false when the connection failed.
async fn apply(sink: &mut PubSubSink, change: Change) -> bool {
    match change {
        Change::Subscribe(channel) => command(sink.subscribe(channel)).await,
        Change::Unsubscribe(channel) => command(sink.unsubscribe(channel)).await,
    }
}

/// Whether a Redis command succeeded within [`COMMAND_TIMEOUT`].
async fn command(call: impl Future<Output = redis::RedisResult<()>>) -> bool {
    matches!(timeout(COMMAND_TIMEOUT, call).await, Ok(Ok(())))
}

/// Delivers one message to its room's task (never waiting on it).
fn route(routes: &Routes, message: &redis::Msg, me: &str) {
    let metrics = cluster_metrics();
    let partial = match wire::decode(message.get_payload_bytes()) {
        Ok(partial) => partial,
        Err(error) => {
            metrics.dropped.increment(1);
            tracing::warn!(%error, channel = message.get_channel_name(), "ignored a bad partial");
            return;
        }
    };
    metrics.received.increment(1);
    // A room already holds its own partial; Redis echoes it back.
    if partial.instance == me {
        return;
    }
    let room = routes.lock().get(message.get_channel_name()).cloned();
    if let Some(room) = room
        && room.try_send(partial).is_err()
    {
        metrics.dropped.increment(1);
    }
}

/// What `/metrics` shows about the cluster.
#[derive(Debug)]
pub struct ClusterMetrics {
    /// 1 while the pub/sub connection to Redis is up.
    pub redis_up: Gauge,
    /// Partials published.
    pub published: Counter,
    /// Partials that could not be published.
    pub publish_failures: Counter,
    /// Partials received from Redis (this instance's echo included).
    pub received: Counter,
    /// Partials dropped: a full queue or a malformed message.
    pub dropped: Counter,
    /// Partials that had not arrived by their tick and were carried
    /// forward from an earlier one.
    pub late: Counter,
}

/// The cluster's metrics, registered once.
pub fn cluster_metrics() -> &'static ClusterMetrics {
    static METRICS: OnceLock<ClusterMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        // The recorder must be installed before the handles are taken.
        let _ = crate::metrics::metrics();
        describe_gauge!("heartsync_redis_up", "1 while this instance is connected to Redis.");
        describe_gauge!(
            "heartsync_instance_info",
            "1, labelled with this instance's id (--instance-id)."
        );
        describe_counter!(
            "heartsync_cluster_partials_published_total",
            "Room partials this instance published to Redis."
        );
        describe_counter!(
            "heartsync_cluster_publish_failures_total",
            "Room partials that could not be published (Redis down or slow)."
        );
        describe_counter!(
            "heartsync_cluster_partials_received_total",
            "Room partials received from Redis."
        );
        describe_counter!(
            "heartsync_cluster_partials_dropped_total",
            "Room partials dropped: a full queue or a malformed message."
        );
        describe_counter!(
            "heartsync_cluster_partials_late_total",
            "Partials that had not arrived by their tick and were carried forward."
        );
        ClusterMetrics {
            redis_up: gauge!("heartsync_redis_up"),
            published: counter!("heartsync_cluster_partials_published_total"),
            publish_failures: counter!("heartsync_cluster_publish_failures_total"),
            received: counter!("heartsync_cluster_partials_received_total"),
            dropped: counter!("heartsync_cluster_partials_dropped_total"),
            late: counter!("heartsync_cluster_partials_late_total"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redacted("redis://:secret@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(redacted("redis://user:secret@host/0"), "redis://user:***@host/0");
        assert_eq!(redacted("redis://host:6379/0"), "redis://host:6379/0");
    }

    #[test]
    fn default_instance_ids_differ() {
        let a = default_instance_id();
        assert!(a.contains(&std::process::id().to_string()), "{a}");
        assert_ne!(a, default_instance_id());
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_with_a_clear_message() {
        let error = Cluster::connect("http://nope", "a".into()).await.unwrap_err().to_string();
        assert!(error.contains("bad --redis-url"), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_refused_quickly() {
        let started = std::time::Instant::now();
        // Port 1 on loopback: nothing listens there.
        let error =
            Cluster::connect("redis://127.0.0.1:1/0", "a".into()).await.unwrap_err().to_string();
        assert!(error.contains("cannot reach Redis"), "{error}");
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
    }
}
