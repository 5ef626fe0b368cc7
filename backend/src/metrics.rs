//! What operators see at `/metrics`: Prometheus text from the `metrics`
//! facade and its Prometheus exporter, plus the standard `process_*`
//! metrics (CPU seconds, resident memory, open descriptors).
//!
//! Names follow Prometheus conventions (base units, `_total` counters,
//! `_seconds`), and labels are bounded: close reasons, message types and
//! error codes, never room or client names (rooms are unbounded). Every
//! histogram has explicit buckets, so it renders as a real histogram.
//!
//! The recorder is process-wide (one server per process in production);
//! handles to the hot-path metrics are registered once and reused, so
//! counting a delivery is an atomic add, not a lookup.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use shared::ErrorCode;
use std::sync::OnceLock;

/// Buckets for latencies measured in seconds, from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets for coherence, which lies in [0, 1].
const COHERENCE_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0];

/// Handles to every metric the hot paths touch.
#[derive(Debug)]
pub struct Metrics {
    /// WebSocket connections open now.
    pub connections_open: Gauge,
    /// WebSocket connections ever opened.
    pub connections_opened: Counter,
    /// Consensus messages written.
    pub sent_consensus: Counter,
    /// Other messages written, by type.
    pub sent_welcome: Counter,
    /// Time replies written.
    pub sent_time: Counter,
    /// Error messages written.
    pub sent_error: Counter,
    /// Love acks written.
    pub sent_love_ack: Counter,
    /// Phase reports received.
    pub received_phase: Counter,
    /// Time requests received.
    pub received_time: Counter,
    /// Love messages received.
    pub received_love: Counter,
    /// Text messages that failed validation.
    pub received_invalid: Counter,
    /// Binary frames received.
    pub received_binary: Counter,
    /// Messages dropped by the per-connection rate limit.
    pub rate_limited: Counter,
    /// Phase reports dropped because a room's queue was full.
    pub reports_dropped: Counter,
    /// Pings sent by the server.
    pub pings_sent: Counter,
    /// Pings not answered within the pong timeout.
    pub pongs_missed: Counter,
    /// How long a room takes to compute and publish its consensus.
    pub tick_duration: Histogram,
    /// From a room's tick to the consensus written on one socket.
    pub broadcast_lag: Histogram,
    /// Open rooms.
    pub rooms_active: Gauge,
    /// Hearts (connections) over all rooms, as of each room's last tick.
    pub hearts: Gauge,
    /// Voters over all rooms, as of each room's last tick.
    pub voters: Gauge,
    /// Each room's coherence, observed once per tick.
    pub room_coherence: Histogram,
    /// Love taps counted (made durable).
    pub love_taps: Counter,
    /// From receiving a love message to its ack being ready.
    pub love_ack: Histogram,
    /// Server-Sent Events streams open now.
    pub sse_open: Gauge,
    /// Server-Sent Events streams ever opened.
    pub sse_opened: Counter,
    /// Consensus events written to SSE streams.
    pub sse_events: Counter,
    /// HTTP connections open now (WebSockets count apart once upgraded).
    pub http_connections_open: Gauge,
    /// TCP connections refused at `--max-http-connections`.
    pub http_connections_refused: Counter,
    /// HTTP connections closed because a response stayed unwritable for
    /// `--write-timeout` (a client that does not read).
    pub http_write_timeouts: Counter,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics, installing the recorder on first use.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(install)
}

fn install() -> Metrics {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("heartsync_room_coherence".into()),
                COHERENCE_BUCKETS,
            )
        });
    let handle = match builder.map(PrometheusBuilder::install_recorder) {
        Ok(Ok(handle)) => handle,
        // Only fails if another recorder is installed or buckets are empty;
        // neither happens here, but a server without metrics still serves.
        other => {
            tracing::error!(?other, "cannot install the metrics recorder; /metrics will be empty");
            PrometheusBuilder::new().build_recorder().handle()
        }
    };
    describe();
    let process = metrics_process::Collector::default();
    process.describe();
    let version = env!("CARGO_PKG_VERSION");
    let git_sha = env!("HEARTSYNC_GIT_SHA");
    gauge!("heartsync_build_info", "version" => version, "git_sha" => git_sha).set(1.0);
    let sent = |kind: &'static str| counter!("heartsync_messages_sent_total", "type" => kind);
    let received =
        |kind: &'static str| counter!("heartsync_messages_received_total", "type" => kind);
    Metrics {
        connections_open: gauge!("heartsync_connections_open"),
        connections_opened: counter!("heartsync_connections_opened_total"),
        sent_consensus: sent("consensus"),
        sent_welcome: sent("welcome"),
        sent_time: sent("time"),
        sent_error: sent("error"),
        sent_love_ack: sent("love_ack"),
        received_phase: received("phase"),
        received_time: received("time"),
        received_love: received("love"),
        received_invalid: received("invalid"),
        received_binary: received("binary"),
        rate_limited: counter!("heartsync_rate_limited_total"),
        reports_dropped: counter!("heartsync_reports_dropped_total"),
        pings_sent: counter!("heartsync_pings_sent_total"),
        pongs_missed: counter!("heartsync_pongs_missed_total"),
        tick_duration: histogram!("heartsync_tick_duration_seconds"),
        broadcast_lag: histogram!("heartsync_broadcast_lag_seconds"),
        rooms_active: gauge!("heartsync_rooms_active"),
        hearts: gauge!("heartsync_hearts"),
        voters: gauge!("heartsync_voters"),
        room_coherence: histogram!("heartsync_room_coherence"),
        love_taps: counter!("heartsync_love_taps_total"),
        love_ack: histogram!("heartsync_love_ack_seconds"),
        sse_open: gauge!("heartsync_sse_streams_open"),
        sse_opened: counter!("heartsync_sse_streams_opened_total"),
        sse_events: counter!("heartsync_sse_events_sent_total"),
        http_connections_open: gauge!("heartsync_http_connections_open"),
        http_connections_refused: counter!("heartsync_http_connections_refused_total"),
        http_write_timeouts: counter!("heartsync_http_write_timeouts_total"),
        handle,
        process,
    }
}

/// HELP text for every metric (Prometheus tooling expects it).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "heartsync_build_info",
        "Build of the running server (version, git_sha); always 1."
    );
    describe_gauge!("heartsync_connections_open", "WebSocket connections open now.");
    describe_counter!("heartsync_connections_opened_total", "WebSocket connections opened.");
    describe_counter!(
        "heartsync_connections_closed_total",
        "WebSocket connections closed, by reason."
    );
    describe_counter!("heartsync_upgrades_refused_total", "WebSocket upgrades refused, by reason.");
    describe_counter!(
        "heartsync_messages_received_total",
        "Messages received from clients, by type."
    );
    describe_counter!("heartsync_messages_sent_total", "Messages sent to clients, by type.");
    describe_counter!("heartsync_errors_sent_total", "Protocol errors sent to clients, by code.");
    describe_counter!(
        "heartsync_rate_limited_total",
        "Messages dropped by the per-connection rate limit."
    );
    describe_counter!(
        "heartsync_reports_dropped_total",
        "Phase reports dropped because a room's queue was full."
    );
    describe_counter!("heartsync_pings_sent_total", "Pings sent by the server.");
    describe_counter!(
        "heartsync_pongs_missed_total",
        "Pings not answered within the pong timeout."
    );
    describe_histogram!(
        "heartsync_tick_duration_seconds",
        Unit::Seconds,
        "Time a room takes to compute and publish its consensus."
    );
    describe_histogram!(
        "heartsync_broadcast_lag_seconds",
        Unit::Seconds,
        "Time from a room's tick to its consensus being written to a socket, per delivery."
    );
    describe_gauge!("heartsync_rooms_active", "Rooms open now.");
    describe_gauge!(
        "heartsync_hearts",
        "Hearts (connections) in all rooms, as of each room's last tick."
    );
    describe_gauge!("heartsync_voters", "Hearts whose last report still counts, in all rooms.");
    describe_histogram!(
        "heartsync_room_coherence",
        "Coherence of rooms with voters, observed once per room per tick."
    );
    describe_counter!("heartsync_love_taps_total", "Love taps counted (made durable).");
    describe_counter!(
        "heartsync_love_refused_total",
        "Love messages refused for a bound, counting nothing, by reason (rate: the \
         connection's --love-rate budget; ledgers: the address's --love-ledgers-per-ip quota)."
    );
    describe_counter!(
        "heartsync_love_ledgers_created_total",
        "Love ledgers started (a client's first counted love in a room, or after a fold)."
    );
    describe_counter!(
        "heartsync_love_ledgers_folded_total",
        "Love ledgers idle for --love-retention folded into their rooms' totals and deleted."
    );
    describe_counter!(
        "heartsync_love_folded_answers_total",
        "Love messages answered love_folded: a count in a ledger no longer kept, not counted."
    );
    describe_histogram!(
        "heartsync_love_ack_seconds",
        Unit::Seconds,
        "Time from receiving a love message to its durable ack."
    );
    describe_gauge!("heartsync_sse_streams_open", "Server-Sent Events streams open now.");
    describe_counter!("heartsync_sse_streams_opened_total", "Server-Sent Events streams opened.");
    describe_counter!(
        "heartsync_sse_streams_closed_total",
        "Server-Sent Events streams closed, by reason."
    );
    describe_counter!(
        "heartsync_sse_events_sent_total",
        "Consensus events written to Server-Sent Events streams."
    );
    describe_counter!(
        "heartsync_sse_refused_total",
        "Server-Sent Events streams refused before they started, by reason."
    );
    describe_counter!(
        "heartsync_tokens_refused_total",
        "Requests for private rooms refused for their join token, by reason."
    );
    describe_gauge!(
        "heartsync_http_connections_open",
        "HTTP connections open now (not counting upgraded WebSockets)."
    );
    describe_counter!(
        "heartsync_http_connections_refused_total",
        "TCP connections refused with 503 at the HTTP connection cap."
    );
    describe_counter!(
        "heartsync_http_write_timeouts_total",
        "HTTP connections closed because a response stayed unwritable for the write timeout."
    );
}

impl Metrics {
    /// A connection closed for `reason` (a bounded label).
    pub fn connection_closed(&self, reason: &'static str) {
        counter!("heartsync_connections_closed_total", "reason" => reason).increment(1);
    }

    /// An upgrade refused for `reason` (a bounded label).
    pub fn upgrade_refused(&self, reason: &'static str) {
        counter!("heartsync_upgrades_refused_total", "reason" => reason).increment(1);
    }

    /// An SSE stream closed for `reason` (a bounded label).
    pub fn sse_closed(&self, reason: &'static str) {
        counter!("heartsync_sse_streams_closed_total", "reason" => reason).increment(1);
    }

    /// An SSE stream refused for `reason` (a bounded label).
    pub fn sse_refused(&self, reason: &'static str) {
        counter!("heartsync_sse_refused_total", "reason" => reason).increment(1);
    }

    /// A join token refused for `reason` (a bounded label).
    pub fn token_refused(&self, reason: &'static str) {
        counter!("heartsync_tokens_refused_total", "reason" => reason).increment(1);
    }

    /// An error message sent with `code`.
    pub fn error_sent(&self, code: ErrorCode) {
        self.sent_error.increment(1);
        counter!("heartsync_errors_sent_total", "code" => code.as_str()).increment(1);
    }

    /// Folds recorded histogram samples into their buckets. The exporter
    /// keeps raw samples until then, so this must run regularly even when
    /// nothing scrapes `/metrics`, or memory grows with every delivery.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text for `/metrics`, process metrics refreshed.
    pub fn render(&self) -> String {
        self.process.collect();
        // CPU seconds are recorded as a gauge because `metrics` counters are
        // integers (whole seconds would make rates useless); the value only
        // grows, so it is exposed with its standard type, a counter.
        self.handle.render().replace(
            "# TYPE process_cpu_seconds_total gauge",
            "# TYPE process_cpu_seconds_total counter",
        )
    }
}
