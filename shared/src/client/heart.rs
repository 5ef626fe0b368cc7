//! A client's own heart: its phase and rate, and how it is pulled toward
//! the room's consensus (the Kuramoto model, [`crate::kuramoto_step`]).
//! Pure: the session steps it (on every frame a client draws, and before
//! every report, so it keeps up with the room even when nothing is drawn)
//! and feeds it each consensus, but nothing here reads a clock.
//!
//! "Local" times are the client's monotonic clock in milliseconds; "server"
//! times are the server's clock in milliseconds since the Unix epoch.

use crate::protocol::BPM_RANGE;
use crate::{Consensus, OrderParameter, PhaseReport, kuramoto_step, project};

/// Every heart beats at a resting human pace, and so does a room before
/// anyone has reported (the server's `room::RESTING_BPM` is this one).
pub const RESTING_BPM: f64 = 72.0;

/// K in the Kuramoto model, per second: with it the phase gap between two
/// clients shrinks like e^(−2t), so a newcomer falls into step within
/// seconds.
pub const COUPLING: f64 = 2.0;

/// The coupling is integrated in Euler steps at most this long (ms), so that
/// `K·dt` stays small and a long gap between two steps (a throttled
/// background tab) cannot overshoot the room's beat.
pub const SUBSTEP_MS: f64 = 50.0;

/// Of a longer gap between two steps, only the last this many milliseconds
/// are pulled; before that the heart just beats at its own rate. A tab that
/// slept for minutes costs at most a hundred substeps when it wakes.
pub const CATCH_UP_MS: f64 = 5_000.0;

/// A consensus older than this is no longer followed: after a long outage
/// the heart beats on its own until the room speaks again.
pub const CONSENSUS_TTL_MS: f64 = 30_000.0;

/// A client's heart: where it is in its beat, how fast it beats, and the
/// consensus it follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Heart {
    /// The phase at local time `at`.
    phase: f64,
    /// Its own rate, in beats per minute.
    bpm: f64,
    /// When (local) `phase` was last stepped.
    at: f64,
    /// The newest consensus of the room (by its `at`), if any.
    consensus: Option<Consensus>,
    /// K, per second.
    coupling: f64,
}

impl Heart {
    /// A heart at `phase` at local time `now`, beating at `bpm`.
    pub fn new(phase: f64, bpm: f64, now: f64) -> Self {
        Self { phase: crate::wrap(phase), bpm, at: now, consensus: None, coupling: COUPLING }
    }

    /// Its rate in beats per minute.
    pub fn bpm(&self) -> f64 {
        self.bpm
    }

    /// Where it is at local time `local`, beating freely since its last step.
    pub fn phase_at(&self, local: f64) -> f64 {
        project(self.phase, self.bpm, self.at, local.max(self.at))
    }

    /// Takes a consensus from the server. Returns `false` (and keeps the one
    /// it has) for a consensus older than the one it follows or with
    /// numbers that make no sense.
    pub fn follow(&mut self, consensus: Consensus) -> bool {
        let sane = consensus.at.is_finite()
            && consensus.phase.is_finite()
            && consensus.bpm.is_finite()
            && consensus.coherence.is_finite();
        let newer = self.consensus.is_none_or(|c| consensus.at >= c.at);
        if sane && newer {
            self.consensus = Some(consensus);
        }
        sane && newer
    }

    /// The consensus it follows.
    pub fn consensus(&self) -> Option<&Consensus> {
        self.consensus.as_ref()
    }

    /// Where the room's beat is at `server_now`: the consensus projected from
    /// its `at` at the room's rate. `None` when there is nothing to follow.
    pub fn target(&self, server_now: f64) -> Option<OrderParameter> {
        let c = self.consensus?;
        if c.voters == 0 || !BPM_RANGE.contains(&c.bpm) || server_now - c.at > CONSENSUS_TTL_MS {
            return None;
        }
        Some(OrderParameter {
            phase: project(c.phase, c.bpm, c.at, server_now),
            coherence: c.coherence.clamp(0.0, 1.0),
        })
    }

    /// Advances the heart to local time `now`: it beats on at its own rate and
    /// is pulled toward the room's beat at `server_now` (when the clock is
    /// synced). Returns the new phase.
    pub fn step(&mut self, now: f64, server_now: Option<f64>) -> f64 {
        // A time that is not a finite number leaves the heart as it is.
        if !now.is_finite() || now <= self.at {
            return self.phase;
        }
        let Some(server_now) = server_now else {
            self.phase = self.phase_at(now);
            self.at = now;
            return self.phase;
        };
        let mut t = self.at.max(now - CATCH_UP_MS);
        let mut phase = self.phase_at(t);
        while t < now {
            let h = (now - t).min(SUBSTEP_MS);
            // Explicit Euler: the pull toward where the room was at the start
            // of the substep; `server_now` belongs to `now`.
            phase = match self.target(server_now - (now - t)) {
                Some(target) => kuramoto_step(phase, self.bpm, target, self.coupling, h / 1000.0),
                None => project(phase, self.bpm, 0.0, h),
            };
            t += h;
        }
        self.phase = phase;
        self.at = now;
        phase
    }

    /// What to tell the server: where the heart is at local `now`, stamped
    /// with the server's time `server_now` for that instant.
    pub fn report(&self, now: f64, server_now: f64) -> PhaseReport {
        PhaseReport { phase: self.phase_at(now), bpm: self.bpm, at: server_now }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::difference;

    fn consensus(at: f64, phase: f64) -> Consensus {
        Consensus {
            seq: 1,
            at,
            phase,
            bpm: RESTING_BPM,
            coherence: 1.0,
            hearts: 1,
            voters: 1,
            love: 0,
        }
    }

    #[test]
    fn a_lone_heart_beats_at_its_rate() {
        let mut heart = Heart::new(0.25, 60.0, 1000.0);
        assert!((heart.step(1500.0, None) - 0.75).abs() < 1e-9);
        assert!((heart.phase_at(2000.0) - 0.25).abs() < 1e-9);
        // Time never runs backwards for the heart.
        assert!((heart.step(1200.0, None) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn target_is_the_consensus_projected_to_now() {
        let mut heart = Heart::new(0.0, 72.0, 0.0);
        assert!(heart.follow(consensus(10_000.0, 0.5)));
        let target = heart.target(10_500.0).unwrap();
        // 72 bpm is 1.2 beats a second: half a second is 0.6 of a beat on.
        assert!(difference(target.phase, 0.1).abs() < 1e-9);
        // Older news is ignored, nonsense too.
        assert!(!heart.follow(consensus(9_000.0, 0.9)));
        assert!(!heart.follow(consensus(f64::NAN, 0.9)));
        assert_eq!(heart.consensus().map(|c| c.phase), Some(0.5));
        // A room without voters, or news long gone stale, pulls nobody.
        assert!(heart.target(10_000.0 + CONSENSUS_TTL_MS + 1.0).is_none());
        assert!(heart.follow(Consensus { voters: 0, ..consensus(20_000.0, 0.1) }));
        assert!(heart.target(20_000.0).is_none());
    }

    #[test]
    fn a_newcomer_falls_into_the_rooms_beat() {
        // The room beats at phase 0.5 at server time 0; the page's clock is
        // 5 s behind the server's.
        let offset = 5_000.0;
        let mut heart = Heart::new(0.05, 72.0, -offset);
        heart.follow(consensus(0.0, 0.5));
        let mut now = -offset;
        for _ in 0..(4 * 60) {
            now += 1000.0 / 60.0;
            heart.step(now, Some(now + offset));
        }
        let room = heart.target(now + offset).unwrap().phase;
        assert!(
            difference(heart.phase_at(now), room).abs() < 0.02,
            "still {}",
            difference(heart.phase_at(now), room)
        );
    }

    /// Two pages in one room, each reporting every `report_ms`, the server
    /// averaging the latest reports every tick: the worst start (almost
    /// opposite phases) still meets the 0.02-of-a-beat bar within 10 s.
    #[test]
    fn two_pages_converge_within_ten_seconds() {
        for start_gap in [0.1, 0.3, 0.45, 0.49] {
            let mut a = Heart::new(0.0, 72.0, 0.0);
            let mut b = Heart::new(start_gap, 72.0, 0.0);
            let mut reports: [Option<PhaseReport>; 2] = [None, None];
            let (frame, tick, report_every) = (16.0, 250.0, 1000.0);
            let mut now = 0.0;
            let mut seq = 0;
            while now < 10_000.0 {
                now += frame;
                a.step(now, Some(now));
                b.step(now, Some(now));
                if (now % report_every) < frame {
                    reports = [Some(a.report(now, now)), Some(b.report(now, now))];
                }
                if (now % tick) < frame {
                    let projected =
                        reports.iter().flatten().map(|r| project(r.phase, r.bpm, r.at, now));
                    if let Some(order) = OrderParameter::of(projected) {
                        seq += 1;
                        let c = Consensus {
                            seq,
                            at: now,
                            phase: order.phase,
                            coherence: order.coherence,
                            voters: 2,
                            ..consensus(now, 0.0)
                        };
                        a.follow(c);
                        b.follow(c);
                    }
                }
            }
            let gap = difference(a.phase_at(now), b.phase_at(now)).abs();
            assert!(gap < 0.02, "start gap {start_gap}: still {gap} apart");
        }
    }

    #[test]
    fn coming_back_from_the_background_does_not_overshoot() {
        // The tab slept ten minutes; the first frame after it steps 600 s at
        // once. The pull is integrated in small steps over the last few
        // seconds only, so the heart moves toward the room without swinging
        // past it.
        let mut heart = Heart::new(0.0, 72.0, 0.0);
        let now = 600_000.0;
        heart.follow(consensus(now, 0.2));
        let target = heart.target(now).unwrap().phase;
        let before = difference(heart.phase_at(now), target);
        heart.step(now, Some(now));
        let after = difference(heart.phase_at(now), target);
        assert!(after.abs() < before.abs(), "{before} -> {after}");
        assert_eq!(after.signum(), before.signum(), "{before} -> {after}");
    }

    #[test]
    fn a_heart_stepped_once_a_second_converges_like_one_stepped_every_frame() {
        // Hidden tabs get no animation frames and timers once a second.
        let run = |every: f64| {
            let mut heart = Heart::new(0.0, 72.0, 0.0);
            heart.follow(consensus(0.0, 0.4));
            let mut now = 0.0;
            while now < 4_000.0 {
                now += every;
                heart.step(now, Some(now));
            }
            difference(heart.phase_at(now), heart.target(now).unwrap().phase).abs()
        };
        let (framed, throttled) = (run(1000.0 / 60.0), run(1000.0));
        assert!(framed < 0.01 && throttled < 0.01, "{framed} vs {throttled}");
        assert!((framed - throttled).abs() < 1e-3, "{framed} vs {throttled}");
    }

    #[test]
    fn reports_are_valid_protocol() {
        let heart = Heart::new(0.999_999_999, RESTING_BPM, 0.0);
        let report = heart.report(12.3, 1_700_000_000_000.0);
        assert!(report.validate(1_700_000_000_000.0).is_ok());
    }

    #[test]
    fn alone_it_beats_at_seventy_two() {
        let mut heart = Heart::new(0.25, RESTING_BPM, 0.0);
        // 72 bpm is 1.2 beats a second: 0.5 s is 0.6 of a beat.
        let phase = heart.step(500.0, None);
        assert!(difference(phase, 0.85).abs() < 1e-9, "{phase}");
        assert!((0.0..1.0).contains(&heart.step(100_500.0, None)));
    }

    #[test]
    fn two_hearts_fall_into_step_with_the_room() {
        // The room beats at 72 bpm, in step (R = 1), at phase 0 at t = 0.
        let mut hearts = [Heart::new(0.4, 72.0, 0.0), Heart::new(0.7, 72.0, 0.0)];
        let frame = 1000.0 / 30.0;
        for heart in &mut hearts {
            heart.follow(consensus(0.0, 0.0));
        }
        for i in 1..=30 * 8 {
            let now = f64::from(i) * frame;
            for heart in &mut hearts {
                heart.step(now, Some(now));
            }
        }
        let room = project(0.0, 72.0, 0.0, 8000.0);
        for heart in hearts {
            let phase = heart.phase_at(8000.0);
            assert!(difference(phase, room).abs() < 0.001, "{phase} vs {room}");
        }
    }

    #[test]
    fn an_incoherent_room_does_not_pull() {
        let room = Consensus { coherence: 0.0, ..consensus(0.0, 0.5) };
        let (mut pulled, mut alone) = (Heart::new(0.1, 72.0, 0.0), Heart::new(0.1, 72.0, 0.0));
        pulled.follow(room);
        let a = pulled.step(300.0, Some(300.0));
        let b = alone.step(300.0, None);
        assert!(difference(a, b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn times_that_make_no_sense_leave_the_heart_alone() {
        let mut heart = Heart::new(0.5, 60.0, 1000.0);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 999.0] {
            assert_eq!(heart.step(bad, Some(bad)), 0.5, "{bad}");
        }
        assert!(difference(heart.step(1250.0, None), 0.75).abs() < 1e-9);
    }
}
