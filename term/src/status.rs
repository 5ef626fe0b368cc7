//! What the screen knows about the room and the connection ([`RoomView`],
//! which the connection task publishes), and the status lines drawn under
//! the heart. Pure: the lines are a function of the view and the time.

use crate::heart::{RoomBeat, consensus_at};
use shared::Consensus;
use std::time::{Duration, Instant};

/// How long a message the server refused stays on the status line.
const NOTICE_FOR: Duration = Duration::from_secs(5);

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// A socket is opening, or open and waiting for the server's welcome.
    Connecting,
    /// The server welcomed this heart.
    Connected,
    /// The connection was lost (`reason`); the next attempt is at `at`.
    Retrying {
        /// When the next attempt starts.
        at: Instant,
        /// Why the last connection ended, for the person watching.
        reason: String,
    },
}

/// The room as the connection last heard it, published to the screen.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomView {
    /// Where the connection stands.
    pub link: Link,
    /// The newest consensus on the current connection; `None` while there is
    /// no connection, so stale numbers are not shown as live.
    pub consensus: Option<Consensus>,
    /// What to add to the local clock to read the server's (ms).
    pub offset_ms: f64,
    /// The room's love total as the server last told it; kept across
    /// reconnects (it is durable on the server).
    pub love_total: Option<u64>,
    /// How many of this session's taps the server has acknowledged.
    pub love_acked: u64,
    /// The last message the server refused, and when, shown for a while.
    pub notice: Option<(Instant, String)>,
}

impl Default for RoomView {
    fn default() -> Self {
        Self {
            link: Link::Connecting,
            consensus: None,
            offset_ms: 0.0,
            love_total: None,
            love_acked: 0,
            notice: None,
        }
    }
}

impl RoomView {
    /// The room's beat at `local_ms` (the local clock), to pull the heart
    /// towards; `None` while not connected.
    pub fn pull(&self, local_ms: f64) -> Option<RoomBeat> {
        match (&self.link, &self.consensus) {
            (Link::Connected, Some(c)) => Some(consensus_at(c, local_ms + self.offset_ms)),
            _ => None,
        }
    }
}

/// The two status lines for a screen `cols` wide: the room's numbers, then
/// the connection and keys (shorter forms when the long ones do not fit).
/// `taps` is this session's tap count (some may not be acknowledged yet).
pub fn lines(room: &str, view: &RoomView, taps: u64, now: Instant, cols: usize) -> [String; 2] {
    let consensus = view.consensus.as_ref();
    let hearts = consensus.map_or_else(|| String::from("–"), |c| c.hearts.to_string());
    let coherence = consensus.map_or_else(
        || String::from("–"),
        |c| format!("{:.0}%", 100.0 * c.coherence.clamp(0.0, 1.0)),
    );
    let bpm = consensus.map_or_else(|| String::from("–"), |c| format!("{:.0}", c.bpm));
    let mut love = view.love_total.map_or_else(|| String::from("–"), |t| t.to_string());
    let sending = taps.saturating_sub(view.love_acked);
    if sending > 0 {
        love.push_str(&format!(" (+{sending} sending)"));
    }
    let fits = |line: &String| line.chars().count() <= cols;
    let long =
        format!("room {room} · hearts {hearts} · coherence {coherence} · {bpm} bpm · ♥ {love}");
    let room_line = if fits(&long) {
        long
    } else {
        format!("{room} · {hearts} hearts · {coherence} · {bpm} bpm · ♥ {love}")
    };

    let state = match &view.link {
        Link::Connecting => String::from("connecting…"),
        Link::Connected => String::from("connected"),
        Link::Retrying { at, reason } => {
            let left = at.saturating_duration_since(now).as_secs_f64().ceil();
            format!("{reason}: reconnecting in {left:.0} s")
        }
    };
    let state = match &view.notice {
        Some((at, notice)) if now.saturating_duration_since(*at) < NOTICE_FOR => {
            format!("{state} · server said: {notice}")
        }
        _ => state,
    };
    let long = format!("{state} · space: love · q: quit");
    [room_line, if fits(&long) { long } else { state }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(consensus: Consensus) -> RoomView {
        RoomView {
            link: Link::Connected,
            consensus: Some(consensus),
            love_total: Some(118),
            love_acked: 3,
            ..RoomView::default()
        }
    }

    #[test]
    fn shows_the_rooms_numbers() {
        let consensus =
            Consensus { hearts: 2, coherence: 0.934, bpm: 72.0, love: 118, ..Default::default() };
        let [room, state] = lines("main", &connected(consensus), 3, Instant::now(), 80);
        assert_eq!(room, "room main · hearts 2 · coherence 93% · 72 bpm · ♥ 118");
        assert_eq!(state, "connected · space: love · q: quit");
    }

    #[test]
    fn a_narrow_screen_gets_the_short_forms() {
        let consensus = Consensus { hearts: 2, coherence: 1.0, bpm: 72.0, ..Default::default() };
        let view = connected(consensus);
        let [room, state] = lines("lobby", &view, 3, Instant::now(), 50);
        assert_eq!(room, "lobby · 2 hearts · 100% · 72 bpm · ♥ 118");
        assert_eq!(state, "connected · space: love · q: quit");
        assert_eq!(lines("lobby", &view, 3, Instant::now(), 30)[1], "connected");
    }

    #[test]
    fn unacknowledged_love_is_shown_as_sending() {
        let [room, _] = lines("main", &connected(Consensus::default()), 5, Instant::now(), 80);
        assert!(room.ends_with("♥ 118 (+2 sending)"), "{room}");
    }

    #[test]
    fn counts_down_to_the_next_attempt() {
        let now = Instant::now();
        let view = RoomView {
            link: Link::Retrying {
                at: now + Duration::from_millis(2300),
                reason: String::from("connection refused"),
            },
            ..RoomView::default()
        };
        let [room, state] = lines("main", &view, 0, now, 80);
        assert_eq!(room, "room main · hearts – · coherence – · – bpm · ♥ –");
        assert_eq!(state, "connection refused: reconnecting in 3 s · space: love · q: quit");
    }

    #[test]
    fn server_notices_fade() {
        let now = Instant::now();
        let view = RoomView {
            notice: Some((now, String::from("rate_limited: slow down"))),
            ..connected(Consensus::default())
        };
        assert!(lines("r", &view, 0, now, 80)[1].contains("server said: rate_limited"));
        assert!(!lines("r", &view, 0, now + NOTICE_FOR, 80)[1].contains("server said"));
    }

    #[test]
    fn pulls_only_while_connected() {
        let consensus =
            Consensus { at: 1000.0, phase: 0.5, bpm: 60.0, coherence: 1.0, ..Default::default() };
        let mut view = connected(consensus);
        view.offset_ms = 500.0;
        let pull = view.pull(750.0).unwrap();
        assert!((pull.order.phase - 0.75).abs() < 1e-9, "{pull:?}");
        view.link = Link::Connecting;
        assert_eq!(view.pull(750.0), None);
    }
}
