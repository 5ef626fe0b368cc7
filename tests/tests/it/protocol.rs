//! Bad input gets a clear error and changes nothing else.

use shared::{ClientMessage, ErrorCode, PhaseReport};
use std::time::Duration;
use tests::{TestServer, now_ms};

#[tokio::test(flavor = "multi_thread")]
async fn bad_messages_get_errors_and_the_connection_stays_usable() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(50)).await;
    let (mut client, _, _) = server.join("/ws/errors").await;
    let now = now_ms();
    let cases = [
        ("{not json".to_owned(), ErrorCode::BadJson),
        (format!("{}{}", "[".repeat(500), "]".repeat(500)), ErrorCode::BadJson),
        (r#"{"type":"dance"}"#.to_owned(), ErrorCode::UnknownType),
        (r#"{"type":"phase","phase":"x","bpm":72,"at":1}"#.to_owned(), ErrorCode::BadField),
        (format!(r#"{{"type":"phase","phase":1.5,"bpm":72,"at":{now}}}"#), ErrorCode::BadPhase),
        (format!(r#"{{"type":"phase","phase":0.5,"bpm":500,"at":{now}}}"#), ErrorCode::BadBpm),
        (
            format!(r#"{{"type":"phase","phase":0.5,"bpm":72,"at":{}}}"#, now + 60_000.0),
            ErrorCode::BadTime,
        ),
        (r#"{"type":"phase","phase":1e999,"bpm":72,"at":1}"#.to_owned(), ErrorCode::BadJson),
    ];
    for (text, code) in cases {
        client.send_text(&text).await;
        assert_eq!(client.next_error().await.unwrap(), code, "for {text:.60}");
    }
    // None of it counted as a vote, and the connection still works.
    let c = client.next_consensus().await.unwrap();
    assert_eq!(c.voters, 0);
    client.send(&ClientMessage::Phase(PhaseReport { phase: 0.1, bpm: 72.0, at: now_ms() })).await;
    client.consensus_where(Duration::from_secs(2), |c| c.voters == 1).await.unwrap();
}
