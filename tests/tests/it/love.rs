//! Love taps: acknowledged only when durable, counted exactly once.

use backend::Config;
use shared::client::Love;
use shared::{ClientMessage, ErrorCode, LoveAck, LoveFolded, ServerMessage};
use std::time::Duration;
use tests::{Client, PATIENCE, ServerProcess, TestServer};

/// An ack's count and total: what the tests pin (the epoch that comes
/// with them is the server's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    pub seq: u64,
    pub total: u64,
}

/// Sends love `seq` naming no ledger (as a protocol v1 client does) and
/// returns the ack's count and total, skipping ticks.
pub(crate) async fn love(client: &mut Client, seq: u64) -> anyhow::Result<Ack> {
    let ack = love_in(client, seq, 0).await?;
    Ok(Ack { seq: ack.seq, total: ack.total })
}

/// Sends love `seq` in ledger `epoch` and returns the whole ack, skipping
/// ticks.
pub(crate) async fn love_in(client: &mut Client, seq: u64, epoch: u64) -> anyhow::Result<LoveAck> {
    match love_answer(client, seq, epoch).await? {
        ServerMessage::LoveAck(ack) => Ok(ack),
        other => anyhow::bail!("expected love_ack, got {other:?}"),
    }
}

/// Sends love `seq` in ledger `epoch` and returns the answer, skipping
/// ticks.
pub(crate) async fn love_answer(
    client: &mut Client,
    seq: u64,
    epoch: u64,
) -> anyhow::Result<ServerMessage> {
    client.send(&ClientMessage::Love { seq, epoch }).await;
    loop {
        match client.next().await? {
            ServerMessage::Consensus(_) => continue,
            other => return Ok(other),
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
    assert_eq!(love(&mut a, 1).await.expect("love acknowledged"), Ack { seq: 1, total: 1 });
    assert_eq!(love(&mut a, 4).await.expect("love acknowledged"), Ack { seq: 4, total: 4 });
    assert_eq!(love(&mut b, 2).await.expect("love acknowledged"), Ack { seq: 2, total: 6 });
    // Replays and older counts are acknowledged with the total, and add nothing.
    assert_eq!(love(&mut a, 4).await.expect("love acknowledged"), Ack { seq: 4, total: 6 });
    assert_eq!(love(&mut a, 2).await.expect("love acknowledged"), Ack { seq: 2, total: 6 });
    // A jump of more than 50 counts nothing and is an error.
    a.send(&ClientMessage::Love { seq: 60, epoch: 0 }).await;
    assert_eq!(a.next_error().await.expect("love acknowledged"), ErrorCode::BadLove);
    assert_eq!(love(&mut a, 54).await.expect("love acknowledged"), Ack { seq: 54, total: 56 });
    // Everyone in the room sees the total in the consensus.
    b.consensus_where(Duration::from_secs(2), |c| c.love == 56).await.expect("love acknowledged");
    // A reconnect with the same client id is the same tapper.
    a.close().await;
    let (mut again, _, first) = server.join("/ws/valentine?client_id=client-aaaa").await;
    assert_eq!(first.love, 56);
    assert_eq!(love(&mut again, 54).await.expect("love acknowledged"), Ack { seq: 54, total: 56 });
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

/// Waits until `client_id`'s ledger `epoch` in the room at `url` is folded:
/// a replay of its acknowledged count `seq` is acknowledged while the
/// ledger is kept (and, counting nothing, does not keep it), and answered
/// `love_folded` once it is not.
pub(crate) async fn ledger_folded(url: &str, seq: u64, epoch: u64) {
    let (probe, _, _) = Client::join(url).await.expect("join");
    let probe = std::sync::Arc::new(tokio::sync::Mutex::new(probe));
    tests::wait_until(PATIENCE, "the idle ledger is folded", || {
        let probe = probe.clone();
        async move {
            match love_answer(&mut *probe.lock().await, seq, epoch).await? {
                ServerMessage::LoveFolded(_) => Ok(()),
                other => anyhow::bail!("not yet: {other:?}"),
            }
        }
    })
    .await
    .expect("the idle ledger is folded");
}

/// A client's ledger is folded after the retention while one of its counts
/// was committed but its ack lost; the client comes back (at `urls[1]`,
/// maybe another instance) and resends. Driven by the real client core
/// (`shared::client::Love`): the resend is answered `love_folded` and
/// counts nothing, the client starts a new ledger with only the tap that
/// cannot be in the total, and every tap is in the total exactly once.
pub(crate) async fn a_resend_across_a_fold_counts_once(urls: [String; 2]) {
    let mut core = Love::new(0, 0);
    let (mut client, _, _) = Client::join(&urls[0]).await.expect("join");
    for _ in 0..3 {
        core.tap();
    }
    let seq = core.due(0.0).expect("three taps to send");
    // The client names its new ledger from its (here: the test's) clock.
    let epoch = core.epoch_to_send(Some(tests::now_ms()));
    let ack = love_in(&mut client, seq, epoch).await.expect("love acknowledged");
    assert_eq!((ack.seq, ack.total, ack.epoch), (3, 3, epoch), "the ledger is the one named");
    core.acknowledged(ack);
    let first_epoch = core.epoch();
    // Two more taps go out and are committed, but the connection drops
    // before their ack is read.
    core.tap();
    core.tap();
    let seq = core.due(1_000.0).expect("two taps to send");
    client
        .send(&ClientMessage::Love { seq, epoch: core.epoch_to_send(Some(tests::now_ms())) })
        .await;
    let (mut watcher, _, _) = Client::join(&urls[1]).await.expect("join");
    watcher
        .consensus_where(PATIENCE, |c| c.love == 5)
        .await
        .expect("the two taps are counted, though their ack is never read");
    client.close().await;
    // One more tap, made while away, never sent.
    core.tap();

    ledger_folded(&urls[0], 3, first_epoch).await;

    let (mut client, _, first) = Client::join(&urls[1]).await.expect("join again");
    assert_eq!(first.love, 5, "folding keeps the total");
    core.connected();
    let seq = core.due(100_000.0).expect("the unacknowledged taps go again");
    assert_eq!(seq, 6);
    let epoch = core.epoch_to_send(Some(tests::now_ms()));
    assert_eq!(epoch, first_epoch);
    let folded = match love_answer(&mut client, seq, epoch).await.expect("an answer") {
        ServerMessage::LoveFolded(folded) => folded,
        other => panic!("expected love_folded, got {other:?}"),
    };
    assert_eq!(folded, LoveFolded { epoch: first_epoch, seq: 6, total: 5 }, "nothing counted");
    assert_eq!(core.folded(folded), 2, "the two taps sent before are given up: they were counted");
    assert_eq!((core.epoch(), core.taps(), core.acked()), (0, 1, 0));
    // The new ledger carries only the tap the fold refused.
    let seq = core.due(200_000.0).expect("the refused tap");
    let epoch = core.epoch_to_send(Some(tests::now_ms()));
    let ack = love_in(&mut client, seq, epoch).await.expect("love acknowledged");
    assert_eq!((ack.seq, ack.total), (1, 6), "every tap counted exactly once");
    assert!(ack.epoch > first_epoch, "a new ledger, named anew");
    core.acknowledged(ack);
    assert_eq!(core.pending(), 0);
    assert_eq!(core.shown_total(), 6);
    // The old ledger stays folded, whatever is resent in it.
    match love_answer(&mut client, 5, first_epoch).await.expect("an answer") {
        ServerMessage::LoveFolded(folded) => assert_eq!(folded.total, 6),
        other => panic!("expected love_folded, got {other:?}"),
    }
    watcher.consensus_where(PATIENCE, |c| c.love == 6).await.expect("the total, once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resend_across_a_fold_is_never_counted_twice() {
    let server = TestServer::start_with(|c| {
        c.tick = Duration::from_millis(50);
        c.love_retention = Duration::from_secs(1);
    })
    .await;
    let url = server.ws_url("/ws/faithful?client_id=faithful-1");
    a_resend_across_a_fold_counts_once([url.clone(), url]).await;
}

/// A new client's first count is committed but its ack lost, and its
/// ledger folded before it comes back (at `urls[1]`): the resend names the
/// epoch the client proposed, which is older than the retention by then,
/// so it is answered `love_folded` and the taps are counted once.
pub(crate) async fn a_first_count_resent_after_a_fold_counts_once(urls: [String; 2]) {
    let mut core = Love::new(0, 0);
    let (mut client, _, first) = Client::join(&urls[0]).await.expect("join");
    let before = first.love;
    core.tap();
    core.tap();
    let seq = core.due(0.0).expect("two taps to send");
    let epoch = core.epoch_to_send(Some(tests::now_ms()));
    client.send(&ClientMessage::Love { seq, epoch }).await;
    let (mut watcher, _, _) = Client::join(&urls[1]).await.expect("join");
    watcher
        .consensus_where(PATIENCE, |c| c.love == before + 2)
        .await
        .expect("the first count is counted, though its ack is never read");
    client.close().await;

    ledger_folded(&urls[0], 2, epoch).await;

    let (mut client, _, _) = Client::join(&urls[1]).await.expect("join again");
    core.connected();
    let seq = core.due(100_000.0).expect("the unacknowledged taps go again");
    let epoch = core.epoch_to_send(Some(tests::now_ms()));
    match love_answer(&mut client, seq, epoch).await.expect("an answer") {
        ServerMessage::LoveFolded(folded) => {
            assert_eq!(folded.total, before + 2, "nothing counted again");
            assert_eq!(core.folded(folded), 2, "given up: they were counted");
        }
        other => panic!("expected love_folded, got {other:?}"),
    }
    assert_eq!(core.pending(), 0);
    watcher.consensus_where(PATIENCE, |c| c.love == before + 2).await.expect("counted once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_ledgers_first_count_resent_after_a_fold_is_never_counted_twice() {
    let server = TestServer::start_with(|c| {
        c.tick = Duration::from_millis(50);
        c.love_retention = Duration::from_secs(1);
    })
    .await;
    let url = server.ws_url("/ws/faithful?client_id=first-timer");
    a_first_count_resent_after_a_fold_counts_once([url.clone(), url]).await;
}
