//! When to reconnect after losing the server: full-jitter exponential
//! backoff, 0.5 s doubling to 20 s (as Centrifugo's client does), the same
//! for the browser page and the terminal client.
//!
//! Full jitter (a delay drawn uniformly between zero and the ceiling) spreads
//! a crowd of clients that lost the server at the same moment, so a restarted
//! server is not hit by all of them at once. Pure: the random number comes in
//! as an argument, so the timing is tested without waiting. Times are in
//! milliseconds, as the page's clock counts them; a client that counts in
//! other units converts at its edge.

/// The ceiling of the first retry, in milliseconds.
pub const BASE_MS: f64 = 500.0;

/// The highest ceiling, in milliseconds.
pub const CAP_MS: f64 = 20_000.0;

/// A connection that stayed up this long (in milliseconds) was a good one:
/// the next loss starts the backoff from the beginning.
pub const STABLE_MS: f64 = 10_000.0;

/// A connection the server welcomed and kept for this long (in milliseconds)
/// also resets the backoff. A server that welcomes and at once hangs up
/// (while it shuts down) must not be retried every half second, hence not at
/// once.
pub const WELCOMED_STABLE_MS: f64 = 1_000.0;

/// How many attempts in a row have failed, which sets the ceiling of the next
/// delay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The ceiling of the next delay: 0.5 s · 2^attempt, at most 20 s.
    pub fn ceiling_ms(&self) -> f64 {
        (BASE_MS * 2f64.powi(self.attempt.min(16) as i32)).min(CAP_MS)
    }

    /// How many attempts in a row have failed.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt in milliseconds, given `random` in
    /// `[0, 1)`, and counts the attempt.
    pub fn next_delay_ms(&mut self, random: f64) -> f64 {
        let delay = unit(random) * self.ceiling_ms();
        self.count_attempt();
        delay
    }

    /// The delay before the next attempt of a client nobody is watching (a
    /// hidden browser tab) in milliseconds, given `random` in `[0, 1)`:
    /// between half the cap and the cap (10 to 20 s) whatever the attempt.
    /// Counts the attempt like [`next_delay_ms`](Self::next_delay_ms).
    pub fn next_background_delay_ms(&mut self, random: f64) -> f64 {
        let delay = CAP_MS * (0.5 + 0.5 * unit(random));
        self.count_attempt();
        delay
    }

    /// A connection ended after `up_ms` milliseconds open (`welcomed` if the
    /// server greeted it): a good one resets the backoff.
    pub fn connection_ended(&mut self, up_ms: f64, welcomed: bool) {
        if up_ms >= STABLE_MS || (welcomed && up_ms >= WELCOMED_STABLE_MS) {
            self.attempt = 0;
        }
    }

    /// Starts over, as when the browser says it is back online.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn count_attempt(&mut self) {
        self.attempt = self.attempt.saturating_add(1);
    }
}

/// `random` as a number in `[0, 1]`: clamped, and the middle if it is not a
/// number at all.
fn unit(random: f64) -> f64 {
    if random.is_finite() { random.clamp(0.0, 1.0) } else { 0.5 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ceiling_doubles_from_half_a_second_to_twenty() {
        let mut backoff = Backoff::default();
        let ceilings: Vec<f64> = (0..9)
            .map(|_| {
                let ceiling = backoff.ceiling_ms();
                backoff.next_delay_ms(0.5);
                ceiling
            })
            .collect();
        assert_eq!(
            ceilings,
            [500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16_000.0, 20_000.0, 20_000.0, 20_000.0]
        );
        assert_eq!(backoff.attempt(), 9);
    }

    #[test]
    fn delay_is_full_jitter_under_the_ceiling() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay_ms(0.0), 0.0);
        assert_eq!(backoff.next_delay_ms(0.5), 500.0);
        assert_eq!(backoff.next_delay_ms(0.999), 0.999 * 2000.0);
        assert_eq!(backoff.next_delay_ms(f64::NAN), 0.5 * 4000.0);
        let backoff = Backoff { attempt: 3 };
        assert_eq!(backoff.clone().next_delay_ms(0.25), 1000.0);
        assert_eq!(backoff.clone().next_delay_ms(1.0), 4000.0);
        assert_eq!(backoff.clone().next_delay_ms(7.0), 4000.0, "clamped");
        assert_eq!(backoff.clone().next_delay_ms(-1.0), 0.0, "clamped");
        assert_eq!(Backoff::default().next_delay_ms(f64::INFINITY), 250.0);
    }

    #[test]
    fn never_overflows_after_many_failures() {
        let mut backoff = Backoff { attempt: u32::MAX - 1 };
        for _ in 0..5 {
            assert!(backoff.next_delay_ms(0.999) < CAP_MS);
        }
        assert_eq!(backoff.attempt(), u32::MAX);
        assert_eq!(backoff.next_delay_ms(1.0), CAP_MS);
    }

    #[test]
    fn background_delays_are_long_and_still_count() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_background_delay_ms(0.0), CAP_MS / 2.0);
        assert_eq!(backoff.next_background_delay_ms(1.0), CAP_MS);
        assert_eq!(backoff.next_background_delay_ms(f64::NAN), CAP_MS * 0.75);
        assert_eq!(backoff.attempt(), 3);
        assert_eq!(backoff.ceiling_ms(), 4000.0);
    }

    #[test]
    fn a_good_connection_resets_the_backoff() {
        let mut backoff = Backoff { attempt: 5 };
        backoff.connection_ended(200.0, true);
        assert_eq!(backoff.attempt(), 5, "a welcome-and-hang-up keeps backing off");
        backoff.connection_ended(5000.0, false);
        assert_eq!(backoff.attempt(), 5, "never welcomed, not long enough");
        backoff.connection_ended(WELCOMED_STABLE_MS, true);
        assert_eq!(backoff.attempt(), 0);
        assert_eq!(backoff.ceiling_ms(), BASE_MS);
        let mut backoff = Backoff { attempt: 5 };
        backoff.connection_ended(STABLE_MS, false);
        assert_eq!(backoff.attempt(), 0);
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff { attempt: 7 };
        backoff.reset();
        assert_eq!(backoff, Backoff::default());
    }

    proptest! {
        #[test]
        fn delays_stay_under_the_ceiling(attempt in 0u32..40, random in -1.0f64..2.0) {
            let mut backoff = Backoff { attempt };
            let ceiling = backoff.ceiling_ms();
            let delay = backoff.next_delay_ms(random);
            prop_assert!((0.0..=ceiling).contains(&delay));
            prop_assert!((BASE_MS..=CAP_MS).contains(&ceiling));
            prop_assert!(backoff.ceiling_ms() >= ceiling);
        }

        #[test]
        fn background_delays_stay_in_the_upper_half(attempt in 0u32..40, random in -1.0f64..2.0) {
            let delay = Backoff { attempt }.next_background_delay_ms(random);
            prop_assert!((CAP_MS / 2.0..=CAP_MS).contains(&delay));
        }
    }
}
