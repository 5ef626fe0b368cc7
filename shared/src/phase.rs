//! Phase math. A phase is the fraction of a beat that has passed, in `[0, 1)`;
//! it wraps, so 0.95 and 0.05 are 0.1 of a beat apart, not 0.9.
//!
//! Every function here is pure, so the server's consensus and the page's
//! coupling are tested natively without sockets or a browser.

use std::f64::consts::TAU;

/// Wraps any finite phase into `[0, 1)`.
pub fn wrap(phase: f64) -> f64 {
    let wrapped = phase.rem_euclid(1.0);
    // `rem_euclid` returns exactly 1.0 for tiny negative inputs (rounding),
    // which is outside the half-open range.
    if wrapped >= 1.0 { 0.0 } else { wrapped }
}

/// Where a heart that was at `phase` at time `from_ms`, beating at `bpm`,
/// is at time `to_ms` (milliseconds; `to_ms` may be earlier than `from_ms`).
pub fn project(phase: f64, bpm: f64, from_ms: f64, to_ms: f64) -> f64 {
    wrap(phase + bpm / 60.0 * (to_ms - from_ms) / 1000.0)
}

/// The signed shortest distance from phase `a` to phase `b`, in `[-0.5, 0.5)`.
pub fn difference(a: f64, b: f64) -> f64 {
    wrap(b - a + 0.5) - 0.5
}

/// The Kuramoto order parameter of a set of phases: `R·e^{iψ}` is the mean of
/// `e^{2πiθ}` over the phases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderParameter {
    /// ψ, the circular mean of the phases, in `[0, 1)`. When `coherence` is
    /// near zero this direction is meaningless (and its pull vanishes with it).
    pub phase: f64,
    /// R in `[0, 1]`: 1 when every phase is the same, 0 when they cancel out.
    pub coherence: f64,
}

impl OrderParameter {
    /// The order parameter of `phases`, or `None` when there are none.
    pub fn of(phases: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut sum = PhaseSum::default();
        phases.into_iter().for_each(|p| sum.add(p));
        sum.order()
    }
}

/// A running sum of unit vectors, so a room can fold its voters' phases in one
/// pass without collecting them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseSum {
    x: f64,
    y: f64,
    count: usize,
}

impl PhaseSum {
    /// A sum made elsewhere: Σcos 2πφ, Σsin 2πφ and how many phases (for
    /// example several servers' partial sums added up), so it folds into
    /// the order parameter exactly as a sum made here.
    pub fn from_parts(sum_cos: f64, sum_sin: f64, count: usize) -> Self {
        Self { x: sum_cos, y: sum_sin, count }
    }

    /// Adds one phase (any finite number; it is taken modulo 1).
    pub fn add(&mut self, phase: f64) {
        let angle = TAU * phase;
        self.x += angle.cos();
        self.y += angle.sin();
        self.count += 1;
    }

    /// How many phases were added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The order parameter of what was added, or `None` when nothing was.
    pub fn order(&self) -> Option<OrderParameter> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        let (x, y) = (self.x / n, self.y / n);
        Some(OrderParameter {
            phase: wrap(y.atan2(x) / TAU),
            // Rounding can push the length of a mean of unit vectors a hair
            // past 1.
            coherence: x.hypot(y).min(1.0),
        })
    }
}

/// One Euler step of the Kuramoto model for a single heart, in beats:
/// `dθ/dt = ω + K·R·sin(2π(ψ − θ)) / 2π`, where `ω = bpm / 60` beats per
/// second, `ψ` and `R` are the consensus phase and coherence extrapolated to
/// now, and `coupling` is K in 1/s. Returns the new phase, wrapped.
pub fn kuramoto_step(
    phase: f64,
    bpm: f64,
    consensus: OrderParameter,
    coupling: f64,
    dt_seconds: f64,
) -> f64 {
    let pull = coupling * consensus.coherence * (TAU * (consensus.phase - phase)).sin() / TAU;
    wrap(phase + (bpm / 60.0 + pull) * dt_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        difference(a, b).abs() < 1e-9
    }

    #[test]
    fn circular_mean_wraps_at_one() {
        let order = OrderParameter::of([0.95, 0.05]).unwrap();
        assert!(close(order.phase, 0.0), "mean was {}", order.phase);
        assert!(order.coherence > 0.95);
    }

    #[test]
    fn no_voters_have_no_order() {
        assert_eq!(OrderParameter::of([]), None);
    }

    #[test]
    fn opposite_phases_cancel() {
        let order = OrderParameter::of([0.1, 0.6]).unwrap();
        assert!(order.coherence < 1e-9);
    }

    #[test]
    fn evenly_spread_phases_have_no_coherence() {
        let order = OrderParameter::of((0..7).map(|i| i as f64 / 7.0)).unwrap();
        assert!(order.coherence < 1e-9);
    }

    #[test]
    fn projection_advances_by_beats() {
        // 60 bpm is one beat a second: 1.25 s later is a quarter beat on.
        assert!(close(project(0.5, 60.0, 1000.0, 2250.0), 0.75));
        assert!(close(project(0.9, 120.0, 0.0, 100.0), 0.1));
        assert!(close(project(0.1, 60.0, 1000.0, 750.0), 0.85));
    }

    #[test]
    fn wrap_stays_half_open() {
        assert_eq!(wrap(-1e-20), 0.0);
        assert_eq!(wrap(1.0), 0.0);
        assert!(close(wrap(-0.25), 0.75));
    }

    #[test]
    fn kuramoto_pulls_toward_consensus() {
        let target = OrderParameter { phase: 0.3, coherence: 1.0 };
        let mut phase = 0.1;
        for _ in 0..600 {
            // Beat at 0 bpm so only the pull moves the phase.
            phase = kuramoto_step(phase, 0.0, target, 2.0, 1.0 / 60.0);
        }
        assert!(difference(phase, 0.3).abs() < 0.01, "ended at {phase}");
    }

    proptest! {
        #[test]
        fn wrap_is_in_range(p in -1e6f64..1e6) {
            let w = wrap(p);
            prop_assert!((0.0..1.0).contains(&w));
        }

        #[test]
        fn order_is_in_range(phases in proptest::collection::vec(-10.0f64..10.0, 1..50)) {
            let order = OrderParameter::of(phases).unwrap();
            prop_assert!((0.0..1.0).contains(&order.phase));
            prop_assert!((0.0..=1.0).contains(&order.coherence));
        }

        #[test]
        fn identical_phases_are_fully_coherent(p in 0.0f64..1.0, n in 1usize..40) {
            let order = OrderParameter::of(std::iter::repeat_n(p, n)).unwrap();
            prop_assert!(close(order.phase, p));
            prop_assert!((order.coherence - 1.0).abs() < 1e-9);
        }

        #[test]
        fn mean_moves_with_a_rotation(
            phases in proptest::collection::vec(0.0f64..0.2, 1..30),
            shift in 0.0f64..1.0,
        ) {
            // Phases within a fifth of a beat have a well-defined mean, and
            // rotating all of them (across the wrap, too) rotates the mean.
            let before = OrderParameter::of(phases.iter().copied()).unwrap();
            let after = OrderParameter::of(phases.iter().map(|p| wrap(p + shift))).unwrap();
            prop_assert!(difference(wrap(before.phase + shift), after.phase).abs() < 1e-9);
            prop_assert!((before.coherence - after.coherence).abs() < 1e-9);
        }

        #[test]
        fn projection_there_and_back(p in 0.0f64..1.0, bpm in 30.0f64..200.0, dt in -1e4f64..1e4) {
            let there = project(p, bpm, 0.0, dt);
            prop_assert!(difference(project(there, bpm, dt, 0.0), p).abs() < 1e-6);
        }

        #[test]
        fn kuramoto_never_pushes_away(
            phase in 0.0f64..1.0, target in 0.0f64..1.0, r in 0.0f64..1.0,
        ) {
            let order = OrderParameter { phase: target, coherence: r };
            let next = kuramoto_step(phase, 0.0, order, 2.0, 0.01);
            prop_assert!(difference(next, target).abs() <= difference(phase, target).abs() + 1e-12);
        }
    }
}
