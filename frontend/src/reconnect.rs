//! When to reconnect after a lost connection, and what to tell the person
//! meanwhile: full-jitter exponential backoff (as Centrifugo's client does,
//! 0.5 s doubling to 20 s) and the status line. Pure: the random number
//! comes in as an argument, so the timing is tested natively.
//!
//! Full jitter (a delay drawn uniformly between zero and the ceiling) spreads
//! a crowd of pages that lost the server at the same moment, so a restarted
//! server is not hit by all of them at once.

/// The ceiling of the first retry, in milliseconds.
pub const BASE_MS: f64 = 500.0;

/// The highest ceiling, in milliseconds.
pub const CAP_MS: f64 = 20_000.0;

/// A connection that stayed up this long was a good one: the next loss
/// starts the backoff from the beginning.
pub const STABLE_MS: f64 = 10_000.0;

/// A welcomed connection that lasted at least this long also resets the
/// backoff. A server that welcomes and at once hangs up (while shutting
/// down) must not be retried every half second, hence not at once.
pub const WELCOMED_STABLE_MS: f64 = 1_000.0;

/// Give up on a socket that has not opened after this long and retry.
pub const CONNECT_TIMEOUT_MS: f64 = 10_000.0;

/// The server broadcasts every tick (250 ms); a connection silent for this
/// long is dead even if the browser has not noticed, and is replaced.
pub const SILENCE_MS: f64 = 15_000.0;

/// How many failed attempts in a row, which sets the ceiling of the next
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

    /// The delay before the next attempt, given `random` in `[0, 1)`, and
    /// counts the attempt. A hidden tab waits 10 to 20 s: nobody is looking,
    /// and it reconnects at once when it becomes visible again.
    pub fn next_delay_ms(&mut self, random: f64, hidden: bool) -> f64 {
        let random = if random.is_finite() { random.clamp(0.0, 1.0) } else { 0.5 };
        let delay = if hidden { CAP_MS * (0.5 + 0.5 * random) } else { random * self.ceiling_ms() };
        self.attempt = self.attempt.saturating_add(1);
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
}

/// Where the connection stands, for the status line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// A socket is opening, or open and waiting for the server's welcome.
    Connecting,
    /// The server welcomed this page.
    Connected,
    /// Waiting to retry at local time `until` (ms).
    Waiting {
        /// When the next attempt starts.
        until: f64,
    },
}

impl Link {
    /// The status line at local time `now`.
    pub fn label(&self, now: f64) -> String {
        match self {
            Link::Connecting => String::from("connecting…"),
            Link::Connected => String::from("connected"),
            Link::Waiting { until } => {
                let seconds = ((until - now) / 1000.0).ceil().max(1.0);
                format!("reconnecting in {seconds:.0} s")
            }
        }
    }

    /// Whether the server has welcomed this page.
    pub fn is_connected(&self) -> bool {
        matches!(self, Link::Connected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let ceilings: Vec<f64> = (0..9)
            .map(|_| {
                let c = backoff.ceiling_ms();
                backoff.next_delay_ms(0.5, false);
                c
            })
            .collect();
        assert_eq!(
            ceilings,
            [500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 20000.0, 20000.0, 20000.0]
        );
    }

    #[test]
    fn delay_is_full_jitter_under_the_ceiling() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay_ms(0.0, false), 0.0);
        assert_eq!(backoff.next_delay_ms(0.5, false), 500.0);
        assert_eq!(backoff.next_delay_ms(0.999, false), 0.999 * 2000.0);
        assert_eq!(backoff.next_delay_ms(f64::NAN, false), 0.5 * 4000.0);
        for _ in 0..100 {
            backoff.next_delay_ms(0.3, false);
        }
        assert_eq!(backoff.next_delay_ms(1.0, false), CAP_MS);
    }

    #[test]
    fn hidden_tabs_wait_long() {
        let mut backoff = Backoff::default();
        let delay = backoff.next_delay_ms(0.0, true);
        assert!((CAP_MS / 2.0..=CAP_MS).contains(&delay));
    }

    #[test]
    fn good_connections_reset_the_backoff() {
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            backoff.next_delay_ms(0.5, false);
        }
        backoff.connection_ended(200.0, true);
        assert_eq!(backoff.attempt(), 5, "welcomed then dropped at once");
        backoff.connection_ended(3000.0, false);
        assert_eq!(backoff.attempt(), 5);
        backoff.connection_ended(3000.0, true);
        assert_eq!(backoff.attempt(), 0);
        backoff.next_delay_ms(0.5, false);
        backoff.connection_ended(STABLE_MS, false);
        assert_eq!(backoff.attempt(), 0);
    }

    #[test]
    fn status_line() {
        assert_eq!(Link::Connected.label(0.0), "connected");
        assert_eq!(Link::Connecting.label(0.0), "connecting…");
        assert_eq!(Link::Waiting { until: 3500.0 }.label(1000.0), "reconnecting in 3 s");
        assert_eq!(Link::Waiting { until: 1000.0 }.label(1000.0), "reconnecting in 1 s");
        assert!(!Link::Connecting.label(0.0).starts_with("connected"));
    }
}
