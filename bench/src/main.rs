//! `heartsync-bench`: opens N protocol-v1 clients over R rooms against a
//! running server, each reporting its phase like the page does, and measures
//! connect latency, tick delay, missed ticks, errors, message rate, and the
//! server's CPU and memory (read from its `/metrics`).
//!
//! ```text
//! heartsync-bench --url ws://127.0.0.1:8080 --clients 5000 --rooms 1 --duration 30s --ramp 500/s --json
//! ```
//!
//! The run: ramp up (connect latency is measured here), settle, then a
//! measured window of `--duration` (tick delay, missed ticks, deliveries per
//! server CPU-second), then every client closes. A live line on stderr shows
//! progress; with `--json` the last line on stdout is one JSON object.
//!
//! Several instances sharing rooms through Redis: give every one's URL
//! (`--url ws://a:8081,ws://b:8082`); clients are spread round robin, the
//! server numbers are summed over the instances, and the report says
//! whether clients on different instances got the same consensus per seq.

mod client;
mod server;
mod stats;

use anyhow::{Context, bail};
use clap::Parser;
use stats::Stats;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Load-test a heartsync server.
#[derive(Parser, Debug)]
#[command(name = "heartsync-bench", version)]
struct Args {
    /// The server's base WebSocket URL; several (repeated or
    /// comma-separated) spread the clients round robin over instances.
    #[arg(long, default_value = "ws://127.0.0.1:8080", value_delimiter = ',')]
    url: Vec<String>,
    /// How many clients to open.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// How many rooms to spread them over.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// How long to measure once every client is in.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// New connections per second while ramping up, e.g. `500/s`.
    #[arg(long, default_value = "1000/s", value_parser = parse_rate)]
    ramp: f64,
    /// How often to print the live line.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    report_every: Duration,
    /// Love taps per second per client (each is a `love` message the server
    /// makes durable before acknowledging); 0 for none.
    #[arg(long, default_value_t = 0.0)]
    taps_per_s: f64,
    /// Clients stay idle: connected and reading, but never reporting.
    #[arg(long)]
    idle: bool,
    /// Source addresses 127.0.0.1, .2, … to connect from (each has about
    /// 28k ephemeral ports); default: enough for `--clients`.
    #[arg(long)]
    sources: Option<u8>,
    /// Time to let things settle between the ramp and the measured window.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Room name prefix (rooms are `<prefix>-0`, `<prefix>-1`, …).
    #[arg(long, default_value = "bench")]
    room_prefix: String,
    /// Worker threads for the generator (it shares the machine with the
    /// server, so fewer threads leave it more room).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.strip_suffix("/s").unwrap_or(s);
    match number.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("expected a rate like 500/s, got {s:?}")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Every client is a file descriptor; the soft limit is usually 1024.
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    if args.clients as u64 + 64 > fd_limit {
        bail!(
            "{} clients need {} file descriptors but this process may hold {fd_limit}; \
             run several generators",
            args.clients,
            args.clients + 64
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut bases = Vec::new();
    let mut servers = Vec::new();
    for url in &args.url {
        let base = url.trim_end_matches('/').to_owned();
        let host = base
            .strip_prefix("ws://")
            .context("--url must start with ws:// (the benchmark speaks plain WebSocket)")?;
        let server: SocketAddr =
            host.to_socket_addrs()?.next().with_context(|| format!("cannot resolve {host}"))?;
        bases.push(base);
        servers.push(server);
    }
    if servers.is_empty() {
        bail!("give at least one --url");
    }
    let sources = args.sources.unwrap_or_else(|| (args.clients / 20_000 + 1).min(250) as u8).max(1);
    let stats = Arc::new(Stats::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let baseline = server::scrape_all(&servers).await.ok();
    if baseline.is_none() {
        eprintln!("note: no /metrics at {servers:?}; server CPU and memory will not be reported");
    }

    // Progress.
    let progress = {
        let stats = stats.clone();
        let measuring = measuring.clone();
        let every = args.report_every;
        let total = args.clients;
        tokio::spawn(async move {
            let started = Instant::now();
            let mut last_messages = 0;
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                let messages = stats.messages_received.load(Ordering::Relaxed);
                let rate = (messages - last_messages) as f64 / every.as_secs_f64();
                last_messages = messages;
                eprintln!(
                    "[{:>6.1}s] {} connected {}/{} failed {} | msgs/s {:>8.0} | tick delay p50 {:.1} ms p99 {:.1} ms | missed {} errors {}",
                    started.elapsed().as_secs_f64(),
                    if measuring.load(Ordering::Relaxed) { "measuring" } else { "ramping  " },
                    stats.connected.load(Ordering::Relaxed),
                    total,
                    stats.connect_failures.load(Ordering::Relaxed),
                    rate,
                    stats.tick_delay_ms.quantile(0.5),
                    stats.tick_delay_ms.quantile(0.99),
                    stats.ticks_missed.load(Ordering::Relaxed),
                    stats.errors.load(Ordering::Relaxed),
                );
            }
        })
    };

    // Ramp.
    let mut clients = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / args.ramp);
    let ramp_started = tokio::time::Instant::now();
    for i in 0..args.clients {
        tokio::time::sleep_until(ramp_started + gap.mul_f64(i as f64)).await;
        let room = format!("{}-{}", args.room_prefix, i % args.rooms.max(1));
        let plan = client::Plan {
            url: format!("{}/ws/{room}?client_id=bench-{i:08}", bases[i % bases.len()]),
            server: servers[i % servers.len()],
            instance: i % servers.len(),
            compare: servers.len() > 1,
            source: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(sources)) as u8)),
            report: !args.idle,
            start_phase: (i as f64 * 0.618_033_988_7).fract(),
            taps_per_s: args.taps_per_s,
        };
        clients.spawn(client::run(plan, stats.clone(), measuring.clone(), stop_rx.clone()));
    }
    // Wait for stragglers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let done = stats.connected.load(Ordering::Relaxed)
            + stats.connect_failures.load(Ordering::Relaxed);
        if done >= args.clients as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp_time = ramp_started.elapsed();
    tokio::time::sleep(args.settle).await;

    // Measure.
    let before = server::scrape_all(&servers).await.ok();
    let connected = stats.connected.load(Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(args.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let window = window.elapsed();
    let after = server::scrape_all(&servers).await.ok();

    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    progress.abort();

    let samples = Samples { baseline, before, after };
    let report = Report::new(&args, &stats, connected, window, ramp_time, samples);
    report.print_table();
    if args.json {
        println!("{}", report.json());
    }
    Ok(())
}

/// The server's numbers: before any client, and around the measured window.
struct Samples {
    baseline: Option<server::Sample>,
    before: Option<server::Sample>,
    after: Option<server::Sample>,
}

/// The results of a run.
struct Report {
    clients: usize,
    rooms: usize,
    clients_connected: u64,
    connect_failures: u64,
    refused: u64,
    connect_ms: [f64; 3],
    tick_delay_ms: [f64; 3],
    ticks_missed: u64,
    love_ack_ms: [f64; 3],
    taps_acked_per_s: f64,
    errors: u64,
    closes: Vec<(u16, u64)>,
    msgs_received_per_s: f64,
    ramp_s: f64,
    deliveries_per_server_cpu_s: Option<f64>,
    server_cpu_share: Option<f64>,
    server_rss_bytes: Option<f64>,
    server_rss_growth_per_client_bytes: Option<f64>,
    instances: usize,
    /// Cross-instance comparisons of one seq, how many differed, and the
    /// largest |Δψ| in beats.
    agreement: (u64, u64, f64),
}

impl Report {
    fn new(
        args: &Args,
        stats: &Stats,
        connected: u64,
        window: Duration,
        ramp: Duration,
        samples: Samples,
    ) -> Self {
        let Samples { baseline, before, after } = samples;
        let (deliveries, cpu_share) = match (&before, &after) {
            (Some(b), Some(a)) if a.cpu_seconds > b.cpu_seconds => (
                Some((a.consensus_sent - b.consensus_sent) / (a.cpu_seconds - b.cpu_seconds)),
                Some((a.cpu_seconds - b.cpu_seconds) / window.as_secs_f64()),
            ),
            _ => (None, None),
        };
        let rss = after.as_ref().map(|a| a.rss_bytes);
        let growth = match (&baseline, &after) {
            (Some(b), Some(a)) if connected > 0 => {
                Some((a.rss_bytes - b.rss_bytes) / connected as f64)
            }
            _ => None,
        };
        let h = &stats.connect_ms;
        let t = &stats.tick_delay_ms;
        Self {
            clients: args.clients,
            rooms: args.rooms,
            clients_connected: connected,
            connect_failures: stats.connect_failures.load(Ordering::Relaxed),
            refused: stats.refused.load(Ordering::Relaxed),
            connect_ms: [h.quantile(0.5), h.quantile(0.95), h.quantile(0.99)],
            tick_delay_ms: [t.quantile(0.5), t.quantile(0.99), t.max()],
            ticks_missed: stats.ticks_missed.load(Ordering::Relaxed),
            love_ack_ms: [
                stats.love_ack_ms.quantile(0.5),
                stats.love_ack_ms.quantile(0.99),
                stats.love_ack_ms.max(),
            ],
            taps_acked_per_s: stats.taps_acked.load(Ordering::Relaxed) as f64
                / window.as_secs_f64(),
            errors: stats.errors.load(Ordering::Relaxed),
            closes: stats.closes(),
            msgs_received_per_s: stats.consensus_received.load(Ordering::Relaxed) as f64
                / window.as_secs_f64(),
            ramp_s: ramp.as_secs_f64(),
            deliveries_per_server_cpu_s: deliveries,
            server_cpu_share: cpu_share,
            server_rss_bytes: rss,
            server_rss_growth_per_client_bytes: growth,
            instances: args.url.len(),
            agreement: (
                stats.agreement.compared.load(Ordering::Relaxed),
                stats.agreement.differing.load(Ordering::Relaxed),
                stats.agreement.max_dphase_micro.load(Ordering::Relaxed) as f64 / 1e6,
            ),
        }
    }

    fn print_table(&self) {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("n/a".to_owned(), |v| format!("{v:.0}{unit}"));
        println!(
            "clients            {} connected of {} over {} room(s) ({} failed, {} refused)",
            self.clients_connected, self.clients, self.rooms, self.connect_failures, self.refused
        );
        println!("ramp               {:.1} s", self.ramp_s);
        println!(
            "connect            p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
            self.connect_ms[0], self.connect_ms[1], self.connect_ms[2]
        );
        println!(
            "tick delay         p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            self.tick_delay_ms[0], self.tick_delay_ms[1], self.tick_delay_ms[2]
        );
        println!("ticks missed       {}", self.ticks_missed);
        if self.taps_acked_per_s > 0.0 {
            println!(
                "love               {:.0} taps acked/s  ack p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                self.taps_acked_per_s,
                self.love_ack_ms[0],
                self.love_ack_ms[1],
                self.love_ack_ms[2]
            );
        }
        println!("errors             {}  closes {:?}", self.errors, self.closes);
        println!("consensus recv/s   {:.0}", self.msgs_received_per_s);
        println!(
            "server             {} deliveries per CPU-second, {} of a core",
            opt(self.deliveries_per_server_cpu_s, ""),
            self.server_cpu_share.map_or("n/a".into(), |s| format!("{:.0}%", s * 100.0))
        );
        if self.instances > 1 {
            let (compared, differing, max) = self.agreement;
            println!(
                "agreement          {} instances: {compared} cross-instance comparisons of one seq, {differing} differed, max |dpsi| {max} beat",
                self.instances
            );
        }
        println!(
            "server memory      RSS {}  growth per client {}",
            opt(self.server_rss_bytes.map(|b| b / 1024.0 / 1024.0), " MiB"),
            opt(self.server_rss_growth_per_client_bytes, " B")
        );
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "clients": self.clients,
            "rooms": self.rooms,
            "clients_connected": self.clients_connected,
            "connect_failures": self.connect_failures,
            "refused": self.refused,
            "ramp_s": self.ramp_s,
            "connect_p50_ms": self.connect_ms[0],
            "connect_p95_ms": self.connect_ms[1],
            "connect_p99_ms": self.connect_ms[2],
            "tick_delay_p50_ms": self.tick_delay_ms[0],
            "tick_delay_p99_ms": self.tick_delay_ms[1],
            "tick_delay_max_ms": self.tick_delay_ms[2],
            "ticks_missed": self.ticks_missed,
            "love_ack_p50_ms": self.love_ack_ms[0],
            "love_ack_p99_ms": self.love_ack_ms[1],
            "love_ack_max_ms": self.love_ack_ms[2],
            "taps_acked_per_s": self.taps_acked_per_s,
            "errors": self.errors,
            "closes": self.closes.iter().map(|(c, n)| serde_json::json!({"code": c, "count": n})).collect::<Vec<_>>(),
            "msgs_received_per_s": self.msgs_received_per_s,
            "deliveries_per_server_cpu_s": self.deliveries_per_server_cpu_s,
            "server_cpu_share": self.server_cpu_share,
            "server_rss_bytes": self.server_rss_bytes,
            "server_rss_growth_per_client_bytes": self.server_rss_growth_per_client_bytes,
            "instances": self.instances,
            "agreement_compared": self.agreement.0,
            "agreement_differing": self.agreement.1,
            "agreement_max_dphase": self.agreement.2,
        })
    }
}
