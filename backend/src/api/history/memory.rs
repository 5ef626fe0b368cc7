//! History kept in this process: what this instance sampled, an hour per
//! room, `--history-rooms` rooms at most. Alone, it is the store; with
//! Redis, it is what the instance answers while Redis is away, and where
//! its entries wait until their bucket has ended.

use super::merge::{Entry, merge};
use super::{BUCKET_MS, Bucket, HistoryStore, MAX_BUCKETS, SPAN_MS, StoreFuture, bucket_index};
use shared::{Consensus, RoomName};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// History kept in this process.
#[derive(Debug)]
pub struct MemoryHistory {
    rooms: Mutex<HashMap<RoomName, RoomHistory>>,
    /// The most rooms kept; past it, the room recorded longest ago goes.
    max_rooms: usize,
    /// This instance's id, written in its entries (empty when alone).
    instance: String,
}

/// One room's recent buckets and what the next sample is measured against.
#[derive(Debug)]
struct RoomHistory {
    /// Oldest first; the last one may still be filling.
    entries: VecDeque<Entry>,
    /// The `at` of the last consensus folded in: a sample no newer is one
    /// already seen.
    last_at: f64,
    /// The love total last seen: the base of the next bucket's love.
    last_love: u64,
    /// The last bucket handed to a shared store by [`MemoryHistory::take_ended`]:
    /// each entry is handed over once, after its bucket has ended.
    handed_through: i64,
}

impl MemoryHistory {
    /// An empty history for at most `max_rooms` rooms, for an instance alone.
    pub fn new(max_rooms: usize) -> Self {
        Self::for_instance(max_rooms, "")
    }

    /// An empty history for at most `max_rooms` rooms, its entries marked
    /// as `instance`'s.
    pub fn for_instance(max_rooms: usize, instance: &str) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            max_rooms: max_rooms.max(1),
            instance: instance.to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomHistory>> {
        // Every critical section leaves the map whole, so a poisoned lock
        // (a panic elsewhere) is still safe to use.
        self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every room's entries whose bucket ended before `now_ms` and that
    /// were not handed over yet, each once.
    pub fn take_ended(&self, now_ms: f64) -> Vec<(RoomName, Entry)> {
        let current = bucket_index(now_ms);
        let mut ended = Vec::new();
        for (room, history) in self.lock().iter_mut() {
            let from = ended.len();
            for entry in history.entries.iter().rev() {
                if entry.index <= history.handed_through {
                    break;
                }
                if entry.index < current {
                    ended.push((room.clone(), entry.clone()));
                }
            }
            if let Some(newest) = ended[from..].iter().map(|(_, e)| e.index).max() {
                history.handed_through = newest;
            }
        }
        ended
    }

    /// Every entry of `room` and the buckets answered from them.
    fn answer(&self, room: &RoomName, since_ms: f64) -> Vec<Bucket> {
        let entries: Vec<Entry> =
            self.lock().get(room).map(|h| h.entries.iter().cloned().collect()).unwrap_or_default();
        merge(&entries, (since_ms / BUCKET_MS).ceil() as i64)
    }
}

impl HistoryStore for MemoryHistory {
    fn record(&self, room: &RoomName, c: &Consensus) {
        let mut rooms = self.lock();
        if !rooms.contains_key(room) && rooms.len() >= self.max_rooms {
            let oldest = rooms
                .iter()
                .min_by(|a, b| a.1.last_at.total_cmp(&b.1.last_at))
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                rooms.remove(&oldest);
            }
        }
        let history = rooms.entry(room.clone()).or_insert_with(|| RoomHistory {
            // Sized for the full hour at once: grown by doubling, a room's
            // buffer would be reallocated at 64, 128 and 256 buckets (the
            // last 43 minutes in) and end at 512 slots, its RSS creeping up
            // for most of the hour and leaving freed blocks behind; with
            // one allocation the room's history costs the same (35 KB, less
            // than the 49 KB doubling ends at) from its first sample on.
            entries: VecDeque::with_capacity(MAX_BUCKETS + 1),
            last_at: f64::NEG_INFINITY,
            last_love: c.love,
            handed_through: i64::MIN,
        });
        if c.at <= history.last_at {
            return;
        }
        history.last_at = c.at;
        let index = bucket_index(c.at);
        match history.entries.back_mut() {
            Some(entry) if entry.index == index => entry.fold(c),
            back => {
                // The love before this sample is known only if this
                // instance sampled the room right up to the bucket.
                let continuous = back.is_some_and(|e| e.index == index - 1);
                let base = if continuous { history.last_love } else { c.love };
                history.entries.push_back(Entry::open(index, &self.instance, c, base));
            }
        }
        history.last_love = history.last_love.max(c.love);
        let oldest_kept = bucket_index(c.at - SPAN_MS);
        while history
            .entries
            .front()
            .is_some_and(|e| e.index < oldest_kept || history.entries.len() > MAX_BUCKETS)
        {
            history.entries.pop_front();
        }
    }

    fn buckets(&self, room: &RoomName, since_ms: f64) -> StoreFuture<'_, Vec<Bucket>> {
        Box::pin(std::future::ready(Ok(self.answer(room, since_ms))))
    }

    fn forget_before(&self, before_ms: f64) {
        self.lock().retain(|_, h| h.last_at >= before_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_700_000_000_000.0;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("a room name")
    }

    fn at(ms: f64, coherence: f64, hearts: u32, love: u64) -> Consensus {
        // Seq rises with time, as a room's ticks do.
        let seq = (ms / 250.0) as u64 + 1;
        Consensus { seq, at: T0 + ms, coherence, hearts, love, ..Consensus::default() }
    }

    async fn buckets(history: &MemoryHistory, name: &str) -> Vec<Bucket> {
        history.buckets(&room(name), 0.0).await.expect("memory answers")
    }

    #[tokio::test]
    async fn a_bucket_holds_min_mean_max_most_hearts_and_love_added() {
        let history = MemoryHistory::new(10);
        let r = room("kitchen");
        history.record(&r, &at(0.0, 0.2, 1, 5));
        history.record(&r, &at(250.0, 0.8, 3, 7));
        history.record(&r, &at(500.0, 0.5, 2, 9));
        history.record(&r, &at(500.0, 0.0, 9, 100)); // already seen: ignored
        let b = buckets(&history, "kitchen").await;
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].start, T0);
        assert_eq!((b[0].coherence_min, b[0].coherence_max), (0.2, 0.8));
        assert!((b[0].coherence_mean - 0.5).abs() < 1e-9);
        assert_eq!((b[0].hearts, b[0].love_added), (3, 4), "love counted from the first total");
    }

    #[tokio::test]
    async fn love_added_carries_across_buckets_and_gaps() {
        let history = MemoryHistory::new(10);
        let r = room("kitchen");
        history.record(&r, &at(9_000.0, 0.5, 1, 10));
        history.record(&r, &at(11_000.0, 0.5, 1, 13)); // 3 added since the last sample
        history.record(&r, &at(45_000.0, 0.5, 1, 20)); // closed between: 7 when it reopened
        let love: Vec<u64> =
            buckets(&history, "kitchen").await.iter().map(|b| b.love_added).collect();
        assert_eq!(love, [0, 3, 7]);
    }

    #[test]
    fn a_rooms_history_is_allocated_once_for_the_hour_and_never_grows() {
        let history = MemoryHistory::new(10);
        let r = room("kitchen");
        let capacity = || history.lock().get(&r).map(|h| h.entries.capacity());
        history.record(&r, &at(0.0, 0.5, 1, 0));
        let first = capacity();
        assert!(first.is_some_and(|c| c > MAX_BUCKETS), "room for the hour and the current bucket");
        for i in 1..800 {
            history.record(&r, &at(f64::from(i) * 10_000.0, 0.5, 1, 0));
            assert_eq!(capacity(), first, "reallocated at bucket {i}");
        }
    }

    #[tokio::test]
    async fn buckets_are_ten_seconds_on_the_clock_and_only_an_hour_is_kept() {
        let history = MemoryHistory::new(10);
        let r = room("kitchen");
        for i in 0..400 {
            history.record(&r, &at(f64::from(i) * 10_000.0 + 9_999.0, 0.5, 1, 0));
        }
        let b = buckets(&history, "kitchen").await;
        assert_eq!(b.len(), 361, "an hour of buckets and the current one");
        assert!(b.windows(2).all(|w| w[1].start - w[0].start == 10_000.0));
        assert_eq!(b.last().map(|b| b.start), Some(T0 + 399.0 * 10_000.0));
    }

    #[tokio::test]
    async fn the_room_recorded_longest_ago_is_forgotten_first() {
        let history = MemoryHistory::new(2);
        history.record(&room("a"), &at(0.0, 0.1, 1, 0));
        history.record(&room("b"), &at(1.0, 0.1, 1, 0));
        history.record(&room("a"), &at(2.0, 0.1, 1, 0));
        history.record(&room("c"), &at(3.0, 0.1, 1, 0));
        assert!(buckets(&history, "b").await.is_empty());
        assert_eq!(buckets(&history, "a").await.len(), 1);
        history.forget_before(T0 + 3.0);
        assert!(buckets(&history, "a").await.is_empty());
        assert_eq!(buckets(&history, "c").await.len(), 1);
    }

    #[test]
    fn each_ended_bucket_is_handed_over_once_and_only_once_ended() {
        let history = MemoryHistory::for_instance(10, "me");
        let (a, b) = (room("a"), room("b"));
        history.record(&a, &at(1_000.0, 0.1, 1, 0));
        history.record(&a, &at(12_000.0, 0.1, 1, 0));
        history.record(&b, &at(2_000.0, 0.1, 1, 0));
        assert!(history.take_ended(T0 + 9_000.0).is_empty(), "bucket 0 is still filling");
        let mut ended = history.take_ended(T0 + 15_000.0);
        ended.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        let got: Vec<(&str, f64, &str)> = ended
            .iter()
            .map(|(r, e)| (r.as_str(), e.index as f64 * BUCKET_MS - T0, e.instance.as_str()))
            .collect();
        assert_eq!(got, [("a", 0.0, "me"), ("b", 0.0, "me")]);
        assert!(history.take_ended(T0 + 15_000.0).is_empty(), "handed over once");
        // b closed: its bucket 1 never came; a's bucket 1 ends at 20 s.
        let ended = history.take_ended(T0 + 20_000.0);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0.as_str(), "a");
        assert!(history.take_ended(f64::INFINITY).is_empty());
    }
}
