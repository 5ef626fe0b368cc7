//! The socket handler, in-process under paused time, driven by arbitrary
//! sequences of frames (text, binary, ping, pong, close, oversize,
//! fragmented, raw bytes) and clock advances.
//!
//! What the client sends goes through tungstenite's own frame parser, set up
//! as the server sets it up (`--max-message-bytes` for messages and frames),
//! so fragments are reassembled, oversize messages refused and malformed
//! bytes rejected exactly as in production; what comes out is handed to
//! `socket::serve` through its `Socket` trait, as its unit tests do.
//!
//! Asserted, beyond "no panic": the handler ends once the client is gone;
//! the first frame is the welcome and the only one; every text frame is a
//! protocol message; a close frame, if any, is the last frame and carries
//! the code the close reason calls for; `too_large` only follows an
//! oversize message; a time reply echoes a `t0` that was sent; a love ack
//! echoes a sent `seq`, and its total never exceeds the highest count sent
//! nor goes down.

#![no_main]

use arbitrary::Arbitrary;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use backend::clock::Clock;
use backend::love::{
    Decision, Ledger, LoveBackend, LoveStore, StoreError, Tap, TapOutcome, decide,
};
use backend::socket::{CloseReason, Connection, serve};
use backend::{AppState, Config};
use futures_util::{Sink, Stream};
use libfuzzer_sys::fuzz_target;
use shared::{ClientId, ClientMessage, PhaseReport, RoomName, ServerMessage};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

/// Protocol time when a run starts.
const T0: f64 = 1_700_000_000_000.0;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Low message rate and violation limits, so floods and violation
    /// closes are within reach of short inputs.
    tight: bool,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// A well-formed protocol message in one text frame.
    Message(Msg),
    /// Any text in one frame.
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close,
    /// A text message `extra` bytes over the limit, in one frame.
    Oversize(u16),
    /// A message in `pieces` frames, with a ping between two of them when
    /// `ping_inside`; binary when `binary`.
    Fragmented {
        text: String,
        pieces: u8,
        binary: bool,
        ping_inside: bool,
    },
    /// Bytes on the wire as they come: malformed frames, reserved opcodes.
    Raw(Vec<u8>),
    /// Let the clock run this many milliseconds.
    Wait(u16),
    /// Let the clock run this many seconds (pings, pong timeouts, floods).
    WaitSeconds(u8),
}

#[derive(Debug, Arbitrary)]
enum Msg {
    Phase {
        phase: f64,
        bpm: f64,
        skew: f64,
    },
    Time {
        t0: f64,
    },
    /// A love count this much above the last one sent.
    LoveStep(u8),
    Love(u64),
}

/// Love in a map, by the store's rule: the store is not what this target
/// tests (see `love_ledger`), and a disk would slow every run.
#[derive(Default)]
struct MapLove {
    ledgers: HashMap<(RoomName, ClientId), Ledger>,
    totals: HashMap<RoomName, u64>,
}

impl LoveBackend for MapLove {
    fn apply(&mut self, taps: &[Tap]) -> Result<Vec<TapOutcome>, StoreError> {
        Ok(taps
            .iter()
            .map(|tap| {
                let key = (tap.room.clone(), tap.client.clone());
                let total = self.totals.entry(tap.room.clone()).or_default();
                match decide(self.ledgers.get(&key).copied(), tap) {
                    Decision::Count { added, ledger, created } => {
                        *total += added;
                        if let Some(ledger) = ledger {
                            self.ledgers.insert(key, ledger);
                        }
                        let epoch = ledger.map_or(0, |l| l.epoch);
                        TapOutcome::Counted { added, total: *total, epoch, created }
                    }
                    Decision::TooBig { last } => TapOutcome::TooBig { last },
                    Decision::Folded => TapOutcome::Folded { total: *total },
                    Decision::NoLedger => TapOutcome::NoLedger,
                }
            })
            .collect())
    }

    fn fold(&mut self, _idle_before_ms: u64, _limit: usize) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn total(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        Ok(self.totals.get(room).copied().unwrap_or(0))
    }

    fn check_writable(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The server's end of the socket: frames from the client come out of
/// `incoming`; what the handler writes goes to `outgoing`.
struct ChannelSocket {
    incoming: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
    outgoing: mpsc::UnboundedSender<Message>,
}

impl Stream for ChannelSocket {
    type Item = Result<Message, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for ChannelSocket {
    type Error = axum::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.outgoing.send(item).map_err(axum::Error::new)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// The bytes the client has put on the wire and the server not yet read;
/// what the server's parser writes (pongs to pings) goes nowhere.
#[derive(Default)]
struct Pipe(VecDeque<u8>);

impl io::Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        io::Read::read(&mut self.0, buf)
    }
}

impl io::Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One client frame, masked as clients must.
fn frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8]) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// What the driver sent, for the checks on what came back.
#[derive(Default)]
struct Sent {
    t0s: Vec<f64>,
    love_seqs: Vec<u64>,
    last_love: u64,
    /// The parser refused a message as too large (and told the handler).
    too_large: bool,
    /// The client side is done: a close or a failed stream was delivered.
    done: bool,
}

/// The client's end: tungstenite's parser in server role, and the channel
/// into the handler.
struct Client {
    parser: WebSocket<Pipe>,
    to_server: Option<mpsc::UnboundedSender<Result<Message, axum::Error>>>,
    sent: Sent,
}

impl Client {
    /// Puts `bytes` on the wire and delivers every message they complete.
    fn put(&mut self, bytes: &[u8]) {
        if self.sent.done {
            return;
        }
        self.parser.get_mut().0.extend(bytes);
        loop {
            let delivered = match self.parser.read() {
                Ok(message) => match convert(message) {
                    Some(message) => {
                        self.sent.done = matches!(message, Message::Close(_));
                        Ok(message)
                    }
                    None => continue,
                },
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    self.sent.too_large |= matches!(error, tungstenite::Error::Capacity(_));
                    self.sent.done = true;
                    Err(axum::Error::new(error))
                }
            };
            if let Some(to_server) = &self.to_server {
                // A handler that has ended reads no more, as on a socket.
                let _ = to_server.send(delivered);
            }
            if self.sent.done {
                // The stream ends after a close or an error, as axum's does.
                self.to_server = None;
                return;
            }
        }
    }

    fn text(&mut self, text: &str) {
        let mut bytes = Vec::new();
        frame(&mut bytes, true, 1, text.as_bytes());
        self.put(&bytes);
    }
}

fn convert(message: tungstenite::Message) -> Option<Message> {
    Some(match message {
        tungstenite::Message::Text(text) => Message::Text(Utf8Bytes::from(text.as_str())),
        tungstenite::Message::Binary(bytes) => Message::Binary(bytes),
        tungstenite::Message::Ping(bytes) => Message::Ping(bytes),
        tungstenite::Message::Pong(bytes) => Message::Pong(bytes),
        tungstenite::Message::Close(frame) => Message::Close(frame.map(|f| CloseFrame {
            code: f.code.into(),
            reason: Utf8Bytes::from(f.reason.as_str()),
        })),
        tungstenite::Message::Frame(_) => return None,
    })
}

fn config(tight: bool) -> Config {
    static DEFAULT: OnceLock<Config> = OnceLock::new();
    let default = DEFAULT.get_or_init(Config::default).clone();
    if tight {
        Config {
            message_rate: 2,
            message_burst: 3,
            flood_close_after: Duration::from_secs(2),
            max_violations: 4,
            ..default
        }
    } else {
        default
    }
}

async fn drive(input: Input) {
    let config = config(input.tight);
    let max = config.max_message_bytes;
    let state = AppState::with_clock(
        config,
        LoveStore::start(MapLove::default()),
        Clock::following_tokio(T0),
    );
    let (to_server, incoming) = mpsc::unbounded_channel();
    let (outgoing, mut from_server) = mpsc::unbounded_channel();
    let connection = Connection {
        conn: 1,
        room: RoomName::main(),
        client_id: ClientId::parse("fuzz-client").expect("a valid client id"),
        slot: state.limits.admit(std::net::Ipv4Addr::LOCALHOST.into()).expect("under the cap"),
        expires: None,
    };
    let task = tokio::spawn(serve(ChannelSocket { incoming, outgoing }, state.clone(), connection));
    let parser_config =
        WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max));
    let mut client = Client {
        parser: WebSocket::from_raw_socket(Pipe::default(), Role::Server, Some(parser_config)),
        to_server: Some(to_server),
        sent: Sent::default(),
    };

    for op in input.ops {
        if task.is_finished() || client.sent.done {
            break;
        }
        match op {
            Op::Message(msg) => {
                let message = match msg {
                    Msg::Phase { phase, bpm, skew } => ClientMessage::Phase(PhaseReport {
                        phase,
                        bpm,
                        at: state.clock.now_ms() + skew,
                    }),
                    Msg::Time { t0 } => {
                        client.sent.t0s.push(t0);
                        ClientMessage::Time { t0 }
                    }
                    Msg::LoveStep(step) => {
                        let seq = client.sent.last_love.saturating_add(u64::from(step));
                        client.sent.last_love = seq;
                        client.sent.love_seqs.push(seq);
                        ClientMessage::Love { seq, epoch: 0 }
                    }
                    Msg::Love(seq) => {
                        client.sent.last_love = seq;
                        client.sent.love_seqs.push(seq);
                        ClientMessage::Love { seq, epoch: 0 }
                    }
                };
                client.text(&message.to_json());
            }
            Op::Text(text) => client.text(&text),
            Op::Binary(bytes) => {
                let mut out = Vec::new();
                frame(&mut out, true, 2, &bytes);
                client.put(&out);
            }
            Op::Ping(mut bytes) => {
                bytes.truncate(125);
                let mut out = Vec::new();
                frame(&mut out, true, 9, &bytes);
                client.put(&out);
            }
            Op::Pong => {
                let mut out = Vec::new();
                frame(&mut out, true, 10, b"");
                client.put(&out);
            }
            Op::Close => {
                let mut out = Vec::new();
                frame(&mut out, true, 8, &1000u16.to_be_bytes());
                client.put(&out);
            }
            Op::Oversize(extra) => {
                let text = "a".repeat(max + 1 + usize::from(extra));
                client.text(&text);
            }
            Op::Fragmented { text, pieces, binary, ping_inside } => {
                let bytes = text.as_bytes();
                let pieces = usize::from(pieces).clamp(1, 16);
                let size = bytes.len().div_ceil(pieces).max(1);
                let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
                let chunks = if chunks.is_empty() { vec![&b""[..]] } else { chunks };
                let mut out = Vec::new();
                for (i, chunk) in chunks.iter().enumerate() {
                    let opcode = match (i, binary) {
                        (0, false) => 1,
                        (0, true) => 2,
                        _ => 0,
                    };
                    frame(&mut out, i + 1 == chunks.len(), opcode, chunk);
                    if ping_inside && i == 0 {
                        frame(&mut out, true, 9, b"inside");
                    }
                }
                client.put(&out);
            }
            Op::Raw(bytes) => client.put(&bytes),
            Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(u64::from(ms))).await,
            Op::WaitSeconds(s) => tokio::time::sleep(Duration::from_secs(u64::from(s))).await,
        }
        // Let the handler take what it was sent.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // The client goes away; the handler must end.
    client.to_server = None;
    // Waited for in real time: the love store answers from a thread of its
    // own, and while the handler waits for it paused time would jump to any
    // virtual deadline set here.
    let waiting = std::time::Instant::now();
    while !task.is_finished() {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(10),
            "the handler did not end after the client went away"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reason = match task.await {
        Ok(reason) => reason,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("the handler's task failed: {error}"),
    };
    let mut frames = Vec::new();
    while let Ok(frame) = from_server.try_recv() {
        frames.push(frame);
    }
    check(&frames, reason, &client.sent);
}

fn check(frames: &[Message], reason: CloseReason, sent: &Sent) {
    let mut frames = frames.iter();
    match frames.next() {
        Some(Message::Text(text)) => assert!(
            matches!(ServerMessage::parse(text.as_str()), Ok(ServerMessage::Welcome(_))),
            "the first frame is the welcome: {text}"
        ),
        // The handler may fail to write the welcome only if the channel
        // closed, which it does not here.
        other => panic!("the first frame is the welcome, got {other:?}"),
    }
    let mut closed = None;
    let mut acked_total = 0;
    let highest_sent = sent.love_seqs.iter().copied().max().unwrap_or(0);
    for frame in frames {
        assert!(closed.is_none(), "nothing follows the close frame, got {frame:?}");
        match frame {
            Message::Text(text) => match ServerMessage::parse(text.as_str()) {
                Ok(ServerMessage::Welcome(_)) => panic!("a second welcome"),
                Ok(ServerMessage::Time(reply)) => assert!(
                    // To the bit (PROTOCOL.md): the server parses with
                    // serde_json's `float_roundtrip`.
                    sent.t0s.iter().any(|t0| t0.to_bits() == reply.t0.to_bits()),
                    "the time reply echoes a t0 that was sent: {reply:?}"
                ),
                Ok(ServerMessage::LoveAck(ack)) => {
                    assert!(sent.love_seqs.contains(&ack.seq), "an ack echoes a sent seq: {ack:?}");
                    assert!(
                        ack.total <= highest_sent,
                        "total {} over the highest count sent",
                        ack.total
                    );
                    assert!(ack.total >= acked_total, "the acked total went down: {ack:?}");
                    acked_total = ack.total;
                }
                Ok(ServerMessage::LoveFolded(folded)) => {
                    panic!("no ledger was named, so none can be folded: {folded:?}")
                }
                Ok(ServerMessage::Consensus(_) | ServerMessage::Error(_)) => {}
                Err(error) => panic!("the server wrote a non-protocol text frame {text}: {error}"),
            },
            Message::Ping(_) => {}
            Message::Close(frame) => closed = Some(frame.as_ref().map(|f| f.code)),
            other => panic!("the server wrote {other:?}"),
        }
    }
    let expected = reason.close_frame().map(|(code, _)| code);
    assert_eq!(closed.flatten(), expected, "the close frame matches the reason {reason:?}");
    if reason == CloseReason::TooLarge {
        assert!(sent.too_large, "closed as too large without an oversize message");
    }
}

fuzz_target!(|input: Input| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(drive(input));
});
