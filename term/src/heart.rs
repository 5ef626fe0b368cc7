//! This client's heart: its phase and rate, and how it is pulled into step
//! with the room. Pure: time comes in as arguments.
//!
//! Each frame, the room's consensus (phase ψ and coherence R at the instant
//! `at`) is extrapolated with [`shared::project`] to the instant the heart's
//! phase describes, and the heart takes a [`shared::kuramoto_step`] towards
//! it. (Extrapolating to the end of the frame instead would leave the heart
//! a frame ahead of the room for good.) A room whose hearts are in step
//! (R near 1) pulls hard; a scattered room (R near 0) barely pulls at all.

use shared::{Consensus, OrderParameter, kuramoto_step, project};

/// The heart's own rate, in beats per minute: a calm resting heart.
pub const BPM: f64 = 72.0;

/// K, how strongly the consensus pulls (per second), as the browser page
/// does: a heart half a beat off is in step within a few seconds.
pub const COUPLING: f64 = 2.0;

/// The longest Euler step, in seconds; a longer frame (a slow terminal, a
/// suspended process) is taken in several steps so the pull cannot overshoot.
const MAX_STEP_SECONDS: f64 = 0.05;

/// A frame longer than this (in seconds) means the process was stopped: the
/// heart just beats on at its own rate, unpulled, instead of taking thousands
/// of steps.
const MAX_PULLED_SECONDS: f64 = 2.0;

/// The heart, as the screen draws it and the connection reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heart {
    /// The fraction of the current beat that has passed, in `[0, 1)`.
    pub phase: f64,
    /// Beats per minute.
    pub bpm: f64,
}

/// Where the heart was at a moment on the local clock, so the connection
/// can project it to the instant it reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartReading {
    /// The heart's phase at `local_ms`.
    pub phase: f64,
    /// Its rate.
    pub bpm: f64,
    /// When, on the local clock (ms).
    pub local_ms: f64,
}

impl Heart {
    /// A heart at `phase` beating at [`BPM`].
    pub fn new(phase: f64) -> Self {
        Self { phase: shared::wrap(phase), bpm: BPM }
    }

    /// Advances the heart by `dt_seconds`, pulled towards `room` (the room's
    /// beat at the instant the heart's phase describes, the start of the
    /// step) when there is one.
    pub fn advance(&mut self, dt_seconds: f64, room: Option<RoomBeat>) {
        if !(dt_seconds.is_finite() && dt_seconds > 0.0) {
            return;
        }
        let mut room = match room {
            Some(room) if dt_seconds <= MAX_PULLED_SECONDS => room,
            _ => {
                self.phase = project(self.phase, self.bpm, 0.0, dt_seconds * 1000.0);
                return;
            }
        };
        let steps = (dt_seconds / MAX_STEP_SECONDS).ceil().max(1.0);
        let dt = dt_seconds / steps;
        for _ in 0..steps as usize {
            self.phase = kuramoto_step(self.phase, self.bpm, room.order, COUPLING, dt);
            room.order.phase = project(room.order.phase, room.bpm, 0.0, dt * 1000.0);
        }
    }

    /// The heart as it is at `local_ms`.
    pub fn reading(&self, local_ms: f64) -> HeartReading {
        HeartReading { phase: self.phase, bpm: self.bpm, local_ms }
    }
}

impl HeartReading {
    /// Where the heart will be (or was) at `local_ms`, beating on unpulled.
    pub fn phase_at(&self, local_ms: f64) -> f64 {
        project(self.phase, self.bpm, self.local_ms, local_ms)
    }
}

/// The room's beat at one instant: where its consensus is and how in step
/// it is, and how fast it moves on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomBeat {
    /// ψ and R at that instant.
    pub order: OrderParameter,
    /// The room's beats per minute.
    pub bpm: f64,
}

/// The room's beat at `server_ms` (server clock): the consensus extrapolated
/// from its `at` at its bpm, with its coherence.
pub fn consensus_at(consensus: &Consensus, server_ms: f64) -> RoomBeat {
    let order = OrderParameter {
        phase: project(consensus.phase, consensus.bpm, consensus.at, server_ms),
        coherence: consensus.coherence.clamp(0.0, 1.0),
    };
    RoomBeat { order, bpm: consensus.bpm }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::phase::difference;

    #[test]
    fn alone_it_beats_at_seventy_two() {
        let mut heart = Heart::new(0.25);
        // 72 bpm is 1.2 beats a second: 0.5 s is 0.6 of a beat.
        heart.advance(0.5, None);
        assert!(difference(heart.phase, 0.85).abs() < 1e-9, "{}", heart.phase);
        heart.advance(100.0, None);
        assert!((0.0..1.0).contains(&heart.phase));
    }

    #[test]
    fn two_hearts_fall_into_step_with_the_room() {
        // The room beats at 72 bpm, in step (R = 1), at phase 0 at t = 0.
        let room =
            Consensus { at: 0.0, phase: 0.0, bpm: 72.0, coherence: 1.0, ..Default::default() };
        let mut hearts = [Heart::new(0.4), Heart::new(0.7)];
        let frame = 1.0 / 30.0;
        for i in 0..30 * 8 {
            let heart_ms = i as f64 * frame * 1000.0;
            for heart in &mut hearts {
                heart.advance(frame, Some(consensus_at(&room, heart_ms)));
            }
        }
        let room_now = consensus_at(&room, 8000.0).order.phase;
        for heart in hearts {
            assert!(
                difference(heart.phase, room_now).abs() < 0.001,
                "{} vs {room_now}",
                heart.phase
            );
        }
    }

    #[test]
    fn an_incoherent_room_does_not_pull() {
        let room = Consensus { phase: 0.5, bpm: 72.0, coherence: 0.0, ..Default::default() };
        let (mut pulled, mut alone) = (Heart::new(0.1), Heart::new(0.1));
        pulled.advance(0.3, Some(consensus_at(&room, 0.0)));
        alone.advance(0.3, None);
        assert!(difference(pulled.phase, alone.phase).abs() < 1e-9);
    }

    #[test]
    fn a_long_pause_beats_on_without_a_jolt() {
        let room = Consensus { phase: 0.5, bpm: 72.0, coherence: 1.0, ..Default::default() };
        let mut heart = Heart::new(0.0);
        heart.advance(10.0, Some(consensus_at(&room, 0.0)));
        assert!(difference(heart.phase, 0.0).abs() < 1e-9, "12 whole beats, unpulled");
        heart.advance(f64::NAN, None);
        heart.advance(-1.0, None);
        assert!(difference(heart.phase, 0.0).abs() < 1e-9);
    }

    #[test]
    fn consensus_is_extrapolated_to_now() {
        let room =
            Consensus { at: 1000.0, phase: 0.9, bpm: 60.0, coherence: 0.8, ..Default::default() };
        let now = consensus_at(&room, 1250.0);
        assert!(difference(now.order.phase, 0.15).abs() < 1e-9);
        assert_eq!((now.order.coherence, now.bpm), (0.8, 60.0));
        let reading = Heart::new(0.5).reading(0.0);
        assert!(difference(reading.phase_at(500.0), 0.1).abs() < 1e-9);
    }
}
