//! The socket: joins the room, syncs the clock, reports the heart's phase,
//! sends love, and publishes what it hears as a [`RoomView`]. When the server
//! goes away it waits (full-jitter backoff) and joins again, until told to
//! quit. A thin shell: the decisions live in [`shared::backoff`],
//! [`crate::love`] and the `shared` protocol types.

use crate::clock::LocalClock;
use crate::heart::HeartReading;
use crate::love::Love;
use crate::status::{Link, RoomView};
use futures_util::{SinkExt, StreamExt};
use shared::backoff::Backoff;
use shared::{ClientMessage, ClockSample, PhaseReport, ServerMessage, Welcome, best_offset};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Give up on a socket that has not opened after this long, and retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The server broadcasts every tick (250 ms); a connection silent this long
/// is dead even if the operating system has not noticed.
const SILENCE: Duration = Duration::from_secs(15);

/// A write that has not gone through after this long means the connection
/// is stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many clock samples to take, one after another, on joining.
const SYNC_BURST: usize = 5;

/// One more sample this often, to follow clock drift (and to finish a burst
/// whose answer was lost).
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// How many recent samples the offset is taken from.
const KEEP_SAMPLES: usize = 12;

/// Love is sent at most this often, carrying the newest count.
const LOVE_BATCH: Duration = Duration::from_millis(100);

/// What the connection reads from the rest of the program.
pub struct Inputs {
    /// The heart, as the screen last stepped it.
    pub heart: watch::Receiver<HeartReading>,
    /// This session's love taps so far.
    pub taps: watch::Receiver<u64>,
    /// Becomes `true` (or is dropped) when the person quits.
    pub quit: watch::Receiver<bool>,
}

/// How a connection ended.
enum Ended {
    /// The person quit; the close frame has been sent.
    Quit,
    /// The connection failed or was lost.
    Lost {
        /// Whether the server had welcomed it (see [`Backoff::connection_ended`]).
        welcomed: bool,
        /// Why, in a few words for the status line.
        reason: String,
    },
}

/// Joins `url` (the room's socket address) and stays joined, reconnecting as
/// needed, until `inputs.quit` says to stop. Everything it learns goes to
/// `view`.
pub async fn run(
    url: String,
    clock: LocalClock,
    mut inputs: Inputs,
    view: watch::Sender<RoomView>,
) {
    let mut backoff = Backoff::default();
    let mut love = Love::default();
    loop {
        view.send_modify(|v| {
            v.link = Link::Connecting;
            v.consensus = None;
        });
        let started = Instant::now();
        let (welcomed, reason) = match session(&url, clock, &mut inputs, &view, &mut love).await {
            Ended::Quit => return,
            Ended::Lost { welcomed, reason } => (welcomed, reason),
        };
        // The backoff counts in milliseconds and the timers here in `Duration`s.
        backoff.connection_ended(started.elapsed().as_secs_f64() * 1000.0, welcomed);
        let delay = Duration::from_secs_f64(backoff.next_delay_ms(rand::random()) / 1000.0);
        let at = Instant::now() + delay;
        view.send_modify(|v| {
            v.link = Link::Retrying { at: at.into_std(), reason };
            v.consensus = None;
        });
        tokio::select! {
            () = sleep_until(at) => {}
            () = quitting(&mut inputs.quit) => return,
        }
    }
}

/// One connection, from opening the socket until it is lost or the person
/// quits.
async fn session(
    url: &str,
    clock: LocalClock,
    inputs: &mut Inputs,
    view: &watch::Sender<RoomView>,
    love: &mut Love,
) -> Ended {
    let opening = timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url));
    let socket = tokio::select! {
        opened = opening => match opened {
            Ok(Ok((socket, _response))) => socket,
            Ok(Err(error)) => return Ended::Lost { welcomed: false, reason: describe(&error) },
            Err(_) => {
                return Ended::Lost { welcomed: false, reason: String::from("no answer") };
            }
        },
        () = quitting(&mut inputs.quit) => return Ended::Quit,
    };
    let (mut sink, mut stream) = socket.split();
    love.connected();
    let mut state = Session { clock, welcome: None, samples: Vec::new(), offset_ms: 0.0 };
    let mut last_heard = Instant::now();
    // Replaced by one at the server's `report_ms` once it has welcomed us.
    let mut reports = interval(Duration::from_secs(1));
    let mut batches = interval(LOVE_BATCH);
    let mut resyncs = interval(RESYNC_EVERY);
    for timer in [&mut reports, &mut batches, &mut resyncs] {
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    loop {
        let welcomed = state.welcome.is_some();
        let lost = |reason: String| Ended::Lost { welcomed, reason };
        let outgoing = tokio::select! {
            frame = stream.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(message) = ServerMessage::parse(text.as_str()) else {
                            continue;
                        };
                        if let ServerMessage::Welcome(welcome) = &message {
                            reports = interval(report_period(welcome));
                            reports.set_missed_tick_behavior(MissedTickBehavior::Delay);
                            resyncs.reset();
                        }
                        state.receive(message, view, love)
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame
                            .filter(|f| !f.reason.is_empty())
                            .map_or_else(|| String::from("the server closed"), |f| {
                                format!("the server closed ({})", f.reason)
                            });
                        return lost(reason);
                    }
                    // Pings are answered by tungstenite on the next read or write.
                    Some(Ok(_)) => None,
                    Some(Err(error)) => return lost(describe(&error)),
                    None => return lost(String::from("the connection dropped")),
                }
            }
            () = sleep_until(last_heard + SILENCE) => {
                return lost(String::from("the server went silent"));
            }
            _ = reports.tick(), if welcomed => Some(state.report(*inputs.heart.borrow())),
            _ = batches.tick(), if welcomed => {
                love.set_taps(*inputs.taps.borrow());
                love.due(Instant::now().into_std()).map(|seq| ClientMessage::Love { seq })
            }
            _ = resyncs.tick(), if welcomed => {
                Some(state.time_request())
            }
            () = quitting(&mut inputs.quit) => {
                let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
                let _ = timeout(Duration::from_millis(500), sink.send(Message::Close(Some(bye)))).await;
                return Ended::Quit;
            }
        };
        if let Some(message) = outgoing {
            match timeout(WRITE_TIMEOUT, sink.send(Message::text(message.to_json()))).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return lost(describe(&error)),
                Err(_) => return lost(String::from("the connection is stuck")),
            }
        }
    }
}

/// Returns once the person has quit (the flag is set, or its sender is gone).
async fn quitting(quit: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any other await,
    // so the connection's future stays `Send`.
    let _ = quit.wait_for(|quit| *quit).await;
}

/// The report period the server asked for, kept within sane bounds.
fn report_period(welcome: &Welcome) -> Duration {
    Duration::from_millis(welcome.report_ms.clamp(100, 60_000))
}

/// What one connection knows.
struct Session {
    /// The local clock that reports and samples are timed on.
    clock: LocalClock,
    /// The server's greeting, once it has come.
    welcome: Option<Welcome>,
    /// Recent clock samples, oldest first.
    samples: Vec<ClockSample>,
    /// What to add to the local clock to read the server's (ms).
    offset_ms: f64,
}

impl Session {
    /// Takes in one message from the server, updates `view` and `love`, and
    /// returns what to send in answer, if anything.
    fn receive(
        &mut self,
        message: ServerMessage,
        view: &watch::Sender<RoomView>,
        love: &mut Love,
    ) -> Option<ClientMessage> {
        match message {
            ServerMessage::Welcome(welcome) => {
                // Until the first sample is back, the welcome's own clock is
                // a fair guess at the offset (off by the one-way latency).
                self.offset_ms = welcome.server_time - self.clock.now_ms();
                let offset_ms = self.offset_ms;
                view.send_modify(|v| {
                    v.link = Link::Connected;
                    v.offset_ms = offset_ms;
                });
                self.welcome = Some(welcome);
                Some(self.time_request())
            }
            ServerMessage::Time(reply) => {
                let sample = ClockSample {
                    t0: reply.t0,
                    server_time: reply.server_time,
                    t1: self.clock.now_ms(),
                };
                self.samples.push(sample);
                if self.samples.len() > KEEP_SAMPLES {
                    self.samples.remove(0);
                }
                if let Some(offset_ms) = best_offset(&self.samples) {
                    self.offset_ms = offset_ms;
                    view.send_modify(|v| v.offset_ms = offset_ms);
                }
                (self.samples.len() < SYNC_BURST).then(|| self.time_request())
            }
            ServerMessage::Consensus(consensus) => {
                view.send_modify(|v| {
                    v.love_total = v.love_total.max(Some(consensus.love));
                    v.consensus = Some(consensus);
                });
                None
            }
            ServerMessage::LoveAck(ack) => {
                love.acked(ack.seq);
                view.send_modify(|v| {
                    v.love_total = v.love_total.max(Some(ack.total));
                    v.love_acked = love.acknowledged();
                });
                None
            }
            ServerMessage::Error(error) => {
                let notice = (std::time::Instant::now(), error.to_string());
                view.send_modify(|v| v.notice = Some(notice));
                None
            }
        }
    }

    /// A clock-sync request stamped with the local clock.
    fn time_request(&self) -> ClientMessage {
        ClientMessage::Time { t0: self.clock.now_ms() }
    }

    /// A phase report for the heart as it is now, stamped with the server's
    /// time (as best this client knows it).
    fn report(&self, heart: HeartReading) -> ClientMessage {
        let now = self.clock.now_ms();
        let at = now + self.offset_ms;
        ClientMessage::Phase(PhaseReport { phase: heart.phase_at(now), bpm: heart.bpm, at })
    }
}

/// A few words on why a connection failed, for the status line.
fn describe(error: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            String::from("connection refused")
        }
        Error::Io(io) => io.to_string(),
        Error::Http(response) => format!("the server answered {}", response.status()),
        Error::ConnectionClosed | Error::AlreadyClosed => String::from("the connection closed"),
        other => other.to_string(),
    }
}
