//! Where a client's connection stands, when it counts as stuck, and how long
//! to wait before the next attempt (the full-jitter backoff itself is
//! [`crate::backoff`]). Pure: times are local milliseconds and the random
//! number comes in as an argument, so the timing is tested without waiting.

use crate::backoff::Backoff;

/// Give up on a socket that has not opened after this long (ms) and retry.
pub const CONNECT_TIMEOUT_MS: f64 = 10_000.0;

/// The server broadcasts every tick (250 ms); a connection silent for this
/// long (ms) is dead even if the browser or the operating system has not
/// noticed, and is replaced.
pub const SILENCE_MS: f64 = 15_000.0;

/// Where the connection stands, for the status line.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// A socket is opening, or open and waiting for the server's welcome.
    Connecting,
    /// The server welcomed this client.
    Connected,
    /// The last connection ended (`reason`); the next attempt starts at
    /// local time `until` (ms).
    Waiting {
        /// When the next attempt starts.
        until: f64,
        /// Why the last connection ended, in a few words for a person.
        reason: String,
    },
}

impl Link {
    /// The status line at local time `now`.
    pub fn label(&self, now: f64) -> String {
        match self {
            Link::Connecting => String::from("connecting…"),
            Link::Connected => String::from("connected"),
            Link::Waiting { until, reason } => {
                let seconds = ((until - now) / 1000.0).ceil().max(1.0);
                format!("{reason}: reconnecting in {seconds:.0} s")
            }
        }
    }

    /// Whether the server has welcomed this client.
    pub fn is_connected(&self) -> bool {
        matches!(self, Link::Connected)
    }

    /// Whether the client is waiting to try again.
    pub fn is_waiting(&self) -> bool {
        matches!(self, Link::Waiting { .. })
    }
}

/// Why a connection that has not closed is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// The socket did not open within [`CONNECT_TIMEOUT_MS`].
    NoAnswer,
    /// The server has said nothing for [`SILENCE_MS`].
    Silent,
}

impl Stuck {
    /// In a few words, for the status line.
    pub fn reason(self) -> &'static str {
        match self {
            Stuck::NoAnswer => "no answer",
            Stuck::Silent => "the server went silent",
        }
    }
}

/// The timing of one connection attempt: when it started, when it opened,
/// when the server was last heard from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    /// When the socket was created (local ms).
    started: f64,
    /// When it opened, once it has.
    opened: Option<f64>,
    /// When the server was last heard from (or the socket opened).
    heard: f64,
}

impl Attempt {
    /// An attempt that starts at local time `now`.
    pub fn start(now: f64) -> Self {
        Self { started: now, opened: None, heard: now }
    }

    /// The socket opened at `now`.
    pub fn opened(&mut self, now: f64) {
        self.opened = Some(now);
        self.heard = now;
    }

    /// The server was heard from at `now`.
    pub fn heard(&mut self, now: f64) {
        self.heard = now;
    }

    /// Whether the socket has opened.
    pub fn is_open(&self) -> bool {
        self.opened.is_some()
    }

    /// How long the socket has been open at `now`, in ms (0 if it never
    /// opened).
    pub fn up_ms(&self, now: f64) -> f64 {
        self.opened.map_or(0.0, |opened| now - opened)
    }

    /// When the attempt will count as stuck, unless something happens.
    pub fn deadline(&self) -> f64 {
        match self.opened {
            None => self.started + CONNECT_TIMEOUT_MS,
            Some(_) => self.heard + SILENCE_MS,
        }
    }

    /// Whether (and why) the attempt is stuck at `now`.
    pub fn stuck(&self, now: f64) -> Option<Stuck> {
        if now < self.deadline() {
            return None;
        }
        Some(if self.opened.is_none() { Stuck::NoAnswer } else { Stuck::Silent })
    }
}

/// The delay before the next attempt in milliseconds, given `random` in
/// `[0, 1)`, and counts the attempt. A client nobody is looking at (a hidden
/// tab) waits 10 to 20 s: it reconnects at once when it is looked at again.
pub fn next_delay_ms(backoff: &mut Backoff, random: f64, hidden: bool) -> f64 {
    if hidden { backoff.next_background_delay_ms(random) } else { backoff.next_delay_ms(random) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::CAP_MS;

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
        let waiting = |until: f64| Link::Waiting { until, reason: String::from("connection lost") };
        assert_eq!(Link::Connected.label(0.0), "connected");
        assert_eq!(Link::Connecting.label(0.0), "connecting…");
        assert_eq!(waiting(3500.0).label(1000.0), "connection lost: reconnecting in 3 s");
        assert_eq!(waiting(1000.0).label(1000.0), "connection lost: reconnecting in 1 s");
        assert!(!Link::Connecting.label(0.0).starts_with("connected"));
        assert!(waiting(0.0).is_waiting() && !waiting(0.0).is_connected());
    }

    #[test]
    fn a_socket_that_never_opens_is_given_up() {
        let attempt = Attempt::start(1000.0);
        assert_eq!(attempt.deadline(), 1000.0 + CONNECT_TIMEOUT_MS);
        assert_eq!(attempt.stuck(1000.0 + CONNECT_TIMEOUT_MS - 1.0), None);
        assert_eq!(attempt.stuck(1000.0 + CONNECT_TIMEOUT_MS), Some(Stuck::NoAnswer));
        assert_eq!(attempt.up_ms(5000.0), 0.0);
    }

    #[test]
    fn a_silent_server_is_given_up_and_every_word_counts() {
        let mut attempt = Attempt::start(0.0);
        attempt.opened(100.0);
        assert_eq!(attempt.up_ms(1100.0), 1000.0);
        attempt.heard(5000.0);
        assert_eq!(attempt.stuck(5000.0 + SILENCE_MS - 1.0), None);
        assert_eq!(attempt.stuck(5000.0 + SILENCE_MS), Some(Stuck::Silent));
        assert_eq!(Stuck::Silent.reason(), "the server went silent");
    }
}
