//! Clock sync: the offset that turns a client's own clock into the server's,
//! from bursts of request/response samples (see [`crate::clock`] for one
//! sample's arithmetic). Pure: the session sends the requests and feeds the
//! answers in.
//!
//! "Local" times are the client's monotonic clock in milliseconds (close to
//! Unix time, so that before the first sync it is a fair guess of the
//! server's); "server" times are the server's clock in milliseconds since
//! the Unix epoch.

use crate::clock::{ClockSample, best_offset};

/// How many round trips make one clock sync; the shortest one wins.
pub const CLOCK_SAMPLES: usize = 5;

/// A connected client measures the offset again this often (local ms), so
/// that drift between the two clocks cannot pile up over a long session.
pub const RESYNC_MS: f64 = 30_000.0;

/// The offset between a client's clock and the server's, from a few
/// request/response samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Clock {
    /// The samples of the current sync; earlier syncs are forgotten so that
    /// drift between the two clocks does not pile up.
    samples: Vec<ClockSample>,
    /// What to add to a local time to get the server's; `None` until the
    /// first answer.
    offset: Option<f64>,
}

impl Clock {
    /// Starts a new sync (after a reconnect or when the tab comes back): the
    /// current offset stays in use until the new sync has all its samples.
    pub fn restart(&mut self) {
        self.samples.clear();
    }

    /// Records the answer to a request sent at local `t0`, which the server
    /// answered at `server_time` and which arrived at local `t1`.
    pub fn record(&mut self, t0: f64, server_time: f64, t1: f64) {
        self.samples.push(ClockSample { t0, server_time, t1 });
        // The first sample is used at once so the client can start
        // reporting; after that the offset only changes when a sync is
        // complete, so a congested moment cannot replace a good estimate
        // with a worse one.
        if (self.offset.is_none() || self.samples.len() >= CLOCK_SAMPLES)
            && let Some(offset) = best_offset(&self.samples)
        {
            self.offset = Some(offset);
        }
    }

    /// Whether the current sync wants another request.
    pub fn wants_sample(&self) -> bool {
        self.samples.len() < CLOCK_SAMPLES
    }

    /// What to add to a local time to read the server's clock.
    pub fn offset(&self) -> Option<f64> {
        self.offset
    }

    /// The server's clock at local time `local`, once synced.
    pub fn server_time(&self, local: f64) -> Option<f64> {
        self.offset.map(|offset| local + offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_clock_sample_is_used_at_once_then_the_best_of_a_full_sync() {
        let mut clock = Clock::default();
        assert_eq!(clock.server_time(5.0), None);
        clock.record(0.0, 1100.0, 200.0); // offset 1000, round trip 200
        assert_eq!(clock.offset(), Some(1000.0));
        clock.restart();
        clock.record(300.0, 1312.0, 320.0); // offset 1002, round trip 20
        clock.record(400.0, 1450.0, 500.0);
        // A sync in progress does not replace the offset in use.
        assert_eq!(clock.offset(), Some(1000.0));
        clock.record(600.0, 1601.0, 604.0); // offset 999, round trip 4
        clock.record(700.0, 1760.0, 800.0);
        assert!(clock.wants_sample());
        clock.record(900.0, 1950.0, 1000.0);
        assert!(!clock.wants_sample());
        assert_eq!(clock.offset(), Some(999.0));
        assert_eq!(clock.server_time(10.0), Some(1009.0));
    }

    #[test]
    fn a_sample_from_a_clock_that_jumped_is_not_used() {
        let mut clock = Clock::default();
        clock.record(500.0, 1000.0, 400.0); // arrived before it was sent
        assert_eq!(clock.offset(), None);
        clock.record(600.0, 1610.0, 620.0);
        assert_eq!(clock.offset(), Some(1000.0));
    }
}
