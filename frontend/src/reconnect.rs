//! When to reconnect after a lost connection, and what to tell the person
//! meanwhile: when a connection counts as stuck, how long a visible or a
//! hidden tab waits before it retries (the full-jitter backoff itself is
//! [`shared::backoff`]), and the status line. Pure: the random number comes
//! in as an argument, so the timing is tested natively.

use shared::backoff::Backoff;

/// Give up on a socket that has not opened after this long and retry.
pub const CONNECT_TIMEOUT_MS: f64 = 10_000.0;

/// The server broadcasts every tick (250 ms); a connection silent for this
/// long is dead even if the browser has not noticed, and is replaced.
pub const SILENCE_MS: f64 = 15_000.0;

/// The delay before the next attempt in milliseconds, given `random` in
/// `[0, 1)`, and counts the attempt. A hidden tab waits 10 to 20 s: nobody is
/// looking, and it reconnects at once when it becomes visible again.
pub fn next_delay_ms(backoff: &mut Backoff, random: f64, hidden: bool) -> f64 {
    if hidden { backoff.next_background_delay_ms(random) } else { backoff.next_delay_ms(random) }
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
    use shared::backoff::CAP_MS;

    #[test]
    fn visible_tabs_back_off_with_full_jitter() {
        let mut backoff = Backoff::default();
        assert_eq!(next_delay_ms(&mut backoff, 0.5, false), 250.0);
        assert_eq!(next_delay_ms(&mut backoff, 1.0, false), 1000.0);
        assert_eq!(backoff.attempt(), 2);
    }

    #[test]
    fn hidden_tabs_wait_long() {
        let mut backoff = Backoff::default();
        let delay = next_delay_ms(&mut backoff, 0.0, true);
        assert!((CAP_MS / 2.0..=CAP_MS).contains(&delay));
        assert_eq!(backoff.attempt(), 1, "a hidden tab's attempt counts too");
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
