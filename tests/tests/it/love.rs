//! Love taps: acknowledged only when durable, counted exactly once.

use backend::Config;
use shared::{ClientMessage, ErrorCode, LoveAck, ServerMessage};
use std::time::Duration;
use tests::{Client, ServerProcess, TestServer};

/// Sends love `seq` and returns the ack, skipping ticks.
pub(crate) async fn love(client: &mut Client, seq: u64) -> anyhow::Result<LoveAck> {
    client.send(&ClientMessage::Love { seq }).await;
    loop {
        match client.next().await? {
            ServerMessage::LoveAck(ack) => return Ok(ack),
            ServerMessage::Consensus(_) => continue,
            other => anyhow::bail!("expected love_ack, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn taps_are_acknowledged_in_order_and_replays_count_nothing() {
    ordered_acks_and_replays(|_| {}).await;
}

/// The ordered-acks test on the love store `backend` chooses (the Redis
/// variant is in `cluster.rs`).
pub(crate) async fn ordered_acks_and_replays(backend: impl FnOnce(&mut Config)) {
    let server = TestServer::start_with(|c| {
        c.tick = Duration::from_millis(50);
        backend(c);
    })
    .await;
    let (mut a, _, _) = server.join("/ws/valentine?client_id=client-aaaa").await;
    let (mut b, _, _) = server.join("/ws/valentine?client_id=client-bbbb").await;
    assert_eq!(love(&mut a, 1).await.expect("love acknowledged"), LoveAck { seq: 1, total: 1 });
    assert_eq!(love(&mut a, 4).await.expect("love acknowledged"), LoveAck { seq: 4, total: 4 });
    assert_eq!(love(&mut b, 2).await.expect("love acknowledged"), LoveAck { seq: 2, total: 6 });
    // Replays and older counts are acknowledged with the total, and add nothing.
    assert_eq!(love(&mut a, 4).await.expect("love acknowledged"), LoveAck { seq: 4, total: 6 });
    assert_eq!(love(&mut a, 2).await.expect("love acknowledged"), LoveAck { seq: 2, total: 6 });
    // A jump of more than 50 counts nothing and is an error.
    a.send(&ClientMessage::Love { seq: 60 }).await;
    assert_eq!(a.next_error().await.expect("love acknowledged"), ErrorCode::BadLove);
    assert_eq!(love(&mut a, 54).await.expect("love acknowledged"), LoveAck { seq: 54, total: 56 });
    // Everyone in the room sees the total in the consensus.
    b.consensus_where(Duration::from_secs(2), |c| c.love == 56).await.expect("love acknowledged");
    // A reconnect with the same client id is the same tapper.
    a.close().await;
    let (mut again, _, first) = server.join("/ws/valentine?client_id=client-aaaa").await;
    assert_eq!(first.love, 56);
    assert_eq!(
        love(&mut again, 54).await.expect("love acknowledged"),
        LoveAck { seq: 54, total: 56 }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_tappers_with_replays_add_exactly_what_they_tapped() {
    concurrent_tappers_and_separate_rooms(|_| {}).await;
}

/// The concurrent-tappers test on the love store `backend` chooses.
pub(crate) async fn concurrent_tappers_and_separate_rooms(backend: impl FnOnce(&mut Config)) {
    let server = TestServer::start_with(|c| {
        backend(c);
        c.tick = Duration::from_millis(50);
        // Each tapper sends up to 46 messages at once; this test is about
        // counting, not the rate limit.
        c.message_burst = 100;
    })
    .await;
    let mut tappers = Vec::new();
    for i in 0..20u64 {
        let url = server.ws_url(&format!("/ws/crowd?client_id=tapper-{i:04}"));
        tappers.push(tokio::spawn(async move {
            let (mut client, _, _) = Client::join(&url).await?;
            // Tapper i taps i + 5 times, in steps of up to 3, replaying each step.
            let target = i + 5;
            let mut seq = 0;
            while seq < target {
                seq = (seq + 1 + i % 3).min(target);
                love(&mut client, seq).await?;
                love(&mut client, seq).await?;
            }
            anyhow::Ok(target)
        }));
    }
    let mut tapped = 0;
    for tapper in tappers {
        tapped += tapper.await.expect("the tapper ran").expect("the tapper tapped");
    }
    let (mut late, _, first) = server.join("/ws/crowd?client_id=latecomer").await;
    assert_eq!(first.love, tapped);
    assert_eq!(love(&mut late, 0).await.expect("love acknowledged").total, tapped);
    // Separate rooms keep separate totals.
    let (_, _, elsewhere) = server.join("/ws/elsewhere").await;
    assert_eq!(elsewhere.love, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_love_survives_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_owned();
    let server = ServerProcess::start(&["--data-dir", &dir]).await.unwrap();
    let url = server.ws_url("/ws/durable?client_id=survivor1");
    let (mut client, _, _) = Client::join(&url).await.unwrap();
    let mut acked = 0;
    for seq in 1..=30 {
        acked = love(&mut client, seq).await.unwrap().total;
    }
    assert_eq!(acked, 30);
    // Die without a chance to flush anything.
    server.signal("KILL");
    drop(client);
    drop(server);
    let server = ServerProcess::start(&["--data-dir", &dir]).await.unwrap();
    let (mut client, _, first) =
        Client::join(&server.ws_url("/ws/durable?client_id=survivor1")).await.unwrap();
    assert_eq!(first.love, 30, "every acknowledged tap survived");
    // Resending acknowledged taps counts nothing.
    assert_eq!(love(&mut client, 30).await.unwrap().total, 30);
    assert_eq!(love(&mut client, 31).await.unwrap().total, 31);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_unwritable_data_dir_fails_at_start_with_a_clear_message() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("heartsync.sqlite3"), b"not a database ".repeat(200)).unwrap();
    let dir = data.path().to_str().unwrap();
    let (code, output) = ServerProcess::start_failing(&["--data-dir", dir]).await.unwrap();
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("cannot open the love store"), "{output}");
    assert!(!output.contains("panicked"), "{output}");

    // A data dir that is a file cannot be created.
    let file = data.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let (code, output) =
        ServerProcess::start_failing(&["--data-dir", file.to_str().unwrap()]).await.unwrap();
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("cannot create the data dir"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}
