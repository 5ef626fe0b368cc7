//! Drawing: each animation frame asks the session where the heart is (the
//! session steps it: see [`Page::frame`]), draws it (with its ripple and the
//! small hearts of love) on the canvas at the screen's pixel density, and
//! publishes `window.__heartsync` for tests and the curious. [`paint`] is an
//! async loop over gloo-render's animation frames; it ends when its future
//! is dropped (the canvas component aborts it on cleanup), and with it the
//! pending frame and the resize listener.
//!
//! For a person who asked for less motion (`prefers-reduced-motion`), the
//! heart keeps its size and its beat shows as a gentle change of
//! brightness, without the ripple or the small hearts.

use crate::browser;
use crate::heart::{self, Layout};
use crate::page::{Beat, Page};
use crate::particles::{Particles, Sender};
use futures::channel::oneshot;
use gloo_events::EventListener;
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

/// Points on the big heart's outline: smooth at any size.
const OUTLINE_POINTS: usize = 180;

/// Points on a small heart's outline.
const SMALL_OUTLINE_POINTS: usize = 24;

/// Draws the page's heart on `canvas` every animation frame, until dropped.
pub async fn paint(canvas: HtmlCanvasElement, page: Page) {
    let Some(mut painter) = Painter::new(canvas) else {
        web_sys::console::error_1(&"heartsync: the canvas has no 2d context".into());
        return;
    };
    let resized = Rc::new(Cell::new(true));
    let _resize = web_sys::window().map(|window| {
        let resized = resized.clone();
        EventListener::new(&window, "resize", move |_| resized.set(true))
    });
    loop {
        next_frame().await;
        let now = browser::now();
        let Some(beat) = page.frame(now) else {
            return;
        };
        painter.frame(beat, now, resized.replace(false));
    }
}

/// Resolves at the next animation frame; dropping it cancels the request.
async fn next_frame() {
    let (tx, rx) = oneshot::channel();
    let _request = gloo_render::request_animation_frame(move |_| {
        let _ = tx.send(());
    });
    // Only a cancelled request (the page going away) drops the sender.
    let _ = rx.await;
}

/// Everything a frame is drawn with.
struct Painter {
    canvas: HtmlCanvasElement,
    context: CanvasRenderingContext2d,
    /// The canvas's CSS width and height and the device pixel ratio the
    /// backing store was last sized for.
    size: (f64, f64, f64),
    outline: Vec<(f64, f64)>,
    small: Vec<(f64, f64)>,
    particles: Particles,
    /// The person prefers reduced motion: the heart brightens instead of
    /// growing, and nothing flies (read each frame, so a change in the
    /// system's setting takes effect at once).
    still: Option<web_sys::MediaQueryList>,
    /// When (local ms) the previous frame was drawn.
    last: Option<f64>,
    frames: u64,
}

impl Painter {
    fn new(canvas: HtmlCanvasElement) -> Option<Self> {
        let context =
            canvas.get_context("2d").ok().flatten()?.dyn_into::<CanvasRenderingContext2d>().ok()?;
        Some(Self {
            canvas,
            context,
            size: (0.0, 0.0, 1.0),
            outline: heart::outline(OUTLINE_POINTS),
            small: heart::outline(SMALL_OUTLINE_POINTS),
            particles: Particles::default(),
            still: web_sys::window()
                .and_then(|w| w.match_media("(prefers-reduced-motion: reduce)").ok().flatten()),
            last: None,
            frames: 0,
        })
    }

    /// Draws `beat` at local time `now`; `resized` says the window changed
    /// size since the last frame.
    fn frame(&mut self, beat: Beat, now: f64, resized: bool) {
        let dt = self.last.map_or(0.0, |last| (now - last) / 1000.0);
        self.last = Some(now);
        let mut random = browser::random;
        let still = self.still.as_ref().is_some_and(web_sys::MediaQueryList::matches);
        // With reduced motion the taps still count; they just do not fly.
        if beat.bursts.0 > 0 && !still {
            self.particles.burst(clamp_u32(beat.bursts.0), Sender::Me, &mut random);
        }
        if beat.bursts.1 > 0 && !still {
            self.particles.burst(clamp_u32(beat.bursts.1), Sender::Others, &mut random);
        }
        self.particles.step(dt);
        self.fit(resized);
        let pulse = self.draw(beat.phase, still);
        self.frames += 1;
        if self.frames == 1 {
            mark_first_heart();
        }
        publish_state(&beat, self.frames, still, pulse);
    }

    /// Sizes the backing store to the CSS size × devicePixelRatio, so the
    /// heart is sharp on HiDPI screens.
    fn fit(&mut self, resized: bool) {
        let dpr = web_sys::window().map_or(1.0, |w| w.device_pixel_ratio()).max(0.5);
        if !resized && dpr == self.size.2 && self.size.0 > 0.0 {
            return;
        }
        let width = f64::from(self.canvas.client_width().max(1));
        let height = f64::from(self.canvas.client_height().max(1));
        self.size = (width, height, dpr);
        // Canvas dimensions are whole pixels; the casts saturate.
        self.canvas.set_width((width * dpr).round() as u32);
        self.canvas.set_height((height * dpr).round() as u32);
    }

    /// Draws the heart at `phase`; `still` keeps its size and shows the beat
    /// as brightness. Returns the heart's size relative to rest.
    fn draw(&self, phase: f64, still: bool) -> f64 {
        let (width, height, dpr) = self.size;
        let c = &self.context;
        // Transforms are the only fallible-looking calls here and cannot fail
        // with finite numbers; a failed frame would simply be skipped.
        let _ = c.set_transform(dpr, 0.0, 0.0, dpr, 0.0, 0.0);
        c.clear_rect(0.0, 0.0, width, height);
        let layout = Layout::fit(width, height);
        let envelope = heart::envelope(phase);
        let pulse = if still { 1.0 } else { heart::pulse_scale(phase) };
        let scale = layout.unit * pulse;

        if let Some((radius, alpha)) = heart::ripple(phase).filter(|_| !still) {
            c.set_global_alpha(alpha);
            c.set_stroke_style_str("#ff4d7e");
            c.set_line_width(2.0);
            trace(c, &self.outline, layout.x, layout.y, layout.unit * radius, 0.0);
            c.stroke();
            c.set_global_alpha(1.0);
        }

        c.save();
        trace(c, &self.outline, layout.x, layout.y, scale, 0.0);
        c.set_shadow_color("rgba(255, 40, 100, 0.55)");
        c.set_shadow_blur((18.0 + 42.0 * envelope) * layout.unit / 150.0);
        if let Ok(fill) = c.create_radial_gradient(
            layout.x - 0.35 * scale,
            layout.y - 0.45 * scale,
            0.05 * scale,
            layout.x,
            layout.y,
            1.3 * scale,
        ) {
            for (offset, color) in
                [(0.0, "#ff9cc2"), (0.35, "#ff3d7f"), (0.75, "#d3104d"), (1.0, "#7d0026")]
            {
                let _ = fill.add_color_stop(offset, color);
            }
            c.set_fill_style_canvas_gradient(&fill);
        } else {
            c.set_fill_style_str("#ff3d7f");
        }
        c.fill();
        // A soft highlight on the left lobe, kept inside the heart.
        c.set_shadow_blur(0.0);
        c.clip();
        if let Ok(gloss) = c.create_radial_gradient(
            layout.x - 0.45 * scale,
            layout.y - 0.4 * scale,
            0.0,
            layout.x - 0.45 * scale,
            layout.y - 0.4 * scale,
            0.6 * scale,
        ) {
            let _ = gloss.add_color_stop(0.0, "rgba(255, 255, 255, 0.35)");
            let _ = gloss.add_color_stop(1.0, "rgba(255, 255, 255, 0)");
            c.set_fill_style_canvas_gradient(&gloss);
            c.fill_rect(layout.x - 1.5 * scale, layout.y - 1.5 * scale, 3.0 * scale, 3.0 * scale);
        }
        if still {
            // The beat as light: a soft white wash over the heart at the
            // lub-dub's peaks, and nothing moving.
            // Through the global alpha (put back by `restore`) rather than
            // an `rgba(…)` string made each frame: no float formatting in
            // the bundle for it.
            c.set_global_alpha(0.28 * envelope);
            c.set_fill_style_str("#ffebf2");
            c.fill_rect(layout.x - 1.5 * scale, layout.y - 1.5 * scale, 3.0 * scale, 3.0 * scale);
        }
        c.restore();

        for p in self.particles.iter() {
            c.set_global_alpha(p.alpha());
            c.set_fill_style_str(match p.sender {
                // Light enough to stand out over the big heart.
                Sender::Me => "#ffe0ea",
                Sender::Others => "#ffc56e",
            });
            let x = layout.x + p.x * layout.unit;
            let y = layout.y + p.y * layout.unit;
            trace(c, &self.small, x, y, p.size * layout.unit, p.tilt);
            c.fill();
        }
        c.set_global_alpha(1.0);
        pulse
    }
}

/// Traces `outline` (heart units) centred on `(x, y)`, scaled by `scale`
/// pixels a unit and tilted by `tilt` radians, as the current path.
fn trace(
    c: &CanvasRenderingContext2d,
    outline: &[(f64, f64)],
    x: f64,
    y: f64,
    scale: f64,
    tilt: f64,
) {
    let (sin, cos) = tilt.sin_cos();
    c.begin_path();
    for (i, &(px, py)) in outline.iter().enumerate() {
        let (qx, qy) = (x + scale * (px * cos - py * sin), y + scale * (px * sin + py * cos));
        if i == 0 {
            c.move_to(qx, qy);
        } else {
            c.line_to(qx, qy);
        }
    }
    c.close_path();
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Marks the first drawn heart on the page's performance timeline
/// (`heartsync:first-heart`), so a test reads how long after navigation
/// the person saw it.
fn mark_first_heart() {
    if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
        let _ = performance.mark("heartsync:first-heart");
    }
}

/// Sets `window.__heartsync`: the state a browser test reads each frame.
fn publish_state(beat: &Beat, frames: u64, still: bool, pulse: f64) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let state = js_sys::Object::new();
    let fields: [(&str, JsValue); 13] = [
        ("phase", beat.phase.into()),
        ("clock_offset", beat.clock_offset.map_or(JsValue::NULL, JsValue::from)),
        ("server_now", beat.server_now.into()),
        ("bpm", beat.bpm.into()),
        ("hearts", beat.hearts.into()),
        ("coherence", beat.coherence.into()),
        ("connected", beat.connected.into()),
        // JavaScript numbers hold these counts exactly up to 2^53.
        ("frames", (frames as f64).into()),
        ("love_total", (beat.love_total as f64).into()),
        ("love_sent", (beat.love_sent as f64).into()),
        ("love_acked", (beat.love_acked as f64).into()),
        ("still", still.into()),
        ("pulse", pulse.into()),
    ];
    for (key, value) in fields {
        let _ = js_sys::Reflect::set(&state, &key.into(), &value);
    }
    let _ = js_sys::Reflect::set(&window, &"__heartsync".into(), &state);
}
