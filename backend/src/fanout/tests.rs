//! The outbox and the shards over real loopback sockets: what a client
//! reads is what the protocol promises, whole frames, newest-only when slow.

use super::*;
use crate::room::ConsensusFrame;
use shared::Consensus;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// A connected pair: the server's end and the client's. With `small`
/// buffers (the server's send buffer and the client's receive window), a
/// client that does not read stops taking bytes after a few KiB.
async fn pair(small: bool) -> (TcpStream, TcpStream) {
    let listening = TcpSocket::new_v4().expect("a socket");
    let client = TcpSocket::new_v4().expect("a socket");
    if small {
        // Accepted sockets inherit the listener's buffer sizes.
        listening.set_send_buffer_size(4096).expect("send buffer");
        client.set_recv_buffer_size(4096).expect("receive buffer");
    }
    listening.bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let addr = listening.local_addr().expect("an address");
    let listener = listening.listen(8).expect("listen");
    let (client, server) = tokio::join!(client.connect(addr), listener.accept());
    (server.expect("accepted").0, client.expect("connected"))
}

/// A consensus frame with `seq` and a payload of about `size` bytes.
fn frame(seq: u64, size: usize) -> Bytes {
    frame_text(&format!("{seq:08}{}", "x".repeat(size)))
}

/// Reads frames (text, unmasked, 16-bit or short lengths) until `until`
/// says stop; their payloads' leading sequence numbers.
async fn read_seqs(client: &mut TcpStream, mut until: impl FnMut(&[u64]) -> bool) -> Vec<u64> {
    let mut seqs = Vec::new();
    while !until(&seqs) {
        let mut header = [0u8; 2];
        client.read_exact(&mut header).await.expect("a frame header");
        assert_eq!(header[0], 0x81, "a final text frame");
        let len = match header[1] {
            126 => {
                let mut ext = [0u8; 2];
                client.read_exact(&mut ext).await.expect("a length");
                usize::from(u16::from_be_bytes(ext))
            }
            n if n < 126 => usize::from(n),
            other => panic!("unexpected length byte {other}"),
        };
        let mut payload = vec![0u8; len];
        client.read_exact(&mut payload).await.expect("a payload");
        let seq = std::str::from_utf8(&payload[..8]).expect("utf-8").parse().expect("a seq");
        seqs.push(seq);
    }
    seqs
}

#[tokio::test]
async fn a_socket_with_room_takes_each_consensus_at_once_and_each_seq_once() {
    let (server, mut client) = pair(false).await;
    let outbox = Outbox::new(server);
    assert_eq!(outbox.offer(1, &frame(1, 10)), Offer::Written);
    assert_eq!(outbox.offer(1, &frame(1, 10)), Offer::Skipped, "the same tick twice");
    assert_eq!(outbox.offer(0, &frame(0, 10)), Offer::Skipped, "an older tick");
    assert_eq!(outbox.offer(2, &frame(2, 300)), Offer::Written);
    assert_eq!(read_seqs(&mut client, |s| s.len() == 2).await, [1, 2]);
}

#[tokio::test]
async fn a_socket_that_does_not_read_keeps_only_the_newest_consensus() {
    let (server, mut client) = pair(true).await;
    let outbox = Arc::new(Outbox::new(server));
    // Offer ticks until the socket stops taking them whole.
    let mut seq = 0;
    loop {
        seq += 1;
        assert!(seq < 10_000, "the socket never filled");
        if outbox.offer(seq, &frame(seq, 1000)) != Offer::Written {
            break;
        }
    }
    let stalled_at = seq;
    tokio::time::timeout(Duration::from_secs(5), outbox.stalled())
        .await
        .expect("the connection's task is woken");
    // Ten more ticks while the client reads nothing: only the newest is
    // kept (the first may find the slot empty, when the stalled tick went
    // out in part and its rest waits apart).
    for n in 0..10 {
        seq += 1;
        let offer = outbox.offer(seq, &frame(seq, 1000));
        assert!(offer == Offer::Replaced || (n == 0 && offer == Offer::Kept), "{offer:?}");
    }
    let newest = seq;
    // The client reads again; the connection's task drains.
    let drained = {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.drain().await })
    };
    let seqs = read_seqs(&mut client, |s| s.last() == Some(&newest)).await;
    drained.await.expect("no panic").expect("drained");
    // Every frame arrived whole and in order: all the ticks the socket
    // took, the stalled one if it had begun, and then the newest, nothing
    // between.
    let took: Vec<u64> = (1..stalled_at).chain([newest]).collect();
    let began: Vec<u64> = (1..=stalled_at).chain([newest]).collect();
    assert!(seqs == took || seqs == began, "{seqs:?}");
    assert_eq!(outbox.offer(newest + 1, &frame(newest + 1, 10)), Offer::Written);
}

#[tokio::test]
async fn a_sealed_outbox_takes_no_more_consensus() {
    let (server, _client) = pair(false).await;
    let outbox = Outbox::new(server);
    outbox.seal();
    assert_eq!(outbox.offer(1, &frame(1, 10)), Offer::Skipped);
}

#[tokio::test]
async fn replies_queue_behind_a_stalled_consensus_and_go_out_after_it_whole() {
    let (server, mut client) = pair(true).await;
    let outbox = Arc::new(Outbox::new(server));
    let mut seq = 0;
    while outbox.offer(seq + 1, &frame(seq + 1, 1000)) == Offer::Written {
        seq += 1;
        assert!(seq < 10_000, "the socket never filled");
    }
    let stalled_at = seq + 1;
    // A reply from the handler while the consensus waits: taken whole.
    let reply = frame(9_999_999, 20);
    let taken = std::future::poll_fn(|cx| outbox.poll_write(cx, &reply)).await;
    assert_eq!(taken.expect("taken"), reply.len());
    let drained = {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.drain().await })
    };
    let seqs =
        read_seqs(&mut client, |s| s.len() == usize::try_from(stalled_at + 1).expect("small"))
            .await;
    drained.await.expect("no panic").expect("drained");
    // The ticks the socket took, then the stalled tick and the reply, in
    // either order (a tick not begun may go after a reply), each whole.
    let (taken, rest) = seqs.split_at(usize::try_from(stalled_at - 1).expect("small"));
    assert_eq!(taken, (1..stalled_at).collect::<Vec<_>>());
    assert!(rest == [stalled_at, 9_999_999] || rest == [9_999_999, stalled_at], "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_delivers_the_rooms_consensus_to_each_of_its_sockets() {
    let first = ConsensusFrame::new(Consensus::default(), tokio::time::Instant::now());
    let (publish, consensus) = watch::channel(first);
    let tracker = TaskTracker::new();
    let fanout = Fanout::spawn(&consensus, &tracker);
    assert_eq!(fanout.shards(), 2 * shard::SHARDS_PER_WRITER, "shards for two writers");
    let mut clients = Vec::new();
    let mut registrations = Vec::new();
    for conn in 0..6 {
        let (server, client) = pair(false).await;
        registrations.push(fanout.register(conn, Arc::new(Outbox::new(server))));
        clients.push(client);
    }
    for seq in 1..=3 {
        let consensus = Consensus { seq, ..Consensus::default() };
        publish.send_replace(ConsensusFrame::new(consensus, tokio::time::Instant::now()));
        for client in &mut clients {
            let mut header = [0u8; 2];
            client.read_exact(&mut header).await.expect("a frame");
            let mut payload = vec![0u8; usize::from(header[1] & 0x7f)];
            client.read_exact(&mut payload).await.expect("a payload");
            let text = std::str::from_utf8(&payload).expect("utf-8");
            match shared::ServerMessage::parse(text) {
                Ok(shared::ServerMessage::Consensus(c)) => assert_eq!(c.seq, seq),
                other => panic!("expected consensus {seq}, got {other:?}"),
            }
        }
    }
    // A socket taken out gets nothing more; the room's end ends the writers.
    registrations.truncate(5);
    drop(publish);
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("writers end");
}
