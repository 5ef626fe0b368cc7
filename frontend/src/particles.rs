//! The small hearts that burst out of the big one when love is sent: where
//! each is, how it moves and fades. Pure: randomness comes in as a function
//! returning numbers in `[0, 1)`, so bursts are tested natively.
//!
//! Positions are in heart units (the big heart's half-width is 1, origin at
//! its centre, y down), so the canvas scales them with the heart.

use std::f64::consts::TAU;

/// More than this many live particles and the oldest make room: a flood of
/// love must not slow the page down.
pub const MAX_PARTICLES: usize = 400;

/// The most particles one burst adds, however many taps it stands for.
pub const MAX_PER_BURST: u32 = 24;

/// Whose love a particle shows; the canvas colours them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// This page's own taps.
    Me,
    /// Taps from other people in the room, seen as the room's total grows.
    Others,
}

/// One small heart in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Particle {
    /// Position in heart units.
    pub x: f64,
    /// Position in heart units (down is positive).
    pub y: f64,
    vx: f64,
    vy: f64,
    /// Seconds since it was born.
    age: f64,
    /// Seconds it lives.
    life: f64,
    /// Its half-width in heart units.
    pub size: f64,
    /// How far it is tilted, in radians.
    pub tilt: f64,
    spin: f64,
    /// Whose love it is.
    pub sender: Sender,
}

impl Particle {
    /// How opaque it is now: it pops in quickly and fades out slowly.
    pub fn alpha(&self) -> f64 {
        let t = (self.age / self.life).clamp(0.0, 1.0);
        let fade_in = (self.age / 0.08).min(1.0);
        fade_in * (1.0 - t).powf(1.5)
    }
}

/// Every particle in flight.
#[derive(Debug, Clone, Default)]
pub struct Particles {
    items: Vec<Particle>,
}

impl Particles {
    /// Adds a burst for `taps` taps (at most [`MAX_PER_BURST`] particles),
    /// each flying outwards from inside the big heart.
    pub fn burst(&mut self, taps: u32, sender: Sender, random: &mut impl FnMut() -> f64) {
        let count = match sender {
            // A single tap still deserves a little fountain of hearts.
            Sender::Me => (taps.saturating_mul(5)).clamp(5, MAX_PER_BURST),
            Sender::Others => (taps.saturating_mul(3)).clamp(3, MAX_PER_BURST),
        };
        for _ in 0..count {
            let angle = TAU * random();
            let speed = 1.3 + 1.5 * random();
            let start = 0.25 * random();
            self.items.push(Particle {
                x: start * angle.cos(),
                y: start * angle.sin() - 0.1,
                vx: speed * angle.cos(),
                // A little upward kick, so the burst rises like a fountain.
                vy: speed * angle.sin() - 0.7,
                age: 0.0,
                life: 1.1 + 0.9 * random(),
                size: 0.05 + 0.06 * random(),
                tilt: 0.6 * (random() - 0.5),
                spin: 2.0 * (random() - 0.5),
                sender,
            });
        }
        if self.items.len() > MAX_PARTICLES {
            let extra = self.items.len() - MAX_PARTICLES;
            self.items.drain(..extra);
        }
    }

    /// Moves every particle on by `dt` seconds and forgets the faded ones.
    pub fn step(&mut self, dt: f64) {
        // A hidden tab comes back with one huge step; particles just expire.
        let dt = dt.clamp(0.0, 0.25);
        for p in &mut self.items {
            p.age += dt;
            p.x += p.vx * dt;
            p.y += p.vy * dt;
            // Drag slows them, and a gentle lift makes them float up.
            let drag = (-1.8 * dt).exp();
            p.vx *= drag;
            p.vy = p.vy * drag - 0.35 * dt;
            p.tilt += p.spin * dt;
        }
        self.items.retain(|p| p.age < p.life);
    }

    /// The particles in flight, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Particle> {
        self.items.iter()
    }

    /// How many are in flight.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none are in flight.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed, evenly spread sequence standing in for `Math.random`.
    fn sequence() -> impl FnMut() -> f64 {
        let mut i = 0u32;
        move || {
            i += 1;
            (f64::from(i) * 0.618_033_988_7).fract()
        }
    }

    #[test]
    fn a_burst_flies_out_and_fades_away() {
        let mut particles = Particles::default();
        particles.burst(1, Sender::Me, &mut sequence());
        assert_eq!(particles.len(), 5);
        let spread = |p: &Particles| p.iter().map(|q| q.x.hypot(q.y)).fold(0.0, f64::max);
        let before = spread(&particles);
        for _ in 0..30 {
            particles.step(1.0 / 60.0);
        }
        assert!(spread(&particles) > before + 0.2, "particles did not move out");
        assert!(particles.iter().all(|p| (0.0..=1.0).contains(&p.alpha())));
        for _ in 0..200 {
            particles.step(1.0 / 60.0);
        }
        assert!(particles.is_empty());
    }

    #[test]
    fn bursts_are_bounded() {
        let mut particles = Particles::default();
        particles.burst(1000, Sender::Others, &mut sequence());
        assert_eq!(particles.len(), MAX_PER_BURST as usize);
        for _ in 0..100 {
            particles.burst(1000, Sender::Me, &mut sequence());
        }
        assert_eq!(particles.len(), MAX_PARTICLES);
    }

    #[test]
    fn a_long_pause_does_not_fling_particles_away() {
        let mut particles = Particles::default();
        particles.burst(1, Sender::Me, &mut sequence());
        particles.step(600.0);
        assert!(particles.iter().all(|p| p.x.abs() < 2.0 && p.y.abs() < 2.0));
    }
}
