//! Limits that keep one client from hurting the others: the connection cap,
//! the new-connection rate, and per-connection message rate and violations.
//!
//! Token buckets come from `governor`; what is ours is the policy around
//! them (when a rate-limited client has flooded long enough to be closed,
//! and counting protocol violations in a window).
//!
//! The per-connection bucket reads tokio's clock (not governor's default,
//! which reads the CPU's), so it follows `tokio::time::pause()` in tests just
//! as the flood and violation windows do.

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The server-wide caps on WebSocket connections.
#[derive(Debug)]
pub struct ConnectionLimits {
    open: Arc<AtomicUsize>,
    max_open: usize,
    accepts: DefaultDirectRateLimiter,
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `--max-connections` are open.
    #[error("the server is at its connection limit")]
    Full,
    /// More than `--max-accept-rate` connections arrived this second.
    #[error("too many new connections; retry shortly")]
    TooFast,
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionLimits {
    /// At most `max_open` connections, and `accepts_per_second` new ones a
    /// second (with a burst of as many).
    pub fn new(max_open: usize, accepts_per_second: u32) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max_open,
            accepts: RateLimiter::direct(Quota::per_second(non_zero(accepts_per_second))),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new connection, or says why not.
    pub fn admit(&self) -> Result<ConnectionSlot, Refusal> {
        let previous = self.open.fetch_add(1, Ordering::Relaxed);
        let slot = ConnectionSlot(self.open.clone());
        if previous >= self.max_open {
            return Err(Refusal::Full);
        }
        if self.accepts.check().is_err() {
            return Err(Refusal::TooFast);
        }
        Ok(slot)
    }
}

/// What the message limiter decided about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle the message.
    Accept,
    /// Drop the message; `notify` says whether to tell the client (at most
    /// once a second).
    Drop { notify: bool },
    /// The client has flooded for too long: close it.
    Close,
}

/// governor's view of tokio's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl governor::clock::Clock for TokioClock {
    type Instant = std::time::Instant;
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

/// A token bucket on tokio's clock.
type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// One connection's message rate limit and flood detector.
#[derive(Debug)]
pub struct MessageLimiter {
    bucket: Bucket,
    close_after: Duration,
    /// When the current run of rate-limited messages began.
    flooding_since: Option<Instant>,
    /// When the last message was dropped; a second without drops ends a run.
    last_drop: Option<Instant>,
    /// When the client was last told it is rate-limited.
    last_notice: Option<Instant>,
}

/// A pause this long without dropped messages ends a flood.
const FLOOD_PAUSE: Duration = Duration::from_secs(1);

impl MessageLimiter {
    /// `per_second` messages refill the bucket of `burst`; a client dropped
    /// without a pause for `close_after` is closed.
    pub fn new(per_second: u32, burst: u32, close_after: Duration) -> Self {
        let quota = Quota::per_second(non_zero(per_second)).allow_burst(non_zero(burst));
        Self {
            bucket: RateLimiter::direct_with_clock(quota, TokioClock),
            close_after,
            flooding_since: None,
            last_drop: None,
            last_notice: None,
        }
    }

    /// Decides about a message arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.check().is_ok() {
            return Verdict::Accept;
        }
        let paused = self.last_drop.is_none_or(|t| now.duration_since(t) >= FLOOD_PAUSE);
        if paused {
            self.flooding_since = Some(now);
        }
        self.last_drop = Some(now);
        if self.flooding_since.is_some_and(|t| now.duration_since(t) >= self.close_after) {
            return Verdict::Close;
        }
        let notify =
            self.last_notice.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if notify {
            self.last_notice = Some(now);
        }
        Verdict::Drop { notify }
    }
}

/// Counts protocol violations in a sliding window.
#[derive(Debug)]
pub struct ViolationCounter {
    max: u32,
    window: Duration,
    /// Times of recent violations, oldest first; never longer than `max`.
    recent: std::collections::VecDeque<Instant>,
}

impl ViolationCounter {
    /// Closes after `max` violations within `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max, window, recent: std::collections::VecDeque::new() }
    }

    /// Records a violation at `now`; true when the client is over the limit.
    pub fn record(&mut self, now: Instant) -> bool {
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > self.window) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let over = self.recent.len() >= self.max as usize;
        if self.recent.len() > self.max as usize {
            self.recent.pop_front();
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_refuses_and_frees() {
        let limits = ConnectionLimits::new(2, 1000);
        let a = limits.admit().unwrap();
        let _b = limits.admit().unwrap();
        assert_eq!(limits.admit().unwrap_err(), Refusal::Full);
        drop(a);
        assert!(limits.admit().is_ok());
    }

    #[test]
    fn accept_rate_refuses_a_burst() {
        let limits = ConnectionLimits::new(100, 3);
        let slots: Vec<_> = (0..3).map(|_| limits.admit().unwrap()).collect();
        assert_eq!(limits.admit().unwrap_err(), Refusal::TooFast);
        assert_eq!(limits.open(), 3);
        drop(slots);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_on_tokio_time() {
        let mut limiter = MessageLimiter::new(2, 2, Duration::from_secs(5));
        let now = Instant::now();
        assert_eq!(limiter.check(now), Verdict::Accept);
        assert_eq!(limiter.check(now), Verdict::Accept);
        assert_eq!(limiter.check(now), Verdict::Drop { notify: true });
        assert_eq!(limiter.check(now), Verdict::Drop { notify: false });
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(limiter.check(Instant::now()), Verdict::Accept);
    }

    #[tokio::test(start_paused = true)]
    async fn flooding_without_a_pause_closes_and_a_pause_forgives() {
        let mut limiter = MessageLimiter::new(1, 1, Duration::from_secs(3));
        let start = Instant::now();
        assert_eq!(limiter.check(start), Verdict::Accept);
        // Dropped messages 0.9 s apart: no one-second pause, so the run goes on.
        let mut verdicts = Vec::new();
        for i in 1..=5u32 {
            // Spend the token the clock refilled, then be dropped.
            let at = start + Duration::from_millis(900) * i;
            tokio::time::advance(at - Instant::now()).await;
            let _ = limiter.check(at);
            verdicts.push(limiter.check(at));
        }
        // 0.9 s to 3.6 s into the run: dropped; 4.5 s (3.6 s of flooding): closed.
        assert!(verdicts[..4].iter().all(|v| matches!(v, Verdict::Drop { .. })), "{verdicts:?}");
        assert_eq!(verdicts[4], Verdict::Close, "{verdicts:?}");

        let mut forgiven = MessageLimiter::new(1, 1, Duration::from_secs(3));
        assert_eq!(forgiven.check(start), Verdict::Accept);
        for i in 1..=4u32 {
            // A pause of more than a second between drops starts a new run.
            let at = start + Duration::from_millis(3_000) + Duration::from_millis(1_100) * i;
            tokio::time::advance(at - Instant::now()).await;
            let _ = forgiven.check(at);
            assert!(matches!(forgiven.check(at), Verdict::Drop { .. }));
        }
    }

    #[test]
    fn violations_close_at_the_limit_within_the_window() {
        let mut counter = ViolationCounter::new(3, Duration::from_secs(10));
        let t = Instant::now();
        assert!(!counter.record(t));
        assert!(!counter.record(t + Duration::from_secs(5)));
        // The first one has left the window.
        assert!(!counter.record(t + Duration::from_secs(11)));
        assert!(counter.record(t + Duration::from_secs(12)));
    }
}
