//! The beat envelope: how strongly a heart contracts at each phase of its
//! beat, the same for every client so that all hearts beat alike.
//!
//! A beat is two bumps, as a real heart sounds: a strong "lub" early in the
//! beat and a softer "dub" a third of a beat later, then rest. Everything
//! here is a pure function of the phase (the fraction of the beat that has
//! passed, in `[0, 1)`), so the look of a beat is tested without a screen.
//! How much a heart grows with the envelope, and how it is drawn, is up to
//! each client.

use crate::phase::difference;

/// The "lub": the strong first sound, early in the beat.
pub const LUB: Bump = Bump { center: 0.06, attack: 0.035, decay: 0.09, height: 1.0 };

/// The "dub": the softer second sound, a third of a beat after the lub.
pub const DUB: Bump = Bump { center: 0.31, attack: 0.035, decay: 0.10, height: 0.55 };

/// One swelling of the heart: a bell that rises over `attack` and falls over
/// `decay` (fractions of a beat) around `center`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bump {
    /// The phase at which the bump peaks.
    pub center: f64,
    /// How quickly it rises before its peak, as a fraction of a beat.
    pub attack: f64,
    /// How slowly it falls after its peak, as a fraction of a beat.
    pub decay: f64,
    /// Its height at the peak.
    pub height: f64,
}

impl Bump {
    /// The bump's value at `phase`: `height` at `center`, near 0 far from it.
    pub fn at(&self, phase: f64) -> f64 {
        // The signed distance wraps, so a bump near 0 also rises at 0.98.
        let x = difference(self.center, phase);
        let width = if x < 0.0 { self.attack } else { self.decay };
        self.height * (-(x / width).powi(2)).exp()
    }
}

/// How strongly the heart is contracting at `phase`, in `[0, 1]`: 1 at the
/// peak of the lub, about 0.55 at the dub, near 0 while it rests.
pub fn envelope(phase: f64) -> f64 {
    (LUB.at(phase) + DUB.at(phase)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::wrap;
    use proptest::prelude::*;

    /// The phase (sampled finely) where the envelope is largest within
    /// `range`.
    fn peak_in(range: std::ops::Range<f64>) -> f64 {
        let steps = 10_000;
        (0..steps)
            .map(|i| range.start + (range.end - range.start) * i as f64 / steps as f64)
            .max_by(|a, b| envelope(*a).total_cmp(&envelope(*b)))
            .unwrap()
    }

    #[test]
    fn lub_peaks_early_in_the_beat_at_full_strength() {
        let lub = peak_in(0.0..0.2);
        assert!((lub - LUB.center).abs() < 0.005, "lub peaked at {lub}");
        assert!((envelope(lub) - 1.0).abs() < 1e-3, "lub {}", envelope(lub));
        assert_eq!(envelope(LUB.center), 1.0);
    }

    #[test]
    fn dub_peaks_a_third_later_and_softer() {
        let dub = peak_in(0.2..0.5);
        assert!((dub - DUB.center).abs() < 0.01, "dub peaked at {dub}");
        let strength = envelope(dub);
        assert!(strength > 0.45 && strength < 0.7, "dub {strength}");
        // Between the two sounds the heart relaxes visibly.
        let trough =
            (0..=100).map(|i| envelope(0.12 + 0.18 * i as f64 / 100.0)).fold(1.0, f64::min);
        assert!(trough < strength - 0.1, "trough {trough}");
    }

    #[test]
    fn rests_between_beats() {
        for i in 0..=1000 {
            let phase = 0.55 + 0.35 * i as f64 / 1000.0;
            assert!(envelope(phase) < 0.02, "envelope at {phase} is {}", envelope(phase));
        }
    }

    #[test]
    fn is_continuous_across_the_wrap() {
        assert!((envelope(0.9999) - envelope(0.0)).abs() < 1e-3);
        for i in 0..10_000 {
            let a = i as f64 / 10_000.0;
            let b = wrap(a + 1e-4);
            assert!((envelope(a) - envelope(b)).abs() < 0.01, "jump at {a}");
        }
    }

    proptest! {
        #[test]
        fn envelope_is_in_range(phase in -10.0f64..10.0) {
            prop_assert!((0.0..=1.0).contains(&envelope(phase)));
        }

        #[test]
        fn envelope_repeats_every_beat(phase in 0.0f64..1.0, beats in -5i32..5) {
            let later = envelope(phase + f64::from(beats));
            prop_assert!((later - envelope(phase)).abs() < 1e-6);
        }
    }
}
