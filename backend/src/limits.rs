//! Limits that keep one client from hurting the others: the connection
//! caps (server-wide and per client address), the new-connection rate, the
//! HTTP connection cap, per-connection message rate and violations, and the
//! tally of refusals that is logged as a periodic summary.
//!
//! Token buckets come from `governor`; what is ours is the policy around
//! them (when a rate-limited client has flooded long enough to be closed,
//! and counting protocol violations in a window).
//!
//! The per-connection bucket reads tokio's clock (not governor's default,
//! which reads the CPU's), so it follows `tokio::time::pause()` in tests just
//! as the flood and violation windows do.

use crate::metrics::metrics;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The server-wide caps on WebSocket connections.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// Open connections, in total and by client address; shared with every
    /// [`ConnectionSlot`] so that dropping one gives its place back.
    open: Arc<OpenConnections>,
    max_open: usize,
    /// One client (address) may not take every slot.
    max_per_address: usize,
    accepts: DefaultDirectRateLimiter,
    /// Every refusal, counted for `/metrics` and the periodic summary.
    pub refusals: RefusalTally,
}

/// Open connections, in total and by client address.
#[derive(Debug, Default)]
struct OpenConnections {
    total: AtomicUsize,
    /// Only addresses with at least one open connection are here, so the
    /// map is never larger than the connection cap.
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

impl OpenConnections {
    fn by_address(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A panic while holding the lock leaves plain counts behind, still
        // usable.
        self.by_address.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
    /// `--max-connections-per-ip` are open from this client's address.
    #[error("too many connections from your address")]
    PerAddress,
}

/// Counts one open connection (and one for its client's address) until
/// dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    open: Arc<OpenConnections>,
    address: IpAddr,
}

impl ConnectionSlot {
    /// The client's address (as the upgrade saw it: through a trusted
    /// proxy, the one it forwarded).
    pub fn address(&self) -> IpAddr {
        self.address
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.total.fetch_sub(1, Ordering::Relaxed);
        let mut by_address = self.open.by_address();
        if let Some(count) = by_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

/// The address a client is counted under: itself for IPv4; for IPv6 its
/// /64, since one host is usually handed a whole /64 and could otherwise
/// take a new address for every connection. An IPv4 client seen through an
/// IPv6 socket (`::ffff:a.b.c.d`) counts as that IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

impl ConnectionLimits {
    /// At most `max_open` connections, `max_per_address` of them from one
    /// client address, and `accepts_per_second` new ones a second (with a
    /// burst of as many).
    pub fn new(max_open: usize, accepts_per_second: u32, max_per_address: usize) -> Self {
        Self {
            open: Arc::default(),
            max_open,
            max_per_address,
            accepts: RateLimiter::direct(Quota::per_second(non_zero(accepts_per_second))),
            refusals: RefusalTally::default(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.total.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new connection from `client`, or says why not.
    /// A refused connection takes no slot and, when refused for its
    /// address, no token of the accept rate either.
    pub fn admit(&self, client: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let address = address_key(client);
        {
            let mut by_address = self.open.by_address();
            if self.open.total.load(Ordering::Relaxed) >= self.max_open {
                return Err(Refusal::Full);
            }
            let from_address = by_address.get(&address).copied().unwrap_or(0);
            if from_address >= self.max_per_address {
                return Err(Refusal::PerAddress);
            }
            if self.accepts.check().is_err() {
                return Err(Refusal::TooFast);
            }
            // Counted under the lock, so that racing admissions cannot both
            // take the last slot.
            *by_address.entry(address).or_insert(0) += 1;
            self.open.total.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ConnectionSlot { open: self.open.clone(), address })
    }
}

/// The kinds of refusal the summary and `/metrics` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// An upgrade over `--max-connections`.
    Full,
    /// An upgrade over `--max-accept-rate`.
    TooFast,
    /// An upgrade over `--max-connections-per-ip`.
    PerAddress,
    /// An upgrade while the server drains.
    Draining,
    /// An upgrade from a browser page of another origin.
    Origin,
    /// An upgrade with doubled or malformed handshake headers.
    BadHandshake,
    /// A TCP connection over `--max-http-connections`.
    HttpFull,
}

impl RefusalKind {
    /// Every kind, in the order the summary lists them.
    pub const ALL: [RefusalKind; 7] = [
        RefusalKind::Full,
        RefusalKind::TooFast,
        RefusalKind::PerAddress,
        RefusalKind::Draining,
        RefusalKind::Origin,
        RefusalKind::BadHandshake,
        RefusalKind::HttpFull,
    ];

    /// A bounded, stable name for metrics labels and the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Full => "full",
            RefusalKind::TooFast => "too_fast",
            RefusalKind::PerAddress => "per_ip",
            RefusalKind::Draining => "draining",
            RefusalKind::Origin => "origin",
            RefusalKind::BadHandshake => "bad_handshake",
            RefusalKind::HttpFull => "http_full",
        }
    }
}

impl From<Refusal> for RefusalKind {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Full => RefusalKind::Full,
            Refusal::TooFast => RefusalKind::TooFast,
            Refusal::PerAddress => RefusalKind::PerAddress,
        }
    }
}

/// Refusals since the last summary. A refusal is never logged on its own:
/// a reconnect storm is thousands of them a second, exactly what the accept
/// limit exists to absorb. Each is counted in `/metrics` at once, and the
/// server logs one summary line at most every minute (and at shutdown).
#[derive(Debug, Default)]
pub struct RefusalTally {
    counts: [AtomicU64; RefusalKind::ALL.len()],
}

impl RefusalTally {
    /// Counts one refusal of `kind`, here and in `/metrics`.
    pub fn record(&self, kind: RefusalKind) {
        let index = RefusalKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        match kind {
            RefusalKind::HttpFull => metrics().http_connections_refused.increment(1),
            upgrade => metrics().upgrade_refused(upgrade.as_str()),
        }
    }

    /// The refusals since the last call, as `kind=count` pairs, or `None`
    /// when there were none.
    pub fn take_summary(&self) -> Option<String> {
        let parts: Vec<String> = RefusalKind::ALL
            .iter()
            .zip(&self.counts)
            .filter_map(|(kind, count)| match count.swap(0, Ordering::Relaxed) {
                0 => None,
                n => Some(format!("{}={n}", kind.as_str())),
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// A cap on open HTTP connections, apart from the WebSocket cap: without
/// it, clients that open connections and never read can take every
/// descriptor the process has.
#[derive(Debug, Clone)]
pub struct HttpConnections {
    open: Arc<AtomicUsize>,
    max_open: usize,
}

/// Counts one open HTTP connection until dropped.
#[derive(Debug)]
pub struct HttpSlot(Arc<AtomicUsize>);

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics().http_connections_open.decrement(1.0);
    }
}

impl HttpConnections {
    /// At most `max_open` open HTTP connections.
    pub fn new(max_open: usize) -> Self {
        Self { open: Arc::default(), max_open }
    }

    /// A slot for a new connection, or `None` at the cap.
    pub fn admit(&self) -> Option<HttpSlot> {
        let admitted = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.max_open).then_some(open + 1)
            })
            .is_ok();
        admitted.then(|| {
            metrics().http_connections_open.increment(1.0);
            HttpSlot(self.open.clone())
        })
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

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn connection_cap_refuses_and_frees() {
        let limits = ConnectionLimits::new(2, 1000, 10);
        let a = limits.admit(HOME).unwrap();
        let _b = limits.admit(ip("127.0.0.2")).unwrap();
        assert_eq!(limits.admit(ip("127.0.0.3")).unwrap_err(), Refusal::Full);
        drop(a);
        assert!(limits.admit(HOME).is_ok());
    }

    #[test]
    fn accept_rate_refuses_a_burst() {
        let limits = ConnectionLimits::new(100, 3, 100);
        let slots: Vec<_> = (0..3).map(|_| limits.admit(HOME).unwrap()).collect();
        assert_eq!(limits.admit(HOME).unwrap_err(), Refusal::TooFast);
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

    #[test]
    fn one_address_is_capped_and_its_slots_come_back() {
        let limits = ConnectionLimits::new(100, 1000, 2);
        let first = limits.admit(HOME).unwrap();
        let _second = limits.admit(HOME).unwrap();
        assert_eq!(limits.admit(HOME).unwrap_err(), Refusal::PerAddress);
        let _other = limits.admit(ip("127.0.0.2")).unwrap();
        drop(first);
        let _again = limits.admit(HOME).unwrap();
        assert_eq!(limits.open(), 3);
    }

    #[test]
    fn a_refusal_for_the_address_spends_no_accept_token() {
        let limits = ConnectionLimits::new(100, 2, 1);
        let _held = limits.admit(HOME).unwrap();
        for _ in 0..10 {
            assert_eq!(limits.admit(HOME).unwrap_err(), Refusal::PerAddress);
        }
        assert!(limits.admit(ip("127.0.0.2")).is_ok());
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(address_key(ip("2001:db8:1:2:bbbb::9")), ip("2001:db8:1:2::"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
        let limits = ConnectionLimits::new(100, 1000, 1);
        let _held = limits.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(limits.admit(ip("2001:db8:1:2::2")).unwrap_err(), Refusal::PerAddress);
        assert!(limits.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn the_refusal_summary_counts_since_the_last_one() {
        let tally = RefusalTally::default();
        assert_eq!(tally.take_summary(), None);
        for _ in 0..3 {
            tally.record(RefusalKind::TooFast);
        }
        tally.record(RefusalKind::HttpFull);
        assert_eq!(tally.take_summary().as_deref(), Some("too_fast=3 http_full=1"));
        assert_eq!(tally.take_summary(), None);
    }

    #[test]
    fn the_http_cap_refuses_and_frees() {
        let http = HttpConnections::new(2);
        let a = http.admit().unwrap();
        let _b = http.admit().unwrap();
        assert!(http.admit().is_none());
        drop(a);
        assert!(http.admit().is_some());
    }
}
