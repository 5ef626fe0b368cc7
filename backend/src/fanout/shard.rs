//! A room's sockets in shards, and the writer tasks that walk them.
//!
//! A room has one writer per worker thread of the runtime, so the fan-out of
//! one big room runs on every core at once, and [`SHARDS_PER_WRITER`] times
//! as many shards. Each tick the writers *claim* the shards one at a time
//! ([`Walk`]) until none is left: a writer that starts late (its core was
//! busy) or is preempted halfway simply claims fewer, and the others walk
//! the rest, so the tick's last socket is written when the cores together
//! are done, within one shard's walk, instead of when the slowest of fixed
//! halves is. A connection is put in a shard by its id (spreading a room
//! evenly) when its handler has written the welcome and its first
//! consensus, and taken out when its [`Registration`] drops.

use super::outbox::{Offer, Outbox};
use crate::metrics::metrics;
use crate::room::{ConnId, ConsensusFrame};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// How many deliveries share one broadcast-lag sample: recording one per
/// socket would cost as much as the write.
const LAG_SAMPLE_EVERY: usize = 64;

/// Shards per writer: enough that the writers' shares even out within a
/// tick (at 10,000 sockets on two cores a shard is 625 sockets, about 5 ms
/// of writes), few enough that a small room's walk stays a handful of
/// uncontended locks.
pub const SHARDS_PER_WRITER: usize = 8;

/// A room's shards and the claims on them; cloning shares them.
#[derive(Debug, Clone)]
pub struct Fanout {
    shards: Arc<[Arc<Shard>]>,
}

/// Which shards the writers have claimed for the tick being written.
#[derive(Debug, Default)]
pub struct Walk {
    /// The seq being written (`None` before the first), and the next shard
    /// to claim for it.
    state: Mutex<(Option<u64>, usize)>,
}

impl Walk {
    /// Claims the next unwalked shard of `shards` for consensus `seq`: the
    /// first claim of a newer seq starts the walk over; a writer still on
    /// an older seq gets nothing more (the newer consensus, which every
    /// socket is about to be offered, replaces it, as for a slow socket).
    pub fn claim(&self, seq: u64, shards: usize) -> Option<usize> {
        // A poisoned lock still holds two plain numbers.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (current, next) = &mut *state;
        match *current {
            Some(current) if seq < current => return None,
            Some(current) if seq == current => {}
            _ => (*current, *next) = (Some(seq), 0),
        }
        let claimed = (*next < shards).then_some(*next)?;
        *next += 1;
        Some(claimed)
    }
}

/// Some of a room's sockets, walked by one writer.
#[derive(Debug, Default)]
pub struct Shard {
    /// The sockets, by connection. Locked for a whole walk (no `.await`
    /// inside), and briefly by a join or a leave.
    sockets: Mutex<HashMap<ConnId, Arc<Outbox>>>,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, HashMap<ConnId, Arc<Outbox>>> {
        // Each critical section is one insert, one remove or a walk that
        // does not change the map: a poisoned lock is still consistent.
        self.sockets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Offers consensus `frame` to every socket of the shard.
    fn deliver(&self, frame: &ConsensusFrame) {
        let m = metrics();
        let seq = frame.consensus.seq;
        let mut sent = 0_u64;
        let mut since_sample = 0_usize;
        for outbox in self.lock().values() {
            match outbox.offer(seq, &frame.wire) {
                Offer::Written | Offer::Kept => sent += 1,
                Offer::Replaced | Offer::Skipped => {}
            }
            since_sample += 1;
            if since_sample == LAG_SAMPLE_EVERY {
                m.broadcast_lag.record_many(frame.ticked.elapsed().as_secs_f64(), since_sample);
                since_sample = 0;
            }
        }
        if since_sample > 0 {
            m.broadcast_lag.record_many(frame.ticked.elapsed().as_secs_f64(), since_sample);
        }
        m.sent_consensus.increment(sent);
    }
}

/// A connection's place in a shard; dropping it takes the socket out.
#[derive(Debug)]
pub struct Registration {
    shard: Arc<Shard>,
    conn: ConnId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shard.lock().remove(&self.conn);
    }
}

impl Fanout {
    /// A room's fan-out: one writer per worker thread of the current
    /// runtime and [`SHARDS_PER_WRITER`] shards per writer. The writers
    /// deliver every consensus published on `consensus`, claiming shards
    /// until none is left, and end when the room does.
    pub fn spawn(consensus: &watch::Receiver<ConsensusFrame>, tracker: &TaskTracker) -> Self {
        let workers = tokio::runtime::Handle::current().metrics().num_workers().max(1);
        let shards: Arc<[Arc<Shard>]> =
            (0..workers * SHARDS_PER_WRITER).map(|_| Arc::new(Shard::default())).collect();
        let walk = Arc::new(Walk::default());
        for _ in 0..workers {
            let (shards, walk) = (shards.clone(), walk.clone());
            let mut consensus = consensus.clone();
            consensus.mark_unchanged();
            tracker.spawn(async move {
                while consensus.changed().await.is_ok() {
                    let frame = consensus.borrow_and_update().clone();
                    let seq = frame.consensus.seq;
                    while let Some(index) = walk.claim(seq, shards.len()) {
                        shards[index].deliver(&frame);
                    }
                }
            });
        }
        Self { shards }
    }

    /// How many shards the room's sockets are split over.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Puts connection `conn`'s socket in its shard: from now on every
    /// consensus the room publishes is offered to it.
    pub fn register(&self, conn: ConnId, outbox: Arc<Outbox>) -> Registration {
        let index = usize::try_from(conn % self.shards.len() as u64).unwrap_or(0);
        let shard = self.shards[index].clone();
        shard.lock().insert(conn, outbox);
        Registration { shard, conn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_claim_every_shard_of_a_tick_once_between_them() {
        let walk = Walk::default();
        // Two writers interleaving their claims for seq 7.
        let mut claimed = Vec::new();
        while let Some(a) = walk.claim(7, 5) {
            claimed.push(a);
            claimed.extend(walk.claim(7, 5));
        }
        assert_eq!(claimed, [0, 1, 2, 3, 4]);
        assert_eq!(walk.claim(7, 5), None, "a tick's walk ends once");
    }

    #[test]
    fn a_newer_tick_starts_over_and_a_writer_left_on_an_older_one_stops() {
        let walk = Walk::default();
        assert_eq!(walk.claim(1, 3), Some(0));
        // A writer reaches tick 2 while another is still walking tick 1.
        assert_eq!(walk.claim(2, 3), Some(0));
        assert_eq!(walk.claim(1, 3), None, "tick 2 replaces what is left of tick 1");
        assert_eq!(walk.claim(2, 3), Some(1));
        assert_eq!(walk.claim(2, 3), Some(2));
        assert_eq!(walk.claim(2, 3), None);
    }
}
