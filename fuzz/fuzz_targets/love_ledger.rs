//! The love ledger (the SQLite store) under arbitrary sequences of
//! cumulative counts from a few clients, committed in arbitrary groups.
//!
//! The invariant: a room's total is the sum, over its clients, of the
//! highest `seq` that was acknowledged as counted; never more. And each
//! outcome is what the rule says: a count adds what is new since the last
//! counted one, a replay adds nothing, and a jump over `MAX_LOVE_STEP` is
//! refused with the last count.

#![no_main]

use arbitrary::Arbitrary;
use backend::love::sqlite::SqliteLove;
use backend::love::{LoveBackend, Tap, TapOutcome};
use libfuzzer_sys::fuzz_target;
use shared::protocol::MAX_LOVE_STEP;
use shared::{ClientId, RoomName};
use std::sync::Mutex;

/// Clients per room: few, so that their counts interleave.
const CLIENTS: usize = 3;

/// Runs share one database (opening one per run would measure SQLite's
/// setup); each run has a room of its own, and the file is replaced now and
/// then so it does not grow without bound.
const RUNS_PER_FILE: u64 = 20_000;

#[derive(Debug, Arbitrary)]
struct Step {
    /// Which client sends (modulo [`CLIENTS`]).
    client: u8,
    /// The count it sends.
    seq: Seq,
    /// Whether the group is committed after this tap.
    commit: bool,
}

/// A count, relative to what the client sent before so that the fuzzer
/// reaches the step limit's edges, or absolute.
#[derive(Debug, Arbitrary)]
enum Seq {
    Ahead(u8),
    Behind(u8),
    Exactly(u64),
}

struct Ledger {
    /// Holds the directory the database is in (tmpfs when there is one, so
    /// that `synchronous = FULL` costs no disk).
    _dir: tempfile::TempDir,
    store: SqliteLove,
    runs: u64,
}

static LEDGER: Mutex<Option<Ledger>> = Mutex::new(None);

fn fresh_ledger() -> Ledger {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }
        .expect("a temporary directory");
    let store = SqliteLove::open(dir.path()).expect("a fresh store opens");
    Ledger { _dir: dir, store, runs: 0 }
}

fn client(i: usize) -> ClientId {
    ClientId::parse(&format!("client-{i}")).expect("a valid client id")
}

fuzz_target!(|steps: Vec<Step>| {
    let mut guard = LEDGER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if guard.as_ref().is_none_or(|ledger| ledger.runs >= RUNS_PER_FILE) {
        *guard = Some(fresh_ledger());
    }
    let ledger = guard.as_mut().expect("just set");
    ledger.runs += 1;
    let room = RoomName::parse(&format!("fuzz-{}", ledger.runs)).expect("a valid room name");
    let clients: Vec<ClientId> = (0..CLIENTS).map(client).collect();

    // The rule, restated: the last counted seq of each client.
    let mut last = [0u64; CLIENTS];
    // What was sent last, to make relative counts from.
    let mut sent = [0u64; CLIENTS];
    // The invariant's side: the highest seq acknowledged as counted.
    let mut highest_acked = [0u64; CLIENTS];
    let mut total = 0u64;

    let mut group: Vec<(usize, Tap)> = Vec::new();
    let count = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        let who = usize::from(step.client) % CLIENTS;
        let seq = match step.seq {
            Seq::Ahead(n) => sent[who].saturating_add(u64::from(n)),
            Seq::Behind(n) => sent[who].saturating_sub(u64::from(n)),
            Seq::Exactly(seq) => seq,
        };
        sent[who] = seq;
        group.push((who, Tap { room: room.clone(), client: clients[who].clone(), seq }));
        if !(step.commit || i + 1 == count) {
            continue;
        }
        let taps: Vec<Tap> = group.iter().map(|(_, tap)| tap.clone()).collect();
        let outcomes = ledger.store.apply(&taps).expect("the store commits");
        assert_eq!(outcomes.len(), taps.len(), "one outcome per tap");
        for ((who, tap), outcome) in group.drain(..).zip(outcomes) {
            let new = tap.seq.saturating_sub(last[who]);
            let expected = if new <= MAX_LOVE_STEP {
                last[who] = last[who].max(tap.seq);
                total += new;
                TapOutcome::Counted { added: new, total }
            } else {
                TapOutcome::TooBig { last: last[who] }
            };
            assert_eq!(outcome, expected, "{tap:?}");
            if let TapOutcome::Counted { total, .. } = outcome {
                highest_acked[who] = highest_acked[who].max(tap.seq);
                let acked: u64 = highest_acked.iter().sum();
                assert_eq!(total, acked, "the total is the sum of the highest acked counts");
            }
        }
    }
    let stored = ledger.store.total(&room).expect("the store reads");
    assert_eq!(stored, highest_acked.iter().sum::<u64>(), "the stored total, read back");
});
