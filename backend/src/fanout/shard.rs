//! A room's sockets in shards, and each shard's writer task.
//!
//! A room has as many shards as the runtime has worker threads, so the
//! writers of one big room run on every core at once. A connection is put
//! in a shard by its id (spreading a room evenly) when its handler has
//! written the welcome and its first consensus, and taken out when its
//! [`Registration`] drops.

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

/// A room's shards; cloning shares them.
#[derive(Debug, Clone)]
pub struct Fanout {
    shards: Arc<[Arc<Shard>]>,
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
    /// A room's fan-out: one shard per worker thread of the current
    /// runtime, each with a writer that delivers every consensus published
    /// on `consensus` and ends when the room does.
    pub fn spawn(consensus: &watch::Receiver<ConsensusFrame>, tracker: &TaskTracker) -> Self {
        let workers = tokio::runtime::Handle::current().metrics().num_workers().max(1);
        let shards: Arc<[Arc<Shard>]> = (0..workers).map(|_| Arc::new(Shard::default())).collect();
        for shard in shards.iter() {
            let shard = shard.clone();
            let mut consensus = consensus.clone();
            consensus.mark_unchanged();
            tracker.spawn(async move {
                while consensus.changed().await.is_ok() {
                    let frame = consensus.borrow_and_update().clone();
                    shard.deliver(&frame);
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
