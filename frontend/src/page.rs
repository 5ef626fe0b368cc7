//! What the page's parts share: the session (the client core, stored in the
//! room component's reactive owner and released with it), the signals the
//! components show, the localStorage keys of the room's love, and the way
//! to tell the connection loop that something happened.

use crate::browser;
use crate::i18n::Lang;
use futures::channel::mpsc::UnboundedSender;
use leptos::prelude::*;
use shared::client::{Link, RoomView, Session};

/// What the page tells its connection loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Something may be due now (a tap of love).
    Poke,
    /// The tab's visibility changed.
    Visibility,
    /// The browser says the network is back.
    Online,
}

/// What the components show, as signals; [`Stats::show`] sets one only when
/// its value changes, so an update that changes nothing touches no DOM.
#[derive(Clone, Copy)]
pub struct Stats {
    /// Open connections in the room, `None` while unknown.
    pub hearts: RwSignal<Option<u32>>,
    /// How in step the room is, in whole percent.
    pub coherence_percent: RwSignal<u32>,
    /// The love total to show.
    pub love: RwSignal<u64>,
    /// The status line, in the page's language.
    pub status: RwSignal<String>,
    /// Whether the server has welcomed the page.
    pub connected: RwSignal<bool>,
    /// Where the connection stands: what a screen reader is told when it
    /// changes (the status line's countdown changes every second).
    pub link: RwSignal<Link>,
    /// The language the page speaks; the status line follows it.
    pub lang: RwSignal<Lang>,
}

impl Stats {
    fn new(lang: RwSignal<Lang>) -> Self {
        Self {
            hearts: RwSignal::new(None),
            coherence_percent: RwSignal::new(0),
            love: RwSignal::new(0),
            status: RwSignal::new(lang.get_untracked().text().connecting.to_owned()),
            connected: RwSignal::new(false),
            link: RwSignal::new(Link::Connecting),
            lang,
        }
    }

    fn show(&self, view: &RoomView, now: f64) {
        change(self.hearts, view.room.map(|room| room.hearts));
        // The ratio is in [0, 1], so the cast cannot overflow.
        let coherence = view.room.map_or(0.0, |room| room.coherence);
        change(self.coherence_percent, (coherence * 100.0).round() as u32);
        change(self.love, view.love_shown);
        change(self.status, self.lang.get_untracked().text().status(&view.link, now));
        change(self.connected, view.link.is_connected());
        change(self.link, view.link.clone());
    }
}

fn change<T: PartialEq + Send + Sync + 'static>(signal: RwSignal<T>, value: T) {
    if signal.with_untracked(|current| *current != value) {
        signal.set(value);
    }
}

/// The localStorage keys the room's love counts persist under.
#[derive(Clone)]
pub struct LoveKeys {
    /// Every tap made in this room.
    pub taps: String,
    /// The highest count the server acknowledged.
    pub acked: String,
    /// The server's name for the ledger the counts are in.
    pub epoch: String,
}

/// What one animation frame draws and publishes.
pub struct Beat {
    /// The heart's phase now.
    pub phase: f64,
    /// The server's clock now (the best guess before the first sync).
    pub server_now: f64,
    /// The heart's rate.
    pub bpm: f64,
    /// What the page adds to its clock to read the server's (ms); `None`
    /// before the first clock sync.
    pub clock_offset: Option<f64>,
    /// Open connections in the room (0 while unknown).
    pub hearts: u32,
    /// How in step the room is.
    pub coherence: f64,
    /// Whether the server has welcomed the page.
    pub connected: bool,
    /// The room's love total as the server last told it (0 before).
    pub love_total: u64,
    /// Every tap this browser made in the room.
    pub love_sent: u64,
    /// The highest count the server acknowledged.
    pub love_acked: u64,
    /// Taps to burst out of the heart: `(mine, others)`.
    pub bursts: (u64, u64),
}

/// A handle on the page's shared state; clones share it.
#[derive(Clone)]
pub struct Page {
    /// The client core. Only ever used for one call at a time, never across
    /// an `.await`; `None` from [`Page::with`] means the room is gone.
    session: StoredValue<Session, LocalStorage>,
    /// What the components show.
    pub stats: Stats,
    /// Where the love counts persist.
    keys: LoveKeys,
    /// Wakes the connection loop.
    commands: UnboundedSender<Command>,
}

impl Page {
    /// Shares `session`, owned by the current reactive owner, showing
    /// its state in `lang`.
    pub fn new(
        session: Session,
        keys: LoveKeys,
        commands: UnboundedSender<Command>,
        lang: RwSignal<Lang>,
    ) -> Self {
        Self { session: StoredValue::new_local(session), stats: Stats::new(lang), keys, commands }
    }

    /// Runs `f` on the session, or returns `None` once the room component
    /// that owns it has been cleaned up.
    pub fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        self.session.try_update_value(f)
    }

    /// The heart at local time `now`, as the session steps it, and what else
    /// a frame shows; `None` once the room is gone.
    pub fn frame(&self, now: f64) -> Option<Beat> {
        self.with(|session| {
            let phase = session.step(now);
            let view = session.view();
            Beat {
                phase,
                server_now: session.server_time(now),
                bpm: session.heart().bpm(),
                clock_offset: session.clock().offset_at(now),
                hearts: view.room.map_or(0, |room| room.hearts),
                coherence: view.room.map_or(0.0, |room| room.coherence),
                connected: view.link.is_connected(),
                love_total: view.love_total.unwrap_or(0),
                love_sent: session.love().taps(),
                love_acked: session.love().acked(),
                bursts: session.take_bursts(),
            }
        })
    }

    /// Shows what changed in the session since the last call.
    pub fn show(&self, now: f64) {
        if let Some(view) = self.session.try_with_value(Session::view) {
            self.stats.show(&view, now);
        }
    }

    /// Persists the acknowledged love count and its ledger (and the taps,
    /// which a new ledger starts again).
    pub fn save_acked(&self) {
        let love = self.with(|session| {
            let love = session.love();
            (love.taps(), love.acked(), love.epoch())
        });
        if let Some((taps, acked, epoch)) = love {
            browser::save(&self.keys.taps, &taps.to_string());
            browser::save(&self.keys.acked, &acked.to_string());
            browser::save(&self.keys.epoch, &epoch.to_string());
        }
    }

    /// Tells the connection loop about `command`; a loop that has ended
    /// needs telling nothing.
    pub fn tell(&self, command: Command) {
        let _ = self.commands.unbounded_send(command);
    }

    /// Ends the connection loop (which closes its socket): the room is gone.
    pub fn stop(&self) {
        self.commands.close_channel();
    }

    /// One tap of love: counted, persisted and shown at once, and the
    /// connection woken to send it.
    pub fn tap(&self) {
        let Some(taps) = self.with(Session::tap) else {
            return;
        };
        browser::save(&self.keys.taps, &taps.to_string());
        self.show(browser::now());
        self.tell(Command::Poke);
    }
}
