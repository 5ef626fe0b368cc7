//! The terminal: raw mode and the alternate screen (restored by a guard,
//! also on panic), keys, and the frame loop that asks the session where the
//! heart is (the session steps it) and draws it with the room's status
//! underneath. The pieces that decide what to draw
//! ([`compose`], [`action`]) are pure; the rest is a thin shell.

use crate::clock::LocalClock;
use crate::config::{self, Args};
use crate::connection::{self, Shared};
use crate::paint::{self, Palette};
use crate::{beat, shape, status};
use anyhow::Context;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use futures_util::StreamExt;
use shared::client::address;
use shared::client::{Heart, Love, RESTING_BPM, Session};
use std::io::Write as _;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval};

/// Rows under the heart: a blank one, the room's numbers, the connection.
const STATUS_ROWS: usize = 3;

/// The share of the space the heart may fill at the peak of its beat.
const MARGIN: f64 = 0.94;

/// How many steps the beat's swell is drawn in.
const SWELL_STEPS: f64 = 64.0;

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send love.
    Love,
    /// Leave.
    Quit,
}

/// What `key` asks for, if anything: space sends love; `q`, Esc and Ctrl-C
/// quit (raw mode turns Ctrl-C into a key rather than a signal).
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    match key.code {
        KeyCode::Char(' ') => Some(Action::Love),
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Some(Action::Quit),
        KeyCode::Char('q' | 'Q') | KeyCode::Esc => Some(Action::Quit),
        _ => None,
    }
}

/// `text` centred in `cols` columns (cut to fit), as exactly `cols`
/// characters.
fn centred(text: &str, cols: usize) -> String {
    let text: String = text.chars().take(cols).collect();
    let pad = (cols - text.chars().count()) / 2;
    format!("{:pad$}{text:<width$}", "", width = cols - pad)
}

/// One whole screen of `cols × rows`, line by line from the top: the heart
/// at `phase`, sized to fit the room left by the status lines, with `status`
/// centred under it. Every line is exactly `cols` wide and starts with its
/// own cursor move, so nothing scrolls and every cell is overwritten: no
/// flicker, no clearing between frames, and a line that did not change since
/// the last frame need not be sent again.
pub fn compose(
    cols: usize,
    rows: usize,
    phase: f64,
    status: &[String],
    palette: Palette,
) -> Vec<String> {
    let heart_rows = rows.saturating_sub(STATUS_ROWS);
    // The swell in steps finer than a pixel of growth, so that while the
    // heart rests (the envelope all but zero) frame after frame is the same.
    let swell = (beat::envelope(phase) * SWELL_STEPS).round() / SWELL_STEPS;
    let scale = 1.0 + beat::GAIN * swell;
    let unit = shape::fit(cols, heart_rows) * MARGIN / beat::PEAK_SCALE * scale;
    let frame = shape::render(cols, heart_rows, unit);
    let glow = swell as f32;
    let place = |row: usize, text: &str| format!("\x1b[{};1H{text}", row + 1);
    let heart = (0..heart_rows).map(|row| place(row, &paint::row(&frame, row, glow, palette)));
    let dim = if palette == Palette::Plain { "" } else { "\x1b[2m" };
    let under = std::iter::once(String::new()).chain(status.iter().cloned());
    let under = under.enumerate().take(rows - heart_rows).map(|(i, text)| {
        let style = if i == 2 { dim } else { "" };
        place(heart_rows + i, &format!("{style}{}\x1b[0m", centred(&text, cols)))
    });
    heart.chain(under).collect()
}

/// Restores the terminal: cursor shown, main screen back, raw mode off.
/// Safe to call more than once.
fn restore() {
    let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
}

/// Raw mode and the alternate screen while it lives; dropping it (also when
/// unwinding from a panic) restores the terminal.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        // A panic message printed on the alternate screen would vanish with
        // it: restore the terminal before the default hook prints.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            default_hook(info);
        }));
        terminal::enable_raw_mode()
            .context("heartsync-term needs a terminal (try --static to print a heart)")?;
        // From here on, leaving (even with an error) restores the terminal.
        let guard = TerminalGuard;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide,
            terminal::Clear(terminal::ClearType::All)
        )?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Joins the room and draws the heart until the person quits.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let clock = LocalClock::start();
    let client_id = args.client_id.clone().unwrap_or_else(config::random_client_id);
    let url = address::socket_url(&args.url, &args.room, &client_id);
    // Love is not remembered between sessions: the server's count for this
    // id is taken over with its first acknowledgement.
    let heart = Heart::new(rand::random::<f64>(), RESTING_BPM, clock.now_ms());
    let shared = Shared::new(Session::new(heart, Love::new(0, 0)));
    let (quit_tx, quit_rx) = watch::channel(false);
    // The terminal first: without one there is no point joining the room.
    let guard = TerminalGuard::enter()?;
    let connection = tokio::spawn(connection::run(url, clock, shared.clone(), quit_rx));
    let result = Screen { args: &args, clock, shared }.run().await;
    drop(guard);

    // Say goodbye to the server (a close frame), but do not hang on it.
    let _ = quit_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
    result
}

/// The frame loop's state.
struct Screen<'a> {
    /// The flags, for the room name and frame rate.
    args: &'a Args,
    /// The clock the session's times are read on.
    clock: LocalClock,
    /// The session the connection feeds: each frame steps its heart.
    shared: Shared,
}

impl Screen<'_> {
    async fn run(self) -> anyhow::Result<()> {
        let palette = Palette::detect();
        let mut keys = EventStream::new();
        let mut frames = interval(Duration::from_secs_f64(1.0 / f64::from(self.args.fps.max(1))));
        frames.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut clear = false;
        // The screen as last written, line by line.
        let mut shown: Vec<String> = Vec::new();
        let mut stdout = std::io::stdout();
        loop {
            tokio::select! {
                _ = frames.tick() => {
                    let now = self.clock.now_ms();
                    let (phase, view, notice) = self.shared.with(|state| {
                        (state.session.step(now), state.session.view(), state.notice.clone())
                    });
                    let (cols, rows) = terminal::size()?;
                    let room = self.args.room.as_str();
                    let status = status::lines(room, &view, notice.as_ref(), now, cols.into());
                    let screen = compose(cols.into(), rows.into(), phase, &status, palette);
                    // Only the lines that changed are sent: between beats the
                    // heart rests and often nothing at all has.
                    let mut bytes = Vec::new();
                    let resized = std::mem::take(&mut clear) || screen.len() != shown.len();
                    for (i, line) in screen.iter().enumerate() {
                        if resized || shown.get(i) != Some(line) {
                            bytes.extend_from_slice(line.as_bytes());
                        }
                    }
                    if bytes.is_empty() {
                        continue;
                    }
                    let mut out = Vec::with_capacity(bytes.len() + 64);
                    crossterm::queue!(out, terminal::BeginSynchronizedUpdate)?;
                    if resized {
                        crossterm::queue!(out, terminal::Clear(terminal::ClearType::All))?;
                    }
                    out.extend_from_slice(&bytes);
                    crossterm::queue!(out, terminal::EndSynchronizedUpdate)?;
                    stdout.write_all(&out)?;
                    stdout.flush()?;
                    shown = screen;
                }
                event = keys.next() => match event {
                    Some(Ok(Event::Key(key))) => match action(key) {
                        Some(Action::Quit) => return Ok(()),
                        Some(Action::Love) => self.shared.tap(),
                        None => {}
                    },
                    Some(Ok(Event::Resize(..))) => clear = true,
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error).context("reading the keyboard"),
                    None => return Ok(()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn keys_do_what_the_status_line_says() {
        let none = KeyModifiers::NONE;
        assert_eq!(action(key(KeyCode::Char(' '), none)), Some(Action::Love));
        assert_eq!(action(key(KeyCode::Char('q'), none)), Some(Action::Quit));
        assert_eq!(action(key(KeyCode::Esc, none)), Some(Action::Quit));
        assert_eq!(action(key(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        assert_eq!(action(key(KeyCode::Char('c'), none)), None);
        let mut release = key(KeyCode::Char(' '), none);
        release.kind = KeyEventKind::Release;
        assert_eq!(action(release), None);
    }

    #[test]
    fn centring_pads_and_cuts_to_the_width() {
        assert_eq!(centred("ab", 6), "  ab  ");
        assert_eq!(centred("abc", 6), " abc  ");
        assert_eq!(centred("♥ love", 4), "♥ lo");
        assert_eq!(centred("x", 0), "");
    }

    #[test]
    fn a_screen_places_every_line() {
        let status = [String::from("room main"), String::from("connected")];
        let lines = compose(60, 24, 0.5, &status, Palette::Plain);
        assert_eq!(lines.len(), 24);
        for (row, line) in lines.iter().enumerate() {
            assert!(line.starts_with(&format!("\x1b[{};1H", row + 1)), "row {row}");
        }
        let screen = lines.concat();
        assert!(!screen.contains('\n'), "cursor moves, never newlines");
        assert!(screen.contains("room main") && screen.contains("connected"));
        assert!(screen.contains('█'), "a heart is drawn");
    }

    #[test]
    fn a_tiny_terminal_does_not_panic() {
        for (cols, rows) in [(0, 0), (1, 1), (5, 2), (3, 3), (200, 4)] {
            let _ = compose(cols, rows, 0.06, &[String::from("status")], Palette::TrueColor);
        }
    }
}
