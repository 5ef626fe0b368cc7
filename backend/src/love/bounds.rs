//! The bounds on what one client can do to the love ledger: how many taps
//! one connection may add a second ([`LoveBudget`], `--love-rate` and
//! `--love-burst`), and how many new ledgers (rows) one address may start
//! a window ([`LedgerQuota`], `--love-ledgers-per-ip`).
//!
//! Both are written here rather than taken from `governor` (which the
//! accept rate uses): the budget spends what the store says a tap added,
//! known only after the tap, and the quota gives a ledger back when the
//! tap turned out not to start one; governor can do neither.

use crate::limits::address_key;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A connection's love budget: a token bucket of taps. Its rate and burst
/// are the server's (`--love-rate`, `--love-burst`), passed in rather than
/// kept, so that each connection holds only what is its own.
#[derive(Debug, Clone)]
pub struct LoveBudget {
    /// Taps in the bucket as of `at`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl LoveBudget {
    /// A full bucket of `burst` taps.
    pub fn new(burst: u32, now: Instant) -> Self {
        Self { tokens: f64::from(burst.max(1)), at: now }
    }

    /// The whole taps the connection may add now, refilled at `per_second`
    /// up to `burst`.
    pub fn available(&mut self, now: Instant, per_second: u32, burst: u32) -> u64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let burst = f64::from(burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(per_second)).min(burst);
        self.at = now;
        // In [0, burst], so the cast neither wraps nor saturates.
        self.tokens.floor() as u64
    }

    /// Takes `taps` (what the store counted) out of the bucket.
    pub fn spend(&mut self, taps: u64) {
        self.tokens = (self.tokens - taps as f64).max(0.0);
    }
}

/// New ledgers started per address in fixed windows, shared by every
/// connection of the server (each instance counts its own).
#[derive(Debug)]
pub struct LedgerQuota {
    /// New ledgers one address may start a window; `None`: no limit.
    max: Option<u32>,
    /// How long a window lasts.
    window: Duration,
    /// Each address's current window. Addresses whose window has passed
    /// are dropped once the map grows, so it holds only recent ones.
    by_address: Mutex<HashMap<IpAddr, Window>>,
}

/// One address's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    used: u32,
}

/// How many addresses the quota holds before it drops the stale ones.
const PRUNE_ABOVE: usize = 4096;

impl LedgerQuota {
    /// At most `max` new ledgers per address per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max: Some(max), window, by_address: Mutex::default() }
    }

    /// No limit (the store's unit tests, and servers built without a config).
    pub fn unlimited() -> Self {
        Self { max: None, window: Duration::ZERO, by_address: Mutex::default() }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // The map holds counts only; one a panicking thread left is still
        // usable.
        self.by_address.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one new ledger for `address` at `now`; false when its window
    /// is used up.
    pub fn take(&self, address: IpAddr, now: Instant) -> bool {
        let Some(max) = self.max else { return true };
        let mut windows = self.windows();
        if windows.len() > PRUNE_ABOVE {
            windows.retain(|_, w| now.saturating_duration_since(w.started) < self.window);
        }
        let window =
            windows.entry(address_key(address)).or_insert(Window { started: now, used: 0 });
        if now.saturating_duration_since(window.started) >= self.window {
            *window = Window { started: now, used: 0 };
        }
        if window.used >= max {
            return false;
        }
        window.used += 1;
        true
    }

    /// Gives back a ledger taken for `address` that was not started after
    /// all (the client had one already, or nothing was counted).
    pub fn give_back(&self, address: IpAddr) {
        if self.max.is_none() {
            return;
        }
        if let Some(window) = self.windows().get_mut(&address_key(address)) {
            window.used = window.used.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_adds_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut budget = LoveBudget::new(100, start);
        let available = |budget: &mut LoveBudget| budget.available(Instant::now(), 20, 100);
        assert_eq!(available(&mut budget), 100);
        budget.spend(100);
        assert_eq!(available(&mut budget), 0);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(available(&mut budget), 10, "20 a second");
        budget.spend(50);
        assert_eq!(available(&mut budget), 0, "spending more than there is empties it");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(available(&mut budget), 100, "never more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_starts_at_most_its_quota_of_ledgers_per_window() {
        let quota = LedgerQuota::new(2, Duration::from_secs(600));
        let now = Instant::now();
        assert!(quota.take(ip("10.0.0.1"), now));
        assert!(quota.take(ip("10.0.0.1"), now));
        assert!(!quota.take(ip("10.0.0.1"), now), "the third in the window is refused");
        assert!(quota.take(ip("10.0.0.2"), now), "another address has its own");
        // A ledger given back (the client had one) can be taken again.
        quota.give_back(ip("10.0.0.1"));
        assert!(quota.take(ip("10.0.0.1"), now));
        assert!(!quota.take(ip("10.0.0.1"), now));
        // An IPv6 client counts by its /64.
        assert!(quota.take(ip("2001:db8::1"), now));
        assert!(quota.take(ip("2001:db8::2"), now));
        assert!(!quota.take(ip("2001:db8::3"), now));
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(quota.take(ip("10.0.0.1"), Instant::now()), "a new window");
    }

    #[test]
    fn an_unlimited_quota_always_has_room() {
        let quota = LedgerQuota::unlimited();
        let now = Instant::now();
        assert!((0..10_000).all(|_| quota.take(ip("10.0.0.1"), now)));
    }
}
