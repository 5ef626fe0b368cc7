//! Protocol v1: JSON text frames, each an object with a `"type"`.
//!
//! Times are milliseconds since the Unix epoch on the server's clock, as
//! `f64`. Parsing ([`ClientMessage::parse`]) and validation are pure and
//! return a [`ProtocolError`] whose [`ErrorCode`] is what the server sends
//! back, so the socket loop is a thin shell around this module.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version announced in [`Welcome::protocol`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The slowest and fastest heart rates a client may report, in beats per minute.
pub const BPM_RANGE: std::ops::RangeInclusive<f64> = 30.0..=200.0;

/// How far a report's `at` may be from the server's clock, in milliseconds.
pub const MAX_CLOCK_SKEW_MS: f64 = 10_000.0;

/// The most love one `love` message may add.
pub const MAX_LOVE_STEP: u64 = 50;

/// The highest love count (`seq`) or epoch a client may send: 2^53 − 1, the
/// largest integer a JavaScript number (and Redis's Lua) holds exactly. An
/// epoch (a time on the server's clock) may also be at most
/// [`MAX_CLOCK_SKEW_MS`] ahead of the server's clock.
pub const MAX_LOVE_SEQ: u64 = (1 << 53) - 1;

/// A message from a page (or any client) to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The client's heart was at `phase` at server time `at`.
    Phase(PhaseReport),
    /// A clock-sync request; the server answers at once with [`TimeReply`].
    Time {
        /// The client's own clock when it sent this, echoed back.
        t0: f64,
    },
    /// Love taps: `seq` is this client's cumulative tap count in the room,
    /// within its ledger `epoch`.
    Love {
        /// Cumulative count of taps, 1, 2, 3, … (several taps may share one).
        seq: u64,
        /// The ledger the count belongs to: the server's clock (ms) when it
        /// started, as the client proposed it from its synced clock for a
        /// new ledger, or as a [`LoveAck`] named it. 0 (or absent, as
        /// protocol v1 clients send it) for "my ledger, whichever it is, or
        /// a new one". A client told [`LoveFolded`] starts a new ledger with
        /// a count of its own.
        #[serde(default, skip_serializing_if = "is_zero")]
        epoch: u64,
    },
}

/// Where one heart was, and how fast it beats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// The fraction of its beat the heart was at, in `[0, 1)`.
    pub phase: f64,
    /// Beats per minute, in [`BPM_RANGE`].
    pub bpm: f64,
    /// When, on the server's clock (ms since the Unix epoch).
    pub at: f64,
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The first message on every connection.
    Welcome(Welcome),
    /// The room's shared beat, sent to everyone in the room every tick.
    Consensus(Consensus),
    /// The answer to a clock-sync request.
    Time(TimeReply),
    /// A message the server could not accept; the connection stays open.
    Error(ProtocolError),
    /// Love taps made durable.
    LoveAck(LoveAck),
    /// The ledger a `love` named was folded into the room's total after the
    /// client stayed away longer than the server keeps ledgers; nothing was
    /// counted.
    LoveFolded(LoveFolded),
}

/// Sent once, first, on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// Always [`PROTOCOL_VERSION`] for this crate.
    pub protocol: u32,
    /// The client's identity: the one it asked for, or one the server made.
    pub client_id: ClientId,
    /// The room this connection is in.
    pub room: RoomName,
    /// The server's clock when it sent this.
    pub server_time: f64,
    /// How often the room broadcasts its consensus, in milliseconds.
    pub tick_ms: u64,
    /// How often the client should report its phase, in milliseconds.
    pub report_ms: u64,
}

/// A room's shared beat at the instant `at`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Consensus {
    /// Rises by one every tick of this room.
    pub seq: u64,
    /// The instant the consensus describes (server clock, ms).
    pub at: f64,
    /// ψ: the circular mean of the voters' phases projected to `at`.
    pub phase: f64,
    /// The voters' mean beats per minute.
    pub bpm: f64,
    /// R in `[0, 1]`: how in step the voters are.
    pub coherence: f64,
    /// Open connections in the room.
    pub hearts: u32,
    /// Connections whose last report is recent enough to count.
    pub voters: u32,
    /// The room's love total.
    pub love: u64,
}

/// The answer to [`ClientMessage::Time`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeReply {
    /// The client's `t0`, echoed.
    pub t0: f64,
    /// The server's clock when it answered.
    pub server_time: f64,
}

/// The answer to [`ClientMessage::Love`], sent once the taps are durable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoveAck {
    /// The client's `seq`, echoed.
    pub seq: u64,
    /// The room's love total after these taps.
    pub total: u64,
    /// The ledger that counted them: the client sends it with its later
    /// counts. 0 when the server keeps no ledger for the client (it sent
    /// `seq` 0, or the server predates epochs).
    #[serde(default)]
    pub epoch: u64,
}

/// The answer to a [`ClientMessage::Love`] whose ledger `epoch` the server
/// no longer keeps: every tap it acknowledged in that ledger is in the
/// room's total, and nothing of this message was counted. The client starts
/// a new ledger (epoch 0) whose count is only the taps it never sent, so no
/// tap is counted twice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoveFolded {
    /// The folded ledger, as the client named it.
    pub epoch: u64,
    /// The `seq` the client sent, echoed.
    pub seq: u64,
    /// The room's love total.
    pub total: u64,
}

/// Whether `n` is zero (serde's `skip_serializing_if` wants a function).
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What was wrong with a message, as sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, or nested too deeply.
    BadJson,
    /// A `type` this server does not know.
    UnknownType,
    /// A field missing, unknown, or of the wrong JSON type.
    BadField,
    /// A phase outside `[0, 1)`.
    BadPhase,
    /// A bpm outside 30-200.
    BadBpm,
    /// A time too far from the server's clock.
    BadTime,
    /// A love count that jumps too far, or is above [`MAX_LOVE_SEQ`].
    BadLove,
    /// A binary frame: protocol v1 is text only.
    BinaryFrame,
    /// Too many messages: this one was dropped.
    RateLimited,
    /// The server could not do what was asked (for example, storage failed).
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadField => "bad_field",
            ErrorCode::BadPhase => "bad_phase",
            ErrorCode::BadBpm => "bad_bpm",
            ErrorCode::BadTime => "bad_time",
            ErrorCode::BadLove => "bad_love",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message the server refused, and why; it is also the wire `error` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    /// What kind of mistake it was.
    pub code: ErrorCode,
    /// A sentence for the person reading the logs or the console.
    pub message: String,
}

impl ProtocolError {
    /// An error with `code` and a human-readable `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl ClientMessage {
    /// Parses and validates one text frame from a client. `server_now_ms` is
    /// the server's clock, against which report times are checked.
    pub fn parse(text: &str, server_now_ms: f64) -> Result<Self, ProtocolError> {
        // The common case, a well-formed message, in one pass; only a
        // message that fails is parsed again to say exactly what is wrong.
        // serde's internally tagged enums also accept a sequence whose first
        // element is the tag (`["time", 2]`, found by the fuzzer): the
        // protocol's messages are objects, so anything else is diagnosed.
        let object = text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{');
        if let Some(message) =
            object.then(|| serde_json::from_str::<ClientMessage>(text).ok()).flatten()
        {
            message.validate(server_now_ms)?;
            return Ok(message);
        }
        Err(Self::diagnose(text))
    }

    /// Why `text` is not a well-formed message (it is known not to be).
    fn diagnose(text: &str) -> ProtocolError {
        match Self::parse_slowly(text) {
            Err(error) => error,
            // serde accepted the tree but not the text: only possible for
            // oddities like duplicate fields.
            Ok(_) => {
                ProtocolError::new(ErrorCode::BadField, "a field appears twice or is malformed")
            }
        }
    }

    fn parse_slowly(text: &str) -> Result<Self, ProtocolError> {
        // Parse to a tree first so that malformed JSON, an unknown type and a
        // bad field get different codes. serde_json refuses nesting deeper
        // than 128 levels, so a deeply nested message is a `bad_json` too.
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ProtocolError::new(ErrorCode::BadJson, format!("not valid JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(ProtocolError::new(ErrorCode::BadJson, "a message must be a JSON object"));
        };
        match object.get("type").and_then(|t| t.as_str()) {
            Some("phase" | "time" | "love") => {}
            Some(other) => {
                let shown: String = other.chars().take(32).collect();
                return Err(ProtocolError::new(
                    ErrorCode::UnknownType,
                    format!("unknown message type {shown:?}; expected phase, time or love"),
                ));
            }
            None => {
                return Err(ProtocolError::new(
                    ErrorCode::BadField,
                    "a message needs a string field \"type\"",
                ));
            }
        }
        serde_json::from_value(value)
            .map_err(|e| ProtocolError::new(ErrorCode::BadField, e.to_string()))
    }

    fn validate(&self, server_now_ms: f64) -> Result<(), ProtocolError> {
        match self {
            ClientMessage::Phase(report) => report.validate(server_now_ms),
            ClientMessage::Time { t0 } if !t0.is_finite() => {
                Err(ProtocolError::new(ErrorCode::BadField, "t0 must be a finite number"))
            }
            ClientMessage::Love { epoch, .. }
                if *epoch as f64 > server_now_ms + MAX_CLOCK_SKEW_MS =>
            {
                Err(ProtocolError::new(
                    ErrorCode::BadLove,
                    format!(
                        "a love epoch is a time on the server's clock, at most 10 s ahead of it; \
                         got {epoch}"
                    ),
                ))
            }
            ClientMessage::Love { seq, epoch } if (*seq).max(*epoch) > MAX_LOVE_SEQ => {
                Err(ProtocolError::new(
                    ErrorCode::BadLove,
                    format!(
                        "a love seq and epoch must be at most 2^53 - 1 ({MAX_LOVE_SEQ}), got seq \
                         {seq} and epoch {epoch}"
                    ),
                ))
            }
            ClientMessage::Time { .. } | ClientMessage::Love { .. } => Ok(()),
        }
    }

    /// The message as a JSON text frame.
    pub fn to_json(&self) -> String {
        encode(self)
    }
}

impl PhaseReport {
    /// Checks the ranges protocol v1 allows.
    pub fn validate(&self, server_now_ms: f64) -> Result<(), ProtocolError> {
        if !(self.phase.is_finite() && (0.0..1.0).contains(&self.phase)) {
            return Err(ProtocolError::new(
                ErrorCode::BadPhase,
                format!("phase must be in [0, 1), got {}", self.phase),
            ));
        }
        if !(self.bpm.is_finite() && BPM_RANGE.contains(&self.bpm)) {
            return Err(ProtocolError::new(
                ErrorCode::BadBpm,
                format!("bpm must be between 30 and 200, got {}", self.bpm),
            ));
        }
        if !(self.at.is_finite() && (self.at - server_now_ms).abs() <= MAX_CLOCK_SKEW_MS) {
            return Err(ProtocolError::new(
                ErrorCode::BadTime,
                format!(
                    "at must be within 10 s of the server's clock ({server_now_ms:.0}), got {}",
                    self.at
                ),
            ));
        }
        Ok(())
    }
}

impl ServerMessage {
    /// The message as a JSON text frame.
    pub fn to_json(&self) -> String {
        encode(self)
    }

    /// Parses a frame from the server (used by clients; the server's own
    /// frames always parse).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

fn encode(message: &impl Serialize) -> String {
    // Serializing these types cannot fail: every field is a plain number or
    // string, and every map key is a string. Protocol numbers are finite by
    // construction; a non-finite one would be written as `null`.
    serde_json::to_string(message).unwrap_or_else(|_| String::from("{}"))
}

/// A valid room name: 1-64 of `[A-Za-z0-9_-]`. On the wire it is a plain
/// JSON string; deserializing checks the rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct RoomName(String);

/// A valid client id: 8-64 of `[A-Za-z0-9_-]`. On the wire it is a plain
/// JSON string; deserializing checks the rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct ClientId(String);

/// Which kind of name a [`NameError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A room name (`/ws/{room}`, `/r/{room}`).
    Room,
    /// A client id (`?client_id=`).
    Client,
}

impl NameKind {
    /// The fewest characters a name of this kind has.
    fn min_len(self) -> usize {
        match self {
            NameKind::Room => 1,
            NameKind::Client => 8,
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Room => "a room name",
            NameKind::Client => "a client_id",
        })
    }
}

/// A room name or client id that breaks the rules; the message says the
/// rules and shows (the start of) what was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} must be {min} to 64 characters of A-Z, a-z, 0-9, '_' and '-', got {shown:?}",
    min = kind.min_len()
)]
pub struct NameError {
    /// What was being named.
    pub kind: NameKind,
    /// The first 70 characters of what was given: enough to recognise it,
    /// and a hostile URL cannot make the message long.
    pub shown: String,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn check_name(kind: NameKind, s: &str) -> Result<(), NameError> {
    if s.len() < kind.min_len() || s.len() > 64 || !s.chars().all(is_name_char) {
        return Err(NameError { kind, shown: s.chars().take(70).collect() });
    }
    Ok(())
}

impl RoomName {
    /// The room a bare `/ws` or `/` opens.
    pub fn main() -> Self {
        RoomName(String::from("main"))
    }

    /// Checks `s` against the room-name rules.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_name(NameKind::Room, s).map(|()| RoomName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ClientId {
    /// Checks `s` against the client-id rules.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_name(NameKind::Client, s).map(|()| ClientId(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The impls both names share: plain-string serialization, checked
/// conversion from a `String` (what serde's `try_from` uses), display, and
/// comparison with text.
macro_rules! name_impls {
    ($name:ident, $kind:expr) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                check_name($kind, &s).map(|()| $name(s))
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_impls!(RoomName, NameKind::Room);
name_impls!(ClientId, NameKind::Client);

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_700_000_000_000.0;

    fn round_trip_server(message: ServerMessage) {
        let json = message.to_json();
        assert_eq!(ServerMessage::parse(&json).unwrap(), message, "{json}");
    }

    #[test]
    fn server_messages_round_trip() {
        round_trip_server(ServerMessage::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            client_id: ClientId::parse("abcdefgh").unwrap(),
            room: RoomName::main(),
            server_time: NOW,
            tick_ms: 250,
            report_ms: 1000,
        }));
        round_trip_server(ServerMessage::Consensus(Consensus {
            seq: 7,
            at: NOW,
            phase: 0.25,
            bpm: 72.0,
            coherence: 0.5,
            hearts: 3,
            voters: 2,
            love: 9,
        }));
        round_trip_server(ServerMessage::Time(TimeReply { t0: 12.5, server_time: NOW }));
        round_trip_server(ServerMessage::Error(ProtocolError::new(ErrorCode::BadBpm, "x")));
        round_trip_server(ServerMessage::LoveAck(LoveAck { seq: 3, total: 40, epoch: 7 }));
        round_trip_server(ServerMessage::LoveFolded(LoveFolded { epoch: 7, seq: 3, total: 40 }));
    }

    #[test]
    fn client_messages_round_trip() {
        for message in [
            ClientMessage::Phase(PhaseReport { phase: 0.5, bpm: 72.0, at: NOW }),
            ClientMessage::Time { t0: 3.25 },
            ClientMessage::Love { seq: 4, epoch: 0 },
            ClientMessage::Love { seq: 4, epoch: 1_700_000_000_000 },
        ] {
            assert_eq!(ClientMessage::parse(&message.to_json(), NOW).unwrap(), message);
        }
    }

    #[test]
    fn wire_shape_is_flat_with_a_type() {
        let json = ServerMessage::Time(TimeReply { t0: 1.0, server_time: 2.0 }).to_json();
        assert_eq!(json, r#"{"type":"time","t0":1.0,"server_time":2.0}"#);
        let json = ServerMessage::Error(ProtocolError::new(ErrorCode::BadJson, "m")).to_json();
        assert_eq!(json, r#"{"type":"error","code":"bad_json","message":"m"}"#);
    }

    #[test]
    fn love_without_an_epoch_is_protocol_v1_and_means_epoch_zero() {
        // A v1 client sends no epoch; it reads as 0, and epoch 0 goes out
        // as v1 wrote it.
        let v1 = r#"{"type":"love","seq":7}"#;
        assert_eq!(ClientMessage::parse(v1, NOW), Ok(ClientMessage::Love { seq: 7, epoch: 0 }));
        assert_eq!(ClientMessage::Love { seq: 7, epoch: 0 }.to_json(), v1);
        assert_eq!(
            ClientMessage::Love { seq: 7, epoch: 9 }.to_json(),
            r#"{"type":"love","seq":7,"epoch":9}"#
        );
        // An ack from a server that predates epochs has none: epoch 0.
        let old_ack = r#"{"type":"love_ack","seq":7,"total":118}"#;
        assert_eq!(
            ServerMessage::parse(old_ack).unwrap(),
            ServerMessage::LoveAck(LoveAck { seq: 7, total: 118, epoch: 0 })
        );
        check(r#"{"type":"love","seq":1,"epoch":-1}"#, ErrorCode::BadField);
        check(r#"{"type":"love","seq":9007199254740992}"#, ErrorCode::BadLove);
        check(r#"{"type":"love","seq":1,"epoch":9007199254740992}"#, ErrorCode::BadLove);
        let ahead = |ms: f64| format!(r#"{{"type":"love","seq":1,"epoch":{}}}"#, (NOW + ms) as u64);
        check(&ahead(MAX_CLOCK_SKEW_MS + 1.0), ErrorCode::BadLove);
        assert!(ClientMessage::parse(&ahead(MAX_CLOCK_SKEW_MS), NOW).is_ok());
        assert!(ClientMessage::parse(r#"{"type":"love","seq":9007199254740991}"#, NOW).is_ok());
    }

    fn check(text: &str, expected: ErrorCode) {
        match ClientMessage::parse(text, NOW) {
            Err(e) => assert_eq!(e.code, expected, "{text}: {e}"),
            Ok(m) => panic!("{text} was accepted as {m:?}"),
        }
    }

    #[test]
    fn a_message_in_array_form_is_refused_as_bad_json() {
        // serde reads `["time", 2]` as `{"type":"time","t0":2}`; the
        // protocol has objects only (fuzz/regressions/client_message/).
        check(r#"["time", 2]"#, ErrorCode::BadJson);
        check(" \t\n[\"love\", 3]", ErrorCode::BadJson);
        check(r#"["phase", 0.5, 72, 1700000000000]"#, ErrorCode::BadJson);
        assert!(ClientMessage::parse(" \n{\"type\":\"time\",\"t0\":2}", NOW).is_ok());
    }

    #[test]
    fn bad_messages_get_the_right_code() {
        check("not json", ErrorCode::BadJson);
        check("[1,2]", ErrorCode::BadJson);
        check(&format!("{}{}", "[".repeat(200), "]".repeat(200)), ErrorCode::BadJson);
        check(r#"{"type":"dance"}"#, ErrorCode::UnknownType);
        check(r#"{"phase":0.5}"#, ErrorCode::BadField);
        check(r#"{"type":5}"#, ErrorCode::BadField);
        check(r#"{"type":"phase","phase":"half","bpm":72,"at":1}"#, ErrorCode::BadField);
        check(r#"{"type":"phase","bpm":72,"at":1}"#, ErrorCode::BadField);
        check(r#"{"type":"time","t0":1,"extra":2}"#, ErrorCode::BadField);
        check(r#"{"type":"love","seq":-1}"#, ErrorCode::BadField);
        check(r#"{"type":"phase","phase":1e400,"bpm":72,"at":1}"#, ErrorCode::BadJson);
        let phase = |p: f64, bpm: f64, at: f64| {
            format!(r#"{{"type":"phase","phase":{p:?},"bpm":{bpm:?},"at":{at:?}}}"#)
        };
        check(&phase(1.0, 72.0, NOW), ErrorCode::BadPhase);
        check(&phase(-0.1, 72.0, NOW), ErrorCode::BadPhase);
        check(&phase(0.5, 29.9, NOW), ErrorCode::BadBpm);
        check(&phase(0.5, 200.5, NOW), ErrorCode::BadBpm);
        check(&phase(0.5, 72.0, NOW + 10_001.0), ErrorCode::BadTime);
        check(&phase(0.5, 72.0, NOW - 10_001.0), ErrorCode::BadTime);
        assert!(ClientMessage::parse(&phase(0.0, 30.0, NOW - 9_999.0), NOW).is_ok());
    }

    #[test]
    fn names_are_plain_strings_on_the_wire() {
        let welcome = ServerMessage::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            client_id: ClientId::parse("abcdefgh").unwrap(),
            room: RoomName::parse("kitchen").unwrap(),
            server_time: 2.0,
            tick_ms: 250,
            report_ms: 1000,
        });
        assert_eq!(
            welcome.to_json(),
            r#"{"type":"welcome","protocol":1,"client_id":"abcdefgh","room":"kitchen","server_time":2.0,"tick_ms":250,"report_ms":1000}"#
        );
    }

    #[test]
    fn a_welcome_with_a_bad_name_does_not_parse() {
        let bad_room = r#"{"type":"welcome","protocol":1,"client_id":"abcdefgh","room":"a b","server_time":2.0,"tick_ms":250,"report_ms":1000}"#;
        let error = ServerMessage::parse(bad_room).unwrap_err().to_string();
        assert!(error.contains("a room name must be 1 to 64"), "{error}");
        let bad_id = r#"{"type":"welcome","protocol":1,"client_id":"short","room":"main","server_time":2.0,"tick_ms":250,"report_ms":1000}"#;
        let error = ServerMessage::parse(bad_id).unwrap_err().to_string();
        assert!(error.contains("a client_id must be 8 to 64"), "{error}");
    }

    #[test]
    fn name_errors_say_the_rules_and_what_was_given() {
        let error = RoomName::parse("with space").unwrap_err();
        assert_eq!(error.kind, NameKind::Room);
        assert_eq!(
            error.to_string(),
            "a room name must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-', got \"with space\""
        );
        let error = ClientId::parse(&"ü".repeat(100)).unwrap_err();
        assert_eq!(error.kind, NameKind::Client);
        assert_eq!(error.shown.chars().count(), 70);
    }

    #[test]
    fn names_compare_with_text() {
        assert_eq!(RoomName::main(), "main");
        assert!(ClientId::parse("abcdefgh").unwrap() == *"abcdefgh");
    }

    #[test]
    fn names_are_checked() {
        assert!(RoomName::parse("main").is_ok());
        assert!(RoomName::parse("a-b_C9").is_ok());
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse("with space").is_err());
        assert!(RoomName::parse("ü").is_err());
        assert!(RoomName::parse(&"x".repeat(65)).is_err());
        assert!(RoomName::parse(&"x".repeat(64)).is_ok());
        assert!(ClientId::parse("short").is_err());
        assert!(ClientId::parse("abcdefgh").is_ok());
        assert!(ClientId::parse("abcdefg/").is_err());
    }
}
