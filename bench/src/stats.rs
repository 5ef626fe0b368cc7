//! Shared measurements: a histogram every client task records into
//! concurrently, and counters; their snapshots, which generator processes
//! hand to the bench that spawned them and which merge bucket by bucket
//! (never by averaging percentiles); with several instances, what the
//! clients of each received per seq, for the cross-instance [`Agreement`];
//! and a server process's CPU time and memory, read from `/proc` the same
//! way for heartsync and for the floor.
//!
//! Written here rather than taken from `hdrhistogram`: thousands of tasks
//! record at once, and hdrhistogram needs one histogram per recorder
//! (tens of KiB each, times 10,000 clients) or a lock. A fixed array of
//! atomic buckets at 0.1 ms resolution is lock-free, 160 KiB in all, and
//! exact enough for millisecond percentiles.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket width, in milliseconds.
const RESOLUTION_MS: f64 = 0.1;
/// Buckets up to 60 s; slower samples land in the last one.
const BUCKETS: usize = 600_000;

/// A lock-free histogram of millisecond values.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The largest value seen, in microseconds.
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records a value in milliseconds (negative values count as 0).
    pub fn record(&self, ms: f64) {
        let ms = ms.max(0.0);
        let index = ((ms / RESOLUTION_MS) as usize).min(BUCKETS - 1);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max((ms * 1000.0) as u64, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The largest value recorded, in milliseconds.
    pub fn max(&self) -> f64 {
        self.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// The value below which `q` (0-1) of the records fall, in milliseconds
    /// (the upper edge of its bucket); 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return ((i + 1) as f64 * RESOLUTION_MS).min(self.max().max(RESOLUTION_MS));
            }
        }
        self.max()
    }

    /// The non-empty buckets and the maximum, to send to another process.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                (n > 0).then_some((i as u32, n))
            })
            .collect();
        HistogramSnapshot { buckets, max_us: self.max_us.load(Ordering::Relaxed) }
    }

    /// Adds another histogram's records to this one, bucket by bucket.
    pub fn add(&self, other: &HistogramSnapshot) {
        for &(index, n) in &other.buckets {
            let index = (index as usize).min(BUCKETS - 1);
            self.buckets[index].fetch_add(n, Ordering::Relaxed);
            self.count.fetch_add(n, Ordering::Relaxed);
        }
        self.max_us.fetch_max(other.max_us, Ordering::Relaxed);
    }
}

/// A histogram's records, sparse: `(bucket, count)` for every non-empty
/// bucket, and the maximum in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    buckets: Vec<(u32, u64)>,
    max_us: u64,
}

/// Everything the clients count.
#[derive(Default)]
pub struct Stats {
    /// TCP connect + upgrade + welcome, per client.
    pub connect_ms: Histogram,
    /// Receipt time (when the generator read it) minus the consensus `at`,
    /// during the measured window.
    pub tick_delay_ms: Histogram,
    /// Arrival time (when the kernel received it in the client's socket)
    /// minus the consensus `at`, during the measured window.
    pub arrival_delay_ms: Histogram,
    /// Clients connected now.
    pub connected: AtomicU64,
    /// Clients that failed to connect.
    pub connect_failures: AtomicU64,
    /// Upgrades the server refused with an HTTP status.
    pub refused: AtomicU64,
    /// The last HTTP status of a refusal.
    pub last_refusal: AtomicU64,
    /// Consensus messages received during the measured window.
    pub consensus_received: AtomicU64,
    /// All messages received, ever.
    pub messages_received: AtomicU64,
    /// From sending love to its durable ack, during the measured window.
    pub love_ack_ms: Histogram,
    /// Love taps acknowledged during the measured window.
    pub taps_acked: AtomicU64,
    /// Ticks missed (gaps in `seq`) during the measured window.
    pub ticks_missed: AtomicU64,
    /// Error messages received and connections closed by the server.
    pub errors: AtomicU64,
    /// Connections the server closed, by close code (index: code − 1000,
    /// clamped to the array).
    pub closes: [AtomicU64; 16],
    /// With several `--url`s: what each instance's clients received per
    /// seq during the measured window.
    pub agreement: Agreement,
}

impl Stats {
    /// Counts a close with `code`.
    pub fn closed(&self, code: u16) {
        let index = usize::from(code.saturating_sub(1000)).min(self.closes.len() - 1);
        self.closes[index].fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The closes seen, as `(code, count)`.
    pub fn closes(&self) -> Vec<(u16, u64)> {
        self.closes
            .iter()
            .enumerate()
            .map(|(i, c)| (1000 + i as u16, c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Everything counted so far, to send to another process.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connect_ms: self.connect_ms.snapshot(),
            tick_delay_ms: self.tick_delay_ms.snapshot(),
            arrival_delay_ms: self.arrival_delay_ms.snapshot(),
            love_ack_ms: self.love_ack_ms.snapshot(),
            connected: load(&self.connected),
            connect_failures: load(&self.connect_failures),
            refused: load(&self.refused),
            last_refusal: load(&self.last_refusal),
            consensus_received: load(&self.consensus_received),
            messages_received: load(&self.messages_received),
            taps_acked: load(&self.taps_acked),
            ticks_missed: load(&self.ticks_missed),
            errors: load(&self.errors),
            closes: self.closes.iter().map(load).collect(),
            agreement: self.agreement.snapshot(),
        }
    }

    /// Adds another process's counts to these: histograms bucket by bucket,
    /// counters summed.
    pub fn add(&self, other: &StatsSnapshot) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        self.connect_ms.add(&other.connect_ms);
        self.tick_delay_ms.add(&other.tick_delay_ms);
        self.arrival_delay_ms.add(&other.arrival_delay_ms);
        self.love_ack_ms.add(&other.love_ack_ms);
        add(&self.connected, other.connected);
        add(&self.connect_failures, other.connect_failures);
        add(&self.refused, other.refused);
        if other.last_refusal != 0 {
            self.last_refusal.store(other.last_refusal, Ordering::Relaxed);
        }
        add(&self.consensus_received, other.consensus_received);
        add(&self.messages_received, other.messages_received);
        add(&self.taps_acked, other.taps_acked);
        add(&self.ticks_missed, other.ticks_missed);
        add(&self.errors, other.errors);
        for (mine, theirs) in self.closes.iter().zip(&other.closes) {
            add(mine, *theirs);
        }
        self.agreement.add(&other.agreement);
    }
}

/// [`Stats`] as plain numbers (see [`Stats::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    connect_ms: HistogramSnapshot,
    tick_delay_ms: HistogramSnapshot,
    arrival_delay_ms: HistogramSnapshot,
    love_ack_ms: HistogramSnapshot,
    connected: u64,
    connect_failures: u64,
    refused: u64,
    last_refusal: u64,
    consensus_received: u64,
    messages_received: u64,
    taps_acked: u64,
    ticks_missed: u64,
    errors: u64,
    closes: Vec<u64>,
    /// Absent from a generator that compares nothing.
    #[serde(default)]
    agreement: AgreementSnapshot,
}

/// One consensus exactly as a client received it: the floats as their bits,
/// so two instances agree only if they broadcast the very same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    phase: u64,
    coherence: u64,
    bpm: u64,
    hearts: u32,
    voters: u32,
    love: u64,
}

impl Seen {
    /// The consensus fields compared between instances.
    pub fn new(phase: f64, coherence: f64, bpm: f64, hearts: u32, voters: u32, love: u64) -> Self {
        Self {
            phase: phase.to_bits(),
            coherence: coherence.to_bits(),
            bpm: bpm.to_bits(),
            hearts,
            voters,
            love,
        }
    }
}

/// Whether clients on different instances got the same consensus for the
/// same `seq`. Every client records what it received; the first record of
/// each (seq, instance) is kept and every later one of the same instance is
/// checked against it (one instance frames each tick once, so they never
/// differ). The instances are compared at the end, seq by seq
/// ([`Agreement::summary`]), so records from several generator processes
/// merge before anything is compared.
#[derive(Default)]
pub struct Agreement {
    /// (seq, instance index in `--url`) → what its first client received.
    /// A lock, not atomics: a few hundred entries, taken once per received
    /// consensus and only while measuring several instances.
    seen: Mutex<HashMap<(u64, usize), Seen>>,
    /// Records that differed from the first of the same seq and instance.
    within_instance: AtomicU64,
}

/// [`Agreement`]'s records, to send to another process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgreementSnapshot {
    seen: Vec<(u64, usize, Seen)>,
    within_instance: u64,
}

/// The cross-instance agreement of a run: 0 differing is the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AgreementSummary {
    /// Seqs that clients on at least two instances received.
    pub seqs_compared: u64,
    /// Of those, seqs where two instances differed in ψ, R, bpm, hearts or
    /// voters.
    pub seqs_differing: u64,
    /// The largest |Δψ| between two instances' consensus of one seq, in
    /// beats (shortest way round the circle).
    pub max_dphase: f64,
    /// The largest |ΔR|.
    pub max_dcoherence: f64,
    /// The largest |Δbpm|.
    pub max_dbpm: f64,
    /// The largest difference in hearts.
    pub max_dhearts: u32,
    /// The largest difference in voters.
    pub max_dvoters: u32,
    /// The largest difference in the love total (reported apart: an
    /// instance raises its own total when it acknowledges taps).
    pub max_dlove: u64,
    /// Clients of one instance that received another consensus for a seq
    /// than that instance's first client did (never expected).
    pub within_instance: u64,
}

impl Agreement {
    /// Records that a client of instance `instance` received `seen` for `seq`.
    pub fn record(&self, instance: usize, seq: u64, seen: Seen) {
        let mut records = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = *records.entry((seq, instance)).or_insert(seen);
        drop(records);
        if first != seen {
            self.within_instance.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every record, to send to another process.
    pub fn snapshot(&self) -> AgreementSnapshot {
        let records = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        AgreementSnapshot {
            seen: records.iter().map(|(&(seq, instance), &seen)| (seq, instance, seen)).collect(),
            within_instance: self.within_instance.load(Ordering::Relaxed),
        }
    }

    /// Adds another process's records to these.
    pub fn add(&self, other: &AgreementSnapshot) {
        self.within_instance.fetch_add(other.within_instance, Ordering::Relaxed);
        for &(seq, instance, seen) in &other.seen {
            self.record(instance, seq, seen);
        }
    }

    /// Compares the instances seq by seq: every pair of instances that
    /// received the same seq.
    pub fn summary(&self) -> AgreementSummary {
        let records = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut by_seq: BTreeMap<u64, Vec<Seen>> = BTreeMap::new();
        for (&(seq, _), &seen) in records.iter() {
            by_seq.entry(seq).or_default().push(seen);
        }
        drop(records);
        let mut summary = AgreementSummary {
            within_instance: self.within_instance.load(Ordering::Relaxed),
            ..AgreementSummary::default()
        };
        for seens in by_seq.values().filter(|s| s.len() > 1) {
            summary.seqs_compared += 1;
            let mut differs = false;
            for (i, a) in seens.iter().enumerate() {
                for b in &seens[i + 1..] {
                    let float = |bits: u64| f64::from_bits(bits);
                    let dphase = shared::phase::difference(float(a.phase), float(b.phase)).abs();
                    let dcoherence = (float(a.coherence) - float(b.coherence)).abs();
                    let dbpm = (float(a.bpm) - float(b.bpm)).abs();
                    summary.max_dphase = summary.max_dphase.max(dphase);
                    summary.max_dcoherence = summary.max_dcoherence.max(dcoherence);
                    summary.max_dbpm = summary.max_dbpm.max(dbpm);
                    summary.max_dhearts = summary.max_dhearts.max(a.hearts.abs_diff(b.hearts));
                    summary.max_dvoters = summary.max_dvoters.max(a.voters.abs_diff(b.voters));
                    summary.max_dlove = summary.max_dlove.max(a.love.abs_diff(b.love));
                    let (a_core, b_core) = (Seen { love: 0, ..*a }, Seen { love: 0, ..*b });
                    differs |= a_core != b_core;
                }
            }
            summary.seqs_differing += u64::from(differs);
        }
        summary
    }
}

/// A process's CPU time and memory at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User plus system time of all its threads, live and exited.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub rss_bytes: f64,
}

/// Clock ticks per second in `/proc/<pid>/stat`: `USER_HZ`, which Linux
/// fixes at 100 for user space on every architecture (reading
/// `sysconf(_SC_CLK_TCK)` would take `unsafe`, which the workspace forbids).
const USER_HZ: f64 = 100.0;

impl ProcessSample {
    /// Reads `/proc/<pid>/stat` (utime + stime) and `/proc/<pid>/status`
    /// (`VmRSS`).
    pub fn read(pid: u32) -> std::io::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        Self::parse(&stat, &status).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected /proc/{pid}"))
        })
    }

    fn parse(stat: &str, status: &str) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces:
        // count fields from after its closing parenthesis, where field 3
        // (state) is the first; utime and stime are fields 14 and 15.
        let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
        let utime: f64 = fields.nth(11)?.parse().ok()?;
        let stime: f64 = fields.next()?.parse().ok()?;
        let rss_kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(Self { cpu_seconds: (utime + stime) / USER_HZ, rss_bytes: rss_kib * 1024.0 })
    }
}

/// The process listening on `addr` on this machine, found the way `ss -p`
/// finds it: the listening socket's inode in `/proc/net/tcp{,6}`, then the
/// process holding a descriptor to that inode. `None` if there is none, or
/// it cannot be seen.
pub fn listening_pid(addr: SocketAddr) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|table| listening_inode(&table, addr.port()))?;
    let target = format!("socket:[{inode}]");
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` table.
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit(':').next()?;
        (u16::from_str_radix(local_port, 16).ok()? == port && *fields.get(3)? == LISTEN)
            .then(|| fields.get(9)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let h = Histogram::default();
        for i in 1..=1000 {
            h.record(i as f64);
        }
        assert_eq!(h.count(), 1000);
        assert!((h.quantile(0.5) - 500.0).abs() <= 0.2, "{}", h.quantile(0.5));
        assert!((h.quantile(0.99) - 990.0).abs() <= 0.2, "{}", h.quantile(0.99));
        assert_eq!(h.max(), 1000.0);
        assert_eq!(Histogram::default().quantile(0.5), 0.0);
    }

    #[test]
    fn merged_snapshots_give_the_percentiles_of_all_records_together() {
        // Two processes with very different delays: the merged p99 must be
        // the p99 of the union, not the mean of the two p99s.
        let (fast, slow, all) = (Histogram::default(), Histogram::default(), Histogram::default());
        for i in 0..900 {
            fast.record(1.0 + i as f64 * 0.01);
            all.record(1.0 + i as f64 * 0.01);
        }
        for i in 0..100 {
            slow.record(200.0 + i as f64);
            all.record(200.0 + i as f64);
        }
        let merged = Histogram::default();
        merged.add(&fast.snapshot());
        merged.add(&slow.snapshot());
        assert_eq!(merged.count(), 1000);
        assert_eq!(merged.max(), all.max());
        for q in [0.5, 0.9, 0.95, 0.99, 1.0] {
            assert_eq!(merged.quantile(q), all.quantile(q), "q {q}");
        }
        let mean_of_p99s = (fast.quantile(0.99) + slow.quantile(0.99)) / 2.0;
        assert!((merged.quantile(0.99) - mean_of_p99s).abs() > 50.0);
    }

    #[test]
    fn stats_snapshots_survive_json_and_sum_their_counters() {
        let (a, b) = (Stats::default(), Stats::default());
        a.tick_delay_ms.record(5.0);
        a.consensus_received.fetch_add(40, Ordering::Relaxed);
        a.closed(1001);
        b.tick_delay_ms.record(7.0);
        b.consensus_received.fetch_add(2, Ordering::Relaxed);
        b.ticks_missed.fetch_add(3, Ordering::Relaxed);
        let total = Stats::default();
        for stats in [&a, &b] {
            let json = serde_json::to_string(&stats.snapshot()).expect("serializes");
            total.add(&serde_json::from_str(&json).expect("parses"));
        }
        assert_eq!(total.tick_delay_ms.count(), 2);
        assert_eq!(total.tick_delay_ms.max(), 7.0);
        assert_eq!(total.consensus_received.load(Ordering::Relaxed), 42);
        assert_eq!(total.ticks_missed.load(Ordering::Relaxed), 3);
        assert_eq!(total.closes(), vec![(1001, 1)]);
        assert_eq!(total.errors.load(Ordering::Relaxed), 1);
    }

    fn seen(phase: f64, hearts: u32) -> Seen {
        Seen::new(phase, 0.9, 60.0, hearts, hearts, 7)
    }

    #[test]
    fn agreement_compares_instances_seq_by_seq() {
        let a = Agreement::default();
        // Seq 1: three instances, the same numbers.
        for instance in 0..3 {
            a.record(instance, 1, seen(0.25, 30));
        }
        // Seq 2: instance 2 is off by 0.0001 beat and one heart.
        a.record(0, 2, seen(0.25, 30));
        a.record(1, 2, seen(0.25, 30));
        a.record(2, 2, seen(0.2501, 31));
        // Seq 3: seen by one instance only, so not compared.
        a.record(0, 3, seen(0.9, 30));
        // Seq 4: across the wrap at 0, the short way round.
        a.record(0, 4, seen(0.9999, 30));
        a.record(1, 4, seen(0.0001, 30));
        let summary = a.summary();
        assert_eq!((summary.seqs_compared, summary.seqs_differing), (3, 2));
        assert!((summary.max_dphase - 0.0002).abs() < 1e-9, "{}", summary.max_dphase);
        assert_eq!((summary.max_dhearts, summary.max_dvoters), (1, 1));
        assert_eq!((summary.max_dcoherence, summary.max_dbpm, summary.max_dlove), (0.0, 0.0, 0));
        assert_eq!(summary.within_instance, 0);
    }

    #[test]
    fn identical_broadcasts_agree_exactly_and_love_is_apart() {
        let a = Agreement::default();
        for seq in 10..20 {
            for instance in 0..3 {
                // Several clients per instance.
                a.record(instance, seq, seen(0.1 * seq as f64, 100));
                a.record(instance, seq, seen(0.1 * seq as f64, 100));
            }
        }
        a.record(1, 20, Seen::new(0.5, 0.9, 60.0, 3, 3, 7));
        a.record(2, 20, Seen::new(0.5, 0.9, 60.0, 3, 3, 9));
        let summary = a.summary();
        assert_eq!((summary.seqs_compared, summary.seqs_differing), (11, 0));
        assert_eq!(summary.max_dphase, 0.0);
        assert_eq!(summary.max_dlove, 2, "love differs, and is reported on its own");
    }

    #[test]
    fn agreement_merges_across_generator_processes() {
        // Instance 0's clients in one process, instance 1's in another: the
        // comparison happens only once both are merged.
        let (one, two) = (Stats::default(), Stats::default());
        one.agreement.record(0, 5, seen(0.5, 4));
        two.agreement.record(1, 5, seen(0.5, 4));
        two.agreement.record(1, 6, seen(0.6, 4));
        one.agreement.record(0, 6, seen(0.7, 4));
        // A client of instance 0 in the second process saw something else.
        two.agreement.record(0, 6, seen(0.6, 4));
        assert_eq!(one.agreement.summary().seqs_compared, 0);
        let total = Stats::default();
        for stats in [&one, &two] {
            let json = serde_json::to_string(&stats.snapshot()).expect("serializes");
            total.add(&serde_json::from_str(&json).expect("parses"));
        }
        let summary = total.agreement.summary();
        assert_eq!((summary.seqs_compared, summary.seqs_differing), (2, 1));
        assert!((summary.max_dphase - 0.1).abs() < 1e-9, "{}", summary.max_dphase);
        assert_eq!(summary.within_instance, 1);
    }

    #[test]
    fn proc_stat_and_status_give_cpu_seconds_and_rss() {
        let stat = "4242 (heart sync) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 130 0 0 20 0 9 0 12345 900000000 30000";
        let status = "Name:\theartsync\nVmPeak:\t  999 kB\nVmRSS:\t  120000 kB\nThreads:\t9\n";
        let sample = ProcessSample::parse(stat, status).expect("parses");
        assert_eq!(sample.cpu_seconds, 3.8);
        assert_eq!(sample.rss_bytes, 120_000.0 * 1024.0);
        let me = ProcessSample::read(std::process::id()).expect("own /proc");
        assert!(me.rss_bytes > 0.0);
    }

    #[test]
    fn the_process_listening_on_a_port_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(listening_pid(addr), Some(std::process::id()));
        drop(listener);
        assert_eq!(listening_pid(addr), None);
    }
}
