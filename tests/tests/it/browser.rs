//! The real page in headless Chromium against the real server: it connects,
//! shows its room, draws its heart, and hearts in one room beat as one.
//!
//! These need the built page (`cargo xtask test` builds it) and Debian's
//! chromium and chromedriver (`cargo xtask install --test`).

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use shared::phase::difference;
use tests::browser::{Browser, PageState, serve_page, serve_page_on, take_turn};
use tests::wait_until;

/// Every browser test ends within this, passing or failing.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// How close two hearts must be, in beats, to count as beating together.
const TOGETHER: f64 = 0.02;

/// How soon after both pages connect their hearts must beat together.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(10);

/// Runs a browser test body within [`TEST_LIMIT`], one browser test at a
/// time.
async fn bounded(body: impl Future<Output = Result<()>>) {
    let _turn = take_turn().await;
    match tokio::time::timeout(TEST_LIMIT, body).await {
        Ok(result) => result.expect("browser test"),
        Err(_) => panic!("browser test took longer than {TEST_LIMIT:?}"),
    }
}

/// A room name no other test uses.
fn fresh_room(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// How far apart the two pages' hearts are, in beats: both phases projected
/// to the later page's instant. The pages are read in quick succession.
async fn phase_gap(a: &Browser, b: &Browser) -> Result<(f64, PageState, PageState)> {
    let (first, second) = (a.state().await?, b.state().await?);
    let at = first.server_now.max(second.server_now);
    let gap = difference(first.phase_at(at), second.phase_at(at)).abs();
    Ok((gap, first, second))
}

/// Waits until the page's frame counter moves and its canvas has something
/// drawn at the centre.
async fn check_drawing(browser: &Browser, name: &str) -> Result<()> {
    let before = wait_until(Duration::from_secs(5), "a first frame", || browser.state())
        .await
        .with_context(|| format!("page {name}"))?
        .frames;
    wait_until(Duration::from_secs(5), "the frame count to rise", || async {
        let now = browser.state().await?.frames;
        ensure!(now > before, "still {now} frames");
        Ok(())
    })
    .await
    .with_context(|| format!("page {name}"))?;
    wait_until(Duration::from_secs(5), "a drawn canvas centre", || async {
        let alpha = browser.canvas_centre_alpha().await?;
        ensure!(alpha > 0, "the centre of the canvas is transparent");
        Ok(())
    })
    .await
    .with_context(|| format!("page {name}"))
}

/// Prints past the test harness's capture, so the number shows in every run
/// (CI's log included), not only with `--nocapture`.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_in_a_room_beat_as_one() {
    bounded(async {
        let server = serve_page().await?;
        let url = server.http_url(&format!("/r/{}", fresh_room("beat")));
        let (a, b) = tokio::try_join!(Browser::start(), Browser::start())?;
        tokio::try_join!(a.goto(&url), b.goto(&url))?;

        for (name, page) in [("a", &a), ("b", &b)] {
            page.wait_for_text("status", "connected", |text| text.starts_with("connected"))
                .await
                .with_context(|| format!("page {name}"))?;
        }
        let connected = Instant::now();

        for (name, page) in [("a", &a), ("b", &b)] {
            page.wait_for_text("hearts", "2", |text| text == "2")
                .await
                .with_context(|| format!("page {name}"))?;
            check_drawing(page, name).await?;
        }

        // Both must read under the threshold three readings running (taken
        // every 100 ms), so a chance crossing of two drifting hearts does
        // not count.
        let mut readings = tokio::time::interval(Duration::from_millis(100));
        let mut streak: Vec<(Duration, f64)> = Vec::new();
        let mut last = None;
        while streak.len() < 3 {
            readings.tick().await;
            let elapsed = connected.elapsed();
            ensure!(
                elapsed <= CONVERGENCE_LIMIT || !streak.is_empty(),
                "the hearts did not beat together within {CONVERGENCE_LIMIT:?} of both pages \
                 connecting; last reading (gap, a, b): {last:?}"
            );
            let reading = phase_gap(&a, &b).await?;
            if reading.0 < TOGETHER {
                streak.push((elapsed, reading.0));
            } else {
                streak.clear();
            }
            last = Some(reading);
        }
        let (took, gap) = streak[0];

        // Once together, they stay together.
        let mut settled = gap;
        for _ in 0..10 {
            readings.tick().await;
            let reading = phase_gap(&a, &b).await?;
            ensure!(
                reading.0 < TOGETHER,
                "the hearts drifted apart after beating together; (gap, a, b): {reading:?}"
            );
            settled = reading.0;
        }
        report(&format!(
            "browser: two hearts beat together (gap under {TOGETHER} beat) {:.2} s after both \
             pages connected; gap then {gap:.4}, 1 s later {settled:.4}",
            took.as_secs_f64()
        ));

        a.close().await?;
        b.close().await?;
        server.shutdown().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_connection_state_and_room() {
    bounded(async {
        let server = serve_page().await?;
        let browser = Browser::start().await?;
        browser.goto(&server.http_url("/")).await?;

        browser.wait_for_text("status", "connected", |text| text.starts_with("connected")).await?;
        browser
            .wait_for_text("hearts", "at least 1", |text| {
                text.parse::<u32>().is_ok_and(|hearts| hearts >= 1)
            })
            .await?;
        let state = wait_until(Duration::from_secs(5), "a connected frame", || async {
            let state = browser.state().await?;
            ensure!(state.connected, "the page reports connected = false");
            Ok(state)
        })
        .await?;
        ensure!(state.hearts >= 1.0, "window.__heartsync.hearts is {}", state.hearts);

        // `/` is the room `main`: a protocol client there counts as a second heart.
        let (client, _, _) = server.join("/ws/main").await;
        browser
            .wait_for_text("hearts", "2 with a protocol client in `main`", |text| text == "2")
            .await?;
        client.close().await;

        browser.close().await?;
        server.shutdown().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_in_one_page_raises_the_total_in_the_other() {
    bounded(async {
        let server = serve_page().await?;
        let url = server.http_url(&format!("/r/{}", fresh_room("love")));
        let (a, b) = tokio::try_join!(Browser::start(), Browser::start())?;
        tokio::try_join!(a.goto(&url), b.goto(&url))?;
        for page in [&a, &b] {
            page.wait_for_text("hearts", "2", |text| text == "2").await?;
            page.wait_for_text("love", "0", |text| text == "0").await?;
        }
        for _ in 0..3 {
            a.click("love-button").await?;
        }
        b.wait_for_text("love", "3 (a's taps)", |text| text == "3").await?;
        let acked = wait_until(Duration::from_secs(5), "a's taps to be acknowledged", || async {
            let state = a.state().await?;
            let acked = state.raw.get("love_acked").and_then(serde_json::Value::as_f64);
            ensure!(acked == Some(3.0), "love_acked is {acked:?}");
            Ok(3)
        })
        .await?;
        report(&format!("browser: 3 taps in page a acknowledged ({acked}) and shown in page b"));
        a.close().await?;
        b.close().await?;
        server.shutdown().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_by_itself_after_a_server_restart() {
    bounded(async {
        let server = serve_page().await?;
        let addr = server.addr;
        let room = fresh_room("phoenix");
        let browser = Browser::start().await?;
        browser.goto(&server.http_url(&format!("/r/{room}"))).await?;
        browser.wait_for_text("status", "connected", |text| text.starts_with("connected")).await?;
        browser.wait_for_text("hearts", "1", |text| text == "1").await?;

        server.shutdown().await?;
        browser
            .wait_for_text("status", "reconnecting", |text| !text.starts_with("connected"))
            .await?;
        let down = Instant::now();

        // The same address again: a new server, knowing nothing of the page.
        let server = serve_page_on(addr).await?;
        browser
            .wait_for_text("status", "connected again", |text| text.starts_with("connected"))
            .await
            .context("the page did not reconnect by itself")?;
        browser.wait_for_text("hearts", "1 again", |text| text == "1").await?;
        let (client, _, _) = server.join(&format!("/ws/{room}")).await;
        browser.wait_for_text("hearts", "2 with a protocol client", |text| text == "2").await?;
        report(&format!(
            "browser: the page reconnected {:.1} s after the server went away",
            down.elapsed().as_secs_f64()
        ));
        client.close().await;
        browser.close().await?;
        server.shutdown().await
    })
    .await;
}
