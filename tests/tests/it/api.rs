//! The read API, its Server-Sent Events, and private rooms, against the real
//! server over real sockets: paging, refusals, SSE framing, thinning,
//! keep-alive, resume and drain, and join tokens refused before the upgrade.
//!
//! The HTTP helpers here are private to this file (the shared helpers have
//! no request headers and no streaming): a GET with headers, and an SSE
//! reader that decodes the chunked body as it arrives.

use anyhow::{Context, bail};
use backend::auth::{Claims, Tokens};
use shared::{Consensus, RoomName, ServerMessage};
use std::net::SocketAddr;
use std::time::Duration;
use tests::{Client, Ended, PATIENCE, ServerProcess, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "an-integration-test-secret-of-enough-bytes";

/// A response: status, lower-cased head, body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }
}

/// Sends a GET for `path` with `headers`; the head (lower-cased) and a
/// stream positioned at the body.
async fn request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buffer = Vec::new();
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await??;
        if n == 0 {
            bail!("connection closed before the end of the headers");
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    let rest = buffer[end + 4..].to_vec();
    let status = head.split_whitespace().nth(1).context("no status")?.parse()?;
    Ok((status, head, stream, rest))
}

/// A whole GET: status, head, and the (de-chunked) body.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    let (status, head, stream, rest) = request(addr, path, &all).await.expect("a response");
    let mut body =
        Body { stream, buffer: rest, chunked: head.contains("transfer-encoding: chunked") };
    let body = body.read_to_end().await.expect("a body");
    Reply { status, head, body }
}

/// A response body read as it arrives.
struct Body {
    stream: TcpStream,
    buffer: Vec<u8>,
    chunked: bool,
}

impl Body {
    async fn fill(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<bool> {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
            .await
            .context("timed out reading the body")??;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next chunk's data; `None` at the end of the body.
    async fn next_chunk(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        if !self.chunked {
            if self.buffer.is_empty() && !self.fill(deadline).await? {
                return Ok(None);
            }
            return Ok(Some(std::mem::take(&mut self.buffer)));
        }
        loop {
            if let Some(line_end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let size = std::str::from_utf8(&self.buffer[..line_end])?;
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
                if size == 0 {
                    return Ok(None);
                }
                let needed = line_end + 2 + size + 2;
                if self.buffer.len() >= needed {
                    let data = self.buffer[line_end + 2..line_end + 2 + size].to_vec();
                    self.buffer.drain(..needed);
                    return Ok(Some(data));
                }
            }
            if !self.fill(deadline).await? {
                return Ok(None);
            }
        }
    }

    async fn read_to_end(&mut self) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut out = Vec::new();
        while let Some(data) = self.next_chunk(deadline).await? {
            out.extend(data);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// One SSE message: its fields in order (a comment has field "").
#[derive(Debug, Clone, Default)]
struct Frame {
    fields: Vec<(String, String)>,
}

impl Frame {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn is_comment(&self) -> bool {
        self.fields.iter().all(|(k, _)| k.is_empty())
    }

    /// The consensus in `data:`, checked against `event:` and `id:`.
    fn consensus(&self) -> Consensus {
        assert_eq!(self.get("event"), Some("consensus"), "{self:?}");
        let data = self.get("data").expect("a data field");
        let ServerMessage::Consensus(c) = ServerMessage::parse(data).expect("protocol v1 JSON")
        else {
            panic!("not a consensus: {data}");
        };
        assert_eq!(self.get("id"), Some(c.seq.to_string().as_str()), "id is the seq");
        c
    }
}

/// An open event stream.
struct Events {
    status: u16,
    head: String,
    body: Body,
    text: String,
}

impl Events {
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let (status, head, stream, rest) = request(addr, path, headers).await.expect("a response");
        let chunked = head.contains("transfer-encoding: chunked");
        Self { status, head, body: Body { stream, buffer: rest, chunked }, text: String::new() }
    }

    /// The next message (event or comment) within `patience`; `None` when
    /// the stream ends.
    async fn next_within(&mut self, patience: Duration) -> anyhow::Result<Option<Frame>> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let fields = block
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|line| match line.split_once(':') {
                        Some((k, v)) => (k.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                        None => (line.to_owned(), String::new()),
                    })
                    .collect();
                return Ok(Some(Frame { fields }));
            }
            match self.body.next_chunk(deadline).await? {
                Some(data) => self.text.push_str(&String::from_utf8_lossy(&data)),
                None => return Ok(None),
            }
        }
    }

    /// The next consensus event, skipping comments.
    async fn next_consensus(&mut self) -> Consensus {
        loop {
            let frame =
                self.next_within(PATIENCE).await.expect("an event").expect("the stream is open");
            if !frame.is_comment() {
                return frame.consensus();
            }
        }
    }
}

fn tokens() -> Tokens {
    Tokens::new(&SECRET.parse().expect("a secret"))
}

fn token(room: &str, ttl: Duration) -> String {
    let room = RoomName::parse(room).expect("a room");
    tokens().mint(&room, ttl, None, tests::now_ms()).expect("minted")
}

async fn private_server() -> TestServer {
    TestServer::start_with(|c| {
        c.private_rooms = true;
        c.token_secret = Some(SECRET.parse().expect("a secret"));
    })
    .await
}

/// Upgrades to `url`: the client, or the refusal's status and JSON body.
async fn connect(url: &str) -> Result<Client, (u16, serde_json::Value)> {
    match Client::connect(url).await {
        Ok(client) => Ok(client),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            Err((response.status().as_u16(), json))
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_listed_most_hearts_first_a_page_at_a_time() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for (room, hearts) in [("alpha", 1), ("beta", 3), ("gamma", 2), ("delta", 2)] {
        for _ in 0..hearts {
            clients.push(server.join(&format!("/ws/{room}")).await.0);
        }
    }
    // The listing reads each room's last tick: wait until it has them all.
    let all = tests::wait_until(PATIENCE, "the listing shows all 8 hearts", || async {
        let reply = get(server.addr, "/api/rooms?limit=500", &[]).await;
        anyhow::ensure!(reply.status == 200, "status {}", reply.status);
        let rooms: Vec<(String, u64)> = reply.json()["rooms"]
            .as_array()
            .context("rooms")?
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["hearts"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        anyhow::ensure!(rooms.iter().map(|r| r.1).sum::<u64>() == 8, "{rooms:?}");
        Ok(rooms)
    })
    .await
    .expect("every room listed with its hearts");
    let expected = [("beta", 3), ("delta", 2), ("gamma", 2), ("alpha", 1)];
    assert_eq!(all, expected.map(|(n, h)| (n.to_owned(), h)));

    let mut paged = Vec::new();
    let mut path = String::from("/api/rooms?limit=3");
    loop {
        let page = get(server.addr, &path, &[]).await.json();
        paged.extend(page["rooms"].as_array().expect("rooms").iter().map(|r| r["name"].clone()));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/rooms?limit=3&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, ["beta", "delta", "gamma", "alpha"]);

    let one = get(server.addr, "/api/rooms/beta", &[]).await;
    assert_eq!(one.status, 200);
    assert_eq!(
        (one.json()["type"].as_str(), one.json()["hearts"].as_u64()),
        (Some("consensus"), Some(3))
    );
    for client in clients {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_400_and_empty_rooms_404_all_in_json() {
    let server = TestServer::start().await;
    for (path, status) in [
        ("/api/rooms/nobody-here", 404),
        ("/api/rooms/nobody-here/events", 404),
        ("/api/rooms/bad%20name", 400),
        ("/api/rooms/bad%20name/events", 400),
        ("/api/rooms/bad%20name/history", 400),
        ("/api/rooms?limit=0", 400),
        ("/api/rooms?limit=501", 400),
        ("/api/rooms?limit=ten", 400),
        ("/api/rooms?cursor=nonsense", 400),
        ("/api/rooms/x/history?minutes=61", 400),
        ("/api/rooms/x/events?hz=0", 400),
    ] {
        let reply = get(server.addr, path, &[]).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"), "{path}");
        assert!(reply.json()["error"].is_string(), "{path}: {}", reply.body);
    }
    let doc = get(server.addr, "/api/openapi.json", &[]).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json()["openapi"], "3.1.0");
    let history = get(server.addr, "/api/rooms/never-seen/history", &[]).await;
    assert_eq!(
        (history.status, history.json()["buckets"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_stream_sends_each_tick_as_protocol_json_with_its_seq_as_id() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(100)).await;
    let (client, _, _) = server.join("/ws/stream").await;
    let mut events = Events::open(server.addr, "/api/rooms/stream/events", &[]).await;
    assert_eq!(events.status, 200);
    assert!(events.head.contains("content-type: text/event-stream"), "{}", events.head);
    assert!(events.head.contains("x-accel-buffering: no"));
    assert!(events.head.contains("cache-control: no-cache"));
    let first = events.next_within(PATIENCE).await.expect("read").expect("an event");
    assert_eq!(first.get("retry"), Some("2000"), "a retry hint first: {first:?}");
    let mut last = first.consensus();
    assert_eq!(last.hearts, 1, "the stream is not a heart");
    for _ in 0..5 {
        let next = events.next_consensus().await;
        assert_eq!(next.seq, last.seq + 1, "one event per tick, in order");
        last = next;
    }
    let metrics = get(server.addr, "/metrics", &[]).await.body;
    // The recorder is shared by every server in this test process, so only
    // what this stream guarantees is checked.
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(value("heartsync_sse_streams_open ") >= 1.0, "{metrics}");
    assert!(value("heartsync_sse_events_sent_total ") >= 6.0, "{metrics}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hz_thins_a_stream_to_the_newest_consensus_at_that_rate() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(50)).await;
    let (client, _, _) = server.join("/ws/thin").await;
    let mut events = Events::open(server.addr, "/api/rooms/thin/events?hz=2", &[]).await;
    let mut seen = vec![events.next_consensus().await];
    for _ in 0..3 {
        seen.push(events.next_consensus().await);
    }
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        // 2 Hz: at least 500 ms apart, less one tick of the room's timing.
        assert!(gap >= 450.0, "events {gap} ms apart: {seen:?}");
        assert!(pair[1].seq >= pair[0].seq + 9, "ticks in between are skipped");
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_stream_gets_keep_alive_comments() {
    let server = TestServer::start_with(|c| {
        c.tick = Duration::from_secs(30);
        c.sse_keep_alive = Duration::from_millis(200);
    })
    .await;
    let (client, _, _) = server.join("/ws/idle").await;
    let mut events = Events::open(server.addr, "/api/rooms/idle/events", &[]).await;
    events.next_consensus().await;
    for _ in 0..2 {
        let frame = events.next_within(Duration::from_secs(2)).await.expect("read").expect("open");
        assert!(frame.is_comment(), "only a comment while the room is quiet: {frame:?}");
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_with_last_event_id_resumes_at_the_newest_without_repeating() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(300)).await;
    let (client, _, _) = server.join("/ws/resume").await;
    let mut first = Events::open(server.addr, "/api/rooms/resume/events", &[]).await;
    let seen = first.next_consensus().await;
    drop(first);
    let id = seen.seq.to_string();
    let mut again =
        Events::open(server.addr, "/api/rooms/resume/events", &[("Last-Event-ID", &id)]).await;
    let resumed = again.next_consensus().await;
    assert!(resumed.seq > seen.seq, "{} after {}", resumed.seq, seen.seq);
    // An id from long ago: the newest comes at once.
    let mut old =
        Events::open(server.addr, "/api/rooms/resume/events", &[("Last-Event-ID", "0")]).await;
    assert!(old.next_consensus().await.seq >= resumed.seq);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_count_against_the_connection_cap_and_end_on_drain() {
    let server = TestServer::start_with(|c| {
        c.max_connections = 2;
        c.drain = Duration::from_millis(500);
    })
    .await;
    let (client, _, _) = server.join("/ws/drain").await;
    let mut events = Events::open(server.addr, "/api/rooms/drain/events", &[]).await;
    events.next_consensus().await;
    let full = get(server.addr, "/api/rooms/drain/events", &[]).await;
    assert_eq!(full.status, 503, "two connections are the cap: {}", full.body);
    assert_eq!(connect(&server.ws_url("/ws/drain")).await.err().map(|e| e.0), Some(503));

    let addr = server.addr;
    let shutdown = tokio::spawn(server.shutdown());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match events.next_within(left).await.expect("the stream ends in time") {
            Some(_) => continue,
            None => break,
        }
    }
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finishes")
        .expect("joined")
        .expect("clean shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "the server is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_shows_the_rooms_recent_buckets() {
    let server = TestServer::start_with(|c| c.tick = Duration::from_millis(50)).await;
    let (client, _, _) = server.join("/ws/past").await;
    let history = tests::wait_until(PATIENCE, "a bucket with the heart", || async {
        let reply = get(server.addr, "/api/rooms/past/history?minutes=5", &[]).await;
        anyhow::ensure!(reply.status == 200, "status {}", reply.status);
        let json = reply.json();
        let buckets = json["buckets"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(buckets.iter().any(|b| b["hearts"] == 1), "no bucket recorded: {json}");
        Ok(json)
    })
    .await
    .expect("history recorded");
    assert_eq!(history["bucket_seconds"], 10);
    for bucket in history["buckets"].as_array().expect("buckets") {
        assert_eq!(bucket["hearts"], 1, "{history}");
        assert_eq!(bucket["start"].as_f64().map(|s| s % 10_000.0), Some(0.0));
        let (min, mean, max) =
            (&bucket["coherence_min"], &bucket["coherence_mean"], &bucket["coherence_max"]);
        assert!(min.as_f64() <= mean.as_f64() && mean.as_f64() <= max.as_f64(), "{bucket}");
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_room_refuses_strangers_before_the_upgrade() {
    let server = private_server().await;
    let room = "private-den";
    let url = |token: &str| server.ws_url(&format!("/ws/{room}?token={token}"));
    let missing = connect(&server.ws_url(&format!("/ws/{room}"))).await.err().expect("refused");
    assert_eq!((missing.0, missing.1["reason"].as_str()), (401, Some("missing")));

    let valid = token(room, Duration::from_secs(600));
    let other_secret =
        Tokens::new(&"some-other-secret-of-more-than-32-bytes".parse().expect("secret"))
            .mint(
                &RoomName::parse(room).expect("room"),
                Duration::from_secs(600),
                None,
                tests::now_ms(),
            )
            .expect("minted");
    let other_room = token("private-elsewhere", Duration::from_secs(600));
    let expired = tokens()
        .sign(&Claims { room: room.into(), exp: (tests::now_ms() / 1000.0) as u64 - 5, sub: None })
        .expect("signed");
    let parts: Vec<&str> = valid.split('.').collect();
    let other_parts: Vec<&str> = other_room.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    for (token, reason) in [
        (other_secret.as_str(), "bad_signature"),
        (other_room.as_str(), "wrong_room"),
        (expired.as_str(), "expired"),
        (tampered.as_str(), "bad_signature"),
        (alg_none.as_str(), "malformed"),
        ("garbage", "malformed"),
    ] {
        let refused =
            connect(&url(token)).await.err().unwrap_or_else(|| panic!("{reason} admitted"));
        assert_eq!((refused.0, refused.1["reason"].as_str()), (403, Some(reason)));
    }
    let metrics = get(server.addr, "/metrics", &[]).await.body;
    assert!(
        metrics.contains(r#"heartsync_tokens_refused_total{reason="wrong_room"} "#),
        "{metrics}"
    );

    let (client, welcome, _) =
        Client::join(&url(&valid)).await.expect("a token holder is admitted");
    assert_eq!(welcome.room, room);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_binds_its_client_id_and_opens_no_other_room() {
    let server = private_server().await;
    let bound = tokens()
        .mint(
            &RoomName::parse("private-a").expect("room"),
            Duration::from_secs(60),
            Some("alice-0001"),
            tests::now_ms(),
        )
        .expect("minted");
    let (client, welcome, _) =
        Client::join(&server.ws_url(&format!("/ws/private-a?token={bound}")))
            .await
            .expect("admitted");
    assert_eq!(welcome.client_id, "alice-0001");
    client.close().await;
    let impostor =
        connect(&server.ws_url(&format!("/ws/private-a?token={bound}&client_id=mallory-01"))).await;
    assert_eq!(
        impostor.err().map(|e| (e.0, e.1["reason"].clone())),
        Some((403, "wrong_client".into()))
    );
    let elsewhere = connect(&server.ws_url(&format!("/ws/private-b?token={bound}"))).await;
    assert_eq!(elsewhere.err().map(|e| e.0), Some(403));

    // A token naming a public room opens only that public room, which
    // needs none; it does not open the private room of the same name.
    let public = tokens()
        .sign(&Claims {
            room: "kitchen".into(),
            exp: (tests::now_ms() / 1000.0) as u64 + 60,
            sub: None,
        })
        .expect("signed");
    let (client, _, _) =
        Client::join(&server.ws_url(&format!("/ws/kitchen?token={public}"))).await.expect("public");
    client.close().await;
    let (client, _, _) = Client::join(&server.ws_url("/ws/kitchen")).await.expect("public");
    client.close().await;
    let private = connect(&server.ws_url(&format!("/ws/private-kitchen?token={public}"))).await;
    assert_eq!(private.err().map(|e| e.0), Some(403));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_is_closed_with_1008_when_its_token_expires() {
    let server = private_server().await;
    // `exp` is in whole seconds: this token lasts one to two seconds.
    let short = token("private-brief", Duration::from_secs(2));
    let (mut client, _, _) =
        Client::join(&server.ws_url(&format!("/ws/private-brief?token={short}")))
            .await
            .expect("admitted");
    assert_eq!(client.ended(Duration::from_secs(6)).await.expect("closed"), Ended::Closed(1008));
}

#[tokio::test(flavor = "multi_thread")]
async fn private_rooms_read_api_and_streams_need_the_same_token() {
    let server = private_server().await;
    let valid = token("private-den", Duration::from_secs(600));
    let (client, _, _) = Client::join(&server.ws_url(&format!("/ws/private-den?token={valid}")))
        .await
        .expect("admitted");
    let bearer = format!("Bearer {valid}");
    let other = format!("Bearer {}", token("private-other", Duration::from_secs(600)));
    for path in [
        "/api/rooms/private-den",
        "/api/rooms/private-den/history",
        "/api/rooms/private-den/events",
    ] {
        assert_eq!(get(server.addr, path, &[]).await.status, 401, "{path}");
        assert_eq!(
            get(server.addr, path, &[("Authorization", &other)]).await.status,
            403,
            "{path}"
        );
    }
    assert_eq!(
        get(server.addr, "/api/rooms/private-den", &[("Authorization", &bearer)]).await.status,
        200
    );
    let history =
        get(server.addr, "/api/rooms/private-den/history", &[("Authorization", &bearer)]).await;
    assert_eq!(history.status, 200);
    let mut events =
        Events::open(server.addr, "/api/rooms/private-den/events", &[("Authorization", &bearer)])
            .await;
    assert_eq!(events.status, 200);
    events.next_consensus().await;
    let mut by_query =
        Events::open(server.addr, &format!("/api/rooms/private-den/events?token={valid}"), &[])
            .await;
    assert_eq!(by_query.status, 200);
    by_query.next_consensus().await;

    // Listed nowhere, even with people in it (once the room has ticked
    // with its heart, which the token holder can see).
    tests::wait_until(PATIENCE, "the private room counts its heart", || async {
        let room = get(server.addr, "/api/rooms/private-den", &[("Authorization", &bearer)]).await;
        anyhow::ensure!(room.status == 200 && room.json()["hearts"] == 1, "{}", room.json());
        Ok(())
    })
    .await
    .expect("the room ticked");
    let listing = get(server.addr, "/api/rooms", &[("Authorization", &bearer)]).await.json();
    assert_eq!(listing["rooms"].as_array().map(Vec::len), Some(0), "{listing}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn private_rooms_are_closed_unless_enabled_and_need_a_secret_to_start() {
    let server = TestServer::start().await;
    let refused = connect(&server.ws_url("/ws/private-den")).await.err().expect("refused");
    assert_eq!((refused.0, refused.1["reason"].as_str()), (403, Some("disabled")));

    let (code, output) = ServerProcess::start_failing(&["--private-rooms"]).await.expect("ran");
    assert_ne!(code, Some(0));
    assert!(output.contains("--token-secret"), "{output}");
    let (code, output) =
        ServerProcess::start_failing(&["--private-rooms", "--token-secret", "short"])
            .await
            .expect("ran");
    assert_ne!(code, Some(0));
    assert!(output.contains("at least 32 bytes"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_command_mints_a_share_link_and_tokens_never_reach_the_logs() {
    let output = tokio::process::Command::new(tests::server_binary())
        .args([
            "token",
            "--room",
            "private-x",
            "--ttl",
            "1h",
            "--public-url",
            "http://heart.example/",
        ])
        .env("HEARTSYNC_TOKEN_SECRET", SECRET)
        .output()
        .await
        .expect("ran");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let [token, link] = lines[..] else { panic!("two lines: {stdout}") };
    assert_eq!(link, format!("http://heart.example/r/private-x#token={token}"));

    // The server at debug level, where every request is logged.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("addr")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    let data = tempfile::tempdir().expect("a data dir");
    let server = tokio::process::Command::new(tests::server_binary())
        .args([
            "--addr",
            &addr.to_string(),
            "--private-rooms",
            "--log",
            "debug",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env("HEARTSYNC_TOKEN_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawned");
    tests::wait_until(Duration::from_secs(20), "the server to listen", || async {
        Ok(TcpStream::connect(addr).await?)
    })
    .await
    .expect("the server listens");
    let ws = |path: &str| format!("ws://{addr}{path}");
    let (client, _, _) =
        Client::join(&ws(&format!("/ws/private-x?token={token}"))).await.expect("admitted");
    let refused = connect(&ws("/ws/private-x?token=secret-looking-garbage")).await;
    assert_eq!(refused.err().map(|e| e.0), Some(403));
    let bearer = format!("Bearer {token}");
    assert_eq!(get(addr, "/api/rooms/private-x", &[("Authorization", &bearer)]).await.status, 200);
    client.close().await;
    let pid = server.id().expect("a pid").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(15), server.wait_with_output())
        .await
        .expect("exits in time")
        .expect("output");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(logs.contains("private-x"), "the logs name the path: {logs}");
    assert!(!logs.contains(token), "a token reached the logs");
    assert!(!logs.contains("secret-looking-garbage"), "a token reached the logs");
    assert!(!logs.contains(SECRET), "the secret reached the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_for_the_read_api_is_off_unless_configured() {
    let origin = ("Origin", "https://dashboard.example");
    let closed = TestServer::start().await;
    let reply = get(closed.addr, "/api/rooms", &[origin]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), None);

    let open =
        TestServer::start_with(|c| c.api_cors_origins = vec!["https://dashboard.example".into()])
            .await;
    let reply = get(open.addr, "/api/rooms", &[origin]).await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://dashboard.example"));
    let other = get(open.addr, "/api/rooms", &[("Origin", "https://elsewhere.example")]).await;
    assert_eq!(other.header("access-control-allow-origin"), None);
}

/// A real page in a private room from a share link: it joins with the
/// fragment's token, keeps it in sessionStorage, drops it from the address
/// bar, and shows the room's coherence strip with its trend as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_link_opens_a_private_room_in_the_browser_and_shows_its_history() {
    use tests::browser::{Browser, dist_dir, take_turn};
    use tests::wait_until;
    let _turn = take_turn().await;
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        let dist = dist_dir()?;
        let server = TestServer::start_with(|c| {
            c.static_dir = dist;
            c.drain = Duration::from_millis(200);
            c.tick = Duration::from_millis(100);
            c.private_rooms = true;
            c.token_secret = Some(SECRET.parse().expect("a secret"));
        })
        .await;
        let room = "private-browser";
        let link =
            server.http_url(&format!("/r/{room}#token={}", token(room, Duration::from_secs(600))));
        let browser = Browser::start().await?;
        browser.goto(&link).await?;
        browser.wait_for_text("status", "connected", |text| text.starts_with("connected")).await?;
        let href = browser.eval("return window.location.href;").await?;
        anyhow::ensure!(
            !href.as_str().unwrap_or("#").contains('#'),
            "the token stayed in the address bar: {href}"
        );
        let kept = browser
            .eval(&format!("return sessionStorage.getItem('heartsync.token.{room}');"))
            .await?;
        anyhow::ensure!(
            kept.as_str().is_some_and(|t| t.split('.').count() == 3),
            "sessionStorage has {kept}"
        );

        // The room is seconds old: the strip is there, empty, and says so
        // (an answer, so the page's history request carried the token).
        let strip = |expected: &'static str| {
            let browser = &browser;
            async move {
                wait_until(Duration::from_secs(10), expected, || async {
                    let found = browser
                        .eval(
                            "const s = document.querySelector('[data-testid=history]'); \
                             return s ? [s.getAttribute('aria-label'), s.children.length] : null;",
                        )
                        .await?;
                    let label = found[0].as_str().unwrap_or_default().to_owned();
                    anyhow::ensure!(label.starts_with(expected), "the strip says {found}");
                    anyhow::ensure!(found[1] == 360, "one cell per 10 s for an hour: {found}");
                    Ok(label)
                })
                .await
            }
        };
        strip("No coherence history").await?;

        // Once the room has a bucket, a reload without the fragment (the
        // token now from sessionStorage) shows it, and says the trend.
        let bearer = format!("Bearer {}", token(room, Duration::from_secs(600)));
        wait_until(Duration::from_secs(10), "a bucket of history", || async {
            let reply = get(
                server.addr,
                &format!("/api/rooms/{room}/history"),
                &[("Authorization", &bearer)],
            )
            .await;
            anyhow::ensure!(
                reply.json()["buckets"].as_array().is_some_and(|b| !b.is_empty()),
                "{}",
                reply.body
            );
            Ok(())
        })
        .await?;
        browser.goto(&server.http_url(&format!("/r/{room}"))).await?;
        browser
            .wait_for_text("status", "connected again", |text| text.starts_with("connected"))
            .await?;
        let label = strip("Coherence over the last").await?;
        anyhow::ensure!(label.contains("now "), "{label}");
        browser.close().await?;
        server.shutdown().await
    })
    .await;
    outcome.expect("within two minutes").expect("the browser test");
}
