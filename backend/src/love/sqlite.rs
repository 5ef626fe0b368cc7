//! The embedded love store: SQLite in WAL mode in `--data-dir`.
//!
//! `PRAGMA user_version` is the schema version; [`MIGRATIONS`] brings an
//! older file up to date in one transaction, and a newer file is refused
//! rather than misread. `synchronous = FULL` makes every commit durable
//! before it is acknowledged, power loss included.
//!
//! `client_love` holds each client's ledger: its epoch, its last count and
//! when it last had love; an index on the last makes folding the idle ones
//! (`--love-retention`) a range delete.

use super::{
    Decision, LEGACY_EPOCH, Ledger, LoveBackend, StoreError, Tap, TapOutcome, active_at, decide,
};
use rusqlite::{Connection, OptionalExtension, params};
use shared::RoomName;
use std::path::Path;

/// The file inside the data dir.
pub const FILE_NAME: &str = "heartsync.sqlite3";

/// Schema migrations; entry `i` takes the file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE room_love (
        room  TEXT PRIMARY KEY,
        total INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE client_love (
        room     TEXT NOT NULL,
        client   TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (room, client)
    ) WITHOUT ROWID;
",
    "
    -- Version 2: ledgers have an epoch and a last activity, so idle ones
    -- can be folded. Ledgers from before are epoch 1 (LEGACY_EPOCH) and
    -- count as active from the upgrade on.
    ALTER TABLE client_love ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE client_love ADD COLUMN last_active INTEGER NOT NULL DEFAULT 0;
    UPDATE client_love SET last_active = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
    CREATE INDEX client_love_idle ON client_love (last_active);
",
];

/// Love totals in a SQLite file.
#[derive(Debug)]
pub struct SqliteLove {
    db: Connection,
}

impl SqliteLove {
    /// Opens (creating if needed) the store in `data_dir`, and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(data_dir.join(FILE_NAME))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Self { db };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self.db.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(StoreError::Incompatible(format!(
                "the data file has schema version {version}, newer than this server knows ({}); \
                 run a newer heartsync or use another --data-dir",
                MIGRATIONS.len()
            )));
        }
        let tx = self.db.transaction()?;
        for migration in &MIGRATIONS[version..] {
            tx.execute_batch(migration)?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
        tx.commit()?;
        Ok(())
    }
}

impl LoveBackend for SqliteLove {
    fn apply(&mut self, taps: &[Tap]) -> Result<Vec<TapOutcome>, StoreError> {
        let tx = self.db.transaction()?;
        let mut outcomes = Vec::with_capacity(taps.len());
        {
            let mut ledger = tx.prepare_cached(
                "SELECT epoch, last_seq FROM client_love WHERE room = ?1 AND client = ?2",
            )?;
            let mut keep = tx.prepare_cached(
                "INSERT INTO client_love (room, client, epoch, last_seq, last_active)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (room, client) DO UPDATE SET epoch = excluded.epoch,
                   last_seq = excluded.last_seq, last_active = excluded.last_active",
            )?;
            let mut add = tx.prepare_cached(
                "INSERT INTO room_love (room, total) VALUES (?1, ?2)
                 ON CONFLICT (room) DO UPDATE SET total = total + excluded.total
                 RETURNING total",
            )?;
            let mut total = tx.prepare_cached("SELECT total FROM room_love WHERE room = ?1")?;
            for tap in taps {
                let room = tap.room.as_str();
                let client = tap.client.as_str();
                let found: Option<(i64, i64)> = ledger
                    .query_row(params![room, client], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                let found = found.map(|(epoch, last)| Ledger {
                    epoch: u64::try_from(epoch).unwrap_or(LEGACY_EPOCH),
                    last: u64::try_from(last).unwrap_or(0),
                });
                let mut current = || -> Result<u64, StoreError> {
                    let now: Option<i64> =
                        total.query_row(params![room], |row| row.get(0)).optional()?;
                    Ok(now.map_or(0, |t| u64::try_from(t).unwrap_or(0)))
                };
                let outcome = match decide(found, tap) {
                    Decision::Count { added, ledger, created } => {
                        if let Some(ledger) = ledger.filter(|_| added > 0 || created) {
                            keep.execute(params![
                                room,
                                client,
                                to_sql(ledger.epoch),
                                to_sql(ledger.last),
                                to_sql(active_at(tap, &ledger))
                            ])?;
                        }
                        let total = if added > 0 {
                            let now: i64 =
                                add.query_row(params![room, to_sql(added)], |row| row.get(0))?;
                            u64::try_from(now).unwrap_or(0)
                        } else {
                            current()?
                        };
                        let epoch = ledger.map_or(0, |l| l.epoch);
                        TapOutcome::Counted { added, total, epoch, created }
                    }
                    Decision::TooBig { last } => TapOutcome::TooBig { last },
                    Decision::Folded => TapOutcome::Folded { total: current()? },
                    Decision::NoLedger => TapOutcome::NoLedger,
                };
                outcomes.push(outcome);
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn fold(&mut self, idle_before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let tx = self.db.transaction()?;
        let folded = tx.execute(
            "DELETE FROM client_love WHERE (room, client) IN (
                 SELECT room, client FROM client_love WHERE last_active < ?1 LIMIT ?2
             )",
            params![to_sql(idle_before_ms), i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(folded)
    }

    fn check_writable(&mut self) -> Result<(), StoreError> {
        // Taking the write lock proves the file is writable and not locked
        // by someone else; nothing is written.
        let tx = self.db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.rollback()?;
        Ok(())
    }

    fn total(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        let total: Option<i64> = self
            .db
            .query_row(
                "SELECT total FROM room_love WHERE room = ?1",
                params![room.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(total.map_or(0, |t| u64::try_from(t).unwrap_or(0)))
    }
}

/// SQLite integers are signed; counts past `i64::MAX` are clamped (no one
/// taps nine quintillion times, but a client may claim to).
fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::ClientId;

    const EPOCH: u64 = 1_700_000_000_000;

    fn tap(room: &str, client: &str, seq: u64) -> Tap {
        Tap {
            room: RoomName::parse(room).unwrap(),
            client: ClientId::parse(client).unwrap(),
            seq,
            epoch: 0,
            limit: shared::protocol::MAX_LOVE_STEP,
            may_create: true,
            at_ms: EPOCH,
            fresh_after_ms: EPOCH - 1000,
        }
    }

    fn counted(added: u64, total: u64, created: bool) -> TapOutcome {
        TapOutcome::Counted { added, total, epoch: EPOCH, created }
    }

    #[test]
    fn counts_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteLove::open(dir.path()).unwrap();
        let outcomes = store
            .apply(&[
                tap("r", "client-a", 3),
                tap("r", "client-a", 2),
                tap("r", "client-b", 1),
                tap("r", "client-a", 60),
            ])
            .unwrap();
        assert_eq!(
            outcomes,
            vec![
                counted(3, 3, true),
                counted(0, 3, false),
                counted(1, 4, true),
                TapOutcome::TooBig { last: 3 },
            ]
        );
        drop(store);
        let mut store = SqliteLove::open(dir.path()).unwrap();
        assert_eq!(store.total(&RoomName::parse("r").unwrap()).unwrap(), 4);
        assert_eq!(store.total(&RoomName::parse("other").unwrap()).unwrap(), 0);
        assert_eq!(store.apply(&[tap("r", "client-a", 3)]).unwrap(), vec![counted(0, 4, false)]);
    }

    #[test]
    fn idle_ledgers_are_folded_and_a_resend_to_one_counts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteLove::open(dir.path()).unwrap();
        let later = |seq, at_ms| Tap { at_ms, ..tap("r", "client-a", seq) };
        store.apply(&[tap("r", "client-a", 4), later(5, EPOCH + 10)]).unwrap();
        store.apply(&[Tap { at_ms: EPOCH + 10, ..tap("r", "client-b", 2) }]).unwrap();
        // Both last counted at EPOCH + 10; a replay later is no activity.
        store.apply(&[later(5, EPOCH + 20)]).unwrap();
        assert_eq!(store.fold(EPOCH + 10, 100).unwrap(), 0);
        assert_eq!(store.fold(EPOCH + 11, 1).unwrap(), 1, "at most the limit");
        assert_eq!(store.fold(EPOCH + 11, 100).unwrap(), 1);
        drop(store);
        let mut store = SqliteLove::open(dir.path()).unwrap();
        let room = RoomName::parse("r").unwrap();
        assert_eq!(store.total(&room).unwrap(), 7, "folding keeps the total");
        // A resend naming the folded ledger counts nothing...
        // (The retention is 50 ms: an epoch at or before EPOCH + 49 may
        // have been folded.)
        let after = |seq, epoch| Tap {
            epoch,
            at_ms: EPOCH + 99,
            fresh_after_ms: EPOCH + 49,
            ..tap("r", "client-a", seq)
        };
        let resend = after(5, EPOCH);
        assert_eq!(store.apply(&[resend]).unwrap(), vec![TapOutcome::Folded { total: 7 }]);
        // ...and the client's new ledger counts only what is new.
        let fresh = after(1, 0);
        assert_eq!(
            store.apply(&[fresh]).unwrap(),
            vec![TapOutcome::Counted { added: 1, total: 8, epoch: EPOCH + 99, created: true }]
        );
        let stale = after(5, EPOCH);
        assert_eq!(store.apply(&[stale]).unwrap(), vec![TapOutcome::Folded { total: 8 }]);
    }

    #[test]
    fn a_version_1_file_is_migrated_with_its_ledgers_kept_as_legacy_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let db = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        db.execute_batch(MIGRATIONS[0]).unwrap();
        db.execute_batch(
            "INSERT INTO room_love VALUES ('r', 9);
             INSERT INTO client_love VALUES ('r', 'client-a', 9);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(db);
        let mut store = SqliteLove::open(dir.path()).unwrap();
        // It was stamped active at the upgrade, not folded at once.
        assert_eq!(store.fold(EPOCH, 100).unwrap(), 0);
        // An old client resending counts nothing; its ledger is epoch 1.
        assert_eq!(
            store.apply(&[tap("r", "client-a", 9)]).unwrap(),
            vec![TapOutcome::Counted { added: 0, total: 9, epoch: LEGACY_EPOCH, created: false }]
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteLove::open(dir.path()).unwrap());
        let db = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        let error = SqliteLove::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("newer"), "{error}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            b"this is not a database, just text".repeat(100),
        )
        .unwrap();
        assert!(SqliteLove::open(dir.path()).is_err());
    }
}
