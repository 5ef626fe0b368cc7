//! An in-memory [`LoveBackend`] for unit tests: it applies the same rule as
//! SQLite, and a test can hold its commits (a slow disk) or make them fail
//! (a full disk).

use super::{Decision, Ledger, LoveBackend, StoreError, Tap, TapOutcome, active_at, decide};
use shared::{ClientId, RoomName};
use std::collections::HashMap;
use std::sync::mpsc;

/// What a test does to the next commit.
#[derive(Debug)]
pub enum Commit {
    /// Commit it.
    Succeed,
    /// Fail it as SQLite fails on a full disk.
    DiskFull,
}

/// Love kept in maps; commits optionally wait for the test's say-so.
#[derive(Debug, Default)]
pub struct MemoryLove {
    /// Each client's ledger, and when it last had love (server ms).
    ledgers: HashMap<(RoomName, ClientId), (Ledger, u64)>,
    totals: HashMap<RoomName, u64>,
    /// When set, every commit waits for a [`Commit`] from the test.
    gate: Option<mpsc::Receiver<Commit>>,
}

impl MemoryLove {
    /// A store whose commits each wait for a [`Commit`] on the returned sender.
    pub fn gated() -> (Self, mpsc::Sender<Commit>) {
        let (open, gate) = mpsc::channel();
        (Self { gate: Some(gate), ..Self::default() }, open)
    }
}

fn disk_full() -> StoreError {
    StoreError::from(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        None,
    ))
}

impl LoveBackend for MemoryLove {
    fn apply(&mut self, taps: &[Tap]) -> Result<Vec<TapOutcome>, StoreError> {
        if let Some(gate) = &self.gate {
            match gate.recv() {
                Ok(Commit::Succeed) => {}
                Ok(Commit::DiskFull) | Err(_) => return Err(disk_full()),
            }
        }
        let mut outcomes = Vec::with_capacity(taps.len());
        for tap in taps {
            let key = (tap.room.clone(), tap.client.clone());
            let total = self.totals.entry(tap.room.clone()).or_default();
            let ledger = self.ledgers.get(&key).map(|(ledger, _)| *ledger);
            outcomes.push(match decide(ledger, tap) {
                Decision::Count { added, ledger, created } => {
                    *total += added;
                    if let Some(ledger) = ledger.filter(|_| added > 0 || created) {
                        self.ledgers.insert(key, (ledger, active_at(tap, &ledger)));
                    }
                    let epoch = ledger.map_or(0, |l| l.epoch);
                    TapOutcome::Counted { added, total: *total, epoch, created }
                }
                Decision::TooBig { last } => TapOutcome::TooBig { last },
                Decision::Folded => TapOutcome::Folded { total: *total },
                Decision::NoLedger => TapOutcome::NoLedger,
            });
        }
        Ok(outcomes)
    }

    fn fold(&mut self, idle_before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let idle: Vec<_> = self
            .ledgers
            .iter()
            .filter(|(_, (_, active))| *active < idle_before_ms)
            .map(|(key, _)| key.clone())
            .take(limit)
            .collect();
        for key in &idle {
            self.ledgers.remove(key);
        }
        Ok(idle.len())
    }

    fn total(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        Ok(self.totals.get(room).copied().unwrap_or(0))
    }

    fn check_writable(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
