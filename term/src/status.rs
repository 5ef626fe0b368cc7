//! The status lines drawn under the heart: the room's numbers, then the
//! connection and the keys. Pure: the lines are a function of the session's
//! [`RoomView`], the server's last notice and the time.

use shared::client::RoomView;

/// How long a message the server refused stays on the status line (ms).
pub const NOTICE_MS: f64 = 5_000.0;

/// The two status lines for a screen `cols` wide at local time `now` (ms):
/// the room's numbers, then the connection and keys (shorter forms when the
/// long ones do not fit). `notice` is the last message the server refused
/// and when; it shows for [`NOTICE_MS`].
pub fn lines(
    room: &str,
    view: &RoomView,
    notice: Option<&(f64, String)>,
    now: f64,
    cols: usize,
) -> [String; 2] {
    let numbers = view.room.as_ref();
    let hearts = numbers.map_or_else(|| String::from("–"), |n| n.hearts.to_string());
    let coherence = numbers.map_or_else(
        || String::from("–"),
        |n| format!("{:.0}%", 100.0 * n.coherence.clamp(0.0, 1.0)),
    );
    let bpm = numbers.map_or_else(|| String::from("–"), |n| format!("{:.0}", n.bpm));
    let mut love = view.love_total.map_or_else(|| String::from("–"), |t| t.to_string());
    if view.love_pending > 0 {
        love.push_str(&format!(" (+{} sending)", view.love_pending));
    }
    let fits = |line: &String| line.chars().count() <= cols;
    let long =
        format!("room {room} · hearts {hearts} · coherence {coherence} · {bpm} bpm · ♥ {love}");
    let room_line = if fits(&long) {
        long
    } else {
        format!("{room} · {hearts} hearts · {coherence} · {bpm} bpm · ♥ {love}")
    };

    let state = view.link.label(now);
    let state = match notice {
        Some((at, notice)) if now - at < NOTICE_MS => format!("{state} · server said: {notice}"),
        _ => state,
    };
    let long = format!("{state} · space: love · q: quit");
    [room_line, if fits(&long) { long } else { state }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::client::{Link, RoomNumbers};

    fn connected(hearts: u32, coherence: f64) -> RoomView {
        RoomView {
            link: Link::Connected,
            room: Some(RoomNumbers { hearts, coherence, bpm: 72.0 }),
            love_total: Some(118),
            love_shown: 118,
            love_pending: 0,
        }
    }

    #[test]
    fn shows_the_rooms_numbers() {
        let [room, state] = lines("main", &connected(2, 0.934), None, 0.0, 80);
        assert_eq!(room, "room main · hearts 2 · coherence 93% · 72 bpm · ♥ 118");
        assert_eq!(state, "connected · space: love · q: quit");
    }

    #[test]
    fn a_narrow_screen_gets_the_short_forms() {
        let view = connected(2, 1.0);
        let [room, state] = lines("lobby", &view, None, 0.0, 50);
        assert_eq!(room, "lobby · 2 hearts · 100% · 72 bpm · ♥ 118");
        assert_eq!(state, "connected · space: love · q: quit");
        assert_eq!(lines("lobby", &view, None, 0.0, 30)[1], "connected");
    }

    #[test]
    fn unacknowledged_love_is_shown_as_sending() {
        let view = RoomView { love_pending: 2, ..connected(1, 1.0) };
        let [room, _] = lines("main", &view, None, 0.0, 80);
        assert!(room.ends_with("♥ 118 (+2 sending)"), "{room}");
    }

    #[test]
    fn counts_down_to_the_next_attempt() {
        let view = RoomView {
            link: Link::Waiting { until: 3300.0, reason: String::from("connection refused") },
            room: None,
            love_total: None,
            love_shown: 0,
            love_pending: 0,
        };
        let [room, state] = lines("main", &view, None, 1000.0, 80);
        assert_eq!(room, "room main · hearts – · coherence – · – bpm · ♥ –");
        assert_eq!(state, "connection refused: reconnecting in 3 s · space: love · q: quit");
    }

    #[test]
    fn server_notices_fade() {
        let view = connected(1, 1.0);
        let notice = (1000.0, String::from("rate_limited: slow down"));
        assert!(
            lines("r", &view, Some(&notice), 1000.0, 80)[1].contains("server said: rate_limited")
        );
        assert!(
            !lines("r", &view, Some(&notice), 1000.0 + NOTICE_MS, 80)[1].contains("server said")
        );
    }
}
