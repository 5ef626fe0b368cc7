//! When to reconnect after losing the server: full-jitter exponential
//! backoff, 0.5 s doubling to 20 s, as the browser page does.
//!
//! Full jitter (a delay drawn uniformly between zero and the ceiling) spreads
//! a crowd of clients that lost the server at the same moment, so a restarted
//! server is not hit by all of them at once. Pure: the random number comes in
//! as an argument, so the timing is tested without waiting.

use std::time::Duration;

/// The ceiling of the first retry.
pub const BASE: Duration = Duration::from_millis(500);

/// The highest ceiling.
pub const CAP: Duration = Duration::from_secs(20);

/// A connection that stayed up this long was a good one: the next loss
/// starts the backoff from the beginning.
pub const STABLE: Duration = Duration::from_secs(10);

/// A connection the server welcomed and kept for this long also resets the
/// backoff. A server that welcomes and at once hangs up (while it shuts down)
/// must not be retried every half second, hence not at once.
pub const WELCOMED_STABLE: Duration = Duration::from_secs(1);

/// How many attempts in a row have failed, which sets the next ceiling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The ceiling of the next delay: 0.5 s · 2^attempt, at most 20 s.
    pub fn ceiling(&self) -> Duration {
        BASE.saturating_mul(1 << self.attempt.min(16)).min(CAP)
    }

    /// The delay before the next attempt, given `random` in `[0, 1)`, and
    /// counts the attempt.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let random = if random.is_finite() { random.clamp(0.0, 1.0) } else { 0.5 };
        let delay = self.ceiling().mul_f64(random);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// A connection ended after being up for `up` (`welcomed` if the server
    /// greeted it): a good one resets the backoff.
    pub fn connection_ended(&mut self, up: Duration, welcomed: bool) {
        if up >= STABLE || (welcomed && up >= WELCOMED_STABLE) {
            self.attempt = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn ceiling_doubles_from_half_a_second_to_twenty() {
        let mut backoff = Backoff::default();
        let ceilings: Vec<Duration> = (0..9)
            .map(|_| {
                let ceiling = backoff.ceiling();
                backoff.next_delay(0.5);
                ceiling
            })
            .collect();
        let expected = [500, 1000, 2000, 4000, 8000, 16_000, 20_000, 20_000, 20_000];
        assert_eq!(ceilings, expected.map(ms));
    }

    #[test]
    fn delay_is_jittered_over_the_whole_range() {
        let mut backoff = Backoff { attempt: 3 };
        assert_eq!(backoff.clone().next_delay(0.0), Duration::ZERO);
        assert_eq!(backoff.clone().next_delay(0.25), ms(1000));
        assert_eq!(backoff.next_delay(1.0), ms(4000));
        assert_eq!(Backoff::default().next_delay(f64::NAN), ms(250));
    }

    #[test]
    fn never_overflows_after_many_failures() {
        let mut backoff = Backoff { attempt: u32::MAX - 1 };
        for _ in 0..5 {
            assert!(backoff.next_delay(0.999) < CAP);
        }
    }

    #[test]
    fn a_good_connection_resets_the_backoff() {
        let mut backoff = Backoff { attempt: 5 };
        backoff.connection_ended(ms(500), true);
        assert_eq!(backoff.ceiling(), ms(16_000), "a welcome-and-hang-up keeps backing off");
        backoff.connection_ended(ms(5000), false);
        assert_eq!(backoff.ceiling(), ms(16_000), "never welcomed, not long enough");
        backoff.connection_ended(ms(1500), true);
        assert_eq!(backoff.ceiling(), BASE);
        let mut backoff = Backoff { attempt: 5 };
        backoff.connection_ended(STABLE, false);
        assert_eq!(backoff.ceiling(), BASE);
    }
}
