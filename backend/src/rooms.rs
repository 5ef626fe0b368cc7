//! The registry of open rooms: room name to the handle of its task.
//!
//! A room exists while it has members. Joining and leaving count members
//! under the registry's lock (never held across an `.await`), so a room is
//! removed exactly when its last member leaves and a later join starts a new
//! one.

use crate::cluster::Cluster;
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
    /// Each open room's handle and how many connections are in it.
    open: Mutex<HashMap<RoomName, (RoomHandle, usize)>>,
    timing: RoomTiming,
    tracker: TaskTracker,
    love: LoveStore,
    /// The other instances, with `--redis-url`.
    cluster: Option<Cluster>,
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
    /// This connection's view of the room's newest consensus.
    pub consensus: tokio::sync::watch::Receiver<ConsensusFrame>,
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
#[error("the room's task has stopped")]
pub struct RoomGone;

impl Rooms {
    /// An empty registry whose rooms tick with `timing` and run on `tracker`.
    pub fn new(
        timing: RoomTiming,
        tracker: TaskTracker,
        love: LoveStore,
        cluster: Option<Cluster>,
    ) -> Self {
        Self(Arc::new(Registry {
            open: Mutex::new(HashMap::new()),
            timing,
            tracker,
            love,
            cluster,
        }))
    }

    /// How many rooms are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no room is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, (RoomHandle, usize)>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is a single insert, update or remove), so
        // a poisoned lock is still safe to use.
        self.0.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins `conn` to room `name`, opening the room if needed, and returns
    /// the membership and a consensus computed for the newcomer.
    pub async fn join(
        &self,
        name: RoomName,
        conn: ConnId,
    ) -> Result<(Membership, ConsensusFrame), RoomGone> {
        let handle = {
            let mut open = self.lock();
            let entry = open.entry(name.clone()).or_insert_with(|| {
                let love = self.0.love.clone();
                let cluster = self.0.cluster.clone();
                (room::spawn(name.clone(), self.0.timing, &self.0.tracker, love, cluster), 0)
            });
            entry.1 += 1;
            entry.0.clone()
        };
        // From here on the membership's drop undoes the count.
        // Mark the current consensus seen before joining: a tick after this
        // point is delivered, so the newcomer sees no gap in `seq`.
        let mut consensus = handle.consensus.clone();
        consensus.mark_unchanged();
        let membership = Membership { rooms: self.clone(), name, conn, handle, consensus };
        let (reply, answer) = oneshot::channel();
        membership.handle.control.send(Control::Join { conn, reply }).map_err(|_| RoomGone)?;
        let first = answer.await.map_err(|_| RoomGone)?;
        Ok((membership, first))
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let _ = self.handle.control.send(Control::Leave { conn: self.conn });
        let mut open = self.rooms.lock();
        if let Some(entry) = open.get_mut(&self.name) {
            entry.1 -= 1;
            if entry.1 == 0 {
                open.remove(&self.name);
            }
        }
    }
}
