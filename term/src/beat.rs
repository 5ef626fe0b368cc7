//! The heart's scale through its beat: how much the terminal heart swells at
//! each phase.
//!
//! The swelling follows the lub-dub envelope the browser page's heart also
//! uses ([`shared::beat`]), so the two beat alike; only the gain is this
//! client's own. Everything here is a pure function of the phase (the
//! fraction of the beat that has passed, in `[0, 1)`), so the look of a beat
//! is tested without a terminal.

/// How strongly the heart is contracting at `phase`, in `[0, 1]`. The screen
/// also uses it to brighten the heart on the beat.
pub use shared::beat::envelope;

/// How much the heart grows at the peak of the lub (0.14 = 14 %). A little
/// more than the page's, because terminal cells are coarse pixels.
pub const GAIN: f64 = 0.14;

/// The largest [`scale`] the heart ever reaches; the layout sizes the heart so
/// that it still fits the terminal at this scale.
pub const PEAK_SCALE: f64 = 1.0 + GAIN;

/// The factor to draw the heart at for `phase`: 1 at rest, up to
/// [`PEAK_SCALE`] at the lub.
pub fn scale(phase: f64) -> f64 {
    1.0 + GAIN * envelope(phase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::beat::{DUB, LUB};

    #[test]
    fn swells_to_the_peak_scale_on_the_lub_and_less_on_the_dub() {
        assert_eq!(scale(LUB.center), PEAK_SCALE);
        let dub_size = scale(DUB.center);
        assert!(dub_size > 1.0 + GAIN * 0.4, "dub too weak: {dub_size}");
        assert!(dub_size < PEAK_SCALE - GAIN * 0.3, "dub {dub_size} vs lub {PEAK_SCALE}");
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
