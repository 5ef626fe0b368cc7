//! Names the page derives from its address and its storage: the room from
//! the URL path, the WebSocket URL, the client id and the localStorage keys.
//! Pure string work, tested natively.

use shared::{ClientId, RoomName};

/// The localStorage key of this browser's client id, shared by every room.
pub const CLIENT_ID_KEY: &str = "heartsync.client_id";

/// How long a generated client id is.
pub const CLIENT_ID_LEN: usize = 16;

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The room a path opens: `/r/{room}` opens `{room}`, anything else `main`.
/// An invalid name is an error, so the page can say so rather than open a
/// different room silently.
pub fn room_from_path(path: &str) -> Result<RoomName, String> {
    match path.strip_prefix("/r/") {
        Some(rest) => RoomName::parse(rest.trim_end_matches('/')).map_err(|e| e.to_string()),
        None => Ok(RoomName::main()),
    }
}

/// The WebSocket URL for `room`, on the page's own host, `wss:` when the page
/// came over `https:`.
pub fn socket_url(page_protocol: &str, host: &str, room: &RoomName, client: &ClientId) -> String {
    let scheme = if page_protocol == "https:" { "wss" } else { "ws" };
    format!("{scheme}://{host}/ws/{room}?client_id={client}")
}

/// A new client id of [`CLIENT_ID_LEN`] characters of `[A-Za-z0-9]`, drawn
/// with `random` (numbers in `[0, 1)`).
pub fn new_client_id(random: &mut impl FnMut() -> f64) -> ClientId {
    let id: String = (0..CLIENT_ID_LEN)
        .map(|_| {
            let i = (random().clamp(0.0, 1.0) * ID_ALPHABET.len() as f64) as usize;
            char::from(ID_ALPHABET[i.min(ID_ALPHABET.len() - 1)])
        })
        .collect();
    // Sixteen alphanumerics always make a valid id; the fallback is there
    // only so that no panic path exists.
    ClientId::parse(&id).unwrap_or_else(|_| fallback_client_id())
}

fn fallback_client_id() -> ClientId {
    match ClientId::parse("heartsync0000000") {
        Ok(id) => id,
        Err(e) => unreachable!("the constant client id is valid: {e}"),
    }
}

/// The client id stored in localStorage, if it is a valid one.
pub fn stored_client_id(stored: Option<&str>) -> Option<ClientId> {
    stored.and_then(|s| ClientId::parse(s).ok())
}

/// The localStorage key of the cumulative tap count in `room`.
pub fn love_taps_key(room: &RoomName) -> String {
    format!("heartsync.love.{room}")
}

/// The localStorage key of the highest acknowledged tap count in `room`.
pub fn love_acked_key(room: &RoomName) -> String {
    format!("heartsync.love.{room}.acked")
}

/// A stored count, or 0 when missing or garbled.
pub fn parse_count(stored: Option<&str>) -> u64 {
    stored.and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_come_from_the_path() {
        let room = |p: &str| room_from_path(p).map(|r| r.as_str().to_owned());
        assert_eq!(room("/").as_deref(), Ok("main"));
        assert_eq!(room("/index.html").as_deref(), Ok("main"));
        assert_eq!(room("/r/kitchen").as_deref(), Ok("kitchen"));
        assert_eq!(room("/r/kitchen/").as_deref(), Ok("kitchen"));
        assert_eq!(room("/r/a-b_9").as_deref(), Ok("a-b_9"));
        assert!(room("/r/").is_err());
        assert!(room("/r/two%20words").is_err());
        assert!(room("/r/a/b").is_err());
    }

    #[test]
    fn socket_url_matches_the_page() {
        let room = RoomName::parse("kitchen").unwrap();
        let id = ClientId::parse("abcdefgh12345678").unwrap();
        assert_eq!(
            socket_url("http:", "localhost:8080", &room, &id),
            "ws://localhost:8080/ws/kitchen?client_id=abcdefgh12345678"
        );
        assert_eq!(
            socket_url("https:", "example.org", &room, &id),
            "wss://example.org/ws/kitchen?client_id=abcdefgh12345678"
        );
    }

    #[test]
    fn client_ids_are_sixteen_alphanumerics() {
        let mut n = 0.0;
        let mut random = || {
            n = (n + 0.377) % 1.0;
            n
        };
        let id = new_client_id(&mut random);
        assert_eq!(id.as_str().len(), 16);
        assert!(id.as_str().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(new_client_id(&mut || 0.999_999_999).as_str(), "9".repeat(16));
        assert_eq!(new_client_id(&mut || 0.0).as_str(), "A".repeat(16));
    }

    #[test]
    fn stored_values_are_checked() {
        assert!(stored_client_id(Some("abcdefgh12345678")).is_some());
        assert!(stored_client_id(Some("bad id")).is_none());
        assert!(stored_client_id(None).is_none());
        assert_eq!(parse_count(Some("12")), 12);
        assert_eq!(parse_count(Some("-3")), 0);
        assert_eq!(parse_count(None), 0);
        let room = RoomName::main();
        assert_eq!(love_taps_key(&room), "heartsync.love.main");
        assert_eq!(love_acked_key(&room), "heartsync.love.main.acked");
    }
}
