//! The cluster check's real pages: two headless Chromium sessions open the
//! page through nginx, land on different instances and fall into one beat;
//! then one page's instance is drained (SIGTERM, a rolling restart's step)
//! and that page is back, on another instance, within its reconnect
//! backoff, beating with the other again.
//!
//! The pages are driven over W3C WebDriver by Debian's chromedriver, as in
//! the integration tests (tests/src/browser.rs). Those use fantoccini,
//! which brings tokio and hyper; xtask compiles before every `cargo xtask`
//! command and keeps to small dependencies, and WebDriver is JSON over
//! HTTP, so the few commands needed here (new session, timeouts, navigate,
//! refresh, execute script, delete session) go through the cluster check's
//! blocking HTTP client ([`HTTP`]). One chromedriver holds both sessions;
//! each session is its own Chromium with its own window, so both pages are
//! in front and animate (a background tab would get no animation frames).
//!
//! Which instance holds a page is read from the instances' own
//! `heartsync_connections_open` gauges: nginx decides where a page lands,
//! so the second page is reloaded (a bounded number of times) until it is
//! on another instance than the first.

use std::{
    env,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use shared::phase;
use ureq::{Body, http::Response};

use super::{
    CHECK_DRAIN, Cluster, HTTP, Process, STARTUP_PATIENCE, STOP_PATIENCE, connections_open,
    free_addr, poll,
};
use crate::install::find_program;

/// Chromium's flags: those of tests/src/browser.rs, for the same reasons
/// (without the background-networking ones Chromium stalls on a closed
/// network). A unit test keeps the two lists equal.
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

/// How long Chromium may take to start a session on a loaded machine.
const SESSION_PATIENCE: Duration = Duration::from_secs(60);

/// How long one navigation or script may take.
const COMMAND_PATIENCE: Duration = Duration::from_secs(30);

/// How long a page may take to connect, and the instances' gauges to show
/// where it landed.
const PAGE_PATIENCE: Duration = Duration::from_secs(15);

/// How many times the second page is reloaded to land on another instance
/// than the first. nginx's `least_conn` sends it to the other one at the
/// first try unless something else holds a connection there; a handful of
/// retries covers that, and a balancer that always picks the same instance
/// fails the check.
const RELOADS: usize = 10;

/// One beat: the criterion of the direct two-browser test
/// (tests/tests/it/cluster.rs, `two_browsers_on_different_instances_beat_as_one`):
/// three readings in a row under 0.02 beat apart, the first within 10 s of
/// both pages being connected.
const IN_STEP: f64 = 0.02;
const BEAT_PATIENCE: Duration = Duration::from_secs(10);
const READINGS_IN_A_ROW: usize = 3;

/// The first reconnect's backoff ceiling after a connection that was up
/// (the clients' own [`shared::backoff::BASE_MS`]): a drained page waits at
/// most this long before it tries again.
const FIRST_BACKOFF: Duration = Duration::from_millis(shared::backoff::BASE_MS as u64);

/// What the reconnect itself may take on top of the backoff: the WebSocket
/// handshake through nginx and the welcome, on a machine shared with the
/// rest of the check. A failed first try would add up to another second of
/// backoff (the next ceiling) plus a second handshake.
const RECONNECT_ALLOWANCE: Duration = Duration::from_millis(1000);

/// The largest WebDriver answer read (a script's value, an error's stack).
const MAX_ANSWER: u64 = 16 << 20;

/// What one WebDriver command answered: its `value`, or the WebDriver error
/// it names. chromedriver keeps the connection open after its answer even
/// when asked to close it; the answer is read up to its `Content-Length`.
fn webdriver_value(
    method: &str,
    path: &str,
    response: Result<Response<Body>, ureq::Error>,
) -> Result<Value> {
    let mut response = response.with_context(|| format!("WebDriver {method} {path}: no answer"))?;
    let status = response.status();
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .with_context(|| format!("read the answer to WebDriver {method} {path}"))?;
    let answer: Value = serde_json::from_str(&text)
        .with_context(|| format!("WebDriver {method} {path}: not JSON: {text}"))?;
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if status != 200 {
        bail!(
            "WebDriver {method} {path} failed ({status}): {} {}",
            value["error"],
            value["message"]
        );
    }
    Ok(value)
}

/// chromedriver, in its own process group with the Chromiums it starts.
struct Chromedriver {
    process: Process,
    addr: SocketAddr,
}

impl Chromedriver {
    /// Starts chromedriver (`CHROMEDRIVER`, else on PATH) and waits until it
    /// is ready.
    fn start(logs: &Path) -> Result<Self> {
        let program = env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| find_program("chromedriver"))
            .context(
                "`chromedriver` is not on PATH: `cargo xtask install --test` installs it \
                 (Debian package `chromium-driver`), or set CHROMEDRIVER",
            )?;
        let addr = free_addr()?;
        let process = Process::spawn(
            "chromedriver",
            Command::new(program).arg(format!("--port={}", addr.port())),
            logs.join("chromedriver.log"),
        )?;
        let mut driver = Self { process, addr };
        poll(STARTUP_PATIENCE, &format!("chromedriver ready on {addr}"), || {
            driver.process.ensure_running()?;
            let status = HTTP.get(driver.url("/status")).call();
            let ready = webdriver_value("GET", "/status", status)
                .is_ok_and(|status| status["ready"] == json!(true));
            Ok(ready.then_some(()))
        })?;
        Ok(driver)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends one WebDriver command with its JSON `body`, waiting for the
    /// answer at most `patience`; its `value`, or the WebDriver error.
    fn post(&self, path: &str, body: &Value, patience: Duration) -> Result<Value> {
        let response = HTTP
            .post(self.url(path))
            .config()
            .timeout_global(Some(patience))
            .build()
            .content_type("application/json; charset=utf-8")
            .send(body.to_string());
        webdriver_value("POST", path, response)
    }

    /// Deletes a WebDriver resource (a session); its `value`, or the
    /// WebDriver error.
    fn delete(&self, path: &str) -> Result<Value> {
        let response = HTTP
            .delete(self.url(path))
            .config()
            .timeout_global(Some(COMMAND_PATIENCE))
            .build()
            .call();
        webdriver_value("DELETE", path, response)
    }

    /// Opens a new Chromium session: one window, one page.
    fn open_page(&self) -> Result<Page<'_>> {
        let chromium = env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": chromium, "args": CHROMIUM_ARGS },
            }}
        });
        let session = self
            .post("/session", &capabilities, SESSION_PATIENCE)
            .with_context(|| format!("could not open a Chromium session ({chromium})"))?;
        let id = session["sessionId"]
            .as_str()
            .with_context(|| format!("no sessionId in {session}"))?
            .to_string();
        let page = Page { driver: self, session: id };
        // Bounded, so a stuck page fails the check instead of hanging it.
        page.command(
            "timeouts",
            json!({ "script": 10_000, "pageLoad": 20_000, "implicit": 0 }),
            COMMAND_PATIENCE,
        )?;
        Ok(page)
    }
}

impl Drop for Chromedriver {
    /// Kills chromedriver's whole process group (the Chromiums with it),
    /// whether or not the sessions were ended; [`Process`]'s own drop then
    /// reaps chromedriver.
    fn drop(&mut self) {
        let group = format!("-{}", self.process.child.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// One browser session showing one page.
struct Page<'a> {
    driver: &'a Chromedriver,
    session: String,
}

/// What the page publishes every animation frame as `window.__heartsync`
/// (the fields read here).
#[derive(Debug, Clone, Copy, PartialEq)]
struct PageState {
    /// The heart's phase in `[0, 1)` at server-clock time `server_now`.
    phase: f64,
    /// The page's estimate of the server's clock, in ms, when it drew.
    server_now: f64,
    /// The heart's rate, in beats per minute.
    bpm: f64,
    /// Whether the page's socket is open.
    connected: bool,
}

/// How often a page dropped its connection since the watch began, and for
/// how long at most, measured in the page every animation frame.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Drops {
    drops: u64,
    longest: Duration,
    /// Whether it is disconnected right now.
    down: bool,
}

impl Page<'_> {
    fn command(&self, command: &str, body: Value, patience: Duration) -> Result<Value> {
        let path = format!("/session/{}/{command}", self.session);
        self.driver.post(&path, &body, patience)
    }

    /// Opens `url` and waits for the document to load.
    fn goto(&self, url: &str) -> Result<()> {
        self.command("url", json!({ "url": url }), COMMAND_PATIENCE)
            .with_context(|| format!("could not open {url}"))?;
        Ok(())
    }

    /// Reloads the page and waits for it to load.
    fn reload(&self) -> Result<()> {
        self.command("refresh", json!({}), COMMAND_PATIENCE).context("could not reload")?;
        Ok(())
    }

    /// Runs `script` as a function body (`return` gives a value back).
    fn eval(&self, script: &str) -> Result<Value> {
        self.command("execute/sync", json!({ "script": script, "args": [] }), COMMAND_PATIENCE)
            .with_context(|| format!("script failed: {script}"))
    }

    /// What the page published on its last frame; `None` before the first.
    fn state(&self) -> Result<Option<PageState>> {
        let raw = self.eval("return window.__heartsync ?? null;")?;
        if raw.is_null() {
            return Ok(None);
        }
        let number = |field: &str| {
            raw[field]
                .as_f64()
                .with_context(|| format!("window.__heartsync.{field} is not a number in {raw}"))
        };
        Ok(Some(PageState {
            phase: number("phase")?,
            server_now: number("server_now")?,
            bpm: number("bpm")?,
            connected: raw["connected"]
                .as_bool()
                .with_context(|| format!("window.__heartsync.connected is not a boolean: {raw}"))?,
        }))
    }

    /// The trimmed text of the element with `data-testid="testid"`, if any.
    fn text(&self, testid: &str) -> Result<Option<String>> {
        let script = format!(
            "const element = document.querySelector('[data-testid=\"{testid}\"]');
             return element ? element.textContent.trim() : null;"
        );
        Ok(self.eval(&script)?.as_str().map(str::to_string))
    }

    /// Waits until the text of `testid` satisfies `expected`.
    fn wait_for_text(
        &self,
        testid: &str,
        what: &str,
        expected: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let mut last = None;
        poll(PAGE_PATIENCE, &format!("[data-testid={testid}] {what}"), || {
            let text = self.text(testid)?;
            let done = text.as_deref().is_some_and(&expected);
            last = text;
            Ok(done.then_some(()))
        })
        .with_context(|| format!("it last read {last:?}"))
    }

    /// Waits until the page has drawn a frame with its socket open.
    fn wait_connected(&self) -> Result<()> {
        poll(PAGE_PATIENCE, "the page connected", || {
            Ok(self.state()?.is_some_and(|state| state.connected).then_some(()))
        })
    }

    /// Starts measuring, in the page, every stretch of frames drawn while
    /// disconnected.
    fn watch_drops(&self) -> Result<()> {
        self.eval(
            "const watch = { down: null, drops: 0, longest: 0 };
             window.__cluster_watch = watch;
             const look = () => {
               const state = window.__heartsync;
               const now = performance.now();
               if (state && !state.connected) {
                 if (watch.down === null) { watch.down = now; watch.drops += 1; }
               } else if (state && watch.down !== null) {
                 watch.longest = Math.max(watch.longest, now - watch.down);
                 watch.down = null;
               }
               requestAnimationFrame(look);
             };
             requestAnimationFrame(look);
             return true;",
        )?;
        Ok(())
    }

    /// What [`watch_drops`](Self::watch_drops) has measured so far.
    fn drops(&self) -> Result<Drops> {
        let raw = self.eval("return window.__cluster_watch ?? null;")?;
        let drops = raw["drops"].as_u64().with_context(|| format!("no drops watched: {raw}"))?;
        let longest =
            raw["longest"].as_f64().with_context(|| format!("no drops watched: {raw}"))?;
        Ok(Drops {
            drops,
            longest: Duration::from_secs_f64(longest.max(0.0) / 1000.0),
            down: !raw["down"].is_null(),
        })
    }

    /// Ends the session (closing its Chromium).
    fn close(self) -> Result<()> {
        let path = format!("/session/{}", self.session);
        self.driver.delete(&path)?;
        Ok(())
    }
}

/// How far apart the two pages' hearts are, in beats: both projected to
/// the later of their two server times with the page's own phase math
/// (`shared`'s).
fn gap(a: &PageState, b: &PageState) -> f64 {
    let at = a.server_now.max(b.server_now);
    phase::difference(
        phase::project(a.phase, a.bpm, a.server_now, at),
        phase::project(b.phase, b.bpm, b.server_now, at),
    )
    .abs()
}

/// Each instance's `heartsync_connections_open`.
fn open_counts(cluster: &Cluster) -> Result<Vec<f64>> {
    cluster.instances.iter().map(|instance| connections_open(instance.addr)).collect()
}

/// Each instance's open connections once they hold still (two readings in
/// a row the same), minus `base`, when they add up to `pages` more.
fn placement(cluster: &Cluster, base: &[f64], pages: f64) -> Result<Vec<f64>> {
    let mut last: Option<Vec<f64>> = None;
    poll(PAGE_PATIENCE, &format!("{pages} page sockets settled on the instances"), || {
        let added: Vec<f64> =
            open_counts(cluster)?.iter().zip(base).map(|(now, before)| now - before).collect();
        let settled = added.iter().all(|n| *n >= 0.0)
            && added.iter().sum::<f64>() == pages
            && last.as_ref() == Some(&added);
        last = Some(added.clone());
        Ok(settled.then_some(added))
    })
    .with_context(|| format!("last added per instance: {last:?}"))
}

/// An instance holding one of the page sockets, other than `not`.
fn holder(added: &[f64], not: Option<usize>) -> Option<usize> {
    (0..added.len()).find(|&i| added[i] >= 1.0 && Some(i) != not)
}

/// Waits until both pages count two hearts, then until they beat as one,
/// the first reading in step within [`BEAT_PATIENCE`] of `connected` (when
/// the later page connected); the last gap (in beats).
fn beat_as_one(a: &Page, b: &Page, connected: Instant) -> Result<f64> {
    for page in [a, b] {
        page.wait_for_text("status", "connected", |text| text.starts_with("connected"))?;
    }
    for page in [a, b] {
        page.wait_for_text("hearts", "2", |text| text == "2")?;
    }
    let mut streak = 0;
    let mut last = None;
    while streak < READINGS_IN_A_ROW {
        ensure!(
            connected.elapsed() < BEAT_PATIENCE || streak > 0,
            "the hearts did not beat together within {BEAT_PATIENCE:?}; last (gap, a, b): {last:?}"
        );
        let started = Instant::now();
        let (x, y) = (
            a.state()?.context("page a has drawn nothing")?,
            b.state()?.context("page b has drawn nothing")?,
        );
        let gap = gap(&x, &y);
        streak = if gap < IN_STEP { streak + 1 } else { 0 };
        last = Some((gap, x, y));
        std::thread::sleep(Duration::from_millis(100).saturating_sub(started.elapsed()));
    }
    Ok(last.map_or(0.0, |(gap, _, _)| gap))
}

/// Two pages through nginx, on different instances, in one room.
pub(super) struct Pages<'d> {
    a: Page<'d>,
    b: Page<'d>,
    /// The instances (by index) holding page a and page b.
    on: (usize, usize),
    /// When the later page connected: the beat's clock starts there.
    connected: Instant,
}

/// chromedriver for the check (its log with the cluster's), holding the
/// pages' sessions.
pub(super) struct Driver(Chromedriver);

impl Driver {
    pub(super) fn start(cluster: &Cluster) -> Result<Self> {
        Chromedriver::start(&cluster.dir.0.join("logs")).map(Driver)
    }

    /// Opens both pages of one room through nginx and reloads the second
    /// until it is on another instance than the first; prints where they
    /// landed.
    pub(super) fn land_apart(&self, cluster: &Cluster) -> Result<Pages<'_>> {
        let url = format!("http://{}/r/cluster-beat-{}", cluster.nginx_addr, std::process::id());
        let (a, b) = (self.0.open_page()?, self.0.open_page()?);
        // What other clients hold (none, unless a socket of an earlier
        // step is still closing: the reading waits for it to hold still).
        let mut last = None;
        let base = poll(PAGE_PATIENCE, "the instances' connection counts held still", || {
            let counts = open_counts(cluster)?;
            let still = last.as_ref() == Some(&counts);
            last = Some(counts.clone());
            Ok(still.then_some(counts))
        })?;
        a.goto(&url)?;
        a.wait_connected()?;
        let on_a =
            holder(&placement(cluster, &base, 1.0)?, None).context("page a is on no instance")?;
        b.goto(&url)?;
        let mut tries = 1;
        let (on_b, connected) = loop {
            b.wait_connected()?;
            let connected = Instant::now();
            let added = placement(cluster, &base, 2.0)?;
            if let Some(on_b) = holder(&added, Some(on_a)) {
                break (on_b, connected);
            }
            ensure!(
                tries <= RELOADS,
                "nginx sent the second page to heartsync-{} every time ({tries} loads)",
                on_a + 1
            );
            b.reload()?;
            tries += 1;
        };
        println!(
            "          (page a on heartsync-{}, page b on heartsync-{} after {tries} load(s))",
            on_a + 1,
            on_b + 1
        );
        Ok(Pages { a, b, on: (on_a, on_b), connected })
    }
}

impl Pages<'_> {
    /// Both pages fall into one beat (the direct test's criterion).
    pub(super) fn beat_as_one(&self) -> Result<()> {
        let gap = beat_as_one(&self.a, &self.b, self.connected)?;
        println!(
            "          (in step {:.1} s after both connected; last gap {gap:.4} beat)",
            self.connected.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// SIGTERM drains page a's instance: page a is back, on another
    /// instance, within its backoff; page b never noticed; they beat as one
    /// again. The instance is started again afterwards.
    pub(super) fn survive_a_drain(&self, cluster: &mut Cluster) -> Result<()> {
        self.a.watch_drops()?;
        self.b.watch_drops()?;
        let (on_a, on_b) = self.on;
        let process =
            cluster.instances[on_a].process.as_mut().context("page a's instance is not running")?;
        process.signal("TERM")?;
        let status = process
            .wait(CHECK_DRAIN + STOP_PATIENCE)
            .context("page a's instance did not finish draining")?;
        ensure!(status.success(), "the drained instance exited with {status}");
        poll(PAGE_PATIENCE, "page a reconnected after the drain", || {
            let drops = self.a.drops()?;
            Ok((drops.drops >= 1 && !drops.down).then_some(drops))
        })?;
        let reconnected = Instant::now();
        let (a, b) = (self.a.drops()?, self.b.drops()?);
        ensure!(a.drops == 1, "page a dropped {} times, not once: {a:?}", a.drops);
        let most = FIRST_BACKOFF + RECONNECT_ALLOWANCE;
        ensure!(
            a.longest <= most,
            "page a was disconnected for {:?}, more than its backoff ({FIRST_BACKOFF:?}) and \
             a reconnect ({RECONNECT_ALLOWANCE:?})",
            a.longest
        );
        ensure!(b.drops == 0, "page b, on heartsync-{}, lost its connection: {b:?}", on_b + 1);
        let gap = beat_as_one(&self.a, &self.b, reconnected)?;
        println!(
            "          (page a disconnected for {} ms, back on another instance; last gap {gap:.4} beat)",
            a.longest.as_millis()
        );
        cluster.start_instance(on_a)?;
        cluster.wait_for_instance(on_a)
    }

    /// Ends both sessions.
    pub(super) fn close(self) -> Result<()> {
        self.a.close()?;
        self.b.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chromium_flags_are_the_integration_tests_ones() {
        let harness = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/src/browser.rs"
        ))
        .expect("read tests/src/browser.rs");
        let list = harness
            .split_once("const CHROMIUM_ARGS: &[&str] = &[")
            .and_then(|(_, rest)| rest.split_once("];"))
            .expect("tests/src/browser.rs has CHROMIUM_ARGS")
            .0;
        let flags: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
        assert_eq!(flags, CHROMIUM_ARGS);
    }

    /// chromedriver's answer with `status` and `body`, as ureq gives it.
    fn answer(status: u16, body: &str) -> Result<Response<Body>, ureq::Error> {
        let body = Body::builder().mime_type("application/json").data(body.to_string());
        Ok(Response::builder().status(status).body(body).expect("a valid response"))
    }

    #[test]
    fn webdriver_answers_give_their_value_or_the_error_they_name() {
        let value = webdriver_value("POST", "/session", answer(200, r#"{"value":{"ready":true}}"#))
            .expect("a 200 answer");
        assert_eq!(value, json!({ "ready": true }));
        let error = webdriver_value(
            "POST",
            "/session/x/url",
            answer(404, r#"{"value":{"error":"invalid session id","message":"gone"}}"#),
        )
        .expect_err("a 404 answer");
        let error = format!("{error:#}");
        assert!(error.contains("(404") && error.contains("invalid session id"), "{error}");
        let error = webdriver_value("GET", "/status", answer(200, "<html>no</html>"))
            .expect_err("not JSON");
        assert!(format!("{error:#}").contains("not JSON: <html>no</html>"), "{error:#}");
    }

    #[test]
    fn the_gap_projects_both_pages_to_the_later_reading_and_wraps() {
        let state = |phase, server_now| PageState { phase, server_now, bpm: 60.0, connected: true };
        // At 60 bpm a second is a beat: 0.7 at 0 ms is 0.9 at 1200 ms, 0.2
        // of a beat (across the wrap) from 0.1.
        let gap_across = gap(&state(0.7, 0.0), &state(0.1, 1200.0));
        assert!((gap_across - 0.2).abs() < 1e-9, "{gap_across}");
        // Half a second later a heart is half a beat on: in step again.
        let in_step = gap(&state(0.5, 1500.0), &state(0.0, 1000.0));
        assert!(in_step < 1e-9, "{in_step}");
    }

    #[test]
    fn the_holder_is_the_instance_with_a_page_other_than_the_first() {
        assert_eq!(holder(&[0.0, 1.0, 0.0], None), Some(1));
        assert_eq!(holder(&[1.0, 1.0], Some(0)), Some(1));
        assert_eq!(holder(&[2.0, 0.0], Some(0)), None);
    }
}
