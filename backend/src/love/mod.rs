//! Love taps: counted exactly once, acknowledged only when durable.
//!
//! A client sends its cumulative tap count for a room; the store adds what
//! is new since the last count it saw from that client and remembers the
//! count. All writes go through one writer thread that owns the storage
//! backend and commits in groups: it takes every request that queued while
//! the previous commit ran and commits them in one transaction, so a burst
//! of taps costs one fsync, not one each, and an idle server acks at once.
//!
//! [`LoveBackend`] is the small trait a storage engine implements; SQLite
//! ([`sqlite`]) is the embedded default, and Redis ([`redis`]) the shared
//! store of several instances (`--redis-url`).

pub mod bounds;
#[cfg(test)]
pub(crate) mod memory;
pub mod redis;
pub mod sqlite;

use bounds::LedgerQuota;
use shared::protocol::MAX_LOVE_STEP;
use shared::{ClientId, RoomName};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Requests that may wait for the writer before senders have to wait.
const QUEUE: usize = 8192;

/// The most ledgers one fold deletes in one commit, so a sweep after a long
/// stop does not hold the writer (and every tap behind it) for long.
pub const FOLD_BATCH: usize = 1000;

/// One love message: `seq` is the client's cumulative tap count in `room`,
/// in its ledger `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    /// The room the taps are for.
    pub room: RoomName,
    /// Who tapped.
    pub client: ClientId,
    /// The client's cumulative count, at most
    /// [`shared::protocol::MAX_LOVE_SEQ`] (the protocol refuses more; SQLite
    /// and Lua hold no more exactly).
    pub seq: u64,
    /// The ledger the client names; 0 for "mine, whichever it is, or a new
    /// one" (what a protocol v1 client always means).
    pub epoch: u64,
    /// The most this tap may add: [`MAX_LOVE_STEP`], or less when the
    /// connection's budget is lower.
    pub limit: u64,
    /// Whether the tap may start a new ledger (the address's quota).
    pub may_create: bool,
    /// The server's clock (ms since the Unix epoch) when the tap arrived: the
    /// ledger's last activity (see [`active_at`]), and the epoch of a new
    /// ledger it names none for.
    pub at_ms: u64,
    /// `at_ms` less the retention (`--love-retention`): a ledger whose epoch
    /// is later than this cannot have been folded yet.
    pub fresh_after_ms: u64,
}

/// What a tap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapOutcome {
    /// Durable: `added` taps were counted (0 for a replay), the room's total
    /// is now `total`, and the client's ledger is `epoch` (0: none, for a
    /// count of 0 from a client without one). `created` when this tap
    /// started the ledger.
    Counted { added: u64, total: u64, epoch: u64, created: bool },
    /// The count jumped past the tap's limit from `last`; nothing was
    /// counted.
    TooBig { last: u64 },
    /// The ledger the tap named was folded (or never was); nothing was
    /// counted, and the room's total is `total`.
    Folded { total: u64 },
    /// The tap would start a ledger but may not; nothing was counted.
    NoLedger,
}

/// One client's ledger in one room: which one, and its last count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    /// The server's name for it: the server's clock (ms) when it started;
    /// 1 for ledgers from before epochs.
    pub epoch: u64,
    /// The highest count counted in it.
    pub last: u64,
}

/// The epoch of ledgers that predate epochs (every real one is a clock
/// reading in ms, far above it).
pub const LEGACY_EPOCH: u64 = 1;

/// What a tap does to its client's ledger, by the one rule every backend
/// applies (the Redis script restates it in Lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Count `added` (maybe 0); `ledger` is the client's ledger after it
    /// (`None`: it has none), to be written (touched now) when the tap
    /// added something or `created` it. A replay writes nothing: a ledger
    /// is active when it counts, so resending old counts does not keep it.
    Count { added: u64, ledger: Option<Ledger>, created: bool },
    /// Refused: over the tap's limit from `last`.
    TooBig { last: u64 },
    /// Refused: the named ledger is not kept.
    Folded,
    /// Refused: it would start a ledger but may not.
    NoLedger,
}

/// The rule: how `tap` changes the client's `ledger` (`None`: it has none).
///
/// - A tap naming the client's ledger, or none (epoch 0), or a new one (an
///   epoch younger than the retention, which a client proposes for a new
///   ledger), counts in the ledger the client has: what is new since its
///   last count, at most the tap's limit; a replay adds 0. The ack names
///   that ledger, and a client whose proposal it was not takes it (its
///   first count went there before it could hear so, or its storage was
///   cleared).
/// - A tap naming an older ledger the server does not keep is refused as
///   folded: its taps are in the total already, and counting them again is
///   what this prevents. A ledger is folded only after a retention without
///   love (and is active at least until its epoch), so an epoch younger
///   than the retention cannot be a folded ledger's: without a ledger, it
///   starts one (quota permitting).
/// - A tap naming none from a client without a ledger starts one (quota
///   permitting) whose epoch is the tap's time: a protocol v1 client. A
///   count above [`MAX_LOVE_STEP`] there can only come from such a client
///   whose ledger was folded: it is taken as the new ledger's starting
///   point and counts nothing.
pub fn decide(ledger: Option<Ledger>, tap: &Tap) -> Decision {
    let fresh = tap.epoch > tap.fresh_after_ms;
    match ledger {
        Some(ledger) if tap.epoch == 0 || tap.epoch == ledger.epoch || fresh => {
            let added = tap.seq.saturating_sub(ledger.last);
            if added > tap.limit {
                return Decision::TooBig { last: ledger.last };
            }
            let ledger = Ledger { epoch: ledger.epoch, last: ledger.last.max(tap.seq) };
            Decision::Count { added, ledger: Some(ledger), created: false }
        }
        Some(_) => Decision::Folded,
        None if tap.epoch != 0 && !fresh => Decision::Folded,
        None if tap.seq == 0 => Decision::Count { added: 0, ledger: None, created: false },
        None => start(tap),
    }
}

/// A new ledger for `tap`'s client: the epoch it names, or (naming none)
/// one from its time.
fn start(tap: &Tap) -> Decision {
    if !tap.may_create {
        return Decision::NoLedger;
    }
    let epoch = if tap.epoch == 0 { new_epoch(tap.at_ms) } else { tap.epoch };
    let ledger = Some(Ledger { epoch, last: tap.seq });
    if tap.epoch == 0 && tap.seq > MAX_LOVE_STEP {
        Decision::Count { added: 0, ledger, created: true }
    } else if tap.seq > tap.limit {
        Decision::TooBig { last: 0 }
    } else {
        Decision::Count { added: tap.seq, ledger, created: true }
    }
}

/// When a ledger written by `tap` was last active: the tap's time, or its
/// epoch if later (a client's clock may run a little ahead, up to the
/// protocol's skew). So a folded ledger's epoch is always older than the
/// retention, and a count naming it can never pass for a new ledger's.
pub fn active_at(tap: &Tap, ledger: &Ledger) -> u64 {
    tap.at_ms.max(ledger.epoch)
}

/// A new ledger's epoch: the time it starts, above [`LEGACY_EPOCH`].
pub fn new_epoch(at_ms: u64) -> u64 {
    at_ms.max(LEGACY_EPOCH + 1)
}

/// A storage engine for love totals. Calls come from one thread, in order.
pub trait LoveBackend: Send + 'static {
    /// Applies `taps` in order, all in one durable commit, and returns what
    /// each did. Either every tap is committed or the call fails.
    fn apply(&mut self, taps: &[Tap]) -> Result<Vec<TapOutcome>, StoreError>;

    /// The room's love total.
    fn total(&mut self, room: &RoomName) -> Result<u64, StoreError>;

    /// Folds at most `limit` ledgers whose last love came before
    /// `idle_before_ms` into their rooms' totals (which hold their taps
    /// already) by deleting them, in one commit; returns how many.
    fn fold(&mut self, idle_before_ms: u64, limit: usize) -> Result<usize, StoreError>;

    /// Fails unless the store can take a write now (for `/readyz`).
    fn check_writable(&mut self) -> Result<(), StoreError>;
}

/// Storage failed. It is `Clone` because one failed group commit fails
/// every tap in it, and each waiting socket gets the same typed error (a
/// full disk reads as SQLite's "database or disk is full", not as something
/// else).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("love store: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// Redis refused or failed (`--redis-url`).
    #[error("love store: {0}")]
    Redis(#[source] Arc<::redis::RedisError>),
    /// The data on disk is from a newer version or otherwise unusable.
    #[error("love store: {0}")]
    Incompatible(String),
    /// The writer thread has stopped.
    #[error("love store: the writer has stopped")]
    Stopped,
}

impl From<::redis::RedisError> for StoreError {
    fn from(error: ::redis::RedisError) -> Self {
        StoreError::Redis(Arc::new(error))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(error))
    }
}

/// What the writer thread answers a tap with.
pub type TapResult = Result<TapOutcome, StoreError>;

enum Request {
    Tap(Tap, oneshot::Sender<TapResult>),
    Fold(u64, oneshot::Sender<Result<usize, StoreError>>),
    Total(RoomName, oneshot::Sender<Result<u64, StoreError>>),
    Check(oneshot::Sender<Result<(), StoreError>>),
}

/// The handle sockets and rooms use; cloning shares the writer.
#[derive(Debug, Clone)]
pub struct LoveStore {
    requests: mpsc::Sender<Request>,
    /// New ledgers per address (`--love-ledgers-per-ip`), shared by every
    /// connection.
    quota: Arc<LedgerQuota>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Tap(tap, _) => write!(f, "Tap({tap:?})"),
            Request::Total(room, _) => write!(f, "Total({room})"),
            Request::Fold(before, _) => write!(f, "Fold({before})"),
            Request::Check(_) => write!(f, "Check"),
        }
    }
}

impl LoveStore {
    /// Starts the writer thread over `backend`, with no quota on new
    /// ledgers.
    pub fn start(backend: impl LoveBackend) -> Self {
        Self::with_quota(backend, LedgerQuota::unlimited())
    }

    /// Starts the writer thread over `backend`; new ledgers are limited by
    /// `quota`.
    pub fn with_quota(backend: impl LoveBackend, quota: LedgerQuota) -> Self {
        let (requests, queue) = mpsc::channel(QUEUE);
        let spawned = thread::Builder::new()
            .name("love-writer".into())
            .spawn(move || write_loop(backend, queue));
        if let Err(error) = spawned {
            // Without the thread every request fails with `Stopped`, which
            // callers report; the server keeps beating.
            tracing::error!(%error, "cannot start the love writer thread");
        }
        Self { requests, quota: Arc::new(quota) }
    }

    /// The quota of new ledgers per address.
    pub fn quota(&self) -> &LedgerQuota {
        &self.quota
    }

    /// Folds every ledger idle since before `idle_before_ms` (server clock),
    /// a batch per commit; returns how many.
    pub async fn fold(&self, idle_before_ms: u64) -> Result<usize, StoreError> {
        let mut folded = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            self.requests
                .send(Request::Fold(idle_before_ms, reply))
                .await
                .map_err(|_| StoreError::Stopped)?;
            let batch = answer.await.map_err(|_| StoreError::Stopped)??;
            folded += batch;
            if batch < FOLD_BATCH {
                return Ok(folded);
            }
        }
    }

    /// Folds ledgers idle for longer than `retention` (`--love-retention`),
    /// checking a few times per retention (at most every ten minutes), until
    /// every other handle on the store is dropped. `now_ms` is the server
    /// clock.
    pub fn fold_idle(
        &self,
        retention: Duration,
        now_ms: impl Fn() -> f64 + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        // The task holds the writer weakly, so it ends with the server.
        let requests = self.requests.downgrade();
        let quota = self.quota.clone();
        let every = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(600));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(requests) = requests.upgrade() else { return };
                let store = LoveStore { requests, quota: quota.clone() };
                // Whole milliseconds; a clock before 1970 folds nothing.
                let now = now_ms().max(0.0) as u64;
                let before =
                    now.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
                match store.fold(before).await {
                    Ok(0) => {}
                    Ok(folded) => {
                        metrics::counter!("heartsync_love_ledgers_folded_total")
                            .increment(folded as u64);
                        tracing::info!(folded, "idle love ledgers folded into their rooms' totals");
                    }
                    Err(StoreError::Stopped) => return,
                    Err(error) => tracing::warn!(%error, "folding idle love ledgers failed"),
                }
            }
        })
    }

    /// Counts `tap`, returning once it is durable.
    pub async fn tap(&self, tap: Tap) -> TapResult {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Tap(tap, reply)).await.map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Whether the store can take a write now.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Check(reply)).await.map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// The room's love total.
    pub async fn total(&self, room: RoomName) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Total(room, reply)).await.map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

/// The writer thread: group commit of whatever has queued.
fn write_loop(mut backend: impl LoveBackend, mut queue: mpsc::Receiver<Request>) {
    let mut taps = Vec::new();
    let mut replies = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        let mut next = Some(first);
        while let Some(request) = next {
            match request {
                Request::Tap(tap, reply) => {
                    taps.push(tap);
                    replies.push(reply);
                }
                Request::Total(room, reply) => {
                    // Reads see every commit before them; queued taps are
                    // committed first so a read never misses one.
                    flush(&mut backend, &mut taps, &mut replies);
                    let _ = reply.send(backend.total(&room));
                }
                Request::Check(reply) => {
                    flush(&mut backend, &mut taps, &mut replies);
                    let _ = reply.send(backend.check_writable());
                }
                Request::Fold(before, reply) => {
                    flush(&mut backend, &mut taps, &mut replies);
                    let _ = reply.send(backend.fold(before, FOLD_BATCH));
                }
            }
            next = queue.try_recv().ok();
        }
        flush(&mut backend, &mut taps, &mut replies);
    }
}

type TapReply = oneshot::Sender<TapResult>;

fn flush(backend: &mut impl LoveBackend, taps: &mut Vec<Tap>, replies: &mut Vec<TapReply>) {
    if taps.is_empty() {
        return;
    }
    match backend.apply(taps) {
        Ok(outcomes) => {
            for (reply, outcome) in replies.drain(..).zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) => {
            tracing::error!(%error, taps = taps.len(), "love commit failed");
            for reply in replies.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
    taps.clear();
}

#[cfg(test)]
mod tests {
    use super::memory::{Commit, MemoryLove};
    use super::*;

    fn tap(seq: u64) -> Tap {
        Tap {
            room: RoomName::main(),
            client: ClientId::parse("abcdefgh").expect("a valid client id"),
            seq,
            epoch: 0,
            limit: MAX_LOVE_STEP,
            may_create: true,
            at_ms: EPOCH,
            fresh_after_ms: EPOCH - 1000,
        }
    }

    const EPOCH: u64 = 1_700_000_000_000;

    #[tokio::test]
    async fn a_full_disk_reaches_the_caller_as_a_sqlite_error() {
        let (backend, commits) = MemoryLove::gated();
        let store = LoveStore::start(backend);
        commits.send(Commit::DiskFull).expect("the writer is running");
        let error = store.tap(tap(1)).await.expect_err("the commit failed");
        assert!(matches!(error, StoreError::Sqlite(_)), "{error:?}");
        assert!(error.to_string().contains("full"), "{error}");
        // Nothing was counted, and the store goes on.
        commits.send(Commit::Succeed).expect("the writer is running");
        assert_eq!(
            store.tap(tap(1)).await.expect("committed"),
            TapOutcome::Counted { added: 1, total: 1, epoch: EPOCH, created: true }
        );
    }

    fn check(ledger: Option<(u64, u64)>, tap: Tap, expected: Decision) {
        let ledger = ledger.map(|(epoch, last)| Ledger { epoch, last });
        assert_eq!(decide(ledger, &tap), expected, "{ledger:?} {tap:?}");
    }

    #[test]
    fn the_rule_counts_what_is_new_in_the_named_ledger_and_refuses_a_folded_one() {
        let keep = |epoch, last| Some(Ledger { epoch, last });
        // Its ledger, named or not: what is new, up to the limit.
        check(
            Some((7, 10)),
            Tap { epoch: 7, ..tap(15) },
            Decision::Count { added: 5, ledger: keep(7, 15), created: false },
        );
        check(
            Some((7, 10)),
            tap(12),
            Decision::Count { added: 2, ledger: keep(7, 12), created: false },
        );
        check(
            Some((7, 10)),
            tap(3),
            Decision::Count { added: 0, ledger: keep(7, 10), created: false },
        );
        check(Some((7, 10)), tap(61), Decision::TooBig { last: 10 });
        check(Some((7, 10)), Tap { limit: 4, ..tap(15) }, Decision::TooBig { last: 10 });
        // Another ledger's count, or one for a ledger not kept: folded.
        check(Some((7, 10)), Tap { epoch: 6, ..tap(15) }, Decision::Folded);
        check(None, Tap { epoch: 6, ..tap(15) }, Decision::Folded);
        check(None, Tap { epoch: EPOCH - 1000, ..tap(5) }, Decision::Folded);
        // A fresh epoch cannot have been folded: it starts a ledger, or
        // counts in the one the client has (whose epoch the ack names).
        let fresh = EPOCH - 999;
        check(
            None,
            Tap { epoch: fresh, ..tap(5) },
            Decision::Count { added: 5, ledger: keep(fresh, 5), created: true },
        );
        check(
            Some((7, 10)),
            Tap { epoch: fresh, ..tap(15) },
            Decision::Count { added: 5, ledger: keep(7, 15), created: false },
        );
        check(
            Some((7, 10)),
            Tap { epoch: fresh, ..tap(5) },
            Decision::Count { added: 0, ledger: keep(7, 10), created: false },
        );
        check(None, Tap { epoch: fresh, may_create: false, ..tap(5) }, Decision::NoLedger);
        check(None, Tap { epoch: fresh, ..tap(51) }, Decision::TooBig { last: 0 });
        // No ledger: a new one, quota permitting; nothing for a count of 0.
        check(None, tap(0), Decision::Count { added: 0, ledger: None, created: false });
        check(None, tap(3), Decision::Count { added: 3, ledger: keep(EPOCH, 3), created: true });
        check(None, Tap { may_create: false, ..tap(3) }, Decision::NoLedger);
        check(None, Tap { limit: 2, ..tap(3) }, Decision::TooBig { last: 0 });
        // A count over the step from a client without a ledger (one that
        // predates epochs, folded) starts the ledger there.
        check(
            None,
            tap(500),
            Decision::Count { added: 0, ledger: keep(EPOCH, 500), created: true },
        );
    }
}
