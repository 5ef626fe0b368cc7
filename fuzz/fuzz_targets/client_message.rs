//! The client message parser and validator: any text gets `Ok` or an error
//! whose code matches what is wrong with it (decided here independently,
//! from the JSON tree), and a well-typed message is accepted exactly when
//! its numbers are in the protocol's ranges. Accepted messages re-encode to
//! text that is accepted again as the same message.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use shared::protocol::{BPM_RANGE, MAX_CLOCK_SKEW_MS, MAX_LOVE_SEQ};
use shared::{ClientMessage, ErrorCode};

/// The server's clock during the run.
const NOW: f64 = 1_700_000_000_000.0;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any text at all, as a hostile client may send.
    Text(String),
    /// A well-typed phase report, its time `skew` ms from the server's.
    Phase { phase: f64, bpm: f64, skew: f64 },
    /// A well-typed clock-sync request.
    Time { t0: f64 },
    /// A well-typed love message (epoch 0 is sent as v1 sends it: absent).
    Love { seq: u64, epoch: u64 },
}

/// What the code of an error must be, from the JSON tree alone; `None` when
/// the type is known and only the fields can be wrong.
fn expected_shape_error(text: &str) -> Option<ErrorCode> {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Some(ErrorCode::BadJson);
    };
    let Some(object) = value.as_object() else {
        return Some(ErrorCode::BadJson);
    };
    match object.get("type").and_then(Value::as_str) {
        None => Some(ErrorCode::BadField),
        Some("phase" | "time" | "love") => None,
        Some(_) => Some(ErrorCode::UnknownType),
    }
}

/// Whether a phase report with these numbers (as the server reads them)
/// is in range, and if not, the code of the first rule it breaks.
fn phase_verdict(phase: f64, bpm: f64, at: f64) -> Result<(), ErrorCode> {
    if !(phase.is_finite() && (0.0..1.0).contains(&phase)) {
        return Err(ErrorCode::BadPhase);
    }
    if !(bpm.is_finite() && BPM_RANGE.contains(&bpm)) {
        return Err(ErrorCode::BadBpm);
    }
    if !(at.is_finite() && (at - NOW).abs() <= MAX_CLOCK_SKEW_MS) {
        return Err(ErrorCode::BadTime);
    }
    Ok(())
}

/// Whether two numbers are equal but for the last places: serde_json
/// (without its `float_roundtrip` feature) may read a number it wrote a few
/// units in the last place off (found by this target: `-9.625215155602355e-234`
/// reads back as `…357e-234`).
fn within_an_ulp(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= a.abs().max(b.abs()) * 1e-15
}

/// An accepted message is accepted again, the same (to the last place),
/// from its own JSON.
fn check_round_trip(message: &ClientMessage) {
    let again = ClientMessage::parse(&message.to_json(), NOW);
    let same = match (message, &again) {
        (ClientMessage::Phase(a), Ok(ClientMessage::Phase(b))) => {
            within_an_ulp(a.phase, b.phase)
                && within_an_ulp(a.bpm, b.bpm)
                && within_an_ulp(a.at, b.at)
        }
        (ClientMessage::Time { t0: a }, Ok(ClientMessage::Time { t0: b })) => within_an_ulp(*a, *b),
        (ClientMessage::Love { seq: a, epoch: x }, Ok(ClientMessage::Love { seq: b, epoch: y })) => {
            a == b && x == y
        }
        _ => false,
    };
    assert!(same, "{message:?} re-encodes to an equal message, not {again:?}");
}

fn check_text(text: &str) {
    let parsed = ClientMessage::parse(text, NOW);
    match (&parsed, expected_shape_error(text)) {
        (Ok(message), None) => check_round_trip(message),
        (Ok(message), Some(code)) => panic!("{text:?} was accepted as {message:?}, not {code:?}"),
        (Err(error), Some(code)) => assert_eq!(error.code, code, "{text:?}: {error}"),
        (Err(error), None) => assert!(
            matches!(
                error.code,
                ErrorCode::BadField
                    | ErrorCode::BadPhase
                    | ErrorCode::BadBpm
                    | ErrorCode::BadTime
                    | ErrorCode::BadLove
            ),
            "{text:?}: a known type can only have bad fields, got {error}"
        ),
    }
    if let Ok(ClientMessage::Phase(report)) = &parsed {
        assert_eq!(phase_verdict(report.phase, report.bpm, report.at), Ok(()));
    }
    if let Ok(ClientMessage::Time { t0 }) = &parsed {
        assert!(t0.is_finite());
    }
}

/// A number as the server reads it from JSON (non-finite ones become null).
fn as_read(value: &Value) -> Option<f64> {
    value.as_f64()
}

fuzz_target!(|input: Input| {
    match input {
        Input::Text(text) => check_text(&text),
        Input::Phase { phase, bpm, skew } => {
            let text =
                json!({"type": "phase", "phase": phase, "bpm": bpm, "at": NOW + skew}).to_string();
            check_text(&text);
            let tree: Value = serde_json::from_str(&text).expect("our own JSON parses");
            let numbers = (as_read(&tree["phase"]), as_read(&tree["bpm"]), as_read(&tree["at"]));
            let parsed = ClientMessage::parse(&text, NOW).map_err(|e| e.code);
            match numbers {
                (Some(phase), Some(bpm), Some(at)) => {
                    assert_eq!(parsed.map(|_| ()), phase_verdict(phase, bpm, at), "{text}");
                }
                // A non-finite number is written as null: not a number.
                _ => assert_eq!(parsed, Err(ErrorCode::BadField), "{text}"),
            }
        }
        Input::Time { t0 } => {
            let text = json!({"type": "time", "t0": t0}).to_string();
            check_text(&text);
            let parsed = ClientMessage::parse(&text, NOW).map_err(|e| e.code);
            if t0.is_finite() {
                assert!(matches!(parsed, Ok(ClientMessage::Time { .. })), "{text}: {parsed:?}");
            } else {
                assert_eq!(parsed, Err(ErrorCode::BadField), "{text}");
            }
        }
        Input::Love { seq, epoch } => {
            let text = if epoch == 0 {
                json!({"type": "love", "seq": seq}).to_string()
            } else {
                json!({"type": "love", "seq": seq, "epoch": epoch}).to_string()
            };
            check_text(&text);
            let parsed = ClientMessage::parse(&text, NOW).map_err(|e| e.code);
            // A count or epoch past 2^53 - 1, or an epoch (a time on the
            // server's clock) more than the skew ahead of it, is bad love.
            let epoch_ahead = epoch as f64 > NOW + MAX_CLOCK_SKEW_MS;
            if seq > MAX_LOVE_SEQ || epoch > MAX_LOVE_SEQ || epoch_ahead {
                assert_eq!(parsed, Err(ErrorCode::BadLove), "{text}");
            } else {
                assert_eq!(parsed, Ok(ClientMessage::Love { seq, epoch }), "{text}");
            }
        }
    }
});
