//! The beat envelope: how much the heart swells at each phase of its beat.
//!
//! A beat is two bumps, as a real heart sounds: a strong "lub" early in the
//! beat and a softer "dub" a third of a beat later, then rest. Everything
//! here is a pure function of the phase (the fraction of the beat that has
//! passed, in `[0, 1)`), so the look of a beat is tested without a terminal.
//! The timings match the browser page's heart, so the two beat alike.

use shared::phase::difference;

/// How much the heart grows at the peak of the lub (0.14 = 14 %). A little
/// more than the page's, because terminal cells are coarse pixels.
pub const GAIN: f64 = 0.14;

/// The largest [`scale`] the heart ever reaches; the layout sizes the heart so
/// that it still fits the terminal at this scale.
pub const PEAK_SCALE: f64 = 1.0 + GAIN;

/// The "lub": the strong first sound, early in the beat.
const LUB: Bump = Bump { center: 0.06, attack: 0.035, decay: 0.09, height: 1.0 };

/// The "dub": the softer second sound, a third of a beat after the lub.
const DUB: Bump = Bump { center: 0.31, attack: 0.035, decay: 0.10, height: 0.55 };

/// One swelling of the heart: a bell that rises over `attack` and falls over
/// `decay` (fractions of a beat) around `center`.
struct Bump {
    center: f64,
    attack: f64,
    decay: f64,
    height: f64,
}

impl Bump {
    fn at(&self, phase: f64) -> f64 {
        // The signed distance wraps, so a bump near 0 also rises at 0.98.
        let x = difference(self.center, phase);
        let width = if x < 0.0 { self.attack } else { self.decay };
        self.height * (-(x / width).powi(2)).exp()
    }
}

/// How strongly the heart is contracting at `phase`, in `[0, 1]`: 1 at the
/// peak of the lub, about 0.55 at the dub, near 0 while it rests. The screen
/// also uses it to brighten the heart on the beat.
pub fn envelope(phase: f64) -> f64 {
    (LUB.at(phase) + DUB.at(phase)).min(1.0)
}

/// The factor to draw the heart at for `phase`: 1 at rest, up to
/// [`PEAK_SCALE`] at the lub.
pub fn scale(phase: f64) -> f64 {
    1.0 + GAIN * envelope(phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The phase in `[0, 1)` (sampled finely) where `scale` is largest within
    /// `range`.
    fn peak_in(range: std::ops::Range<f64>) -> f64 {
        let steps = 10_000;
        (0..steps)
            .map(|i| range.start + (range.end - range.start) * i as f64 / steps as f64)
            .max_by(|a, b| scale(*a).total_cmp(&scale(*b)))
            .unwrap()
    }

    #[test]
    fn lub_peaks_early_in_the_beat_at_full_size() {
        let lub = peak_in(0.0..0.2);
        assert!((lub - 0.06).abs() < 0.005, "lub peaked at {lub}");
        assert!((scale(lub) - PEAK_SCALE).abs() < 1e-3);
    }

    #[test]
    fn dub_peaks_a_third_later_and_softer() {
        let dub = peak_in(0.2..0.5);
        assert!((dub - 0.31).abs() < 0.01, "dub peaked at {dub}");
        let (lub_size, dub_size) = (scale(peak_in(0.0..0.2)), scale(dub));
        assert!(dub_size > 1.0 + GAIN * 0.4, "dub too weak: {dub_size}");
        assert!(dub_size < lub_size - GAIN * 0.3, "dub {dub_size} vs lub {lub_size}");
        // Between the two sounds the heart relaxes.
        assert!(scale(0.19) < dub_size);
    }

    #[test]
    fn rests_near_one_between_beats() {
        for phase in [0.55, 0.65, 0.75, 0.85, 0.9] {
            assert!((scale(phase) - 1.0).abs() < 0.01, "scale at {phase} is {}", scale(phase));
        }
    }

    #[test]
    fn stays_in_bounds_and_is_continuous_across_the_wrap() {
        for i in 0..1000 {
            let phase = i as f64 / 1000.0;
            assert!((1.0..=PEAK_SCALE).contains(&scale(phase)), "scale at {phase}");
        }
        assert!((scale(0.9999) - scale(0.0)).abs() < 1e-3);
    }
}
