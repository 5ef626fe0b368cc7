//! `heartsync-bench floor`: the floor heartsync's fan-out is measured
//! against. One thread, one epoll loop; every tick, per room, ONE consensus
//! frame is built and the same bytes are written to every socket of the
//! room with one non-blocking `write` each. A socket whose write would block
//! skips the tick (newest-only, like heartsync); a partial write is finished
//! on the socket's next tick instead of a new frame, so the stream never
//! tears. Client input is read and thrown away; nothing else is answered.
//!
//! It speaks just enough protocol v1 for the bench's own client to connect
//! unchanged: an RFC 6455 upgrade on `/ws/{room}`, a `welcome`, then
//! `consensus` frames of the same JSON shape and size as heartsync's, with
//! `seq` and `at` filled in, so tick delay and missed ticks are counted the
//! same way for both servers.
//!
//! Written here, on tokio's current-thread runtime, rather than taken from a
//! WebSocket server crate: the point is the cheapest possible fan-out, with
//! nothing between the room and `write(2)` that the floor could be blamed
//! for (no per-socket queue, task wake-up or buffer copy per delivery).

use anyhow::Context;
use shared::clock::system_now_ms as now_ms;
use shared::{ClientId, Consensus, PROTOCOL_VERSION, RoomName, ServerMessage, Welcome};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The listen backlog; heartsync's, so a fast ramp meets the same queue.
const LISTEN_BACKLOG: u32 = 4096;
/// The largest upgrade request read.
const MAX_REQUEST: usize = 8 * 1024;
/// How often heartsync asks a client to report (the page's once a second).
const REPORT_MS: u64 = 1000;

/// Runs the floor on `addr` until killed: binds, prints
/// `floor listening on ws://ADDR` on stdout (the bench that spawned it reads
/// the port from there), then serves.
pub fn run(addr: SocketAddr, tick: Duration) -> anyhow::Result<()> {
    // Every heart is a descriptor; the soft limit is usually 1024.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let listener = bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "floor listening on ws://{}", listener.local_addr()?)?;
        stdout.flush()?;
        serve(listener, tick).await;
        Ok(())
    })
}

/// A listener on `addr` with heartsync's backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts and serves forever. Must run inside a [`tokio::task::LocalSet`]
/// on a current-thread runtime: everything lives on one thread.
pub async fn serve(listener: TcpListener, tick: Duration) {
    let floor = Rc::new(Floor::new(tick));
    tokio::task::spawn_local(ticks(floor.clone()));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(connection(floor.clone(), stream));
            }
            // Out of descriptors, most likely: wait for some to close
            // rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Everything the floor holds.
struct Floor {
    /// The broadcast period (heartsync's `--tick`).
    tick: Duration,
    /// Rooms by name.
    rooms: RefCell<HashMap<String, Room>>,
    /// The next connection id (keys a connection within its room).
    next_id: Cell<u64>,
    /// One read buffer for every socket: input is thrown away, so no socket
    /// needs its own.
    scratch: RefCell<Box<[u8]>>,
}

/// One room: its tick counter and its sockets.
#[derive(Default)]
struct Room {
    /// The `seq` of the last consensus sent.
    seq: u64,
    /// The room's sockets, by connection id.
    conns: HashMap<u64, Conn>,
}

/// One socket as the fan-out sees it.
struct Conn {
    /// Shared with the task that drains the socket's input.
    stream: Rc<TcpStream>,
    /// The unwritten tail of a frame a partial write left behind, and where
    /// it starts: written before any newer frame, so frames never interleave.
    pending: Option<(Rc<[u8]>, usize)>,
}

impl Conn {
    /// One non-blocking write: the pending tail if there is one, else
    /// `frame`. Would-block skips the tick; an error is noticed by the
    /// socket's reader, which sees the connection end.
    fn deliver(&mut self, frame: &Rc<[u8]>) {
        let (bytes, from) = match &self.pending {
            Some((pending, from)) => (pending.clone(), *from),
            None => (frame.clone(), 0),
        };
        match self.stream.try_write(&bytes[from..]) {
            Ok(n) if from + n >= bytes.len() => self.pending = None,
            Ok(n) => self.pending = Some((bytes, from + n)),
            Err(_) => {}
        }
    }
}

impl Floor {
    fn new(tick: Duration) -> Self {
        Self {
            tick,
            rooms: RefCell::default(),
            next_id: Cell::new(0),
            scratch: RefCell::new(vec![0; 64 * 1024].into_boxed_slice()),
        }
    }

    /// One tick: per room, one frame, one write per socket.
    fn broadcast(&self) {
        let at = now_ms();
        let mut rooms = self.rooms.borrow_mut();
        for room in rooms.values_mut() {
            room.seq += 1;
            let frame: Rc<[u8]> =
                text_frame(&consensus_json(room.seq, at, room.conns.len())).into();
            for conn in room.conns.values_mut() {
                conn.deliver(&frame);
            }
        }
    }

    /// Adds a socket to `room`; its id there.
    fn join(&self, room: &str, stream: Rc<TcpStream>) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mut rooms = self.rooms.borrow_mut();
        rooms.entry(room.to_owned()).or_default().conns.insert(id, Conn { stream, pending: None });
        id
    }

    /// Removes socket `id` from `room`.
    fn leave(&self, room: &str, id: u64) {
        if let Some(room) = self.rooms.borrow_mut().get_mut(room) {
            room.conns.remove(&id);
        }
    }

    /// Reads and discards `stream`'s input until the peer closes it.
    async fn drain(&self, stream: &TcpStream) {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            if !self.read_available(stream) {
                return;
            }
        }
    }

    /// Reads what is there; whether the connection is still open.
    fn read_available(&self, stream: &TcpStream) -> bool {
        let mut scratch = self.scratch.borrow_mut();
        loop {
            match stream.try_read(&mut scratch) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Broadcasts every `tick`. A late tick delays the next one, and `seq`
/// rises by one per broadcast: heartsync's room clock does the same, so a
/// server that falls behind shows it the same way in both rows (fewer
/// consensus a second per client, not gaps in `seq`).
async fn ticks(floor: Rc<Floor>) {
    let mut interval = tokio::time::interval(floor.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        floor.broadcast();
    }
}

/// One connection: upgrade, welcome, then join the fan-out and drain input.
async fn connection(floor: Rc<Floor>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // Boxed: the upgrade's state (a timer, buffers, the welcome) is large
    // and short-lived; inline, it would size this task, which lives as long
    // as the connection, for its largest moment.
    let upgrade =
        Box::pin(tokio::time::timeout(Duration::from_secs(10), handshake(&floor, &mut stream)));
    let Ok(Some(room)) = upgrade.await else {
        return;
    };
    let stream = Rc::new(stream);
    let id = floor.join(&room, stream.clone());
    floor.drain(&stream).await;
    floor.leave(&room, id);
}

/// Reads the upgrade request, answers 101 and the welcome in one write; the
/// room, or `None` after answering 400 to anything else.
async fn handshake(floor: &Floor, stream: &mut TcpStream) -> Option<String> {
    let mut request = Vec::with_capacity(1024);
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() >= MAX_REQUEST || stream.read_buf(&mut request).await.ok()? == 0 {
            return None;
        }
    }
    let Some(upgrade) = std::str::from_utf8(&request).ok().and_then(Upgrade::parse) else {
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return None;
    };
    let accept =
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(upgrade.key.as_bytes());
    // Like heartsync, a client without a valid id of its own is given one.
    let client_id = upgrade
        .client_id
        .and_then(|id| ClientId::parse(id).ok())
        .unwrap_or_else(|| ClientId::parse("floorfloorfloor1").expect("a valid client id"));
    let room = RoomName::parse(upgrade.room).unwrap_or_else(|_| RoomName::main());
    let welcome = ServerMessage::Welcome(Welcome {
        protocol: PROTOCOL_VERSION,
        client_id,
        room,
        server_time: now_ms(),
        tick_ms: floor.tick.as_millis() as u64,
        report_ms: REPORT_MS,
    });
    let mut answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    answer.extend_from_slice(&text_frame(&welcome.to_json()));
    stream.write_all(&answer).await.ok()?;
    Some(upgrade.room.to_owned())
}

/// What the floor needs from an upgrade request.
#[derive(Debug, PartialEq)]
struct Upgrade<'a> {
    room: &'a str,
    client_id: Option<&'a str>,
    key: &'a str,
}

impl<'a> Upgrade<'a> {
    /// `GET /ws/{room}[?client_id=…]` with a `Sec-WebSocket-Key`; `None` for
    /// anything else.
    fn parse(request: &'a str) -> Option<Self> {
        let mut lines = request.split("\r\n");
        let target = lines.next()?.strip_prefix("GET ")?.split(' ').next()?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let room = path.strip_prefix("/ws/").filter(|r| !r.is_empty() && !r.contains('/'))?;
        let client_id = query.split('&').find_map(|pair| pair.strip_prefix("client_id="));
        let key = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim())
        })?;
        Some(Self { room, client_id, key })
    }
}

/// A consensus as heartsync sends it, every field filled: the same shape and
/// about the same size (full-precision floats, as heartsync's are).
fn consensus_json(seq: u64, at: f64, hearts: usize) -> String {
    let hearts = u32::try_from(hearts).unwrap_or(u32::MAX);
    ServerMessage::Consensus(Consensus {
        seq,
        at,
        phase: (at / 1000.0 * 72.0 / 60.0).fract(),
        bpm: 72.0,
        coherence: 0.931_512_345_678_9,
        hearts,
        voters: hearts,
        love: 0,
    })
    .to_json()
}

/// An unmasked, final WebSocket text frame (server to client, RFC 6455 §5.2).
fn text_frame(payload: &str) -> Vec<u8> {
    let len = payload.len();
    let mut frame = Vec::with_capacity(len + 10);
    frame.push(0x81);
    if len < 126 {
        frame.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        frame.push(126);
        frame.extend_from_slice(&len.to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(payload.as_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_names_its_room_client_and_key() {
        let request = "GET /ws/bench-3?client_id=bench-00000007 HTTP/1.1\r\nHost: x\r\n\
                       sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(
            Upgrade::parse(request),
            Some(Upgrade {
                room: "bench-3",
                client_id: Some("bench-00000007"),
                key: "dGhlIHNhbXBsZSBub25jZQ=="
            })
        );
        for bad in [
            "GET /metrics HTTP/1.1\r\nSec-WebSocket-Key: k\r\n\r\n",
            "GET /ws/ HTTP/1.1\r\nSec-WebSocket-Key: k\r\n\r\n",
            "GET /ws/a/b HTTP/1.1\r\nSec-WebSocket-Key: k\r\n\r\n",
            "POST /ws/a HTTP/1.1\r\nSec-WebSocket-Key: k\r\n\r\n",
            "GET /ws/a HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(Upgrade::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_task_is_small_for_its_whole_life() {
        // Every heart holds one such task for as long as it is connected:
        // its size is most of the floor's memory per heart.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let _client =
            TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connects");
        let (server, _) = listener.accept().await.expect("accepts");
        let task = connection(Rc::new(Floor::new(Duration::from_millis(250))), server);
        let size = std::mem::size_of_val(&task);
        // 336 bytes here; 480 with the upgrade's state inline.
        assert!(size <= 400, "a connection's task is {size} bytes");
    }

    #[test]
    fn frames_carry_their_length_in_the_short_and_16_bit_forms() {
        assert_eq!(text_frame("hi"), b"\x81\x02hi");
        let long = "x".repeat(300);
        let frame = text_frame(&long);
        assert_eq!(&frame[..4], &[0x81, 126, 1, 44]);
        assert_eq!(frame.len(), 304);
    }

    #[test]
    fn the_floor_consensus_parses_as_a_consensus() {
        let json = consensus_json(42, 1_700_000_000_250.5, 10_000);
        match ServerMessage::parse(&json) {
            Ok(ServerMessage::Consensus(c)) => {
                assert_eq!((c.seq, c.at, c.hearts), (42, 1_700_000_000_250.5, 10_000));
            }
            other => panic!("{other:?} from {json}"),
        }
        assert!(json.starts_with(r#"{"type":"consensus","#), "{json}");
    }
}
