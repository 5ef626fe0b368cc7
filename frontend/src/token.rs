//! A private room's join token on the page: it arrives in the share link's
//! fragment (`/r/private-x#token=…`, never sent to a server), is kept in
//! sessionStorage for the tab's life, and is dropped from the address bar.
//! Pure string work, tested natively; `browser` reads and writes.

/// The sessionStorage key of `room`'s token.
pub fn key(room: &shared::RoomName) -> String {
    format!("heartsync.token.{room}")
}

/// The token in a location fragment (`#token=…`, among other `&` pairs).
pub fn from_fragment(hash: &str) -> Option<String> {
    hash.trim_start_matches('#')
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|token| is_token(token))
        .map(str::to_owned)
}

/// Whether `s` looks like a JWT: URL-safe base64 parts joined by dots, so it
/// goes into a URL as it is.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 4096
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `url` (a socket URL that already has a query) with the token added.
pub fn socket_url_with(url: &str, token: Option<&str>) -> String {
    match token {
        Some(token) if is_token(token) => format!("{url}&token={token}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_fragment() {
        assert_eq!(from_fragment("#token=aa.bb.cc").as_deref(), Some("aa.bb.cc"));
        assert_eq!(from_fragment("#x=1&token=aa.b-b_.cc").as_deref(), Some("aa.b-b_.cc"));
        assert_eq!(from_fragment(""), None);
        assert_eq!(from_fragment("#token="), None);
        assert_eq!(from_fragment("#token=<script>"), None);
    }

    #[test]
    fn the_socket_url_carries_the_token() {
        let url = "ws://h/ws/private-x?client_id=abcdefgh";
        assert_eq!(socket_url_with(url, Some("a.b.c")), format!("{url}&token=a.b.c"));
        assert_eq!(socket_url_with(url, None), url);
        assert_eq!(socket_url_with(url, Some("bad token")), url);
    }

    #[test]
    fn each_room_keeps_its_own_token() {
        let room = shared::RoomName::parse("private-x").expect("a room");
        assert_eq!(key(&room), "heartsync.token.private-x");
    }
}
