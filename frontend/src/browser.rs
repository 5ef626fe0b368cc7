//! The few browser readings the page takes: the monotonic clock, random
//! numbers, whether the tab is visible, and localStorage. Timers, listeners
//! and animation frames are the gloo crates', which release themselves when
//! dropped.

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

/// A future that resolves at local time `at` (ms; at once if that is past).
pub fn sleep_until(at: f64) -> gloo_timers::future::TimeoutFuture {
    // Browsers take whole milliseconds; an hour stands in for "never" (the
    // session always has a deadline while connected), and the cast
    // saturates.
    let ms = (at - now()).clamp(0.0, 3_600_000.0).ceil() as u32;
    gloo_timers::future::TimeoutFuture::new(ms)
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

fn session_storage() -> Option<web_sys::Storage> {
    // Like localStorage, sessionStorage can be missing or throw; a private
    // room's token then lives only as long as the page.
    web_sys::window()?.session_storage().ok().flatten()
}

/// The value kept under `key` for this tab, if there is one.
pub fn session_load(key: &str) -> Option<String> {
    session_storage()?.get_item(key).ok().flatten()
}

/// Keeps `value` under `key` for this tab's life.
pub fn session_save(key: &str, value: &str) {
    if let Some(storage) = session_storage()
        && let Err(e) = storage.set_item(key, value)
    {
        web_sys::console::warn_2(&"heartsync: could not save to sessionStorage:".into(), &e);
    }
}

/// Drops the fragment from the address bar without reloading or adding a
/// history entry.
pub fn drop_fragment() {
    let Some(window) = web_sys::window() else { return };
    let location = window.location();
    let without = format!(
        "{}{}",
        location.pathname().unwrap_or_default(),
        location.search().unwrap_or_default()
    );
    if let Ok(history) = window.history() {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&without));
    }
}
