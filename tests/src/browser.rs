//! Real pages in headless Chromium, driven over WebDriver (fantoccini and
//! Debian's chromedriver), for the tests that need a DOM, a canvas and
//! animation frames.
//!
//! Each [`Browser`] is one chromedriver process with one browser session.
//! Pages that must animate side by side each need their own: a background
//! tab gets no animation frames. The helpers come in three kinds, as in the
//! Leptos end-to-end examples: *actions* ([`Browser::goto`],
//! [`Browser::click`]), *finds* ([`Browser::find`], [`Browser::text`],
//! [`Browser::state`]) and *checks* ([`Browser::wait_for_text`],
//! [`wait_until`]), which poll with a deadline instead of sleeping.
//!
//! Cleaning up does not depend on the test passing: chromedriver runs in a
//! process group of its own with the browsers it starts, and dropping the
//! [`Browser`] kills that whole group. [`Browser::close`] is the polite way,
//! ending the WebDriver session first.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator, elements::Element, wd::TimeoutConfiguration};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

use crate::TestServer;
use crate::wait_until;

/// How long a check waits for the page by default.
pub const PAGE_PATIENCE: Duration = Duration::from_secs(10);

/// Chromium's flags. Without the background-networking ones Chromium stalls
/// on a closed network, trying to reach Google's services.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=600,700",
];

/// The built page: `HEARTSYNC_DIST` (set by `cargo xtask test`), else the
/// workspace's `dist/`. Fails, saying how to build it, when it has no
/// `index.html`.
pub fn dist_dir() -> Result<PathBuf> {
    let dist = std::env::var_os("HEARTSYNC_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../dist")));
    if !dist.join("index.html").is_file() {
        bail!(
            "{} has no index.html: the browser tests need the built page; \
             run `cargo xtask build` (or `cargo xtask test`) first",
            dist.display()
        );
    }
    Ok(dist)
}

/// A test server that also serves the built page.
pub async fn serve_page() -> Result<TestServer> {
    serve_page_on("127.0.0.1:0".parse()?).await
}

/// A test server serving the built page on `addr`, with a short drain so a
/// test can stop and restart it quickly.
pub async fn serve_page_on(addr: std::net::SocketAddr) -> Result<TestServer> {
    let dist = dist_dir()?;
    Ok(TestServer::start_on(addr, |config| {
        config.static_dir = dist;
        config.drain = Duration::from_millis(200);
    })
    .await)
}

/// Lets one browser test run at a time. Page tests measure timing (how fast
/// hearts converge), and two cores shared by several Chromiums and the rest
/// of the test suite would measure the machine instead; hold the guard for
/// the whole test.
pub async fn take_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::const_new(());
    TURN.lock().await
}

/// What the page publishes every animation frame as `window.__heartsync`.
#[derive(Debug, Clone, PartialEq)]
pub struct PageState {
    /// The heart's phase in `[0, 1)` at server-clock time `server_now`.
    pub phase: f64,
    /// The page's estimate of the server's clock, in ms, when it drew.
    pub server_now: f64,
    /// The heart's current rate, in beats per minute.
    pub bpm: f64,
    /// How many hearts the room has, as the page last heard.
    pub hearts: f64,
    /// The room's coherence, as the page last heard.
    pub coherence: f64,
    /// Whether the page's socket is open.
    pub connected: bool,
    /// How many frames the page has drawn.
    pub frames: f64,
    /// Everything the page published, for fields not parsed here.
    pub raw: Value,
}

impl PageState {
    fn parse(raw: Value) -> Result<Self> {
        let number = |field: &str| {
            raw.get(field)
                .and_then(Value::as_f64)
                .with_context(|| format!("window.__heartsync.{field} is not a number in {raw}"))
        };
        Ok(Self {
            phase: number("phase")?,
            server_now: number("server_now")?,
            bpm: number("bpm")?,
            hearts: number("hearts")?,
            coherence: number("coherence")?,
            connected: raw.get("connected").and_then(Value::as_bool).with_context(|| {
                format!("window.__heartsync.connected is not a boolean in {raw}")
            })?,
            frames: number("frames")?,
            raw,
        })
    }

    /// The heart's phase projected to server-clock time `at_ms`.
    pub fn phase_at(&self, at_ms: f64) -> f64 {
        shared::project(self.phase, self.bpm, self.server_now, at_ms)
    }
}

/// Headless Chromium under its own chromedriver, with one session open.
pub struct Browser {
    /// The WebDriver session; `None` once closed.
    client: Option<Client>,
    /// Held for its `Drop`, which stops chromedriver and its browsers;
    /// declared after `client` so the session handle is dropped first.
    _driver: Driver,
}

impl Browser {
    /// Starts chromedriver and opens a Chromium session.
    pub async fn start() -> Result<Self> {
        let driver = Driver::start().await?;
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": CHROMIUM_ARGS }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .with_context(|| format!("could not open a Chromium session ({chromium})"))?;
        // Bounded, so a stuck page fails the test instead of hanging it.
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(20)),
                Some(Duration::ZERO),
            ))
            .await
            .context("could not set WebDriver timeouts")?;
        Ok(Self { client: Some(client), _driver: driver })
    }

    fn client(&self) -> Result<&Client> {
        self.client.as_ref().context("the browser session is closed")
    }

    // Actions.

    /// Opens `url` and waits for the document to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client()?.goto(url).await.with_context(|| format!("could not open {url}"))
    }

    /// Clicks the element with `data-testid="testid"`, waiting for it first.
    pub async fn click(&self, testid: &str) -> Result<()> {
        self.find(testid)
            .await?
            .click()
            .await
            .with_context(|| format!("could not click [data-testid={testid}]"))
    }

    // Finds.

    /// The element with `data-testid="testid"`, waiting up to
    /// [`PAGE_PATIENCE`] for it to appear.
    pub async fn find(&self, testid: &str) -> Result<Element> {
        let selector = format!("[data-testid=\"{testid}\"]");
        wait_until(PAGE_PATIENCE, &format!("an element {selector}"), || async {
            Ok(self.client()?.find(Locator::Css(&selector)).await?)
        })
        .await
    }

    /// The text of the element with `data-testid="testid"`, trimmed.
    pub async fn text(&self, testid: &str) -> Result<String> {
        let text = self
            .find(testid)
            .await?
            .text()
            .await
            .with_context(|| format!("could not read [data-testid={testid}]"))?;
        Ok(text.trim().to_string())
    }

    /// Runs `script` in the page as the body of a function (WebDriver's
    /// convention: use `return` to give a value back) and returns its value.
    pub async fn eval(&self, script: &str) -> Result<Value> {
        self.client()?
            .execute(script, Vec::new())
            .await
            .with_context(|| format!("script failed: {script}"))
    }

    /// What the page published on its last animation frame; an error until
    /// it has drawn one.
    pub async fn state(&self) -> Result<PageState> {
        let raw = self.eval("return window.__heartsync ?? null;").await?;
        if raw.is_null() {
            bail!("the page has not published window.__heartsync yet");
        }
        PageState::parse(raw)
    }

    /// The largest alpha (0 to 255) among the pixels of a small square at
    /// the centre of `<canvas id="heart">`: above 0 when something is drawn
    /// there.
    pub async fn canvas_centre_alpha(&self) -> Result<u8> {
        let alpha = self
            .eval(
                "const canvas = document.getElementById('heart');
                 if (!canvas) { return 'no <canvas id=\"heart\">'; }
                 const context = canvas.getContext('2d');
                 if (!context) { return 'the canvas has no 2d context'; }
                 const x = Math.floor(canvas.width / 2) - 4;
                 const y = Math.floor(canvas.height / 2) - 4;
                 const pixels = context.getImageData(x, y, 9, 9).data;
                 let most = 0;
                 for (let i = 3; i < pixels.length; i += 4) { most = Math.max(most, pixels[i]); }
                 return most;",
            )
            .await?;
        match alpha.as_u64() {
            Some(alpha) => Ok(u8::try_from(alpha).unwrap_or(u8::MAX)),
            None => bail!("could not read the canvas: {alpha}"),
        }
    }

    // Checks.

    /// Waits up to [`PAGE_PATIENCE`] until the text of `testid` satisfies
    /// `expected` (described by `what`, for the failure message); the text.
    pub async fn wait_for_text(
        &self,
        testid: &str,
        what: &str,
        expected: impl Fn(&str) -> bool,
    ) -> Result<String> {
        wait_until(PAGE_PATIENCE, &format!("[data-testid={testid}] to be {what}"), || async {
            let text = self.text(testid).await?;
            if expected(&text) { Ok(text) } else { bail!("it reads {text:?}") }
        })
        .await
    }

    /// Ends the session (closing Chromium) and stops chromedriver.
    pub async fn close(mut self) -> Result<()> {
        if let Some(client) = self.client.take() {
            client.close().await.context("could not end the browser session")?;
        }
        Ok(())
    }
}

/// A chromedriver child process, leading a process group that also holds
/// every browser it starts; dropping it kills the whole group.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    async fn start() -> Result<Self> {
        let program = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
        if !program.is_file() {
            bail!(
                "chromedriver not found at {}: install Debian's chromium and chromium-driver \
                 (`cargo xtask install --test`), or set CHROMEDRIVER",
                program.display()
            );
        }
        // A port that was free a moment ago; chromedriver cannot report the
        // one it would pick itself.
        let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .context("no free local port for chromedriver")?;
        let child = Command::new(&program)
            .arg(format!("--port={}", addr.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start {}", program.display()))?;
        let mut driver = Self { child, addr };
        wait_until(Duration::from_secs(10), "chromedriver to answer", || {
            let exited = driver.child.try_wait();
            async move {
                if let Some(status) = exited? {
                    bail!("chromedriver exited at start ({status})");
                }
                tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("nothing answers on {addr} yet"))?;
                Ok(())
            }
        })
        .await?;
        Ok(driver)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (`process_group(0)`); killing
        // the group takes the browsers with it even when the session was
        // never closed.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
