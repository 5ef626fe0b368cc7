//! The beat schedule for sound and touch: which of the heart's beats fall in
//! the next few hundred milliseconds, on the server's clock, and where such
//! a time falls on the audio hardware's clock. Pure, so it is tested
//! natively; `audio` plays what it says.
//!
//! Beats are scheduled ahead on the server's clock rather than played when
//! an animation frame or a timer happens to run: every phone in a room maps
//! the same server instant to its own audio clock (through its clock
//! offset), so they thump together, and a late timer delays nothing.

use shared::beat::{DUB, LUB};
use shared::protocol::BPM_RANGE;

/// How far ahead beats are handed to the audio clock (ms): more than the
/// scheduling timer's period plus its lateness, so none is missed, and
/// short enough that a beat scheduled before a clock correction is off by
/// no more than the correction's slew over this time.
pub const AHEAD_MS: f64 = 250.0;

/// A beat whose lub is closer than this (ms) when it is scheduled is let go
/// rather than played late.
pub const TOO_LATE_MS: f64 = 5.0;

/// How many scheduled beats are remembered (for the test hook).
pub const KEPT: usize = 8;

/// One beat of the heart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thump {
    /// When the beat starts (phase 0), on the server's clock (ms).
    pub at: f64,
    /// How long the beat lasts (ms), at the rate it was scheduled at.
    pub period: f64,
}

impl Thump {
    /// When the lub peaks, on the server's clock (ms).
    pub fn lub(&self) -> f64 {
        self.at + LUB.center * self.period
    }

    /// When the dub peaks, on the server's clock (ms).
    pub fn dub(&self) -> f64 {
        self.at + DUB.center * self.period
    }
}

/// The beats handed to the audio clock so far.
#[derive(Debug, Default, Clone)]
pub struct Schedule {
    /// The latest scheduled beats (server ms), oldest first, at most
    /// [`KEPT`]: a beat near one of these is the same beat seen again.
    recent: Vec<f64>,
}

impl Schedule {
    /// The beats to hand over now: the heart is at `phase` at server time
    /// `server_now`, beating at `bpm`; every beat whose lub falls in the
    /// next `ahead` ms and that was not handed over already, in order.
    /// Nonsense numbers schedule nothing.
    pub fn due(&mut self, phase: f64, bpm: f64, server_now: f64, ahead: f64) -> Vec<Thump> {
        if !(phase.is_finite() && server_now.is_finite() && BPM_RANGE.contains(&bpm)) {
            return Vec::new();
        }
        let period = 60_000.0 / bpm;
        // The beat under way started `phase` of a period ago; its lub may
        // still be ahead.
        let mut at = server_now - shared::wrap(phase) * period;
        let mut due = Vec::new();
        loop {
            let thump = Thump { at, period };
            if thump.lub() > server_now + ahead {
                return due;
            }
            let seen = self.recent.last().is_some_and(|last| at < last + period / 2.0);
            if !seen && thump.lub() >= server_now + TOO_LATE_MS {
                if self.recent.len() == KEPT {
                    self.recent.remove(0);
                }
                self.recent.push(at);
                due.push(thump);
            }
            at += period;
        }
    }

    /// The beats scheduled lately (server ms of their start), oldest first.
    pub fn recent(&self) -> impl Iterator<Item = f64> + '_ {
        self.recent.iter().copied()
    }
}

/// Where local time `local` (ms, the page's `timeOrigin + now()`) falls on
/// an audio clock (s), given one reading of both: the audio clock read
/// `stamp.0` s at local time `stamp.1` ms. The audio clock is read afresh
/// before every scheduling, so the two never drift apart.
pub fn audio_time(local: f64, stamp: (f64, f64)) -> f64 {
    stamp.0 + (local - stamp.1) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: f64 = 1000.0; // 60 bpm

    #[test]
    fn beats_ahead_are_scheduled_once_each() {
        let mut schedule = Schedule::default();
        // At phase 0.5 the next beat starts 500 ms on, its lub 60 ms later:
        // not yet within reach.
        assert_eq!(schedule.due(0.5, 60.0, 10_000.0, 250.0), vec![]);
        let due = schedule.due(0.9, 60.0, 10_400.0, 250.0);
        assert_eq!(due, vec![Thump { at: 10_500.0, period: PERIOD }]);
        assert_eq!(due[0].lub(), 10_560.0);
        assert_eq!(due[0].dub(), 10_810.0);
        // Seen again a moment later, a little earlier or later (the heart
        // was pulled, the clock slewed): the same beat, not scheduled again.
        assert_eq!(schedule.due(0.95, 60.0, 10_450.0, 250.0), vec![]);
        assert_eq!(schedule.due(0.968, 60.0, 10_458.0, 250.0), vec![]);
        // The next one, a period on.
        let due = schedule.due(0.9, 60.0, 11_400.0, 250.0);
        assert_eq!(due, vec![Thump { at: 11_500.0, period: PERIOD }]);
        assert_eq!(schedule.recent().collect::<Vec<_>>(), vec![10_500.0, 11_500.0]);
    }

    #[test]
    fn a_beat_under_way_is_scheduled_while_its_lub_is_ahead() {
        let mut schedule = Schedule::default();
        // Phase 0.02: the beat started 20 ms ago, its lub is 40 ms away.
        let due = schedule.due(0.02, 60.0, 5_000.0, 250.0);
        assert_eq!(due, vec![Thump { at: 4_980.0, period: PERIOD }]);
        // Phase 0.058: its lub is 2 ms away; too late to play.
        let mut late = Schedule::default();
        assert_eq!(late.due(0.058, 60.0, 5_000.0, 250.0), vec![]);
    }

    #[test]
    fn a_long_look_ahead_schedules_every_beat_in_it_in_order() {
        let mut schedule = Schedule::default();
        let due = schedule.due(0.0, 120.0, 0.0, 2_000.0);
        let starts: Vec<f64> = due.iter().map(|t| t.at).collect();
        assert_eq!(starts, vec![0.0, 500.0, 1000.0, 1500.0]);
    }

    #[test]
    fn a_steady_heart_is_scheduled_on_every_beat_however_the_timer_runs() {
        // A timer that fires every 40 to 90 ms: every beat once, on time.
        let mut schedule = Schedule::default();
        let (bpm, mut now, mut starts) = (72.0, 1e12, Vec::new());
        let period = 60_000.0 / bpm;
        for i in 0..2_000u32 {
            let phase = shared::wrap((now - 1e12) / period + 0.3);
            starts.extend(schedule.due(phase, bpm, now, AHEAD_MS).iter().map(|t| t.at));
            now += 40.0 + f64::from(i * 7 % 50);
        }
        assert!(starts.len() > 100);
        for pair in starts.windows(2) {
            assert!((pair[1] - pair[0] - period).abs() < 1e-3, "{pair:?}");
        }
    }

    #[test]
    fn nonsense_schedules_nothing() {
        let mut schedule = Schedule::default();
        assert_eq!(schedule.due(f64::NAN, 60.0, 0.0, 250.0), vec![]);
        assert_eq!(schedule.due(0.5, 1e9, 0.0, 250.0), vec![]);
        assert_eq!(schedule.due(0.5, 60.0, f64::INFINITY, 250.0), vec![]);
    }

    #[test]
    fn server_time_maps_onto_the_audio_clock() {
        // The audio clock read 3.0 s at local 1000 ms.
        assert_eq!(audio_time(1_250.0, (3.0, 1_000.0)), 3.25);
        assert_eq!(audio_time(900.0, (3.0, 1_000.0)), 2.9);
    }
}
