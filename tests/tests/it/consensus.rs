//! A room's consensus as clients see it: welcome, ticks, presence, isolation,
//! and the phase math over real sockets.

use shared::phase::difference;
use shared::{ClientMessage, PROTOCOL_VERSION, PhaseReport, project};
use std::time::Duration;
use tests::{Client, TestServer, now_ms};

fn report(phase: f64, bpm: f64, at: f64) -> ClientMessage {
    ClientMessage::Phase(PhaseReport { phase, bpm, at })
}

/// Reads until a consensus counts `voters` voters.
async fn with_voters(client: &mut Client, voters: u32) -> shared::Consensus {
    client
        .consensus_where(Duration::from_secs(3), |c| c.voters == voters)
        .await
        .expect("a consensus with every vote in")
}

#[tokio::test(flavor = "multi_thread")]
async fn welcome_comes_first_then_a_consensus_at_once() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_secs(30)).await;
    let started = std::time::Instant::now();
    let before = now_ms();
    let (client, welcome, consensus) = server.join("/ws/lobby?client_id=abcdefgh12").await;
    let after = now_ms();
    // With a 30 s tick, the consensus can only have come from the join
    // itself, long before the first tick.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert_eq!(welcome.protocol, PROTOCOL_VERSION);
    assert_eq!(welcome.room, "lobby");
    assert_eq!(welcome.client_id, "abcdefgh12");
    assert_eq!(welcome.tick_ms, 30_000);
    assert_eq!(welcome.report_ms, 1000);
    // The server's clock is this process's: read between the two readings
    // (give or take a millisecond of rounding).
    assert!(
        (before - 1.0..=after + 1.0).contains(&welcome.server_time),
        "{before} {welcome:?} {after}"
    );
    assert_eq!(consensus.hearts, 1);
    assert_eq!(consensus.voters, 0);
    assert_eq!(consensus.coherence, 0.0);
    assert_eq!(consensus.bpm, 72.0);
    client.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bare_ws_is_room_main_and_assigns_a_client_id() {
    let server = TestServer::start().await;
    let (_client, welcome, _) = server.join("/ws").await;
    assert_eq!(welcome.room, "main");
    assert!(shared::ClientId::parse(welcome.client_id.as_str()).is_ok(), "{}", welcome.client_id);
    let (_other, second, _) = server.join("/ws").await;
    assert_ne!(welcome.client_id, second.client_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn ticks_come_at_the_configured_rate_with_rising_seq() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(100)).await;
    let (mut client, _, first) = server.join("/ws/metronome").await;
    let started = std::time::Instant::now();
    let mut seqs = vec![first.seq];
    while seqs.len() < 21 {
        seqs.push(client.next_consensus().await.unwrap().seq);
    }
    let elapsed = started.elapsed();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "seq must rise by one per tick: {seqs:?}");
    }
    // 20 ticks of 100 ms are never faster (a late tick does not make the
    // next one early). How much slower a busy machine makes them says
    // nothing about the server: the room's paused-time unit tests pin the
    // rate itself.
    assert!(elapsed >= Duration::from_millis(1800), "20 ticks took only {elapsed:?}");
    println!("20 ticks of 100 ms took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn time_requests_are_echoed_with_the_server_clock() {
    let server = TestServer::start().await;
    let (mut client, _, _) = server.join("/ws/clock").await;
    let before = now_ms();
    client.send(&ClientMessage::Time { t0: 1234.5 }).await;
    loop {
        match client.next().await.unwrap() {
            shared::ServerMessage::Time(reply) => {
                let after = now_ms();
                assert_eq!(reply.t0, 1234.5);
                // The server's clock is this process's: read in between.
                assert!(
                    (before - 1.0..=after + 1.0).contains(&reply.server_time),
                    "{before} {reply:?} {after}"
                );
                break;
            }
            shared::ServerMessage::Consensus(_) => continue,
            other => panic!("expected a time reply, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_room_names_are_refused_before_the_upgrade() {
    let server = TestServer::start().await;
    let too_long = "x".repeat(65);
    for room in ["bad%20name", "caf%C3%A9", too_long.as_str(), "a.b"] {
        let error = Client::connect(&server.ws_url(&format!("/ws/{room}"))).await.err();
        match error {
            Some(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "room {room:?}");
            }
            other => panic!("room {room:?}: expected HTTP 400, got {other:?}"),
        }
    }
    let error = Client::connect(&server.ws_url("/ws/ok?client_id=short")).await.err();
    assert!(
        matches!(error, Some(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_counts_up_and_down() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(50)).await;
    let (mut watcher, _, first) = server.join("/ws/presence").await;
    assert_eq!(first.hearts, 1);
    let (second, _, joined) = server.join("/ws/presence").await;
    assert_eq!(joined.hearts, 2, "a newcomer's first consensus counts itself");
    let (third, _, _) = server.join("/ws/presence").await;
    watcher.consensus_where(Duration::from_secs(2), |c| c.hearts == 3).await.unwrap();
    second.close().await;
    watcher.consensus_where(Duration::from_secs(2), |c| c.hearts == 2).await.unwrap();
    // A connection that just vanishes counts as gone too.
    drop(third);
    watcher.consensus_where(Duration::from_secs(2), |c| c.hearts == 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_isolated() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(50)).await;
    let (mut red, _, _) = server.join("/ws/red").await;
    let (mut blue, _, _) = server.join("/ws/blue").await;
    let (_blue2, _, _) = server.join("/ws/blue").await;
    red.send(&report(0.25, 90.0, now_ms())).await;
    let seen_red = with_voters(&mut red, 1).await;
    assert_eq!(seen_red.hearts, 1);
    assert_eq!(seen_red.bpm, 90.0);
    let seen_blue = blue.consensus_where(Duration::from_secs(2), |c| c.hearts == 2).await.unwrap();
    assert_eq!(seen_blue.voters, 0);
    assert_eq!(seen_blue.bpm, 72.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn circular_mean_wraps_at_one() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(50)).await;
    let (mut a, _, _) = server.join("/ws/wrap").await;
    let (mut b, _, _) = server.join("/ws/wrap").await;
    let at = now_ms();
    a.send(&report(0.95, 60.0, at)).await;
    b.send(&report(0.05, 60.0, at)).await;
    let c = with_voters(&mut a, 2).await;
    // The mean of 0.95 and 0.05 is 0.0 (not 0.5), carried forward to c.at.
    let expected = project(0.0, 60.0, at, c.at);
    assert!(difference(c.phase, expected).abs() < 1e-6, "phase {} expected {expected}", c.phase);
    let r = (std::f64::consts::PI * 0.1).cos();
    assert!((c.coherence - r).abs() < 1e-6, "coherence {} expected {r}", c.coherence);
    assert_eq!(c.bpm, 60.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn evenly_spread_phases_have_no_coherence() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(50)).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.join("/ws/spread").await.0);
    }
    let at = now_ms();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(&report(i as f64 / 4.0, 72.0, at)).await;
    }
    let c = with_voters(&mut clients[0], 4).await;
    assert!(c.coherence < 1e-9, "coherence {}", c.coherence);
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_are_projected_to_the_tick_time() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(50)).await;
    let (mut a, _, _) = server.join("/ws/project").await;
    let (mut b, _, _) = server.join("/ws/project").await;
    // Two hearts at different rates and report times, in step only once
    // each is carried forward to the same instant.
    let now = now_ms();
    a.send(&report(0.2, 60.0, now - 1500.0)).await;
    b.send(&report(0.7, 120.0, now - 1000.0)).await;
    let c = with_voters(&mut a, 2).await;
    let pa = project(0.2, 60.0, now - 1500.0, c.at);
    let pb = project(0.7, 120.0, now - 1000.0, c.at);
    let expected = shared::OrderParameter::of([pa, pb]).unwrap();
    assert!(difference(c.phase, expected.phase).abs() < 1e-6);
    assert!((c.coherence - expected.coherence).abs() < 1e-6);
    assert_eq!(c.bpm, 90.0);
    // Unprojected, 0.2 and 0.7 would cancel out (R = 0). Projected, a is at
    // 0.2 + 1.5 beats = 0.7 when b reports 0.7, and b gains a tenth of a beat
    // on a only every 100 ms after that: they are nearly in step.
    assert!(c.coherence > 0.9, "coherence {}", c.coherence);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_voters_the_beat_runs_on_and_old_votes_expire() {
    let server = TestServer::start_with(|c| {
        c.tick = Duration::from_millis(50);
        c.vote_ttl = Duration::from_millis(400);
    })
    .await;
    let (mut a, _, _) = server.join("/ws/expire").await;
    let at = now_ms();
    a.send(&report(0.5, 120.0, at)).await;
    let voted = with_voters(&mut a, 1).await;
    assert_eq!(voted.bpm, 120.0);
    let expired = with_voters(&mut a, 0).await;
    assert!(expired.at - at >= 350.0);
    assert_eq!(expired.coherence, 0.0);
    // The beat carries on at the last bpm from the last consensus.
    assert_eq!(expired.bpm, 120.0);
    let expected = project(0.5, 120.0, at, expired.at);
    assert!(difference(expired.phase, expected).abs() < 1e-6);
}
