//! The socket: opens it, feeds what the server says into the session, sends
//! what the session says is due, and when the connection is lost waits as
//! long as the session says and opens the next, until told to quit. A thin
//! shell: every decision is [`shared::client::Session`]'s; this module only
//! moves frames and keeps the one timer, set to [`Session::next_wake`].

use crate::clock::LocalClock;
use futures_util::{SinkExt, StreamExt};
use shared::client::Session;
use shared::client::link::CONNECT_TIMEOUT_MS;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A write that has not gone through after this long means the connection
/// is stuck. (The page has no such deadline: the browser buffers its writes.)
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the screen and the connection share.
pub struct State {
    /// The conversation with the room and this client's heart.
    pub session: Session,
    /// The last message the server refused, and when (local ms), for the
    /// status line.
    pub notice: Option<(f64, String)>,
}

/// The state behind a lock that is held only for one call, never across an
/// `.await`, and a way to wake the connection when a tap makes love due.
#[derive(Clone)]
pub struct Shared {
    state: Arc<Mutex<State>>,
    poke: Arc<Notify>,
}

impl Shared {
    /// Shares `session`.
    pub fn new(session: Session) -> Self {
        Self {
            state: Arc::new(Mutex::new(State { session, notice: None })),
            poke: Arc::new(Notify::new()),
        }
    }

    /// Runs `f` on the state. A panic elsewhere while the lock was held
    /// left nothing half-done that matters here (every session method
    /// finishes its own changes), so a poisoned lock is used as it is.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs `f` on the session.
    pub fn session<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        self.with(|state| f(&mut state.session))
    }

    /// One tap of love: counted now, and the connection woken to send it.
    pub fn tap(&self) {
        self.session(Session::tap);
        // A stored permit: a tap made while the connection is busy is not lost.
        self.poke.notify_one();
    }
}

/// How a connection ended.
enum Ended {
    /// The person quit; the close frame has been sent.
    Quit,
    /// The connection failed or was lost, for this reason.
    Lost(String),
}

/// Joins `url` (the room's socket address) and stays joined, reconnecting as
/// the session says, until `quit` says to stop.
pub async fn run(url: String, clock: LocalClock, shared: Shared, mut quit: watch::Receiver<bool>) {
    loop {
        shared.session(|s| s.connecting(clock.now_ms()));
        let reason = match connection(&url, clock, &shared, &mut quit).await {
            Ended::Quit => return,
            Ended::Lost(reason) => reason,
        };
        let now = clock.now_ms();
        let until = shared.session(|s| s.closed(now, &reason, rand::random(), false));
        tokio::select! {
            () = sleep(until_then(now, until)) => {}
            () = quitting(&mut quit) => return,
        }
    }
}

/// How long from local time `now` until `then`, for a timer.
fn until_then(now: f64, then: f64) -> Duration {
    // An hour stands in for "never": the session always has a deadline
    // while connected, so this only bounds a nonsensical one.
    Duration::from_secs_f64(((then - now) / 1000.0).clamp(0.0, 3600.0))
}

/// One connection, from opening the socket until it is lost or the person
/// quits.
async fn connection(
    url: &str,
    clock: LocalClock,
    shared: &Shared,
    quit: &mut watch::Receiver<bool>,
) -> Ended {
    let opening = timeout(
        Duration::from_secs_f64(CONNECT_TIMEOUT_MS / 1000.0),
        tokio_tungstenite::connect_async(url),
    );
    let socket = tokio::select! {
        opened = opening => match opened {
            Ok(Ok((socket, _response))) => socket,
            Ok(Err(error)) => return Ended::Lost(describe(&error)),
            Err(_) => return Ended::Lost(String::from("no answer")),
        },
        () = quitting(quit) => return Ended::Quit,
    };
    let (mut sink, mut stream) = socket.split();
    let mut outgoing = shared.session(|s| s.opened(clock.now_ms()));
    loop {
        for message in outgoing.drain(..) {
            match timeout(WRITE_TIMEOUT, sink.send(Message::text(message.to_json()))).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Ended::Lost(describe(&error)),
                Err(_) => return Ended::Lost(String::from("the connection is stuck")),
            }
        }
        let wake = shared.session(|s| s.next_wake());
        tokio::select! {
            frame = stream.next() => {
                let now = clock.now_ms();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        let reaction = shared.with(|state| {
                            let reaction = state.session.receive_text(text.as_str(), now).ok()?;
                            if let Some(error) = &reaction.error {
                                state.notice = Some((now, error.to_string()));
                            }
                            Some(reaction)
                        });
                        outgoing.extend(reaction.into_iter().flat_map(|r| r.send));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame
                            .filter(|f| !f.reason.is_empty())
                            .map_or_else(|| String::from("the server closed"), |f| {
                                format!("the server closed ({})", f.reason)
                            });
                        return Ended::Lost(reason);
                    }
                    // Pings are answered by tungstenite on the next read or
                    // write; they are still a sign of life.
                    Some(Ok(_)) => shared.session(|s| s.heard(now)),
                    Some(Err(error)) => return Ended::Lost(describe(&error)),
                    None => return Ended::Lost(String::from("the connection dropped")),
                }
            }
            () = sleep(until_then(clock.now_ms(), wake)) => {}
            () = shared.poke.notified() => {}
            () = quitting(quit) => {
                let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
                let _ = timeout(Duration::from_millis(500), sink.send(Message::Close(Some(bye)))).await;
                return Ended::Quit;
            }
        }
        match shared.session(|s| s.poll(clock.now_ms())) {
            Ok(due) => outgoing.extend(due),
            Err(stuck) => return Ended::Lost(stuck.reason().to_owned()),
        }
    }
}

/// Returns once the person has quit (the flag is set, or its sender is gone).
async fn quitting(quit: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any other await,
    // so the connection's future stays `Send`.
    let _ = quit.wait_for(|quit| *quit).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use shared::client::{Heart, Love, RESTING_BPM};

    #[test]
    fn timers_are_bounded() {
        assert_eq!(until_then(1000.0, 500.0), Duration::ZERO);
        assert_eq!(until_then(1000.0, 3500.0), Duration::from_millis(2500));
        assert_eq!(until_then(0.0, f64::INFINITY), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn a_tap_wakes_the_connection_even_before_it_waits() {
        let shared = Shared::new(Session::new(Heart::new(0.0, RESTING_BPM, 0.0), Love::new(0, 0)));
        shared.tap();
        assert_eq!(shared.session(|s| s.love().taps()), 1);
        // The permit is stored: the wait that comes later returns at once.
        tokio::time::timeout(Duration::from_secs(5), shared.poke.notified())
            .await
            .expect("the tap's permit");
    }
}
