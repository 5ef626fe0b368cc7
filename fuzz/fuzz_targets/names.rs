//! Room names and client ids: whatever text a URL carries, `parse` accepts
//! exactly the names the rules allow (checked here against the rules written
//! out independently), keeps them unchanged, agrees with deserialization,
//! and its error shows a short prefix of the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::protocol::NameError;
use shared::{ClientId, RoomName};

/// The rule, restated: `min..=64` bytes of `[A-Za-z0-9_-]`.
fn allowed(s: &str, min: usize) -> bool {
    (min..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_error(input: &str, error: &NameError) {
    assert!(error.shown.chars().count() <= 70, "the error shows at most 70 characters");
    assert!(input.starts_with(&error.shown), "the error shows a prefix of the input");
    // At most 70 characters, each escaped to at most 10 (`\u{10ffff}`).
    assert!(error.to_string().len() <= 200 + 70 * 10, "the message stays short");
}

fuzz_target!(|input: &str| {
    let json = serde_json::to_string(input).expect("a string serializes");

    let room = RoomName::parse(input);
    assert_eq!(room.is_ok(), allowed(input, 1), "room {input:?}: {room:?}");
    match &room {
        Ok(name) => assert_eq!(name.as_str(), input),
        Err(error) => check_error(input, error),
    }
    let from_json: Result<RoomName, _> = serde_json::from_str(&json);
    assert_eq!(from_json.ok(), room.ok(), "deserializing agrees with parse");

    let client = ClientId::parse(input);
    assert_eq!(client.is_ok(), allowed(input, 8), "client id {input:?}: {client:?}");
    match &client {
        Ok(id) => {
            assert_eq!(id.as_str(), input);
            assert_eq!(serde_json::to_string(id).expect("an id serializes"), json);
        }
        Err(error) => check_error(input, error),
    }
    let from_json: Result<ClientId, _> = serde_json::from_str(&json);
    assert_eq!(from_json.ok(), client.ok(), "deserializing agrees with parse");
});
