//! `heartsync-bench`: opens N protocol-v1 clients over R rooms against a
//! running server, each reporting its phase like the page does, and measures
//! connect latency, tick delay, missed ticks, errors, message rate, and the
//! server's CPU and memory (from `/proc/<pid>` when the server runs on this
//! machine, else from its `/metrics`).
//!
//! ```text
//! heartsync-bench --url ws://127.0.0.1:8080 --clients 5000 --rooms 1 --duration 30s --ramp 500/s --json
//! heartsync-bench --url ws://127.0.0.1:8080 --clients 10000 --compare-floor --json
//! heartsync-bench --url ws://127.0.0.1:8080 --clients 19000 --rooms 20 --processes 2
//! heartsync-bench --url ws://127.0.0.1:9100,ws://127.0.0.1:9101,ws://127.0.0.1:9102 --clients 9000
//! heartsync-bench floor --addr 127.0.0.1:9200
//! heartsync-bench --url ws://127.0.0.1:8080 --soak 60m --server-log heartsync.log
//! ```
//!
//! The run: ramp up (connect latency is measured here), settle, then a
//! measured window of `--duration` (tick delay, missed ticks, deliveries per
//! server CPU-second), then every client closes. A live line on stderr shows
//! progress; with `--json` the last line on stdout is one JSON object.
//!
//! `--compare-floor` then runs the same load against the floor (see
//! [`floor`]), spawned as a child process on a free loopback port, and
//! reports both rows and their ratios. `--processes N` splits the clients
//! over N generator processes (each a child `heartsync-bench` with its own
//! descriptor limit), which the parent steers through their stdin and
//! stdout and whose counts it merges.
//!
//! Several instances sharing rooms through Redis are one service: give
//! every instance's URL (`--url` repeated or comma-separated). Client `i`
//! connects to URL `i mod n`, the server figures (CPU, RSS, consensus sent)
//! are summed over the instances, and the report adds the cross-instance
//! agreement: for each seq, the largest difference between what clients
//! on different instances received (see [`stats::Agreement`]; 0 is the
//! target). `--redis-info redis://…` adds what the run cost the Redis they
//! share (commands a second by name, its CPU), read around the same window.

mod client;
mod floor;
mod redis_info;
mod server;
mod soak;
mod stamped;
mod stats;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use stats::{ProcessSample, Stats, StatsSnapshot};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// Load-test a heartsync server.
#[derive(Parser, Debug)]
#[command(name = "heartsync-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: Args,
    /// `--soak`: a long realistic mix and a verdict instead (see [`soak`]).
    #[command(flatten)]
    soak: soak::SoakArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the floor: a single-threaded raw fan-out that speaks just
    /// enough protocol v1 for this bench, to compare heartsync against.
    Floor {
        /// Where to listen (port 0: any free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:9200")]
        addr: SocketAddr,
        /// The broadcast period.
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        tick: Duration,
    },
}

/// The load: how many clients, where, and for how long.
#[derive(clap::Args, Debug, Clone)]
struct Args {
    /// The server's base WebSocket URL; several (repeated or
    /// comma-separated) are instances of one service: clients are spread
    /// over them round robin and their figures summed.
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
    /// New connections per second while ramping up, e.g. `500/s` (over all
    /// generator processes).
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
    /// Source addresses 127.0.0.1, .2, … to connect from per generator
    /// process (each has about 28k ephemeral ports); default: enough for its
    /// clients.
    #[arg(long)]
    sources: Option<u8>,
    /// Time to let things settle between the ramp and the measured window.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Room name prefix (rooms are `<prefix>-0`, `<prefix>-1`, …).
    #[arg(long, default_value = "bench")]
    room_prefix: String,
    /// Worker threads per generator process (it shares the machine with
    /// the server, so fewer threads leave it more room).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Generator processes to split the clients over (a process may hold
    /// only so many descriptors).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Run the generator processes at this niceness (1-19; 0: as this
    /// process), so that on a machine they share with the server they read
    /// in the server's idle time instead of taking its cores during the
    /// burst being measured, as clients on other machines would. Their reads
    /// come later then, so read the arrival delays (kernel receive times),
    /// not the read delays. Given alone, it starts one generator process.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=19))]
    generator_nice: u8,
    /// Run the generator processes in the kernel's idle scheduling class
    /// (`SCHED_IDLE`, through util-linux's `chrt --idle 0`): they get a core
    /// only when nothing else wants it, so unlike a niced process they never
    /// preempt the server halfway through a tick's writes. The closest this
    /// machine comes to clients on other machines; read the arrival delays.
    /// Given alone, it starts one generator process.
    #[arg(long)]
    generator_idle: bool,
    /// Then run the same load against the floor (spawned on a free loopback
    /// port) and report both rows and their ratios.
    #[arg(long)]
    compare_floor: bool,
    /// The floor's broadcast period (heartsync's default `--tick`).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    floor_tick: Duration,
    /// The server's process id, for its CPU time and memory from `/proc`
    /// (with several `--url`s, one per URL, in the same order); default:
    /// the process listening on the URL's port if it is on this machine,
    /// else the server's `/metrics`.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// The Redis the instances share (`redis://host:port/db`): its INFO is
    /// read before and after the measured window, for its commands a
    /// second and its CPU.
    #[arg(long)]
    redis_info: Option<String>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Internal: run as one generator process of `--processes`, steered over
    /// stdin/stdout.
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: the index of this process's first client.
    #[arg(long, hide = true, default_value_t = 0)]
    client_offset: usize,
    /// Internal: the last octet of this process's first source address.
    #[arg(long, hide = true, default_value_t = 1)]
    source_base: u8,
}

impl Args {
    /// Whether the clients run in child generator processes (this process
    /// steering them) rather than in this one.
    fn spawns_generators(&self) -> bool {
        !self.child && (self.processes > 1 || self.generator_nice > 0 || self.generator_idle)
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.strip_suffix("/s").unwrap_or(s);
    match number.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("expected a rate like 500/s, got {s:?}")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Floor { addr, tick }) = cli.command {
        return floor::run(addr, tick);
    }
    if cli.soak.soak.is_some() {
        let ([url], [] | [_]) = (cli.load.url.as_slice(), cli.load.server_pid.as_slice()) else {
            bail!("--soak runs against one server: give one --url and at most one --server-pid");
        };
        return soak::main(url, cli.load.server_pid.first().copied(), &cli.soak);
    }
    let args = cli.load;
    if args.processes == 0 || args.processes > args.clients.max(1) {
        bail!("--processes must be between 1 and --clients");
    }
    // Every client is a file descriptor; the soft limit is usually 1024.
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let own_clients = if args.spawns_generators() { 0 } else { args.clients };
    if own_clients as u64 + 64 > fd_limit {
        bail!(
            "{own_clients} clients need {} file descriptors but this process may hold \
             {fd_limit}; use --processes",
            own_clients + 64
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    if args.child { runtime.block_on(child(args)) } else { runtime.block_on(run(args)) }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.compare_floor && args.url.len() > 1 {
        bail!("--compare-floor compares one server with the floor; give one --url");
    }
    let target = Target::from_urls(&args.url, &args.server_pid)?;
    let heartsync = measure(&args, &target, 1, "heartsync").await?;
    if !args.compare_floor {
        heartsync.print_table();
        if args.json {
            println!("{}", heartsync.json());
        }
        return Ok(());
    }
    // The same load again, from as many fresh source addresses: the first
    // run's closed connections hold their ports in TIME_WAIT for a minute.
    let used = args.processes * usize::from(sources_per_process(&args));
    let next_source = u8::try_from(1 + used)
        .ok()
        .filter(|_| 2 * used <= 255)
        .context("too many source addresses for a second run; lower --sources")?;
    // Let heartsync close the first run's sockets before the floor starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut floor = FloorProcess::spawn(args.floor_tick).await?;
    let floor_row = measure(&args, &floor.target, next_source, "floor").await;
    let _ = floor.child.kill().await;
    let comparison = Comparison { heartsync, floor: floor_row? };
    comparison.print_table();
    if args.json {
        println!("{}", comparison.json());
    }
    Ok(())
}

/// The service a run measures: one server, or several instances of it that
/// share rooms through Redis.
struct Target {
    /// In `--url` order; client `i` connects to `instances[i mod n]`.
    instances: Vec<Instance>,
}

impl Target {
    /// The instances at `urls`, with their process ids if given (one per
    /// URL), else found on this machine.
    fn from_urls(urls: &[String], pids: &[u32]) -> anyhow::Result<Self> {
        if urls.is_empty() {
            bail!("give at least one --url");
        }
        if !pids.is_empty() && pids.len() != urls.len() {
            bail!(
                "{} --server-pid for {} --url: give one per URL, in the same order",
                pids.len(),
                urls.len()
            );
        }
        let instances = urls
            .iter()
            .enumerate()
            .map(|(i, url)| Instance::from_url(url, pids.get(i).copied()))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { instances })
    }

    /// Whether there are several instances to compare.
    fn several(&self) -> bool {
        self.instances.len() > 1
    }

    /// Every instance's base URL, comma-separated, for `--url`.
    fn urls(&self) -> String {
        self.instances.iter().map(|i| i.base.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The instances' numbers added up (several instances are one service:
    /// CPU time, memory and consensus sent of all of them together); `None`
    /// if any one cannot be read, since a partial sum would mislead.
    async fn sample(&self) -> Option<Sample> {
        let mut total = Sample {
            process: ProcessSample { cpu_seconds: 0.0, rss_bytes: 0.0 },
            consensus_sent: Some(0.0),
            partials: Some(Partials::default()),
        };
        // All at once, so every instance's window is the same.
        let samples = futures_util::future::join_all(self.instances.iter().map(Instance::sample));
        for one in samples.await {
            let one = one?;
            total.process.cpu_seconds += one.process.cpu_seconds;
            total.process.rss_bytes += one.process.rss_bytes;
            total.consensus_sent = total.consensus_sent.zip(one.consensus_sent).map(|(a, b)| a + b);
            total.partials = total.partials.zip(one.partials).map(|(a, b)| Partials {
                published: a.published + b.published,
                late: a.late + b.late,
            });
        }
        Some(total)
    }
}

/// One server process.
struct Instance {
    /// Its base WebSocket URL, `ws://host:port`.
    base: String,
    /// Its address.
    server: SocketAddr,
    /// Its process, when it runs on this machine: CPU and memory are then
    /// read from `/proc`, the same way for heartsync and for the floor.
    pid: Option<u32>,
}

impl Instance {
    fn from_url(url: &str, pid: Option<u32>) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let host = base
            .strip_prefix("ws://")
            .context("--url must start with ws:// (the benchmark speaks plain WebSocket)")?;
        let server: SocketAddr =
            host.to_socket_addrs()?.next().with_context(|| format!("cannot resolve {host}"))?;
        let pid = pid.or_else(|| {
            if server.ip().is_loopback() { stats::listening_pid(server) } else { None }
        });
        Ok(Self { base, server, pid })
    }

    /// The server's CPU time and memory now, and its own count of consensus
    /// frames sent if it has a `/metrics` (the floor has none).
    async fn sample(&self) -> Option<Sample> {
        let metrics = server::scrape(self.server).await.ok();
        let process = match self.pid {
            Some(pid) => ProcessSample::read(pid).ok()?,
            None => metrics
                .map(|s| ProcessSample { cpu_seconds: s.cpu_seconds, rss_bytes: s.rss_bytes })?,
        };
        Some(Sample {
            process,
            consensus_sent: metrics.map(|m| m.consensus_sent),
            partials: metrics
                .map(|m| Partials { published: m.partials_published, late: m.partials_late }),
        })
    }
}

/// One look at the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    process: ProcessSample,
    /// `heartsync_messages_sent_total{type="consensus"}`, if it has one.
    consensus_sent: Option<f64>,
    /// Its cluster counters, if it has a `/metrics`.
    partials: Option<Partials>,
}

/// An instance's `heartsync_cluster_partials_{published,late}_total`.
#[derive(Debug, Clone, Copy, Default)]
struct Partials {
    published: f64,
    late: f64,
}

/// Redis's INFO with the moment it was read, or nothing without
/// `--redis-info` (a failed read is said on stderr and leaves it out).
async fn redis_sample(args: &Args) -> Option<(redis_info::RedisSample, Instant)> {
    let url = args.redis_info.as_deref()?;
    match redis_info::RedisSample::read(url).await {
        Ok(sample) => Some((sample, Instant::now())),
        Err(error) => {
            eprintln!("note: {error:#}; Redis's figures will not be reported");
            None
        }
    }
}

/// Source addresses each generator process connects from.
fn sources_per_process(args: &Args) -> u8 {
    let per_process = args.clients.div_ceil(args.processes);
    args.sources.unwrap_or_else(|| (per_process / 20_000 + 1).min(250) as u8).max(1)
}

/// One row: ramp, settle, measure, close, against `target`.
async fn measure(
    args: &Args,
    target: &Target,
    source_base: u8,
    label: &str,
) -> anyhow::Result<Report> {
    let baseline = target.sample().await;
    if baseline.is_none() {
        eprintln!(
            "note: cannot read {label}'s /proc or /metrics; its CPU and memory will not be reported"
        );
    }
    let ramp_started = Instant::now();
    let mut generator = if args.spawns_generators() {
        Generator::Children(Children::spawn(args, target, source_base).await?)
    } else {
        let share = Share {
            offset: 0,
            count: args.clients,
            source_base,
            sources: sources_per_process(args),
            ramp: args.ramp,
            label: label.to_owned(),
        };
        Generator::Local(Local::ramp(args, target, share).await)
    };
    let ramp_time = ramp_started.elapsed();
    tokio::time::sleep(args.settle).await;

    let redis_before = redis_sample(args).await;
    let before = target.sample().await;
    generator.start_measuring().await?;
    let window = Instant::now();
    tokio::time::sleep(args.duration).await;
    generator.stop_measuring().await?;
    let window = window.elapsed();
    let after = target.sample().await;
    let redis_after = redis_sample(args).await;
    let (stats, connected) = generator.finish().await?;

    let samples = Samples { baseline, before, after };
    let mut report = Report::new(label, args, &stats, connected, window, ramp_time, samples);
    report.instances = target.instances.len();
    report.agreement = target.several().then(|| stats.agreement.summary());
    report.redis = redis_before.zip(redis_after).map(|((before, t0), (after, t1))| {
        before.rates(&after, t1.duration_since(t0).as_secs_f64())
    });
    Ok(report)
}

/// One generator process's part of the load.
struct Share {
    /// The index of its first client (names, rooms and start phases follow
    /// the global index, so the split changes nothing the server sees).
    offset: usize,
    /// How many clients it opens.
    count: usize,
    /// The last octet of its first source address.
    source_base: u8,
    /// How many source addresses it uses.
    sources: u8,
    /// Its connections per second.
    ramp: f64,
    /// Its name on the live line.
    label: String,
}

/// Clients in this process.
struct Local {
    stats: Arc<Stats>,
    measuring: Arc<AtomicBool>,
    stop: tokio::sync::watch::Sender<bool>,
    clients: tokio::task::JoinSet<()>,
    progress: tokio::task::JoinHandle<()>,
    /// Clients connected when the measured window opened.
    connected_at_window: u64,
}

impl Local {
    /// Opens the share's clients at its rate, round robin over the target's
    /// instances, and waits (up to 30 s) for the last to connect or fail.
    async fn ramp(args: &Args, target: &Target, share: Share) -> Self {
        let stats = Arc::new(Stats::default());
        let measuring = Arc::new(AtomicBool::new(false));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let progress = tokio::spawn(progress(
            stats.clone(),
            measuring.clone(),
            args.report_every,
            share.count,
            share.label.clone(),
        ));
        let mut clients = tokio::task::JoinSet::new();
        let gap = Duration::from_secs_f64(1.0 / share.ramp);
        let started = tokio::time::Instant::now();
        for j in 0..share.count {
            tokio::time::sleep_until(started + gap.mul_f64(j as f64)).await;
            let i = share.offset + j;
            let room = format!("{}-{}", args.room_prefix, i % args.rooms.max(1));
            let source = share.source_base.saturating_add((j % usize::from(share.sources)) as u8);
            // By the global index, so the split over processes changes
            // nothing the instances see.
            let instance = i % target.instances.len();
            let Instance { base, server, .. } = &target.instances[instance];
            let plan = client::Plan {
                url: format!("{base}/ws/{room}?client_id=bench-{i:08}"),
                server: *server,
                source: IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)),
                report: !args.idle,
                start_phase: (i as f64 * 0.618_033_988_7).fract(),
                taps_per_s: args.taps_per_s,
                instance: target.several().then_some(instance),
            };
            clients.spawn(client::run(plan, stats.clone(), measuring.clone(), stop_rx.clone()));
        }
        // Wait for stragglers.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let done = stats.connected.load(Ordering::Relaxed)
                + stats.connect_failures.load(Ordering::Relaxed);
            if done >= share.count as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { stats, measuring, stop, clients, progress, connected_at_window: 0 }
    }

    fn start_measuring(&mut self) {
        self.connected_at_window = self.stats.connected.load(Ordering::Relaxed);
        self.measuring.store(true, Ordering::Relaxed);
    }

    fn stop_measuring(&self) {
        self.measuring.store(false, Ordering::Relaxed);
    }

    /// Closes every client; the counts, and the clients connected when the
    /// window opened.
    async fn finish(mut self) -> (Arc<Stats>, u64) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.clients.join_next().await.is_some() {}
        })
        .await;
        self.progress.abort();
        (self.stats, self.connected_at_window)
    }
}

/// The live line on stderr, every `every`.
async fn progress(
    stats: Arc<Stats>,
    measuring: Arc<AtomicBool>,
    every: Duration,
    total: usize,
    label: String,
) {
    let started = Instant::now();
    let mut last_messages = 0;
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let messages = stats.messages_received.load(Ordering::Relaxed);
        let rate = (messages - last_messages) as f64 / every.as_secs_f64();
        last_messages = messages;
        eprintln!(
            "{label} [{:>6.1}s] {} connected {}/{} failed {} | msgs/s {:>8.0} | tick delay p50 {:.1} ms p99 {:.1} ms | missed {} errors {}",
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
}

/// The clients of a run: here, or split over child processes.
enum Generator {
    Local(Local),
    Children(Children),
}

impl Generator {
    async fn start_measuring(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Local(local) => local.start_measuring(),
            Self::Children(children) => children.tell_all("measure").await?,
        }
        Ok(())
    }

    async fn stop_measuring(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Local(local) => local.stop_measuring(),
            Self::Children(children) => children.tell_all("stop").await?,
        }
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<(Arc<Stats>, u64)> {
        match self {
            Self::Local(local) => Ok(local.finish().await),
            Self::Children(children) => children.collect().await,
        }
    }
}

/// Generator processes: `heartsync-bench --child`, each with its share.
///
/// The steering protocol, one line each way at a time: the child prints
/// `ready` once its clients are in; the parent writes `measure` when the
/// window opens and `stop` when it closes; the child closes its clients and
/// prints a [`ChildResult`] as JSON.
struct Children {
    procs: Vec<ChildProcess>,
}

struct ChildProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// What a generator process hands back.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildResult {
    connected_at_window: u64,
    stats: StatsSnapshot,
}

/// How a generator process is started: the executable itself, under
/// `nice -n N` for `--generator-nice N`, under `chrt --idle 0` for
/// `--generator-idle` (both when both are given).
fn generator_command(args: &Args, exe: &std::path::Path) -> tokio::process::Command {
    let mut program: Vec<std::ffi::OsString> = Vec::new();
    if args.generator_idle {
        program.extend(["chrt", "--idle", "0"].map(Into::into));
    }
    if args.generator_nice > 0 {
        program.extend(["nice".into(), "-n".into(), args.generator_nice.to_string().into()]);
    }
    program.push(exe.into());
    let mut command = tokio::process::Command::new(&program[0]);
    command.args(&program[1..]);
    command
}

impl Children {
    /// Starts `--processes` children (they ramp together, each at its share
    /// of `--ramp`) and waits until every one is ready.
    async fn spawn(args: &Args, target: &Target, source_base: u8) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let n = args.processes;
        let sources = sources_per_process(args);
        let mut procs = Vec::with_capacity(n);
        let mut offset = 0;
        for k in 0..n {
            let count = args.clients / n + usize::from(k < args.clients % n);
            let base = usize::from(source_base) + k * usize::from(sources);
            let base =
                u8::try_from(base).ok().filter(|b| usize::from(*b) + usize::from(sources) <= 256);
            let base = base.context("too many source addresses; lower --sources or --processes")?;
            let mut command = generator_command(args, &exe);
            command
                .arg("--child")
                .args(["--url", &target.urls()])
                .args(["--clients", &count.to_string()])
                .args(["--client-offset", &offset.to_string()])
                .args(["--rooms", &args.rooms.to_string()])
                .args(["--ramp", &(args.ramp / n as f64).to_string()])
                .args([
                    "--report-every",
                    &humantime::format_duration(args.report_every).to_string(),
                ])
                .args(["--taps-per-s", &args.taps_per_s.to_string()])
                .args(["--sources", &sources.to_string()])
                .args(["--source-base", &base.to_string()])
                .args(["--room-prefix", &args.room_prefix])
                .args(["--threads", &args.threads.to_string()]);
            if args.idle {
                command.arg("--idle");
            }
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a generator process")?;
            let stdin = child.stdin.take().context("no stdin")?;
            let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
            procs.push(ChildProcess { child, stdin, stdout });
            offset += count;
        }
        for process in &mut procs {
            let line = process.read_line().await?;
            if line != "ready" {
                bail!("a generator process said {line:?} instead of ready");
            }
        }
        Ok(Self { procs })
    }

    async fn tell_all(&mut self, line: &str) -> anyhow::Result<()> {
        for process in &mut self.procs {
            process.stdin.write_all(format!("{line}\n").as_bytes()).await?;
            process.stdin.flush().await?;
        }
        Ok(())
    }

    /// Every child's counts, merged; and the clients connected in all.
    async fn collect(mut self) -> anyhow::Result<(Arc<Stats>, u64)> {
        let stats = Arc::new(Stats::default());
        let mut connected = 0;
        for process in &mut self.procs {
            let line = process.read_line().await?;
            let result: ChildResult =
                serde_json::from_str(&line).context("a generator process's result")?;
            stats.add(&result.stats);
            connected += result.connected_at_window;
            let _ = process.child.wait().await;
        }
        Ok((stats, connected))
    }
}

impl ChildProcess {
    async fn read_line(&mut self) -> anyhow::Result<String> {
        self.stdout.next_line().await?.context("a generator process ended early")
    }
}

/// `--child`: one generator process's share, steered over stdin/stdout.
async fn child(args: Args) -> anyhow::Result<()> {
    let target = Target::from_urls(&args.url, &[])?;
    let share = Share {
        offset: args.client_offset,
        count: args.clients,
        source_base: args.source_base,
        sources: args.sources.unwrap_or(1).max(1),
        ramp: args.ramp,
        label: format!("gen@{}", args.client_offset),
    };
    let mut local = Local::ramp(&args, &target, share).await;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    expect_line(&mut stdin, "measure").await?;
    local.start_measuring();
    expect_line(&mut stdin, "stop").await?;
    local.stop_measuring();
    let (stats, connected_at_window) = local.finish().await;
    let result = ChildResult { connected_at_window, stats: stats.snapshot() };
    writeln!(stdout, "{}", serde_json::to_string(&result)?)?;
    stdout.flush()?;
    Ok(())
}

/// Waits for the parent to write `word`.
async fn expect_line(
    lines: &mut Lines<BufReader<tokio::io::Stdin>>,
    word: &str,
) -> anyhow::Result<()> {
    match lines.next_line().await? {
        Some(line) if line == word => Ok(()),
        other => bail!("expected {word:?} from the parent, got {other:?}"),
    }
}

/// The floor, as a child process on a free loopback port.
struct FloorProcess {
    child: Child,
    target: Target,
    /// Kept open so the floor never writes into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl FloorProcess {
    async fn spawn(tick: Duration) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["floor", "--addr", "127.0.0.1:0"])
            .args(["--tick", &humantime::format_duration(tick).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the floor")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
            .await
            .context("the floor did not start in 10 s")??
            .context("the floor ended at once")?;
        let url = line.strip_prefix("floor listening on ").context("unexpected floor output")?;
        let target = Target { instances: vec![Instance::from_url(url, child.id())?] };
        Ok(Self { child, target, _stdout: stdout })
    }
}

/// The server's numbers: before any client, and around the measured window.
struct Samples {
    baseline: Option<Sample>,
    before: Option<Sample>,
    after: Option<Sample>,
}

/// The results of a run against one server.
struct Report {
    /// `heartsync` or `floor`.
    label: String,
    clients: usize,
    rooms: usize,
    processes: usize,
    clients_connected: u64,
    connect_failures: u64,
    refused: u64,
    connect_ms: [f64; 3],
    tick_delay_ms: [f64; 3],
    /// To the kernel's receive time instead of the generator's read:
    /// p50, p99, max (see [`stamped`]).
    arrival_delay_ms: [f64; 3],
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
    /// Consensus frames the server says it sent in the window (a check on
    /// the clients' count: the difference is what was still in flight).
    server_consensus_sent: Option<f64>,
    /// How many instances the clients were spread over (the server figures
    /// are their sums).
    instances: usize,
    /// With several instances: whether they broadcast the same consensus
    /// for each seq.
    agreement: Option<stats::AgreementSummary>,
    /// Partials the instances published to Redis a second, all together
    /// (one per instance and room with members per tick; 0 without Redis).
    partials_published_per_s: Option<f64>,
    /// Partials that had not arrived by their tick, a second, all together.
    partials_late_per_s: Option<f64>,
    /// With `--redis-info`: what Redis did in the window.
    redis: Option<redis_info::RedisRates>,
}

impl Report {
    fn new(
        label: &str,
        args: &Args,
        stats: &Stats,
        connected: u64,
        window: Duration,
        ramp: Duration,
        samples: Samples,
    ) -> Self {
        let Samples { baseline, before, after } = samples;
        // Deliveries are the consensus frames the clients received in the
        // window: counted the same way whichever server sent them.
        let received = stats.consensus_received.load(Ordering::Relaxed) as f64;
        let sent =
            match (before.and_then(|b| b.consensus_sent), after.and_then(|a| a.consensus_sent)) {
                (Some(b), Some(a)) => Some(a - b),
                _ => None,
            };
        let partials = before.and_then(|b| b.partials).zip(after.and_then(|a| a.partials));
        let per_s =
            |f: fn(&Partials) -> f64| partials.map(|(b, a)| (f(&a) - f(&b)) / window.as_secs_f64());
        let (published, late) = (per_s(|p| p.published), per_s(|p| p.late));
        let [baseline, before, after] = [baseline, before, after].map(|s| s.map(|s| s.process));
        let (deliveries, cpu_share) = match (&before, &after) {
            (Some(b), Some(a)) if a.cpu_seconds > b.cpu_seconds => (
                Some(received / (a.cpu_seconds - b.cpu_seconds)),
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
        let a = &stats.arrival_delay_ms;
        Self {
            label: label.to_owned(),
            clients: args.clients,
            rooms: args.rooms,
            processes: args.processes,
            clients_connected: connected,
            connect_failures: stats.connect_failures.load(Ordering::Relaxed),
            refused: stats.refused.load(Ordering::Relaxed),
            connect_ms: [h.quantile(0.5), h.quantile(0.95), h.quantile(0.99)],
            tick_delay_ms: [t.quantile(0.5), t.quantile(0.99), t.max()],
            arrival_delay_ms: [a.quantile(0.5), a.quantile(0.99), a.max()],
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
            msgs_received_per_s: received / window.as_secs_f64(),
            ramp_s: ramp.as_secs_f64(),
            deliveries_per_server_cpu_s: deliveries,
            server_cpu_share: cpu_share,
            server_rss_bytes: rss,
            server_rss_growth_per_client_bytes: growth,
            server_consensus_sent: sent,
            instances: 1,
            agreement: None,
            partials_published_per_s: published,
            partials_late_per_s: late,
            redis: None,
        }
    }

    fn print_table(&self) {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("n/a".to_owned(), |v| format!("{v:.0}{unit}"));
        println!(
            "clients            {} connected of {} over {} room(s) ({} failed, {} refused), {} generator process(es)",
            self.clients_connected,
            self.clients,
            self.rooms,
            self.connect_failures,
            self.refused,
            self.processes
        );
        if self.instances > 1 {
            println!(
                "instances          {} (clients round robin; server figures are their sums)",
                self.instances
            );
        }
        println!("ramp               {:.1} s", self.ramp_s);
        println!(
            "connect            p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
            self.connect_ms[0], self.connect_ms[1], self.connect_ms[2]
        );
        println!(
            "tick delay         p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            self.tick_delay_ms[0], self.tick_delay_ms[1], self.tick_delay_ms[2]
        );
        println!(
            "tick arrival       p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (kernel receive time)",
            self.arrival_delay_ms[0], self.arrival_delay_ms[1], self.arrival_delay_ms[2]
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
        println!(
            "server memory      RSS {}  growth per client {}",
            opt(self.server_rss_bytes.map(|b| b / 1024.0 / 1024.0), " MiB"),
            opt(self.server_rss_growth_per_client_bytes, " B")
        );
        if let Some(a) = &self.agreement {
            println!(
                "agreement          {} seqs seen on several instances, {} differed: max |dpsi| {} beat, |dR| {}, |dbpm| {}, hearts {}, voters {} (love {}; within one instance {})",
                a.seqs_compared,
                a.seqs_differing,
                a.max_dphase,
                a.max_dcoherence,
                a.max_dbpm,
                a.max_dhearts,
                a.max_dvoters,
                a.max_dlove,
                a.within_instance
            );
        }
        if let Some(published) = self.partials_published_per_s.filter(|p| *p > 0.0) {
            println!(
                "cluster            {published:.2} partials published a second (all instances), {:.2} late",
                self.partials_late_per_s.unwrap_or(0.0)
            );
        }
        if let Some(redis) = &self.redis {
            let calls: Vec<String> =
                redis.calls_per_s.iter().map(|(name, n)| format!("{name} {n:.2}")).collect();
            println!(
                "redis              {:.2} commands a second ({}), {:.2}% of a core",
                redis.commands_per_s,
                calls.join(", "),
                redis.cpu_share * 100.0
            );
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "server": self.label,
            "clients": self.clients,
            "rooms": self.rooms,
            "processes": self.processes,
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
            "arrival_delay_p50_ms": self.arrival_delay_ms[0],
            "arrival_delay_p99_ms": self.arrival_delay_ms[1],
            "arrival_delay_max_ms": self.arrival_delay_ms[2],
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
            "server_consensus_sent": self.server_consensus_sent,
            "instances": self.instances,
            "agreement": self.agreement,
            "partials_published_per_s": self.partials_published_per_s,
            "partials_late_per_s": self.partials_late_per_s,
            "redis": self.redis,
        })
    }

    /// The figures compared with the floor: name, value.
    fn figures(&self) -> [(&'static str, Option<f64>); 12] {
        let per_client = (self.clients_connected > 0)
            .then(|| self.msgs_received_per_s / self.clients_connected as f64);
        [
            ("deliveries_per_server_cpu_s", self.deliveries_per_server_cpu_s),
            ("tick_delay_p50_ms", Some(self.tick_delay_ms[0])),
            ("tick_delay_p99_ms", Some(self.tick_delay_ms[1])),
            ("tick_delay_max_ms", Some(self.tick_delay_ms[2])),
            ("arrival_delay_p50_ms", Some(self.arrival_delay_ms[0])),
            ("arrival_delay_p99_ms", Some(self.arrival_delay_ms[1])),
            ("arrival_delay_max_ms", Some(self.arrival_delay_ms[2])),
            ("ticks_missed", Some(self.ticks_missed as f64)),
            // A server that cannot keep its tick shows here, not in `seq`.
            ("consensus_per_client_per_s", per_client),
            ("server_rss_growth_per_client_bytes", self.server_rss_growth_per_client_bytes),
            ("connect_p95_ms", Some(self.connect_ms[1])),
            ("clients_connected", Some(self.clients_connected as f64)),
        ]
    }
}

/// One figure of both rows.
struct Ratio {
    name: &'static str,
    heartsync: Option<f64>,
    floor: Option<f64>,
    /// heartsync ÷ floor.
    ratio: Option<f64>,
}

/// heartsync and the floor under the same load in the same run.
struct Comparison {
    heartsync: Report,
    floor: Report,
}

impl Comparison {
    /// Every compared figure; the ratio is `None` when either side is
    /// missing or the floor's is 0.
    fn ratios(&self) -> Vec<Ratio> {
        self.heartsync
            .figures()
            .into_iter()
            .zip(self.floor.figures())
            .map(|((name, h), (_, f))| {
                let ratio = match (h, f) {
                    (Some(h), Some(f)) if f != 0.0 => Some(h / f),
                    _ => None,
                };
                Ratio { name, heartsync: h, floor: f, ratio }
            })
            .collect()
    }

    fn print_table(&self) {
        for row in [&self.heartsync, &self.floor] {
            println!("── {} ──", row.label);
            row.print_table();
        }
        println!("── heartsync vs the floor (ratio: heartsync ÷ floor) ──");
        println!("{:<36} {:>12} {:>12} {:>8}", "figure", "heartsync", "floor", "ratio");
        let num = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        for Ratio { name, heartsync: h, floor: f, ratio } in self.ratios() {
            println!(
                "{name:<36} {:>12} {:>12} {:>8}",
                num(h),
                num(f),
                ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}×"))
            );
        }
    }

    fn json(&self) -> serde_json::Value {
        let ratios: serde_json::Map<String, serde_json::Value> =
            self.ratios().into_iter().map(|r| (r.name.to_owned(), r.ratio.into())).collect();
        serde_json::json!({
            "heartsync": self.heartsync.json(),
            "floor": self.floor.json(),
            "ratios": ratios,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the floor on its own thread (one thread, as in its own process)
    /// on a free loopback port until the returned sender is dropped.
    fn start_floor(tick: Duration) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let listener = floor::bind("127.0.0.1:0".parse().expect("addr")).expect("listens");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                tokio::select! {
                    () = floor::serve(listener, tick) => {}
                    _ = stop_rx => {}
                }
            });
        });
        (addr_rx.recv().expect("the floor started"), stop_tx)
    }

    fn load(addr: SocketAddr, extra: &[&str]) -> Args {
        let url = format!("ws://{addr}");
        let mut argv = vec!["heartsync-bench", "--url", &url, "--report-every", "10s"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("valid arguments").load
    }

    #[test]
    fn the_floor_delivers_every_tick_to_every_client() {
        let tick = Duration::from_millis(50);
        let (addr, _stop) = start_floor(tick);
        let args = load(
            addr,
            &["--clients", "24", "--rooms", "3", "--duration", "2s", "--settle", "300ms"],
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let report = runtime.block_on(async {
            let target = Target::from_urls(&args.url, &[]).expect("target");
            measure(&args, &target, 1, "floor").await.expect("a run")
        });
        assert_eq!(report.clients_connected, 24);
        assert_eq!((report.connect_failures, report.refused, report.errors), (0, 0, 0));
        assert_eq!(report.ticks_missed, 0, "every client saw every seq in the window");
        // 24 clients, 20 ticks a second each; a loaded machine may run a
        // tick late, never twice.
        let expected = 24.0 * 20.0;
        assert!(
            (0.8 * expected..=1.05 * expected).contains(&report.msgs_received_per_s),
            "{} consensus a second, expected about {expected}",
            report.msgs_received_per_s
        );
        assert!(report.tick_delay_ms[1] > 0.0);
        assert_eq!((report.instances, report.agreement), (1, None));
    }

    #[tokio::test]
    async fn generators_run_idle_and_niced_as_asked() {
        // `cat /proc/self/stat` started as a generator would be: fields 19
        // and 41 (after the command name) are its niceness and policy.
        let (nice, policy) = async {
            let args = load(
                "127.0.0.1:1".parse().expect("addr"),
                &["--generator-idle", "--generator-nice", "7"],
            );
            let out = generator_command(&args, std::path::Path::new("cat"))
                .arg("/proc/self/stat")
                .output()
                .await
                .expect("cat runs");
            let stat = String::from_utf8(out.stdout).expect("text");
            let fields: Vec<&str> =
                stat.rsplit_once(") ").expect("a stat line").1.split(' ').collect();
            // Counted from field 3 (the state), as proc(5) numbers them.
            (fields[19 - 3].to_owned(), fields[41 - 3].to_owned())
        }
        .await;
        // `nice -n` adds to the niceness it is started with.
        let own = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        let own: i32 = own
            .rsplit_once(") ")
            .expect("a stat line")
            .1
            .split(' ')
            .nth(19 - 3)
            .and_then(|n| n.parse().ok())
            .expect("own niceness");
        assert_eq!(nice, (own + 7).min(19).to_string());
        assert_eq!(policy, "5", "SCHED_IDLE");
        let plain = load("127.0.0.1:1".parse().expect("addr"), &[]);
        let command = generator_command(&plain, std::path::Path::new("cat"));
        assert_eq!(command.as_std().get_program(), "cat");
    }

    /// A short run over `urls`, as several instances.
    fn run_over(urls: &[String]) -> Report {
        let url = urls.join(",");
        let argv = [
            "heartsync-bench",
            "--url",
            &url,
            "--report-every",
            "10s",
            "--clients",
            "12",
            "--duration",
            "1500ms",
            "--settle",
            "300ms",
        ];
        let args = Cli::try_parse_from(argv).expect("valid arguments").load;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let target = Target::from_urls(&args.url, &[]).expect("target");
            measure(&args, &target, 1, "heartsync").await.expect("a run")
        })
    }

    #[test]
    fn clients_on_one_broadcast_agree_exactly() {
        // The same floor given twice: two "instances" whose clients receive
        // the very same frames, so every seq agrees.
        let (addr, _stop) = start_floor(Duration::from_millis(50));
        let url = format!("ws://{addr}");
        let report = run_over(&[url.clone(), url]);
        assert_eq!((report.clients_connected, report.errors), (12, 0));
        assert_eq!(report.instances, 2);
        let agreement = report.agreement.expect("several instances are compared");
        assert!(agreement.seqs_compared >= 20, "{agreement:?}");
        assert_eq!(agreement.seqs_differing, 0, "{agreement:?}");
        assert_eq!((agreement.max_dphase, agreement.max_dhearts), (0.0, 0));
        assert_eq!(agreement.within_instance, 0);
    }

    #[test]
    fn clients_on_two_servers_with_other_ticks_disagree() {
        // Two floors ticking at different rates: seq k is at another time
        // on each, so its phase differs, and 6 clients each (round robin)
        // make the same hearts.
        let (a, _stop_a) = start_floor(Duration::from_millis(50));
        let (b, _stop_b) = start_floor(Duration::from_millis(70));
        let report = run_over(&[format!("ws://{a}"), format!("ws://{b}")]);
        assert_eq!((report.clients_connected, report.errors), (12, 0));
        let agreement = report.agreement.expect("several instances are compared");
        assert!(agreement.seqs_compared > 0, "{agreement:?}");
        assert!(agreement.seqs_differing > 0 && agreement.max_dphase > 0.0, "{agreement:?}");
        assert_eq!(agreement.max_dhearts, 0, "clients go round robin: 6 on each");
    }

    #[test]
    fn several_urls_take_one_pid_each() {
        let urls = ["ws://127.0.0.1:1".to_owned(), "ws://127.0.0.1:2".to_owned()];
        let target = Target::from_urls(&urls, &[11, 12]).expect("target");
        assert_eq!(target.urls(), "ws://127.0.0.1:1,ws://127.0.0.1:2");
        assert_eq!(
            target.instances.iter().map(|i| i.pid).collect::<Vec<_>>(),
            [Some(11), Some(12)]
        );
        let error = Target::from_urls(&urls, &[11]).err().expect("one pid for two urls");
        assert!(error.to_string().contains("one per URL"), "{error}");
        let args = Cli::try_parse_from([
            "heartsync-bench",
            "--url",
            "ws://a:1,ws://b:2",
            "--url",
            "ws://c:3",
        ])
        .expect("valid arguments")
        .load;
        assert_eq!(args.url, ["ws://a:1", "ws://b:2", "ws://c:3"]);
    }

    #[test]
    fn a_floor_target_is_measured_from_proc() {
        let (addr, _stop) = start_floor(Duration::from_millis(250));
        let target = Target::from_urls(&[format!("ws://{addr}")], &[]).expect("target");
        // The floor runs inside this test process here.
        assert_eq!(target.instances[0].pid, Some(std::process::id()));
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let sample = runtime.block_on(target.sample()).expect("a sample");
        assert!(sample.process.rss_bytes > 0.0 && sample.process.cpu_seconds >= 0.0);
        assert_eq!(sample.consensus_sent, None, "the floor has no /metrics");
    }

    #[test]
    fn ratios_divide_heartsync_by_the_floor() {
        let row = |label: &str, p99: f64, deliveries: f64, missed: u64| {
            let stats = Stats::default();
            stats.tick_delay_ms.record(p99);
            stats.ticks_missed.fetch_add(missed, Ordering::Relaxed);
            let mut report = Report::new(
                label,
                &load("127.0.0.1:1".parse().expect("addr"), &[]),
                &stats,
                10,
                Duration::from_secs(1),
                Duration::from_secs(1),
                Samples { baseline: None, before: None, after: None },
            );
            report.deliveries_per_server_cpu_s = Some(deliveries);
            report
        };
        let comparison = Comparison {
            heartsync: row("heartsync", 100.0, 60_000.0, 0),
            floor: row("floor", 200.0, 120_000.0, 0),
        };
        let json = comparison.json();
        assert_eq!(json["ratios"]["deliveries_per_server_cpu_s"], 0.5);
        assert_eq!(json["ratios"]["tick_delay_p99_ms"], 0.5);
        assert!(json["ratios"]["ticks_missed"].is_null(), "0 ÷ 0 is no ratio");
        assert_eq!(json["heartsync"]["server"], "heartsync");
        assert_eq!(json["floor"]["deliveries_per_server_cpu_s"], 120_000.0);
    }
}
