//! Colours and ANSI escapes: turns a [`Frame`] into lines of text a terminal
//! shows as a red-to-pink heart, brighter on the beat. Pure string building,
//! so the output is tested without a terminal.

use crate::shape::{self, Cell, Frame};
use std::fmt::Write;

/// Which colours the terminal understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// 24-bit colour (`COLORTERM=truecolor`).
    TrueColor,
    /// The 256-colour palette's 6×6×6 cube, which nearly every terminal has.
    Ansi256,
    /// No colour at all (`NO_COLOR`): the shape alone, in the default colour.
    Plain,
}

impl Palette {
    /// What the environment asks for: nothing under `NO_COLOR` (see
    /// <https://no-color.org>), 24-bit colour when `COLORTERM` says the
    /// terminal has it, and the 256-colour cube otherwise.
    pub fn detect() -> Self {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let colorterm = std::env::var("COLORTERM").unwrap_or_default();
        if set("NO_COLOR") {
            Palette::Plain
        } else if colorterm.contains("truecolor") || colorterm.contains("24bit") {
            Palette::TrueColor
        } else {
            Palette::Ansi256
        }
    }
}

/// A 24-bit colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// The heart's shadow, where the light does not reach.
const SHADOW: Rgb = Rgb(110, 0, 25);
/// The heart's body colour.
const BODY: Rgb = Rgb(200, 10, 50);
/// The glossy highlight.
const HIGHLIGHT: Rgb = Rgb(255, 110, 150);

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    let t = t.clamp(0.0, 1.0);
    let channel = |x: u8, y: u8| (f32::from(x) + (f32::from(y) - f32::from(x)) * t).round() as u8;
    Rgb(channel(a.0, b.0), channel(a.1, b.1), channel(a.2, b.2))
}

/// The colour of a pixel of `lightness` (0 shadow, 1 highlight) when the
/// beat's envelope is `glow` (0 at rest, 1 at the lub).
pub fn colour(lightness: f32, glow: f32) -> Rgb {
    let base = if lightness < 0.5 {
        mix(SHADOW, BODY, lightness * 2.0)
    } else {
        mix(BODY, HIGHLIGHT, (lightness - 0.5) * 2.0)
    };
    // On the beat every pixel flushes towards full red with a little more
    // pink: brighter and more vivid, without washing out to white.
    let flushed = Rgb(255, base.1.saturating_add(40), base.2.saturating_add(50));
    mix(base, flushed, 0.65 * glow)
}

/// Reds and pinks of the 256-colour palette's 6×6×6 cube, in order of
/// brightness. The cube has only six levels a channel, so the nearest cube
/// colour of a smooth gradient jumps in hue (from red to magenta to
/// orange); a ramp of one hue alone, dark red to pale pink, dithered, keeps
/// the heart red and smooth.
const RAMP: [u8; 8] = [52, 88, 124, 160, 196, 203, 210, 217];

/// The 4×4 Bayer matrix: the order in which an ordered dither turns pixels
/// to the brighter of two colours.
const BAYER: [[u8; 4]; 4] = [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]];

/// The colour of the 256-colour palette's cube with index `index` (16-231).
fn cube(index: u8) -> Rgb {
    let level = |v: u8| if v == 0 { 0 } else { 55 + 40 * v };
    let i = index.saturating_sub(16);
    Rgb(level(i / 36), level(i / 6 % 6), level(i % 6))
}

/// How bright a colour looks (Rec. 709 weights, on the 0-255 scale).
fn luminance(Rgb(r, g, b): Rgb) -> f32 {
    0.2126 * f32::from(r) + 0.7152 * f32::from(g) + 0.0722 * f32::from(b)
}

/// The ramp colour for `rgb` at pixel `(x, y)`: of the two ramp colours
/// whose brightness brackets it, the brighter one on the share of pixels
/// (in the Bayer order) that makes the average brightness right.
pub fn ansi256(rgb: Rgb, x: usize, y: usize) -> u8 {
    let wanted = luminance(rgb);
    let upper = RAMP.iter().position(|&i| luminance(cube(i)) >= wanted);
    let (dark, light) = match upper {
        Some(0) => return RAMP[0],
        None => return RAMP[RAMP.len() - 1],
        Some(i) => (RAMP[i - 1], RAMP[i]),
    };
    let (low, high) = (luminance(cube(dark)), luminance(cube(light)));
    let share = (wanted - low) / (high - low);
    let threshold = (f32::from(BAYER[y % 4][x % 4]) + 0.5) / 16.0;
    if share > threshold { light } else { dark }
}

/// A colour as the terminal is told it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ink {
    True(Rgb),
    Indexed(u8),
}

/// How many steps of lightness and of glow 24-bit colour is drawn with.
/// Neighbouring cells then often share a colour, so fewer escapes are sent,
/// and frames while the heart rests come out identical and are skipped; the
/// steps are too fine to see on pixels this coarse.
const STEPS: f32 = 24.0;

/// The ink for a pixel of `lightness` at `(x, y)` (in pixels; the
/// 256-colour dither depends on where it is).
fn ink(palette: Palette, lightness: f32, glow: f32, x: usize, y: usize) -> Ink {
    let step = |v: f32| (v * STEPS).round() / STEPS;
    let rgb = colour(step(lightness), step(glow));
    match palette {
        Palette::TrueColor | Palette::Plain => Ink::True(rgb),
        Palette::Ansi256 => Ink::Indexed(ansi256(rgb, x, y)),
    }
}

/// Writes the SGR parameters that select `ink` (`base` 38 for the
/// foreground, 48 for the background).
fn push_ink(out: &mut String, base: u8, ink: Ink) {
    // Writing to a `String` cannot fail.
    let _ = match ink {
        Ink::True(Rgb(r, g, b)) => write!(out, "{base};2;{r};{g};{b}"),
        Ink::Indexed(index) => write!(out, "{base};5;{index}"),
    };
}

/// How one cell at column `col` of row `row` is drawn: its character and
/// its foreground and background.
fn glyph(
    cell: Cell,
    col: usize,
    row: usize,
    glow: f32,
    palette: Palette,
) -> (char, Option<Ink>, Option<Ink>) {
    if palette == Palette::Plain {
        let ch = match (cell.top, cell.bottom) {
            (Some(_), Some(_)) => '█',
            (Some(_), None) => '▀',
            (None, Some(_)) => '▄',
            (None, None) => ' ',
        };
        return (ch, None, None);
    }
    let top = cell.top.map(|l| ink(palette, l, glow, col, 2 * row));
    let bottom = cell.bottom.map(|l| ink(palette, l, glow, col, 2 * row + 1));
    match (top, bottom) {
        (Some(top), bottom) => ('▀', Some(top), bottom),
        (None, Some(bottom)) => ('▄', Some(bottom), None),
        (None, None) => (' ', None, None),
    }
}

/// Row `row` of `frame` as text: exactly `frame.cols` visible characters,
/// starting and ending with the terminal's default colours. An escape is
/// written only when the foreground or background changes, which keeps a
/// full-screen frame small.
pub fn row(frame: &Frame, row: usize, glow: f32, palette: Palette) -> String {
    let mut out = String::with_capacity(frame.cols * 4);
    // The colours in force; `None` is the terminal's default.
    let (mut fg, mut bg): (Option<Ink>, Option<Ink>) = (None, None);
    for (col, &cell) in frame.row(row).iter().enumerate() {
        let (ch, want_fg, want_bg) = glyph(cell, col, row, glow, palette);
        if ch == ' ' {
            // Blanks are in the default colours, so a row's trailing blanks
            // carry no escapes.
            if (fg, bg) != (None, None) {
                out.push_str("\x1b[0m");
                (fg, bg) = (None, None);
            }
            out.push(ch);
            continue;
        }
        if want_fg != fg {
            if let Some(ink) = want_fg {
                out.push_str("\x1b[");
                push_ink(&mut out, 38, ink);
                out.push('m');
            }
            fg = want_fg;
        }
        if want_bg != bg {
            match want_bg {
                Some(ink) => {
                    out.push_str("\x1b[");
                    push_ink(&mut out, 48, ink);
                    out.push('m');
                }
                None => out.push_str("\x1b[49m"),
            }
            bg = want_bg;
        }
        out.push(ch);
    }
    if (fg, bg) != (None, None) {
        out.push_str("\x1b[0m");
    }
    out
}

/// The still heart that `--static` prints: `width` columns wide at the peak
/// of the beat, with a caption centred under it. Every line ends with a
/// newline.
pub fn still(width: usize, palette: Palette) -> String {
    let unit = width as f64 / (2.0 * shape::X_EXTENT);
    let rows = ((shape::Y_TOP - shape::Y_BOTTOM) * unit / 2.0).ceil() as usize;
    let frame = shape::render(width, rows, unit);
    let mut out = String::new();
    for r in 0..rows {
        out.push_str(row(&frame, r, 1.0, palette).trim_end());
        out.push('\n');
    }
    let caption = "heartsync · many hearts, one beat";
    let pad = width.saturating_sub(caption.chars().count()) / 2;
    let _ = writeln!(out, "\n{}{caption}", " ".repeat(pad));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text with every `ESC [ … m` sequence removed.
    fn visible(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                chars.by_ref().find(|&c| c == 'm');
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn rows_are_exactly_as_wide_as_the_frame() {
        let frame = shape::render(30, 15, shape::fit(30, 15));
        for palette in [Palette::TrueColor, Palette::Ansi256, Palette::Plain] {
            for r in 0..15 {
                let line = row(&frame, r, 0.5, palette);
                assert_eq!(visible(&line).chars().count(), 30, "{palette:?} row {r}");
                assert!(!line.contains('\n'));
            }
        }
    }

    #[test]
    fn colours_are_reset_at_the_end_of_a_row() {
        let frame = shape::render(30, 15, shape::fit(30, 15));
        let line = row(&frame, 7, 0.0, Palette::TrueColor);
        assert!(line.contains("\x1b[38;2;"), "{line:?}");
        assert!(line.ends_with("\x1b[0m") || line.ends_with(' '), "{line:?}");
        assert!(!line.trim_end().ends_with(['▀', '▄']), "reset after the heart");
        assert!(!row(&frame, 7, 0.0, Palette::Plain).contains('\x1b'));
    }

    #[test]
    fn no_color_means_no_escapes_at_all() {
        let text = still(40, Palette::Plain);
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains('█') && text.contains('▄') && text.contains('▀'));
    }

    #[test]
    fn the_beat_brightens_the_heart() {
        let brightness = |Rgb(r, g, b): Rgb| u32::from(r) + u32::from(g) + u32::from(b);
        for lightness in [0.0, 0.3, 0.7, 1.0] {
            assert!(brightness(colour(lightness, 1.0)) > brightness(colour(lightness, 0.0)));
        }
        let Rgb(r, g, b) = colour(0.5, 0.0);
        assert!(r > 150 && g < 60 && b < 100, "rest colour is red, got {r} {g} {b}");
    }

    #[test]
    fn the_256_colour_heart_stays_red_and_pink() {
        assert_eq!(cube(16), Rgb(0, 0, 0));
        assert_eq!(cube(204), Rgb(255, 95, 135));
        assert_eq!(ansi256(cube(160), 3, 1), 160, "a ramp colour is itself");
        assert_eq!(ansi256(Rgb(0, 0, 0), 0, 0), 52, "the darkest red");
        assert_eq!(ansi256(Rgb(255, 255, 255), 0, 0), 217, "the palest pink");
        for lightness in [0.0, 0.3, 0.5, 0.8, 1.0] {
            for glow in [0.0, 1.0] {
                for (x, y) in [(0, 0), (1, 2), (3, 3)] {
                    let index = ansi256(colour(lightness, glow), x, y);
                    let Rgb(r, g, b) = cube(index);
                    assert!(r > g && r >= b, "{lightness} {glow}: {index} is not red or pink");
                }
            }
        }
    }

    #[test]
    fn dithering_keeps_the_average_brightness() {
        // Halfway between two ramp colours, half of a 4×4 tile is each.
        let (dark, light) = (cube(203), cube(210));
        let middle = Rgb(255, 115, 115);
        let share = (luminance(middle) - luminance(dark)) / (luminance(light) - luminance(dark));
        let lit = (0..4).flat_map(|y| (0..4).map(move |x| (x, y)));
        let lit = lit.filter(|&(x, y)| ansi256(middle, x, y) == 210).count();
        assert!((lit as f32 / 16.0 - share).abs() <= 1.0 / 16.0, "{lit} of 16 for {share}");
    }

    #[test]
    fn the_still_heart_is_forty_columns_with_a_caption() {
        let text = still(40, Palette::Ansi256);
        let lines: Vec<String> = text.lines().map(visible).collect();
        let widest = lines.iter().map(|l| l.chars().count()).max().unwrap();
        assert_eq!(widest, 40);
        assert!(lines.last().unwrap().contains("heartsync"));
        assert!(lines.len() > 15 && lines.len() < 25, "{} lines", lines.len());
        assert!(text.ends_with('\n'));
    }
}
