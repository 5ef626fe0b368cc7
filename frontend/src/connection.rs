//! The page's WebSocket to its room, and everything that keeps it alive: the
//! socket's handlers, reconnecting with full-jitter backoff, the report and
//! love timers, and the `online` and `visibilitychange` listeners. A thin
//! shell: what to send and what a message means is decided by
//! [`Session`](crate::session::Session); this module only moves frames.
//!
//! Every handler holds a weak reference to the connection, so nothing keeps
//! it alive in a cycle; [`Connection::stop`] closes the socket and drops every
//! timer and listener.

use crate::browser::{self, Listener, Timer};
use crate::reconnect::{self, CONNECT_TIMEOUT_MS, Link, SILENCE_MS};
use crate::session::Session;
use shared::backoff::Backoff;
use shared::{ClientMessage, ServerMessage};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

/// How often the connection looks at its clock: love that is due, a silent
/// socket, a socket that never opens.
const PUMP_MS: f64 = 100.0;

/// What the connection, the canvas and the components share.
pub struct Page {
    /// The conversation with the room and the page's heart.
    pub session: Session,
    /// Where the connection stands.
    pub link: Link,
}

/// The page state as the browser modules hold it.
pub type SharedPage = Rc<RefCell<Page>>;

/// The localStorage keys the love counts persist under.
pub struct LoveKeys {
    /// Every tap made in this room.
    pub taps: String,
    /// The highest count the server acknowledged.
    pub acked: String,
}

/// A handle on the page's connection; clones share it.
#[derive(Clone)]
pub struct Connection {
    inner: Rc<RefCell<Inner>>,
}

type Handle = Weak<RefCell<Inner>>;

struct Inner {
    /// Where to connect.
    url: String,
    page: SharedPage,
    keys: LoveKeys,
    /// The current socket, if one is open or opening.
    socket: Option<Socket>,
    backoff: Backoff,
    /// When (local ms) the current socket was created, for the open timeout.
    started_at: f64,
    /// When it opened, once it has.
    opened_at: Option<f64>,
    /// When the server was last heard from, for the silence check.
    last_heard: f64,
    /// The pending reconnect.
    retry: Option<Timer>,
    /// The phase-report interval and its period (it follows the welcome).
    report: Option<(u64, Timer)>,
    /// The [`PUMP_MS`] interval.
    pump: Option<Timer>,
    /// `online` on the window, `visibilitychange` on the document.
    listeners: Vec<Listener>,
    /// Tells the components that something they show has changed.
    on_change: Rc<dyn Fn()>,
    /// Set by [`Connection::stop`]: nothing may reconnect after it.
    stopped: bool,
}

/// A WebSocket with its handlers; dropping it detaches them and closes it.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    fn open(url: &str, handle: &Handle) -> Result<Socket, JsValue> {
        let ws = WebSocket::new(url)?;
        let on_open = {
            let handle = handle.clone();
            Closure::<dyn FnMut()>::new(move || with(&handle, opened))
        };
        let on_message = {
            let handle = handle.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                if let Some(inner) = handle.upgrade() {
                    received(&inner, &event);
                }
            })
        };
        let on_close = {
            let handle = handle.clone();
            // An `error` event is always followed by `close`, which is where
            // the page reacts; the browser logs the error itself.
            Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
                web_sys::console::info_1(
                    &format!("heartsync: connection closed ({} {})", event.code(), event.reason())
                        .into(),
                );
                if let Some(inner) = handle.upgrade() {
                    inner.borrow_mut().lost(&handle);
                }
            })
        };
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Socket { ws, _on_open: on_open, _on_message: on_message, _on_close: on_close })
    }

    fn is_open(&self) -> bool {
        self.ws.ready_state() == WebSocket::OPEN
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Detach first, so a replaced socket's late events cannot touch the
        // connection that replaced it.
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        if matches!(self.ws.ready_state(), WebSocket::CONNECTING | WebSocket::OPEN) {
            // Closing a socket that is already closing fails harmlessly.
            let _ = self.ws.close_with_code(1000);
        }
    }
}

/// Runs `f` on the connection behind `handle`, if it still exists.
fn with(handle: &Handle, f: impl FnOnce(&mut Inner, &Handle)) {
    if let Some(inner) = handle.upgrade() {
        f(&mut inner.borrow_mut(), handle);
    }
}

impl Connection {
    /// Starts connecting to `url` at once and keeps reconnecting until
    /// [`Self::stop`]. `on_change` is called when the link or the room view
    /// changes.
    pub fn start(url: String, page: SharedPage, keys: LoveKeys, on_change: Rc<dyn Fn()>) -> Self {
        let inner = Rc::new(RefCell::new(Inner {
            url,
            page,
            keys,
            socket: None,
            backoff: Backoff::default(),
            started_at: 0.0,
            opened_at: None,
            last_heard: 0.0,
            retry: None,
            report: None,
            pump: None,
            listeners: Vec::new(),
            on_change,
            stopped: false,
        }));
        let handle = Rc::downgrade(&inner);
        {
            let mut this = inner.borrow_mut();
            this.pump = Timer::interval(PUMP_MS, {
                let handle = handle.clone();
                move || with(&handle, Inner::pump)
            });
            if let Some(window) = web_sys::window() {
                let online = Listener::new(&window, "online", {
                    let handle = handle.clone();
                    move |_| with(&handle, Inner::online)
                });
                let visibility = window.document().and_then(|document| {
                    Listener::new(&document, "visibilitychange", {
                        let handle = handle.clone();
                        move |_| with(&handle, Inner::visibility_changed)
                    })
                });
                this.listeners.extend(online.into_iter().chain(visibility));
            }
            this.connect(&handle);
        }
        Connection { inner }
    }

    /// One tap of love: counted and persisted at once, sent when the batch
    /// window allows (now, or within [`crate::love::BATCH_MS`]).
    pub fn tap(&self) {
        let this = self.inner.borrow();
        let now = browser::now();
        let (taps, due) = {
            let mut page = this.page.borrow_mut();
            let taps = page.session.tap();
            (taps, page.session.tick(now))
        };
        browser::save(&this.keys.taps, &taps.to_string());
        if let Some(message) = due {
            this.send(&message);
        }
        (this.on_change)();
    }

    /// Closes the socket and releases every timer and listener for good.
    pub fn stop(&self) {
        let mut this = self.inner.borrow_mut();
        this.stopped = true;
        this.retry = None;
        this.report = None;
        this.pump = None;
        this.listeners.clear();
        this.socket = None;
    }
}

impl Inner {
    fn set_link(&mut self, link: Link) {
        self.page.borrow_mut().link = link;
        (self.on_change)();
    }

    fn link(&self) -> Link {
        self.page.borrow().link
    }

    fn send(&self, message: &ClientMessage) {
        let Some(socket) = self.socket.as_ref().filter(|s| s.is_open()) else {
            // Nothing is lost: love is resent after a reconnect, and clock
            // syncs and reports are made afresh.
            return;
        };
        if let Err(e) = socket.ws.send_with_str(&message.to_json()) {
            web_sys::console::warn_2(&"heartsync: send failed:".into(), &e);
        }
    }

    /// Opens a new socket now, replacing any other.
    fn connect(&mut self, handle: &Handle) {
        if self.stopped {
            return;
        }
        self.retry = None;
        self.socket = None;
        self.report = None;
        let now = browser::now();
        self.started_at = now;
        self.opened_at = None;
        match Socket::open(&self.url, handle) {
            Ok(socket) => {
                self.socket = Some(socket);
                self.set_link(Link::Connecting);
            }
            Err(e) => {
                web_sys::console::error_2(&"heartsync: cannot open the WebSocket:".into(), &e);
                self.schedule_retry(handle);
            }
        }
    }

    /// The socket is gone (closed, timed out or silent): wait, then retry.
    fn lost(&mut self, handle: &Handle) {
        let now = browser::now();
        let up_ms = self.opened_at.map_or(0.0, |t| now - t);
        let welcomed = self.page.borrow().session.welcomed();
        self.backoff.connection_ended(up_ms, welcomed);
        self.page.borrow_mut().session.closed();
        self.socket = None;
        self.report = None;
        self.opened_at = None;
        self.schedule_retry(handle);
    }

    fn schedule_retry(&mut self, handle: &Handle) {
        if self.stopped {
            return;
        }
        let delay =
            reconnect::next_delay_ms(&mut self.backoff, browser::random(), browser::hidden());
        self.set_link(Link::Waiting { until: browser::now() + delay });
        let handle = handle.clone();
        self.retry = Timer::timeout(delay, move || with(&handle, Inner::connect));
    }

    /// Restarts the report interval if the period changed (or none runs).
    fn schedule_reports(&mut self, handle: &Handle) {
        let period = self.page.borrow().session.report_ms();
        if self.report.as_ref().is_some_and(|(p, _)| *p == period) {
            return;
        }
        let handle = handle.clone();
        self.report =
            Timer::interval(period as f64, move || with(&handle, |this, _| this.send_report()))
                .map(|timer| (period, timer));
    }

    fn send_report(&self) {
        let report = self.page.borrow().session.report(browser::now());
        if let Some(report) = report {
            self.send(&report);
        }
    }

    fn pump(&mut self, handle: &Handle) {
        let Some(socket) = &self.socket else { return };
        let now = browser::now();
        let stuck = match self.opened_at {
            None => now - self.started_at > CONNECT_TIMEOUT_MS,
            Some(_) => now - self.last_heard > SILENCE_MS,
        };
        if stuck {
            web_sys::console::warn_1(&"heartsync: the connection went quiet; reconnecting".into());
            self.lost(handle);
            return;
        }
        if socket.is_open() {
            let due = self.page.borrow_mut().session.tick(now);
            if let Some(message) = due {
                self.send(&message);
            }
        }
    }

    fn online(&mut self, handle: &Handle) {
        if matches!(self.link(), Link::Waiting { .. }) {
            self.backoff.reset();
            self.connect(handle);
        }
    }

    fn visibility_changed(&mut self, handle: &Handle) {
        if browser::hidden() {
            return;
        }
        match self.link() {
            Link::Waiting { .. } => self.connect(handle),
            // Timers were throttled while hidden and the clocks may have
            // drifted: measure the offset again.
            Link::Connected => {
                let message = self.page.borrow_mut().session.resync(browser::now());
                self.send(&message);
            }
            Link::Connecting => {}
        }
    }
}

fn opened(this: &mut Inner, handle: &Handle) {
    let now = browser::now();
    this.opened_at = Some(now);
    this.last_heard = now;
    let messages = this.page.borrow_mut().session.opened(now);
    for message in &messages {
        this.send(message);
    }
    this.schedule_reports(handle);
}

fn received(inner: &Rc<RefCell<Inner>>, event: &MessageEvent) {
    let now = browser::now();
    let Some(text) = event.data().as_string() else {
        web_sys::console::warn_1(&"heartsync: ignored a binary frame from the server".into());
        return;
    };
    let message = match ServerMessage::parse(&text) {
        Ok(message) => message,
        Err(e) => {
            web_sys::console::warn_1(
                &format!("heartsync: ignored a frame the page does not understand ({e}): {text}")
                    .into(),
            );
            return;
        }
    };
    let handle = Rc::downgrade(inner);
    let mut this = inner.borrow_mut();
    this.last_heard = now;
    let welcome = matches!(message, ServerMessage::Welcome(_));
    let (reaction, first_report) = {
        let mut page = this.page.borrow_mut();
        let synced = page.session.clock.offset().is_some();
        let reaction = page.session.receive(message, now);
        // The moment the clock is first known, report at once rather than
        // waiting a whole period: the room hears about this heart sooner.
        let first_report = if synced { None } else { page.session.report(now) };
        (reaction, first_report)
    };
    for message in reaction.send.iter().chain(&first_report) {
        this.send(message);
    }
    if reaction.acked_changed {
        let acked = this.page.borrow().session.love.acked();
        browser::save(&this.keys.acked, &acked.to_string());
    }
    if let Some(error) = reaction.error {
        web_sys::console::error_1(
            &format!("heartsync: the server refused a message: {error}").into(),
        );
    }
    if welcome {
        this.set_link(Link::Connected);
        this.schedule_reports(&handle);
    }
}
