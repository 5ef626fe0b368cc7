//! What operators see at `/metrics` moves with what happens.

use shared::ClientMessage;
use std::collections::HashMap;
use std::time::Duration;
use tests::{Client, ServerProcess, http_get};

/// Every sample of the exposition, by its name and labels as written.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &ServerProcess) -> HashMap<String, f64> {
    let (status, body) = http_get(server.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    samples(&body)
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
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
    assert_eq!(value(&before, "heartsync_connections_open"), 0.0);
    assert_eq!(before.keys().filter(|k| k.starts_with("heartsync_build_info{")).count(), 1);
    assert!(value(&before, "process_resident_memory_bytes") > 1e6);

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
    lover.send(&ClientMessage::Love { seq: 3 }).await;
    loop {
        if let shared::ServerMessage::LoveAck(_) = lover.next().await.unwrap() {
            break;
        }
    }
    let during = scrape(&server).await;
    assert_eq!(value(&during, "heartsync_connections_open"), 3.0);
    assert_eq!(value(&during, "heartsync_rooms_active"), 1.0);
    assert_eq!(value(&during, "heartsync_hearts"), 3.0);
    assert_eq!(value(&during, "heartsync_voters"), 1.0);
    assert_eq!(value(&during, "heartsync_love_taps_total"), 3.0);
    assert_eq!(value(&during, r#"heartsync_messages_received_total{type="phase"}"#), 1.0);
    assert_eq!(value(&during, r#"heartsync_messages_sent_total{type="welcome"}"#), 3.0);
    assert!(value(&during, r#"heartsync_messages_sent_total{type="consensus"}"#) > 3.0);
    assert_eq!(value(&during, "heartsync_love_ack_seconds_count"), 1.0);
    assert!(value(&during, "heartsync_broadcast_lag_seconds_count") > 0.0);
    assert!(value(&during, r#"heartsync_tick_duration_seconds_bucket{le="+Inf"}"#) > 0.0);
    assert!(value(&during, "heartsync_room_coherence_count") > 0.0);

    for _ in 0..2000 {
        if flooder
            .send_raw(tokio_tungstenite::tungstenite::Message::text(r#"{"type":"time","t0":1}"#))
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = flooder.ended(Duration::from_secs(5)).await;
    voter.close().await;
    lover.consensus_where(Duration::from_secs(3), |c| c.hearts == 1).await.unwrap();
    let after = scrape(&server).await;
    assert_eq!(value(&after, "heartsync_connections_open"), 1.0);
    assert_eq!(value(&after, "heartsync_connections_opened_total"), 3.0);
    assert_eq!(value(&after, r#"heartsync_connections_closed_total{reason="flood"}"#), 1.0);
    assert_eq!(value(&after, r#"heartsync_connections_closed_total{reason="client"}"#), 1.0);
    assert!(value(&after, "heartsync_rate_limited_total") > 0.0);
    assert!(value(&after, r#"heartsync_errors_sent_total{code="rate_limited"}"#) >= 1.0);
    assert!(value(&after, r#"heartsync_errors_sent_total{code="bad_field"}"#) >= 1.0);
    assert_eq!(value(&after, "heartsync_hearts"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoints_answer() {
    let server = tests::TestServer::start().await;
    assert_eq!(tests::http_status(server.addr, "/livez").await.unwrap(), 200);
    assert_eq!(tests::http_status(server.addr, "/readyz").await.unwrap(), 200);
    let (status, body) = http_get(server.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE heartsync_broadcast_lag_seconds histogram"), "{body}");
    // Request ids are made when absent and echoed when given.
    let head = raw_head(server.addr, "").await;
    assert!(head.contains("x-request-id: "), "{head}");
    let head = raw_head(server.addr, "x-request-id: trace-me-42\r\n").await;
    assert!(head.contains("x-request-id: trace-me-42"), "{head}");
}

async fn raw_head(addr: std::net::SocketAddr, extra: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /livez HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.to_ascii_lowercase()
}
