//! What operators see at `/metrics` moves with what happens.

use shared::ClientMessage;
use std::time::Duration;
use tests::metrics::Metrics;
use tests::{Client, Ended, ServerProcess, http};

async fn scrape(server: &ServerProcess) -> Metrics {
    Metrics::scrape(server.addr).await.expect("scrape /metrics")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_with_a_scripted_scenario() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--tick",
        "50ms",
        "--flood-close-after",
        "1s",
    ])
    .await
    .unwrap();
    let before = scrape(&server).await;
    assert_eq!(before.value("heartsync_connections_open", &[]), Some(0.0), "{}", before.text);
    assert_eq!(before.samples_of("heartsync_build_info"), 1, "{}", before.text);
    assert!(before.value("process_resident_memory_bytes", &[]).is_some_and(|rss| rss > 1e6));

    // Connect three; one reports, one taps love, one floods until closed.
    let url = server.ws_url("/ws/observed?client_id=observer1");
    let (mut voter, _, _) = Client::join(&url).await.unwrap();
    let (mut lover, _, _) =
        Client::join(&server.ws_url("/ws/observed?client_id=lover0001")).await.unwrap();
    let (mut flooder, _, _) = Client::join(&server.ws_url("/ws/observed")).await.unwrap();
    voter
        .send(&ClientMessage::Phase(shared::PhaseReport {
            phase: 0.5,
            bpm: 72.0,
            at: tests::now_ms(),
        }))
        .await;
    voter.consensus_where(Duration::from_secs(2), |c| c.voters == 1).await.unwrap();
    voter.send_text("{}").await;
    assert_eq!(voter.next_error().await.unwrap(), shared::ErrorCode::BadField);
    lover.send(&ClientMessage::Love { seq: 3, epoch: 0 }).await;
    loop {
        if let shared::ServerMessage::LoveAck(_) = lover.next().await.unwrap() {
            break;
        }
    }
    let during = scrape(&server).await;
    let value = |name, labels: &[(&str, &str)]| {
        during
            .value(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{}", during.text))
    };
    assert_eq!(value("heartsync_connections_open", &[]), 3.0);
    assert_eq!(value("heartsync_rooms_active", &[]), 1.0);
    assert_eq!(value("heartsync_hearts", &[]), 3.0);
    assert_eq!(value("heartsync_voters", &[]), 1.0);
    assert_eq!(value("heartsync_love_taps_total", &[]), 3.0);
    assert_eq!(value("heartsync_messages_received_total", &[("type", "phase")]), 1.0);
    assert_eq!(value("heartsync_messages_sent_total", &[("type", "welcome")]), 3.0);
    assert!(value("heartsync_messages_sent_total", &[("type", "consensus")]) > 3.0);
    assert_eq!(value("heartsync_love_ack_seconds_count", &[]), 1.0);
    assert!(value("heartsync_broadcast_lag_seconds_count", &[]) > 0.0);
    let ticks = during.histogram("heartsync_tick_duration_seconds").expect("a tick histogram");
    assert!(ticks.last().is_some_and(|(le, count)| le.is_infinite() && *count > 0.0), "{ticks:?}");
    assert!(value("heartsync_room_coherence_count", &[]) > 0.0);

    // Flood (1000 a second, reading nothing) until the server closes it,
    // which it does after a second of flooding.
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    let flood = tokio_tungstenite::tungstenite::Message::text(r#"{"type":"time","t0":1}"#);
    for _ in 0..5000 {
        pace.tick().await;
        if flooder.send_raw(flood.clone()).await.is_err() {
            break;
        }
    }
    let ended = flooder.ended(Duration::from_secs(5)).await.expect("the flooder is closed");
    assert!(matches!(ended, Ended::Closed(1008) | Ended::Dropped), "{ended:?}");
    voter.close().await;
    lover.consensus_where(Duration::from_secs(3), |c| c.hearts == 1).await.unwrap();
    let after = scrape(&server).await;
    let closed = |reason| after.count("heartsync_connections_closed_total", &[("reason", reason)]);
    assert_eq!(after.value("heartsync_connections_open", &[]), Some(1.0));
    assert_eq!(after.value("heartsync_connections_opened_total", &[]), Some(3.0));
    assert_eq!(closed("flood"), 1.0, "{}", after.text);
    assert_eq!(closed("client"), 1.0, "{}", after.text);
    assert!(after.count("heartsync_rate_limited_total", &[]) > 0.0);
    assert!(after.count("heartsync_errors_sent_total", &[("code", "rate_limited")]) >= 1.0);
    assert!(after.count("heartsync_errors_sent_total", &[("code", "bad_field")]) >= 1.0);
    assert_eq!(after.value("heartsync_hearts", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoints_answer() {
    let server = tests::TestServer::start().await;
    assert_eq!(http::status(&server.http_url("/livez")).await.unwrap(), 200);
    assert_eq!(http::status(&server.http_url("/readyz")).await.unwrap(), 200);
    let metrics = Metrics::scrape(server.addr).await.unwrap();
    assert!(
        metrics.text.contains("# TYPE heartsync_broadcast_lag_seconds histogram"),
        "{}",
        metrics.text
    );
    // Request ids are made when absent and echoed when given.
    let livez = server.http_url("/livez");
    let made = http::get(&livez).await.unwrap();
    assert!(made.header("x-request-id").is_some_and(|id| !id.is_empty()), "{made:?}");
    let echoed = http::get_with(&livez, &[("x-request-id", "trace-me-42")]).await.unwrap();
    assert_eq!(echoed.header("x-request-id"), Some("trace-me-42"), "{echoed:?}");
}
