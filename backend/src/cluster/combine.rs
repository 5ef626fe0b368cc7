//! The consensus of a room spread over several instances, composed exactly
//! from sums. Pure: no Redis, no clock, no tasks.
//!
//! The circular mean is a sum of unit vectors, so it composes: each instance
//! sums its own voters (projected to the tick's time) into a [`Partial`],
//! and the room's consensus is computed from the sum of every live
//! instance's partial. [`Combiner::combine`] adds the partials in a canonical
//! order (by instance id), so every instance that holds the same partials
//! computes bit-identical ψ, R and bpm, whatever order they arrived in.
//!
//! A partial that has not arrived by its tick is replaced by the instance's
//! newest earlier one, rotated by its mean bpm over the ticks in between (the
//! hearts it summed kept beating); an instance with no partial for three
//! ticks is dead for the room and dropped.

use shared::{Consensus, PhaseSum};
use std::collections::BTreeMap;
use std::f64::consts::TAU;

/// After this many ticks without a partial an instance is dead for a room.
pub const SILENT_TICKS: u64 = 3;

/// How many of an instance's partials are kept, newest first: enough for
/// one that arrives a tick early and the one a late tick falls back on.
const KEPT_PER_INSTANCE: usize = 4;

/// One instance's share of a room at one tick: sums over its voters, each
/// projected to the tick's time, and its own counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// The instance that computed it.
    pub instance: String,
    /// The tick it is for: tick k is at `k × tick` ms since the epoch.
    pub tick: u64,
    /// Σ cos 2πφ over the instance's voters.
    pub sum_cos: f64,
    /// Σ sin 2πφ over the instance's voters.
    pub sum_sin: f64,
    /// How many voters were summed.
    pub voters: u32,
    /// Σ bpm over the voters, for the mean bpm.
    pub sum_bpm: f64,
    /// The instance's members in the room.
    pub hearts: u32,
    /// The room's love total as the instance knows it (totals only grow, so
    /// the combine takes the largest).
    pub love: u64,
}

impl Partial {
    /// An instance's partial for `tick` with nothing summed yet.
    pub fn empty(instance: &str, tick: u64, hearts: u32, love: u64) -> Self {
        Partial {
            instance: instance.to_owned(),
            tick,
            sum_cos: 0.0,
            sum_sin: 0.0,
            voters: 0,
            sum_bpm: 0.0,
            hearts,
            love,
        }
    }

    /// Adds one voter at `phase` (already projected to the tick) beating at `bpm`.
    pub fn add_vote(&mut self, phase: f64, bpm: f64) {
        let angle = TAU * phase;
        self.sum_cos += angle.cos();
        self.sum_sin += angle.sin();
        self.sum_bpm += bpm;
        self.voters = self.voters.saturating_add(1);
    }

    /// This partial carried `ticks` ticks of `tick_ms` forward: the summed
    /// vector turns by the voters' mean bpm, the counts stay.
    pub fn rotated(&self, ticks: u64, tick_ms: f64) -> Partial {
        let mut next = self.clone();
        next.tick = self.tick + ticks;
        if self.voters == 0 {
            return next;
        }
        let mean_bpm = self.sum_bpm / f64::from(self.voters);
        let angle = TAU * mean_bpm / 60.0 * (ticks as f64 * tick_ms) / 1000.0;
        let (sin, cos) = angle.sin_cos();
        next.sum_cos = self.sum_cos * cos - self.sum_sin * sin;
        next.sum_sin = self.sum_cos * sin + self.sum_sin * cos;
        next
    }
}

/// The room's consensus at one tick, summed over the live instances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Combined {
    /// The tick.
    pub tick: u64,
    /// Σ cos over every live instance.
    pub sum_cos: f64,
    /// Σ sin over every live instance.
    pub sum_sin: f64,
    /// Voters over every live instance.
    pub voters: u32,
    /// Σ bpm over every live instance.
    pub sum_bpm: f64,
    /// Hearts over every live instance: the room's presence.
    pub hearts: u32,
    /// The largest love total any live instance knows.
    pub love: u64,
    /// Live instances whose partial for this tick had not arrived, and were
    /// carried forward from an earlier one.
    pub late: u32,
    /// Live instances in the room, this one included.
    pub instances: u32,
}

impl Combined {
    /// The consensus this sum stands for, at `at_ms` with sequence `seq`.
    /// With no voters anywhere the beat runs on from `last`.
    pub fn consensus(&self, seq: u64, at_ms: f64, last: &Consensus) -> Consensus {
        // The sums fold exactly as one room's votes do (`PhaseSum::order`).
        let sum = PhaseSum::from_parts(self.sum_cos, self.sum_sin, self.voters as usize);
        let (phase, coherence, bpm) = match sum.order() {
            Some(order) => (order.phase, order.coherence, self.sum_bpm / f64::from(self.voters)),
            None => (shared::project(last.phase, last.bpm, last.at, at_ms), 0.0, last.bpm),
        };
        Consensus {
            seq,
            at: at_ms,
            phase,
            bpm,
            coherence,
            hearts: self.hearts,
            voters: self.voters,
            love: self.love.max(last.love),
        }
    }
}

/// One room's partials from every instance, combined tick by tick.
#[derive(Debug)]
pub struct Combiner {
    /// Milliseconds per tick, to rotate a late partial.
    tick_ms: f64,
    /// Each instance's newest partials by tick. A `BTreeMap` so the combine
    /// walks instances in one order on every instance: floating-point
    /// addition is not associative, and bit-identical results need the same
    /// order.
    partials: BTreeMap<String, BTreeMap<u64, Partial>>,
}

impl Combiner {
    /// An empty combiner for ticks of `tick_ms` milliseconds.
    pub fn new(tick_ms: f64) -> Self {
        Self { tick_ms, partials: BTreeMap::new() }
    }

    /// Takes a partial in, from Redis or from this instance itself. A
    /// partial for a tick already combined past is still kept as a fallback.
    pub fn receive(&mut self, partial: Partial) {
        let kept = self.partials.entry(partial.instance.clone()).or_default();
        kept.insert(partial.tick, partial);
        while kept.len() > KEPT_PER_INSTANCE {
            kept.pop_first();
        }
    }

    /// The tick of `instance`'s newest partial, if it has one.
    pub fn newest_tick(&self, instance: &str) -> Option<u64> {
        self.partials.get(instance).and_then(|kept| kept.keys().next_back().copied())
    }

    /// How many instances have sent partials and are not yet found dead.
    pub fn instances(&self) -> usize {
        self.partials.len()
    }

    /// The room at tick `k`: each instance's partial for `k`, or its newest
    /// earlier one rotated forward; instances silent for [`SILENT_TICKS`]
    /// ticks are dropped. Partials for later ticks wait for theirs.
    pub fn combine(&mut self, k: u64) -> Combined {
        let mut total = Combined {
            tick: k,
            sum_cos: 0.0,
            sum_sin: 0.0,
            voters: 0,
            sum_bpm: 0.0,
            hearts: 0,
            love: 0,
            late: 0,
            instances: 0,
        };
        let tick_ms = self.tick_ms;
        self.partials.retain(|_, kept| {
            let Some((&at, newest)) = kept.range(..=k).next_back() else {
                // Only partials for later ticks: an instance whose clock runs
                // ahead, counted from its first tick on.
                return true;
            };
            if k - at >= SILENT_TICKS {
                return false;
            }
            let used = if at == k {
                newest.clone()
            } else {
                total.late += 1;
                newest.rotated(k - at, tick_ms)
            };
            total.sum_cos += used.sum_cos;
            total.sum_sin += used.sum_sin;
            total.sum_bpm += used.sum_bpm;
            total.voters = total.voters.saturating_add(used.voters);
            total.hearts = total.hearts.saturating_add(used.hearts);
            total.love = total.love.max(used.love);
            total.instances += 1;
            // Older partials are no longer needed: the one used stays as the
            // fallback for the next tick.
            kept.retain(|&tick, _| tick >= at);
            true
        });
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shared::{OrderParameter, project};

    fn partial(instance: &str, tick: u64, votes: &[(f64, f64)], hearts: u32) -> Partial {
        let mut p = Partial::empty(instance, tick, hearts, 0);
        for &(phase, bpm) in votes {
            p.add_vote(phase, bpm);
        }
        p
    }

    fn last() -> Consensus {
        Consensus { bpm: 60.0, ..Consensus::default() }
    }

    #[test]
    fn one_instance_matches_the_single_server_mean() {
        let votes = [(0.1, 60.0), (0.2, 80.0), (0.95, 70.0)];
        let mut combiner = Combiner::new(250.0);
        combiner.receive(partial("a", 7, &votes, 4));
        let c = combiner.combine(7).consensus(7, 1750.0, &last());
        let expected = OrderParameter::of(votes.iter().map(|v| v.0)).expect("votes");
        assert!((c.phase - expected.phase).abs() < 1e-12);
        assert!((c.coherence - expected.coherence).abs() < 1e-12);
        assert!((c.bpm - 70.0).abs() < 1e-12);
        assert_eq!((c.hearts, c.voters, c.seq), (4, 3, 7));
    }

    #[test]
    fn presence_is_the_sum_of_live_instances() {
        let mut combiner = Combiner::new(250.0);
        combiner.receive(partial("a", 1, &[(0.1, 60.0)], 3));
        combiner.receive(partial("b", 1, &[], 2));
        combiner.receive(partial("c", 1, &[(0.3, 90.0), (0.4, 90.0)], 5));
        let combined = combiner.combine(1);
        assert_eq!((combined.hearts, combined.voters, combined.instances), (10, 3, 3));
        assert_eq!(combined.late, 0);
    }

    #[test]
    fn a_late_partial_is_rotated_by_its_mean_bpm() {
        // 60 bpm and ticks of 250 ms: a quarter beat per tick.
        let mut combiner = Combiner::new(250.0);
        combiner.receive(partial("a", 4, &[(0.0, 60.0)], 1));
        let combined = combiner.combine(5);
        assert_eq!(combined.late, 1);
        let c = combined.consensus(5, 1250.0, &last());
        assert!((c.phase - 0.25).abs() < 1e-12, "{}", c.phase);
        assert_eq!(c.hearts, 1);
    }

    #[test]
    fn an_instance_silent_for_three_ticks_is_dead() {
        let mut combiner = Combiner::new(250.0);
        combiner.receive(partial("a", 10, &[(0.0, 60.0)], 1));
        combiner.receive(partial("b", 10, &[(0.5, 60.0)], 2));
        for k in 11..=12 {
            combiner.receive(partial("a", k, &[(0.0, 60.0)], 1));
            let combined = combiner.combine(k);
            assert_eq!((combined.hearts, combined.late), (3, 1), "tick {k}");
        }
        combiner.receive(partial("a", 13, &[(0.0, 60.0)], 1));
        let combined = combiner.combine(13);
        assert_eq!((combined.hearts, combined.instances, combined.late), (1, 1, 0));
        assert_eq!(combiner.instances(), 1);
    }

    #[test]
    fn an_early_partial_waits_for_its_tick() {
        let mut combiner = Combiner::new(250.0);
        combiner.receive(partial("a", 3, &[(0.1, 60.0)], 1));
        combiner.receive(partial("b", 3, &[(0.2, 60.0)], 1));
        // b's next partial arrives before tick 3 is combined here.
        combiner.receive(partial("b", 4, &[(0.9, 60.0)], 7));
        let combined = combiner.combine(3);
        assert_eq!((combined.hearts, combined.late), (2, 0));
        combiner.receive(partial("a", 4, &[(0.1, 60.0)], 1));
        assert_eq!(combiner.combine(4).hearts, 8);
    }

    #[test]
    fn love_is_the_largest_total_known() {
        let mut combiner = Combiner::new(250.0);
        combiner.receive(Partial::empty("a", 1, 1, 40));
        combiner.receive(Partial::empty("b", 1, 1, 42));
        let c = combiner.combine(1).consensus(1, 250.0, &Consensus { love: 41, ..last() });
        assert_eq!(c.love, 42);
    }

    #[test]
    fn with_no_voters_the_beat_runs_on_from_the_last_consensus() {
        let mut combiner = Combiner::new(250.0);
        combiner.receive(partial("a", 2, &[], 3));
        let before = Consensus { at: 0.0, phase: 0.5, bpm: 60.0, ..Consensus::default() };
        let c = combiner.combine(2).consensus(2, 500.0, &before);
        assert!((c.phase - project(0.5, 60.0, 0.0, 500.0)).abs() < 1e-12);
        assert_eq!((c.coherence, c.bpm, c.hearts), (0.0, 60.0, 3));
    }

    fn arb_partial(instance: String) -> impl Strategy<Value = Partial> {
        (prop::collection::vec((0.0..1.0f64, 30.0..200.0f64), 0..20), 0..50u32).prop_map(
            move |(votes, extra)| {
                partial(&instance, 9, &votes, u32::try_from(votes.len()).unwrap_or(0) + extra)
            },
        )
    }

    proptest! {
        #[test]
        fn the_combine_is_bit_identical_whatever_the_arrival_order(
            partials in (2..6usize).prop_flat_map(|n| {
                (0..n).map(|i| arb_partial(format!("instance-{i}"))).collect::<Vec<_>>()
            }),
            order in prop::collection::vec(any::<prop::sample::Index>(), 6),
            late in prop::collection::vec(any::<bool>(), 6),
        ) {
            // Every instance combines the same partials, received in a
            // different order, some of them a tick late (rotated).
            let mut results = Vec::new();
            for (shift, swap) in order.iter().enumerate().take(partials.len()) {
                let mut arrived = partials.clone();
                arrived.rotate_left(shift);
                let swap = swap.index(arrived.len());
                arrived.swap(0, swap);
                let mut combiner = Combiner::new(250.0);
                for mut p in arrived {
                    let index: usize = p.instance.trim_start_matches("instance-").parse().unwrap_or(0);
                    if late[index % late.len()] {
                        p.tick = 8;
                    }
                    combiner.receive(p);
                }
                let c = combiner.combine(9).consensus(9, 2250.0, &last());
                results.push((c.phase.to_bits(), c.coherence.to_bits(), c.bpm.to_bits(), c.hearts, c.voters));
            }
            prop_assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        }

        #[test]
        fn combining_partials_matches_one_mean_over_every_voter(
            groups in prop::collection::vec(prop::collection::vec((0.0..1.0f64, 60.0..120.0f64), 1..10), 1..5),
        ) {
            let mut combiner = Combiner::new(250.0);
            for (i, votes) in groups.iter().enumerate() {
                combiner.receive(partial(&format!("i{i}"), 1, votes, 0));
            }
            let c = combiner.combine(1).consensus(1, 250.0, &last());
            let all = OrderParameter::of(groups.iter().flatten().map(|v| v.0)).expect("votes");
            prop_assert!((c.coherence - all.coherence).abs() < 1e-9);
            if all.coherence > 1e-6 {
                prop_assert!(shared::phase::difference(c.phase, all.phase).abs() < 1e-9);
            }
        }

        #[test]
        fn rotating_keeps_the_vector_length(
            votes in prop::collection::vec((0.0..1.0f64, 30.0..200.0f64), 1..20),
            ticks in 1..3u64,
        ) {
            let p = partial("a", 1, &votes, 0);
            let r = p.rotated(ticks, 250.0);
            prop_assert!((p.sum_cos.hypot(p.sum_sin) - r.sum_cos.hypot(r.sum_sin)).abs() < 1e-9);
            prop_assert_eq!(r.tick, 1 + ticks);
        }
    }
}
