//! Drawing: each animation frame steps the page's heart, draws it (with its
//! ripple and the small hearts of love) on the canvas at the screen's pixel
//! density, and publishes `window.__heartsync` for tests and the curious.
//! [`Animation`] owns the requestAnimationFrame loop, the resize listener and
//! a slow ticker that keeps the heart beating (and in step with the room)
//! while the browser draws no frames, as in a background tab; dropping it
//! stops all three.

use crate::browser::{self, Listener, Timer};
use crate::connection::SharedPage;
use crate::heart::{self, Layout};
use crate::particles::{Particles, Sender};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

/// Points on the big heart's outline: smooth at any size.
const OUTLINE_POINTS: usize = 180;

/// Points on a small heart's outline.
const SMALL_OUTLINE_POINTS: usize = 24;

/// How often the ticker looks whether frames are still being drawn (ms).
const TICK_MS: f64 = 100.0;

/// Without a frame for this long (ms), the ticker steps the heart itself.
const FRAMELESS_MS: f64 = 250.0;

/// The frame callback, shared between the loop and its owner.
type FrameCallback = Rc<RefCell<Option<Closure<dyn FnMut()>>>>;

/// A running requestAnimationFrame loop drawing on one canvas.
pub struct Animation {
    /// The id of the requested frame, to cancel it.
    request: Rc<Cell<Option<i32>>>,
    /// The frame callback; it reaches itself through a weak reference to
    /// request the next frame, so dropping this ends the loop.
    callback: FrameCallback,
    _resize: Option<Listener>,
    _ticker: Option<Timer>,
}

impl Animation {
    /// Starts drawing `page` on `canvas`; `publish` is called after every
    /// frame so the components can show what changed.
    pub fn start(
        canvas: HtmlCanvasElement,
        page: SharedPage,
        publish: Rc<dyn Fn()>,
    ) -> Option<Self> {
        let window = web_sys::window()?;
        let context =
            canvas.get_context("2d").ok().flatten()?.dyn_into::<CanvasRenderingContext2d>().ok()?;
        let resized = Rc::new(Cell::new(true));
        let resize = Listener::new(&window, "resize", {
            let resized = resized.clone();
            move |_| resized.set(true)
        });
        let painter = Rc::new(RefCell::new(Painter {
            canvas,
            context,
            page,
            publish,
            resized,
            size: (0.0, 0.0, 1.0),
            outline: heart::outline(OUTLINE_POINTS),
            small: heart::outline(SMALL_OUTLINE_POINTS),
            particles: Particles::default(),
            last: None,
            frames: 0,
        }));
        let ticker = Timer::interval(TICK_MS, {
            let painter = painter.clone();
            move || {
                if let Ok(mut painter) = painter.try_borrow_mut() {
                    painter.tick();
                }
            }
        });
        let request = Rc::new(Cell::new(None));
        let callback: FrameCallback = Rc::new(RefCell::new(None));
        let this = Rc::downgrade(&callback);
        let next = request.clone();
        *callback.borrow_mut() = Some(Closure::<dyn FnMut()>::new(move || {
            if let Ok(mut painter) = painter.try_borrow_mut() {
                painter.frame();
            }
            if let Some(callback) = this.upgrade() {
                next.set(request_frame(&callback));
            }
        }));
        request.set(request_frame(&callback));
        Some(Animation { request, callback, _resize: resize, _ticker: ticker })
    }
}

fn request_frame(callback: &RefCell<Option<Closure<dyn FnMut()>>>) -> Option<i32> {
    let window = web_sys::window()?;
    let callback = callback.borrow();
    window.request_animation_frame(callback.as_ref()?.as_ref().unchecked_ref()).ok()
}

impl Drop for Animation {
    fn drop(&mut self) {
        if let (Some(window), Some(id)) = (web_sys::window(), self.request.take()) {
            // Cancelling a frame that already ran is harmless.
            let _ = window.cancel_animation_frame(id);
        }
        self.callback.borrow_mut().take();
    }
}

/// Everything one frame needs.
struct Painter {
    canvas: HtmlCanvasElement,
    context: CanvasRenderingContext2d,
    page: SharedPage,
    publish: Rc<dyn Fn()>,
    /// Set by the resize listener: size the backing store again.
    resized: Rc<Cell<bool>>,
    /// The canvas's CSS width and height and the device pixel ratio the
    /// backing store was last sized for.
    size: (f64, f64, f64),
    outline: Vec<(f64, f64)>,
    small: Vec<(f64, f64)>,
    particles: Particles,
    /// When (local ms) the previous frame was drawn.
    last: Option<f64>,
    frames: u64,
}

/// What a frame learned from the page state.
struct Beat {
    phase: f64,
    server_now: f64,
    bpm: f64,
    hearts: u32,
    coherence: f64,
    connected: bool,
    love_total: u64,
    love_sent: u64,
    love_acked: u64,
}

impl Painter {
    fn frame(&mut self) {
        let now = browser::now();
        let dt = self.last.map_or(0.0, |last| (now - last) / 1000.0);
        self.last = Some(now);
        let beat = self.step(now);
        self.particles.step(dt);
        self.fit();
        self.draw(beat.phase);
        self.frames += 1;
        publish_state(&beat, self.frames);
        (self.publish)();
    }

    /// Without animation frames (a hidden tab), keeps the heart stepping, so
    /// its reports follow the room, and `window.__heartsync` current.
    fn tick(&mut self) {
        let now = browser::now();
        if self.last.is_some_and(|last| now - last < FRAMELESS_MS) {
            return;
        }
        let beat = self.step(now);
        publish_state(&beat, self.frames);
    }

    /// Steps the heart to `now` and takes the love bursts to draw.
    fn step(&mut self, now: f64) -> Beat {
        let Ok(mut page) = self.page.try_borrow_mut() else {
            // Never expected (nothing else runs during a frame), but a frame
            // is not worth a panic.
            return self.idle_beat(now);
        };
        let connected = page.link.is_connected();
        let session = &mut page.session;
        let server_now = session.clock.server_time(now);
        let phase = session.heart.step(now, server_now);
        let (mine, others) = session.take_bursts();
        let view = session.view();
        let beat = Beat {
            phase,
            // Before the first clock sync the page's own clock, close to Unix
            // time, is the best guess of the server's.
            server_now: server_now.unwrap_or(now),
            bpm: session.heart.bpm(),
            hearts: view.hearts,
            coherence: view.coherence,
            connected,
            love_total: session.love.total().unwrap_or(0),
            love_sent: session.love.taps(),
            love_acked: session.love.acked(),
        };
        drop(page);
        let mut random = browser::random;
        if mine > 0 {
            self.particles.burst(clamp_u32(mine), Sender::Me, &mut random);
        }
        if others > 0 {
            self.particles.burst(clamp_u32(others), Sender::Others, &mut random);
        }
        beat
    }

    fn idle_beat(&self, now: f64) -> Beat {
        Beat {
            phase: 0.0,
            server_now: now,
            bpm: crate::sync::DEFAULT_BPM,
            hearts: 0,
            coherence: 0.0,
            connected: false,
            love_total: 0,
            love_sent: 0,
            love_acked: 0,
        }
    }

    /// Sizes the backing store to the CSS size × devicePixelRatio, so the
    /// heart is sharp on HiDPI screens.
    fn fit(&mut self) {
        let dpr = web_sys::window().map_or(1.0, |w| w.device_pixel_ratio()).max(0.5);
        if !self.resized.replace(false) && dpr == self.size.2 && self.size.0 > 0.0 {
            return;
        }
        let width = f64::from(self.canvas.client_width().max(1));
        let height = f64::from(self.canvas.client_height().max(1));
        self.size = (width, height, dpr);
        // Canvas dimensions are whole pixels; the casts saturate.
        self.canvas.set_width((width * dpr).round() as u32);
        self.canvas.set_height((height * dpr).round() as u32);
    }

    fn draw(&self, phase: f64) {
        let (width, height, dpr) = self.size;
        let c = &self.context;
        // Transforms are the only fallible-looking calls here and cannot fail
        // with finite numbers; a failed frame would simply be skipped.
        let _ = c.set_transform(dpr, 0.0, 0.0, dpr, 0.0, 0.0);
        c.clear_rect(0.0, 0.0, width, height);
        let layout = Layout::fit(width, height);
        let envelope = heart::envelope(phase);
        let scale = layout.unit * heart::pulse_scale(phase);

        if let Some((radius, alpha)) = heart::ripple(phase) {
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

/// Sets `window.__heartsync`: the state a browser test reads each frame.
fn publish_state(beat: &Beat, frames: u64) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let state = js_sys::Object::new();
    let fields: [(&str, JsValue); 10] = [
        ("phase", beat.phase.into()),
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
    ];
    for (key, value) in fields {
        let _ = js_sys::Reflect::set(&state, &key.into(), &value);
    }
    let _ = js_sys::Reflect::set(&window, &"__heartsync".into(), &state);
}
