//! A room's side of the cluster: ticks aligned to the clock, this
//! instance's partial out, every instance's partials in.
//!
//! Tick k is at `k × tick` ms since the Unix epoch on every instance, and its
//! consensus has `seq = k`, so a client that moves to another instance still
//! sees `seq` rise. Right after tick k the room projects its own voters to
//! tick k + 1's time and publishes that partial; at tick k + 1 every
//! instance combines the partials published for k + 1 by every live
//! instance, its own included, into bit-identical consensus. The room's own
//! reports therefore reach the consensus one tick later than on a single
//! instance: the price of every instance agreeing exactly.
//!
//! Instances are assumed NTP-synchronised. A clock that is off by `d` ms
//! publishes `d` ms early or late: a partial that arrives after its tick on
//! another instance is carried forward from the previous one (rotated by its
//! mean bpm) and counted in `heartsync_cluster_partials_late_total`, so skew
//! well under a tick changes nothing, and skew near a tick costs exactness,
//! not availability.

use super::combine::{Combiner, Partial};
use super::{RoomLink, cluster_metrics};
use crate::room::Report;
use shared::{Consensus, project};
use std::time::Duration;
use tokio::time::Instant;

/// How far behind its schedule a room may fall before it skips ticks to
/// catch up, instead of running every missed tick back to back.
const MAX_BEHIND_TICKS: u64 = 2;

/// What wakes a clustered room.
#[derive(Debug)]
pub enum ClusterEvent {
    /// Another instance's partial.
    Partial(Partial),
    /// Tick k is due.
    Tick(u64),
}

/// One room's link to the other instances and its combine state.
#[derive(Debug)]
pub struct ClusterRoom {
    link: RoomLink,
    combiner: Combiner,
    tick: Duration,
    /// The last tick run; the next is the one after, so no seq is skipped
    /// while the room keeps up.
    last_tick: u64,
}

/// Milliseconds in `tick`.
fn tick_ms(tick: Duration) -> f64 {
    tick.as_secs_f64() * 1000.0
}

/// The tick at or just before `now_ms`.
pub fn tick_at(now_ms: f64, tick: Duration) -> u64 {
    (now_ms / tick_ms(tick)).floor().max(0.0) as u64
}

/// The time of tick `k`, in ms since the epoch.
pub fn tick_time(k: u64, tick: Duration) -> f64 {
    k as f64 * tick_ms(tick)
}

impl ClusterRoom {
    /// A room linked through `link`, ticking every `tick` from now on.
    pub fn new(link: RoomLink, tick: Duration, now_ms: f64) -> Self {
        Self {
            link,
            combiner: Combiner::new(tick_ms(tick)),
            tick,
            last_tick: tick_at(now_ms, tick),
        }
    }

    /// Whether Redis is reachable now.
    pub fn redis_up(&self) -> bool {
        self.link.cluster.redis_up()
    }

    /// The current tick, for the consensus a room opens with.
    pub fn current_tick(&self) -> u64 {
        self.last_tick
    }

    /// Waits for the next partial or the next tick, whichever comes first.
    /// Cancel-safe: a dropped call loses nothing.
    pub async fn next_event(&mut self, now_ms: f64) -> ClusterEvent {
        let next = self.next_tick(now_ms);
        let wait =
            Duration::from_secs_f64(((tick_time(next, self.tick) - now_ms) / 1000.0).max(0.0));
        tokio::select! {
            Some(partial) = self.link.partials.recv() => ClusterEvent::Partial(partial),
            () = tokio::time::sleep(wait) => {
                self.last_tick = next;
                ClusterEvent::Tick(next)
            }
        }
    }

    /// The tick after the last one, or the current one if the room fell
    /// more than [`MAX_BEHIND_TICKS`] behind.
    fn next_tick(&self, now_ms: f64) -> u64 {
        let current = tick_at(now_ms, self.tick);
        let next = self.last_tick + 1;
        if current > next + MAX_BEHIND_TICKS { current } else { next }
    }

    /// Takes in another instance's partial.
    pub fn receive(&mut self, partial: Partial) {
        self.combiner.receive(partial);
    }

    /// Runs tick `k`: combines every live instance's partial into the
    /// consensus all instances broadcast for `seq = k`, then publishes this
    /// instance's partial for tick k + 1. `votes` are the room's members'
    /// last reports, `hearts` its members here, `now` the monotonic time of
    /// the tick. Also returns how many of the votes here were counted.
    pub fn tick<'a>(
        &mut self,
        k: u64,
        votes: impl Iterator<Item = &'a Report> + Clone,
        hearts: usize,
        last: &Consensus,
        now: Instant,
        vote_ttl: Duration,
    ) -> (Consensus, u32) {
        let hearts = u32::try_from(hearts).unwrap_or(u32::MAX);
        let id = self.link.instance().to_owned();
        // Right after the room opened there is no partial of ours for this
        // tick yet: make it now (the others see us from the next tick on).
        let mine = self.combiner.newest_tick(&id);
        if mine.is_none_or(|t| t < k) {
            let partial =
                partial_at(&id, k, self.tick, votes.clone(), hearts, last.love, now, vote_ttl);
            self.combiner.receive(partial);
        }
        let combined = self.combiner.combine(k);
        if combined.late > 0 {
            cluster_metrics().late.increment(u64::from(combined.late));
        }
        let consensus = combined.consensus(k, tick_time(k, self.tick), last);

        let next = partial_at(
            &id,
            k + 1,
            self.tick,
            votes,
            hearts,
            consensus.love,
            now + self.tick,
            vote_ttl,
        );
        let local_voters = next.voters;
        self.link.publish(&next);
        self.combiner.receive(next);
        (consensus, local_voters)
    }
}

/// This instance's partial for tick `k`: every vote still fresh at `fresh_at`
/// (the tick's monotonic time), projected to the tick's time.
#[allow(clippy::too_many_arguments)]
fn partial_at<'a>(
    id: &str,
    k: u64,
    tick: Duration,
    votes: impl Iterator<Item = &'a Report>,
    hearts: u32,
    love: u64,
    fresh_at: Instant,
    vote_ttl: Duration,
) -> Partial {
    let at_ms = tick_time(k, tick);
    let mut partial = Partial::empty(id, k, hearts, love);
    for report in votes {
        if fresh_at.saturating_duration_since(report.received) > vote_ttl {
            continue;
        }
        let r = report.report;
        partial.add_vote(project(r.phase, r.bpm, r.at, at_ms), r.bpm);
    }
    partial
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::cluster::Cluster;
    use crate::love::{LoveStore, memory::MemoryLove};
    use crate::room::{ConsensusFrame, Control, RoomTiming, spawn};
    use shared::RoomName;
    use tokio::sync::{oneshot, watch};

    const TICK: Duration = Duration::from_millis(250);

    async fn next(consensus: &mut watch::Receiver<ConsensusFrame>) -> Consensus {
        consensus.changed().await.expect("the room runs");
        consensus.borrow_and_update().consensus
    }

    #[tokio::test(start_paused = true)]
    async fn a_clustered_room_ticks_on_the_epoch_and_counts_every_live_instance() {
        // 10 ms past a tick boundary.
        let clock = Clock::following_tokio(1_700_000_000_010.0);
        let cluster = Cluster::offline("me");
        let timing = RoomTiming { tick: TICK, vote_ttl: Duration::from_secs(5) };
        let tracker = tokio_util::task::TaskTracker::new();
        let love = LoveStore::start(MemoryLove::default());
        let room = RoomName::main();
        let handle = spawn(room.clone(), timing, &tracker, love, clock, Some(cluster.clone()));
        let (reply, first) = oneshot::channel();
        handle.control.send(Control::Join { conn: 1, reply }).expect("the room runs");
        let first = first.await.expect("the room answers a join").consensus;
        assert_eq!(first.seq, 6_800_000_000, "seq is the tick number since the epoch");

        let mut consensus = handle.consensus.clone();
        let s = next(&mut consensus).await;
        assert_eq!((s.seq, s.at), (first.seq + 1, tick_time(first.seq + 1, TICK)));
        assert_eq!((s.hearts, s.voters), (1, 0));
        // Another instance, with 5 hearts and one voter at phase 0.25 and
        // 60 bpm, publishes its partial for the next tick.
        let mut other = Partial::empty("other", s.seq + 1, 5, 0);
        other.add_vote(0.25, 60.0);
        assert!(cluster.deliver(&room, other));
        let c = next(&mut consensus).await;
        assert_eq!(
            (c.seq, c.hearts, c.voters, c.at),
            (s.seq + 1, 6, 1, tick_time(s.seq + 1, TICK))
        );
        assert!((c.phase - 0.25).abs() < 1e-12);
        // Then it falls silent: carried forward (a quarter beat a tick at
        // 60 bpm) for two ticks, and dropped on the third.
        let c = next(&mut consensus).await;
        assert_eq!((c.hearts, c.voters), (6, 1));
        assert!((c.phase - 0.5).abs() < 1e-12, "{}", c.phase);
        assert_eq!(next(&mut consensus).await.hearts, 6);
        let gone = next(&mut consensus).await;
        assert_eq!((gone.seq, gone.hearts, gone.voters), (s.seq + 4, 1, 0));
    }

    #[test]
    fn ticks_are_aligned_to_the_epoch() {
        let tick = Duration::from_millis(250);
        assert_eq!(tick_at(1_000.0, tick), 4);
        assert_eq!(tick_at(1_249.9, tick), 4);
        assert_eq!(tick_at(1_250.0, tick), 5);
        assert_eq!(tick_time(5, tick), 1_250.0);
        assert_eq!(tick_at(-5.0, tick), 0);
    }
}
