//! The names a client derives: the room a page's path opens, the socket URL
//! of a room, and a new client id. Pure string work; the rules for what a
//! valid room name or client id is live in [`crate::protocol`].

use crate::{ClientId, RoomName};

/// How long a generated client id is (the server makes ids this long too).
pub const CLIENT_ID_LEN: usize = 16;

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The room a page path opens: `/r/{room}` opens `{room}`, anything else
/// `main`. An invalid name is an error, so the page can say so rather than
/// open a different room silently.
pub fn room_from_path(path: &str) -> Result<RoomName, String> {
    match path.strip_prefix("/r/") {
        Some(rest) => RoomName::parse(rest.trim_end_matches('/')).map_err(|e| e.to_string()),
        None => Ok(RoomName::main()),
    }
}

/// The base of the socket URLs of a page that came over `page_protocol`
/// (`http:` or `https:`) from `host`: `wss:` for `https:`, `ws:` otherwise.
pub fn page_server(page_protocol: &str, host: &str) -> String {
    let scheme = if page_protocol == "https:" { "wss" } else { "ws" };
    format!("{scheme}://{host}")
}

/// The socket URL of `room` on the server at `server` (`ws://host:port`,
/// no trailing slash), joining as `client`.
pub fn socket_url(server: &str, room: &RoomName, client: &ClientId) -> String {
    format!("{server}/ws/{room}?client_id={client}")
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

/// A stored client id, if it is a valid one.
pub fn stored_client_id(stored: Option<&str>) -> Option<ClientId> {
    stored.and_then(|s| ClientId::parse(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn socket_url_names_room_and_client() {
        let room = RoomName::parse("kitchen").unwrap();
        let id = ClientId::parse("abcdefgh12345678").unwrap();
        assert_eq!(
            socket_url(&page_server("http:", "localhost:8080"), &room, &id),
            "ws://localhost:8080/ws/kitchen?client_id=abcdefgh12345678"
        );
        assert_eq!(
            socket_url(&page_server("https:", "example.org"), &room, &id),
            "wss://example.org/ws/kitchen?client_id=abcdefgh12345678"
        );
        let short = ClientId::parse("abcdefgh").unwrap();
        let lobby = RoomName::parse("lobby").unwrap();
        assert_eq!(socket_url("ws://h:1", &lobby, &short), "ws://h:1/ws/lobby?client_id=abcdefgh");
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
    fn stored_ids_are_checked() {
        assert!(stored_client_id(Some("abcdefgh12345678")).is_some());
        assert!(stored_client_id(Some("bad id")).is_none());
        assert!(stored_client_id(None).is_none());
    }

    proptest! {
        #[test]
        fn any_random_source_makes_a_valid_id(draws in proptest::collection::vec(-2.0f64..2.0, 16)) {
            let mut draws = draws.into_iter();
            let id = new_client_id(&mut || draws.next().unwrap_or(f64::NAN));
            prop_assert_eq!(id.as_str().len(), CLIENT_ID_LEN);
            prop_assert!(ClientId::parse(id.as_str()).is_ok());
        }
    }
}
