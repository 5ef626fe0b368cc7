//! The embedded love store: SQLite in WAL mode in `--data-dir`.
//!
//! `PRAGMA user_version` is the schema version; [`MIGRATIONS`] brings an
//! older file up to date in one transaction, and a newer file is refused
//! rather than misread. `synchronous = FULL` makes every commit durable
//! before it is acknowledged, power loss included.

use super::{LoveBackend, StoreError, Tap, TapOutcome, taps_added};
use rusqlite::{Connection, OptionalExtension, params};
use shared::RoomName;
use std::path::Path;

/// The file inside the data dir.
pub const FILE_NAME: &str = "heartsync.sqlite3";

/// Schema migrations; entry `i` takes the file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["
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
"];

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
            let mut last_seq = tx.prepare_cached(
                "SELECT last_seq FROM client_love WHERE room = ?1 AND client = ?2",
            )?;
            let mut set_seq = tx.prepare_cached(
                "INSERT INTO client_love (room, client, last_seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room, client) DO UPDATE SET last_seq = excluded.last_seq",
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
                let last: i64 = last_seq
                    .query_row(params![room, client], |row| row.get(0))
                    .optional()?
                    .unwrap_or(0);
                let last = u64::try_from(last).unwrap_or(0);
                let outcome = match taps_added(last, tap.seq) {
                    None => TapOutcome::TooBig { last },
                    Some(0) => {
                        let now: i64 = total
                            .query_row(params![room], |row| row.get(0))
                            .optional()?
                            .unwrap_or(0);
                        TapOutcome::Counted { added: 0, total: u64::try_from(now).unwrap_or(0) }
                    }
                    Some(added) => {
                        set_seq.execute(params![room, client, to_sql(tap.seq)])?;
                        let now: i64 =
                            add.query_row(params![room, to_sql(added)], |row| row.get(0))?;
                        TapOutcome::Counted { added, total: u64::try_from(now).unwrap_or(0) }
                    }
                };
                outcomes.push(outcome);
            }
        }
        tx.commit()?;
        Ok(outcomes)
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

    fn tap(room: &str, client: &str, seq: u64) -> Tap {
        Tap { room: RoomName::parse(room).unwrap(), client: ClientId::parse(client).unwrap(), seq }
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
                TapOutcome::Counted { added: 3, total: 3 },
                TapOutcome::Counted { added: 0, total: 3 },
                TapOutcome::Counted { added: 1, total: 4 },
                TapOutcome::TooBig { last: 3 },
            ]
        );
        drop(store);
        let mut store = SqliteLove::open(dir.path()).unwrap();
        assert_eq!(store.total(&RoomName::parse("r").unwrap()).unwrap(), 4);
        assert_eq!(store.total(&RoomName::parse("other").unwrap()).unwrap(), 0);
        assert_eq!(
            store.apply(&[tap("r", "client-a", 3)]).unwrap(),
            vec![TapOutcome::Counted { added: 0, total: 4 }]
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
