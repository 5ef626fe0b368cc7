//! A client's TCP stream that remembers when the kernel received the bytes
//! it last read (`SO_TIMESTAMPNS`), so a tick's delay can be measured to its
//! arrival at the client's socket, not to whenever the generator got round
//! to reading it.
//!
//! On one machine the generator shares the cores with the server: a
//! generator that reads 40,000 frames a second takes CPU from the server's
//! writers in the very burst being measured, and every frame it reads late
//! looks like a late tick. The kernel's receive time is when the server's
//! `write` put the frame into the client's socket (on loopback the
//! receiving side runs inside that write), the moment a client on another
//! machine would have started to receive it. The read time is still
//! measured too (`tick_delay`); the arrival is `arrival_delay`.
//!
//! Reads go through `recvmsg(2)` (from `nix`, which parses the control
//! messages) on tokio's readiness; writes go straight to the stream.

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream whose reads carry the kernel's receive time.
#[derive(Debug)]
pub struct Stamped {
    inner: TcpStream,
    /// When the kernel received the last bytes read, in ms since the Unix
    /// epoch (the clock the server's `at` is on).
    arrival_ms: Option<f64>,
}

impl Stamped {
    /// `stream`, asking the kernel to timestamp what it receives.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        setsockopt(&stream, sockopt::ReceiveTimestampns, &true)?;
        Ok(Self { inner: stream, arrival_ms: None })
    }

    /// When the kernel received the bytes last read (the last segment of
    /// them, if several), in ms since the Unix epoch.
    pub fn arrival_ms(&self) -> Option<f64> {
        self.arrival_ms
    }
}

/// One `recvmsg` into `buf`: the bytes read and their receive time.
fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<f64>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(TimeSpec);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT)?;
    let mut arrival = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
            arrival = Some(ts.tv_sec() as f64 * 1000.0 + ts.tv_nsec() as f64 / 1e6);
        }
    }
    Ok((msg.bytes, arrival))
}

impl AsyncRead for Stamped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fd = this.inner.as_raw_fd();
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match this.inner.try_io(Interest::READABLE, || recv_stamped(fd, unfilled)) {
                Ok((n, arrival)) => {
                    // Never a stale stamp: a read without one has none.
                    this.arrival_ms = arrival;
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_carries_the_time_the_kernel_received_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let mut stamped = Stamped::new(client).expect("timestamps");
        assert_eq!(stamped.arrival_ms(), None);
        // The kernel turns receive timestamps on for the whole machine a
        // moment after the first socket asks (a deferred static key), so
        // the first segments may come unstamped: wait for a stamped one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut buf = [0_u8; 16];
        loop {
            server.write_all(b"warm").await.expect("write");
            let n = stamped.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended");
            if stamped.arrival_ms().is_some() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no receive timestamp within 5 s");
        }
        let before = shared::clock::system_now_ms();
        server.write_all(b"tick").await.expect("write");
        // Read well after the arrival: the stamp is the arrival, not the read.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let n = stamped.read(&mut buf).await.expect("read");
        let read_at = shared::clock::system_now_ms();
        assert_eq!(&buf[..n], b"tick");
        let arrival = stamped.arrival_ms().expect("a receive timestamp");
        assert!(arrival >= before - 1.0, "{arrival} before the write at {before}");
        assert!(read_at - arrival >= 40.0, "arrival {arrival} is the read time {read_at}");
    }
}
