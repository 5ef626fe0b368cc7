//! The client's love ledger (`shared::client::Love`) under arbitrary taps,
//! reconnects, clock advances and acknowledgements from a server that
//! follows the protocol (it acknowledges counts that were sent, with a
//! total that includes them).
//!
//! Asserted: taps are never fewer than the acknowledged count; a count due
//! to be sent is new, within `MAX_LOVE_STEP` of the acknowledged one and
//! never more than the taps; `next_due` and `due` agree (due at the time
//! `next_due` names, and nothing due while it says `None`); the shown total
//! never falls below the server's; and once the server has acknowledged
//! everything, nothing is pending.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shared::LoveAck;
use shared::client::Love;
use shared::protocol::MAX_LOVE_STEP;

#[derive(Debug, Arbitrary)]
struct Input {
    /// The persisted state after a reload.
    taps: u16,
    acked: u16,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Tap this many times.
    Tap(u8),
    /// A new connection.
    Connected,
    /// Let this many local milliseconds pass, then send what is due.
    Wait(u16),
    /// Send what is due at the moment `next_due` names.
    AtNextDue,
    /// The server acknowledges the `n`th count sent (from the newest back),
    /// with this many taps by others on top.
    Ack { back: u8, others: u8 },
    /// A consensus brings the total, with this many taps by others.
    Total { others: u8 },
}

/// The server, playing by the rules: it counts every sent count once.
struct Server {
    /// The highest count it has counted from this client.
    counted: u64,
    /// Love from everyone else.
    others: u64,
}

impl Server {
    fn total(&self) -> u64 {
        self.counted + self.others
    }
}

fn check(love: &Love) {
    assert!(love.taps() >= love.acked(), "taps {} under acked {}", love.taps(), love.acked());
    assert!(love.shown_total() >= love.total().unwrap_or(0), "the shown total under the server's");
}

fn send(love: &mut Love, now: f64, sent: &mut Vec<u64>) {
    let before = (love.acked(), love.taps());
    let next = love.next_due();
    match love.due(now) {
        Some(seq) => {
            assert!(seq > before.0, "a due count {seq} is new (acked {})", before.0);
            assert!(seq <= before.0 + MAX_LOVE_STEP, "a due count {seq} within the step");
            assert!(seq <= before.1, "a due count {seq} within the taps {}", before.1);
            assert!(next.is_some_and(|at| at <= now), "due at {now} though next_due said {next:?}");
            sent.push(seq);
        }
        None => assert!(next.is_none_or(|at| at > now), "nothing due at {now}, next_due {next:?}"),
    }
}

fuzz_target!(|input: Input| {
    let mut love = Love::new(u64::from(input.taps), u64::from(input.acked));
    let mut server = Server { counted: u64::from(input.acked), others: 0 };
    let mut sent: Vec<u64> = Vec::new();
    let mut now = 0.0;
    love.connected();
    check(&love);
    for op in input.ops {
        match op {
            Op::Tap(n) => {
                for _ in 0..n {
                    love.tap();
                }
            }
            Op::Connected => love.connected(),
            Op::Wait(ms) => {
                now += f64::from(ms);
                send(&mut love, now, &mut sent);
            }
            Op::AtNextDue => {
                if let Some(at) = love.next_due() {
                    now = f64::max(now, at);
                }
                send(&mut love, now, &mut sent);
            }
            Op::Ack { back, others } => {
                let Some(&seq) = sent.iter().rev().nth(usize::from(back)) else { continue };
                // The server's rule: a count at most one step past its own.
                if seq > server.counted + MAX_LOVE_STEP {
                    continue;
                }
                server.counted = server.counted.max(seq);
                server.others += u64::from(others);
                love.acknowledged(LoveAck { seq, total: server.total() });
            }
            Op::Total { others } => {
                server.others += u64::from(others);
                love.observe_total(server.total());
            }
        }
        check(&love);
    }
    // The server acknowledges everything, step by step.
    love.connected();
    for _ in 0..(love.pending() / MAX_LOVE_STEP + 2) {
        now += 100_000.0;
        let Some(seq) = love.due(now) else { break };
        server.counted = server.counted.max(seq);
        love.acknowledged(LoveAck { seq, total: server.total() });
        check(&love);
    }
    assert_eq!(love.pending(), 0, "everything acknowledged, nothing pending");
    assert_eq!(love.acked(), love.taps());
});
