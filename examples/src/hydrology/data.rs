//! The hydrology pipeline on CAMELS-US: distributed preprocessing with the
//! frame, windows built in place by the Data Bridge, the LSTM of Kratzert
//! et al. (2019) trained data-parallel on the same ranks, predictions back
//! into a `DistTable`, and NSE per basin from a group-by.
//!
//! ```text
//!  each rank its share of the files
//!  forcing(gauge, date+1 day -> date) ⋈ streamflow(gauge, date) ⋈ attributes(gauge)
//!     clean (flow missing / -999 dropped), q_mm = flow [cfs] -> mm/day over the basin area
//!     shuffle by gauge, sort by (gauge, date) within each rank
//!  windows (seq_len days of forcings + attributes -> the flow of the last day)
//!     train before VAL_START, validate to TEST_START, test: the final year
//!  LSTM (tch, or the TensorFlow SavedModel) trained data-parallel, gradients all-reduced
//!  predictions -> DistTable(gauge, date, observed, predicted, climatology)
//!     group-by gauge -> NSE per basin (model and day-of-year climatology)
//! ```
//!
//! The forcing of day `d + 1` is joined to the flow of day `d` so that a
//! window of inputs ending on day `T` (the bridge's targets are the row
//! after the inputs) sees the weather up to and including `T`, the day its
//! flow is predicted, as in Kratzert et al.

use crate::error::{PipelineError, Result};
use deeprc_bridge::arrow::array::{ArrayRef, Date32Array, Float64Array, StringArray};
use deeprc_comm::Communicator;
use deeprc_frame::io::camels::CamelsKind;
use deeprc_frame::{Agg, DistTable, JoinOptions, JoinType, SortKey, Table};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The Daymet forcings the model reads: Kratzert et al.'s five (precipitation,
/// shortwave radiation, maximum and minimum temperature, vapour pressure)
/// and the day length, which NeuralHydrology's CAMELS-US configurations add
/// (see `docs/benchmarks.md`, "Accuracy: CAMELS-US"). Daymet's `swe` is
/// left out: it is zero throughout in these files.
pub const FORCINGS: [&str; 6] = ["dayl", "prcp", "srad", "tmax", "tmin", "vp"];

/// The static attributes (file of `attributes/camels_<file>.txt`, column),
/// a subset of Kratzert et al.'s 27 that varies between the four basins.
pub const ATTRIBUTES: [(&str, &str); 12] = [
    ("clim", "p_mean"),
    ("clim", "pet_mean"),
    ("clim", "aridity"),
    ("clim", "frac_snow"),
    ("clim", "high_prec_freq"),
    ("clim", "low_prec_freq"),
    ("topo", "elev_mean"),
    ("topo", "slope_mean"),
    ("topo", "area_gages2"),
    ("vege", "frac_forest"),
    ("soil", "soil_depth_pelletier"),
    ("soil", "max_water_content"),
];

/// First day of validation (days since 1970: 2001-10-01).
pub const VAL_START: i64 = 11_596;
/// First day of the held-out test year (2002-01-01).
pub const TEST_START: i64 = 11_688;

/// One cubic foot per second over one square kilometre, in mm per day.
const CFS_TO_MM_DAY_PER_KM2: f64 = 0.028_316_846_592 * 86_400.0 * 1000.0 / 1e6;

/// Reads the attribute table of the four basins (every rank reads the
/// small files; rank 0's copy becomes a one-partition `DistTable`).
fn attributes(root: &Path) -> Result<Table> {
    let mut by_file: Vec<(&str, Vec<&str>)> = Vec::new();
    for (file, col) in ATTRIBUTES {
        match by_file.iter_mut().find(|(f, _)| *f == file) {
            Some((_, cols)) => cols.push(col),
            None => by_file.push((file, vec![col])),
        }
    }
    let mut table: Option<Table> = None;
    for (file, cols) in by_file {
        let path = root.join(format!("attributes/camels_{file}.txt"));
        let t = read_attribute_file(&path, &cols)?;
        table = Some(match table {
            None => t,
            Some(acc) => {
                let j = acc.join(&t, &JoinOptions::on(&["gauge"]))?;
                let mut keep: Vec<String> = acc.column_names();
                keep.iter_mut().for_each(|c| {
                    if c == "gauge" {
                        *c = "gauge_x".into()
                    }
                });
                keep.extend(cols.iter().map(|c| c.to_string()));
                let refs: Vec<&str> = keep.iter().map(String::as_str).collect();
                j.project(&refs)?.rename(&[("gauge_x", "gauge")])?
            }
        });
    }
    table.ok_or_else(|| PipelineError::Invalid("no attributes".into()))
}

/// `gauge_id;a;b;...` with the gauge as text (leading zeros kept) and the
/// chosen columns as numbers.
fn read_attribute_file(path: &Path, cols: &[&str]) -> Result<Table> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| PipelineError::Invalid(format!("{}: empty file", path.display())))?
        .split(';')
        .map(str::trim)
        .collect();
    let idx: Vec<usize> = cols
        .iter()
        .map(|c| {
            header.iter().position(|h| h == c).ok_or_else(|| {
                PipelineError::Invalid(format!(
                    "{}: no column {c} (has {})",
                    path.display(),
                    header.join(", ")
                ))
            })
        })
        .collect::<Result<_>>()?;
    let mut gauges = Vec::new();
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); cols.len()];
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(';').map(str::trim).collect();
        gauges.push(fields[0].to_string());
        for (k, &i) in idx.iter().enumerate() {
            let v = fields.get(i).ok_or_else(|| {
                PipelineError::Invalid(format!(
                    "{} line {}: {} fields, no {}",
                    path.display(),
                    n + 2,
                    fields.len(),
                    cols[k]
                ))
            })?;
            values[k].push(v.parse().map_err(|_| {
                PipelineError::Invalid(format!(
                    "{} line {}: {} is {v:?}, not a number",
                    path.display(),
                    n + 2,
                    cols[k]
                ))
            })?);
        }
    }
    let mut columns: Vec<(&str, ArrayRef)> = vec![("gauge", Arc::new(StringArray::from(gauges)))];
    for (c, v) in cols.iter().zip(values) {
        columns.push((c, Arc::new(Float64Array::from(v))));
    }
    Ok(Table::from_columns(columns)?)
}

/// A basin of the input files that the preprocessed table does not hold,
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedBasin {
    /// The gauge id.
    pub gauge: String,
    /// What was missing (e.g. "no streamflow file", or the two date ranges
    /// that do not overlap).
    pub reason: String,
}

/// The outcome of [`preprocess`].
#[derive(Debug)]
pub struct Preprocessed {
    /// One row per (gauge, date) with the forcings of the next day, the
    /// attributes, `q_mm` (observed flow in mm/day) and `doy` (day of the
    /// year), every gauge whole on one rank, sorted by date.
    pub table: DistTable,
    /// Basins with forcing or flow but no day with both (the same on every
    /// rank); the pipeline goes on without them and reports them.
    pub dropped: Vec<DroppedBasin>,
}

/// Gauge -> (rows, first day, last day) of `t`, on every rank.
fn date_ranges(t: &DistTable) -> Result<BTreeMap<String, (i64, i32, i32)>> {
    let g = t
        .group_by(
            &["gauge"],
            &[
                Agg::count("date").alias("n"),
                Agg::min("date").alias("first"),
                Agg::max("date").alias("last"),
            ],
        )?
        .with_column_sql("first_day", "CAST(first AS INT)")?
        .with_column_sql("last_day", "CAST(last AS INT)")?
        .all_gather()?;
    let gauges = g.column_as::<String>("gauge")?;
    let n = g.column_as::<i64>("n")?;
    let first = g.column_as::<i32>("first_day")?;
    let last = g.column_as::<i32>("last_day")?;
    Ok(gauges
        .into_iter()
        .zip(n)
        .zip(first.into_iter().zip(last))
        .filter_map(|((g, n), (a, b))| Some((g?, (n?, a?, b?))))
        .collect())
}

/// `YYYY-MM-DD` of days since 1970-01-01.
fn iso_date(days: i32) -> String {
    deeprc_bridge::arrow::temporal_conversions::date32_to_datetime(days).map_or_else(
        || format!("day {days}"),
        |d| d.format("%Y-%m-%d").to_string(),
    )
}

/// The basins of `forcing` or `flow` that `joined` lacks, with the reason.
fn dropped_basins(
    forcing: &DistTable,
    flow: &DistTable,
    joined: &DistTable,
) -> Result<Vec<DroppedBasin>> {
    let (f, q, j) = (
        date_ranges(forcing)?,
        date_ranges(flow)?,
        date_ranges(joined)?,
    );
    let all: BTreeSet<&String> = f.keys().chain(q.keys()).collect();
    Ok(all
        .into_iter()
        .filter(|g| !j.contains_key(*g))
        .map(|g| {
            let reason = match (f.get(g), q.get(g)) {
                (Some(_), None) => "no streamflow (file missing or every value missing)".into(),
                (None, Some(_)) => "no forcing file".into(),
                (Some(a), Some(b)) => format!(
                    "no day with both forcing ({} to {}) and streamflow ({} to {})",
                    iso_date(a.1),
                    iso_date(a.2),
                    iso_date(b.1),
                    iso_date(b.2)
                ),
                (None, None) => "no data".into(),
            };
            DroppedBasin {
                gauge: g.clone(),
                reason,
            }
        })
        .collect())
}

/// Reads and preprocesses CAMELS-US (see [`Preprocessed`]).
///
/// # Errors
/// [`PipelineError::Frame`] naming a missing or malformed file;
/// [`PipelineError::Invalid`] when no basin has overlapping forcing and
/// flow (naming each basin and its date ranges).
pub fn preprocess(comm: &Arc<dyn Communicator>, data: &Path) -> Result<Preprocessed> {
    let root = data.join("camels_us_4basins");
    let raw_forcing = DistTable::read_camels(Arc::clone(comm), &root, CamelsKind::Forcing)?;
    let flow = DistTable::read_camels(Arc::clone(comm), &root, CamelsKind::Streamflow)?;
    let mut keep: Vec<&str> = vec!["gauge", "day_before"];
    keep.extend(FORCINGS);
    let forcing = raw_forcing
        .with_column_sql("day_before", "date - INTERVAL '1 day'")?
        .project(&keep)?
        .rename(&[("day_before", "date")])?;
    let flow = flow
        .filter_sql("flow IS NOT NULL AND flow >= 0")?
        .project(&["gauge", "date", "flow"])?;
    let joined = forcing.join(&flow, &JoinOptions::on(&["gauge", "date"]))?;
    let mut cols: Vec<&str> = vec!["gauge_x", "date_x"];
    cols.extend(FORCINGS);
    cols.push("flow");
    let joined = joined
        .project(&cols)?
        .rename(&[("gauge_x", "gauge"), ("date_x", "date")])?;
    let attrs = attributes(&root)?;
    let attrs = DistTable::scatter((comm.rank() == 0).then_some(attrs), 0, Arc::clone(comm))?;
    let with_attrs = joined.join(&attrs, &JoinOptions::on(&["gauge"]))?;
    let mut cols: Vec<String> = vec!["gauge_x".into(), "date".into()];
    cols.extend(FORCINGS.iter().map(|s| s.to_string()));
    cols.extend(ATTRIBUTES.iter().map(|(_, c)| c.to_string()));
    cols.push("flow".into());
    let refs: Vec<&str> = cols.iter().map(String::as_str).collect();
    let table = with_attrs
        .project(&refs)?
        .rename(&[("gauge_x", "gauge")])?
        .with_column_sql(
            "q_mm",
            &format!("flow * {CFS_TO_MM_DAY_PER_KM2} / area_gages2"),
        )?
        .with_column_sql("doy", "CAST(date_part('doy', date) AS DOUBLE)")?
        .shuffle(&["gauge"])?
        .map_partitions(|t| t.sort(&[SortKey::asc("gauge"), SortKey::asc("date")]))?;
    let dropped = dropped_basins(&raw_forcing, &flow, &joined)?;
    if table.num_rows()? == 0 {
        let why: Vec<String> = dropped
            .iter()
            .map(|d| format!("{}: {}", d.gauge, d.reason))
            .collect();
        return Err(PipelineError::Invalid(format!(
            "no basin has forcing and streamflow on the same dates ({})",
            why.join("; ")
        )));
    }
    for d in &dropped {
        tracing::warn!(gauge = %d.gauge, reason = %d.reason, "basin left out of the hydrology pipeline");
    }
    Ok(Preprocessed { table, dropped })
}

/// Builds the prediction table of this rank.
pub(crate) fn prediction_table(
    gauges: Vec<String>,
    days: Vec<i32>,
    observed: Vec<f64>,
    predicted: Vec<f64>,
) -> Result<Table> {
    Ok(Table::from_columns(vec![
        ("gauge", Arc::new(StringArray::from(gauges)) as ArrayRef),
        ("date", Arc::new(Date32Array::from(days))),
        ("observed", Arc::new(Float64Array::from(observed))),
        ("predicted", Arc::new(Float64Array::from(predicted))),
    ])?)
}

/// NSE per basin of `predicted` and of the day-of-year climatology of the
/// training years against `observed`: a table `gauge, n, nse,
/// nse_climatology` (on every rank: gathered to all).
///
/// `NSE = 1 - Σ(o - p)² / Σ(o - ō)²`, from one group-by of the sums.
///
/// # Errors
/// The frame's errors.
pub fn nse_per_basin(predictions: &DistTable, climatology: &DistTable) -> Result<Table> {
    let with_doy = predictions.with_column_sql("doy", "CAST(date_part('doy', date) AS DOUBLE)")?;
    let joined = with_doy.join(
        climatology,
        &JoinOptions::on(&["gauge", "doy"]).how(JoinType::Left),
    )?;
    let sums = joined
        .rename(&[("gauge_x", "gauge")])?
        .with_column_sql("se", "(observed - predicted) * (observed - predicted)")?
        .with_column_sql(
            "se_clim",
            "(observed - coalesce(clim, 0.0)) * (observed - coalesce(clim, 0.0))",
        )?
        .with_column_sql("o2", "observed * observed")?
        .group_by(
            &["gauge"],
            &[
                Agg::count("observed").alias("n"),
                Agg::sum("observed").alias("so"),
                Agg::sum("o2").alias("so2"),
                Agg::sum("se").alias("sse"),
                Agg::sum("se_clim").alias("sse_clim"),
            ],
        )?
        .with_column_sql("sst", "so2 - so * so / CAST(n AS DOUBLE)")?
        .with_column_sql("nse", "1.0 - sse / sst")?
        .with_column_sql("nse_climatology", "1.0 - sse_clim / sst")?
        .project(&["gauge", "n", "nse", "nse_climatology"])?
        .all_gather()?;
    Ok(sums.sort(&[SortKey::asc("gauge")])?)
}

/// The mean observed flow per (gauge, day of year) over the training
/// days: the climatology baseline.
///
/// # Errors
/// The frame's errors.
pub fn climatology(table: &DistTable) -> Result<DistTable> {
    Ok(table
        .filter_sql(&format!("CAST(date AS INT) < {VAL_START}"))?
        .group_by(&["gauge", "doy"], &[Agg::mean("q_mm").alias("clim")])?)
}

/// Where the outputs of a run go.
pub fn output_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("predictions.parquet"), dir.join("nse.csv"))
}
