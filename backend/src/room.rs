//! One room: a task that owns the room's members and their last reports, and
//! publishes the room's consensus every tick.
//!
//! Nothing else mutates a room. Sockets talk to it over two channels: an
//! unbounded one for joins and leaves (one of each per connection, so it is
//! bounded by the connection cap, and a leave can be sent from `Drop`), and a
//! bounded one for phase reports, where a full channel drops the report (a
//! report is state, and the next one replaces it). The consensus goes out
//! through a `watch` channel, which keeps only the newest value: a slow socket
//! skips to the newest consensus instead of queueing old ones, and the
//! broadcast never waits on any socket.
//!
//! The room never touches a socket: [`crate::fanout`]'s shard writers take
//! each consensus from the `watch` (framed once, in [`ConsensusFrame::wire`])
//! and put it on the room's sockets.
//!
//! Time comes from the [`Clock`] the room is given, so that under
//! `tokio::time::pause()` ticks, vote expiry and protocol times all move
//! together.

use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::cluster::room::{ClusterEvent, ClusterRoom};
use crate::love::LoveStore;
use crate::metrics::metrics;
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use shared::{Consensus, PhaseReport, PhaseSum, RoomName, ServerMessage, project};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

/// How many phase reports may wait for a room before new ones are dropped.
pub const REPORT_QUEUE: usize = 4096;

/// The bpm a room beats at before anyone has reported.
pub use shared::client::RESTING_BPM;

/// Identifies one connection within the server.
pub type ConnId = u64;

/// A consensus and its JSON, serialized once per room per tick and shared by
/// every socket of the room.
#[derive(Debug, Clone)]
pub struct ConsensusFrame {
    /// The consensus itself.
    pub consensus: Consensus,
    /// `consensus` as a protocol text frame.
    pub text: Utf8Bytes,
    /// `text` as a complete WebSocket frame, the same bytes for every
    /// client (server frames are unmasked): what the fan-out writes.
    pub wire: Bytes,
    /// When the room's tick began, for the broadcast-lag metric.
    pub ticked: Instant,
}

impl ConsensusFrame {
    /// The frame of `consensus`, computed at `ticked`: serialized and
    /// framed once.
    pub fn new(consensus: Consensus, ticked: Instant) -> Self {
        let text = ServerMessage::Consensus(consensus).to_json();
        let wire = crate::fanout::frame_text(&text);
        Self { consensus, text: Utf8Bytes::from(text), wire, ticked }
    }
}

/// What sockets tell their room about membership.
#[derive(Debug)]
pub enum Control {
    /// A connection joined; the room answers with a consensus for it alone.
    Join { conn: ConnId, reply: oneshot::Sender<ConsensusFrame> },
    /// A connection left.
    Leave { conn: ConnId },
    /// Love was made durable; the room's total is now at least `total`.
    Love { total: u64 },
}

/// A phase report from one connection, stamped when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Who reported.
    pub conn: ConnId,
    /// What they reported.
    pub report: PhaseReport,
    /// When the server received it; votes expire by this, not by the
    /// client's `at`, so a client cannot keep a stale vote alive.
    pub received: Instant,
}

/// The timing a room runs with.
#[derive(Debug, Clone, Copy)]
pub struct RoomTiming {
    /// Time between consensus broadcasts.
    pub tick: Duration,
    /// A report older than this no longer votes.
    pub vote_ttl: Duration,
}

/// The ends of a room's channels that sockets hold.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    /// Joins and leaves.
    pub control: mpsc::UnboundedSender<Control>,
    /// Phase reports; `try_send` only.
    pub reports: mpsc::Sender<Report>,
    /// The newest consensus.
    pub consensus: watch::Receiver<ConsensusFrame>,
}

/// The state a room task owns.
struct Room {
    /// Every open connection of the room and its last report, if any.
    members: HashMap<ConnId, Option<Report>>,
    /// The last consensus published: with no voters, the beat runs on from it.
    last: Consensus,
    timing: RoomTiming,
    /// Protocol time and monotonic time, read together.
    clock: Clock,
    /// This room's share of the server-wide gauges.
    gauges: RoomGauges,
    /// With `--redis-url`: the room on the other instances. Its ticks then
    /// replace the local interval, and its combine the local consensus.
    cluster: Option<ClusterRoom>,
}

/// What this room last added to the server-wide hearts and voters gauges,
/// so each tick adds only the change and a closing room takes its share back.
#[derive(Debug, Default)]
struct RoomGauges {
    hearts: f64,
    voters: f64,
}

impl RoomGauges {
    fn update(&mut self, consensus: &Consensus) {
        let m = metrics();
        let (hearts, voters) = (f64::from(consensus.hearts), f64::from(consensus.voters));
        m.hearts.increment(hearts - self.hearts);
        m.voters.increment(voters - self.voters);
        (self.hearts, self.voters) = (hearts, voters);
        if consensus.voters > 0 {
            m.room_coherence.record(consensus.coherence);
        }
    }

    fn clear(&mut self) {
        self.update(&Consensus { hearts: 0, voters: 0, ..Consensus::default() });
    }
}

/// Starts a room's task and returns the handle to reach it. The task ends
/// when every `control` sender (the registry's and each member's) is gone.
pub fn spawn(
    name: RoomName,
    timing: RoomTiming,
    tracker: &tokio_util::task::TaskTracker,
    love: LoveStore,
    clock: Clock,
    cluster: Option<Cluster>,
) -> RoomHandle {
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (report_tx, report_rx) = mpsc::channel(REPORT_QUEUE);
    let cluster =
        cluster.map(|c| ClusterRoom::new(c.join_room(&name), timing.tick, clock.now_ms()));
    let first = Consensus {
        // Clustered, seq is the tick number, the same on every instance.
        seq: cluster.as_ref().map_or(0, ClusterRoom::current_tick),
        at: clock.now_ms(),
        phase: 0.0,
        bpm: RESTING_BPM,
        coherence: 0.0,
        hearts: 0,
        voters: 0,
        love: 0,
    };
    let (consensus_tx, consensus_rx) = watch::channel(ConsensusFrame::new(first, clock.now()));
    let room = Room {
        members: HashMap::new(),
        last: first,
        timing,
        clock,
        gauges: RoomGauges::default(),
        cluster,
    };
    let total_control = control_tx.downgrade();
    tracker.spawn(async move {
        tracing::debug!(room = %name, "room opened");
        metrics().rooms_active.increment(1.0);
        let mut room = room;
        if room.cluster.as_ref().is_some_and(|c| !c.redis_up()) {
            // Clustered with Redis away: the room opens at once and takes its
            // total when Redis is back (totals only grow; the other
            // instances' partials carry it too). The reader holds the room
            // only weakly, so a room that empties does not wait for it.
            let room_control = total_control;
            let (love, name) = (love.clone(), name.clone());
            tokio::spawn(async move {
                match love.total(name.clone()).await {
                    Ok(total) => {
                        if let Some(control) = room_control.upgrade() {
                            let _ = control.send(Control::Love { total });
                        }
                    }
                    Err(error) => {
                        tracing::error!(room = %name, %error, "cannot read the room's love total")
                    }
                }
            });
        } else {
            // Joins wait in the channel until the total is known, so no one
            // sees this room without its love.
            match love.total(name.clone()).await {
                Ok(total) => room.last.love = total,
                Err(error) => {
                    tracing::error!(room = %name, %error, "cannot read the room's love total")
                }
            }
        }
        room.run(control_rx, report_rx, consensus_tx).await;
        metrics().rooms_active.decrement(1.0);
        tracing::debug!(room = %name, "room closed");
    });
    RoomHandle { control: control_tx, reports: report_tx, consensus: consensus_rx }
}

impl Room {
    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut reports: mpsc::Receiver<Report>,
        consensus: watch::Sender<ConsensusFrame>,
    ) {
        let mut ticks = tokio::time::interval(self.timing.tick);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                biased;
                event = control.recv() => match event {
                    Some(Control::Join { conn, reply }) => {
                        self.members.insert(conn, None);
                        // The newcomer gets the room as of now without waiting a
                        // tick, under the last seq so it sees no gap.
                        let now = self.clock.now();
                        // Clustered, every seq must read the same on every
                        // instance: the newcomer gets the last one as broadcast.
                        let fresh = match self.cluster {
                            Some(_) => self.last,
                            None => self.compute(self.clock.now_ms(), now, self.last.seq),
                        };
                        let _ = reply.send(ConsensusFrame::new(fresh, now));
                    }
                    Some(Control::Leave { conn }) => {
                        self.members.remove(&conn);
                    }
                    Some(Control::Love { total }) => {
                        // Commits can be acknowledged out of order across
                        // sockets; totals only grow.
                        self.last.love = self.last.love.max(total);
                    }
                    None => break,
                },
                Some(report) = reports.recv() => {
                    if let Some(slot) = self.members.get_mut(&report.conn) {
                        *slot = Some(report);
                    }
                }
                event = next_cluster_event(&mut self.cluster, self.clock) => match event {
                    ClusterEvent::Partial(partial) => {
                        if let Some(cluster) = &mut self.cluster {
                            cluster.receive(partial);
                        }
                    }
                    ClusterEvent::Tick(k) => {
                        let ticked = self.clock.now();
                        if let Some(cluster) = &mut self.cluster {
                            let votes = self.members.values().flatten();
                            let (next, local_voters) = cluster.tick(
                                k, votes, self.members.len(), &self.last, ticked, self.timing.vote_ttl,
                            );
                            // The gauges count this instance's own hearts.
                            let hearts = u32::try_from(self.members.len()).unwrap_or(u32::MAX);
                            self.gauges.update(&Consensus { hearts, voters: local_voters, ..next });
                            self.last = next;
                            consensus.send_replace(ConsensusFrame::new(next, ticked));
                            metrics().tick_duration.record(ticked.elapsed().as_secs_f64());
                        }
                    }
                },
                _ = ticks.tick(), if self.cluster.is_none() => {
                    let ticked = self.clock.now();
                    let next = self.compute(self.clock.now_ms(), ticked, self.last.seq + 1);
                    self.gauges.update(&next);
                    self.last = next;
                    consensus.send_replace(ConsensusFrame::new(next, ticked));
                    metrics().tick_duration.record(ticked.elapsed().as_secs_f64());
                }
            }
        }
        self.gauges.clear();
    }

    /// The room's consensus at server time `at_ms` (monotonic `now`).
    fn compute(&self, at_ms: f64, now: Instant, seq: u64) -> Consensus {
        let votes = self.members.values().flatten();
        consensus_of(votes, self.members.len(), &self.last, at_ms, now, self.timing.vote_ttl, seq)
    }
}

/// The next event of a clustered room; never, for a room on its own.
async fn next_cluster_event(cluster: &mut Option<ClusterRoom>, clock: Clock) -> ClusterEvent {
    match cluster {
        Some(cluster) => cluster.next_event(clock.now_ms()).await,
        None => std::future::pending().await,
    }
}

/// A room's consensus at server time `at_ms` (monotonic `now`) from its
/// members' last reports: each report younger than `vote_ttl` is projected to
/// `at_ms` and folded into the circular mean and coherence; with no votes the
/// beat runs on from `last`. Public for the benchmark.
pub fn consensus_of<'a>(
    reports: impl Iterator<Item = &'a Report>,
    hearts: usize,
    last: &Consensus,
    at_ms: f64,
    now: Instant,
    vote_ttl: Duration,
    seq: u64,
) -> Consensus {
    let mut sum = PhaseSum::default();
    let mut bpm_total = 0.0;
    for report in reports {
        if now.duration_since(report.received) > vote_ttl {
            continue;
        }
        let r = report.report;
        sum.add(project(r.phase, r.bpm, r.at, at_ms));
        bpm_total += r.bpm;
    }
    let voters = sum.count();
    let (phase, coherence, bpm) = match sum.order() {
        Some(order) => (order.phase, order.coherence, bpm_total / voters as f64),
        // Nobody votes: the beat runs on from the last consensus.
        None => (project(last.phase, last.bpm, last.at, at_ms), 0.0, last.bpm),
    };
    Consensus {
        seq,
        at: at_ms,
        phase,
        bpm,
        coherence,
        hearts: u32::try_from(hearts).unwrap_or(u32::MAX),
        voters: u32::try_from(voters).unwrap_or(u32::MAX),
        love: last.love,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::love::memory::MemoryLove;
    use shared::wrap;

    const T0: f64 = 1_700_000_000_000.0;
    const TICK: Duration = Duration::from_millis(250);

    /// A room ticking every 250 ms with votes living 5 s, on a clock that
    /// follows paused time, and a member `1` in it.
    async fn room_with_member() -> (RoomHandle, Clock) {
        let clock = Clock::following_tokio(T0);
        let timing = RoomTiming { tick: TICK, vote_ttl: Duration::from_secs(5) };
        let tracker = tokio_util::task::TaskTracker::new();
        let love = LoveStore::start(MemoryLove::default());
        let handle = spawn(RoomName::main(), timing, &tracker, love, clock, None);
        let (reply, first) = oneshot::channel();
        handle.control.send(Control::Join { conn: 1, reply }).expect("the room runs");
        first.await.expect("the room answers a join");
        (handle, clock)
    }

    fn report(clock: &Clock, phase: f64, bpm: f64) -> Report {
        Report {
            conn: 1,
            report: PhaseReport { phase, bpm, at: clock.now_ms() },
            received: clock.now(),
        }
    }

    /// The consensus after the next tick.
    async fn next(consensus: &mut watch::Receiver<ConsensusFrame>) -> Consensus {
        consensus.changed().await.expect("the room runs");
        consensus.borrow_and_update().consensus
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_falls_behind_gets_only_the_newest_consensus() {
        let (handle, _clock) = room_with_member().await;
        let mut consensus = handle.consensus.clone();
        let seen = next(&mut consensus).await.seq;
        // Four ticks pass unread (the sleep ends between two ticks).
        tokio::time::sleep(TICK * 4 + TICK / 2).await;
        assert!(consensus.has_changed().expect("the room runs"));
        assert_eq!(consensus.borrow_and_update().consensus.seq, seen + 4);
        assert!(!consensus.has_changed().expect("the room runs"), "nothing older queued");
    }

    #[tokio::test(start_paused = true)]
    async fn a_vote_counts_until_its_ttl_then_the_beat_runs_on() {
        let (handle, clock) = room_with_member().await;
        let mut consensus = handle.consensus.clone();
        handle.reports.try_send(report(&clock, 0.5, 60.0)).expect("room for a report");
        let voted = next(&mut consensus).await;
        assert_eq!((voted.hearts, voted.voters, voted.bpm), (1, 1, 60.0));
        assert!((voted.coherence - 1.0).abs() < 1e-9);
        // Projected to the tick: 60 bpm is one beat a second.
        let expected = wrap(0.5 + (voted.at - T0) / 1000.0);
        assert!((voted.phase - expected).abs() < 1e-9, "{} vs {expected}", voted.phase);

        // 5 s after it arrived the vote still counts; a tick later it does not.
        let mut last = voted;
        while last.at - T0 < 5_000.0 {
            last = next(&mut consensus).await;
            assert_eq!(last.voters, 1, "at {} ms", last.at - T0);
        }
        let expired = next(&mut consensus).await;
        assert_eq!((expired.hearts, expired.voters, expired.coherence), (1, 0, 0.0));
        // No voters: the beat runs on from the last consensus at its bpm.
        assert_eq!(expired.bpm, 60.0);
        let run_on = wrap(last.phase + (expired.at - last.at) / 1000.0);
        assert!((expired.phase - run_on).abs() < 1e-9, "{} vs {run_on}", expired.phase);
    }

    #[tokio::test(start_paused = true)]
    async fn the_room_keeps_its_own_time_not_the_clients() {
        let (handle, clock) = room_with_member().await;
        let mut consensus = handle.consensus.clone();
        // A report stamped 9 s ahead is still judged by when it arrived.
        let mut ahead = report(&clock, 0.25, 90.0);
        ahead.report.at += 9_000.0;
        handle.reports.try_send(ahead).expect("room for a report");
        let first = next(&mut consensus).await;
        assert_eq!(first.voters, 1);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(next(&mut consensus).await.voters, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn seq_rises_by_one_a_tick_and_a_newcomer_sees_the_current_one() {
        let (handle, _clock) = room_with_member().await;
        let mut consensus = handle.consensus.clone();
        let a = next(&mut consensus).await.seq;
        let b = next(&mut consensus).await.seq;
        assert_eq!(b, a + 1);
        let (reply, first) = oneshot::channel();
        handle.control.send(Control::Join { conn: 2, reply }).expect("the room runs");
        let fresh = first.await.expect("the room answers a join").consensus;
        assert_eq!((fresh.seq, fresh.hearts), (b, 2));
        handle.control.send(Control::Leave { conn: 2 }).expect("the room runs");
        assert_eq!(next(&mut consensus).await.hearts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn love_totals_only_grow() {
        let (handle, _clock) = room_with_member().await;
        let mut consensus = handle.consensus.clone();
        handle.control.send(Control::Love { total: 9 }).expect("the room runs");
        handle.control.send(Control::Love { total: 4 }).expect("the room runs");
        assert_eq!(next(&mut consensus).await.love, 9);
    }
}
