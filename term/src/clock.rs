//! This client's own clock: milliseconds since the Unix epoch, read from a
//! monotonic timer so it never jumps. The server's clock is this one plus the
//! offset that clock sync ([`shared::client::Clock`]) estimates.

use std::time::Instant;

/// A monotonic millisecond clock that starts at the system's wall-clock
/// time, so that even before clock sync it is a fair guess at the server's
/// time (both are Unix-epoch milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct LocalClock {
    /// The monotonic instant the clock started.
    origin: Instant,
    /// The wall-clock time at `origin`, in ms since the Unix epoch.
    origin_ms: f64,
}

impl LocalClock {
    /// A clock that reads the system time now and runs monotonically on.
    pub fn start() -> Self {
        Self { origin: Instant::now(), origin_ms: shared::clock::system_now_ms() }
    }

    /// The time now, in ms.
    pub fn now_ms(&self) -> f64 {
        self.at_ms(Instant::now())
    }

    /// The time at `instant`, in ms.
    pub fn at_ms(&self, instant: Instant) -> f64 {
        let since = instant.saturating_duration_since(self.origin).as_secs_f64() * 1000.0;
        self.origin_ms + since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn runs_at_the_pace_of_instants() {
        let clock = LocalClock::start();
        let now = Instant::now();
        let later = clock.at_ms(now + Duration::from_millis(1500)) - clock.at_ms(now);
        assert!((later - 1500.0).abs() < 1e-6);
        assert!(clock.now_ms() > 1.6e12, "starts at wall-clock time");
    }
}
