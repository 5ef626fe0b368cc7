//! Several instances, one room: real `heartsync` processes sharing a real
//! `redis-server`, behind a real `nginx`, and the faults an operator meets
//! (an instance killed, Redis stopped or killed, a bad Redis at start).

use crate::love::{
    Ack, a_first_count_resent_after_a_fold_counts_once, a_resend_across_a_fold_counts_once,
    concurrent_tappers_and_separate_rooms, love, ordered_acks_and_replays,
};
use anyhow::{Context, ensure};
use shared::{ClientMessage, Consensus, PhaseReport, ServerMessage, wrap};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::cluster::{Cluster, RedisServer, free_port, start_instance};
use tests::{Client, ServerProcess, now_ms, wait_until};
use tokio::task::JoinHandle;

/// How long any one condition below may take to come true.
const PATIENCE: Duration = Duration::from_secs(15);

/// [`wait_until`] for a check that needs no `.await`.
async fn eventually(
    patience: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    wait_until(patience, what, || std::future::ready(check())).await
}

/// One protocol client with a steady heart: reports its phase twice a
/// second and records every consensus it receives.
struct Heart {
    /// Every consensus received, the join frame first.
    seen: Arc<Mutex<Vec<Consensus>>>,
    /// Set when the connection ended.
    ended: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Heart {
    async fn join(url: &str, phase: f64, bpm: f64) -> anyhow::Result<Self> {
        let (mut client, _, first) = Client::join(url).await?;
        let seen = Arc::new(Mutex::new(vec![first]));
        let ended = Arc::new(AtomicBool::new(false));
        let (record, end) = (seen.clone(), ended.clone());
        let start = now_ms();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        let at = now_ms();
                        let phase = wrap(phase + bpm / 60.0 * (at - start) / 1000.0);
                        client.send(&ClientMessage::Phase(PhaseReport { phase, bpm, at })).await;
                    }
                    message = client.next() => match message {
                        Ok(ServerMessage::Consensus(c)) => record.lock().expect("lock").push(c),
                        Ok(_) => {}
                        Err(_) => {
                            end.store(true, Ordering::SeqCst);
                            return;
                        }
                    },
                }
            }
        });
        Ok(Self { seen, ended, task })
    }

    fn latest(&self) -> Consensus {
        *self.seen.lock().expect("lock").last().expect("the join frame at least")
    }

    /// The ticks received (the join frame left out).
    fn ticks(&self) -> Vec<Consensus> {
        self.seen.lock().expect("lock").iter().skip(1).copied().collect()
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

impl Drop for Heart {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until every heart's newest consensus has `hearts` hearts and
/// `voters` voters.
async fn all_see(hearts: &[&Heart], count: u32, voters: u32) -> anyhow::Result<()> {
    eventually(PATIENCE, &format!("every heart sees {count} hearts, {voters} voters"), || {
        for (i, heart) in hearts.iter().enumerate() {
            let c = heart.latest();
            ensure!(c.hearts == count && c.voters == voters, "heart {i} sees {c:?}");
        }
        Ok(())
    })
    .await
}

/// `GET path` on `addr`: the status and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let response = tests::http::get(&format!("http://{addr}{path}")).await?;
    Ok((response.status, response.text()))
}

/// A metric's value on an instance's `/metrics` (a series without labels).
async fn metric(instance: &ServerProcess, name: &str) -> anyhow::Result<f64> {
    let metrics = tests::metrics::Metrics::scrape(instance.addr).await?;
    metrics.value(name, &[]).with_context(|| format!("no {name} in /metrics"))
}

/// Consecutive seqs: no tick missed between the first and the last.
fn gaps(ticks: &[Consensus]) -> Vec<(u64, u64)> {
    ticks.windows(2).filter(|w| w[1].seq != w[0].seq + 1).map(|w| (w[0].seq, w[1].seq)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_behind_nginx_broadcast_one_consensus_per_seq() {
    let cluster = Cluster::start(3, &["--tick", "100ms"]).await.expect("cluster");
    let mut hearts = Vec::new();
    for i in 0..30u32 {
        let url = cluster.nginx.ws_url(&format!("/ws/one-room?client_id=heart-{i:04}"));
        let heart = Heart::join(&url, f64::from(i) / 100.0, 60.0 + f64::from(i)).await;
        hearts.push(heart.expect("join through nginx"));
    }
    // nginx spread them over every instance.
    let mut total = 0.0;
    for i in 0..3 {
        let open = metric(cluster.instance(i), "heartsync_connections_open").await.unwrap();
        assert!(open >= 1.0, "instance {i} has no hearts");
        total += open;
    }
    assert_eq!(total, 30.0);
    let all: Vec<&Heart> = hearts.iter().collect();
    all_see(&all, 30, 30).await.unwrap();

    // Twenty ticks from now on, as every heart received them.
    let from = hearts.iter().map(|h| h.latest().seq).max().unwrap_or(0) + 1;
    let to = from + 20;
    eventually(PATIENCE, "twenty more ticks", || {
        let behind = hearts.iter().filter(|h| h.latest().seq < to).count();
        ensure!(behind == 0, "{behind} hearts not there yet");
        Ok(())
    })
    .await
    .unwrap();
    let mut by_seq: BTreeMap<u64, Vec<Consensus>> = BTreeMap::new();
    for heart in &hearts {
        for c in heart.ticks().into_iter().filter(|c| (from..to).contains(&c.seq)) {
            by_seq.entry(c.seq).or_default().push(c);
        }
    }
    let mut compared = 0;
    let mut max_dpsi: f64 = 0.0;
    for (seq, seen) in &by_seq {
        let first = seen[0];
        assert_eq!((first.hearts, first.voters), (30, 30), "seq {seq}");
        for c in seen {
            max_dpsi = max_dpsi.max(shared::phase::difference(first.phase, c.phase).abs());
            assert_eq!(
                (c.phase.to_bits(), c.coherence.to_bits(), c.bpm.to_bits(), c.at.to_bits()),
                (
                    first.phase.to_bits(),
                    first.coherence.to_bits(),
                    first.bpm.to_bits(),
                    first.at.to_bits()
                ),
                "seq {seq}: {c:?} vs {first:?}"
            );
            assert_eq!((c.hearts, c.voters, c.love), (first.hearts, first.voters, first.love));
            compared += 1;
        }
    }
    assert_eq!(max_dpsi, 0.0);
    // Almost every heart got almost every tick (a slow socket may skip one).
    assert!(compared >= 30 * 20 * 9 / 10, "only {compared} broadcasts compared");
    // Seq is the tick number since the epoch, the same on every instance.
    let (&seq, seen) = by_seq.iter().next().expect("ticks");
    assert_eq!(seen[0].at, seq as f64 * 100.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_killed_with_kill_9_loses_only_its_own_clients() {
    let mut cluster = Cluster::start(3, &[]).await.expect("cluster");
    let nginx = cluster.nginx.addr;
    let url = |i: u32| format!("ws://{nginx}/ws/sturdy?client_id=heart-{i:04}");
    let mut hearts = Vec::new();
    for i in 0..30u32 {
        hearts.push(Heart::join(&url(i), 0.1, 70.0).await.expect("join"));
    }
    let all: Vec<&Heart> = hearts.iter().collect();
    all_see(&all, 30, 30).await.unwrap();
    let on_victim = metric(cluster.instance(0), "heartsync_connections_open").await.unwrap();
    let on_victim = on_victim as u32;
    assert!(on_victim >= 1);

    let killed_at = backend::cluster::room::tick_at(now_ms(), Duration::from_millis(250));
    cluster.kill(0).await.unwrap();
    eventually(PATIENCE, "the victim's clients see their connection end", || {
        let ended = hearts.iter().filter(|h| h.ended()).count() as u32;
        ensure!(ended == on_victim, "{ended} of {on_victim} ended");
        Ok(())
    })
    .await
    .unwrap();
    let survivors: Vec<&Heart> = hearts.iter().filter(|h| !h.ended()).collect();
    let left = 30 - on_victim;
    all_see(&survivors, left, left).await.unwrap();
    // The dead instance's last partial was for the tick after the kill; it
    // is dropped after three silent ticks.
    for heart in &survivors {
        let settled = heart.ticks().into_iter().find(|c| c.seq > killed_at && c.hearts == left);
        let settled = settled.expect("a settled tick").seq;
        assert!(settled <= killed_at + 1 + 3, "settled at {settled}, killed at {killed_at}");
    }

    // Its clients come back through nginx, to the others.
    let mut returned = Vec::new();
    for (i, heart) in hearts.iter().enumerate() {
        if heart.ended() {
            let i = u32::try_from(i).expect("small");
            returned.push(Heart::join(&url(i), 0.1, 70.0).await.expect("rejoin through nginx"));
        }
    }
    let everyone: Vec<&Heart> = survivors.iter().copied().chain(returned.iter()).collect();
    all_see(&everyone, 30, 30).await.unwrap();
    for (i, heart) in survivors.iter().enumerate() {
        let ticks = heart.ticks();
        assert_eq!(gaps(&ticks), vec![], "survivor {i} missed ticks");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn while_redis_is_down_rooms_run_locally_and_love_waits_then_counts_once() {
    let mut cluster = Cluster::start(2, &[]).await.expect("cluster");
    let addrs = cluster.addrs.clone();
    let room = |i: usize, client: &str| format!("ws://{}/ws/outage?client_id={client}", addrs[i]);
    let mut hearts = Vec::new();
    for (i, id) in [(0, "heart-a0"), (0, "heart-a1"), (1, "heart-b0"), (1, "heart-b1")] {
        hearts.push(Heart::join(&room(i, id), 0.3, 66.0).await.expect("join"));
    }
    let all: Vec<&Heart> = hearts.iter().collect();
    all_see(&all, 4, 4).await.unwrap();
    let (mut lover, _, _) = Client::join(&room(0, "lover-0001")).await.unwrap();
    assert_eq!(love(&mut lover, 2).await.unwrap(), Ack { seq: 2, total: 2 });
    let (status, body) = http_get(cluster.instance(0).addr, "/readyz").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("instance-0"), "{body}");

    cluster.redis.stop().await.unwrap();
    let stopped = Instant::now();
    for i in 0..2 {
        let instance = cluster.instance(i);
        wait_until(PATIENCE, "the operator is told Redis is down", || async {
            let up = metric(instance, "heartsync_redis_up").await?;
            let (status, body) = http_get(instance.addr, "/readyz").await?;
            ensure!(
                up == 0.0 && status == 503 && body.contains("Redis"),
                "instance {i}: redis_up {up}, /readyz {status} {body}"
            );
            Ok(())
        })
        .await
        .unwrap();
    }
    // Each instance runs on its own members.
    let (here, there) = hearts.split_at(2);
    all_see(&here.iter().collect::<Vec<_>>(), 3, 2).await.unwrap();
    all_see(&there.iter().collect::<Vec<_>>(), 2, 2).await.unwrap();
    // Love waits for Redis: no ack while it is down.
    lover.send(&ClientMessage::Love { seq: 5, epoch: 0 }).await;
    while stopped.elapsed() < Duration::from_secs(5) {
        match lover.next_within(Duration::from_millis(200)).await {
            Ok(ServerMessage::Consensus(_)) | Err(_) => {}
            Ok(other) => panic!("while Redis is down: {other:?}"),
        }
    }

    cluster.redis.restart().await.unwrap();
    let ack = love(&mut lover, 5).await;
    // The first reply is the waiting tap's; the resend is a replay.
    assert_eq!(ack.unwrap(), Ack { seq: 5, total: 5 });
    // The same client resending on the other instance is counted once.
    let (mut moved, _, _) = Client::join(&room(1, "lover-0001")).await.unwrap();
    assert_eq!(love(&mut moved, 5).await.unwrap(), Ack { seq: 5, total: 5 });
    assert_eq!(love(&mut moved, 6).await.unwrap(), Ack { seq: 6, total: 6 });
    // The instances subscribed again by themselves.
    all_see(&all, 6, 4).await.unwrap();
    for i in 0..2 {
        assert_eq!(metric(cluster.instance(i), "heartsync_redis_up").await.unwrap(), 1.0);
        assert_eq!(http_get(cluster.instance(i).addr, "/readyz").await.unwrap().0, 200);
    }
    // No room stalled: every heart got every tick, outage included.
    for (i, heart) in hearts.iter().enumerate() {
        assert_eq!(gaps(&heart.ticks()), vec![], "heart {i} missed ticks");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_love_survives_kill_9_of_redis_and_of_the_instance() {
    let mut redis = RedisServer::start().await.expect("redis");
    let data = tempfile::tempdir().unwrap();
    let instance = start_instance(&redis, data.path(), 0, &[]).await.expect("instance");
    let (mut client, _, _) =
        Client::join(&instance.ws_url("/ws/durable?client_id=survivor1")).await.unwrap();
    for seq in 1..=30 {
        assert_eq!(love(&mut client, seq).await.unwrap().total, seq);
    }
    redis.kill().await.unwrap();
    instance.signal("KILL");
    drop((client, instance));
    redis.restart().await.unwrap();
    let total = redis.cli(&["HGET", "heartsync:love:total", "durable"]).await.unwrap();
    assert_eq!(total.trim(), "30", "every acknowledged tap survived in the AOF");

    // Another instance serves the same love, and resends count nothing.
    let instance = start_instance(&redis, data.path(), 1, &[]).await.expect("instance");
    let (mut client, _, first) =
        Client::join(&instance.ws_url("/ws/durable?client_id=survivor1")).await.unwrap();
    assert_eq!(first.love, 30);
    assert_eq!(love(&mut client, 30).await.unwrap().total, 30);
    assert_eq!(love(&mut client, 31).await.unwrap().total, 31);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_love_taps_are_acknowledged_in_order_and_replays_count_nothing() {
    let redis = RedisServer::start().await.expect("redis");
    ordered_acks_and_replays(|c| c.redis_url = Some(redis.url())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_love_concurrent_tappers_add_exactly_what_they_tapped() {
    let redis = RedisServer::start().await.expect("redis");
    concurrent_tappers_and_separate_rooms(|c| c.redis_url = Some(redis.url())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_love_a_resend_across_a_fold_on_another_instance_is_never_counted_twice() {
    let cluster = Cluster::start(2, &["--love-retention", "1s"]).await.expect("cluster");
    let url = |i: usize| format!("ws://{}/ws/faithful?client_id=faithful-1", cluster.addrs[i]);
    a_resend_across_a_fold_counts_once([url(0), url(1)]).await;
    let url = |i: usize| format!("ws://{}/ws/faithful?client_id=first-timer", cluster.addrs[i]);
    a_first_count_resent_after_a_fold_counts_once([url(0), url(1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_unreachable_redis_fails_at_start_with_a_clear_message() {
    // Built (if need be) before the clock starts: the time is the server's.
    let _ = tests::server_binary();
    let started = Instant::now();
    let (code, output) = ServerProcess::start_failing(&["--redis-url", "nope"]).await.unwrap();
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("bad --redis-url"), "{output}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    let started = Instant::now();
    let url = format!("redis://127.0.0.1:{}/0", free_port().unwrap());
    let (code, output) = ServerProcess::start_failing(&["--redis-url", &url]).await.unwrap();
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("cannot reach Redis"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_does_not_fsync_every_write_is_refused_unless_allowed() {
    let redis = RedisServer::start_with(false).await.expect("redis");
    let url = redis.url();
    let (code, output) = ServerProcess::start_failing(&["--redis-url", &url]).await.unwrap();
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("appendfsync") && output.contains("--redis-unsafe-love"), "{output}");
    let data = tempfile::tempdir().unwrap();
    let allowed = start_instance(&redis, data.path(), 0, &["--redis-unsafe-love"]).await;
    allowed.expect("starts when the operator accepts the risk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_on_different_instances_beat_as_one() {
    use tests::browser::{Browser, dist_dir, take_turn};
    let _turn = take_turn().await;
    let body = async {
        let dist = dist_dir()?;
        let dist = dist.to_str().context("a UTF-8 dist path")?.to_owned();
        let cluster = Cluster::start(2, &["--static-dir", &dist]).await?;
        let room = format!("/r/across-{}", std::process::id());
        let (a, b) = tokio::try_join!(Browser::start(), Browser::start())?;
        let (on_a, on_b) =
            (cluster.instance(0).http_url(&room), cluster.instance(1).http_url(&room));
        tokio::try_join!(a.goto(&on_a), b.goto(&on_b))?;
        for page in [&a, &b] {
            page.wait_for_text("status", "connected", |t| t.starts_with("connected")).await?;
        }
        let connected = Instant::now();
        // Each page counts both hearts, though each instance holds one.
        for page in [&a, &b] {
            page.wait_for_text("hearts", "2", |text| text == "2").await?;
        }
        // Three readings running under 0.02 beat, within 10 s.
        let mut streak = 0;
        let mut last = None;
        // Read every 100 ms.
        let mut every = tokio::time::interval(Duration::from_millis(100));
        while streak < 3 {
            every.tick().await;
            ensure!(
                connected.elapsed() < Duration::from_secs(10) || streak > 0,
                "the hearts did not beat together within 10 s; last (gap, a, b): {last:?}"
            );
            let (x, y) = (a.state().await?, b.state().await?);
            let at = x.server_now.max(y.server_now);
            let gap = shared::phase::difference(x.phase_at(at), y.phase_at(at)).abs();
            streak = if gap < 0.02 { streak + 1 } else { 0 };
            last = Some((gap, x, y));
        }
        a.close().await?;
        b.close().await?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(60), body).await {
        Ok(result) => result.expect("browser test"),
        Err(_) => panic!("the browser test took longer than a minute"),
    }
}

/// `GET /api/rooms/{room}/history` on instance `i`, as JSON.
async fn history(cluster: &Cluster, i: usize, room: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_get(cluster.addrs[i], &format!("/api/rooms/{room}/history")).await?;
    ensure!(status == 200, "instance {i} answered {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// A history's buckets.
fn buckets(history: &serde_json::Value) -> Vec<serde_json::Value> {
    history["buckets"].as_array().cloned().unwrap_or_default()
}

/// Reads `room`'s history from every running instance until two reads of
/// the first, taken before and after the others, agree (no bucket was
/// written meanwhile); then every instance must have answered the same.
async fn same_history_everywhere(cluster: &Cluster, room: &str) -> serde_json::Value {
    let running: Vec<usize> =
        (0..cluster.instances.len()).filter(|&i| cluster.instances[i].is_some()).collect();
    wait_until(PATIENCE, "a read of every instance between two equal reads", || async {
        let before = history(cluster, running[0], room).await?;
        let mut others = Vec::new();
        for &i in &running[1..] {
            others.push((i, history(cluster, i, room).await?));
        }
        let after = history(cluster, running[0], room).await?;
        ensure!(before == after, "a bucket was written meanwhile");
        for (i, other) in others {
            assert_eq!(other, before, "instance {i} answers another history");
        }
        Ok(before)
    })
    .await
    .expect("every instance answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_instance_answers_the_same_history_even_for_buckets_it_never_saw() {
    let mut cluster = Cluster::start(2, &["--tick", "100ms"]).await.expect("cluster");
    let started = Instant::now();
    let room = "shared-past";
    let on =
        |i: usize, client: &str| format!("ws://{}/ws/{room}?client_id={client}", cluster.addrs[i]);
    // Two hearts out of step, on instance 0 only.
    let a = Heart::join(&on(0, "heart-000a"), 0.0, 60.0).await.expect("join");
    let b = Heart::join(&on(0, "heart-000b"), 0.3, 75.0).await.expect("join");
    all_see(&[&a, &b], 2, 2).await.unwrap();
    // Instance 1 never had the room open, so only Redis can tell it.
    let seen_by_0 =
        wait_until(Duration::from_secs(30), "instance 1 answers instance 0's buckets", || async {
            let answer = buckets(&history(&cluster, 1, room).await?);
            ensure!(answer.iter().any(|b| b["hearts"] == 2), "{answer:?}");
            Ok(answer)
        })
        .await
        .unwrap();
    assert!(seen_by_0.iter().all(|b| b["hearts"].as_u64() <= Some(2)), "{seen_by_0:?}");

    // Now a heart on instance 1 too, until a bucket both sampled has ended.
    let c = Heart::join(&on(1, "heart-000c"), 0.6, 66.0).await.expect("join");
    all_see(&[&a, &b, &c], 3, 3).await.unwrap();
    wait_until(Duration::from_secs(30), "a bucket with three hearts", || async {
        let answer = buckets(&history(&cluster, 0, room).await?);
        ensure!(answer.iter().any(|b| b["hearts"] == 3), "{answer:?}");
        Ok(())
    })
    .await
    .unwrap();

    // An instance started now answers for all of it as well.
    let data = tempfile::tempdir().expect("a data dir");
    let late = start_instance(&cluster.redis, data.path(), 2, &["--tick", "100ms"]).await;
    cluster.addrs.push(late.as_ref().map(|s| s.addr).expect("a late instance"));
    cluster.instances.push(late.ok());
    let answer = same_history_everywhere(&cluster, room).await;
    let all = buckets(&answer);
    let before_c: Vec<_> = all.iter().take_while(|b| b["hearts"] != 3).collect();
    assert!(before_c.iter().any(|b| b["hearts"] == 2), "instance 0's buckets: {answer}");
    assert!(all.iter().any(|b| b["hearts"] == 3), "{answer}");
    for bucket in &all {
        let (min, mean, max) = (
            bucket["coherence_min"].as_f64().unwrap_or(-1.0),
            bucket["coherence_mean"].as_f64().unwrap_or(-1.0),
            bucket["coherence_max"].as_f64().unwrap_or(-1.0),
        );
        assert!(0.0 <= min && min <= mean && mean <= max && max <= 1.0, "{bucket}");
    }
    assert!(all.windows(2).all(|w| w[0]["start"].as_f64() < w[1]["start"].as_f64()), "{answer}");
    // Entries go to Redis once their bucket has ended, on the writer's own
    // schedule: wait for instance 0's two.
    wait_until(PATIENCE, "one entry per ended bucket, from instance 0", || async {
        let written = metric(cluster.instance(0), "heartsync_history_entries_written_total").await;
        let written = written?;
        ensure!(written >= 2.0, "{written} entries written");
        Ok(())
    })
    .await
    .unwrap();

    // Redis heard of history once per instance and bucket, not per tick
    // (100 ms here), and the room's set expires.
    let stats = cluster.redis.cli(&["INFO", "commandstats"]).await.unwrap();
    let zadds: f64 = stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_zadd:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or_else(|| panic!("no ZADD in {stats}"));
    let buckets_elapsed = started.elapsed().as_secs_f64() / 10.0 + 2.0;
    assert!(zadds <= 2.0 * buckets_elapsed, "{zadds} ZADDs in {:?}", started.elapsed());
    let key = format!("heartsync:history:{room}");
    let ttl: i64 = cluster.redis.cli(&["PTTL", &key]).await.unwrap().trim().parse().expect("PTTL");
    assert!(0 < ttl && ttl <= 3_720_000, "{key} expires: PTTL {ttl}");
}

#[tokio::test(flavor = "multi_thread")]
async fn while_redis_is_down_history_answers_from_memory_then_is_shared_again() {
    let mut cluster = Cluster::start(2, &["--tick", "100ms"]).await.expect("cluster");
    let room = "weathered";
    let on = |i: usize| format!("ws://{}/ws/{room}?client_id=heart-000{i}", cluster.addrs[i]);
    let a = Heart::join(&on(0), 0.0, 60.0).await.expect("join");
    all_see(&[&a], 1, 1).await.unwrap();
    wait_until(Duration::from_secs(30), "a bucket in Redis", || async {
        ensure!(!buckets(&history(&cluster, 1, room).await?).is_empty(), "none yet");
        Ok(())
    })
    .await
    .unwrap();

    let stopped_at = now_ms();
    cluster.redis.stop().await.unwrap();
    // Each instance answers at once from what it sampled itself: instance
    // 0 its buckets, instance 1 (no member) nothing.
    wait_until(PATIENCE, "answers from memory", || async {
        let started = Instant::now();
        let here = buckets(&history(&cluster, 0, room).await?);
        let there = buckets(&history(&cluster, 1, room).await?);
        ensure!(started.elapsed() < Duration::from_secs(3), "slow: {:?}", started.elapsed());
        ensure!(!here.is_empty() && there.is_empty(), "here {here:?}, there {there:?}");
        Ok(())
    })
    .await
    .unwrap();
    for i in 0..2 {
        let fallbacks = metric(cluster.instance(i), "heartsync_history_fallbacks_total").await;
        assert!(fallbacks.unwrap() >= 1.0, "instance {i} counts its fallbacks");
        assert_eq!(metric(cluster.instance(i), "heartsync_history_redis_up").await.unwrap(), 0.0);
    }
    // The room kept ticking meanwhile.
    let seq = a.latest().seq;
    eventually(PATIENCE, "the room ticks without Redis", || {
        ensure!(a.latest().seq > seq + 5, "stuck at {seq}");
        Ok(())
    })
    .await
    .unwrap();

    // A whole bucket passes while Redis is down.
    let outage_bucket = (stopped_at / 10_000.0).ceil() * 10_000.0;
    wait_until(Duration::from_secs(30), "a bucket to end during the outage", || async {
        let here = buckets(&history(&cluster, 0, room).await?);
        ensure!(now_ms() > outage_bucket + 10_500.0, "not ended yet");
        ensure!(here.iter().any(|b| b["start"].as_f64() == Some(outage_bucket)), "{here:?}");
        Ok(())
    })
    .await
    .unwrap();

    // Redis back: what instance 0 could not write reaches it, and both
    // instances answer the same again, the outage's bucket included.
    cluster.redis.restart().await.unwrap();
    for i in 0..2 {
        wait_until(PATIENCE, &format!("instance {i} reads history from Redis again"), || async {
            history(&cluster, i, room).await?;
            let up = metric(cluster.instance(i), "heartsync_history_redis_up").await?;
            ensure!(up == 1.0, "heartsync_history_redis_up {up}");
            Ok(())
        })
        .await
        .unwrap();
    }
    let shared = wait_until(Duration::from_secs(30), "the outage's bucket in Redis", || async {
        let answer = same_history_everywhere(&cluster, room).await;
        let all = buckets(&answer);
        ensure!(all.iter().any(|b| b["start"].as_f64() == Some(outage_bucket)), "{answer}");
        Ok(answer)
    })
    .await
    .unwrap();
    assert!(!buckets(&shared).is_empty());
    assert_eq!(metric(cluster.instance(0), "heartsync_history_redis_up").await.unwrap(), 1.0);
    assert!(!a.ended(), "the heart stayed connected");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_stops_hands_over_the_bucket_it_was_filling() {
    let mut cluster =
        Cluster::start(2, &["--tick", "100ms", "--drain", "1s"]).await.expect("cluster");
    let room = "last-words";
    let url = format!("ws://{}/ws/{room}?client_id=heart-000z", cluster.addrs[0]);
    let heart = Heart::join(&url, 0.0, 60.0).await.expect("join");
    all_see(&[&heart], 1, 1).await.unwrap();
    // Stop instance 0 while a bucket it sampled is still filling.
    let filling = wait_until(Duration::from_secs(20), "a bucket under way", || async {
        let latest = heart.latest();
        let start = (latest.at / 10_000.0).floor() * 10_000.0;
        let into = now_ms() - start;
        ensure!(latest.seq > 0 && (1_000.0..7_000.0).contains(&into), "{into} ms into the bucket");
        Ok(start)
    })
    .await
    .unwrap();
    let mut stopped = cluster.instances[0].take().expect("instance 0");
    stopped.signal("TERM");
    stopped.wait(PATIENCE).await.expect("instance 0 stops");
    // Only instance 0 ever sampled the room, and its sampler is gone: the
    // bucket can only be there because it was handed over on the way out.
    let answer = history(&cluster, 1, room).await.unwrap();
    assert!(
        buckets(&answer).iter().any(|b| b["start"].as_f64() == Some(filling)),
        "bucket {filling} missing: {answer}"
    );
}
