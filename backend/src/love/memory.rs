//! An in-memory [`LoveBackend`] for unit tests: it applies the same rule as
//! SQLite, and a test can hold its commits (a slow disk) or make them fail
//! (a full disk).

use super::{LoveBackend, StoreError, Tap, TapOutcome, taps_added};
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
    last: HashMap<(RoomName, ClientId), u64>,
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
            let last = self.last.entry((tap.room.clone(), tap.client.clone())).or_default();
            let total = self.totals.entry(tap.room.clone()).or_default();
            outcomes.push(match taps_added(*last, tap.seq) {
                Some(added) => {
                    *last = (*last).max(tap.seq);
                    *total += added;
                    TapOutcome::Counted { added, total: *total }
                }
                None => TapOutcome::TooBig { last: *last },
            });
        }
        Ok(outcomes)
    }

    fn total(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        Ok(self.totals.get(room).copied().unwrap_or(0))
    }

    fn check_writable(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
