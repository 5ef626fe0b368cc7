//! The page's WebSocket to its room: one `spawn_local` loop over a gloo-net
//! socket (a futures `Stream` + `Sink`), one timer set to
//! [`Session::next_wake`](shared::client::Session::next_wake), and the
//! page's [`Command`]s. A thin shell: what to send, when a connection is
//! lost and how long to wait is the session's to say; this module only
//! moves frames. The loop ends, closing its socket, when the room component
//! is cleaned up (it closes the command channel and releases the session).
//!
//! gloo-net drives the browser's own WebSocket, so the browser offers
//! permessage-deflate as it always does; the server declines it, and so does
//! `trunk serve`'s proxy in development.

use crate::browser;
use crate::page::{Command, Page};
use futures::channel::mpsc::UnboundedReceiver;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, WebSocketError};
use shared::ClientMessage;
use shared::client::Visible;

/// The room component is gone: the loop ends.
struct Stopped;

/// Joins `url` and stays joined, reconnecting as the session says, until the
/// page is gone.
pub async fn run(url: String, page: Page, mut commands: UnboundedReceiver<Command>) {
    loop {
        if page.with(|s| s.connecting(browser::now())).is_none() {
            return;
        }
        page.show(browser::now());
        let reason = match connection(&url, &page, &mut commands).await {
            Ok(reason) => reason,
            Err(Stopped) => return,
        };
        web_sys::console::info_1(&format!("heartsync: connection lost ({reason})").into());
        if wait(&page, &mut commands, &reason).await.is_err() {
            return;
        }
    }
}

/// Waits until the session's retry time, or until coming back online or
/// into view says to try now; the status line counts down meanwhile.
async fn wait(
    page: &Page,
    commands: &mut UnboundedReceiver<Command>,
    reason: &str,
) -> Result<(), Stopped> {
    let now = browser::now();
    let until = page
        .with(|s| s.closed(now, reason, browser::random(), browser::hidden()))
        .ok_or(Stopped)?;
    loop {
        let now = browser::now();
        page.show(now);
        if now >= until {
            return Ok(());
        }
        // Wake at least every second, for the countdown.
        let mut tick = browser::sleep_until(until.min(now + 1000.0)).fuse();
        futures::select_biased! {
            () = tick => {}
            command = commands.next() => {
                let now_please = match command.ok_or(Stopped)? {
                    Command::Online => page.with(|s| s.online()).ok_or(Stopped)?,
                    Command::Visibility if !browser::hidden() => {
                        page.with(|s| s.visible(now)).ok_or(Stopped)? == Visible::Reconnect
                    }
                    // A tap while offline is counted and shown; it goes out
                    // with the next connection.
                    Command::Visibility | Command::Poke => false,
                };
                if now_please {
                    return Ok(());
                }
            }
        }
    }
}

/// One connection: opens the socket, talks until it is lost (the reason, in
/// a few words) or the page is gone, and closes it.
async fn connection(
    url: &str,
    page: &Page,
    commands: &mut UnboundedReceiver<Command>,
) -> Result<String, Stopped> {
    let socket = match WebSocket::open(url) {
        Ok(socket) => socket,
        Err(error) => {
            web_sys::console::error_1(
                &format!("heartsync: cannot open the WebSocket: {error}").into(),
            );
            return Ok(String::from("cannot open a socket"));
        }
    };
    let (mut sink, mut stream) = socket.split();
    let ended = talk(&mut sink, &mut stream, page, commands).await;
    if let Ok(socket) = sink.reunite(stream) {
        // Closing a socket that is already closed is harmless.
        let _ = socket.close(Some(1000), None);
    }
    ended
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Waits for the socket to open, then moves frames both ways until it is
/// lost or the page is gone.
async fn talk(
    sink: &mut Sink,
    stream: &mut Stream,
    page: &Page,
    commands: &mut UnboundedReceiver<Command>,
) -> Result<String, Stopped> {
    // The sink is ready once the socket has opened (or failed, which the
    // stream then reports); the session's connect timeout bounds the wait.
    loop {
        let wake = page.with(|s| s.next_wake()).ok_or(Stopped)?;
        let mut timer = browser::sleep_until(wake).fuse();
        futures::select_biased! {
            ready = futures::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).fuse() => {
                if ready.is_err() {
                    return Ok(String::from("the socket failed"));
                }
                break;
            }
            () = timer => {}
            command = commands.next() => {
                command.ok_or(Stopped)?;
            }
        }
        if let Err(stuck) = page.with(|s| s.poll(browser::now())).ok_or(Stopped)? {
            return Ok(stuck.reason().to_owned());
        }
    }
    let mut outgoing = page.with(|s| s.opened(browser::now())).ok_or(Stopped)?;
    loop {
        for message in outgoing.drain(..) {
            if let Err(error) = sink.send(Message::Text(message.to_json())).await {
                return Ok(format!("cannot send: {error}"));
            }
        }
        let wake = page.with(|s| s.next_wake()).ok_or(Stopped)?;
        let mut timer = browser::sleep_until(wake).fuse();
        // In order: a frame that is already waiting is taken before the
        // timer can say the server went silent (and no random branch order
        // is compiled into the page).
        futures::select_biased! {
            frame = stream.next().fuse() => match frame {
                Some(Ok(Message::Text(text))) => outgoing.extend(received(page, &text)?),
                Some(Ok(Message::Bytes(_))) => {
                    web_sys::console::warn_1(&"heartsync: ignored a binary frame".into());
                    page.with(|s| s.heard(browser::now())).ok_or(Stopped)?;
                }
                Some(Err(WebSocketError::ConnectionClose(close))) => {
                    return Ok(format!("closed ({})", close.code));
                }
                // The browser logs the error itself; `close` follows.
                Some(Err(_)) => {}
                None => return Ok(String::from("connection lost")),
            },
            () = timer => {}
            command = commands.next() => match command.ok_or(Stopped)? {
                Command::Visibility if !browser::hidden() => {
                    let now = browser::now();
                    if let Visible::Resync(message) = page.with(|s| s.visible(now)).ok_or(Stopped)? {
                        outgoing.push(message);
                    }
                }
                Command::Visibility | Command::Poke | Command::Online => {}
            },
        }
        let now = browser::now();
        match page.with(|s| s.poll(now)).ok_or(Stopped)? {
            Ok(due) => {
                // A love count may name a ledger just proposed: it is kept
                // before it goes, so a reload resends it in that ledger.
                if due.iter().any(|m| matches!(m, ClientMessage::Love { .. })) {
                    page.save_acked();
                }
                outgoing.extend(due);
            }
            Err(stuck) => return Ok(stuck.reason().to_owned()),
        }
        page.show(now);
    }
}

/// Takes one text frame from the server: what to send in answer.
fn received(page: &Page, text: &str) -> Result<Vec<ClientMessage>, Stopped> {
    let now = browser::now();
    let reaction = match page.with(|s| s.receive_text(text, now)).ok_or(Stopped)? {
        Ok(reaction) => reaction,
        Err(e) => {
            web_sys::console::warn_1(
                &format!("heartsync: ignored a frame the page does not understand ({e}): {text}")
                    .into(),
            );
            return Ok(Vec::new());
        }
    };
    if reaction.acked_changed {
        page.save_acked();
    }
    if let Some(error) = reaction.error {
        web_sys::console::error_1(
            &format!("heartsync: the server refused a message: {error}").into(),
        );
    }
    Ok(reaction.send)
}
