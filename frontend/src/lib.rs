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
//! - [`history`]: the coherence strip's cells, colours and text alternative.
//! - [`token`]: a private room's join token, from the share link's fragment.
//! - [`i18n`]: every word of the page, in English and Chinese, and which
//!   language a page speaks.
//! - [`share`]: the room's link and its QR code (SVG).
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
pub mod history;
pub mod i18n;
pub mod particles;
pub mod schedule;
pub mod share;
pub mod stored;
pub mod token;

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
    use crate::history::{self, History};
    use crate::i18n::{LANG_KEY, Lang, Text};
    use crate::page::{Command, LoveKeys, Page, Stats};
    use crate::share;
    use crate::stored::{
        CLIENT_ID_KEY, love_acked_key, love_epoch_key, love_taps_key, parse_count,
    };
    use crate::{canvas, connection, token};
    use futures::channel::mpsc;
    use futures::future::abortable;
    use gloo_events::EventListener;
    use gloo_timers::callback::Interval;
    use leptos::prelude::*;
    use leptos::task::spawn_local;
    use send_wrapper::SendWrapper;
    use shared::client::{Heart, Love, RESTING_BPM, Session, address};
    use shared::{ClientId, RoomName};
    use wasm_bindgen::{JsCast, JsValue};

    /// How often (ms) the screen-reader summary of the counts may change:
    /// often enough to follow the room, seldom enough not to talk over
    /// everything else.
    const SUMMARY_MS: u32 = 5_000;

    /// A fixed word of the page (`pick`ed from [`Text`]) that follows the
    /// page's language, as a view child or an attribute value.
    ///
    /// Every word is this one closure type rather than a closure of its
    /// own: Leptos makes the code that renders and updates a reactive
    /// value once per closure type, so a closure per place would cost the
    /// page's budget (`tests/tests/it/budget.rs`) a copy of that code each.
    pub(crate) fn word(
        lang: RwSignal<Lang>,
        pick: fn(&Text) -> &'static str,
    ) -> impl Fn() -> &'static str + Copy + Send + Sync + 'static {
        move || pick(lang.get().text())
    }

    /// An `aria-pressed` or `aria-expanded` value that follows `on`: one
    /// closure type for all of them, as [`word`] is for words.
    pub(crate) fn pressed(
        on: RwSignal<bool>,
    ) -> impl Fn() -> &'static str + Copy + Send + Sync + 'static {
        move || if on.get() { "true" } else { "false" }
    }

    /// The page: the room from the URL, or a note that the name is invalid,
    /// in the language the person chose or their browser prefers.
    #[component]
    pub fn App() -> impl IntoView {
        let preferred: Vec<String> =
            window().navigator().languages().iter().filter_map(|tag| tag.as_string()).collect();
        let lang = RwSignal::new(Lang::pick(browser::load(LANG_KEY).as_deref(), &preferred));
        // Passed to the components below as a prop, and in context for any
        // that only needs the words (a toggle added later).
        provide_context(lang);
        // `<html lang>` and the title follow the language, so screen
        // readers pronounce the page right.
        Effect::new(move |_| {
            let lang = lang.get();
            if let Some(root) = document().document_element() {
                let _ = root.set_attribute("lang", lang.tag());
            }
            document().set_title(lang.text().title);
        });
        let path = window().location().pathname().unwrap_or_default();
        match address::room_from_path(&path) {
            Ok(room) => view! { <Room room lang /> }.into_any(),
            Err(problem) => view! { <BadRoom problem lang /> }.into_any(),
        }
    }

    /// A page whose room name cannot be opened: why, and the way to the
    /// main room. The reason is the room name parser's, in English.
    #[component]
    fn BadRoom(problem: String, lang: RwSignal<Lang>) -> impl IntoView {
        view! {
            <main class="app">
                <p class="notice" data-testid="bad-room">
                    {word(lang, |t| t.bad_room)}" "<span lang="en">{problem}</span>
                </p>
                <p class="notice"><a href="/">{word(lang, |t| t.open_main)}</a></p>
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
    fn Room(room: RoomName, lang: RwSignal<Lang>) -> impl IntoView {
        let keys = LoveKeys {
            taps: love_taps_key(&room),
            acked: love_acked_key(&room),
            epoch: love_epoch_key(&room),
        };
        let love = Love::resume(
            parse_count(browser::load(&keys.taps).as_deref()),
            parse_count(browser::load(&keys.acked).as_deref()),
            parse_count(browser::load(&keys.epoch).as_deref()),
        );
        let heart = Heart::new(browser::random(), RESTING_BPM, browser::now());
        let (commands, commands_rx) = mpsc::unbounded();
        let page = Page::new(Session::new(heart, love), keys, commands, lang);
        provide_context(page.clone());

        let location = window().location();
        let server = address::page_server(
            &location.protocol().unwrap_or_default(),
            &location.host().unwrap_or_default(),
        );
        let join_token = join_token(&room);
        let url = token::socket_url_with(
            &address::socket_url(&server, &room, &client_id()),
            join_token.as_deref(),
        );
        spawn_local(connection::run(url, page.clone(), commands_rx));

        let listeners = SendWrapper::new(listen(&page));
        let stats = page.stats;
        let summary = RwSignal::new(String::new());
        let summarize = SendWrapper::new(Interval::new(SUMMARY_MS, move || {
            let text = lang.get_untracked().text().summary(
                stats.hearts.get_untracked(),
                stats.coherence_percent.get_untracked(),
                stats.love.get_untracked(),
            );
            if summary.with_untracked(|shown| *shown != text) {
                summary.set(text);
            }
        }));
        on_cleanup(move || {
            drop(listeners.take());
            drop(summarize.take());
            // Ends the connection loop, which closes its socket.
            page.stop();
        });
        let origin = window().location().origin().unwrap_or_default();
        let link = share::room_link(&origin, &room);

        view! {
            <main class="app">
                <header class="top">
                    <h1 class="brand">"heartsync"</h1>
                    <span class="room">{format!("#{room}")}</span>
                    <Status stats />
                    <LangToggle lang />
                </header>
                <HeartCanvas lang />
                <HistoryStrip room=room.clone() join_token lang />
                <footer class="bottom">
                    <Numbers stats lang />
                    <LoveButton lang />
                    <Share link lang />
                    <crate::feel::FeelToggles />
                </footer>
                // What a screen reader hears: the connection's state when it
                // changes, and the counts at most every `SUMMARY_MS`.
                <p class="sr-only" role="status" data-testid="link-state">
                    {move || lang.get().text().link_state(&stats.link.get())}
                </p>
                <p class="sr-only" aria-live="polite" data-testid="summary">
                    {summary}
                </p>
            </main>
        }
    }

    /// A private room's join token: taken from the share link's fragment
    /// (then kept in sessionStorage and dropped from the address bar, so it
    /// is not bookmarked or shared by accident), or the one kept earlier in
    /// this tab.
    fn join_token(room: &RoomName) -> Option<String> {
        let key = token::key(room);
        let hash = window().location().hash().unwrap_or_default();
        if let Some(found) = token::from_fragment(&hash) {
            browser::session_save(&key, &found);
            browser::drop_fragment();
            return Some(found);
        }
        browser::session_load(&key)
    }

    /// The room's last hour under the heart, one cell per 10 s coloured by
    /// mean coherence, fetched once a minute; a screen reader hears the
    /// trend.
    #[component]
    fn HistoryStrip(
        room: RoomName,
        join_token: Option<String>,
        lang: RwSignal<Lang>,
    ) -> impl IntoView {
        let fetched = RwSignal::new(None::<History>);
        let (refreshing, stop) = abortable(async move {
            loop {
                if let Some(history) = fetch_history(&room, join_token.as_deref()).await {
                    fetched.set(Some(history));
                }
                gloo_timers::future::TimeoutFuture::new(history::REFRESH_MS).await;
            }
        });
        spawn_local(async move {
            let _ = refreshing.await;
        });
        on_cleanup(move || stop.abort());
        let page = use_context::<Page>();
        let cells = move || {
            let now = browser::now();
            let server_now =
                page.as_ref().and_then(|p| p.with(|s| s.server_time(now))).unwrap_or(now);
            fetched.with(|h| h.as_ref().map(|h| history::cells(h, server_now)).unwrap_or_default())
        };
        let label = move || {
            let text = lang.get().text();
            fetched.with(|h| {
                h.as_ref()
                    .map_or_else(|| text.history_loading.to_owned(), |h| history::describe(h, text))
            })
        };
        view! {
            <div class="history" role="img" aria-label=label title=label data-testid="history">
                {move || {
                    cells()
                        .into_iter()
                        .map(|cell| view! { <span style:background=history::colour(cell)></span> })
                        .collect_view()
                }}
            </div>
        }
    }

    /// The room's history from the read API; `None` when it cannot be had
    /// (the strip keeps what it showed and tries again in a minute).
    async fn fetch_history(room: &RoomName, join_token: Option<&str>) -> Option<History> {
        let mut request = gloo_net::http::Request::get(&history::url(room));
        if let Some(join_token) = join_token {
            request = request.header("Authorization", &format!("Bearer {join_token}"));
        }
        let response = request.send().await.ok()?;
        if !response.ok() {
            return None;
        }
        History::parse(&response.text().await.ok()?).ok()
    }

    /// Switches between English and Chinese, and remembers the choice.
    #[component]
    fn LangToggle(lang: RwSignal<Lang>) -> impl IntoView {
        let page = use_context::<Page>();
        let switch = move |_| {
            let next = lang.get_untracked().other();
            lang.set(next);
            browser::save(LANG_KEY, next.tag());
            if let Some(page) = &page {
                // The status line is made in the language, not translated.
                page.show(browser::now());
            }
        };
        view! {
            <button
                class="chip"
                data-testid="lang"
                lang=move || lang.get().other().tag()
                aria-label=word(lang, |t| t.switch_label)
                on:click=switch
            >
                {word(lang, |t| t.switch_to)}
            </button>
        }
    }

    /// The share button (the Web Share sheet where the browser has one,
    /// else the link to the clipboard) and the room link's QR code.
    #[component]
    fn Share(link: String, lang: RwSignal<Lang>) -> impl IntoView {
        let copied = RwSignal::new(false);
        let open = RwSignal::new(false);
        // Drawn the first time it is shown, not before the first heart.
        let qr = StoredValue::new(None::<String>);
        let shared_link = link.clone();
        let on_share = move |_| {
            let link = shared_link.clone();
            let title = lang.get_untracked().text().title;
            spawn_local(async move {
                match share_or_copy(&link, title).await {
                    Ok(Shared::Sheet) => {}
                    Ok(Shared::Copied) => copied.set(true),
                    // No share sheet and no clipboard: show the link and
                    // its code, to copy or scan by hand.
                    Err(_) => open.set(true),
                }
            });
        };
        let qr_link = link.clone();
        let svg = move || {
            if qr.with_value(Option::is_none) {
                let drawn = share::qr_svg(&qr_link).unwrap_or_default();
                qr.set_value(Some(drawn));
            }
            qr.with_value(|svg| svg.clone().unwrap_or_default())
        };
        view! {
            <div class="tools">
                <button class="chip" data-testid="share" on:click=on_share>
                    {move || {
                        let text = lang.get().text();
                        if copied.get() { text.copied } else { text.share }
                    }}
                </button>
                <button
                    class="chip"
                    data-testid="qr-button"
                    aria-expanded=pressed(open)
                    aria-controls="qr"
                    on:click=move |_| open.update(|open| *open = !*open)
                >
                    {word(lang, |t| t.show_qr)}
                </button>
            </div>
            <Show when=move || open.get()>
                <div class="qr-panel" id="qr">
                    <div
                        class="qr"
                        data-testid="qr"
                        role="img"
                        aria-label=word(lang, |t| t.qr_label)
                        inner_html=svg()
                    ></div>
                    <p class="qr-hint">{word(lang, |t| t.qr_hint)}</p>
                    <a class="qr-link" data-testid="room-link" href=link.clone()>{link.clone()}</a>
                </div>
            </Show>
        }
    }

    /// How a link was shared.
    enum Shared {
        /// Through the browser's share sheet.
        Sheet,
        /// Onto the clipboard.
        Copied,
    }

    /// Shares `link` through the Web Share API where the browser has it,
    /// else copies it to the clipboard. An error when neither works (or the
    /// person closed the share sheet).
    async fn share_or_copy(link: &str, title: &str) -> Result<Shared, JsValue> {
        let navigator = window().navigator();
        if js_sys::Reflect::has(&navigator, &JsValue::from_str("share")).unwrap_or(false) {
            let data = web_sys::ShareData::new();
            data.set_url(link);
            data.set_title(title);
            wasm_bindgen_futures::JsFuture::from(navigator.share_with_data(&data)).await?;
            return Ok(Shared::Sheet);
        }
        wasm_bindgen_futures::JsFuture::from(navigator.clipboard().write_text(link)).await?;
        Ok(Shared::Copied)
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

    /// The visible status line. Screen readers hear the state from the
    /// room's `link-state` region instead, without the countdown.
    #[component]
    fn Status(stats: Stats) -> impl IntoView {
        let state = move || match stats.link.get() {
            shared::client::Link::Connecting => "connecting",
            shared::client::Link::Connected => "connected",
            shared::client::Link::Waiting { .. } => "waiting",
        };
        view! {
            <span
                class="status"
                class:online=move || stats.connected.get()
                data-testid="status"
                data-state=state
                aria-hidden="true"
            >
                {stats.status}
            </span>
        }
    }

    /// The heart's canvas, drawn every animation frame while it is mounted;
    /// a tap on the heart sends love.
    #[component]
    fn HeartCanvas(lang: RwSignal<Lang>) -> impl IntoView {
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
                    role="img"
                    aria-label=word(lang, |t| t.canvas_label)
                ></canvas>
            </div>
        }
    }

    #[component]
    fn Numbers(stats: Stats, lang: RwSignal<Lang>) -> impl IntoView {
        let hearts =
            move || stats.hearts.get().map_or_else(|| String::from("–"), |h| h.to_string());
        // One closure for the number and the bar's width.
        let percent = move || format!("{}%", stats.coherence_percent.get());
        view! {
            <dl class="numbers">
                <div class="number">
                    <dt>{word(lang, |t| t.hearts)}</dt>
                    <dd data-testid="hearts">{hearts}</dd>
                </div>
                <div class="number">
                    <dt>{word(lang, |t| t.in_sync)}</dt>
                    <dd>
                        <span data-testid="coherence">{percent}</span>
                        <span class="bar">
                            <span
                                class="fill"
                                style:width=percent
                            ></span>
                        </span>
                    </dd>
                </div>
                <div class="number">
                    <dt>{word(lang, |t| t.love)}</dt>
                    <dd data-testid="love">{stats.love}</dd>
                </div>
            </dl>
        }
    }

    #[component]
    fn LoveButton(lang: RwSignal<Lang>) -> impl IntoView {
        let page = use_context::<Page>();
        view! {
            <button
                class="love"
                data-testid="love-button"
                title=word(lang, |t| t.send_love_hint)
                on:click=move |_| {
                    if let Some(page) = &page {
                        page.tap();
                    }
                }
            >
                {word(lang, |t| t.send_love)}
            </button>
        }
    }
}
