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

#[cfg(test)]
pub(crate) mod memory;
pub mod redis;
pub mod sqlite;

use shared::protocol::MAX_LOVE_STEP;
use shared::{ClientId, RoomName};
use std::sync::Arc;
use std::thread;
use tokio::sync::{mpsc, oneshot};

/// Requests that may wait for the writer before senders have to wait.
const QUEUE: usize = 8192;

/// One love message: `seq` is the client's cumulative tap count in `room`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    /// The room the taps are for.
    pub room: RoomName,
    /// Who tapped.
    pub client: ClientId,
    /// The client's cumulative count.
    pub seq: u64,
}

/// What a tap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapOutcome {
    /// Durable: `added` taps were counted (0 for a replay), and the room's
    /// total is now `total`.
    Counted { added: u64, total: u64 },
    /// The count jumped by more than [`MAX_LOVE_STEP`]; nothing was counted.
    TooBig { last: u64 },
}

/// A storage engine for love totals. Calls come from one thread, in order.
pub trait LoveBackend: Send + 'static {
    /// Applies `taps` in order, all in one durable commit, and returns what
    /// each did. Either every tap is committed or the call fails.
    fn apply(&mut self, taps: &[Tap]) -> Result<Vec<TapOutcome>, StoreError>;

    /// The room's love total.
    fn total(&mut self, room: &RoomName) -> Result<u64, StoreError>;

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

/// The rule every backend applies: how many taps a new count adds, given
/// the last count seen from that client; `None` when it jumps too far.
pub fn taps_added(last: u64, seq: u64) -> Option<u64> {
    let added = seq.saturating_sub(last);
    (added <= MAX_LOVE_STEP).then_some(added)
}

/// What the writer thread answers a tap with.
pub type TapResult = Result<TapOutcome, StoreError>;

enum Request {
    Tap(Tap, oneshot::Sender<TapResult>),
    Total(RoomName, oneshot::Sender<Result<u64, StoreError>>),
    Check(oneshot::Sender<Result<(), StoreError>>),
}

/// The handle sockets and rooms use; cloning shares the writer.
#[derive(Debug, Clone)]
pub struct LoveStore {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Tap(tap, _) => write!(f, "Tap({tap:?})"),
            Request::Total(room, _) => write!(f, "Total({room})"),
            Request::Check(_) => write!(f, "Check"),
        }
    }
}

impl LoveStore {
    /// Starts the writer thread over `backend`.
    pub fn start(backend: impl LoveBackend) -> Self {
        let (requests, queue) = mpsc::channel(QUEUE);
        let spawned = thread::Builder::new()
            .name("love-writer".into())
            .spawn(move || write_loop(backend, queue));
        if let Err(error) = spawned {
            // Without the thread every request fails with `Stopped`, which
            // callers report; the server keeps beating.
            tracing::error!(%error, "cannot start the love writer thread");
        }
        Self { requests }
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
        }
    }

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
            TapOutcome::Counted { added: 1, total: 1 }
        );
    }
}
