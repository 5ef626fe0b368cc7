//! The heart's shape on a grid of terminal cells.
//!
//! The heart is the implicit curve `(x² + y² − 1)³ − x²y³ ≤ 0` (y up), in
//! "heart units": it spans `±X_EXTENT` across and `Y_BOTTOM..Y_TOP` up. A
//! terminal cell is about twice as tall as it is wide, so each cell holds two
//! square "pixels", its top and bottom half (drawn with `▀` and `▄` by
//! [`crate::paint`]). Pure: a frame is computed without a terminal.

/// Half the heart's width: the largest `|x|` inside the curve.
pub const X_EXTENT: f64 = 1.139;

/// The lowest `y` inside the curve: the heart's tip.
pub const Y_BOTTOM: f64 = -1.0;

/// The highest `y` inside the curve: the tops of the two lobes.
pub const Y_TOP: f64 = 1.237;

/// Whether the point `(x, y)` (heart units, y up) is inside the heart.
pub fn inside(x: f64, y: f64) -> bool {
    let r = x * x + y * y - 1.0;
    r * r * r - x * x * y * y * y <= 0.0
}

/// How light the heart is at `(x, y)`, in `[0, 1]`: a glossy highlight on the
/// upper left lobe, darkening towards the tip, as a light from above-left
/// would make it.
fn lightness(x: f64, y: f64) -> f32 {
    let from_highlight = (x + 0.45).hypot(y - 0.6);
    (1.0 - from_highlight / 2.1).clamp(0.0, 1.0).powf(1.6) as f32
}

/// One terminal cell: the lightness of its top and bottom halves, or `None`
/// where that half is outside the heart.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cell {
    /// The upper half of the cell.
    pub top: Option<f32>,
    /// The lower half of the cell.
    pub bottom: Option<f32>,
}

impl Cell {
    /// Whether any part of the cell is inside the heart.
    pub fn is_filled(&self) -> bool {
        self.top.is_some() || self.bottom.is_some()
    }
}

/// The heart drawn on `cols × rows` cells, row by row from the top.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Width in cells.
    pub cols: usize,
    /// Height in cells (each holds two pixels, one above the other).
    pub rows: usize,
    /// `rows · cols` cells, row-major.
    cells: Vec<Cell>,
}

impl Frame {
    /// The cell at column `col` of row `row` (both from 0 at the top left).
    pub fn cell(&self, col: usize, row: usize) -> Cell {
        self.cells.get(row * self.cols + col).copied().unwrap_or_default()
    }

    /// The cells of row `row`, left to right.
    pub fn row(&self, row: usize) -> &[Cell] {
        self.cells.get(row * self.cols..(row + 1) * self.cols).unwrap_or(&[])
    }

    /// How many cells are at least partly inside the heart.
    pub fn filled(&self) -> usize {
        self.cells.iter().filter(|c| c.is_filled()).count()
    }
}

/// The most pixels per heart unit at which the whole heart fits in
/// `cols × rows` cells. Horizontally a pixel is a column; vertically it is
/// half a row.
pub fn fit(cols: usize, rows: usize) -> f64 {
    let across = cols as f64 / (2.0 * X_EXTENT);
    let up = 2.0 * rows as f64 / (Y_TOP - Y_BOTTOM);
    across.min(up)
}

/// The heart centred in `cols × rows` cells at `unit` pixels per heart unit
/// (use [`fit`] for the largest that fits; a larger one is cropped).
pub fn render(cols: usize, rows: usize, unit: f64) -> Frame {
    let unit = if unit.is_finite() && unit > 0.0 { unit } else { 1.0 };
    let y_middle = (Y_TOP + Y_BOTTOM) / 2.0;
    // Pixel centres are measured from the middle of the grid, so column `c`
    // and column `cols − 1 − c` land on exactly opposite `x`: the heart comes
    // out symmetric whatever the width.
    let x_of = |col: usize| (col as f64 + 0.5 - cols as f64 / 2.0) / unit;
    let y_of = |pixel_row: usize| y_middle - (pixel_row as f64 + 0.5 - rows as f64) / unit;
    let pixel = |col: usize, pixel_row: usize| {
        let (x, y) = (x_of(col), y_of(pixel_row));
        inside(x, y).then(|| lightness(x, y))
    };
    let cells = (0..rows)
        .flat_map(|row| (0..cols).map(move |col| (col, row)))
        .map(|(col, row)| Cell { top: pixel(col, 2 * row), bottom: pixel(col, 2 * row + 1) })
        .collect();
    Frame { cols, rows, cells }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_has_its_landmarks() {
        assert!(inside(0.0, 0.0), "centre");
        assert!(inside(0.0, -0.99) && !inside(0.0, -1.01), "the tip");
        assert!(!inside(0.0, 1.01), "the dip between the lobes");
        assert!(inside(0.6, 1.0) && inside(-0.6, 1.0), "both lobes");
        assert!(!inside(1.2, 0.0) && !inside(0.0, 1.3), "outside");
    }

    #[test]
    fn extents_bound_the_curve() {
        let steps = 600;
        let mut seen = (0.0f64, f64::MAX, f64::MIN);
        for i in 0..=steps {
            for j in 0..=steps {
                let x = -1.5 + 3.0 * i as f64 / steps as f64;
                let y = -1.5 + 3.0 * j as f64 / steps as f64;
                if inside(x, y) {
                    seen = (seen.0.max(x.abs()), seen.1.min(y), seen.2.max(y));
                }
            }
        }
        assert!((seen.0 - X_EXTENT).abs() < 0.01, "x extent {}", seen.0);
        assert!((seen.1 - Y_BOTTOM).abs() < 0.01, "bottom {}", seen.1);
        assert!((seen.2 - Y_TOP).abs() < 0.01, "top {}", seen.2);
    }

    #[test]
    fn centre_is_filled_and_corners_are_empty() {
        let frame = render(40, 20, fit(40, 20));
        assert!(frame.cell(20, 10).is_filled() && frame.cell(19, 10).is_filled());
        for (col, row) in [(0, 0), (39, 0), (0, 19), (39, 19)] {
            assert!(!frame.cell(col, row).is_filled(), "corner ({col}, {row})");
        }
    }

    #[test]
    fn a_bigger_scale_fills_more_cells() {
        let unit = fit(60, 30);
        let sizes: Vec<usize> =
            [0.5, 0.8, 1.0].iter().map(|s| render(60, 30, unit * s).filled()).collect();
        assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2], "{sizes:?}");
    }

    #[test]
    fn the_heart_is_left_right_symmetric() {
        for (cols, rows) in [(40, 20), (41, 17), (100, 36)] {
            let frame = render(cols, rows, fit(cols, rows));
            for row in 0..rows {
                for col in 0..cols {
                    let (left, right) = (frame.cell(col, row), frame.cell(cols - 1 - col, row));
                    assert_eq!(
                        (left.top.is_some(), left.bottom.is_some()),
                        (right.top.is_some(), right.bottom.is_some()),
                        "{cols}x{rows}: cell ({col}, {row})"
                    );
                }
            }
        }
    }

    #[test]
    fn a_fitted_heart_touches_the_narrower_sides_but_is_not_cropped() {
        // 40 columns are the binding constraint in 40 × 40: the heart spans
        // the width, and the top and bottom rows stay empty.
        let frame = render(40, 40, fit(40, 40));
        let filled_cols: Vec<usize> =
            (0..40).filter(|&c| (0..40).any(|r| frame.cell(c, r).is_filled())).collect();
        assert_eq!((filled_cols.first(), filled_cols.last()), (Some(&0), Some(&39)));
        assert!(frame.row(0).iter().all(|c| !c.is_filled()));
        assert!(frame.row(39).iter().all(|c| !c.is_filled()));
    }

    #[test]
    fn lightness_is_in_range() {
        let frame = render(50, 25, fit(50, 25));
        for row in 0..25 {
            for cell in frame.row(row) {
                for l in [cell.top, cell.bottom].into_iter().flatten() {
                    assert!((0.0..=1.0).contains(&l));
                }
            }
        }
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        assert_eq!(render(0, 0, fit(0, 0)).filled(), 0);
        assert_eq!(render(3, 0, f64::NAN).row(0), &[]);
        let _ = render(1, 1, 1e9);
    }
}
