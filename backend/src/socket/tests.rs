//! The handler over a pair of channels, under `tokio::time::pause()` where
//! timing is the point.

use super::*;
use crate::clock::Clock;
use crate::love::LoveStore;
use crate::love::memory::{Commit, MemoryLove};
use crate::{AppState, Config};
use axum::extract::ws::{CloseFrame, Utf8Bytes};
use futures_util::Sink;
use shared::{ClientMessage, ErrorCode, LoveAck, PhaseReport};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::PollSender;

/// Protocol time at the start of every test.
const T0: f64 = 1_700_000_000_000.0;

/// The server's end: what the peer sends comes out of `incoming`, what the
/// handler writes goes into a bounded channel (a full one is a client that
/// stopped reading).
struct ChannelSocket {
    incoming: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
    outgoing: PollSender<Message>,
}

impl Stream for ChannelSocket {
    type Item = Result<Message, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for ChannelSocket {
    type Error = axum::Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_reserve(cx).map_err(axum::Error::new)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.outgoing.send_item(item).map_err(axum::Error::new)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.close();
        Poll::Ready(Ok(()))
    }
}

/// The client's end, and the connection's task.
struct Peer {
    to_server: mpsc::UnboundedSender<Result<Message, axum::Error>>,
    from_server: mpsc::Receiver<Message>,
    task: JoinHandle<CloseReason>,
}

impl Peer {
    fn send(&self, message: &ClientMessage) {
        self.send_frame(Message::Text(Utf8Bytes::from(message.to_json())));
    }

    fn send_frame(&self, frame: Message) {
        // A closed connection no longer reads; what the peer sends is lost,
        // as on a real socket.
        let _ = self.to_server.send(Ok(frame));
    }

    /// The next frame the server wrote.
    async fn next(&mut self) -> Message {
        self.from_server.recv().await.expect("the server closed the channel without a close frame")
    }

    /// The next protocol message other than a consensus.
    async fn reply(&mut self) -> ServerMessage {
        loop {
            match self.next().await {
                Message::Text(text) => {
                    match ServerMessage::parse(text.as_str()).expect("the server's JSON parses") {
                        ServerMessage::Consensus(_) => continue,
                        other => return other,
                    }
                }
                Message::Close(frame) => panic!("closed while waiting for a reply: {frame:?}"),
                _ => continue,
            }
        }
    }

    async fn error(&mut self) -> ErrorCode {
        match self.reply().await {
            ServerMessage::Error(error) => error.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Reads until the close frame, and returns it with why the handler ended.
    async fn closed(mut self) -> (Option<CloseFrame>, CloseReason) {
        let frame = loop {
            match self.from_server.recv().await {
                Some(Message::Close(frame)) => break frame,
                Some(_) => continue,
                None => break None,
            }
        };
        (frame, self.task.await.expect("the handler does not panic"))
    }
}

/// The defaults, but a room that ticks once an hour, so consensus does not
/// crowd the replies a test looks for.
fn quiet() -> Config {
    Config { tick: Duration::from_secs(3600), ..Config::default() }
}

fn state_with(config: Config, love: MemoryLove) -> AppState {
    AppState::with_clock(config, LoveStore::start(love), Clock::following_tokio(T0))
}

/// Connects a client whose socket buffers `window` frames, and reads its
/// welcome and first consensus.
async fn connect_with_window(state: &AppState, window: usize) -> Peer {
    let (to_server, incoming) = mpsc::unbounded_channel();
    let (outgoing, from_server) = mpsc::channel(window);
    let socket = ChannelSocket { incoming, outgoing: PollSender::new(outgoing) };
    let connection = Connection {
        conn: state.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        room: RoomName::main(),
        client_id: ClientId::parse("abcdefgh").expect("a valid client id"),
        slot: state.limits.admit(std::net::Ipv4Addr::LOCALHOST.into()).expect("room under the cap"),
        expires: None,
    };
    let task = tokio::spawn(serve(socket, state.clone(), connection));
    let mut peer = Peer { to_server, from_server, task };
    match ServerMessage::parse(&text(peer.next().await)) {
        Ok(ServerMessage::Welcome(welcome)) => assert_eq!(welcome.room, "main"),
        other => panic!("expected the welcome, got {other:?}"),
    }
    match ServerMessage::parse(&text(peer.next().await)) {
        Ok(ServerMessage::Consensus(_)) => {}
        other => panic!("expected a consensus, got {other:?}"),
    }
    peer
}

async fn connect(state: &AppState) -> Peer {
    connect_with_window(state, 64).await
}

fn text(message: Message) -> String {
    match message {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

fn close_code(frame: Option<CloseFrame>) -> Option<u16> {
    frame.map(|f| f.code)
}

#[tokio::test(start_paused = true)]
async fn a_ping_goes_out_every_interval_and_a_missing_pong_closes() {
    let state = state_with(quiet(), MemoryLove::default());
    let mut peer = connect(&state).await;
    let start = Instant::now();
    assert!(matches!(peer.next().await, Message::Ping(_)));
    assert_eq!(start.elapsed(), Duration::from_secs(25));
    peer.send_frame(Message::Pong(Default::default()));
    assert!(matches!(peer.next().await, Message::Ping(_)), "answered: pinged again");
    assert_eq!(start.elapsed(), Duration::from_secs(50));
    let (frame, reason) = peer.closed().await;
    assert_eq!(reason, CloseReason::PongTimeout);
    assert_eq!(close_code(frame), Some(1001));
    assert_eq!(start.elapsed(), Duration::from_secs(60), "10 s after the unanswered ping");
}

#[tokio::test(start_paused = true)]
async fn replies_do_not_wait_for_the_ping() {
    let state = state_with(quiet(), MemoryLove::default());
    let mut peer = connect(&state).await;
    let start = Instant::now();
    peer.send(&ClientMessage::Time { t0: 5.0 });
    match peer.reply().await {
        ServerMessage::Time(time) => assert_eq!((time.t0, time.server_time), (5.0, T0)),
        other => panic!("expected a time reply, got {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn over_the_rate_messages_are_dropped_and_a_flood_closes() {
    let config = Config {
        message_rate: 1,
        message_burst: 2,
        flood_close_after: Duration::from_secs(3),
        ..quiet()
    };
    let state = state_with(config, MemoryLove::default());
    let mut peer = connect(&state).await;
    let start = Instant::now();
    for _ in 0..3 {
        peer.send(&ClientMessage::Time { t0: 1.0 });
    }
    assert!(matches!(peer.reply().await, ServerMessage::Time(_)));
    assert!(matches!(peer.reply().await, ServerMessage::Time(_)));
    assert_eq!(peer.error().await, ErrorCode::RateLimited);
    // Ten a second against a refill of one: every pause between drops is
    // 100 ms, so the run is never forgiven.
    while !peer.task.is_finished() {
        tokio::time::advance(Duration::from_millis(100)).await;
        peer.send(&ClientMessage::Time { t0: 1.0 });
        tokio::task::yield_now().await;
    }
    let flooded = start.elapsed();
    assert!(
        (Duration::from_secs(3)..Duration::from_millis(3_300)).contains(&flooded),
        "closed after {flooded:?} of flooding"
    );
    let (frame, reason) = peer.closed().await;
    assert_eq!(reason, CloseReason::Flood);
    assert_eq!(close_code(frame), Some(1008));
}

/// Issue 16, defect 1: control frames got round the rate limit, so a
/// client sending 1-byte pongs (or pings) as fast as it could was never
/// closed. Each now counts against the message budget.
#[tokio::test(start_paused = true)]
async fn a_flood_of_control_frames_is_closed_like_a_message_flood() {
    let config = Config {
        message_rate: 1,
        message_burst: 2,
        flood_close_after: Duration::from_secs(3),
        ..quiet()
    };
    for control in [Message::Pong(vec![1].into()), Message::Ping(vec![1].into())] {
        let state = state_with(config.clone(), MemoryLove::default());
        let peer = connect(&state).await;
        let start = Instant::now();
        while !peer.task.is_finished() {
            assert!(start.elapsed() < Duration::from_secs(20), "{control:?} flood never closed");
            tokio::time::advance(Duration::from_millis(100)).await;
            peer.send_frame(control.clone());
            tokio::task::yield_now().await;
        }
        let flooded = start.elapsed();
        assert!(
            (Duration::from_secs(3)..Duration::from_millis(3_400)).contains(&flooded),
            "closed after {flooded:?} of {control:?}"
        );
        let (frame, reason) = peer.closed().await;
        assert_eq!(reason, CloseReason::Flood);
        assert_eq!(close_code(frame), Some(1008));
    }
}

#[tokio::test(start_paused = true)]
async fn violations_close_only_within_the_window() {
    let config = Config { max_violations: 3, violation_window: Duration::from_secs(10), ..quiet() };
    let state = state_with(config, MemoryLove::default());
    let mut peer = connect(&state).await;
    for _ in 0..2 {
        peer.send_frame(Message::Text(Utf8Bytes::from_static("not json")));
        assert_eq!(peer.error().await, ErrorCode::BadJson);
    }
    // Those two leave the window.
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..2 {
        peer.send_frame(Message::Binary(Default::default()));
        assert_eq!(peer.error().await, ErrorCode::BinaryFrame);
    }
    peer.send_frame(Message::Text(Utf8Bytes::from_static(r#"{"type":"dance"}"#)));
    let (frame, reason) = peer.closed().await;
    assert_eq!(reason, CloseReason::Violations);
    assert_eq!(close_code(frame), Some(1008));
}

#[tokio::test(start_paused = true)]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let state = state_with(quiet(), MemoryLove::default());
    let peer = connect(&state).await;
    let too_long = tungstenite::error::CapacityError::MessageTooLong { size: 5000, max_size: 4096 };
    let _ = peer.to_server.send(Err(axum::Error::new(tungstenite::Error::Capacity(too_long))));
    let (frame, reason) = peer.closed().await;
    assert_eq!(reason, CloseReason::TooLarge);
    assert_eq!(close_code(frame), Some(1009));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    // The room ticks every 250 ms and the client's buffer holds two frames.
    let state = state_with(Config::default(), MemoryLove::default());
    let peer = connect_with_window(&state, 2).await;
    let start = Instant::now();
    let reason = peer.task.await.expect("the handler does not panic");
    assert_eq!(reason, CloseReason::Slow);
    // Two ticks fill the buffer, the third write waits 10 s.
    assert_eq!(start.elapsed(), Duration::from_millis(750) + Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_within_the_drain_with_1001() {
    let state = state_with(quiet(), MemoryLove::default());
    let peer = connect(&state).await;
    let start = Instant::now();
    state.shutdown.cancel();
    let (frame, reason) = peer.closed().await;
    assert_eq!(reason, CloseReason::Shutdown);
    assert_eq!(close_code(frame), Some(1001));
    assert!(start.elapsed() <= Duration::from_secs(5), "{:?}", start.elapsed());
}

/// Issue 16, defect 3 (its idle half): a socket that answers every ping but
/// never sends a message held its slot for ever. It is now closed with 1000
/// after `--idle-timeout`; one that sends a message now and then stays.
#[tokio::test(start_paused = true)]
async fn defect_3_a_socket_that_only_answers_pings_is_closed_after_the_idle_timeout() {
    let config = Config {
        ping_interval: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        ..quiet()
    };
    let state = state_with(config, MemoryLove::default());
    let mut silent = connect(&state).await;
    let mut talker = connect(&state).await;
    let start = Instant::now();
    // Both answer each ping; the talker also asks the time every 50 s,
    // less often than the pings but within the idle timeout.
    let mut silent_closed = None;
    let every = Duration::from_secs(50);
    let mut ask = tokio::time::interval_at(start + every, every);
    while start.elapsed() < Duration::from_secs(180) {
        tokio::select! {
            frame = silent.from_server.recv(), if silent_closed.is_none() => match frame {
                Some(Message::Ping(_)) => silent.send_frame(Message::Pong(Default::default())),
                Some(Message::Close(frame)) => silent_closed = Some((start.elapsed(), frame)),
                Some(_) => {}
                None => panic!("closed without a close frame"),
            },
            frame = talker.from_server.recv() => match frame {
                Some(Message::Ping(_)) => talker.send_frame(Message::Pong(Default::default())),
                Some(Message::Close(frame)) => panic!("the talker was closed: {frame:?}"),
                Some(_) => {}
                None => panic!("the talker's connection ended"),
            },
            _ = ask.tick() => {
                talker.send(&ClientMessage::Time { t0: 1.0 });
            }
        }
    }
    let (after, frame) = silent_closed.expect("the silent socket was closed");
    assert_eq!(after, Duration::from_secs(60), "closed at the idle timeout");
    assert_eq!(close_code(frame.clone()), Some(1000));
    assert_eq!(frame.map(|f| f.reason.as_str().to_owned()).as_deref(), Some("idle timeout"));
    assert_eq!(silent.task.await.expect("the handler does not panic"), CloseReason::Idle);
    assert!(!talker.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_phase_report_reaches_the_room() {
    let config = Config { tick: Duration::from_millis(250), ..Config::default() };
    let state = state_with(config, MemoryLove::default());
    let mut peer = connect(&state).await;
    peer.send(&ClientMessage::Phase(PhaseReport { phase: 0.5, bpm: 60.0, at: T0 }));
    loop {
        if let Ok(ServerMessage::Consensus(c)) = ServerMessage::parse(&text(peer.next().await))
            && c.voters == 1
        {
            assert_eq!((c.hearts, c.bpm), (1, 60.0));
            break;
        }
    }
}

// The love tests run on real time: the store's writer is a thread, and a
// paused clock would leap to the next ping whenever the runtime waits for it.

#[tokio::test]
async fn other_messages_are_answered_while_a_love_tap_waits_for_the_disk() {
    let (love, commits) = MemoryLove::gated();
    let state = state_with(Config::default(), love);
    let mut peer = connect(&state).await;
    peer.send(&love_tap(1));
    peer.send(&ClientMessage::Time { t0: 7.0 });
    assert!(matches!(peer.reply().await, ServerMessage::Time(_)), "not held up by the disk");
    // A second tap waits behind the first, and is answered after it.
    peer.send(&love_tap(3));
    commits.send(Commit::Succeed).expect("the writer is running");
    assert_eq!(acked(peer.reply().await), (1, 1));
    commits.send(Commit::Succeed).expect("the writer is running");
    assert_eq!(acked(peer.reply().await), (3, 3));
}

/// A `love` with count `seq`, naming no ledger.
fn love_tap(seq: u64) -> ClientMessage {
    ClientMessage::Love { seq, epoch: 0 }
}

/// An ack's count and total (its epoch is the clock's, which runs).
fn acked(reply: ServerMessage) -> (u64, u64) {
    match reply {
        ServerMessage::LoveAck(LoveAck { seq, total, epoch }) => {
            assert_ne!(epoch, 0, "the ack names the ledger");
            (seq, total)
        }
        other => panic!("expected a love_ack, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_disk_is_an_internal_error_and_the_connection_stays() {
    let (love, commits) = MemoryLove::gated();
    let state = state_with(Config::default(), love);
    let mut peer = connect(&state).await;
    peer.send(&love_tap(1));
    commits.send(Commit::DiskFull).expect("the writer is running");
    assert_eq!(peer.error().await, ErrorCode::Internal);
    peer.send(&love_tap(1));
    commits.send(Commit::Succeed).expect("the writer is running");
    assert_eq!(acked(peer.reply().await), (1, 1));
}

#[tokio::test]
async fn a_love_jump_too_far_is_bad_love() {
    let state = state_with(Config::default(), MemoryLove::default());
    let mut peer = connect(&state).await;
    peer.send(&love_tap(1));
    assert_eq!(acked(peer.reply().await), (1, 1));
    peer.send(&love_tap(52));
    assert_eq!(peer.error().await, ErrorCode::BadLove);
    peer.send(&love_tap(51));
    assert_eq!(acked(peer.reply().await), (51, 51));
}

#[tokio::test]
async fn love_over_the_connections_budget_is_rate_limited_and_counts_nothing() {
    let config = Config { love_rate: 1, love_burst: 10, ..Config::default() };
    let state = state_with(config, MemoryLove::default());
    let mut peer = connect(&state).await;
    peer.send(&love_tap(10));
    assert_eq!(acked(peer.reply().await), (10, 10));
    // The burst is spent: five more are over the budget, and not a
    // violation; the count stays where it was.
    peer.send(&love_tap(15));
    assert_eq!(peer.error().await, ErrorCode::RateLimited);
    peer.send(&love_tap(10));
    assert_eq!(acked(peer.reply().await), (10, 10), "nothing was counted");
}
