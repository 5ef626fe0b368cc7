//! The registry of open rooms: room name to the handle of its task.
//!
//! A room exists while it has members. Joining and leaving count members
//! under the registry's lock (never held across an `.await`), so a room is
//! removed exactly when its last member leaves and a later join starts a new
//! one.

use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::fanout::Fanout;
use crate::love::LoveStore;
use crate::room::{self, ConnId, ConsensusFrame, Control, RoomHandle, RoomTiming};
use shared::RoomName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

/// All open rooms; cloning shares the registry.
#[derive(Debug, Clone)]
pub struct Rooms(Arc<Registry>);

#[derive(Debug)]
struct Registry {
    /// Each open room's handle, its fan-out, how many connections are in
    /// it and how many watchers (SSE streams) watch it; it closes when both
    /// counts are zero.
    open: Mutex<HashMap<RoomName, OpenRoom>>,
    timing: RoomTiming,
    tracker: TaskTracker,
    love: LoveStore,
    /// The other instances, with `--redis-url`.
    cluster: Option<Cluster>,
    /// The clock every room runs on.
    clock: Clock,
}

/// An open room as the registry keeps it.
#[derive(Debug)]
struct OpenRoom {
    handle: RoomHandle,
    fanout: Fanout,
    /// Connections in the room (its hearts).
    members: usize,
    /// SSE streams watching it: they keep it open but are not hearts.
    watchers: usize,
}

/// One connection's place in a room; leaving happens on drop.
#[derive(Debug)]
pub struct Membership {
    rooms: Rooms,
    /// The room joined.
    pub name: RoomName,
    /// This connection.
    pub conn: ConnId,
    /// The room's channels.
    pub handle: RoomHandle,
    /// The room's shard writers, for a socket that lets them write to it.
    pub fanout: Fanout,
    /// This connection's view of the room's newest consensus.
    pub consensus: tokio::sync::watch::Receiver<ConsensusFrame>,
}

/// A watcher of a room (an SSE stream): it sees the room's consensus and
/// keeps the room open, but is not one of its hearts. Unwatching happens on
/// drop.
#[derive(Debug)]
pub struct Watcher {
    rooms: Rooms,
    /// The room watched.
    pub name: RoomName,
    /// The room's newest consensus.
    pub consensus: tokio::sync::watch::Receiver<ConsensusFrame>,
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
#[error("the room's task has stopped")]
pub struct RoomGone;

impl Rooms {
    /// An empty registry whose rooms tick with `timing` on `clock` and run
    /// on `tracker`; with a `cluster`, rooms span every instance on its Redis.
    pub fn new(
        timing: RoomTiming,
        tracker: TaskTracker,
        love: LoveStore,
        clock: Clock,
        cluster: Option<Cluster>,
    ) -> Self {
        let open = Mutex::new(HashMap::new());
        Self(Arc::new(Registry { open, timing, tracker, love, clock, cluster }))
    }

    /// How many rooms are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no room is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, OpenRoom>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is a single insert, update or remove), so
        // a poisoned lock is still safe to use.
        self.0.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every room with someone in it, and its newest consensus, in no order.
    pub fn snapshot(&self) -> Vec<(RoomName, shared::Consensus)> {
        let open = self.lock();
        open.iter()
            .filter(|(_, room)| room.members > 0)
            .map(|(name, room)| (name.clone(), room.handle.consensus.borrow().consensus))
            .collect()
    }

    /// Room `name`'s newest consensus, if someone is in it. (Its `hearts`
    /// are as of the room's last tick: zero for a room not yet a tick old.)
    pub fn current(&self, name: &RoomName) -> Option<shared::Consensus> {
        let open = self.lock();
        let room = open.get(name).filter(|room| room.members > 0)?;
        Some(room.handle.consensus.borrow().consensus)
    }

    /// Watches room `name` if someone is in it (no room is opened for a
    /// watcher). The watcher keeps the room open until dropped, even after
    /// its last member leaves.
    pub fn watch(&self, name: &RoomName) -> Option<Watcher> {
        let mut open = self.lock();
        let entry = open.get_mut(name).filter(|room| room.members > 0)?;
        entry.watchers += 1;
        let consensus = entry.handle.consensus.clone();
        Some(Watcher { rooms: self.clone(), name: name.clone(), consensus })
    }

    /// Undoes one member's or watcher's count; the room closes with the last.
    fn release(&self, name: &RoomName, watcher: bool) {
        let mut open = self.lock();
        if let Some(entry) = open.get_mut(name) {
            if watcher {
                entry.watchers -= 1;
            } else {
                entry.members -= 1;
            }
            if entry.members == 0 && entry.watchers == 0 {
                open.remove(name);
            }
        }
    }

    /// Joins `conn` to room `name`, opening the room if needed, and returns
    /// the membership and a consensus computed for the newcomer.
    pub async fn join(
        &self,
        name: RoomName,
        conn: ConnId,
    ) -> Result<(Membership, ConsensusFrame), RoomGone> {
        let (handle, fanout) = {
            let mut open = self.lock();
            let entry = open.entry(name.clone()).or_insert_with(|| {
                let love = self.0.love.clone();
                let cluster = self.0.cluster.clone();
                let (timing, clock) = (self.0.timing, self.0.clock);
                let handle =
                    room::spawn(name.clone(), timing, &self.0.tracker, love, clock, cluster);
                let fanout = Fanout::spawn(&handle.consensus, &self.0.tracker);
                OpenRoom { handle, fanout, members: 0, watchers: 0 }
            });
            entry.members += 1;
            (entry.handle.clone(), entry.fanout.clone())
        };
        // From here on the membership's drop undoes the count.
        // Mark the current consensus seen before joining: a tick after this
        // point is delivered, so the newcomer sees no gap in `seq`.
        let mut consensus = handle.consensus.clone();
        consensus.mark_unchanged();
        let membership = Membership { rooms: self.clone(), name, conn, handle, fanout, consensus };
        let (reply, answer) = oneshot::channel();
        membership.handle.control.send(Control::Join { conn, reply }).map_err(|_| RoomGone)?;
        let first = answer.await.map_err(|_| RoomGone)?;
        Ok((membership, first))
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let _ = self.handle.control.send(Control::Leave { conn: self.conn });
        self.rooms.release(&self.name, false);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.rooms.release(&self.name, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::love::memory::MemoryLove;
    use std::time::Duration;

    fn rooms() -> Rooms {
        let timing =
            RoomTiming { tick: Duration::from_millis(250), vote_ttl: Duration::from_secs(5) };
        let love = LoveStore::start(MemoryLove::default());
        Rooms::new(timing, TaskTracker::new(), love, Clock::following_tokio(0.0), None)
    }

    fn name(s: &str) -> RoomName {
        RoomName::parse(s).expect("a valid room name")
    }

    #[tokio::test(start_paused = true)]
    async fn members_of_one_name_share_one_room() {
        let rooms = rooms();
        let (a, _) = rooms.join(name("kitchen"), 1).await.expect("joined");
        let (_b, first) = rooms.join(name("kitchen"), 2).await.expect("joined");
        assert_eq!(first.consensus.hearts, 2);
        let (_c, elsewhere) = rooms.join(name("garden"), 3).await.expect("joined");
        assert_eq!(elsewhere.consensus.hearts, 1);
        assert_eq!(rooms.len(), 2);
        let mut consensus = a.consensus.clone();
        consensus.changed().await.expect("the room runs");
        assert_eq!(consensus.borrow_and_update().consensus.hearts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_closes_with_its_last_member_and_a_later_join_starts_afresh() {
        let rooms = rooms();
        let (a, _) = rooms.join(name("kitchen"), 1).await.expect("joined");
        let (b, _) = rooms.join(name("kitchen"), 2).await.expect("joined");
        let mut old = a.consensus.clone();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(a);
        assert_eq!(rooms.len(), 1, "one member is left");
        drop(b);
        assert!(rooms.is_empty());
        // The old room's task ends: its consensus channel closes.
        while old.changed().await.is_ok() {}
        let (_c, first) = rooms.join(name("kitchen"), 3).await.expect("joined");
        assert_eq!((first.consensus.seq, first.consensus.hearts), (0, 1), "a new room");
        assert_eq!(rooms.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_sees_the_room_keeps_it_open_and_is_no_heart() {
        let rooms = rooms();
        assert!(rooms.watch(&name("kitchen")).is_none(), "no room is opened for a watcher");
        let (a, _) = rooms.join(name("kitchen"), 1).await.expect("joined");
        let mut watcher = rooms.watch(&name("kitchen")).expect("the room is open");
        assert!(rooms.current(&name("kitchen")).is_some());
        assert_eq!(rooms.snapshot().len(), 1);
        drop(a);
        assert_eq!(rooms.len(), 1, "the watcher keeps the room open");
        watcher.consensus.changed().await.expect("the room runs");
        assert_eq!(watcher.consensus.borrow_and_update().consensus.hearts, 0);
        assert_eq!(rooms.current(&name("kitchen")), None, "no one is in it");
        assert!(rooms.snapshot().is_empty());
        assert!(rooms.watch(&name("kitchen")).is_none());
        drop(watcher);
        assert!(rooms.is_empty());
        assert_eq!(rooms.current(&name("kitchen")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_misses_no_tick_after_its_first_consensus() {
        let rooms = rooms();
        let (_a, _) = rooms.join(name("kitchen"), 1).await.expect("joined");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (mut b, first) = rooms.join(name("kitchen"), 2).await.expect("joined");
        b.consensus.changed().await.expect("the room runs");
        assert_eq!(b.consensus.borrow_and_update().consensus.seq, first.consensus.seq + 1);
    }
}
