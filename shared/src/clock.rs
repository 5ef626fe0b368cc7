//! Estimating how far a client's clock is from the server's (Cristian's
//! algorithm, as in NTP): the client sends `t0` on its own clock, the server
//! answers with its time, and the client notes `t1` when the answer arrives.
//! Assuming the two legs took equally long, the server's clock read
//! `server_time` at the client's `(t0 + t1) / 2`.

/// The system's wall clock in milliseconds since the Unix epoch, as the
/// server's clock counts (native only: a browser reads `performance`). A
/// system clock set before 1970 reads as the epoch itself; clock sync
/// corrects any error anyway.
#[cfg(not(target_arch = "wasm32"))]
pub fn system_now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1000.0)
}

/// One request/response round of clock sync, all in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockSample {
    /// When the client sent the request, on the client's clock.
    pub t0: f64,
    /// What the server's clock read when it answered.
    pub server_time: f64,
    /// When the answer arrived, on the client's clock.
    pub t1: f64,
}

impl ClockSample {
    /// How long the round trip took; the error of [`Self::offset`] is at most
    /// half of it.
    pub fn round_trip(&self) -> f64 {
        self.t1 - self.t0
    }

    /// What to add to the client's clock to read the server's.
    pub fn offset(&self) -> f64 {
        self.server_time - (self.t0 + self.t1) / 2.0
    }
}

/// The offset from the sample with the shortest round trip (the one whose
/// error bound is smallest), or `None` without samples. Samples with a
/// negative or non-finite round trip (a clock that jumped) are ignored.
pub fn best_offset(samples: &[ClockSample]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.round_trip().is_finite() && s.round_trip() >= 0.0)
        .min_by(|a, b| a.round_trip().total_cmp(&b.round_trip()))
        .map(ClockSample::offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_system_clock_reads_unix_milliseconds() {
        // 2023-11-14 and some time in the 22nd century.
        assert!((1.7e12..5e12).contains(&system_now_ms()), "{}", system_now_ms());
    }

    #[test]
    fn offset_of_symmetric_round_trip() {
        // The server is 1000 ms ahead; the request took 10 ms each way.
        let sample = ClockSample { t0: 0.0, server_time: 1010.0, t1: 20.0 };
        assert_eq!(sample.offset(), 1000.0);
        assert_eq!(sample.round_trip(), 20.0);
    }

    #[test]
    fn best_offset_keeps_the_shortest_round_trip() {
        let samples = [
            ClockSample { t0: 0.0, server_time: 1300.0, t1: 400.0 },
            ClockSample { t0: 500.0, server_time: 1505.0, t1: 510.0 },
            ClockSample { t0: 600.0, server_time: 1700.0, t1: 800.0 },
            ClockSample { t0: 900.0, server_time: 1.0, t1: 899.0 },
        ];
        assert_eq!(best_offset(&samples), Some(1000.0));
        assert_eq!(best_offset(&[]), None);
    }

    proptest! {
        #[test]
        fn offset_error_is_bounded_by_half_the_round_trip(
            true_offset in -1e6f64..1e6,
            t0 in 0.0f64..1e9,
            up in 0.0f64..500.0,
            down in 0.0f64..500.0,
        ) {
            let sample = ClockSample { t0, server_time: t0 + up + true_offset, t1: t0 + up + down };
            prop_assert!((sample.offset() - true_offset).abs() <= sample.round_trip() / 2.0 + 1e-6);
        }
    }
}
