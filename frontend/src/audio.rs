//! Sound and touch: a soft lub-dub synthesised with WebAudio (no audio
//! files), and a buzz where the phone can vibrate, both opt-in, on the
//! beats [`schedule`] hands over.
//!
//! Every [`TICK_MS`] the [`Player`] asks the session where the heart is on
//! the server's clock, takes the beats of the next [`AHEAD_MS`], maps each
//! to local time through the clock offset (server − offset) and from there
//! onto the `AudioContext`'s clock through a fresh reading of both clocks
//! (`getOutputTimestamp()`, which pairs the audio clock with the instant
//! its sample leaves the speaker), and schedules the oscillators there. So
//! every phone in a room thumps at the same server instant, whatever its
//! timers and frames do; a clock resync or a tab coming back into view
//! changes the mapping of the next beats, and since the mapping is read
//! afresh each time, the two clocks never drift apart. While the tab is
//! hidden the context is suspended and nothing is scheduled.
//!
//! The haptic beat cannot be put on a clock: it is a timer set (at most
//! [`AHEAD_MS`] before) for the lub's local instant.
//!
//! `window.__heartsync_sound` publishes what was scheduled, for tests.

use crate::browser;
use crate::page::Page;
use crate::schedule::{self, AHEAD_MS, Schedule, Thump};
use gloo_timers::callback::Timeout;
use std::cell::RefCell;
use std::rc::Weak;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{AudioContext, AudioContextState, GainNode, OscillatorType};

/// How often the scheduler runs (ms): well within [`AHEAD_MS`], so a late
/// timer still schedules every beat in time.
pub const TICK_MS: u32 = 50;

/// How long a thump takes to swell to its peak (s); it starts this much
/// before the beat's lub or dub, so its peak is on it.
const ATTACK_S: f64 = 0.012;

/// How long a thump takes to die away after its peak (s).
const DECAY_S: f64 = 0.16;

/// How long each buzz of the haptic beat lasts (ms): lub, then dub.
const BUZZ_MS: (u32, u32) = (40, 25);

#[wasm_bindgen]
extern "C" {
    /// An `AudioContext`, seen through the method web-sys has no binding
    /// for.
    type OutputClock;

    #[wasm_bindgen(method, catch, js_name = getOutputTimestamp)]
    fn output_timestamp(this: &OutputClock) -> Result<OutputTimestamp, JsValue>;

    /// What `AudioContext.getOutputTimestamp()` answers.
    type OutputTimestamp;

    /// The audio clock (s) of the sample leaving the speaker now.
    #[wasm_bindgen(method, getter, js_name = contextTime)]
    fn context_time(this: &OutputTimestamp) -> Option<f64>;

    /// When (the page's `performance.now()`, ms) it leaves the speaker.
    #[wasm_bindgen(method, getter, js_name = performanceTime)]
    fn performance_time(this: &OutputTimestamp) -> Option<f64>;
}

/// Whether this browser can vibrate (Android's do; iOS and desktops not).
pub fn can_vibrate() -> bool {
    web_sys::window()
        .is_some_and(|w| js_sys::Reflect::has(&w.navigator(), &"vibrate".into()).unwrap_or(false))
}

/// The synthesiser: an audio context and the gain everything plays through.
struct Voice {
    context: AudioContext,
    out: GainNode,
}

impl Voice {
    /// Opens an audio context; call it in a click handler, since browsers
    /// let a page start sound only on a gesture.
    fn open() -> Result<Self, JsValue> {
        let context = AudioContext::new()?;
        let out = context.create_gain()?;
        out.gain().set_value(0.9);
        out.connect_with_audio_node(&context.destination())?;
        let _ = context.resume()?;
        Ok(Self { context, out })
    }

    /// One reading of both clocks: the audio clock (s) and the local time
    /// (ms) at which that sample is heard. `getOutputTimestamp()` accounts
    /// for the output latency; where it is missing or not yet running,
    /// `currentTime` and now stand in.
    fn stamp(&self) -> (f64, f64) {
        let origin = web_sys::window().and_then(|w| w.performance()).map(|p| p.time_origin());
        if let (Ok(stamp), Some(origin)) =
            (self.context.unchecked_ref::<OutputClock>().output_timestamp(), origin)
            && let (Some(audio), Some(heard)) = (stamp.context_time(), stamp.performance_time())
            && audio > 0.0
            && heard > 0.0
        {
            return (audio, origin + heard);
        }
        (self.context.current_time(), browser::now())
    }

    /// Plays the lub and the dub of `thump`, given where a server time falls
    /// on the audio clock.
    fn play(&self, thump: Thump, audio_at: impl Fn(f64) -> f64) {
        for (at, strength, pitch) in [(thump.lub(), 0.9, 70.0), (thump.dub(), 0.55, 82.0f32)] {
            if let Err(e) = self.thump(audio_at(at), strength, pitch) {
                web_sys::console::warn_2(&"heartsync: could not play a beat:".into(), &e);
            }
        }
    }

    /// One soft thump peaking at audio time `at` (s): a triangle wave
    /// falling in pitch from `pitch` Hz under a quick swell and a slow
    /// fade. A thump already due is let go rather than played late.
    fn thump(&self, at: f64, strength: f32, pitch: f32) -> Result<(), JsValue> {
        let start = at - ATTACK_S;
        if !start.is_finite() || start < self.context.current_time() {
            return Ok(());
        }
        let oscillator = self.context.create_oscillator()?;
        oscillator.set_type(OscillatorType::Triangle);
        let frequency = oscillator.frequency();
        frequency.set_value_at_time(pitch, start)?;
        frequency.exponential_ramp_to_value_at_time(pitch * 0.6, at + DECAY_S)?;
        let envelope = self.context.create_gain()?;
        let gain = envelope.gain();
        gain.set_value_at_time(0.0, start)?;
        gain.linear_ramp_to_value_at_time(strength, at)?;
        gain.exponential_ramp_to_value_at_time(1e-4, at + DECAY_S)?;
        oscillator.connect_with_audio_node(&envelope)?;
        envelope.connect_with_audio_node(&self.out)?;
        oscillator.start_with_when(start)?;
        // The nodes are let go once stopped.
        oscillator.stop_with_when(at + DECAY_S + 0.02)?;
        Ok(())
    }
}

impl Drop for Voice {
    fn drop(&mut self) {
        let _ = self.context.close();
    }
}

/// Sound and touch for one page: what is on, and the beats handed over.
#[derive(Default)]
pub struct Player {
    /// The synthesiser, while sound is on.
    voice: Option<Voice>,
    /// Whether the haptic beat is on.
    haptic: bool,
    /// The beats handed over so far.
    schedule: Schedule,
    /// The buzzes waiting for their instant; dropping one cancels it.
    buzzes: Vec<Timeout>,
}

impl Player {
    /// Turns sound on or off; call it in the toggle's click handler (the
    /// gesture browsers ask for). Returns whether sound is now on.
    pub fn set_sound(&mut self, on: bool) -> bool {
        if !on {
            self.voice = None;
        } else if let Some(voice) = &self.voice {
            let _ = voice.context.resume();
        } else {
            match Voice::open() {
                Ok(voice) => self.voice = Some(voice),
                Err(e) => web_sys::console::warn_2(&"heartsync: no sound:".into(), &e),
            }
        }
        self.publish(None);
        self.voice.is_some()
    }

    /// Turns the haptic beat on or off.
    pub fn set_haptic(&mut self, on: bool) {
        self.haptic = on;
        if !on {
            self.buzzes.clear();
        }
        self.publish(None);
    }

    /// Whether anything is on.
    pub fn active(&self) -> bool {
        self.voice.is_some() || self.haptic
    }

    /// One scheduling round at local time `now`; `None` once the room is
    /// gone.
    fn tick(&mut self, page: &Page) -> Option<()> {
        let now = browser::now();
        if browser::hidden() {
            if let Some(voice) = &self.voice
                && voice.context.state() == AudioContextState::Running
            {
                let _ = voice.context.suspend();
            }
            self.buzzes.clear();
            return Some(());
        }
        let running = match &self.voice {
            Some(voice) if voice.context.state() == AudioContextState::Running => true,
            Some(voice) => {
                let _ = voice.context.resume();
                false
            }
            None => false,
        };
        let (phase, bpm, server_now, offset) = page.with(|s| {
            let phase = s.step(now);
            (phase, s.heart().bpm(), s.server_time(now), s.clock().offset_at(now))
        })?;
        // Before the first sync the local clock stands in for the server's.
        let offset = offset.unwrap_or(0.0);
        let local = |server: f64| server - offset;
        let due = self.schedule.due(phase, bpm, server_now, AHEAD_MS);
        if running && let Some(voice) = &self.voice {
            let stamp = voice.stamp();
            for thump in &due {
                voice.play(*thump, |at| schedule::audio_time(local(at), stamp));
            }
        }
        if self.haptic {
            for thump in &due {
                // Beats are at least 300 ms apart and set at most AHEAD_MS
                // ahead, so all but the newest few have fired.
                if self.buzzes.len() >= 4 {
                    drop(self.buzzes.remove(0));
                }
                self.buzzes.push(buzz(*thump, local(thump.lub()) - now));
            }
        }
        self.publish(Some(offset));
        Some(())
    }

    /// Sets `window.__heartsync_sound`: what is on, the audio context's
    /// state, the clock offset used, and the beats scheduled lately (server
    /// ms of their start).
    fn publish(&self, offset: Option<f64>) {
        let Some(window) = web_sys::window() else {
            return;
        };
        let beats: js_sys::Array = self.schedule.recent().map(JsValue::from).collect();
        let state = self.voice.as_ref().map_or("off", |voice| match voice.context.state() {
            AudioContextState::Running => "running",
            AudioContextState::Suspended => "suspended",
            _ => "closed",
        });
        let hook = js_sys::Object::new();
        let fields: [(&str, JsValue); 5] = [
            ("sound", self.voice.is_some().into()),
            ("haptic", self.haptic.into()),
            ("state", state.into()),
            ("offset", offset.map_or(JsValue::NULL, JsValue::from)),
            ("beats", beats.into()),
        ];
        for (key, value) in fields {
            let _ = js_sys::Reflect::set(&hook, &key.into(), &value);
        }
        let _ = js_sys::Reflect::set(&window, &"__heartsync_sound".into(), &hook);
    }
}

/// A buzz of the lub and the dub of `thump`, `delay` ms from now.
fn buzz(thump: Thump, delay: f64) -> Timeout {
    // Whole milliseconds; the delay is within the look-ahead, so the casts
    // cannot overflow.
    let gap = (thump.dub() - thump.lub() - f64::from(BUZZ_MS.0)).max(0.0).round() as u32;
    let pattern = js_sys::Array::of3(&BUZZ_MS.0.into(), &gap.into(), &BUZZ_MS.1.into());
    Timeout::new(delay.clamp(0.0, AHEAD_MS).round() as u32, move || {
        if let Some(window) = web_sys::window() {
            window.navigator().vibrate_with_pattern(&pattern);
        }
    })
}

/// Schedules beats every [`TICK_MS`] while `player` lives (its owner, the
/// toggles' component, drops it when turned off or cleaned up) and the
/// room is there.
pub async fn run(player: Weak<RefCell<Player>>, page: Page) {
    loop {
        let Some(player) = player.upgrade() else {
            return;
        };
        if !player.borrow().active() || player.borrow_mut().tick(&page).is_none() {
            return;
        }
        drop(player);
        gloo_timers::future::TimeoutFuture::new(TICK_MS).await;
    }
}
