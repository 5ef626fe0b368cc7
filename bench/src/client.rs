//! One simulated heart: connects like the page does (from a chosen source
//! address), reports its phase every `report_ms`, and measures every
//! consensus it receives.

use crate::stamped::Stamped;
use crate::stats::{Seen, Stats};
use futures_util::{SinkExt, StreamExt};
use shared::clock::system_now_ms as now_ms;
use shared::{ClientMessage, PhaseReport, ServerMessage};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What one client does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The WebSocket URL, room and client id included.
    pub url: String,
    /// The server's address.
    pub server: SocketAddr,
    /// The local address to connect from (spreads ephemeral ports).
    pub source: IpAddr,
    /// Whether to report a phase every `report_ms` (an idle heart doesn't).
    pub report: bool,
    /// Where in its beat this heart starts, in [0, 1).
    pub start_phase: f64,
    /// Love taps a second (0: none); each tap is one `love` message.
    pub taps_per_s: f64,
    /// With several instances, the index of the one it connects to: what it
    /// receives is recorded for the cross-instance agreement. `None` with
    /// one instance (nothing to compare, and less to parse).
    pub instance: Option<usize>,
}

/// Runs one client until `stop` turns true. Measurements go to `stats`;
/// tick delays and missed ticks only while `measuring` is set.
pub async fn run(
    plan: Plan,
    stats: Arc<Stats>,
    measuring: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let Some((mut socket, report_ms)) = connect(&plan, &stats).await else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    stats.connect_ms.record(started.elapsed().as_secs_f64() * 1000.0);
    stats.connected.fetch_add(1, Ordering::Relaxed);

    // Report at a random point within the period, like pages that opened
    // at different times.
    let period = Duration::from_millis(report_ms.max(100));
    let first = period.mul_f64(plan.start_phase);
    let mut reports = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bpm = shared::client::RESTING_BPM;
    let epoch = now_ms();
    let mut last_seq: Option<u64> = None;
    let tapping = plan.taps_per_s > 0.0;
    let tap_period = Duration::from_secs_f64(1.0 / plan.taps_per_s.max(1e-3));
    let mut taps = tokio::time::interval_at(
        tokio::time::Instant::now() + tap_period.mul_f64(plan.start_phase),
        tap_period,
    );
    taps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut love_seq = 0u64;
    // Taps sent and not yet acknowledged, oldest first.
    let mut unacked: std::collections::VecDeque<(u64, Instant)> = Default::default();
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = socket.close(None).await;
                break;
            }
            _ = reports.tick(), if plan.report => {
                let at = now_ms();
                let phase = shared::project(plan.start_phase, bpm, epoch, at);
                let report = ClientMessage::Phase(PhaseReport { phase, bpm, at });
                if socket.send(Message::text(report.to_json())).await.is_err() {
                    break;
                }
            }
            _ = taps.tick(), if tapping => {
                love_seq += 1;
                unacked.push_back((love_seq, Instant::now()));
                let love = ClientMessage::Love { seq: love_seq, epoch: 0 };
                if socket.send(Message::text(love.to_json())).await.is_err() {
                    break;
                }
            }
            frame = socket.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        stats.closed(frame.map_or(1005, |f| f.code.into()));
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
                stats.messages_received.fetch_add(1, Ordering::Relaxed);
                // When the kernel received this frame (if it stamped it).
                let arrival = socket.get_ref().arrival_ms();
                // The generator shares the machine with the server: read only
                // what is measured from the 40k consensus messages a second.
                if text.as_str().starts_with(CONSENSUS_PREFIX) {
                    let Some(instance) = plan.instance else {
                        let Ok(c) = serde_json::from_str::<Tick>(text.as_str()) else {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        record_tick(&stats, &measuring, &mut last_seq, (c.seq, c.at), arrival);
                        continue;
                    };
                    let Ok(c) = serde_json::from_str::<shared::Consensus>(text.as_str()) else {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if measuring.load(Ordering::Relaxed) {
                        let seen =
                            Seen::new(c.phase, c.coherence, c.bpm, c.hearts, c.voters, c.love);
                        stats.agreement.record(instance, c.seq, seen);
                    }
                    record_tick(&stats, &measuring, &mut last_seq, (c.seq, c.at), arrival);
                    continue;
                }
                match ServerMessage::parse(text.as_str()) {
                    Ok(ServerMessage::Consensus(c)) => {
                        record_tick(&stats, &measuring, &mut last_seq, (c.seq, c.at), arrival);
                    }
                    Ok(ServerMessage::LoveAck(ack)) => {
                        while unacked.front().is_some_and(|(seq, _)| *seq <= ack.seq) {
                            if let Some((_, sent)) = unacked.pop_front()
                                && measuring.load(Ordering::Relaxed)
                            {
                                stats.love_ack_ms.record(sent.elapsed().as_secs_f64() * 1000.0);
                                stats.taps_acked.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(ServerMessage::Error(_)) | Err(_) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                }
            }
        }
    }
    stats.connected.fetch_sub(1, Ordering::Relaxed);
}

/// How every consensus frame begins (serde writes the tag first).
const CONSENSUS_PREFIX: &str = r#"{"type":"consensus","#;

/// The two fields of a consensus the benchmark measures.
#[derive(serde::Deserialize)]
struct Tick {
    seq: u64,
    at: f64,
}

/// Counts one consensus (`seq`, `at`): its delay (to the read, and to its
/// arrival in the socket when the kernel stamped it) and any gap before it,
/// while the window is being measured.
fn record_tick(
    stats: &Stats,
    measuring: &AtomicBool,
    last_seq: &mut Option<u64>,
    (seq, at): (u64, f64),
    arrival_ms: Option<f64>,
) {
    if measuring.load(Ordering::Relaxed) {
        stats.tick_delay_ms.record(now_ms() - at);
        if let Some(arrival) = arrival_ms {
            stats.arrival_delay_ms.record(arrival - at);
        }
        stats.consensus_received.fetch_add(1, Ordering::Relaxed);
        if let Some(last) = *last_seq {
            stats.ticks_missed.fetch_add(seq.saturating_sub(last + 1), Ordering::Relaxed);
        }
    }
    *last_seq = Some(seq);
}

type Socket = tokio_tungstenite::WebSocketStream<Stamped>;

/// TCP connect from the plan's source address, upgrade, and read the
/// welcome; the socket and the report interval it asks for.
async fn connect(plan: &Plan, stats: &Stats) -> Option<(Socket, u64)> {
    let socket = match plan.source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .ok()?;
    socket.bind(SocketAddr::new(plan.source, 0)).ok()?;
    let stream = tokio::time::timeout(Duration::from_secs(30), socket.connect(plan.server))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let stream = Stamped::new(stream).ok()?;
    // Small messages only: a small read buffer, as the server uses.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let handshake =
        tokio_tungstenite::client_async_with_config(plan.url.as_str(), stream, Some(config));
    let (mut socket, _) = match tokio::time::timeout(Duration::from_secs(30), handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            // Refused before the upgrade (e.g. 503 over a cap).
            tracing_refusal(stats, response.status().as_u16());
            return None;
        }
        _ => return None,
    };
    loop {
        let frame =
            tokio::time::timeout(Duration::from_secs(30), socket.next()).await.ok()??.ok()?;
        if let Message::Text(text) = frame {
            stats.messages_received.fetch_add(1, Ordering::Relaxed);
            if let Ok(ServerMessage::Welcome(welcome)) = ServerMessage::parse(text.as_str()) {
                return Some((socket, welcome.report_ms));
            }
            return None;
        }
    }
}

fn tracing_refusal(stats: &Stats, status: u16) {
    stats.refused.fetch_add(1, Ordering::Relaxed);
    stats.last_refusal.store(u64::from(status), Ordering::Relaxed);
}
