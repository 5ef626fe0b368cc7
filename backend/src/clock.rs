//! The server's clock, the one every protocol time is on.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as protocol times are written.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        // A clock set before 1970 is broken; report the epoch rather than panic.
        .unwrap_or(0.0)
}
