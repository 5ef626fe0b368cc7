//! The cost of one room's consensus with 10,000 voters: project every vote
//! to the tick, fold the circular mean and coherence, and serialize.
//!
//! `cargo bench -p bench --bench consensus`

use backend::room::{Report, consensus_of};
use criterion::{Criterion, criterion_group, criterion_main};
use shared::{Consensus, PhaseReport};
use std::hint::black_box;
use std::time::Duration;
use tokio::time::Instant;

fn votes(n: usize, now: Instant, at_ms: f64) -> Vec<Report> {
    (0..n)
        .map(|i| Report {
            conn: i as u64,
            report: PhaseReport {
                phase: (i as f64 * 0.618_033_988_7).fract(),
                bpm: 60.0 + (i % 40) as f64,
                at: at_ms - (i % 1000) as f64,
            },
            received: now,
        })
        .collect()
}

fn consensus(c: &mut Criterion) {
    let now = Instant::now();
    let at_ms = 1.7e12;
    let last = Consensus { bpm: 72.0, ..Consensus::default() };
    for n in [1_000, 10_000] {
        let reports = votes(n, now, at_ms);
        c.bench_function(&format!("consensus of {n} voters"), |b| {
            b.iter(|| {
                consensus_of(
                    black_box(reports.iter()),
                    n,
                    &last,
                    at_ms + 250.0,
                    now,
                    Duration::from_secs(5),
                    1,
                )
            })
        });
    }
    let reports = votes(10_000, now, at_ms);
    c.bench_function("consensus of 10000 voters, serialized", |b| {
        b.iter(|| {
            let consensus = consensus_of(
                reports.iter(),
                10_000,
                &last,
                at_ms + 250.0,
                now,
                Duration::from_secs(5),
                1,
            );
            shared::ServerMessage::Consensus(consensus).to_json()
        })
    });
}

criterion_group!(benches, consensus);
criterion_main!(benches);
