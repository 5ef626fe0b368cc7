//! The love ledger (the SQLite store) under arbitrary sequences of
//! cumulative counts from a few clients, naming their ledger, none, a new
//! one, a folded one or any, with arbitrary limits and quotas, committed in
//! arbitrary groups, and folds of the ledgers idle for the run's retention
//! at arbitrary times.
//!
//! Each outcome is what the protocol's rule says, restated here apart from
//! the store's code: a count adds what is new since the last one counted in
//! its ledger (within the tap's limit), a replay adds nothing, a count
//! naming a ledger that is not kept and may have been (its epoch is older
//! than the retention) is answered folded and counts nothing, a newer epoch
//! counts in the client's ledger or starts one, and a client naming none
//! without a ledger starts one (quota permitting). The invariant: the room's total is, over the
//! clients, the taps counted in each ledger they had (its highest counted
//! `seq` less where it started), folded ones included; never more. So a
//! resend across a fold never counts twice.

#![no_main]

use arbitrary::Arbitrary;
use backend::love::sqlite::SqliteLove;
use backend::love::{LoveBackend, Tap, TapOutcome};
use libfuzzer_sys::fuzz_target;
use shared::protocol::{MAX_LOVE_SEQ, MAX_LOVE_STEP};
use shared::{ClientId, RoomName};
use std::sync::Mutex;

/// Clients per room: few, so that their counts interleave.
const CLIENTS: usize = 3;

/// Runs share one database (opening one per run would measure SQLite's
/// setup); each run has a room of its own and starts by folding every
/// ledger left from the last, and the file is replaced now and then so it
/// does not grow without bound.
const RUNS_PER_FILE: u64 = 20_000;

#[derive(Debug, Arbitrary)]
struct Input {
    /// How long (ms) a ledger is kept without love.
    retention: u16,
    steps: Vec<Step>,
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// A client sends a count.
    Love {
        /// Which client sends (modulo [`CLIENTS`]).
        client: u8,
        /// The count it sends.
        seq: Seq,
        /// The ledger it names.
        epoch: Epoch,
        /// The most it may add (its connection's budget), up to the step.
        limit: u8,
        /// Whether it may start a ledger (its address's quota).
        may_create: bool,
        /// Whether the group is committed after this tap.
        commit: bool,
    },
    /// Time passes (ms).
    Wait(u16),
    /// Ledgers idle for longer than the retention are folded, this many
    /// per commit.
    Fold { batch: u8 },
}

/// A count, relative to what the client sent before so that the fuzzer
/// reaches the step limit's edges, or absolute.
#[derive(Debug, Arbitrary)]
enum Seq {
    Ahead(u8),
    Behind(u8),
    Exactly(u64),
}

/// The ledger a count names.
#[derive(Debug, Arbitrary)]
enum Epoch {
    /// None (0): the client's ledger, whichever it is, or a new one.
    Zero,
    /// The one the client was last told of.
    Known,
    /// One the client had before (folded), by index.
    Old(u8),
    /// A new one, proposed from the clock this long (ms) ago.
    Fresh(u16),
    /// Any number at all.
    Any(u64),
}

struct Ledger {
    /// Holds the directory the database is in (tmpfs when there is one, so
    /// that `synchronous = FULL` costs no disk).
    _dir: tempfile::TempDir,
    store: SqliteLove,
    runs: u64,
    /// The clock, in ms: it only moves on, over every run, so a ledger's
    /// epoch is never one an earlier run used.
    now: u64,
}

static LEDGER: Mutex<Option<Ledger>> = Mutex::new(None);

fn fresh_ledger() -> Ledger {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }
        .expect("a temporary directory");
    let store = SqliteLove::open(dir.path()).expect("a fresh store opens");
    Ledger { _dir: dir, store, runs: 0, now: 1_000 }
}

fn client(i: usize) -> ClientId {
    ClientId::parse(&format!("client-{i}")).expect("a valid client id")
}

/// The model's view of one client's ledger.
#[derive(Debug, Clone, Copy)]
struct Model {
    epoch: u64,
    last: u64,
    /// When it last counted something.
    active: u64,
}

/// One client, as the model sees it.
#[derive(Debug, Default)]
struct Client {
    ledger: Option<Model>,
    /// Epochs it had, folded since.
    old: Vec<u64>,
    /// The epoch it was last told of.
    known: u64,
    /// What it sent last, to make relative counts from.
    sent: u64,
    /// Taps counted in its current ledger.
    counted: u64,
}

/// The rule, restated: what `tap` should do to `client`, applied to the
/// model.
fn expect(client: &mut Client, tap: &Tap, total: &mut u64) -> TapOutcome {
    let fresh = tap.epoch != 0 && tap.epoch > tap.fresh_after_ms;
    match client.ledger {
        Some(ledger) if tap.epoch == 0 || tap.epoch == ledger.epoch || fresh => {
            let added = tap.seq.saturating_sub(ledger.last);
            if added > tap.limit {
                return TapOutcome::TooBig { last: ledger.last };
            }
            if added > 0 {
                let active = tap.at_ms.max(ledger.epoch);
                client.ledger = Some(Model { epoch: ledger.epoch, last: tap.seq, active });
            }
            *total += added;
            client.counted += added;
            TapOutcome::Counted { added, total: *total, epoch: ledger.epoch, created: false }
        }
        Some(_) => TapOutcome::Folded { total: *total },
        None if tap.epoch != 0 && !fresh => TapOutcome::Folded { total: *total },
        None if tap.seq == 0 => {
            TapOutcome::Counted { added: 0, total: *total, epoch: 0, created: false }
        }
        None => start(client, tap, total),
    }
}

/// A new ledger for `client`, by the rule.
fn start(client: &mut Client, tap: &Tap, total: &mut u64) -> TapOutcome {
    if !tap.may_create {
        return TapOutcome::NoLedger;
    }
    let named = tap.epoch != 0;
    if (named || tap.seq <= MAX_LOVE_STEP) && tap.seq > tap.limit {
        return TapOutcome::TooBig { last: 0 };
    }
    let epoch = if named { tap.epoch } else { tap.at_ms };
    // A count over the step from a client naming no ledger, without one,
    // starts the ledger there, counting nothing.
    let added = if !named && tap.seq > MAX_LOVE_STEP { 0 } else { tap.seq };
    // Active at the later of now and its epoch (a proposal may run ahead).
    client.ledger = Some(Model { epoch, last: tap.seq, active: tap.at_ms.max(epoch) });
    client.counted = added;
    *total += added;
    TapOutcome::Counted { added, total: *total, epoch, created: true }
}

fuzz_target!(|input: Input| {
    let retention = u64::from(input.retention);
    let mut guard = LEDGER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if guard.as_ref().is_none_or(|ledger| ledger.runs >= RUNS_PER_FILE) {
        *guard = Some(fresh_ledger());
    }
    let ledger = guard.as_mut().expect("just set");
    ledger.runs += 1;
    // Every ledger of the runs before goes, so this run's folds count only
    // its own.
    while ledger.store.fold(u64::MAX, 10_000).expect("the store folds") > 0 {}
    let room = RoomName::parse(&format!("fuzz-{}", ledger.runs)).expect("a valid room name");
    let ids: Vec<ClientId> = (0..CLIENTS).map(client).collect();

    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::default()).collect();
    // Taps counted in ledgers folded since.
    let mut folded_taps = 0u64;
    let mut total = 0u64;
    let mut group: Vec<(usize, Tap)> = Vec::new();

    let commit = |store: &mut SqliteLove,
                  group: &mut Vec<(usize, Tap)>,
                  clients: &mut Vec<Client>,
                  total: &mut u64| {
        if group.is_empty() {
            return;
        }
        let taps: Vec<Tap> = group.iter().map(|(_, tap)| tap.clone()).collect();
        let outcomes = store.apply(&taps).expect("the store commits");
        assert_eq!(outcomes.len(), taps.len(), "one outcome per tap");
        for ((who, tap), outcome) in group.drain(..).zip(outcomes) {
            if clients[who].old.contains(&tap.epoch) {
                assert!(
                    matches!(outcome, TapOutcome::Folded { .. }),
                    "a count in a folded ledger is never counted again: {tap:?} {outcome:?}"
                );
            }
            let expected = expect(&mut clients[who], &tap, total);
            assert_eq!(outcome, expected, "{tap:?}");
            if let TapOutcome::Counted { epoch, .. } = outcome
                && epoch != 0
            {
                clients[who].known = epoch;
            }
        }
    };

    for step in input.steps {
        match step {
            Step::Love { client: who, seq, epoch, limit, may_create, commit: now } => {
                let who = usize::from(who) % CLIENTS;
                let client = &mut clients[who];
                let seq = match seq {
                    Seq::Ahead(n) => client.sent.saturating_add(u64::from(n)),
                    Seq::Behind(n) => client.sent.saturating_sub(u64::from(n)),
                    Seq::Exactly(seq) => seq,
                };
                // The protocol refuses counts over MAX_LOVE_SEQ before they
                // reach the store.
                let seq = seq.min(MAX_LOVE_SEQ);
                client.sent = seq;
                let epoch = match epoch {
                    Epoch::Zero => 0,
                    Epoch::Known => client.known,
                    Epoch::Old(i) if !client.old.is_empty() => {
                        client.old[usize::from(i) % client.old.len()]
                    }
                    Epoch::Old(_) => 0,
                    Epoch::Fresh(ago) => ledger.now.saturating_sub(u64::from(ago)),
                    // The protocol refuses epochs over MAX_LOVE_SEQ or more
                    // than 10 s ahead of the server's clock.
                    Epoch::Any(epoch) => epoch.min(ledger.now + 10_000),
                };
                let tap = Tap {
                    room: room.clone(),
                    client: ids[who].clone(),
                    seq,
                    epoch,
                    limit: u64::from(limit).min(MAX_LOVE_STEP),
                    may_create,
                    at_ms: ledger.now,
                    fresh_after_ms: ledger.now.saturating_sub(retention),
                };
                group.push((who, tap));
                if now {
                    commit(&mut ledger.store, &mut group, &mut clients, &mut total);
                }
            }
            Step::Wait(ms) => ledger.now += u64::from(ms),
            Step::Fold { batch } => {
                commit(&mut ledger.store, &mut group, &mut clients, &mut total);
                let before = ledger.now.saturating_sub(retention);
                let batch = usize::from(batch).max(1);
                let mut folded = 0;
                loop {
                    let n = ledger.store.fold(before, batch).expect("the store folds");
                    assert!(n <= batch, "{n} folded in a batch of {batch}");
                    folded += n;
                    if n < batch {
                        break;
                    }
                }
                let mut expected = 0;
                for client in &mut clients {
                    if let Some(model) = client.ledger.filter(|m| m.active < before) {
                        client.ledger = None;
                        client.old.push(model.epoch);
                        folded_taps += client.counted;
                        client.counted = 0;
                        expected += 1;
                    }
                }
                assert_eq!(folded, expected, "the idle ledgers, and only them, are folded");
            }
        }
        // A new ledger's epoch is the clock: it moves on at least a tick
        // per step, so two ledgers never share one.
        ledger.now += 1;
        let counted: u64 = clients.iter().map(|c| c.counted).sum();
        assert_eq!(total, counted + folded_taps, "the total is every ledger's taps, once");
    }
    commit(&mut ledger.store, &mut group, &mut clients, &mut total);
    let counted: u64 = clients.iter().map(|c| c.counted).sum();
    let stored = ledger.store.total(&room).expect("the store reads");
    assert_eq!(stored, counted + folded_taps, "the stored total, read back");
});
