//! What the page keeps in localStorage, and under which keys: this
//! browser's client id (shared by every room) and the love counts of each
//! room. Pure string work, tested natively; the rules for the id itself are
//! [`shared::client::address`]'s.

use shared::RoomName;

/// The localStorage key of this browser's client id, shared by every room.
pub const CLIENT_ID_KEY: &str = "heartsync.client_id";

/// The localStorage key of the cumulative tap count in `room`.
pub fn love_taps_key(room: &RoomName) -> String {
    format!("heartsync.love.{room}")
}

/// The localStorage key of the highest acknowledged tap count in `room`.
pub fn love_acked_key(room: &RoomName) -> String {
    format!("heartsync.love.{room}.acked")
}

/// The localStorage key of the server's name for the love ledger in `room`
/// (its epoch), sent with every count.
pub fn love_epoch_key(room: &RoomName) -> String {
    format!("heartsync.love.{room}.epoch")
}

/// A stored count, or 0 when missing or garbled.
pub fn parse_count(stored: Option<&str>) -> u64 {
    stored.and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_counts_are_checked() {
        assert_eq!(parse_count(Some("12")), 12);
        assert_eq!(parse_count(Some(" 7\n")), 7);
        assert_eq!(parse_count(Some("-3")), 0);
        assert_eq!(parse_count(None), 0);
    }

    #[test]
    fn keys_name_the_room() {
        let room = RoomName::main();
        assert_eq!(love_taps_key(&room), "heartsync.love.main");
        assert_eq!(love_acked_key(&room), "heartsync.love.main.acked");
        assert_eq!(love_epoch_key(&room), "heartsync.love.main.epoch");
    }
}
