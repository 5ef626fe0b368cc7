//! The connection layer holds: limits, slow clients, floods, hostile
//! origins, heartbeats, header timeouts, caps and graceful shutdown. After
//! each, the server still serves.

use futures_util::SinkExt;
use shared::{ClientMessage, ErrorCode};
use std::time::{Duration, Instant};
use tests::{Client, Ended, ServerProcess, TestServer, http_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Upgrades to `url` with an `Origin` header; the HTTP status on refusal.
async fn connect_from(url: &str, origin: &str) -> Result<(), u16> {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Origin", HeaderValue::from_str(origin).unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// The server still takes a newcomer and tells it the truth.
async fn still_serves(server: &TestServer) {
    let (client, _, consensus) = server.join("/ws/afterwards").await;
    assert!(consensus.hearts >= 1);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_closes_with_1009() {
    let server = TestServer::start().await;
    let (mut client, _, _) = server.join("/ws/big").await;
    let big = format!(r#"{{"type":"time","t0":1,"pad":"{}"}}"#, "x".repeat(5000));
    client.send_text(&big).await;
    assert_eq!(client.ended(Duration::from_secs(5)).await.unwrap(), Ended::Closed(1009));
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_frame_gets_an_error_and_the_connection_stays() {
    let server = TestServer::start().await;
    let (mut client, _, _) = server.join("/ws/binary").await;
    client.send_raw(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(client.next_error().await.unwrap(), ErrorCode::BinaryFrame);
    client.send(&ClientMessage::Time { t0: 1.0 }).await;
    loop {
        if let shared::ServerMessage::Time(_) = client.next().await.unwrap() {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_origins_are_refused_and_allowed_ones_accepted() {
    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["https://heartsync.example".into()];
    })
    .await;
    let url = server.ws_url("/ws/origins");
    assert_eq!(connect_from(&url, "https://evil.example").await, Err(403));
    assert_eq!(connect_from(&url, "null").await, Err(403));
    assert_eq!(connect_from(&url, &format!("http://{}.evil.example", server.addr)).await, Err(403));
    assert_eq!(connect_from(&url, "https://heartsync.example").await, Ok(()));
    // The server's own origin, and no origin at all (not a browser).
    assert_eq!(connect_from(&url, &format!("http://{}", server.addr)).await, Ok(()));
    assert!(Client::connect(&url).await.is_ok());
    still_serves(&server).await;
}

/// The longest gap between 100 ms ticks that still counts as on time. A
/// neighbour held up by a flooder or a stuck socket would wait for seconds
/// (the write timeout); the slack is for a busy CI machine's scheduling.
/// Measured on a quiet machine: about 105 ms.
const ON_TIME: Duration = Duration::from_millis(400);

/// Reads consensus ticks for `duration`; the longest gap between arrivals.
async fn worst_tick_gap(client: &mut Client, duration: Duration) -> Duration {
    let end = Instant::now() + duration;
    let mut last = Instant::now();
    let mut worst = Duration::ZERO;
    while Instant::now() < end {
        client.next_consensus().await.unwrap();
        worst = worst.max(last.elapsed());
        last = Instant::now();
    }
    worst
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooder_is_rate_limited_then_closed_and_delays_no_neighbour() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(100)).await;
    let (mut neighbour, _, _) = server.join("/ws/flood").await;
    let (mut flooder, _, _) = server.join("/ws/flood").await;
    let started = Instant::now();
    // 500 messages a second, reading everything that comes back.
    let flood = tokio::spawn(async move {
        let mut errors = 0;
        let mut rate_limited = 0;
        let mut ticker = tokio::time::interval(Duration::from_millis(2));
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let frame = Message::text(ClientMessage::Time { t0: 1.0 }.to_json());
                    if flooder.send_raw(frame).await.is_err() {
                        break;
                    }
                }
                message = flooder.next_within(Duration::from_secs(10)) => match message {
                    Ok(shared::ServerMessage::Error(e)) => {
                        errors += 1;
                        if e.code == ErrorCode::RateLimited { rate_limited += 1; }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                },
            }
        }
        (errors, rate_limited, started.elapsed(), flooder)
    });
    let worst = worst_tick_gap(&mut neighbour, Duration::from_secs(4)).await;
    let (errors, rate_limited, lasted, mut flooder) = flood.await.unwrap();
    println!(
        "neighbour's worst tick gap during the flood: {worst:?}; flooder closed after {lasted:?}"
    );
    assert!(worst < ON_TIME, "a neighbour waited {worst:?} for a 100 ms tick");
    // At most one rate_limited error a second, and nothing else.
    assert_eq!(errors, rate_limited);
    assert!((4..=7).contains(&rate_limited), "{rate_limited} rate_limited errors");
    assert!(
        lasted >= Duration::from_secs(5) && lasted < Duration::from_secs(8),
        "closed after {lasted:?}"
    );
    assert!(matches!(
        flooder.ended(Duration::from_secs(1)).await,
        Ok(Ended::Closed(1008)) | Ok(Ended::Dropped) | Err(_)
    ));
    neighbour.consensus_where(Duration::from_secs(2), |c| c.hearts == 1).await.unwrap();
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_protocol_violations_close_with_1008() {
    let server = TestServer::start_with(|c| c.max_violations = 10).await;
    let (mut client, _, _) = server.join("/ws/violations").await;
    for _ in 0..10 {
        client.send_text("nonsense").await;
    }
    for _ in 0..9 {
        assert_eq!(client.next_error().await.unwrap(), ErrorCode::BadJson);
    }
    assert_eq!(client.ended(Duration::from_secs(5)).await.unwrap(), Ended::Closed(1008));
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_closed_and_delays_no_one() {
    let server = TestServer::start_with(|c| {
        c.tick = Duration::from_millis(100);
        c.write_timeout = Duration::from_secs(1);
        c.message_rate = 1_000_000;
        c.message_burst = 1_000_000;
    })
    .await;
    let (mut neighbour, _, _) = server.join("/ws/slow").await;
    // A client with a tiny receive buffer that asks for a lot and reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(server.ws_url("/ws/slow"), stream).await.unwrap();
    neighbour.consensus_where(Duration::from_secs(2), |c| c.hearts == 2).await.unwrap();
    let writer = tokio::spawn(async move {
        let request = Message::text(ClientMessage::Time { t0: 1.0 }.to_json());
        for _ in 0..200_000 {
            if tokio::time::timeout(Duration::from_secs(5), slow.send(request.clone()))
                .await
                .is_err()
            {
                break;
            }
        }
        slow
    });
    let started = Instant::now();
    let worst = worst_tick_gap(&mut neighbour, Duration::from_secs(3)).await;
    neighbour.consensus_where(Duration::from_secs(15), |c| c.hearts == 1).await.unwrap();
    println!(
        "slow client dropped after {:?}; neighbour's worst tick gap {worst:?}",
        started.elapsed()
    );
    assert!(worst < ON_TIME, "a neighbour waited {worst:?} for a 100 ms tick");
    writer.abort();
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_never_answers_pings_is_closed() {
    let server = TestServer::start_with(|c| {
        c.tick = Duration::from_millis(100);
        c.ping_interval = Duration::from_millis(300);
        c.pong_timeout = Duration::from_millis(300);
    })
    .await;
    let (mut watcher, _, _) = server.join("/ws/pings").await;
    // tungstenite answers pings only while it reads; this one never reads.
    let (silent, _, _) = server.join("/ws/pings").await;
    watcher.consensus_where(Duration::from_secs(2), |c| c.hearts == 2).await.unwrap();
    let started = Instant::now();
    watcher.consensus_where(Duration::from_secs(5), |c| c.hearts == 1).await.unwrap();
    let closed_after = started.elapsed();
    assert!(closed_after < Duration::from_secs(2), "closed after {closed_after:?}");
    // The watcher reads, so it answers pings and stays, many pings later.
    let worst = worst_tick_gap(&mut watcher, Duration::from_millis(1500)).await;
    assert!(worst < ON_TIME, "the watcher waited {worst:?} for a 100 ms tick");
    drop(silent);
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_finished_http_request_is_cut_off() {
    let server = TestServer::start_with(|c| c.header_timeout = Duration::from_millis(500)).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the server kept a half-finished request open");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(http_status(server.addr, "/livez").await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connection_cap_answers_503() {
    let server = TestServer::start_with(|c| c.max_connections = 2).await;
    let url = server.ws_url("/ws/capped");
    let (a, _, _) = Client::join(&url).await.unwrap();
    let (_b, _, _) = Client::join(&url).await.unwrap();
    match Client::connect(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    a.close().await;
    // The slot is free again once the connection is gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(Client::join(&url).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_accept_rate_cap_answers_503() {
    let server = TestServer::start_with(|c| c.max_accept_rate = 5).await;
    let url = server.ws_url("/ws/storm");
    let mut statuses = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..8 {
        match Client::connect(&url).await {
            Ok(client) => {
                kept.push(client);
                statuses.push(101);
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                statuses.push(response.status().as_u16())
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 101).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 3, "{statuses:?}");
    // A second later the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(Client::connect(&url).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let data = tempfile::tempdir().unwrap();
    let mut server =
        ServerProcess::start(&["--drain", "1s", "--data-dir", data.path().to_str().unwrap()])
            .await
            .unwrap();
    let mut clients = Vec::new();
    for room in ["a", "a", "b"] {
        clients.push(Client::join(&server.ws_url(&format!("/ws/{room}"))).await.unwrap().0);
    }
    assert_eq!(http_status(server.addr, "/readyz").await.unwrap(), 200);
    let started = Instant::now();
    server.signal("TERM");
    // While draining, readiness fails and upgrades are refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(http_status(server.addr, "/readyz").await.unwrap(), 503);
    assert!(Client::connect(&server.ws_url("/ws/late")).await.is_err());
    for client in &mut clients {
        assert_eq!(client.ended(Duration::from_secs(3)).await.unwrap(), Ended::Closed(1001));
    }
    assert_eq!(server.wait(Duration::from_secs(5)).await.unwrap(), Some(0));
    println!("drained 3 clients and exited in {:?}", started.elapsed());
}
