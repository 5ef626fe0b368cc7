//! `GET /api/rooms` and `GET /api/rooms/{room}`: what the rooms are doing
//! now, read from the registry (each room's newest consensus, no waiting on
//! any room).

use super::{ApiError, Refused};
use crate::AppState;
use crate::auth::{self, ErrorBody};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use shared::{Consensus, RoomName};
use std::cmp::Reverse;
use utoipa::{IntoParams, ToSchema};

/// The page size when `?limit=` is absent.
pub const DEFAULT_LIMIT: usize = 50;

/// The largest page.
pub const MAX_LIMIT: usize = 500;

/// The rule every room name follows (`shared::RoomName`), for the document.
pub const ROOM_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// One room in the listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoomSummary {
    /// The room's name (`/r/{name}` opens it).
    pub name: String,
    /// Connections in the room.
    pub hearts: u32,
    /// Connections whose last report still counts.
    pub voters: u32,
    /// How in step the voters are, in `[0, 1]`.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub coherence: f64,
    /// The voters' mean beats per minute.
    pub bpm: f64,
    /// The room's love total.
    pub love: u64,
}

/// A page of rooms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoomPage {
    /// Rooms with the most hearts first (ties by name).
    pub rooms: Vec<RoomSummary>,
    /// Pass as `?cursor=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The query of `GET /api/rooms`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Rooms per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Where the page starts: the `next` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}:[A-Za-z0-9_-]{1,64}$")]
    pub cursor: Option<String>,
}

/// Where a page starts: after the room with these hearts and this name in
/// the listing's order. It is the sort key itself (not an offset), so rooms
/// that come and go between pages shift nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    hearts: u64,
    name: String,
}

impl Cursor {
    fn parse(text: &str) -> Option<Self> {
        let (hearts, name) = text.split_once(':')?;
        if hearts.is_empty() || hearts.len() > 18 || !hearts.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let name = RoomName::parse(name).ok()?.as_str().to_owned();
        Some(Self { hearts: hearts.parse().ok()?, name })
    }

    fn of(room: &RoomSummary) -> Self {
        Self { hearts: u64::from(room.hearts), name: room.name.clone() }
    }

    fn key(&self) -> (Reverse<u64>, &str) {
        (Reverse(self.hearts), &self.name)
    }

    fn text(&self) -> String {
        format!("{}:{}", self.hearts, self.name)
    }
}

/// The listing of `rooms` (those with someone in them): the public ones,
/// most hearts first, the page after `cursor`.
pub fn page(
    rooms: impl IntoIterator<Item = (RoomName, Consensus)>,
    limit: usize,
    after: Option<&str>,
) -> Result<RoomPage, ApiError> {
    let after = match after {
        Some(text) => Some(Cursor::parse(text).ok_or_else(|| {
            ApiError::bad_request("a cursor is the `next` of a previous page (`hearts:name`)")
        })?),
        None => None,
    };
    let mut listed: Vec<RoomSummary> = rooms
        .into_iter()
        .filter(|(name, _)| !auth::is_private(name))
        .map(|(name, c)| summary(&name, &c))
        .collect();
    listed.sort_by(|a, b| Cursor::of(a).key().cmp(&Cursor::of(b).key()));
    let start = match &after {
        Some(cursor) => listed.partition_point(|room| Cursor::of(room).key() <= cursor.key()),
        None => 0,
    };
    let rest = &listed[start..];
    let rooms: Vec<RoomSummary> = rest.iter().take(limit).cloned().collect();
    let next = (rest.len() > limit).then(|| rooms.last().map(|r| Cursor::of(r).text())).flatten();
    Ok(RoomPage { rooms, next })
}

fn summary(name: &RoomName, c: &Consensus) -> RoomSummary {
    RoomSummary {
        name: name.to_string(),
        hearts: c.hearts,
        voters: c.voters,
        coherence: c.coherence,
        bpm: c.bpm,
        love: c.love,
    }
}

/// The active public rooms.
#[utoipa::path(
    get,
    path = "/api/rooms",
    tag = "rooms",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of rooms, most hearts first", body = RoomPage),
        (status = 400, description = "A bad limit or cursor", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<RoomPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&(n as usize)) => n as usize,
        Some(_) => return Err(ApiError::bad_request(format!("limit is 1 to {MAX_LIMIT}"))),
    };
    Ok(Json(page(state.rooms.snapshot(), limit, query.cursor.as_deref())?))
}

/// A consensus as protocol v1 sends it (`"type": "consensus"`); the same
/// JSON as the socket's and the SSE stream's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConsensusMessage {
    /// Always `consensus`.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// Rises by one every tick of the room.
    pub seq: u64,
    /// The instant described (server clock, ms since the Unix epoch).
    pub at: f64,
    /// The circular mean of the voters' phases at `at`, in `[0, 1)`.
    pub phase: f64,
    /// The voters' mean beats per minute.
    pub bpm: f64,
    /// How in step the voters are, in `[0, 1]`.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub coherence: f64,
    /// Open connections in the room.
    pub hearts: u32,
    /// Connections whose last report counts.
    pub voters: u32,
    /// The room's love total.
    pub love: u64,
}

/// The one value of [`ConsensusMessage::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// A consensus.
    Consensus,
}

impl From<Consensus> for ConsensusMessage {
    fn from(c: Consensus) -> Self {
        Self {
            kind: MessageType::Consensus,
            seq: c.seq,
            at: c.at,
            phase: c.phase,
            bpm: c.bpm,
            coherence: c.coherence,
            hearts: c.hearts,
            voters: c.voters,
            love: c.love,
        }
    }
}

/// A private room's token, for clients that cannot set headers.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The join token (a private room's; prefer `Authorization: Bearer`).
    pub token: Option<String>,
}

/// One room's current consensus.
#[utoipa::path(
    get,
    path = "/api/rooms/{room}",
    tag = "rooms",
    params(("room" = String, Path, description = "The room's name", pattern = r"^[A-Za-z0-9_-]{1,64}$")),
    security((), ("join_token" = [])),
    responses(
        (status = 200, description = "The room's newest consensus", body = ConsensusMessage),
        (status = 400, description = "Not a room name", body = ErrorBody),
        (status = 401, description = "A private room, and no token", body = ErrorBody),
        (status = 403, description = "A private room, and a bad, expired or other room's token", body = ErrorBody),
        (status = 404, description = "No one is in the room", body = ErrorBody),
    )
)]
pub async fn one(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ConsensusMessage>, Refused> {
    let (room, _) = super::enter(&state, &room, &headers, None)?;
    match state.rooms.current(&room) {
        Some(c) => Ok(Json(c.into())),
        None => Err(ApiError::no_room(&room).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, hearts: u32) -> (RoomName, Consensus) {
        let name = RoomName::parse(name).expect("a room name");
        (name, Consensus { hearts, ..Consensus::default() })
    }

    fn names(page: &RoomPage) -> Vec<&str> {
        page.rooms.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn rooms_are_listed_most_hearts_first_then_by_name() {
        let rooms = vec![room("b", 2), room("a", 2), room("c", 5), room("d", 1)];
        let page = page(rooms, 50, None).expect("a page");
        assert_eq!(names(&page), ["c", "a", "b", "d"]);
        assert_eq!(page.next, None);
    }

    #[test]
    fn pages_follow_one_another_without_gaps_or_repeats() {
        let rooms: Vec<_> = (0..7).map(|i| room(&format!("room{i}"), i % 3)).collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = page(rooms.clone(), 2, cursor.as_deref()).expect("a page");
            seen.extend(page.rooms.iter().map(|r| r.name.clone()));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let all = page(rooms, 500, None).expect("a page");
        let expected: Vec<String> = all.rooms.iter().map(|r| r.name.clone()).collect();
        assert_eq!(seen, expected);
        assert_eq!(seen.len(), 7);
    }

    #[test]
    fn private_rooms_are_never_listed() {
        let rooms = vec![room("private-x", 9), room("kitchen", 1)];
        assert_eq!(names(&page(rooms, 50, None).expect("a page")), ["kitchen"]);
    }

    #[test]
    fn a_cursor_for_a_room_that_left_still_pages_on() {
        let rooms = vec![room("a", 3), room("c", 1)];
        let after_gone = page(rooms, 50, Some("2:b")).expect("a page");
        assert_eq!(names(&after_gone), ["c"]);
    }

    #[test]
    fn malformed_cursors_are_refused() {
        for bad in ["", "x", "1", ":a", "a:b", "1:", "1:bad name", "-1:a"] {
            assert!(page(vec![room("a", 1)], 50, Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_consensus_message_is_protocol_v1s_json() {
        let c = Consensus {
            seq: 4,
            at: 1.5,
            phase: 0.25,
            bpm: 60.0,
            coherence: 0.5,
            hearts: 3,
            voters: 2,
            love: 7,
        };
        let ours = serde_json::to_value(ConsensusMessage::from(c)).expect("json");
        let protocol: serde_json::Value =
            serde_json::from_str(&shared::ServerMessage::Consensus(c).to_json()).expect("json");
        assert_eq!(ours, protocol);
    }
}
