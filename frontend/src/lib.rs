//! heartsync's page: a heart beating on a canvas, in step with everyone else
//! in the same room.
//!
//! # Layout
//! Pure modules (no browser; tested natively with `cargo test -p frontend`):
//! - [`heart`]: the heart's outline and its lub-dub beat.
//! - [`particles`]: the small hearts that burst out when love is sent.
//! - [`sync`]: the heart's phase, its pull toward the room, the server clock.
//! - [`love`]: tap counts: sent, acknowledged, pending; other people's taps.
//! - [`reconnect`]: full-jitter backoff and the status line.
//! - [`address`]: the room from the URL, the socket URL, the client id.
//! - [`session`]: the conversation with the server, minus the socket.
//!
//! Browser modules (wasm32 only):
//! - `connection`: the WebSocket, its timers and listeners, reconnecting.
//! - `canvas`: drawing the heart each animation frame.
//! - `browser`: small wrappers: clocks, storage, timers, listeners.
//! - this file's `App` and its small components.

pub mod address;
pub mod heart;
pub mod love;
pub mod particles;
pub mod reconnect;
pub mod session;
pub mod sync;

#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
mod canvas;
#[cfg(target_arch = "wasm32")]
mod connection;

#[cfg(target_arch = "wasm32")]
pub use ui::App;

/// The components. They only show state and forward taps: the heart is
/// drawn by `canvas`, the socket is run by `connection`.
#[cfg(target_arch = "wasm32")]
mod ui {
    use crate::address::{self, love_acked_key, love_taps_key, parse_count};
    use crate::browser::{self, Listener};
    use crate::canvas::Animation;
    use crate::connection::{Connection, LoveKeys, Page, SharedPage};
    use crate::heart::{self, Layout};
    use crate::love::Love;
    use crate::reconnect::Link;
    use crate::session::Session;
    use crate::sync::{DEFAULT_BPM, Heart};
    use leptos::prelude::*;
    use send_wrapper::SendWrapper;
    use shared::{ClientId, RoomName};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// What the components show, as signals; set by [`Stats::publish`] only
    /// when a value changes, so a frame that changes nothing touches no DOM.
    #[derive(Clone, Copy)]
    struct Stats {
        hearts: RwSignal<u32>,
        coherence_percent: RwSignal<u32>,
        love: RwSignal<u64>,
        status: RwSignal<String>,
        connected: RwSignal<bool>,
    }

    impl Stats {
        fn new() -> Self {
            Self {
                hearts: RwSignal::new(0),
                coherence_percent: RwSignal::new(0),
                love: RwSignal::new(0),
                status: RwSignal::new(Link::Connecting.label(0.0)),
                connected: RwSignal::new(false),
            }
        }

        fn publish(&self, page: &Page, now: f64) {
            let view = page.session.view();
            change(self.hearts, view.hearts);
            // The ratio is in [0, 1], so the cast cannot overflow.
            change(self.coherence_percent, (view.coherence * 100.0).round() as u32);
            change(self.love, view.love);
            change(self.status, page.link.label(now));
            change(self.connected, page.link.is_connected());
        }
    }

    fn change<T: PartialEq + Send + Sync + 'static>(signal: RwSignal<T>, value: T) {
        if signal.with_untracked(|current| *current != value) {
            signal.set(value);
        }
    }

    /// What the components below the room share: how to send love.
    #[derive(Clone)]
    struct LoveSender(SendWrapper<Connection>);

    impl LoveSender {
        fn tap(&self) {
            self.0.tap();
        }
    }

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
        if let Some(id) =
            address::stored_client_id(browser::load(address::CLIENT_ID_KEY).as_deref())
        {
            return id;
        }
        let id = address::new_client_id(&mut browser::random);
        browser::save(address::CLIENT_ID_KEY, id.as_str());
        id
    }

    /// One room: connects, draws, shows the numbers, takes love.
    #[component]
    fn Room(room: RoomName) -> impl IntoView {
        let now = browser::now();
        let love = Love::new(
            parse_count(browser::load(&love_taps_key(&room)).as_deref()),
            parse_count(browser::load(&love_acked_key(&room)).as_deref()),
        );
        let heart = Heart::new(browser::random(), DEFAULT_BPM, now);
        let page: SharedPage = Rc::new(RefCell::new(Page {
            session: Session::new(heart, love),
            link: Link::Connecting,
        }));
        let stats = Stats::new();
        let publish: Rc<dyn Fn()> = {
            let page = page.clone();
            Rc::new(move || {
                if let Ok(page) = page.try_borrow() {
                    stats.publish(&page, browser::now());
                }
            })
        };

        let location = window().location();
        let url = address::socket_url(
            &location.protocol().unwrap_or_default(),
            &location.host().unwrap_or_default(),
            &room,
            &client_id(),
        );
        let keys = LoveKeys { taps: love_taps_key(&room), acked: love_acked_key(&room) };
        let connection = Connection::start(url, page.clone(), keys, publish.clone());
        let sender = LoveSender(SendWrapper::new(connection.clone()));
        provide_context(sender.clone());

        let keyboard = Listener::new(&window(), "keydown", move |event| {
            if let Ok(event) = wasm_bindgen::JsCast::dyn_into::<web_sys::KeyboardEvent>(event) {
                on_key(&event, &sender);
            }
        });
        let owned = SendWrapper::new((connection, keyboard));
        on_cleanup(move || {
            let (connection, keyboard) = owned.take();
            connection.stop();
            drop(keyboard);
        });

        view! {
            <main class="app">
                <header class="top">
                    <span class="brand">"heartsync"</span>
                    <span class="room">{format!("#{room}")}</span>
                    <Status stats />
                </header>
                <HeartCanvas page publish />
                <footer class="bottom">
                    <Numbers stats />
                    <LoveButton />
                </footer>
            </main>
        }
    }

    /// `l` or space sends love, unless a control has the focus (a focused
    /// button already turns space into its own click).
    fn on_key(event: &web_sys::KeyboardEvent, sender: &LoveSender) {
        if event.repeat() || event.ctrl_key() || event.meta_key() || event.alt_key() {
            return;
        }
        let key = event.key();
        if !matches!(key.as_str(), "l" | "L" | " ") {
            return;
        }
        let on_control = event
            .target()
            .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Element>(t).ok())
            .is_some_and(|e| {
                matches!(e.tag_name().as_str(), "BUTTON" | "INPUT" | "TEXTAREA" | "SELECT" | "A")
            });
        if on_control {
            return;
        }
        // Space would otherwise scroll the page.
        event.prevent_default();
        sender.tap();
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

    /// The heart's canvas; a tap on the heart sends love.
    #[component]
    fn HeartCanvas(page: SharedPage, publish: Rc<dyn Fn()>) -> impl IntoView {
        let canvas = NodeRef::<leptos::html::Canvas>::new();
        let animation: SendWrapper<Rc<RefCell<Option<Animation>>>> =
            SendWrapper::new(Rc::new(RefCell::new(None)));
        let running = animation.clone();
        Effect::new(move |_| {
            if let Some(element) = canvas.get()
                && running.borrow().is_none()
            {
                *running.borrow_mut() = Animation::start(element, page.clone(), publish.clone());
            }
        });
        on_cleanup(move || {
            animation.borrow_mut().take();
        });
        let sender = use_context::<LoveSender>();
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
                && let Some(sender) = &sender
            {
                sender.tap();
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
        view! {
            <dl class="numbers">
                <div class="number">
                    <dt>"hearts"</dt>
                    <dd data-testid="hearts">{move || stats.hearts.get()}</dd>
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
        let sender = use_context::<LoveSender>();
        view! {
            <button
                class="love"
                data-testid="love-button"
                title="send love (l or space)"
                on:click=move |_| {
                    if let Some(sender) = &sender {
                        sender.tap();
                    }
                }
            >
                "♥ send love"
            </button>
        }
    }
}
