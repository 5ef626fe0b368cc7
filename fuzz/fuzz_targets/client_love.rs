//! The client's love ledger (`shared::client::Love`) under arbitrary taps,
//! reconnects, clock advances, a server that answers each connection's
//! counts in order (or never, when the connection drops first) and folds
//! the client's ledger whenever it has been idle for the retention, a
//! clock synced or not, and hostile acknowledgements.
//!
//! Asserted: taps are never fewer than the acknowledged count; a count due
//! to be sent is new, within `MAX_LOVE_STEP` of the acknowledged one and
//! never more than the taps; `next_due` and `due` agree (due at the time
//! `next_due` names, and nothing due while it says `None`); the shown total
//! never falls below the server's. Against the honest server: every tap is
//! counted at most once, across every fold (the server never counts more
//! taps than were made), and a tap is lost only when the client gave it up
//! for a fold; once the server has acknowledged everything, nothing is
//! pending. A hostile acknowledgement (any count, any epoch, near
//! `u64::MAX`) may confuse the client but never makes it panic.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shared::client::Love;
use shared::protocol::MAX_LOVE_STEP;
use shared::{LoveAck, LoveFolded};
use std::collections::VecDeque;

#[derive(Debug, Arbitrary)]
struct Input {
    /// The persisted state after a reload (in a ledger the server keeps,
    /// when anything was acknowledged).
    taps: u16,
    acked: u16,
    /// How long (ms) past a second the server keeps an idle ledger (the
    /// server refuses less than a second: a synced clock is well within it).
    retention: u16,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Tap this many times.
    Tap(u8),
    /// The connection drops (counts the server took stay counted, answers
    /// not yet read are lost) and a new one is up.
    Connected,
    /// Let this many milliseconds pass, then send what is due if the clock
    /// is `synced` (as the session does: love waits for the clock, and a
    /// new ledger is named from it).
    Wait { ms: u16, synced: bool },
    /// Send what is due at the moment `next_due` names, if `synced`.
    AtNextDue { synced: bool },
    /// The server takes the oldest count in flight and answers it.
    Process,
    /// The client reads the oldest answer.
    Answer,
    /// The server folds the client's ledger if it was idle for the
    /// retention.
    Fold,
    /// Others tap this many times, and a consensus brings the total.
    Total { others: u8 },
    /// A hostile server sends an ack of its own making (the honest server's
    /// checks end: what follows is about not panicking).
    Hostile { seq: u64, total: u64, epoch: u64 },
}

/// The server, playing by the protocol.
#[derive(Debug, Default)]
struct Server {
    /// The server's clock (ms); the client's, when synced, is the same.
    now: u64,
    /// How long an idle ledger is kept.
    retention: u64,
    /// The client's ledger: its epoch, last count, and last activity.
    ledger: Option<(u64, u64, u64)>,
    /// Taps counted from this client, in every ledger.
    counted: u64,
    /// Love from everyone else.
    others: u64,
    /// Counts sent on the current connection, not yet processed.
    inbox: VecDeque<(u64, u64)>,
    /// Answers not yet read by the client.
    outbox: VecDeque<Answer>,
}

#[derive(Debug)]
enum Answer {
    Ack(LoveAck),
    Folded(LoveFolded),
    /// An error (a jump too far): counts nothing.
    Refused,
}

impl Server {
    fn total(&self) -> u64 {
        self.counted + self.others
    }

    /// The protocol's rule for one count.
    fn process(&mut self, seq: u64, epoch: u64) -> Answer {
        let fresh = epoch != 0 && epoch > self.now.saturating_sub(self.retention);
        if epoch as f64 > self.now as f64 + 10_000.0 {
            return Answer::Refused;
        }
        match self.ledger {
            Some((current, last, _)) if epoch == 0 || epoch == current || fresh => {
                let added = seq.saturating_sub(last);
                if added > MAX_LOVE_STEP {
                    return Answer::Refused;
                }
                if added > 0 {
                    self.ledger = Some((current, seq, self.now.max(current)));
                }
                self.counted += added;
                Answer::Ack(LoveAck { seq, total: self.total(), epoch: current })
            }
            Some(_) => Answer::Folded(LoveFolded { epoch, seq, total: self.total() }),
            None if epoch != 0 && !fresh => {
                Answer::Folded(LoveFolded { epoch, seq, total: self.total() })
            }
            None if seq == 0 => Answer::Ack(LoveAck { seq, total: self.total(), epoch: 0 }),
            None => self.start(seq, epoch),
        }
    }

    fn start(&mut self, seq: u64, epoch: u64) -> Answer {
        if seq > MAX_LOVE_STEP {
            return Answer::Refused;
        }
        let epoch = if epoch == 0 { self.now.max(2) } else { epoch };
        self.ledger = Some((epoch, seq, self.now.max(epoch)));
        self.counted += seq;
        Answer::Ack(LoveAck { seq, total: self.total(), epoch })
    }

    /// Folds the ledger if it has been idle for the retention.
    fn fold(&mut self) {
        if self
            .ledger
            .is_some_and(|(_, _, active)| active < self.now.saturating_sub(self.retention))
        {
            self.ledger = None;
        }
    }
}

fn check(love: &Love) {
    assert!(love.taps() >= love.acked(), "taps {} under acked {}", love.taps(), love.acked());
    assert!(love.shown_total() >= love.total().unwrap_or(0), "the shown total under the server's");
}

fn send(love: &mut Love, now: f64, synced: bool, server: &mut Server) {
    if !synced {
        return;
    }
    let before = (love.acked(), love.taps());
    let next = love.next_due();
    match love.due(now) {
        Some(seq) => {
            assert!(seq > before.0, "a due count {seq} is new (acked {})", before.0);
            assert!(seq <= before.0.saturating_add(MAX_LOVE_STEP), "a due count {seq} within the step");
            assert!(seq <= before.1, "a due count {seq} within the taps {}", before.1);
            assert!(next.is_some_and(|at| at <= now), "due at {now} though next_due said {next:?}");
            server.inbox.push_back((seq, love.epoch_to_send(Some(server.now as f64))));
        }
        None => assert!(next.is_none_or(|at| at > now), "nothing due at {now}, next_due {next:?}"),
    }
}

/// Hands the client the server's answer; returns the taps it gave up.
fn read(love: &mut Love, answer: Answer) -> u64 {
    match answer {
        Answer::Ack(ack) => {
            love.acknowledged(ack);
            0
        }
        Answer::Folded(folded) => love.folded(folded),
        Answer::Refused => 0,
    }
}

fuzz_target!(|input: Input| {
    let acked = u64::from(input.acked);
    let retention = 1_000 + u64::from(input.retention);
    let mut server = Server { now: 1_000_000, retention, ..Server::default() };
    // A reloaded client whose acknowledged count is in a ledger the server
    // keeps (epoch 2); a client with nothing acknowledged has none yet.
    let mut love = if acked > 0 {
        server.ledger = Some((2, acked, server.now));
        server.counted = acked;
        Love::resume(u64::from(input.taps), acked, 2)
    } else {
        Love::new(u64::from(input.taps), 0)
    };
    // Every tap made, and those given up for a fold.
    let mut made = u64::from(input.taps).max(acked);
    let mut given_up = 0u64;
    let mut honest = true;
    let mut now = 0.0;
    love.connected();
    check(&love);
    for op in input.ops {
        match op {
            Op::Tap(n) => {
                for _ in 0..n {
                    love.tap();
                }
                made += u64::from(n);
            }
            Op::Connected => {
                server.outbox.clear();
                server.inbox.clear();
                love.connected();
            }
            Op::Wait { ms, synced } => {
                now += f64::from(ms);
                server.now += u64::from(ms);
                send(&mut love, now, synced, &mut server);
            }
            Op::AtNextDue { synced } => {
                if let Some(at) = love.next_due() {
                    if at > now {
                        server.now += (at - now).ceil() as u64;
                    }
                    now = f64::max(now, at);
                }
                send(&mut love, now, synced, &mut server);
            }
            Op::Process => {
                if let Some((seq, epoch)) = server.inbox.pop_front() {
                    let answer = server.process(seq, epoch);
                    server.outbox.push_back(answer);
                }
            }
            Op::Answer => {
                if let Some(answer) = server.outbox.pop_front() {
                    given_up += read(&mut love, answer);
                }
            }
            Op::Fold => server.fold(),
            Op::Total { others } => {
                server.others += u64::from(others);
                love.observe_total(server.total());
            }
            Op::Hostile { seq, total, epoch } => {
                honest = false;
                love.acknowledged(LoveAck { seq, total, epoch });
            }
        }
        check(&love);
        if honest {
            assert!(
                server.counted <= made,
                "{} taps counted, {made} made: a tap was counted twice",
                server.counted
            );
        }
    }
    if !honest {
        return;
    }
    // The connection is made again and the server answers everything, step
    // by step (a fold may answer the first count; the new ledger follows).
    love.connected();
    server.outbox.clear();
    server.inbox.clear();
    for _ in 0..(love.pending() / MAX_LOVE_STEP + 4) {
        now += 100_000.0;
        server.now += 100_000;
        let Some(seq) = love.due(now) else { break };
        let epoch = love.epoch_to_send(Some(server.now as f64));
        let answer = server.process(seq, epoch);
        given_up += read(&mut love, answer);
        check(&love);
    }
    assert_eq!(love.pending(), 0, "everything acknowledged, nothing pending");
    assert!(server.counted <= made, "a tap counted twice: {} of {made}", server.counted);
    assert!(
        server.counted + given_up >= made,
        "{} counted and {given_up} given up of {made} made: a tap was lost",
        server.counted
    );
});
