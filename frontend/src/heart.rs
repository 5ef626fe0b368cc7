//! The heart's geometry and its beat: the parametric outline, and the scale
//! and ripple the lub-dub envelope (shared with the terminal client, see
//! [`shared::beat`]) gives the heart at any phase. Pure functions of the
//! phase, so the look of a beat is tested without a canvas.
//!
//! Outline coordinates are in "heart units": the heart's half-width is 1, its
//! bounding box is centred on the origin, and y grows downwards as on a
//! canvas.

use shared::beat::LUB;
use shared::phase::difference;
use std::f64::consts::TAU;

pub use shared::beat::envelope;

/// How much the heart grows at the peak of the strongest beat (0.13 = 13 %).
pub const PULSE_GAIN: f64 = 0.13;

/// The textbook heart curve, x = 16 sin³t, y = 13 cos t − 5 cos 2t − 2 cos 3t
/// − cos 4t, in its own units (y up, x within ±16).
pub fn curve(t: f64) -> (f64, f64) {
    let x = 16.0 * t.sin().powi(3);
    let y = 13.0 * t.cos() - 5.0 * (2.0 * t).cos() - 2.0 * (3.0 * t).cos() - (4.0 * t).cos();
    (x, y)
}

/// `points` points around the heart in heart units (see the module docs),
/// starting at the dip between the lobes and going once round.
pub fn outline(points: usize) -> Vec<(f64, f64)> {
    let raw: Vec<(f64, f64)> =
        (0..points.max(3)).map(|i| curve(TAU * i as f64 / points.max(3) as f64)).collect();
    let (top, bottom) =
        raw.iter().fold((f64::MIN, f64::MAX), |(hi, lo), &(_, y)| (hi.max(y), lo.min(y)));
    let middle = (top + bottom) / 2.0;
    raw.into_iter().map(|(x, y)| (x / 16.0, (middle - y) / 16.0)).collect()
}

/// The factor to draw the heart at for `phase`: 1 at rest, up to
/// `1 + PULSE_GAIN` at the lub.
pub fn pulse_scale(phase: f64) -> f64 {
    1.0 + PULSE_GAIN * envelope(phase)
}

/// The ring that spreads out from the heart on each lub: its radius in heart
/// units and its opacity, or `None` once it has faded.
pub fn ripple(phase: f64) -> Option<(f64, f64)> {
    let since = difference(LUB.center, phase);
    if !(0.0..0.6).contains(&since) {
        return None;
    }
    let progress = since / 0.6;
    Some((1.05 + 0.6 * progress, 0.35 * (1.0 - progress).powi(2)))
}

/// Whether a point in heart units (for a heart drawn at scale 1) is on the
/// heart, with a little slack so a quick tap near the edge still counts.
pub fn hit(x: f64, y: f64) -> bool {
    // The outline is close to an ellipse of half-width 1 and half-height 0.9;
    // 10 % more is forgiving without catching taps far off the heart.
    (x / 1.1).powi(2) + (y / 1.0).powi(2) <= 1.0
}

/// Where the heart sits on a canvas of `width` × `height` CSS pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// Its centre, in CSS pixels from the canvas's left edge.
    pub x: f64,
    /// Its centre, in CSS pixels from the canvas's top edge.
    pub y: f64,
    /// Its half-width at rest (one heart unit), in CSS pixels.
    pub unit: f64,
}

impl Layout {
    /// The heart centred on the canvas, as large as fits with room for its
    /// beat and the small hearts around it, on a phone or a desktop.
    pub fn fit(width: f64, height: f64) -> Self {
        Self { x: width / 2.0, y: height / 2.0, unit: (width * 0.33).min(height * 0.36).max(1.0) }
    }

    /// A point on the canvas (CSS pixels) in heart units.
    pub fn to_heart(&self, x: f64, y: f64) -> (f64, f64) {
        ((x - self.x) / self.unit, (y - self.y) / self.unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_passes_through_its_landmarks() {
        // t = 0 is the dip between the lobes, t = π the tip.
        assert_eq!(curve(0.0), (0.0, 5.0));
        let (x, y) = curve(std::f64::consts::PI);
        assert!(x.abs() < 1e-9);
        assert!((y - (-17.0)).abs() < 1e-9, "tip at {y}");
        let (x, _) = curve(std::f64::consts::FRAC_PI_2);
        assert!((x - 16.0).abs() < 1e-9);
    }

    #[test]
    fn outline_is_centred_and_unit_wide() {
        let points = outline(400);
        assert_eq!(points.len(), 400);
        let max_x = points.iter().map(|p| p.0).fold(f64::MIN, f64::max);
        let min_x = points.iter().map(|p| p.0).fold(f64::MAX, f64::min);
        let max_y = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        let min_y = points.iter().map(|p| p.1).fold(f64::MAX, f64::min);
        assert!((max_x - 1.0).abs() < 1e-3 && (min_x + 1.0).abs() < 1e-3);
        assert!((max_y + min_y).abs() < 1e-9, "not centred: {min_y}..{max_y}");
        // The tip points down on a canvas: the last of the outline's y values
        // at t = π is the largest.
        assert!((points[200].1 - max_y).abs() < 1e-9);
    }

    #[test]
    fn pulse_scale_stays_in_bounds() {
        for i in 0..1000 {
            let s = pulse_scale(i as f64 / 1000.0);
            assert!((1.0..=1.0 + PULSE_GAIN).contains(&s));
        }
        assert_eq!(pulse_scale(LUB.center), 1.0 + PULSE_GAIN);
    }

    #[test]
    fn ripple_fades_out() {
        let (r0, a0) = ripple(LUB.center).unwrap();
        let (r1, a1) = ripple(LUB.center + 0.3).unwrap();
        assert!(r1 > r0 && a1 < a0);
        assert_eq!(ripple(0.8), None);
    }

    #[test]
    fn the_heart_fits_phones_and_desktops() {
        for (w, h) in [(360.0, 640.0), (1920.0, 1080.0), (800.0, 900.0), (320.0, 200.0)] {
            let layout = Layout::fit(w, h);
            // At the peak of the beat the heart (1 unit wide, 0.9 high each
            // side of its centre) still fits the canvas.
            let reach = layout.unit * (1.0 + PULSE_GAIN);
            assert!(reach <= w / 2.0 && reach * 0.9 <= h / 2.0, "{w}x{h}");
            assert!(reach >= (w.min(h)) * 0.3, "{w}x{h}: too small");
        }
        let layout = Layout::fit(800.0, 600.0);
        assert_eq!(layout.to_heart(400.0, 300.0), (0.0, 0.0));
        assert!(hit(layout.to_heart(400.0 + layout.unit * 0.5, 300.0).0, 0.0));
    }

    #[test]
    fn hits_the_heart_not_the_corners() {
        assert!(hit(0.0, 0.0));
        assert!(hit(0.5, -0.5));
        assert!(!hit(1.0, 1.0));
        assert!(!hit(0.0, 1.3));
    }
}
