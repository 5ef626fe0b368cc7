//! Every connection's deadlines, kept by a sweep instead of a timer per
//! connection: when to ping, when the pong is due, when a connection that
//! sends nothing is dropped (`--idle-timeout`), when a join token expires,
//! and when a draining server closes it.
//!
//! The connections are split over a few shards (one per core); each shard
//! has one task that wakes every [`Settings::period`] (a tenth of the
//! shortest of the ping interval, the pong timeout and the idle timeout,
//! between 10 ms and 1 s), walks its connections and decides for each what
//! is due ([`Schedule::sweep`], pure and tested on its own). A connection at
//! rest therefore holds no timer and no future for its deadlines, only its
//! entry in the shard (its [`Schedule`], about 50 bytes) and its
//! [`Liveness`], the few atomics it shares with the sweep. The handler
//! records what it hears there ([`Liveness::heard_message`],
//! [`Liveness::heard_pong`]) and is woken when something is due
//! ([`Liveness::poll_due`]): it then writes the ping, or closes, itself, so
//! the sweep never touches a socket.
//!
//! A deadline fires at the first sweep at or after it, so up to one period
//! late: with the defaults (25 s pings, 10 s pong timeout) within a second.

use super::CloseReason;
use crate::Config;
use crate::metrics::metrics;
use crate::room::ConnId;
use futures_util::task::AtomicWaker;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;

/// The shortest sweep period: a finer one would cost more than the
/// precision is worth.
const MIN_PERIOD: Duration = Duration::from_millis(10);
/// The longest sweep period, so a deadline is never more than a second late.
const MAX_PERIOD: Duration = Duration::from_secs(1);

/// What the sweep found due for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a ping: the pong is now awaited.
    Ping,
    /// Close the connection, for this reason.
    Close(CloseReason),
}

// `Liveness::due` holds one of these; a larger one wins (`fetch_max`), so a
// close is never overwritten by a ping.
const DUE_NOTHING: u8 = 0;
const DUE_PING: u8 = 1;
const DUE_IDLE: u8 = 2;
const DUE_PONG_TIMEOUT: u8 = 3;
const DUE_TOKEN_EXPIRED: u8 = 4;
const DUE_SHUTDOWN: u8 = 5;

// `Liveness::heard` bits.
const HEARD_MESSAGE: u8 = 1;
const HEARD_PONG: u8 = 2;

impl Due {
    fn code(self) -> u8 {
        match self {
            Due::Ping => DUE_PING,
            Due::Close(CloseReason::Shutdown) => DUE_SHUTDOWN,
            Due::Close(CloseReason::TokenExpired) => DUE_TOKEN_EXPIRED,
            Due::Close(CloseReason::PongTimeout) => DUE_PONG_TIMEOUT,
            // The sweep closes for no other reason.
            Due::Close(_) => DUE_IDLE,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            DUE_PING => Some(Due::Ping),
            DUE_IDLE => Some(Due::Close(CloseReason::Idle)),
            DUE_PONG_TIMEOUT => Some(Due::Close(CloseReason::PongTimeout)),
            DUE_TOKEN_EXPIRED => Some(Due::Close(CloseReason::TokenExpired)),
            DUE_SHUTDOWN => Some(Due::Close(CloseReason::Shutdown)),
            _ => None,
        }
    }
}

/// What one connection's handler and its sweep share: a few bytes, written
/// without a lock from either side.
#[derive(Debug, Default)]
pub struct Liveness {
    /// What the handler heard since the sweep last looked (`HEARD_*` bits).
    heard: AtomicU8,
    /// What the sweep found due and the handler has not yet taken.
    due: AtomicU8,
    /// The handler's task, woken when something is due.
    waker: AtomicWaker,
}

impl Liveness {
    /// The client sent a data message: it is not idle.
    pub fn heard_message(&self) {
        self.heard.fetch_or(HEARD_MESSAGE, Ordering::Relaxed);
    }

    /// The client answered a ping.
    pub fn heard_pong(&self) {
        self.heard.fetch_or(HEARD_PONG, Ordering::Relaxed);
    }

    /// Ready with what is due, once the sweep has found something; the
    /// task is woken then.
    pub fn poll_due(&self, cx: &mut Context<'_>) -> Poll<Due> {
        self.waker.register(cx.waker());
        match Due::from_code(self.due.swap(DUE_NOTHING, Ordering::AcqRel)) {
            Some(due) => Poll::Ready(due),
            None => Poll::Pending,
        }
    }

    fn set_due(&self, due: Due) {
        self.due.fetch_max(due.code(), Ordering::AcqRel);
        self.waker.wake();
    }
}

/// The keepalive settings, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time between pings (`--ping-interval`).
    pub ping_interval: Duration,
    /// How long a pong may take (`--pong-timeout`).
    pub pong_timeout: Duration,
    /// How long a connection may send no data message (`--idle-timeout`);
    /// `None` when off.
    pub idle_timeout: Option<Duration>,
    /// The spread of closes when the server drains (`--drain`).
    pub drain: Duration,
}

impl Settings {
    /// The settings of `config`.
    pub fn of(config: &Config) -> Self {
        Self {
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            idle_timeout: (!config.idle_timeout.is_zero()).then_some(config.idle_timeout),
            drain: config.drain,
        }
    }

    /// How often a shard sweeps: a tenth of the shortest deadline, within
    /// `[10 ms, 1 s]`.
    pub fn period(&self) -> Duration {
        let shortest = [Some(self.ping_interval), Some(self.pong_timeout), self.idle_timeout]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(MAX_PERIOD);
        (shortest / 10).clamp(MIN_PERIOD, MAX_PERIOD)
    }

    /// How often a shard sweeps while the server drains: fine enough to
    /// spread the closes over the drain.
    fn drain_period(&self) -> Duration {
        self.period().min(self.drain / 20).max(Duration::from_millis(1))
    }
}

/// One connection's deadlines, owned by its shard's sweep. Times are
/// milliseconds since the keepalive started (8 bytes rather than an
/// `Instant`'s 16: there is one of these per connection); `u64::MAX` is
/// never.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// When the next ping is due.
    next_ping: u64,
    /// When the pong to the last ping must have come; `NEVER` when no
    /// ping is unanswered.
    pong_due: u64,
    /// When the connection last sent a data message (or joined).
    last_message: u64,
    /// When its join token expires (private rooms only).
    expires: u64,
    /// When a draining server closes it.
    close_at: u64,
}

const NEVER: u64 = u64::MAX;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(NEVER)
}

impl Schedule {
    /// The deadlines of a connection that joins at `now` (ms).
    pub fn new(now: u64, settings: &Settings, expires: Option<u64>) -> Self {
        Self {
            next_ping: now.saturating_add(ms(settings.ping_interval)),
            pong_due: NEVER,
            last_message: now,
            expires: expires.unwrap_or(NEVER),
            close_at: NEVER,
        }
    }

    /// The server drains: close at `at` (ms) at the latest.
    pub fn close_by(&mut self, at: u64) {
        self.close_at = self.close_at.min(at);
    }

    /// What is due at `now` (ms), given what the handler heard since the
    /// last sweep (`heard`: `HEARD_*` bits). A ping is not sent while the
    /// last one is unanswered, and a late ping moves the next one on
    /// rather than sending a burst.
    pub fn sweep(&mut self, now: u64, heard: u8, settings: &Settings) -> Option<Due> {
        if heard & HEARD_MESSAGE != 0 {
            self.last_message = now;
        }
        if heard & HEARD_PONG != 0 {
            self.pong_due = NEVER;
        }
        if self.close_at <= now {
            return Some(Due::Close(CloseReason::Shutdown));
        }
        if self.expires <= now {
            return Some(Due::Close(CloseReason::TokenExpired));
        }
        if self.pong_due <= now {
            return Some(Due::Close(CloseReason::PongTimeout));
        }
        if let Some(idle) = settings.idle_timeout
            && self.last_message.saturating_add(ms(idle)) <= now
        {
            return Some(Due::Close(CloseReason::Idle));
        }
        if self.next_ping > now {
            return None;
        }
        let interval = ms(settings.ping_interval);
        self.next_ping = self.next_ping.saturating_add(interval).max(now.saturating_add(interval));
        if self.pong_due != NEVER {
            return None;
        }
        self.pong_due = now.saturating_add(ms(settings.pong_timeout));
        Some(Due::Ping)
    }
}

/// Every connection's deadlines, in shards; one per server.
#[derive(Debug)]
pub struct Keepalive {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    /// Time zero of every [`Schedule`].
    epoch: Instant,
    /// Cancelled when the server drains: the sweeps spread the closes.
    shutdown: CancellationToken,
    shards: Box<[Shard]>,
}

/// Some of the connections, swept by one task.
#[derive(Debug)]
struct Shard {
    /// The connections and their deadlines. Locked for a sweep (no
    /// `.await` inside) and briefly by a join or a leave.
    members: Mutex<HashMap<ConnId, Member>>,
    /// The shard's task is started by its first connection (the server's
    /// state may be built before its runtime runs).
    started: Once,
}

#[derive(Debug)]
struct Member {
    liveness: Arc<Liveness>,
    schedule: Schedule,
}

/// A connection's place in the keepalive; dropping it takes it out.
#[derive(Debug)]
pub struct Registration {
    keepalive: Arc<Inner>,
    conn: ConnId,
    /// Shared with the sweep.
    liveness: Arc<Liveness>,
}

impl Registration {
    /// What the handler shares with the sweep.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keepalive.shard(self.conn).lock().remove(&self.conn);
    }
}

impl Keepalive {
    /// The keepalive of a server configured with `settings`, whose drain
    /// begins when `shutdown` is cancelled.
    pub fn new(settings: Settings, shutdown: CancellationToken) -> Self {
        let shards = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            inner: Arc::new(Inner {
                settings,
                epoch: Instant::now(),
                shutdown,
                shards: (0..shards)
                    .map(|_| Shard { members: Mutex::default(), started: Once::new() })
                    .collect(),
            }),
        }
    }

    /// Starts keeping connection `conn` alive, from now; its join token,
    /// if any, expires at `expires`. Must run inside the runtime (a
    /// shard's first connection starts its sweep).
    pub fn register(&self, conn: ConnId, expires: Option<Instant>) -> Registration {
        let inner = &self.inner;
        let index = inner.shard_index(conn);
        let shard = &inner.shards[index];
        shard.started.call_once(|| {
            tokio::spawn(sweep_shard(Arc::downgrade(inner), index));
        });
        let liveness = Arc::new(Liveness::default());
        let now = inner.ms(Instant::now());
        let mut schedule = Schedule::new(now, &inner.settings, expires.map(|at| inner.ms(at)));
        if inner.shutdown.is_cancelled() {
            schedule.close_by(inner.close_time(now));
        }
        shard.lock().insert(conn, Member { liveness: liveness.clone(), schedule });
        Registration { keepalive: inner.clone(), conn, liveness }
    }
}

impl Inner {
    fn shard_index(&self, conn: ConnId) -> usize {
        usize::try_from(conn % self.shards.len() as u64).unwrap_or(0)
    }

    fn shard(&self, conn: ConnId) -> &Shard {
        &self.shards[self.shard_index(conn)]
    }

    fn ms(&self, at: Instant) -> u64 {
        ms(at.saturating_duration_since(self.epoch))
    }

    /// A random point of the drain from `now`, so that clients do not all
    /// reconnect to the next instance at the same instant; a sweep period
    /// short of its end, so the close comes within it.
    fn close_time(&self, now: u64) -> u64 {
        let spread = self.settings.drain.saturating_sub(self.settings.drain_period());
        now.saturating_add(ms(spread.mul_f64(rand::rng().random::<f64>())))
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, HashMap<ConnId, Member>> {
        // Every critical section is one insert, one remove, or a walk that
        // leaves each entry consistent: a poisoned lock is still usable.
        self.members.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides, at `now`, what is due for each connection, and wakes those
    /// that have something to do.
    fn sweep(&self, now: u64, settings: &Settings) {
        let m = metrics();
        for member in self.lock().values_mut() {
            let heard = member.liveness.heard.swap(0, Ordering::AcqRel);
            if let Some(due) = member.schedule.sweep(now, heard, settings) {
                if due == Due::Close(CloseReason::PongTimeout) {
                    m.pongs_missed.increment(1);
                }
                member.liveness.set_due(due);
            }
        }
    }

    /// The server drains: each connection gets its close time.
    fn drain(&self, inner: &Inner, now: u64) {
        for member in self.lock().values_mut() {
            member.schedule.close_by(inner.close_time(now));
        }
    }
}

/// Shard `index`'s sweep, until the server's state is gone.
async fn sweep_shard(inner: Weak<Inner>, index: usize) {
    let Some((settings, epoch, shutdown)) =
        inner.upgrade().map(|inner| (inner.settings, inner.epoch, inner.shutdown.clone()))
    else {
        return;
    };
    let period = settings.period();
    // Aligned with the epoch, so that a deadline of a whole number of
    // periods after a join at the epoch fires exactly on time.
    let mut ticks = interval_at(epoch + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                let Some(inner) = inner.upgrade() else { return };
                inner.shards[index].drain(&inner, inner.ms(Instant::now()));
                let period = settings.drain_period();
                ticks = interval_at(Instant::now(), period);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            }
            _ = ticks.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                inner.shards[index].sweep(inner.ms(Instant::now()), &settings);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(idle: Option<u64>) -> Settings {
        Settings {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: idle.map(Duration::from_secs),
            drain: Duration::from_secs(5),
        }
    }

    const S: u64 = 1000;

    #[test]
    fn a_ping_is_due_every_interval_and_its_pong_after_the_timeout() {
        let set = settings(None);
        let mut d = Schedule::new(0, &set, None);
        assert_eq!(d.sweep(24 * S, 0, &set), None);
        assert_eq!(d.sweep(25 * S, 0, &set), Some(Due::Ping));
        assert_eq!(d.sweep(34 * S, 0, &set), None, "the pong has until 35 s");
        assert_eq!(d.sweep(35 * S, HEARD_PONG, &set), None, "answered just in time");
        assert_eq!(d.sweep(50 * S, 0, &set), Some(Due::Ping));
        assert_eq!(d.sweep(60 * S, 0, &set), Some(Due::Close(CloseReason::PongTimeout)));
    }

    #[test]
    fn no_ping_while_the_last_is_unanswered() {
        // A pong timeout longer than the ping interval.
        let set = Settings { ping_interval: Duration::from_secs(5), ..settings(None) };
        let set = Settings { pong_timeout: Duration::from_secs(12), ..set };
        let mut d = Schedule::new(0, &set, None);
        assert_eq!(d.sweep(5 * S, 0, &set), Some(Due::Ping));
        assert_eq!(d.sweep(10 * S, 0, &set), None);
        assert_eq!(d.sweep(15 * S, 0, &set), None);
        assert_eq!(d.sweep(17 * S, 0, &set), Some(Due::Close(CloseReason::PongTimeout)));
    }

    #[test]
    fn a_late_ping_does_not_make_a_burst() {
        let set = settings(None);
        let mut d = Schedule::new(0, &set, None);
        assert_eq!(d.sweep(100 * S, 0, &set), Some(Due::Ping));
        assert_eq!(d.sweep(101 * S, HEARD_PONG, &set), None);
        assert_eq!(d.sweep(124 * S, 0, &set), None);
        assert_eq!(d.sweep(125 * S, 0, &set), Some(Due::Ping));
    }

    #[test]
    fn the_drain_deadline_comes_first() {
        let set = settings(Some(1));
        let mut d = Schedule::new(0, &set, Some(2 * S));
        d.close_by(3 * S);
        d.close_by(60 * S);
        assert_eq!(d.sweep(3 * S, 0, &set), Some(Due::Close(CloseReason::Shutdown)));
    }

    #[test]
    fn an_expiring_token_closes_the_socket_when_it_expires() {
        let set = settings(None);
        let mut d = Schedule::new(0, &set, Some(7 * S));
        assert_eq!(d.sweep(6 * S, 0, &set), None);
        assert_eq!(d.sweep(7 * S, 0, &set), Some(Due::Close(CloseReason::TokenExpired)));
    }

    /// Issue 16, defect 3 (idle half): a client that answers every ping but
    /// sends nothing is closed after the idle timeout; one that sends a
    /// message now and then stays.
    #[test]
    fn a_connection_that_only_answers_pings_goes_idle_and_one_that_reports_stays() {
        let set = settings(Some(60));
        let mut silent = Schedule::new(0, &set, None);
        let mut reporting = Schedule::new(0, &set, None);
        let mut closed = None;
        for second in 1..=120 {
            let now = second * S;
            // Both answer each ping at the next sweep; one also reports
            // every 30 s.
            let heard = |report: bool| HEARD_PONG | if report { HEARD_MESSAGE } else { 0 };
            if let Some(due) = silent.sweep(now, heard(false), &set)
                && due != Due::Ping
            {
                closed.get_or_insert((second, due));
            }
            let due = reporting.sweep(now, heard(second % 30 == 0), &set);
            assert!(matches!(due, None | Some(Due::Ping)), "the reporting one got {due:?}");
        }
        assert_eq!(closed, Some((60, Due::Close(CloseReason::Idle))));
    }

    #[test]
    fn no_idle_timeout_when_it_is_off() {
        let set = settings(None);
        let mut d = Schedule::new(0, &set, None);
        for second in 1..=3600 {
            let due = d.sweep(second * S, HEARD_PONG, &set);
            assert!(matches!(due, None | Some(Due::Ping)), "{due:?} at {second} s");
        }
    }

    #[test]
    fn the_sweep_period_is_a_tenth_of_the_shortest_deadline_within_bounds() {
        assert_eq!(settings(None).period(), Duration::from_secs(1));
        let short = Settings {
            ping_interval: Duration::from_millis(300),
            pong_timeout: Duration::from_millis(300),
            ..settings(Some(300))
        };
        assert_eq!(short.period(), Duration::from_millis(30));
        let tiny = Settings { idle_timeout: Some(Duration::from_millis(20)), ..short };
        assert_eq!(tiny.period(), MIN_PERIOD);
    }

    #[test]
    fn a_close_beats_a_ping_that_was_not_taken() {
        let live = Liveness::default();
        live.set_due(Due::Close(CloseReason::Idle));
        live.set_due(Due::Ping);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(live.poll_due(&mut cx), Poll::Ready(Due::Close(CloseReason::Idle)));
        assert_eq!(live.poll_due(&mut cx), Poll::Pending);
    }

    /// The sweep itself, under paused time: pings come on time and an
    /// unanswered one closes within a sweep period of its deadline.
    #[tokio::test(start_paused = true)]
    async fn the_sweep_wakes_a_connection_when_its_deadline_comes() {
        let set = Settings { idle_timeout: Some(Duration::from_secs(40)), ..settings(None) };
        let keepalive = Keepalive::new(set, CancellationToken::new());
        let start = Instant::now();
        let member = keepalive.register(7, None);
        let due = std::future::poll_fn(|cx| member.liveness().poll_due(cx)).await;
        assert_eq!((due, start.elapsed()), (Due::Ping, Duration::from_secs(25)));
        member.liveness().heard_pong();
        let due = std::future::poll_fn(|cx| member.liveness().poll_due(cx)).await;
        assert_eq!(
            (due, start.elapsed()),
            (Due::Close(CloseReason::Idle), Duration::from_secs(40)),
            "no message since the join"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_closes_every_connection_within_the_drain() {
        let token = CancellationToken::new();
        let keepalive = Keepalive::new(settings(None), token.clone());
        let members: Vec<_> = (0..20).map(|conn| keepalive.register(conn, None)).collect();
        let start = Instant::now();
        token.cancel();
        for member in &members {
            let due = std::future::poll_fn(|cx| member.liveness().poll_due(cx)).await;
            assert_eq!(due, Due::Close(CloseReason::Shutdown));
        }
        assert!(start.elapsed() <= Duration::from_secs(5), "{:?}", start.elapsed());
        // Joined while draining: closed within the drain too.
        let late = keepalive.register(99, None);
        let due = std::future::poll_fn(|cx| late.liveness().poll_due(cx)).await;
        assert_eq!(due, Due::Close(CloseReason::Shutdown));
        assert!(start.elapsed() <= Duration::from_secs(10), "{:?}", start.elapsed());
    }
}
