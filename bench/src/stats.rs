//! Shared measurements: a histogram every client task records into
//! concurrently, and counters.
//!
//! Written here rather than taken from `hdrhistogram`: thousands of tasks
//! record at once, and hdrhistogram needs one histogram per recorder
//! (tens of KiB each, times 10,000 clients) or a lock. A fixed array of
//! atomic buckets at 0.1 ms resolution is lock-free, 160 KiB in all, and
//! exact enough for millisecond percentiles.

use std::collections::HashMap;
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
}

/// Everything the clients count.
#[derive(Default)]
pub struct Stats {
    /// TCP connect + upgrade + welcome, per client.
    pub connect_ms: Histogram,
    /// Receipt time minus the consensus `at`, during the measured window.
    pub tick_delay_ms: Histogram,
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
    /// With several `--url`s: whether the instances agree on each tick.
    pub agreement: Agreement,
}

/// Whether clients on different instances got the same consensus for the
/// same `seq`: the first one seen for each seq is kept, and every later one
/// from another instance is compared with it, bit for bit.
#[derive(Default)]
pub struct Agreement {
    /// seq → (instance, phase bits, coherence bits) of the first seen. A
    /// lock, not atomics: it is taken once per received tick, only while
    /// measuring, and only with several instances.
    first: Mutex<HashMap<u64, (usize, u64, u64)>>,
    /// Comparisons between two different instances' broadcasts of one seq.
    pub compared: AtomicU64,
    /// Of those, how many differed.
    pub differing: AtomicU64,
    /// The largest |Δψ| seen, in millionths of a beat.
    pub max_dphase_micro: AtomicU64,
}

impl Agreement {
    /// Records instance `instance`'s consensus for `seq`.
    pub fn record(&self, instance: usize, seq: u64, phase: f64, coherence: f64) {
        let (phase_bits, coherence_bits) = (phase.to_bits(), coherence.to_bits());
        let mut first = self.first.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (from, p, c) = *first.entry(seq).or_insert((instance, phase_bits, coherence_bits));
        drop(first);
        if from == instance {
            return;
        }
        self.compared.fetch_add(1, Ordering::Relaxed);
        if (p, c) != (phase_bits, coherence_bits) {
            self.differing.fetch_add(1, Ordering::Relaxed);
            let d = shared::phase::difference(f64::from_bits(p), phase).abs();
            self.max_dphase_micro.fetch_max((d * 1e6).round() as u64, Ordering::Relaxed);
        }
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_compares_only_across_instances() {
        let a = Agreement::default();
        a.record(0, 7, 0.25, 0.9);
        a.record(0, 7, 0.5, 0.9);
        a.record(1, 7, 0.25, 0.9);
        a.record(2, 7, 0.2501, 0.9);
        assert_eq!(a.compared.load(Ordering::Relaxed), 2);
        assert_eq!(a.differing.load(Ordering::Relaxed), 1);
        assert_eq!(a.max_dphase_micro.load(Ordering::Relaxed), 100);
    }

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
}
