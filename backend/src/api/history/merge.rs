//! What one instance saw of a room during one bucket ([`Entry`]), and how
//! the entries of every instance become the buckets the endpoint answers
//! ([`merge`]).
//!
//! With Redis, each instance that had the room open during a bucket writes
//! its own entry, and every instance merges all of them when asked, so all
//! answer the same. Rooms in a cluster broadcast the same consensus for a
//! given `seq` on every instance, so the entries describe samples of one
//! sequence, each instance having seen a part of it:
//! - the lowest and highest coherence and the most hearts are the min of the
//!   mins and the max of the maxes: exact;
//! - love added is the rise of the cluster-wide total (the largest one any
//!   entry saw at its end) from the end of the bucket before: exact as long
//!   as some instance sampled the bucket's last tick;
//! - the mean is tick-weighted over the ticks the entries sampled, each tick
//!   counted once: entries are taken largest first, and an entry whose seqs
//!   overlap ones already taken adds only its share for the seqs not yet
//!   covered (its mean times its ticks times the part of its seq range that
//!   is new). Exact when the entries' seq ranges are disjoint or nested (the
//!   usual cases: an instance whose members came or went mid-bucket); an
//!   approximation, within the entries' min and max, when ranges overlap
//!   partly, since an entry keeps sums, not each tick.

use super::{BUCKET_MS, Bucket};
use serde::{Deserialize, Serialize};
use shared::Consensus;
use std::collections::BTreeMap;

/// One instance's summary of one room's bucket: what it keeps in memory and
/// writes to Redis once the bucket has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The bucket: it starts at `index × 10 s` on the server clock.
    pub index: i64,
    /// The instance that sampled it, so instances' entries for one bucket
    /// stay apart (empty without Redis).
    pub instance: String,
    /// The first and last seq sampled: which ticks the entry covers, so
    /// merging counts a tick seen by two instances once.
    pub first_seq: u64,
    pub last_seq: u64,
    /// How many ticks were sampled (the sampler may miss one under load, so
    /// at most the seq range).
    pub ticks: u32,
    /// The sum of their coherence, for the mean.
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The most hearts seen.
    pub hearts: u32,
    /// The love total just before the bucket's first sample, when this
    /// instance sampled the bucket before too; else the first sample's.
    pub love_base: u64,
    /// The love total at the last sample.
    pub love_last: u64,
}

impl Entry {
    /// An entry opened by consensus `c`, the room's love having been
    /// `love_base` just before.
    pub fn open(index: i64, instance: &str, c: &Consensus, love_base: u64) -> Self {
        Self {
            index,
            instance: instance.to_owned(),
            first_seq: c.seq,
            last_seq: c.seq,
            ticks: 1,
            sum: c.coherence,
            min: c.coherence,
            max: c.coherence,
            hearts: c.hearts,
            love_base: love_base.min(c.love),
            love_last: c.love,
        }
    }

    /// Folds one more sample in.
    pub fn fold(&mut self, c: &Consensus) {
        self.first_seq = self.first_seq.min(c.seq);
        self.last_seq = self.last_seq.max(c.seq);
        self.ticks = self.ticks.saturating_add(1);
        self.sum += c.coherence;
        self.min = self.min.min(c.coherence);
        self.max = self.max.max(c.coherence);
        self.hearts = self.hearts.max(c.hearts);
        self.love_last = self.love_last.max(c.love);
    }

    /// Whether the entry could describe a bucket (a malformed one read from
    /// Redis is left out rather than trusted).
    pub fn is_sound(&self) -> bool {
        self.ticks > 0
            && self.first_seq <= self.last_seq
            && (0.0..=1.0).contains(&self.min)
            && (0.0..=1.0).contains(&self.max)
            && self.min <= self.max
            && self.sum.is_finite()
            && self.sum >= 0.0
            && self.sum <= f64::from(self.ticks)
    }
}

/// The buckets starting at or after bucket `since_index`, oldest first,
/// from every instance's `entries` (in any order). An entry of the bucket
/// just before `since_index` is only used for the love added in the first.
pub fn merge(entries: &[Entry], since_index: i64) -> Vec<Bucket> {
    let mut by_bucket: BTreeMap<i64, Vec<&Entry>> = BTreeMap::new();
    for entry in entries.iter().filter(|e| e.is_sound()) {
        by_bucket.entry(entry.index).or_default().push(entry);
    }
    let mut love_before: Option<u64> = None;
    let mut buckets = Vec::new();
    for (index, group) in by_bucket {
        let love_last = group.iter().map(|e| e.love_last).max().unwrap_or(0);
        // The end of the bucket before; a bucket nobody sampled is one in
        // which the room was closed everywhere, when no love can be added.
        let base = love_before
            .unwrap_or_else(|| group.iter().map(|e| e.love_base).min().unwrap_or(love_last));
        love_before = Some(love_before.unwrap_or(0).max(love_last));
        if index < since_index {
            continue;
        }
        buckets.push(Bucket {
            start: index as f64 * BUCKET_MS,
            coherence_min: group.iter().map(|e| e.min).fold(f64::INFINITY, f64::min),
            coherence_mean: mean(&group),
            coherence_max: group.iter().map(|e| e.max).fold(f64::NEG_INFINITY, f64::max),
            hearts: group.iter().map(|e| e.hearts).max().unwrap_or(0),
            love_added: love_last.saturating_sub(base),
        });
    }
    buckets
}

/// The tick-weighted mean coherence of one bucket's entries, each seq
/// counted once (see the module docs).
fn mean(group: &[&Entry]) -> f64 {
    let mut order = group.to_vec();
    // The same order on every instance, so every instance computes the
    // same float.
    order.sort_by(|a, b| {
        b.ticks
            .cmp(&a.ticks)
            .then_with(|| a.instance.cmp(&b.instance))
            .then_with(|| a.first_seq.cmp(&b.first_seq))
            .then_with(|| a.last_seq.cmp(&b.last_seq))
    });
    let mut covered: Vec<(u64, u64)> = Vec::new();
    let (mut sum, mut weight) = (0.0, 0.0);
    for entry in order {
        let span = entry.last_seq - entry.first_seq + 1;
        let seen = overlap(&covered, entry.first_seq, entry.last_seq);
        let fresh = (span - seen) as f64 / span as f64;
        sum += entry.sum * fresh;
        weight += f64::from(entry.ticks) * fresh;
        covered.push((entry.first_seq, entry.last_seq));
    }
    if weight > 0.0 { (sum / weight).clamp(0.0, 1.0) } else { 0.0 }
}

/// How many seqs of `first..=last` lie in the union of `covered`.
fn overlap(covered: &[(u64, u64)], first: u64, last: u64) -> u64 {
    let mut parts: Vec<(u64, u64)> =
        covered.iter().map(|&(a, b)| (a.max(first), b.min(last))).filter(|(a, b)| a <= b).collect();
    parts.sort_unstable();
    let mut total = 0;
    let mut reached: Option<u64> = None;
    for (a, b) in parts {
        let from = match reached {
            Some(r) if r >= b => continue,
            Some(r) if r >= a => r + 1,
            _ => a,
        };
        total += b - from + 1;
        reached = Some(b);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An entry of bucket `index` from `instance`: seqs `first..=last`,
    /// every one sampled with the same coherence.
    fn entry(index: i64, instance: &str, seqs: (u64, u64), coherence: f64) -> Entry {
        let ticks = (seqs.1 - seqs.0 + 1) as u32;
        Entry {
            index,
            instance: instance.to_owned(),
            first_seq: seqs.0,
            last_seq: seqs.1,
            ticks,
            sum: coherence * f64::from(ticks),
            min: coherence,
            max: coherence,
            hearts: 1,
            love_base: 0,
            love_last: 0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn overlap_counts_each_seq_once() {
        assert_eq!(overlap(&[], 1, 10), 0);
        assert_eq!(overlap(&[(1, 10)], 3, 5), 3);
        assert_eq!(overlap(&[(1, 4), (3, 8)], 1, 10), 8);
        assert_eq!(overlap(&[(20, 30)], 1, 10), 0);
        assert_eq!(overlap(&[(5, 5), (1, 10)], 1, 10), 10);
        assert_eq!(overlap(&[(1, 3), (7, 9)], 2, 8), 4);
    }

    #[test]
    fn one_entry_is_its_own_bucket() {
        let mut e = entry(7, "a", (1, 4), 0.5);
        e.min = 0.2;
        e.max = 0.9;
        e.hearts = 3;
        e.love_base = 10;
        e.love_last = 14;
        let b = merge(&[e], 0);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].start, b[0].coherence_min, b[0].coherence_max), (70_000.0, 0.2, 0.9));
        assert!(close(b[0].coherence_mean, 0.5));
        assert_eq!((b[0].hearts, b[0].love_added), (3, 4));
    }

    #[test]
    fn instances_covering_different_ticks_are_weighted_by_ticks() {
        // a saw seqs 1-30 at 0.2, b saw 31-40 at 0.6: one bucket of 40 ticks.
        let b = merge(&[entry(1, "a", (1, 30), 0.2), entry(1, "b", (31, 40), 0.6)], 0);
        assert!(close(b[0].coherence_mean, 0.3), "{b:?}");
        assert_eq!((b[0].coherence_min, b[0].coherence_max), (0.2, 0.6));
    }

    #[test]
    fn ticks_seen_by_two_instances_are_counted_once() {
        // Every instance sees the same consensus per seq: a covers the
        // whole bucket, b the last ten ticks of it.
        let mut a = entry(1, "a", (1, 40), 0.0);
        a.sum = 30.0 * 0.2 + 10.0 * 0.6;
        a.min = 0.2;
        a.max = 0.6;
        let b = entry(1, "b", (31, 40), 0.6);
        let merged = merge(&[b.clone(), a.clone()], 0);
        assert!(close(merged[0].coherence_mean, 0.3), "{merged:?}");
        assert_eq!(merge(&[a, b], 0), merged, "the order read does not matter");
    }

    #[test]
    fn partly_overlapping_entries_add_their_new_share() {
        // a: seqs 1-20 at 0.2; b: seqs 11-40 at 0.5 (11-20 seen by both,
        // which an entry cannot tell apart, so b's mean stands for its new
        // seqs 21-40).
        let a = entry(1, "a", (1, 20), 0.2);
        let b = entry(1, "b", (11, 40), 0.5);
        let merged = merge(&[a, b], 0);
        // b is larger and goes first (30 ticks); a adds 10 new of 20.
        let expected = (30.0 * 0.5 + 10.0 * 0.2) / 40.0;
        assert!(close(merged[0].coherence_mean, expected), "{merged:?}");
    }

    #[test]
    fn love_added_is_the_rise_of_the_largest_total_from_the_bucket_before() {
        let mut a1 = entry(1, "a", (1, 40), 0.5);
        (a1.love_base, a1.love_last) = (100, 110);
        // Bucket 2: a left after 10 ticks (its last total 112), b stayed
        // the whole bucket and saw 120 at its end.
        let mut a2 = entry(2, "a", (41, 50), 0.5);
        (a2.love_base, a2.love_last) = (110, 112);
        let mut b2 = entry(2, "b", (41, 80), 0.5);
        (b2.love_base, b2.love_last) = (105, 120);
        // Bucket 4: nobody had the room in bucket 3; b opened it again.
        let mut b4 = entry(4, "b", (121, 160), 0.5);
        (b4.love_base, b4.love_last) = (120, 125);
        let all = [a1, a2, b2, b4];
        let love: Vec<u64> = merge(&all, 0).iter().map(|b| b.love_added).collect();
        assert_eq!(love, [10, 10, 5]);
        let love: Vec<u64> = merge(&all, 2).iter().map(|b| b.love_added).collect();
        assert_eq!(love, [10, 5], "the bucket before the first shown still counts");
    }

    #[test]
    fn the_first_bucket_counts_love_from_the_lowest_base() {
        // b joined mid-bucket (its base is its first sample); a saw the
        // bucket from its start.
        let mut a = entry(1, "a", (1, 40), 0.5);
        (a.love_base, a.love_last) = (50, 58);
        let mut b = entry(1, "b", (20, 40), 0.5);
        (b.love_base, b.love_last) = (54, 58);
        assert_eq!(merge(&[a, b], 0)[0].love_added, 8);
    }

    #[test]
    fn unsound_entries_are_left_out() {
        let good = entry(1, "a", (1, 4), 0.5);
        let mut nan = entry(1, "b", (1, 4), 0.5);
        nan.sum = f64::NAN;
        let mut backwards = entry(1, "c", (4, 9), 0.5);
        (backwards.first_seq, backwards.last_seq) = (9, 4);
        let mut too_high = entry(1, "d", (1, 4), 0.5);
        too_high.max = 7.0;
        let mut empty = entry(2, "e", (1, 4), 0.5);
        empty.ticks = 0;
        let merged = merge(&[good.clone(), nan, backwards, too_high, empty], 0);
        assert_eq!(merged, merge(&[good], 0));
    }

    /// The entry an instance makes from sampling `samples` (seq, coherence).
    fn sampled(instance: &str, samples: &[(u64, f64)]) -> Entry {
        let c = |&(seq, coherence): &(u64, f64)| Consensus {
            seq,
            coherence,
            hearts: 1,
            ..Consensus::default()
        };
        let mut entry = Entry::open(0, instance, &c(&samples[0]), 0);
        for sample in &samples[1..] {
            entry.fold(&c(sample));
        }
        entry
    }

    proptest! {
        #[test]
        fn instances_sharing_a_bucket_disjointly_or_nested_merge_to_the_whole(
            coherence in proptest::collection::vec(0.0..=1.0f64, 1..80),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..4),
            sub in (any::<proptest::sample::Index>(), any::<proptest::sample::Index>()),
        ) {
            let samples: Vec<(u64, f64)> =
                coherence.iter().enumerate().map(|(i, &c)| (i as u64 + 1, c)).collect();
            let whole = merge(&[sampled("whole", &samples)], 0);
            let same = |merged: Vec<Bucket>| -> Result<(), TestCaseError> {
                prop_assert_eq!(merged.len(), 1);
                prop_assert_eq!(merged[0].coherence_min, whole[0].coherence_min);
                prop_assert_eq!(merged[0].coherence_max, whole[0].coherence_max);
                prop_assert!(close(merged[0].coherence_mean, whole[0].coherence_mean));
                Ok(())
            };
            // Split among instances: each covers its own ticks.
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(samples.len())).collect();
            points.extend([0, samples.len()]);
            points.sort_unstable();
            points.dedup();
            let parts: Vec<Entry> = points
                .windows(2)
                .enumerate()
                .map(|(k, w)| sampled(&format!("i{k}"), &samples[w[0]..w[1]]))
                .collect();
            same(merge(&parts, 0))?;
            // One instance saw it all, another a part of it.
            let (a, b) = (sub.0.index(samples.len()), sub.1.index(samples.len()));
            let part = sampled("part", &samples[a.min(b)..=a.max(b)]);
            same(merge(&[part, sampled("whole", &samples)], 0))?;
        }
    }

    #[test]
    fn buckets_come_oldest_first_from_the_since_bucket() {
        let all =
            [entry(5, "a", (1, 1), 0.1), entry(3, "a", (1, 1), 0.1), entry(4, "b", (1, 1), 0.1)];
        let starts: Vec<f64> = merge(&all, 4).iter().map(|b| b.start).collect();
        assert_eq!(starts, [40_000.0, 50_000.0]);
    }
}
