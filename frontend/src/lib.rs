//! heartsync's page: a heart beating on a canvas, in step with everyone else
//! in the same room.
//!
//! The page is a thin shell around the client core it shares with the
//! terminal client, [`shared::client`]: the session decides what to send and
//! when, steps the heart and keeps the love ledger; the page owns the
//! socket, the timers and the drawing.
//!
//! # Layout
//! Pure modules (no browser; tested natively with `cargo test -p frontend`):
//! - [`heart`]: the heart's outline and its lub-dub beat, on a canvas.
//! - [`particles`]: the small hearts that burst out when love is sent.
//! - [`schedule`]: which beats to hand to the audio clock, on the server's
//!   clock, and where they fall on it.
//! - [`stored`]: what the page keeps in localStorage, under which keys.
//!
//! Browser modules (wasm32 only):
//! - `page`: what the parts share: the session, the signals the components
//!   show, the commands to the connection loop.
//! - `connection`: the gloo-net socket loop: feeds the session, sends what
//!   it says, reconnects when it says.
//! - `canvas`: draws the heart each animation frame (gloo-render).
//! - `audio`: the lub-dub in WebAudio and the haptic beat, on the schedule.
//! - `feel`: the sound and haptic toggles.
//! - `browser`: the clock, random numbers, visibility, storage.
//! - this file's `App` and its small components.

pub mod heart;
pub mod particles;
pub mod schedule;
pub mod stored;

#[cfg(target_arch = "wasm32")]
mod audio;
#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
mod canvas;
#[cfg(target_arch = "wasm32")]
mod connection;
#[cfg(target_arch = "wasm32")]
mod feel;
#[cfg(target_arch = "wasm32")]
mod page;

#[cfg(target_arch = "wasm32")]
pub use ui::App;

/// The components. They only show state and forward taps: the heart is
/// drawn by `canvas`, the socket is run by `connection`, and every loop and
/// listener they start ends in `on_cleanup`.
#[cfg(target_arch = "wasm32")]
mod ui {
    use crate::browser;
    use crate::heart::{self, Layout};
    use crate::page::{Command, LoveKeys, Page, Stats};
    use crate::stored::{CLIENT_ID_KEY, love_acked_key, love_taps_key, parse_count};
    use crate::{canvas, connection};
    use futures::channel::mpsc;
    use futures::future::abortable;
    use gloo_events::EventListener;
    use leptos::prelude::*;
    use leptos::task::spawn_local;
    use send_wrapper::SendWrapper;
    use shared::client::{Heart, Love, RESTING_BPM, Session, address};
    use shared::{ClientId, RoomName};
    use wasm_bindgen::JsCast;

    /// The page: the room from the URL, or a note that the name is invalid.
    #[component]
    pub fn App() -> impl IntoView {
        let path = window().location().pathname().unwrap_or_default();
        match address::room_from_path(&path) {
            Ok(room) => view! { <Room room /> }.into_any(),
            Err(problem) => view! { <BadRoom problem /> }.into_any(),
        }
    }

    #[component]
    fn BadRoom(problem: String) -> impl IntoView {
        view! {
            <main class="app">
                <p class="notice">{problem}</p>
                <p class="notice"><a href="/">"Open the main room"</a></p>
            </main>
        }
    }

    /// This browser's client id: the stored one, or a new one stored now.
    fn client_id() -> ClientId {
        if let Some(id) = address::stored_client_id(browser::load(CLIENT_ID_KEY).as_deref()) {
            return id;
        }
        let id = address::new_client_id(&mut browser::random);
        browser::save(CLIENT_ID_KEY, id.as_str());
        id
    }

    /// One room: connects, draws, shows the numbers, takes love.
    #[component]
    fn Room(room: RoomName) -> impl IntoView {
        let keys = LoveKeys { taps: love_taps_key(&room), acked: love_acked_key(&room) };
        let love = Love::new(
            parse_count(browser::load(&keys.taps).as_deref()),
            parse_count(browser::load(&keys.acked).as_deref()),
        );
        let heart = Heart::new(browser::random(), RESTING_BPM, browser::now());
        let (commands, commands_rx) = mpsc::unbounded();
        let page = Page::new(Session::new(heart, love), keys, commands);
        provide_context(page.clone());

        let location = window().location();
        let server = address::page_server(
            &location.protocol().unwrap_or_default(),
            &location.host().unwrap_or_default(),
        );
        let url = address::socket_url(&server, &room, &client_id());
        spawn_local(connection::run(url, page.clone(), commands_rx));

        let listeners = SendWrapper::new(listen(&page));
        let stats = page.stats;
        on_cleanup(move || {
            drop(listeners.take());
            // Ends the connection loop, which closes its socket.
            page.stop();
        });

        view! {
            <main class="app">
                <header class="top">
                    <span class="brand">"heartsync"</span>
                    <span class="room">{format!("#{room}")}</span>
                    <Status stats />
                </header>
                <HeartCanvas />
                <footer class="bottom">
                    <Numbers stats />
                    <LoveButton />
                    <crate::feel::FeelToggles />
                </footer>
            </main>
        }
    }

    /// The page's listeners: `l` or space sends love, and the connection
    /// hears when the network comes back and when the tab is looked at again.
    fn listen(page: &Page) -> Vec<EventListener> {
        let window = window();
        let keyboard = {
            let page = page.clone();
            EventListener::new(&window, "keydown", move |event| {
                if let Some(event) = event.dyn_ref::<web_sys::KeyboardEvent>() {
                    on_key(event, &page);
                }
            })
        };
        let online = {
            let page = page.clone();
            EventListener::new(&window, "online", move |_| page.tell(Command::Online))
        };
        let visibility = {
            let page = page.clone();
            EventListener::new(&document(), "visibilitychange", move |_| {
                page.tell(Command::Visibility);
            })
        };
        vec![keyboard, online, visibility]
    }

    /// `l` or space sends love, unless a control has the focus (a focused
    /// button already turns space into its own click).
    fn on_key(event: &web_sys::KeyboardEvent, page: &Page) {
        if event.repeat() || event.ctrl_key() || event.meta_key() || event.alt_key() {
            return;
        }
        let key = event.key();
        if !matches!(key.as_str(), "l" | "L" | " ") {
            return;
        }
        let on_control =
            event.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()).is_some_and(|e| {
                matches!(e.tag_name().as_str(), "BUTTON" | "INPUT" | "TEXTAREA" | "SELECT" | "A")
            });
        if on_control {
            return;
        }
        // Space would otherwise scroll the page.
        event.prevent_default();
        page.tap();
    }

    #[component]
    fn Status(stats: Stats) -> impl IntoView {
        view! {
            <span
                class="status"
                class:online=move || stats.connected.get()
                data-testid="status"
                role="status"
            >
                {move || stats.status.get()}
            </span>
        }
    }

    /// The heart's canvas, drawn every animation frame while it is mounted;
    /// a tap on the heart sends love.
    #[component]
    fn HeartCanvas() -> impl IntoView {
        let canvas = NodeRef::<leptos::html::Canvas>::new();
        let page = use_context::<Page>();
        if let Some(page) = page.clone() {
            let (painting, stop) = abortable(async move {
                // The canvas is in the document once the view is mounted.
                let Some(element) = canvas.get_untracked() else {
                    web_sys::console::error_1(&"heartsync: the canvas is missing".into());
                    return;
                };
                canvas::paint(element, page).await;
            });
            spawn_local(async move {
                let _ = painting.await;
            });
            on_cleanup(move || stop.abort());
        }
        let on_pointer = move |event: web_sys::PointerEvent| {
            let Some(element) = canvas.get_untracked() else {
                return;
            };
            let rect = element.get_bounding_client_rect();
            let layout = Layout::fit(rect.width(), rect.height());
            let (x, y) = layout.to_heart(
                f64::from(event.client_x()) - rect.left(),
                f64::from(event.client_y()) - rect.top(),
            );
            if heart::hit(x, y)
                && let Some(page) = &page
            {
                page.tap();
            }
        };
        view! {
            <div class="stage">
                <canvas
                    id="heart"
                    node_ref=canvas
                    on:pointerdown=on_pointer
                    aria-label="A beating heart; tap it to send love"
                ></canvas>
            </div>
        }
    }

    #[component]
    fn Numbers(stats: Stats) -> impl IntoView {
        let hearts =
            move || stats.hearts.get().map_or_else(|| String::from("–"), |h| h.to_string());
        view! {
            <dl class="numbers">
                <div class="number">
                    <dt>"hearts"</dt>
                    <dd data-testid="hearts">{hearts}</dd>
                </div>
                <div class="number">
                    <dt>"in sync"</dt>
                    <dd>
                        <span data-testid="coherence">{move || format!("{}%", stats.coherence_percent.get())}</span>
                        <span class="bar">
                            <span
                                class="fill"
                                style:width=move || format!("{}%", stats.coherence_percent.get())
                            ></span>
                        </span>
                    </dd>
                </div>
                <div class="number">
                    <dt>"love"</dt>
                    <dd data-testid="love">{move || stats.love.get()}</dd>
                </div>
            </dl>
        }
    }

    #[component]
    fn LoveButton() -> impl IntoView {
        let page = use_context::<Page>();
        view! {
            <button
                class="love"
                data-testid="love-button"
                title="send love (l or space)"
                on:click=move |_| {
                    if let Some(page) = &page {
                        page.tap();
                    }
                }
            >
                "♥ send love"
            </button>
        }
    }
}
