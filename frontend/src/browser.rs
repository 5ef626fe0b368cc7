//! Thin wrappers over the browser APIs the page uses: the monotonic clock,
//! random numbers, localStorage, and timers and event listeners that release
//! themselves when dropped, so whoever owns one cleans up by dropping it.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// The page's monotonic clock in milliseconds: `performance.timeOrigin +
/// performance.now()`. Unlike `Date.now()` it never jumps when the system
/// clock is set, and it is close to Unix time, so before the first clock
/// sync it is a fair guess of the server's clock too.
pub fn now() -> f64 {
    match web_sys::window().and_then(|w| w.performance()) {
        Some(p) => p.time_origin() + p.now(),
        None => js_sys::Date::now(),
    }
}

/// A random number in `[0, 1)`.
pub fn random() -> f64 {
    js_sys::Math::random()
}

/// Whether the tab is hidden (in the background or minimised).
pub fn hidden() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .is_some_and(|d| d.visibility_state() == web_sys::VisibilityState::Hidden)
}

fn storage() -> Option<web_sys::Storage> {
    // localStorage can be missing or throw (private modes, disabled storage);
    // the page then just forgets between reloads.
    web_sys::window()?.local_storage().ok().flatten()
}

/// The value stored under `key`, if storage works and has one.
pub fn load(key: &str) -> Option<String> {
    storage()?.get_item(key).ok().flatten()
}

/// Stores `value` under `key`, if storage works (a full or disabled storage
/// is not worth bothering the person about).
pub fn save(key: &str, value: &str) {
    if let Some(storage) = storage()
        && let Err(e) = storage.set_item(key, value)
    {
        web_sys::console::warn_2(&"heartsync: could not save to localStorage:".into(), &e);
    }
}

/// A `setTimeout` or `setInterval` that is cleared when dropped.
pub struct Timer {
    id: i32,
    repeat: bool,
    // Kept alive for as long as the browser may call it. Dropping it from
    // inside its own call is safe: wasm-bindgen defers the release.
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    /// Calls `f` once after `ms` milliseconds.
    pub fn timeout(ms: f64, f: impl FnMut() + 'static) -> Option<Self> {
        Self::start(ms, false, f)
    }

    /// Calls `f` every `ms` milliseconds.
    pub fn interval(ms: f64, f: impl FnMut() + 'static) -> Option<Self> {
        Self::start(ms, true, f)
    }

    fn start(ms: f64, repeat: bool, f: impl FnMut() + 'static) -> Option<Self> {
        let window = web_sys::window()?;
        let callback = Closure::<dyn FnMut()>::new(f);
        let function = callback.as_ref().unchecked_ref();
        // Browsers take whole milliseconds; the cast saturates.
        let ms = ms.max(0.0).round() as i32;
        let id = if repeat {
            window.set_interval_with_callback_and_timeout_and_arguments_0(function, ms)
        } else {
            window.set_timeout_with_callback_and_timeout_and_arguments_0(function, ms)
        };
        id.ok().map(|id| Timer { id, repeat, _callback: callback })
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            if self.repeat {
                window.clear_interval_with_handle(self.id);
            } else {
                window.clear_timeout_with_handle(self.id);
            }
        }
    }
}

/// An event listener that is removed when dropped.
pub struct Listener {
    target: web_sys::EventTarget,
    event: &'static str,
    callback: Closure<dyn FnMut(web_sys::Event)>,
}

impl Listener {
    /// Calls `f` for every `event` on `target`.
    pub fn new(
        target: &web_sys::EventTarget,
        event: &'static str,
        f: impl FnMut(web_sys::Event) + 'static,
    ) -> Option<Self> {
        let callback = Closure::<dyn FnMut(web_sys::Event)>::new(f);
        target.add_event_listener_with_callback(event, callback.as_ref().unchecked_ref()).ok()?;
        Some(Listener { target: target.clone(), event, callback })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Removing a listener that is not there is harmless, so the result
        // says nothing worth acting on.
        let _ = self.target.remove_event_listener_with_callback(
            self.event,
            self.callback.as_ref().unchecked_ref(),
        );
    }
}
