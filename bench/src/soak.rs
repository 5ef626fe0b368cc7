//! `heartsync-bench --soak 60m`: keeps a realistic mix running against a
//! server on this machine for a long time, samples the server every minute,
//! and ends with a verdict.
//!
//! The mix, over `--soak-rooms` fresh rooms (named for this run, so their
//! love totals start at nothing):
//! - `--soak-hearts` well-behaved hearts: each reports its phase every
//!   `report_ms` (as the page does), syncs its clock once a second, taps love
//!   now and then, and stays for a random while (`--soak-stay` on average)
//!   before it leaves (stops tapping, waits for its acks, closes cleanly) and
//!   comes back a few seconds later with the same client id, as a page does
//!   on a reload. Only these count ticks: the others are expected to miss.
//! - `--soak-slow-readers`: connect with a tiny receive buffer, read for a
//!   while, then stop reading for up to 45 s. The server must not queue for
//!   them (its memory shows it); they may be dropped (write timeout, pong
//!   timeout), and then reconnect.
//! - `--soak-flooders`: send 200 messages a second (ten times the rate
//!   limit) until the server closes them with 1008, then come back 20 s later.
//!
//! Every sample period (a minute; a tenth of a soak shorter than ten
//! minutes) it prints the server's RSS and open descriptors (from
//! `/proc/<pid>`), the p99 tick delay and the ticks missed by the
//! well-behaved hearts in that period. At the end every client leaves, and
//! the verdict checks:
//! - RSS growth from the end of the warm-up (`--soak-warm-up`, by default
//!   the first sixth of the run: minute 10 of 60) to the end stays under 1 %;
//! - the server's open descriptors return to their count before the run
//!   (taken once a first newcomer per room has come and gone, so the love
//!   store has opened its files);
//! - no well-behaved heart missed a tick, was dropped, or was sent an error,
//!   and every one that left had its close answered;
//! - every love tap was acknowledged exactly once, and each room's durable
//!   total, read by a newcomer after everyone has left, is the sum of the
//!   acknowledged taps;
//! - every flood ended with a 1008 close;
//! - the server's log (`--server-log`) holds no panic.
//!
//! It prints `soak PASS` or `soak FAIL: <reasons>`, then one JSON object
//! (samples and verdict) as the last line of stdout, and exits non-zero on
//! FAIL.

use crate::stats::{Histogram, ProcessSample};
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use shared::clock::system_now_ms as now_ms;
use shared::{ClientMessage, PhaseReport, ServerMessage};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The soak's flags (the server is `--url`, its process `--server-pid` or
/// the one listening on the URL's port).
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// Run a soak for this long instead of a load run (e.g. `60m`, `90s`):
    /// a realistic mix against a server on this machine, sampled every
    /// minute, ending with a verdict.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,
    /// Well-behaved hearts in the soak.
    #[arg(long, default_value_t = 300)]
    pub soak_hearts: usize,
    /// Rooms the soak's hearts are spread over.
    #[arg(long, default_value_t = 5)]
    pub soak_rooms: usize,
    /// Clients that stop reading for a while, again and again.
    #[arg(long, default_value_t = 3)]
    pub soak_slow_readers: usize,
    /// Clients that flood until closed with 1008, again and again.
    #[arg(long, default_value_t = 1)]
    pub soak_flooders: usize,
    /// How long a heart stays, on average, before it leaves (it comes back
    /// 2-10 s later).
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub soak_stay: Duration,
    /// Love taps a second per heart, on average.
    #[arg(long, default_value_t = 0.1)]
    pub soak_taps_per_s: f64,
    /// How often to sample the server; default a minute, or a tenth of a
    /// soak shorter than ten minutes.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub soak_sample_every: Option<Duration>,
    /// The first part of the soak, left out of the RSS growth; default a
    /// sixth (minute 10 of 60). A fresh server's heap grows for its first
    /// minutes under churn before it levels off, so a short soak against a
    /// fresh server needs a longer one.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub soak_warm_up: Option<Duration>,
    /// The server's log file, scanned for panics at the end of the soak.
    #[arg(long)]
    pub server_log: Option<PathBuf>,
}

/// RSS may grow at most this much (as a fraction) over the measured part.
const RSS_GROWTH_LIMIT: f64 = 0.01;
/// The first part of the run, excluded from the RSS growth (minute 10 of 60):
/// rooms fill, allocators and buffers reach their working size.
const WARM_UP_FRACTION: f64 = 1.0 / 6.0;
/// Well-behaved hearts per source address, under the server's default
/// `--max-connections-per-ip` (200).
const HEARTS_PER_SOURCE: usize = 150;
/// New hearts a second while the soak starts.
const RAMP_PER_S: f64 = 50.0;
/// How long a leaving heart waits for its outstanding love acks.
const ACK_PATIENCE: Duration = Duration::from_secs(20);
/// How long a flooder may flood before the server must have closed it.
const FLOOD_PATIENCE: Duration = Duration::from_secs(30);
/// Messages a second a flooder sends (the server's default rate is 20).
const FLOOD_RATE: f64 = 200.0;
/// How long after everyone left the descriptors may take to come back.
const FD_PATIENCE: Duration = Duration::from_secs(30);
/// How long every client has to leave once told to: a heart's acks
/// (`ACK_PATIENCE`), one reconnect to resend them, and its close.
const LEAVE_PATIENCE: Duration = Duration::from_secs(60);

/// Runs the soak on its own runtime; the process's exit status says the verdict.
pub fn main(url: &str, server_pid: Option<u32>, args: &SoakArgs) -> anyhow::Result<()> {
    let duration = args.soak.context("--soak needs a duration")?;
    let clients = args.soak_hearts + args.soak_slow_readers + args.soak_flooders;
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    if clients as u64 + 64 > fd_limit {
        anyhow::bail!("the soak's {clients} clients need more than the {fd_limit} descriptors");
    }
    if args.soak_rooms == 0 || args.soak_hearts == 0 {
        anyhow::bail!("a soak needs at least one room and one heart");
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let report = runtime.block_on(run(url, server_pid, duration, args))?;
    println!("{}", report.verdict.line());
    println!("{}", report.json());
    if !report.verdict.passed() {
        std::process::exit(1);
    }
    Ok(())
}

/// What every client of the soak counts.
#[derive(Default)]
struct Counters {
    /// Tick delays of well-behaved hearts in the current sample period
    /// (replaced by a fresh histogram at each sample).
    period_delays: Mutex<Arc<Histogram>>,
    /// Ticks missed by well-behaved hearts in the current sample period.
    period_missed: AtomicU64,
    /// Ticks missed by well-behaved hearts over the run.
    missed: AtomicU64,
    /// Consensus frames well-behaved hearts received.
    ticks: AtomicU64,
    /// Well-behaved hearts connected now.
    hearts: AtomicU64,
    /// Well-behaved joins (first ones and returns).
    joins: AtomicU64,
    /// Well-behaved hearts that left by themselves.
    leaves: AtomicU64,
    /// Leaves whose close the server did not answer with its own.
    unclean_leaves: AtomicU64,
    /// Connection attempts that failed (any client).
    connect_failures: AtomicU64,
    /// Well-behaved hearts the server closed or dropped.
    dropped: AtomicU64,
    /// `error` messages sent to well-behaved hearts.
    error_messages: AtomicU64,
    /// Love taps sent (new taps, not resends).
    taps: AtomicU64,
    /// Love acks received.
    acks: AtomicU64,
    /// Acks that did not match the oldest outstanding `love`, or whose
    /// total went down.
    ack_violations: AtomicU64,
    /// Slow readers' pauses.
    slow_pauses: AtomicU64,
    /// Slow readers the server dropped (expected now and then).
    slow_dropped: AtomicU64,
    /// Floods started.
    floods: AtomicU64,
    /// Floods the server ended with 1008.
    floods_closed: AtomicU64,
    /// Floods that ended otherwise: another close, a reset, or not at all.
    floods_unclosed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts one consensus received by a well-behaved heart.
    fn tick(&self, last_seq: &mut Option<u64>, seq: u64, at: f64) {
        let delays = match self.period_delays.lock() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        delays.record(now_ms() - at);
        Self::add(&self.ticks, 1);
        if let Some(last) = *last_seq {
            let gap = seq.saturating_sub(last + 1);
            Self::add(&self.missed, gap);
            Self::add(&self.period_missed, gap);
        }
        *last_seq = Some(last_seq.map_or(seq, |last| last.max(seq)));
    }

    /// The current period's tick delays and misses, starting a new period.
    fn take_period(&self) -> (Arc<Histogram>, u64) {
        let fresh = Arc::new(Histogram::default());
        let old = match self.period_delays.lock() {
            Ok(mut current) => std::mem::replace(&mut *current, fresh),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), fresh),
        };
        (old, self.period_missed.swap(0, Ordering::Relaxed))
    }
}

/// One look at the server and the clients, at the end of a sample period.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    /// Seconds since the soak started.
    t_s: f64,
    rss_bytes: f64,
    /// The anonymous part of the RSS (heap, stacks): what a leak grows.
    rss_anon_bytes: f64,
    /// The file-backed part (the binary's pages as they are first run,
    /// SQLite's mapped index): grows as code paths are first taken, bounded.
    rss_file_bytes: f64,
    fds: usize,
    /// p99 tick delay of well-behaved hearts in this period.
    tick_p99_ms: f64,
    tick_max_ms: f64,
    /// Ticks well-behaved hearts missed in this period.
    missed: u64,
    hearts: u64,
    joins: u64,
    leaves: u64,
    acks: u64,
    floods_closed: u64,
    slow_dropped: u64,
    /// The server's share of one core over this period.
    server_cpu: f64,
    /// The machine's 1-minute load average.
    load: f64,
}

/// The server's process, read from `/proc`.
struct Server {
    pid: u32,
}

impl Server {
    fn process(&self) -> anyhow::Result<ProcessSample> {
        ProcessSample::read(self.pid).with_context(|| format!("reading /proc/{}", self.pid))
    }

    /// `RssAnon` and `RssFile` from `/proc/<pid>/status`, in bytes.
    fn rss_parts(&self) -> anyhow::Result<(f64, f64)> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|kib| kib * 1024.0)
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok((field("RssAnon:")?, field("RssFile:")?))
    }

    /// What each open descriptor points at (`socket:[…]`, a path, …), to
    /// name the ones a run leaves behind.
    fn fd_targets(&self) -> std::collections::BTreeSet<String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .collect()
    }

    /// Open descriptors once the count has not changed for a second (up to
    /// 10 s): sockets just closed by clients are gone from it.
    async fn steady_fds(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut count = self.fds()?;
        let mut since = Instant::now();
        while since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
            sleep(Duration::from_millis(100)).await;
            let now = self.fds()?;
            if now != count {
                (count, since) = (now, Instant::now());
            }
        }
        Ok(count)
    }

    /// Open descriptors: the entries of `/proc/<pid>/fd`.
    fn fds(&self) -> anyhow::Result<usize> {
        let dir = format!("/proc/{}/fd", self.pid);
        Ok(std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?.count())
    }
}

/// The machine's 1-minute load average (0 if it cannot be read).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(0.0)
}

/// Where the clients go.
struct Setup {
    base: String,
    server: SocketAddr,
    rooms: Vec<String>,
    taps_per_s: f64,
    stay: Duration,
}

impl Setup {
    fn url(&self, room: usize, client_id: &str) -> String {
        format!("{}/ws/{}?client_id={client_id}", self.base, self.rooms[room])
    }
}

/// Everything a run produced.
struct SoakReport {
    duration: Duration,
    hearts: usize,
    rooms: Vec<RoomLove>,
    samples: Vec<Sample>,
    fds_baseline: usize,
    fds_after: usize,
    counters: serde_json::Value,
    verdict: Verdict,
}

impl SoakReport {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "duration_s": self.duration.as_secs_f64(),
            "hearts": self.hearts,
            "rooms": self.rooms,
            "fds_baseline": self.fds_baseline,
            "fds_after": self.fds_after,
            "counters": self.counters,
            "samples": self.samples,
            "verdict": self.verdict,
        })
    }
}

/// A room's love: its total before the run, after it, and the taps its
/// hearts had acknowledged.
#[derive(Debug, Clone, serde::Serialize)]
struct RoomLove {
    room: String,
    before: u64,
    after: u64,
    acked: u64,
}

async fn run(
    url: &str,
    server_pid: Option<u32>,
    duration: Duration,
    args: &SoakArgs,
) -> anyhow::Result<SoakReport> {
    let target = crate::Instance::from_url(url, server_pid)?;
    let server = Server {
        pid: target.pid.context(
            "the soak reads the server's /proc: run it on this machine (or pass --server-pid)",
        )?,
    };
    let every = args.soak_sample_every.unwrap_or(if duration < Duration::from_secs(600) {
        duration / 10
    } else {
        Duration::from_secs(60)
    });
    anyhow::ensure!(!every.is_zero(), "the sample period must be longer than 0");
    let run_id = (now_ms() / 1000.0) as u64;
    let setup = Arc::new(Setup {
        base: target.base.clone(),
        server: target.server,
        rooms: (0..args.soak_rooms).map(|k| format!("soak-{run_id}-{k}")).collect(),
        taps_per_s: args.soak_taps_per_s,
        stay: args.soak_stay,
    });
    let mut love_before = Vec::new();
    for room in 0..setup.rooms.len() {
        love_before.push(room_love(&setup, room).await?);
    }
    // The baseline is taken once those first newcomers have come and gone:
    // the love store opens its files (SQLite's WAL and its index) on the
    // first read and keeps them, which is not a client's descriptor left
    // behind.
    let fds_baseline = server.steady_fds().await?;
    let fd_targets_before = server.fd_targets();
    eprintln!(
        "soak: {} hearts, {} slow readers, {} flooders over {} rooms for {}; server pid {}, {} open fds",
        args.soak_hearts,
        args.soak_slow_readers,
        args.soak_flooders,
        setup.rooms.len(),
        humantime::format_duration(duration),
        server.pid,
        fds_baseline
    );

    let counters = Arc::new(Counters::default());
    let (stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    let mut hearts = tokio::task::JoinSet::new();
    let mut others = tokio::task::JoinSet::new();
    for k in 0..args.soak_slow_readers {
        let source = source(200 + k);
        others.spawn(slow_reader(setup.clone(), k, source, counters.clone(), stop.clone()));
    }
    for k in 0..args.soak_flooders {
        let source = source(240 + k);
        others.spawn(flooder(setup.clone(), k, source, counters.clone(), stop.clone()));
    }
    let sampler = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut last_cpu = server.process().map(|p| p.cpu_seconds).unwrap_or(0.0);
            let periods = (duration.as_secs_f64() / every.as_secs_f64()).floor().max(1.0) as u32;
            for k in 1..=periods {
                sleep_until(started + every * k).await;
                let process = server.process()?;
                let (rss_anon_bytes, rss_file_bytes) = server.rss_parts()?;
                let (delays, missed) = counters.take_period();
                let sample = Sample {
                    t_s: started.elapsed().as_secs_f64(),
                    rss_bytes: process.rss_bytes,
                    rss_anon_bytes,
                    rss_file_bytes,
                    fds: server.fds()?,
                    tick_p99_ms: delays.quantile(0.99),
                    tick_max_ms: delays.max(),
                    missed,
                    hearts: Counters::get(&counters.hearts),
                    joins: Counters::get(&counters.joins),
                    leaves: Counters::get(&counters.leaves),
                    acks: Counters::get(&counters.acks),
                    floods_closed: Counters::get(&counters.floods_closed),
                    slow_dropped: Counters::get(&counters.slow_dropped),
                    server_cpu: (process.cpu_seconds - last_cpu) / every.as_secs_f64(),
                    load: load_average(),
                };
                last_cpu = process.cpu_seconds;
                eprintln!("{}", sample.line());
                samples.push(sample);
            }
            anyhow::Ok((samples, server))
        })
    };
    let ramp_gap = Duration::from_secs_f64(1.0 / RAMP_PER_S);
    for i in 0..args.soak_hearts {
        if sampler.is_finished() {
            break;
        }
        sleep_until(started + ramp_gap * i as u32).await;
        let heart = Heart {
            client_id: format!("soak-{run_id}-{i:05}"),
            room: i % setup.rooms.len(),
            source: source(1 + i / HEARTS_PER_SOURCE),
            sent: 0,
            acked: 0,
            last_total: 0,
            rng: fastrand::Rng::with_seed(run_id ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        };
        hearts.spawn(heart.run(setup.clone(), counters.clone(), stop.clone(), true));
    }
    let (samples, server) = sampler.await.context("the sampler panicked")??;

    // Everyone leaves: hearts wait for their acks and close cleanly.
    eprintln!("soak: time is up; every client leaves");
    let _ = stop_tx.send(true);
    let mut finished = Vec::new();
    let leaving = Instant::now();
    let all_left = tokio::time::timeout(LEAVE_PATIENCE, async {
        while let Some(heart) = hearts.join_next().await {
            if let Ok(heart) = heart {
                finished.push(heart);
            }
        }
        while others.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    hearts.abort_all();
    others.abort_all();

    // The durable totals, read by a newcomer to each emptied room.
    let mut rooms = Vec::new();
    for (k, before) in love_before.iter().enumerate() {
        let acked = finished.iter().filter(|h| h.room == k).map(|h| h.acked).sum();
        rooms.push(RoomLove {
            room: setup.rooms[k].clone(),
            before: *before,
            after: room_love(&setup, k).await?,
            acked,
        });
    }
    let unacked: u64 = finished.iter().map(|h| h.sent - h.acked.min(h.sent)).sum();

    // Descriptors back to where they were, under a deadline.
    eprintln!(
        "soak: {} of {} hearts left in {:.1} s; reading the rooms' love, then the server's descriptors",
        finished.len(),
        args.soak_hearts,
        leaving.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + FD_PATIENCE;
    let mut fds_after = server.fds()?;
    while fds_after > fds_baseline && Instant::now() < deadline {
        sleep(Duration::from_millis(200)).await;
        fds_after = server.fds()?;
    }
    let fds_new: Vec<String> =
        server.fd_targets().difference(&fd_targets_before).cloned().collect();
    eprintln!("soak: {fds_after} descriptors open, {fds_baseline} before the run");
    let panics = match &args.server_log {
        Some(path) => Some(panics_in(path)?),
        None => None,
    };

    let c = &counters;
    let get = Counters::get;
    let checks = Checks {
        all_left: all_left && finished.len() == args.soak_hearts,
        fds_baseline,
        fds_after,
        fds_new,
        missed: get(&c.missed),
        ticks: get(&c.ticks),
        dropped: get(&c.dropped),
        unclean_leaves: get(&c.unclean_leaves),
        error_messages: get(&c.error_messages),
        ack_violations: get(&c.ack_violations),
        unacked,
        floods: get(&c.floods),
        floods_unclosed: get(&c.floods_unclosed),
        panics,
    };
    let warm_up = args.soak_warm_up.unwrap_or_else(|| duration.mul_f64(WARM_UP_FRACTION));
    let verdict = Verdict::judge(&samples, warm_up, &rooms, &checks);
    let counters = serde_json::json!({
        "ticks": checks.ticks,
        "missed": checks.missed,
        "joins": get(&c.joins),
        "leaves": get(&c.leaves),
        "unclean_leaves": checks.unclean_leaves,
        "fds_new": checks.fds_new,
        "connect_failures": get(&c.connect_failures),
        "dropped": checks.dropped,
        "error_messages": checks.error_messages,
        "taps": get(&c.taps),
        "acks": get(&c.acks),
        "ack_violations": checks.ack_violations,
        "unacked": unacked,
        "slow_pauses": get(&c.slow_pauses),
        "slow_dropped": get(&c.slow_dropped),
        "floods": checks.floods,
        "floods_closed": get(&c.floods_closed),
        "floods_unclosed": checks.floods_unclosed,
    });
    Ok(SoakReport {
        duration,
        hearts: args.soak_hearts,
        rooms,
        samples,
        fds_baseline,
        fds_after,
        counters,
        verdict,
    })
}

/// The loopback address `127.0.0.<n>` (clamped to 1-254).
fn source(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n.clamp(1, 254) as u8))
}

impl Sample {
    fn line(&self) -> String {
        format!(
            "soak [{:>6.0}s] rss {:>7.2} MiB (anon {:.2})  fds {:>4}  tick p99 {:>6.1} ms  max {:>6.1} ms  missed {}  hearts {}  joins {} leaves {}  acks {}  floods closed {}  slow dropped {}  server cpu {:.0}%  load {:.1}",
            self.t_s,
            self.rss_bytes / 1024.0 / 1024.0,
            self.rss_anon_bytes / 1024.0 / 1024.0,
            self.fds,
            self.tick_p99_ms,
            self.tick_max_ms,
            self.missed,
            self.hearts,
            self.joins,
            self.leaves,
            self.acks,
            self.floods_closed,
            self.slow_dropped,
            self.server_cpu * 100.0,
            self.load
        )
    }
}

/// The counts the verdict looks at, besides the samples and the love.
#[derive(Debug, Clone, Default)]
struct Checks {
    /// Every client ended within its time once told to leave.
    all_left: bool,
    fds_baseline: usize,
    fds_after: usize,
    /// What the descriptors open at the end and not before point at.
    fds_new: Vec<String>,
    missed: u64,
    ticks: u64,
    dropped: u64,
    unclean_leaves: u64,
    error_messages: u64,
    ack_violations: u64,
    unacked: u64,
    floods: u64,
    floods_unclosed: u64,
    /// Lines of the server's log that mention a panic, if it was scanned.
    panics: Option<Vec<String>>,
}

/// PASS or FAIL, with the reasons and the figures behind them.
#[derive(Debug, Clone, serde::Serialize)]
struct Verdict {
    /// Why it failed; empty when it passed.
    failures: Vec<String>,
    /// RSS growth (fraction) from the end of the warm-up to the end.
    rss_growth: Option<f64>,
    /// The seconds the RSS growth is measured from and to.
    rss_window_s: Option<(f64, f64)>,
    /// Whether the server's log was scanned.
    log_scanned: bool,
}

impl Verdict {
    fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Judges a run whose RSS growth is measured from the end of `warm_up`.
    fn judge(samples: &[Sample], warm_up: Duration, rooms: &[RoomLove], c: &Checks) -> Self {
        let mut failures = Vec::new();
        let start_s = warm_up.as_secs_f64();
        // The first sample at or after the warm-up's end, and the last one.
        let from = samples.iter().find(|s| s.t_s >= start_s - 1.0);
        let to = samples.last();
        let (rss_growth, rss_window_s) = match (from, to) {
            (Some(from), Some(to)) if to.t_s > from.t_s && from.rss_bytes > 0.0 => {
                (Some((to.rss_bytes - from.rss_bytes) / from.rss_bytes), Some((from.t_s, to.t_s)))
            }
            _ => (None, None),
        };
        match rss_growth {
            Some(g) if g >= RSS_GROWTH_LIMIT => failures.push(format!(
                "RSS grew {:.2} % from {:.0} s to the end (limit {:.0} %)",
                g * 100.0,
                start_s,
                RSS_GROWTH_LIMIT * 100.0
            )),
            Some(_) => {}
            None => failures.push("too few samples to measure RSS growth".to_owned()),
        }
        if !c.all_left {
            failures.push("not every client ended once told to leave".to_owned());
        }
        if c.fds_after > c.fds_baseline {
            failures.push(format!(
                "the server holds {} descriptors after everyone left, {} before the run (new: {})",
                c.fds_after,
                c.fds_baseline,
                c.fds_new.join(", ")
            ));
        }
        if c.ticks == 0 {
            failures.push("the well-behaved hearts received no tick".to_owned());
        }
        if c.missed > 0 {
            failures.push(format!("well-behaved hearts missed {} ticks", c.missed));
        }
        if c.dropped > 0 {
            failures.push(format!("the server dropped {} well-behaved hearts", c.dropped));
        }
        if c.unclean_leaves > 0 {
            failures.push(format!(
                "{} leaves were not answered with the server's close",
                c.unclean_leaves
            ));
        }
        if c.error_messages > 0 {
            failures.push(format!("well-behaved hearts were sent {} errors", c.error_messages));
        }
        if c.ack_violations > 0 {
            failures.push(format!("{} love acks out of order or repeated", c.ack_violations));
        }
        if c.unacked > 0 {
            failures.push(format!("{} love taps never acknowledged", c.unacked));
        }
        for room in rooms {
            if room.after != room.before + room.acked {
                failures.push(format!(
                    "room {} holds {} love, expected {} before + {} acknowledged",
                    room.room, room.after, room.before, room.acked
                ));
            }
        }
        if c.floods_unclosed > 0 {
            failures.push(format!(
                "{} of {} floods did not end with a 1008 close",
                c.floods_unclosed, c.floods
            ));
        }
        if let Some(panics) = &c.panics
            && !panics.is_empty()
        {
            failures.push(format!("the server's log mentions a panic: {}", panics[0]));
        }
        Self { failures, rss_growth, rss_window_s, log_scanned: c.panics.is_some() }
    }

    fn line(&self) -> String {
        if self.passed() {
            let growth =
                self.rss_growth.map_or("n/a".to_owned(), |g| format!("{:+.2} %", g * 100.0));
            format!(
                "soak PASS: RSS growth {growth}, descriptors back to baseline, no tick lost, every tap acked once{}",
                if self.log_scanned { ", no panic in the log" } else { "" }
            )
        } else {
            format!("soak FAIL: {}", self.failures.join("; "))
        }
    }
}

/// The lines of `path` that mention a panic (case-insensitive).
fn panics_in(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| line.to_ascii_lowercase().contains("panic"))
        .map(str::to_owned)
        .collect())
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Connects from `source` (with a receive buffer of `recv_buffer` bytes if
/// given), upgrades, and reads the welcome; the socket and the report
/// interval. `None` (counted) if any step fails.
async fn connect(
    url: &str,
    server: SocketAddr,
    source: IpAddr,
    recv_buffer: Option<u32>,
    counters: &Counters,
) -> Option<(Socket, u64)> {
    let attempt = async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::new(source, 0)).ok()?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).ok()?;
        }
        let stream = socket.connect(server).await.ok()?;
        let _ = stream.set_nodelay(true);
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (mut socket, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await.ok()?;
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame.ok()? {
                return match ServerMessage::parse(text.as_str()) {
                    Ok(ServerMessage::Welcome(welcome)) => Some((socket, welcome.report_ms)),
                    _ => None,
                };
            }
        }
        None
    };
    let connected = tokio::time::timeout(Duration::from_secs(30), attempt).await.ok().flatten();
    if connected.is_none() {
        Counters::add(&counters.connect_failures, 1);
    }
    connected
}

/// Sends our close and waits (up to 5 s) for the server's; whether it came.
async fn close(socket: &mut Socket) -> bool {
    if socket.close(None).await.is_err() {
        return false;
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(_)) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// The room's durable love total, as a newcomer's first consensus says.
async fn room_love(setup: &Setup, room: usize) -> anyhow::Result<u64> {
    let counters = Counters::default();
    let url = setup.url(room, &format!("soak-observer-{room}"));
    let (mut socket, _) = connect(&url, setup.server, source(1), None, &counters)
        .await
        .with_context(|| format!("cannot join {url} to read its love"))?;
    let love = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(frame)) = socket.next().await {
            if let Message::Text(text) = frame
                && let Ok(ServerMessage::Consensus(c)) = ServerMessage::parse(text.as_str())
            {
                return Some(c.love);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .with_context(|| format!("no consensus from {url}"))?;
    close(&mut socket).await;
    Ok(love)
}

/// A well-behaved heart: its identity and its love ledger, which outlive
/// its connections.
struct Heart {
    client_id: String,
    room: usize,
    source: IpAddr,
    /// Its cumulative taps sent.
    sent: u64,
    /// The highest tap acknowledged.
    acked: u64,
    /// The room total in its last ack (totals never go down).
    last_total: u64,
    rng: fastrand::Rng,
}

/// How a heart's connection ended.
enum Left {
    /// It left by itself (or was told to stop), with its taps acked.
    ByItself,
    /// The server closed or dropped it.
    Dropped,
}

impl Heart {
    /// Joins, stays a while, leaves, comes back, … until `stop`; then
    /// leaves for good once every tap it sent is acknowledged.
    async fn run(
        mut self,
        setup: Arc<Setup>,
        counters: Arc<Counters>,
        mut stop: watch::Receiver<bool>,
        mut first: bool,
    ) -> Self {
        let url = setup.url(self.room, &self.client_id);
        // Once stopping, a heart still owing acks has this long to get them.
        let mut last_chance: Option<Instant> = None;
        loop {
            let stopping = *stop.borrow();
            if stopping {
                if self.sent == self.acked {
                    break;
                }
                let deadline = *last_chance.get_or_insert_with(|| Instant::now() + ACK_PATIENCE);
                if Instant::now() >= deadline {
                    break;
                }
            }
            let Some((socket, report_ms)) =
                connect(&url, setup.server, self.source, None, &counters).await
            else {
                sleep(Duration::from_secs(1)).await;
                continue;
            };
            Counters::add(&counters.joins, 1);
            Counters::add(&counters.hearts, 1);
            // The first stay is spread over the whole mean, so the first
            // leaves do not all come at once.
            let stay = if first {
                setup.stay.mul_f64(self.rng.f64() * 2.0)
            } else {
                setup.stay.mul_f64(-(1.0 - self.rng.f64()).ln()).max(Duration::from_secs(5))
            };
            first = false;
            let left = self.session(socket, report_ms, stay, &setup, &counters, &mut stop).await;
            counters.hearts.fetch_sub(1, Ordering::Relaxed);
            if matches!(left, Left::ByItself) {
                Counters::add(&counters.leaves, 1);
            }
            if *stop.borrow() {
                continue;
            }
            let away = Duration::from_secs_f64(2.0 + 8.0 * self.rng.f64());
            tokio::select! {
                () = sleep(away) => {}
                _ = stop.changed() => {}
            }
        }
        self
    }

    /// One connection: reports, clock syncs and taps until `stay` is over
    /// or `stop`, then waits for outstanding acks and closes.
    async fn session(
        &mut self,
        mut socket: Socket,
        report_ms: u64,
        stay: Duration,
        setup: &Setup,
        counters: &Counters,
        stop: &mut watch::Receiver<bool>,
    ) -> Left {
        let bpm = shared::client::RESTING_BPM;
        let start_phase = self.rng.f64();
        let epoch = now_ms();
        let period = Duration::from_millis(report_ms.max(100));
        let mut reports =
            tokio::time::interval_at(Instant::now() + period.mul_f64(start_phase), period);
        reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut syncs = tokio::time::interval_at(
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        syncs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let tapping = setup.taps_per_s > 0.0;
        let mut next_tap = Instant::now() + self.tap_gap(setup.taps_per_s);
        let leave_at = Instant::now() + stay;
        let mut leaving: Option<Instant> = None;
        let mut pending: VecDeque<u64> = VecDeque::new();
        let mut last_seq = None;
        // Taps sent on a connection that ended before their ack: resend the
        // cumulative count; the server counts only what it has not yet.
        if self.sent > self.acked {
            pending.push_back(self.sent);
            let love = ClientMessage::Love { seq: self.sent, epoch: 0 };
            if socket.send(Message::text(love.to_json())).await.is_err() {
                Counters::add(&counters.dropped, 1);
                return Left::Dropped;
            }
        }
        if *stop.borrow() {
            leaving = Some(Instant::now() + ACK_PATIENCE);
        }
        loop {
            if leaving.is_some() && pending.is_empty() {
                break;
            }
            let sent = tokio::select! {
                () = sleep_until(leave_at), if leaving.is_none() => {
                    leaving = Some(Instant::now() + ACK_PATIENCE);
                    Ok(())
                }
                _ = stop.changed(), if leaving.is_none() => {
                    leaving = Some(Instant::now() + ACK_PATIENCE);
                    Ok(())
                }
                () = sleep_until(leaving.unwrap_or(leave_at)), if leaving.is_some() => {
                    // The acks did not come: leave anyway, owing them.
                    break;
                }
                _ = reports.tick(), if leaving.is_none() => {
                    let at = now_ms();
                    let phase = shared::project(start_phase, bpm, epoch, at);
                    let report = ClientMessage::Phase(PhaseReport { phase, bpm, at });
                    socket.send(Message::text(report.to_json())).await
                }
                _ = syncs.tick(), if leaving.is_none() => {
                    let sync = ClientMessage::Time { t0: now_ms() };
                    socket.send(Message::text(sync.to_json())).await
                }
                () = sleep_until(next_tap), if tapping && leaving.is_none() => {
                    next_tap += self.tap_gap(setup.taps_per_s);
                    self.sent += 1;
                    Counters::add(&counters.taps, 1);
                    pending.push_back(self.sent);
                    let love = ClientMessage::Love { seq: self.sent, epoch: 0 };
                    socket.send(Message::text(love.to_json())).await
                }
                frame = socket.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.map_or(1005, |f| u16::from(f.code));
                            eprintln!("soak: heart {} closed by the server with {code}", self.client_id);
                            Counters::add(&counters.dropped, 1);
                            return Left::Dropped;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(error)) => {
                            eprintln!("soak: heart {} lost its connection: {error}", self.client_id);
                            Counters::add(&counters.dropped, 1);
                            return Left::Dropped;
                        }
                        None => {
                            eprintln!("soak: heart {}'s connection ended", self.client_id);
                            Counters::add(&counters.dropped, 1);
                            return Left::Dropped;
                        }
                    };
                    match ServerMessage::parse(text.as_str()) {
                        Ok(ServerMessage::Consensus(c)) => counters.tick(&mut last_seq, c.seq, c.at),
                        Ok(ServerMessage::LoveAck(ack)) => self.acknowledged(&mut pending, ack, counters),
                        Ok(ServerMessage::Error(error)) => {
                            eprintln!("soak: heart {} was sent {:?}: {}", self.client_id, error.code, error.message);
                            Counters::add(&counters.error_messages, 1);
                        }
                        Ok(ServerMessage::LoveFolded(folded)) => {
                            // Ledgers fold after `--love-retention` (days):
                            // never within a soak.
                            eprintln!("soak: heart {}'s ledger was folded: {folded:?}", self.client_id);
                            Counters::add(&counters.error_messages, 1);
                        }
                        Ok(ServerMessage::Time(_) | ServerMessage::Welcome(_)) => {}
                        Err(error) => {
                            eprintln!("soak: heart {} cannot read {text}: {error}", self.client_id);
                            Counters::add(&counters.error_messages, 1);
                        }
                    }
                    Ok(())
                }
            };
            if sent.is_err() {
                eprintln!("soak: heart {} cannot send", self.client_id);
                Counters::add(&counters.dropped, 1);
                return Left::Dropped;
            }
        }
        if !close(&mut socket).await {
            Counters::add(&counters.unclean_leaves, 1);
        }
        Left::ByItself
    }

    /// The time to the next tap: exponential, `taps_per_s` on average.
    fn tap_gap(&mut self, taps_per_s: f64) -> Duration {
        let mean = 1.0 / taps_per_s.max(1e-6);
        Duration::from_secs_f64((-(1.0 - self.rng.f64()).ln() * mean).min(3600.0))
    }

    /// An ack must answer the oldest outstanding `love`, and the room total
    /// it carries never goes down.
    fn acknowledged(
        &mut self,
        pending: &mut VecDeque<u64>,
        ack: shared::LoveAck,
        counters: &Counters,
    ) {
        Counters::add(&counters.acks, 1);
        match pending.pop_front() {
            Some(seq) if seq == ack.seq && ack.total >= self.last_total => {
                self.acked = self.acked.max(seq);
                self.last_total = ack.total;
            }
            expected => {
                eprintln!(
                    "soak: heart {} got an ack for {} (total {}), expected one for {expected:?} (total at least {})",
                    self.client_id, ack.seq, ack.total, self.last_total
                );
                Counters::add(&counters.ack_violations, 1);
            }
        }
    }
}

/// A client on a stalled link: reads for 20-40 s, then reads nothing for
/// 15-45 s, with a tiny receive buffer so the server's writes back up.
async fn slow_reader(
    setup: Arc<Setup>,
    k: usize,
    source: IpAddr,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = fastrand::Rng::with_seed(0x5_10e ^ k as u64);
    let url = setup.url(k % setup.rooms.len(), &format!("soak-slow-{k:03}"));
    while !*stop.borrow() {
        let Some((mut socket, _)) =
            connect(&url, setup.server, source, Some(2048), &counters).await
        else {
            sleep(Duration::from_secs(2)).await;
            continue;
        };
        'connected: loop {
            let reading = sleep(Duration::from_secs_f64(20.0 + 20.0 * rng.f64()));
            tokio::pin!(reading);
            loop {
                tokio::select! {
                    () = &mut reading => break,
                    _ = stop.changed() => {
                        close(&mut socket).await;
                        return;
                    }
                    frame = socket.next() => match frame {
                        Some(Ok(Message::Close(_)) | Err(_)) | None => {
                            Counters::add(&counters.slow_dropped, 1);
                            break 'connected;
                        }
                        Some(Ok(_)) => {}
                    }
                }
            }
            Counters::add(&counters.slow_pauses, 1);
            tokio::select! {
                () = sleep(Duration::from_secs_f64(15.0 + 30.0 * rng.f64())) => {}
                _ = stop.changed() => {
                    close(&mut socket).await;
                    return;
                }
            }
        }
        tokio::select! {
            () = sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// A client that sends `FLOOD_RATE` messages a second until the server
/// closes it, which must be with 1008 within `FLOOD_PATIENCE`; it comes back
/// 20 s later.
async fn flooder(
    setup: Arc<Setup>,
    k: usize,
    source: IpAddr,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let url = setup.url(k % setup.rooms.len(), &format!("soak-flood-{k:03}"));
    while !*stop.borrow() {
        let Some((mut socket, _)) = connect(&url, setup.server, source, None, &counters).await
        else {
            sleep(Duration::from_secs(2)).await;
            continue;
        };
        Counters::add(&counters.floods, 1);
        let mut burst = tokio::time::interval(Duration::from_secs_f64(1.0 / FLOOD_RATE));
        burst.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let patience = sleep(FLOOD_PATIENCE);
        tokio::pin!(patience);
        let closed_with = loop {
            tokio::select! {
                _ = stop.changed() => {
                    // Told to stop mid-flood: this flood is not judged.
                    counters.floods.fetch_sub(1, Ordering::Relaxed);
                    close(&mut socket).await;
                    return;
                }
                () = &mut patience => break None,
                _ = burst.tick() => {
                    let flood = ClientMessage::Time { t0: now_ms() };
                    if socket.send(Message::text(flood.to_json())).await.is_err() {
                        // The server has closed: its close frame may still
                        // be waiting to be read.
                        break tokio::time::timeout(Duration::from_secs(2), close_code(&mut socket))
                            .await
                            .ok()
                            .flatten();
                    }
                }
                frame = socket.next() => match frame {
                    Some(Ok(Message::Close(frame))) => {
                        break Some(frame.map_or(1005, |f| u16::from(f.code)));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break None,
                }
            }
        };
        if closed_with == Some(1008) {
            Counters::add(&counters.floods_closed, 1);
        } else {
            eprintln!("soak: a flood ended with {closed_with:?} instead of a 1008 close");
            Counters::add(&counters.floods_unclosed, 1);
            close(&mut socket).await;
        }
        drop(socket);
        tokio::select! {
            () = sleep(Duration::from_secs(20)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The code of the close frame still to be read on `socket`, if any.
async fn close_code(socket: &mut Socket) -> Option<u16> {
    while let Some(frame) = socket.next().await {
        if let Message::Close(frame) = frame.ok()? {
            return Some(frame.map_or(1005, |f| u16::from(f.code)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, rss_mib: f64) -> Sample {
        Sample {
            t_s,
            rss_bytes: rss_mib * 1024.0 * 1024.0,
            rss_anon_bytes: rss_mib * 1024.0 * 1024.0 / 2.0,
            rss_file_bytes: rss_mib * 1024.0 * 1024.0 / 2.0,
            fds: 20,
            tick_p99_ms: 5.0,
            tick_max_ms: 9.0,
            missed: 0,
            hearts: 300,
            joins: 300,
            leaves: 0,
            acks: 0,
            floods_closed: 0,
            slow_dropped: 0,
            server_cpu: 0.1,
            load: 1.0,
        }
    }

    fn healthy() -> Checks {
        Checks {
            all_left: true,
            fds_baseline: 12,
            fds_after: 12,
            ticks: 1000,
            floods: 2,
            panics: Some(Vec::new()),
            ..Checks::default()
        }
    }

    fn love(after: u64, acked: u64) -> RoomLove {
        RoomLove { room: "soak-1-0".into(), before: 0, after, acked }
    }

    /// An hour sampled each minute, RSS rising `early` MiB a minute for the
    /// first ten minutes and `late` after.
    fn hour(early: f64, late: f64) -> Vec<Sample> {
        (1..=60)
            .map(|m| {
                let m = f64::from(m);
                let rss = 20.0 + early * m.min(10.0) + late * (m - 10.0).max(0.0);
                sample(m * 60.0, rss)
            })
            .collect()
    }

    #[test]
    fn rss_growth_is_measured_from_minute_ten_of_an_hour() {
        // Growth in the warm-up does not count: 20 → 30 MiB, then flat.
        let verdict =
            Verdict::judge(&hour(1.0, 0.0), Duration::from_secs(600), &[love(5, 5)], &healthy());
        assert!(verdict.passed(), "{:?}", verdict.failures);
        assert_eq!(verdict.rss_window_s, Some((600.0, 3600.0)));
        assert_eq!(verdict.rss_growth, Some(0.0));
        // 30 MiB at minute 10, then +0.01 MiB a minute: 0.5 MiB is 1.7 %.
        let verdict =
            Verdict::judge(&hour(1.0, 0.01), Duration::from_secs(600), &[love(5, 5)], &healthy());
        assert!(!verdict.passed());
        assert!(verdict.failures[0].starts_with("RSS grew 1.67 %"), "{:?}", verdict.failures);
    }

    #[test]
    fn a_short_soak_measures_rss_after_its_warm_up() {
        let samples: Vec<Sample> =
            (1..=10).map(|k| sample(f64::from(k) * 9.0, 20.0 + 0.001 * f64::from(k))).collect();
        let verdict = Verdict::judge(&samples, Duration::from_secs(15), &[], &healthy());
        assert!(verdict.passed(), "{:?}", verdict.failures);
        assert_eq!(verdict.rss_window_s, Some((18.0, 90.0)));
    }

    #[test]
    fn every_broken_promise_is_a_reason_to_fail() {
        let checks = Checks {
            all_left: false,
            fds_after: 15,
            fds_new: vec!["socket:[4242]".into()],
            missed: 3,
            dropped: 1,
            unclean_leaves: 6,
            error_messages: 2,
            ack_violations: 1,
            unacked: 4,
            floods_unclosed: 1,
            panics: Some(vec!["thread 'tokio' panicked at src/room.rs".into()]),
            ..healthy()
        };
        let verdict =
            Verdict::judge(&hour(0.0, 0.0), Duration::from_secs(600), &[love(7, 5)], &checks);
        let line = verdict.line();
        for expected in [
            "not every client ended",
            "15 descriptors after everyone left, 12 before the run (new: socket:[4242])",
            "missed 3 ticks",
            "dropped 1 well-behaved",
            "6 leaves were not answered",
            "sent 2 errors",
            "1 love acks out of order",
            "4 love taps never acknowledged",
            "holds 7 love, expected 0 before + 5 acknowledged",
            "1 of 2 floods",
            "mentions a panic",
        ] {
            assert!(line.contains(expected), "{expected:?} not in {line}");
        }
        assert!(line.starts_with("soak FAIL: "));
        assert_eq!(verdict.failures.len(), 11);
    }

    #[test]
    fn a_healthy_run_passes_and_says_so() {
        let verdict =
            Verdict::judge(&hour(0.5, 0.001), Duration::from_secs(600), &[love(9, 9)], &healthy());
        assert!(verdict.passed(), "{:?}", verdict.failures);
        assert!(verdict.line().starts_with("soak PASS: RSS growth +0.20 %"), "{}", verdict.line());
        assert!(verdict.line().ends_with("no panic in the log"));
    }

    #[test]
    fn a_run_without_ticks_or_samples_fails() {
        let checks = Checks { ticks: 0, ..healthy() };
        let verdict = Verdict::judge(&[], Duration::from_secs(10), &[], &checks);
        assert_eq!(verdict.failures.len(), 2, "{:?}", verdict.failures);
    }

    #[test]
    fn panics_are_found_in_a_log_file() {
        let dir = std::env::temp_dir().join(format!("soak-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("server.log");
        std::fs::write(&log, "INFO listening\nthread 'main' PANICKED at x\nINFO bye\n")
            .expect("write");
        assert_eq!(panics_in(&log).expect("reads"), vec!["thread 'main' PANICKED at x"]);
        std::fs::write(&log, "INFO listening\n").expect("write");
        assert!(panics_in(&log).expect("reads").is_empty());
        assert!(panics_in(&dir.join("missing.log")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missed_ticks_are_the_gaps_in_seq() {
        let counters = Counters::default();
        let mut last = None;
        for seq in [7, 7, 8, 9, 12, 13] {
            counters.tick(&mut last, seq, now_ms());
        }
        assert_eq!(Counters::get(&counters.missed), 2);
        assert_eq!(Counters::get(&counters.ticks), 6);
        let (delays, missed) = counters.take_period();
        assert_eq!((delays.count(), missed), (6, 2));
        let (delays, missed) = counters.take_period();
        assert_eq!((delays.count(), missed), (0, 0), "a new period starts empty");
        assert_eq!(Counters::get(&counters.missed), 2, "the run's total stays");
    }
}
