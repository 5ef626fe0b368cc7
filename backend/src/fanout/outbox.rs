//! One connection's way onto the wire: every byte the server writes to a
//! socket (the handler's replies and control frames, and the room's
//! consensus) goes through its [`Outbox`], so two writers never interleave
//! parts of two frames.
//!
//! The fast path is a single non-blocking `write(2)` of a whole frame, made
//! by whoever has something to send: the connection's handler, or its room
//! shard's writer. Only when a write would block, or completes partially,
//! is anything kept: the unwritten rest of the frames already started (in
//! order, never reordered or dropped, since a torn frame would break the
//! stream) and, apart from them, **one** consensus not yet begun, replaced
//! by each newer one (a slow socket gets the newest consensus, never a
//! queue). The connection's own task then drains them, awaiting
//! writability under `--write-timeout`; the shard writer never waits.
//!
//! Only the connection's task registers for writability (tokio keeps one
//! waker per direction), so the shard writer only ever calls `try_write`
//! and, when it had to leave something behind, wakes that task (see
//! [`Outbox::poll_stalled`]).

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The most bytes of replies and control frames kept for a socket that does
/// not take them (consensus frames are not counted: only one is kept). Past
/// it the handler waits, under its write timeout, as it would on a full
/// socket buffer.
pub const MAX_QUEUED: usize = 64 * 1024;

/// One connection's socket, as every writer of it sees it.
#[derive(Debug)]
pub struct Outbox {
    /// The socket's write half, and what could not be written yet.
    pending: Mutex<Pending>,
    /// Wakes the connection's task when a shard writer left bytes behind
    /// (an `AtomicWaker` rather than a `Notify`: the task polls it in
    /// place, with no future kept between polls).
    stalled: AtomicWaker,
}

/// The write half and what it did not take at once.
#[derive(Debug)]
struct Pending {
    /// The upgraded TCP stream's write half (its read half is the
    /// handler's, through `ConnIo`).
    half: OwnedWriteHalf,
    /// Frames begun or queued, in order: the first may be a partly written
    /// frame's rest, so these go out before anything else.
    queue: VecDeque<Bytes>,
    /// The bytes in `queue`, against [`MAX_QUEUED`].
    queued: usize,
    /// The newest consensus frame not yet begun; a newer one replaces it.
    consensus: Option<Bytes>,
    /// The `seq` of the last consensus taken (written or kept), so the
    /// same tick offered twice (by the join and by the shard) goes once.
    last_seq: Option<u64>,
    /// Set once the close frame is on its way: no consensus after it.
    sealed: bool,
    /// A write failed: the peer is gone.
    broken: bool,
}

impl Pending {
    fn new(half: OwnedWriteHalf) -> Self {
        Self {
            half,
            queue: VecDeque::new(),
            queued: 0,
            consensus: None,
            last_seq: None,
            sealed: false,
            broken: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.consensus.is_none()
    }
}

/// What a consensus offer came to, for the shard's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Written whole, at once.
    Written,
    /// Kept (whole or in part) for the connection's task to drain.
    Kept,
    /// Kept in place of an older consensus that had not begun (which will
    /// now never be sent).
    Replaced,
    /// Not taken: an older or equal `seq`, a sealed or broken socket.
    Skipped,
}

impl Outbox {
    /// The upgraded `stream` split: its read half, for the handler, and
    /// the outbox every write goes through.
    pub fn split(stream: TcpStream) -> (OwnedReadHalf, Self) {
        let (read, write) = stream.into_split();
        let outbox = Self { pending: Mutex::new(Pending::new(write)), stalled: AtomicWaker::new() };
        (read, outbox)
    }

    /// The outbox of `stream`, whose reads are not wanted (tests).
    pub fn new(stream: TcpStream) -> Self {
        Self::split(stream).1
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every critical section leaves `Pending` consistent (a push, a pop
        // or a flag), so a poisoned lock is still safe to use.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Offers consensus `seq`, framed, from any task: written at once if
    /// nothing is waiting and the socket takes it whole; otherwise kept as
    /// the newest (replacing an older one not yet begun) and the
    /// connection's task is woken to drain it. Never waits.
    pub fn offer(&self, seq: u64, frame: &Bytes) -> Offer {
        let mut pending = self.lock();
        if pending.sealed || pending.broken || pending.last_seq.is_some_and(|last| seq <= last) {
            return Offer::Skipped;
        }
        pending.last_seq = Some(seq);
        if !pending.is_empty() {
            let replaced = pending.consensus.replace(frame.clone()).is_some();
            drop(pending);
            self.stalled.wake();
            return if replaced { Offer::Replaced } else { Offer::Kept };
        }
        match pending.half.try_write(frame) {
            Ok(n) if n == frame.len() => return Offer::Written,
            Ok(n) => pending.push(frame.slice(n..)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => pending.consensus = Some(frame.clone()),
            Err(_) => {
                pending.broken = true;
            }
        }
        drop(pending);
        self.stalled.wake();
        Offer::Kept
    }

    /// No consensus after this: the close frame is next.
    pub fn seal(&self) {
        self.lock().sealed = true;
    }

    /// Ready when a writer has left something for the connection's task to
    /// drain (or the socket broke); the task is woken when that happens.
    pub fn poll_stalled(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.stalled.register(cx.waker());
        let pending = self.lock();
        if !pending.is_empty() || pending.broken { Poll::Ready(()) } else { Poll::Pending }
    }

    /// [`Outbox::poll_stalled`] as a future.
    pub async fn stalled(&self) {
        std::future::poll_fn(|cx| self.poll_stalled(cx)).await
    }

    /// Takes `buf` (one or more whole frames) for writing, from the
    /// connection's task: all of it or, while too much is queued already,
    /// none (and the task is woken when the socket takes more). Whatever of
    /// it the socket does not take at once is kept, so a frame is never
    /// split between two writers.
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut pending = self.lock();
        if !pending.is_empty() {
            // Drain first: what is queued goes before `buf`.
            match Self::poll_drain_locked(&mut pending, cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
                Poll::Pending => {
                    if pending.queued + buf.len() > MAX_QUEUED {
                        return Poll::Pending;
                    }
                    pending.push(Bytes::copy_from_slice(buf));
                    return Poll::Ready(Ok(buf.len()));
                }
            }
        }
        if pending.broken {
            return Poll::Ready(Err(ErrorKind::BrokenPipe.into()));
        }
        match pending.half.try_write(buf) {
            Ok(n) => {
                if n < buf.len() {
                    pending.push(Bytes::copy_from_slice(&buf[n..]));
                }
                Poll::Ready(Ok(buf.len()))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                pending.push(Bytes::copy_from_slice(buf));
                Poll::Ready(Ok(buf.len()))
            }
            Err(e) => {
                pending.broken = true;
                Poll::Ready(Err(e))
            }
        }
    }

    /// Drains everything kept, from the connection's task: ready when the
    /// socket has taken it all.
    pub fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pending = self.lock();
        Self::poll_drain_locked(&mut pending, cx)
    }

    /// [`Outbox::poll_drain`] as a future.
    pub async fn drain(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    fn poll_drain_locked(pending: &mut Pending, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if pending.broken {
                return Poll::Ready(Err(ErrorKind::BrokenPipe.into()));
            }
            if pending.queue.is_empty() {
                match pending.consensus.take() {
                    Some(frame) => pending.push(frame),
                    None => return Poll::Ready(Ok(())),
                }
            }
            let Pending { half, queue, queued, .. } = &mut *pending;
            let Some(front) = queue.front_mut() else { continue };
            // The write half registers this task for writability when the
            // socket is full.
            match Pin::new(half).poll_write(cx, front) {
                Poll::Ready(Ok(0)) => {
                    pending.broken = true;
                    return Poll::Ready(Err(ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    *queued -= n;
                    if n == front.len() {
                        queue.pop_front();
                    } else {
                        *front = front.slice(n..);
                    }
                }
                Poll::Ready(Err(e)) => {
                    pending.broken = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Pending {
    fn push(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        self.queue.push_back(bytes);
    }
}
