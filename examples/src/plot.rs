//! Line charts as PNG with `plotters`: forecasts, hydrographs, loss curves.

use crate::error::{PipelineError, Result};
use plotters::prelude::*;
use std::path::Path;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    /// The legend label.
    pub label: &'a str,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
}

impl<'a> Line<'a> {
    /// A line of `ys` at x = `x0`, `x0 + 1`, ...
    pub fn indexed(label: &'a str, x0: f64, ys: &[f32]) -> Self {
        Self {
            label,
            points: ys
                .iter()
                .enumerate()
                .map(|(i, &y)| (x0 + i as f64, f64::from(y)))
                .collect(),
        }
    }
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(120, 120, 120),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

fn plot_err(path: &Path, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Draws `lines` into a PNG at `path` (`width` x `height` pixels), with a
/// title and axis labels; `log_y` for loss curves.
///
/// # Errors
/// [`PipelineError::Plot`] when the file cannot be drawn or written, or no
/// line has a finite point.
pub fn line_chart(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    lines: &[Line<'_>],
    log_y: bool,
) -> Result<()> {
    let finite = lines
        .iter()
        .flat_map(|l| l.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Err(plot_err(path, "nothing to draw"));
    }
    if x0 == x1 {
        x1 = x0 + 1.0;
    }
    let pad = if log_y {
        0.0
    } else {
        (y1 - y0).max(1e-9) * 0.05
    };
    let (y0, y1) = if log_y {
        (y0 * 0.9, y1 * 1.1)
    } else {
        (y0 - pad, y1 + pad)
    };
    let root = BitMapBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|e| plot_err(path, e))?;
            for (i, l) in lines.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                chart
                    .draw_series(LineSeries::new(
                        l.points.iter().copied().filter(|(x, y)| {
                            x.is_finite() && y.is_finite() && (!log_y || *y > 0.0)
                        }),
                        colour.stroke_width(2),
                    ))
                    .map_err(|e| plot_err(path, e))?
                    .label(l.label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }};
    }
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60);
    if log_y {
        draw!(builder
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(|e| plot_err(path, e))?);
    } else {
        draw!(builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_err(path, e))?);
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}
