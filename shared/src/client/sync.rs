//! Clock sync: the offset that turns a client's own clock into the server's,
//! refined for the life of the connection by a filter in the manner of
//! NTP's (see [`crate::clock`] for one sample's arithmetic). Pure: the
//! session sends the requests and feeds the answers in.
//!
//! On a phone the round trip jitters by tens of milliseconds from packet to
//! packet, so one sample, or the lowest of a handful, can be 10 ms or more
//! off. So the client keeps sampling gently (the session's policy) and this
//! filter does what NTP does with its samples:
//!
//! - **Recent samples only**: the last [`WINDOW`] of them, each one's
//!   uncertainty growing with its age ([`DRIFT`], NTP's dispersion), and
//!   none from before the last [`Clock::restart`] (a tab that slept may
//!   have a clock that stood still).
//! - **Lowest delay wins**: a sample says the server's clock read
//!   `server_time` somewhere between `t0` and `t1`, so the true offset lies
//!   in `[server_time − t1, server_time − t0]`; the quicker the round trip,
//!   the narrower that interval. The estimate is the middle of the interval
//!   the most samples agree on (Marzullo's intersection algorithm, which
//!   NTP uses to pick true clocks): the quickest leg *each way* over the
//!   whole window bounds it, which on a jittery link beats keeping the one
//!   quickest round trip by a wide margin (see the tests' figures).
//! - **Outliers rejected**: a sample whose interval misses the one most
//!   samples agree on (a clock that jumped, a server that answered wrong)
//!   does not move the estimate.
//! - **No jumps**: the offset in use slews toward the estimate at most
//!   [`SLEW`] (half a percent), so the room's beat seen through it never
//!   jumps; only while the page starts (its first [`CLOCK_SAMPLES`]) or
//!   when it is more than [`STEP_MS`] off does it step.
//!
//! Written here rather than taken from a crate: the NTP crates are daemons
//! and protocol codecs over UDP; this is fifty lines of arithmetic over the
//! page's own samples.
//!
//! "Local" times are the client's monotonic clock in milliseconds (close to
//! Unix time, so that before the first sync it is a fair guess of the
//! server's); "server" times are the server's clock in milliseconds since
//! the Unix epoch.

use crate::clock::ClockSample;

/// How many round trips make a burst, sent one after another when a
/// connection opens or the tab comes back into view, so that a good
/// estimate comes quickly; gentle sampling refines it after.
pub const CLOCK_SAMPLES: usize = 5;

/// After a burst the client takes one sample this often (local ms) for as
/// long as the connection lasts: a small message a second, like the phase
/// report, and a minute of them pins the offset to a couple of
/// milliseconds on a link that jitters by ±50 ms each way.
pub const SAMPLE_MS: f64 = 1_000.0;

/// How many recent samples the filter keeps (a minute's worth at
/// [`SAMPLE_MS`]).
pub const WINDOW: usize = 64;

/// How fast two clocks may drift apart, as a fraction: each sample's
/// uncertainty grows by this much per millisecond of its age (NTP's PHI,
/// 15 ppm), so old samples give way to new ones when the clocks drift.
pub const DRIFT: f64 = 15e-6;

/// How finely a client's clock reads (ms): browsers coarsen
/// `performance.now()` to 0.1 ms (Chromium) or 1 ms with jitter (Firefox),
/// so every sample's interval is widened by this much on each side, lest
/// two good samples seem to disagree by a tick.
pub const PRECISION_MS: f64 = 1.0;

/// How fast the offset in use may move toward the estimate, in ms per ms:
/// the room's beat, seen through it, runs at most half a percent fast or
/// slow while it catches up (72 bpm reads as 71.6 to 72.4).
pub const SLEW: f64 = 0.005;

/// An estimate further than this (ms) from the offset in use is stepped to
/// at once: the clocks really changed (a machine that slept, a server set
/// right), and slewing would take minutes.
pub const STEP_MS: f64 = 500.0;

/// The offset in use: moving from `from` (at local time `at`) toward `to`
/// at [`SLEW`], so it is continuous in time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slewing {
    from: f64,
    at: f64,
    to: f64,
}

impl Slewing {
    fn steady(offset: f64, at: f64) -> Self {
        Self { from: offset, at, to: offset }
    }

    fn at(&self, local: f64) -> f64 {
        let most = SLEW * (local - self.at).max(0.0);
        self.from + (self.to - self.from).clamp(-most, most)
    }
}

/// How far (ms) an echoed `t0` may fall short of the restart it was sent
/// at and still count as sent after it. The first request of a burst is
/// sent at the very time of its restart, and `t0` comes back through JSON:
/// serde_json's default float parsing (on the server and here) can land a
/// unit in the last place off, about 0.0002 ms for today's Unix
/// milliseconds, which made the first answer "older" than the restart and
/// stalled the burst.
const ECHO_SLACK_MS: f64 = 0.01;

/// The offset between a client's clock and the server's, filtered from the
/// recent request/response samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Clock {
    /// The recent samples, oldest first, at most [`WINDOW`]; only those
    /// taken since the last restart.
    samples: Vec<ClockSample>,
    /// Local time of the last [`Self::restart`]: an answer to a request sent
    /// before it belongs to the clock as it was, and is ignored.
    since: f64,
    /// Samples taken since the last restart, to know when a burst is done.
    in_burst: usize,
    /// Samples taken in the clock's whole life: its first burst is used at
    /// once, so the page can start reporting.
    taken: usize,
    /// The filter's estimate and its error bound (half the width of the
    /// interval the samples agree on).
    estimate: Option<(f64, f64)>,
    /// The offset in use; `None` until the first answer.
    used: Option<Slewing>,
}

impl Clock {
    /// Starts a new burst at local time `now` (a new connection, or the tab
    /// back in view): the samples so far are forgotten, since the local
    /// clock may have stood still while the tab slept or the new
    /// connection may reach another server; the offset in use stays until
    /// the new samples say otherwise.
    pub fn restart(&mut self, now: f64) {
        self.samples.clear();
        self.since = now;
        self.in_burst = 0;
    }

    /// Records the answer to a request sent at local `t0`, which the server
    /// answered at `server_time` and which arrived at local `t1`. Returns
    /// whether it was used: not when a time is not a number, the answer
    /// arrived before it was sent (a clock that jumped), or the request
    /// predates the last restart.
    pub fn record(&mut self, t0: f64, server_time: f64, t1: f64) -> bool {
        let sample = ClockSample { t0, server_time, t1 };
        let round_trip = sample.round_trip();
        if !(server_time.is_finite() && round_trip.is_finite() && round_trip >= 0.0)
            || t0 < self.since - ECHO_SLACK_MS
        {
            return false;
        }
        if self.samples.len() == WINDOW {
            self.samples.remove(0);
        }
        self.samples.push(sample);
        self.in_burst += 1;
        self.taken += 1;
        let Some((estimate, bound)) = agreed_offset(&self.samples, t1) else {
            return true;
        };
        self.estimate = Some((estimate, bound));
        self.used = Some(match self.used {
            Some(used)
                if self.taken > CLOCK_SAMPLES && (estimate - used.at(t1)).abs() <= STEP_MS =>
            {
                Slewing { from: used.at(t1), at: t1, to: estimate }
            }
            _ => Slewing::steady(estimate, t1),
        });
        true
    }

    /// Whether the current burst wants another request.
    pub fn wants_sample(&self) -> bool {
        self.in_burst < CLOCK_SAMPLES
    }

    /// Whether the clock has been synced at all.
    pub fn synced(&self) -> bool {
        self.used.is_some()
    }

    /// The filter's estimate of what to add to a local time to read the
    /// server's clock, and its error bound (ms): the offset in use moves
    /// toward it.
    pub fn estimate(&self) -> Option<(f64, f64)> {
        self.estimate
    }

    /// What to add to local time `local` to read the server's clock then.
    pub fn offset_at(&self, local: f64) -> Option<f64> {
        self.used.map(|used| used.at(local))
    }

    /// The server's clock at local time `local`, once synced.
    pub fn server_time(&self, local: f64) -> Option<f64> {
        self.offset_at(local).map(|offset| local + offset)
    }
}

/// The middle of the offset interval the most `samples` agree on at local
/// time `now` (Marzullo's algorithm), and half its width; `None` without
/// samples.
///
/// Each sample bounds the offset to `[server_time − t1, server_time − t0]`,
/// widened by [`PRECISION_MS`] and by [`DRIFT`] times its age. Where every
/// interval overlaps, the answer is their intersection; where some do not,
/// the region inside the most of them wins and the rest are outliers.
///
/// The most-covered region starts at some interval's low edge, so each low
/// edge is tried in turn: quadratic, but over at most [`WINDOW`] samples,
/// and it keeps a sort (a few kilobytes of wasm) out of the page.
fn agreed_offset(samples: &[ClockSample], now: f64) -> Option<(f64, f64)> {
    let interval = |s: &ClockSample| {
        let widen = PRECISION_MS + DRIFT * (now - s.t1).max(0.0);
        (s.server_time - s.t1 - widen, s.server_time - s.t0 + widen)
    };
    let mut best: Option<(usize, f64, f64)> = None;
    for candidate in samples {
        let (edge, _) = interval(candidate);
        let (mut count, mut low, mut high) = (0, f64::NEG_INFINITY, f64::INFINITY);
        for (lo, hi) in samples.iter().map(interval).filter(|(lo, hi)| *lo <= edge && edge <= *hi) {
            count += 1;
            low = low.max(lo);
            high = high.min(hi);
        }
        if best.is_none_or(|(most, _, _)| count > most) {
            best = Some((count, low, high));
        }
    }
    best.map(|(_, low, high)| ((low + high) / 2.0, (high - low) / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small deterministic generator (SplitMix64), so the simulated
    /// networks below are the same on every run.
    struct SplitMix(u64);

    impl SplitMix {
        /// A number in `[0, 1)`.
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as f64 / 2f64.powi(64)
        }

        /// A number in `[centre − spread, centre + spread)`.
        fn around(&mut self, centre: f64, spread: f64) -> f64 {
            centre + spread * (2.0 * self.next() - 1.0)
        }
    }

    /// The server's clock is this far ahead of the client's in the
    /// simulations.
    const TRUTH: f64 = 1_700_000_000_000.0 - 12_345.678;

    /// A simulated link whose legs each take `leg` ± `jitter` ms
    /// (uniformly), sampled as the session does: a burst of
    /// [`CLOCK_SAMPLES`], then one every [`SAMPLE_MS`]. Returns the clock
    /// after `duration` ms, and the local time then.
    fn simulate(seed: u64, leg: f64, jitter: f64, duration: f64) -> (Clock, f64) {
        let mut random = SplitMix(seed);
        let mut clock = Clock::default();
        clock.restart(0.0);
        let mut t0 = 0.0;
        while t0 <= duration {
            let up = random.around(leg, jitter);
            let down = random.around(leg, jitter);
            let t1 = t0 + up + down;
            assert!(clock.record(t0, t0 + up + TRUTH, t1));
            t0 = if clock.wants_sample() { t1 } else { t0 + SAMPLE_MS };
        }
        (clock, t0)
    }

    fn error_at(clock: &Clock, local: f64) -> f64 {
        (clock.offset_at(local).expect("synced") - TRUTH).abs()
    }

    #[test]
    fn a_symmetric_link_gives_the_true_offset_at_once() {
        let (clock, now) = simulate(1, 40.0, 0.0, 5_000.0);
        assert!(error_at(&clock, now) < 1e-6, "{}", error_at(&clock, now));
        // It cannot know the link is symmetric: the bound is a whole leg.
        let (_, bound) = clock.estimate().expect("an estimate");
        assert!((bound - 40.0 - PRECISION_MS).abs() < 0.01, "bound {bound}");
    }

    #[test]
    fn a_jittery_link_is_pinned_within_2_ms_after_a_minute() {
        // 150 ms round trips, each leg jittering by ±50 ms: one sample can
        // be 50 ms off, and the best of a burst of five typically 10.
        let mut after_burst = Vec::new();
        let mut after_minute = Vec::new();
        for seed in 0..200 {
            after_burst.push(error_at(&simulate(seed, 75.0, 50.0, 0.0).0, 1_000.0));
            let (clock, now) = simulate(seed, 75.0, 50.0, 60_000.0);
            after_minute.push(error_at(&clock, now));
        }
        let sorted = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v
        };
        let (burst, minute) = (sorted(after_burst), sorted(after_minute));
        let median = minute[100];
        let within_2 = minute.iter().filter(|e| **e <= 2.0).count();
        let worst = minute[199];
        println!(
            "offset error over 200 simulated links: after the burst median {:.2} ms, worst {:.2} ms; \
             after a minute median {median:.2} ms, p90 {:.2} ms, worst {worst:.2} ms, \
             {within_2}/200 within 2 ms",
            burst[100], burst[199], minute[180]
        );
        assert!(median < 1.0, "median {median}");
        assert!(within_2 >= 170, "only {within_2} of 200 within 2 ms");
        assert!(worst < 5.0, "worst {worst}");
        // The one quickest round trip (the old way) does markedly worse.
        assert!(burst[100] > 3.0 * median);
    }

    #[test]
    fn the_offset_in_use_never_jumps_after_the_first_burst() {
        let mut random = SplitMix(7);
        let mut clock = Clock::default();
        let mut t0 = 0.0;
        let mut last: Option<(f64, f64)> = None;
        while t0 < 120_000.0 {
            let (up, down) = (random.around(75.0, 50.0), random.around(75.0, 50.0));
            let t1 = t0 + up + down;
            clock.record(t0, t0 + up + TRUTH, t1);
            let offset = clock.offset_at(t1).expect("synced");
            if let Some((at, before)) = last
                && t0 > 1_000.0
            {
                let most = SLEW * (t1 - at) + 1e-9;
                assert!((offset - before).abs() <= most, "{before} -> {offset} in {} ms", t1 - at);
            }
            last = Some((t1, offset));
            t0 = if clock.wants_sample() { t1 } else { t0 + SAMPLE_MS };
        }
        assert!(error_at(&clock, t0) < 2.0, "{}", error_at(&clock, t0));
    }

    #[test]
    fn the_first_sample_is_used_at_once() {
        let mut clock = Clock::default();
        assert_eq!(clock.server_time(5.0), None);
        assert!(!clock.synced());
        assert!(clock.record(0.0, 1100.0, 200.0)); // offset 1000, round trip 200
        assert_eq!(clock.offset_at(200.0), Some(1000.0));
        assert_eq!(clock.server_time(210.0), Some(1210.0));
        assert!(clock.wants_sample());
    }

    #[test]
    fn a_big_change_is_stepped_to_and_a_small_one_slewed() {
        let mut clock = Clock::default();
        for i in 0..CLOCK_SAMPLES {
            let t0 = 10.0 * i as f64;
            clock.record(t0, t0 + 1001.0, t0 + 2.0);
        }
        assert!(!clock.wants_sample());
        assert_eq!(clock.offset_at(100.0), Some(1000.0));
        // The tab slept and its clock stood still: the server is 10 s on.
        clock.restart(1_000.0);
        clock.record(1_000.0, 12_001.0, 1_002.0);
        assert_eq!(clock.offset_at(1_002.0), Some(11_000.0));
        // Later, the estimate moves by 10 ms: the clock gets there at 5 ms
        // a second.
        clock.restart(5_000.0);
        clock.record(5_000.0, 16_011.0, 5_002.0);
        assert_eq!(clock.estimate().map(|e| e.0), Some(11_010.0));
        assert_eq!(clock.offset_at(5_002.0), Some(11_000.0));
        assert_eq!(clock.offset_at(6_002.0), Some(11_005.0));
        assert_eq!(clock.offset_at(9_000.0), Some(11_010.0));
    }

    #[test]
    fn answers_to_requests_from_before_a_restart_are_ignored() {
        let mut clock = Clock::default();
        clock.record(0.0, 1001.0, 2.0);
        clock.restart(100.0);
        assert!(!clock.record(50.0, 9_999.0, 120.0));
        assert_eq!(clock.estimate(), Some((1000.0, 1.0 + PRECISION_MS)));
        assert!(clock.wants_sample());
    }

    #[test]
    fn an_echo_a_unit_in_the_last_place_early_still_counts_after_its_restart() {
        let sent = 1_795_685_742_874.305_2_f64;
        let mut clock = Clock::default();
        clock.restart(sent);
        assert!(clock.record(sent.next_down(), sent + 1000.0, sent + 20.0));
        assert!(clock.wants_sample(), "the burst goes on");
    }

    #[test]
    fn a_sample_from_a_clock_that_jumped_is_not_used() {
        let mut clock = Clock::default();
        assert!(!clock.record(500.0, 1000.0, 400.0)); // arrived before it was sent
        assert!(!clock.record(500.0, f64::NAN, 600.0));
        assert_eq!(clock.offset_at(600.0), None);
        assert!(clock.record(600.0, 1610.0, 620.0));
        assert_eq!(clock.offset_at(620.0), Some(1000.0));
    }

    #[test]
    fn an_outlier_does_not_move_the_estimate() {
        let mut clock = Clock::default();
        for i in 0..10 {
            let t0 = 1000.0 * f64::from(i);
            clock.record(t0, t0 + 5_010.0, t0 + 20.0);
        }
        // A server that answered 300 ms wrong, over a quick round trip.
        clock.record(10_000.0, 15_310.0, 10_020.0);
        assert_eq!(clock.estimate().map(|e| e.0), Some(5_000.0));
    }

    /// The filter's estimate after a window of samples over a quick link
    /// from a client whose clock runs `ppm` parts per million slow, and
    /// the true offset at the newest sample.
    fn drifting(ppm: f64) -> (f64, f64) {
        let mut clock = Clock::default();
        let offset = |t: f64| 1_000.0 + ppm * 1e-6 * t;
        for i in 0..WINDOW {
            let t0 = SAMPLE_MS * i as f64;
            clock.record(t0, t0 + 1.0 + offset(t0), t0 + 2.0);
        }
        let (estimate, _) = clock.estimate().expect("an estimate");
        (estimate, offset(SAMPLE_MS * (WINDOW - 1) as f64))
    }

    #[test]
    fn drifting_clocks_are_followed() {
        // Within the drift every sample allows for, the newest truth is
        // kept to a millisecond.
        let (estimate, truth) = drifting(DRIFT * 1e6);
        assert!((estimate - truth).abs() < 1.0, "{estimate} vs {truth}");
        // Far beyond it (100 ppm, a clock gone wrong), the samples stop
        // agreeing and the estimate lags by at most half the drift over the
        // window.
        let (estimate, truth) = drifting(100.0);
        let most = 100e-6 * SAMPLE_MS * WINDOW as f64 / 2.0 + PRECISION_MS;
        assert!((estimate - truth).abs() < most, "{estimate} vs {truth}");
    }

    proptest! {
        /// Whatever the delays, as long as each leg is at least `floor` ms
        /// and symmetric links are the truth, the offset stays within the
        /// error bound the filter claims (plus the slew still to go).
        #[test]
        fn the_estimate_lies_within_its_bound(
            legs in proptest::collection::vec((0.0f64..300.0, 0.0f64..300.0), 1..80),
        ) {
            let mut clock = Clock::default();
            let mut t0 = 0.0;
            for (up, down) in legs {
                let t1 = t0 + up + down;
                clock.record(t0, t0 + up + TRUTH, t1);
                let (estimate, bound) = clock.estimate().expect("an estimate");
                prop_assert!((estimate - TRUTH).abs() <= bound + 1e-6, "{} > {}", estimate - TRUTH, bound);
                t0 = t1 + 500.0;
            }
        }
    }
}
