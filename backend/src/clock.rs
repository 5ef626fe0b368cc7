//! The server's clock, the one every protocol time is on.
//!
//! Protocol times are milliseconds since the Unix epoch ([`now_ms`]); timers,
//! deadlines and vote expiry run on tokio's monotonic `Instant`. [`Clock`]
//! reads both, and is handed to the room and the socket handler so that a
//! test can make protocol time follow tokio's clock: under
//! `tokio::time::pause()` both then stand still and advance together.

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Milliseconds since the Unix epoch, as protocol times are written.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        // A clock set before 1970 is broken; report the epoch rather than panic.
        .unwrap_or(0.0)
}

/// Where protocol time comes from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some((instant, ms))`: protocol time was
    /// `ms` at tokio's `instant`, and advances exactly as tokio's clock does.
    anchor: Option<(Instant, f64)>,
}

impl Clock {
    /// The system clock, what the server runs on.
    pub fn system() -> Self {
        Self { anchor: None }
    }

    /// A clock that reads `epoch_ms` now and then follows tokio's clock
    /// (paused in tests, so protocol time is paused too).
    pub fn following_tokio(epoch_ms: f64) -> Self {
        Self { anchor: Some((Instant::now(), epoch_ms)) }
    }

    /// Protocol time now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> f64 {
        match self.anchor {
            None => now_ms(),
            Some((at, ms)) => ms + Instant::now().duration_since(at).as_secs_f64() * 1000.0,
        }
    }

    /// Monotonic time now, for deadlines and expiry.
    pub fn now(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_following_clock_advances_with_paused_time_only() {
        let clock = Clock::following_tokio(1_000.0);
        assert_eq!(clock.now_ms(), 1_000.0);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(clock.now_ms(), 1_250.0);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(Clock::system().now_ms() > 1_577_836_800_000.0);
    }
}
