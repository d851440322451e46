//! The report of a run: tables as Markdown and CSV, plots as PNG.

use crate::error::{PipelineError, Result};
use crate::plot::{line_chart, Line};
use deeprc_comm::Communicator;
use deeprc_frame::{Agg, DistTable, SortKey, Table};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` and its parents.
///
/// # Errors
/// [`PipelineError::Io`].
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// Writes `text` to `path`.
///
/// # Errors
/// [`PipelineError::Io`].
pub fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        ensure_dir(d)?;
    }
    std::fs::write(path, text).map_err(io(path))
}

/// A Markdown table of `header` and `rows`.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "| {} |\n|{}|\n",
        header.join(" | "),
        vec!["---"; header.len()].join("|")
    );
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

/// A CSV of `header` and `rows` (fields must not hold commas).
pub fn csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = header.join(",");
    s.push('\n');
    for r in rows {
        s.push_str(&r.join(","));
        s.push('\n');
    }
    s
}

/// The hydrology outputs of rank 0: `predictions.parquet`, `nse.csv` and
/// one hydrograph per basin (`hydrograph_<gauge>.png`) in `out`.
///
/// # Errors
/// Writing a file or drawing a plot.
pub fn hydrology_outputs(
    out: &Path,
    predictions: &Table,
    nse: &Table,
    framework: &str,
) -> Result<()> {
    ensure_dir(out)?;
    deeprc_frame::io::write_parquet(predictions, out.join("predictions.parquet"))?;
    deeprc_frame::io::write_csv(nse, out.join("nse.csv"))?;
    let gauges: Vec<String> = nse
        .column_as::<String>("gauge")?
        .into_iter()
        .flatten()
        .collect();
    let nses: Vec<f64> = nse
        .column_as::<f64>("nse")?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect();
    for (g, n) in gauges.iter().zip(nses) {
        let rows = predictions.filter_sql(&format!("gauge = '{g}'"))?;
        let obs: Vec<f32> = rows
            .column_as::<f64>("observed")?
            .into_iter()
            .map(|v| v.unwrap_or(f64::NAN) as f32)
            .collect();
        let pred: Vec<f32> = rows
            .column_as::<f64>("predicted")?
            .into_iter()
            .map(|v| v.unwrap_or(f64::NAN) as f32)
            .collect();
        line_chart(
            &out.join(format!("hydrograph_{g}.png")),
            &format!("basin {g}, test year 2002: NSE {n:.3} (LSTM, {framework})"),
            ("day of 2002", "streamflow (mm/day)"),
            &[
                Line::indexed("observed", 1.0, &obs),
                Line::indexed("predicted", 1.0, &pred),
            ],
            false,
        )?;
    }
    Ok(())
}

/// MSE, MAE and MAPE (%) of OT in degrees Celsius per model (MAPE over the
/// points whose truth is at least 1 °C from zero: OT crosses 0 °C in
/// winter, where a percentage error is undefined), from the
/// prediction phase's Parquet files read as one `DistTable` (each rank its
/// share of the files) and one group-by. Collective; every rank gets the
/// table.
///
/// # Errors
/// No files, or the frame's errors.
pub fn forecast_metrics(comm: Arc<dyn Communicator>, files: &[PathBuf]) -> Result<Table> {
    let t = DistTable::read_parquet(comm, files)?
        .with_column_sql("se", "(forecast - truth) * (forecast - truth)")?
        .with_column_sql("ae", "abs(forecast - truth)")?
        .with_column_sql(
            "ape",
            "CASE WHEN abs(truth) >= 1.0 THEN 100.0 * abs(forecast - truth) / abs(truth) END",
        )?
        .group_by(
            &["model"],
            &[
                Agg::count("se").alias("points"),
                Agg::mean("se").alias("mse"),
                Agg::mean("ae").alias("mae"),
                Agg::mean("ape").alias("mape"),
            ],
        )?
        .all_gather()?;
    Ok(t.sort(&[SortKey::asc("model")])?)
}

/// A forecast plot of one test window (OT, normalised).
///
/// # Errors
/// Drawing the plot.
pub fn forecast_plot(
    path: &Path,
    model: &str,
    history: &[f32],
    truth: &[f32],
    forecast: &[f32],
) -> Result<()> {
    let l = history.len() as f64;
    line_chart(
        path,
        &format!("{model}: OT, first test window (z-score)"),
        ("hour", "OT (z-score)"),
        &[
            Line::indexed("history", 0.0, history),
            Line::indexed("truth", l, truth),
            Line::indexed("forecast", l, forecast),
        ],
        false,
    )
}

/// A learning-curve plot: `(step, train loss, validation MSE)`.
///
/// # Errors
/// Drawing the plot.
pub fn loss_plot(path: &Path, title: &str, curve: &[(f64, f64, f64)]) -> Result<()> {
    line_chart(
        path,
        title,
        ("step", "loss (normalised)"),
        &[
            Line {
                label: "train loss",
                points: curve.iter().map(|c| (c.0, c.1)).collect(),
            },
            Line {
                label: "validation MSE",
                points: curve.iter().map(|c| (c.0, c.2)).collect(),
            },
        ],
        true,
    )
}
