//! The hydrology pipeline (see [`data`] for the preprocessing and the
//! metrics, [`train`] for the model): one function that every rank of a
//! communicator calls, on bare metal or as a multi-rank pilot task.

pub mod data;
pub mod train;

pub use data::{climatology, nse_per_basin, preprocess, DroppedBasin, Preprocessed};
pub use train::{train_and_predict, Framework, HydroLoss, HydroOptions, Trained};

use crate::error::Result;
use deeprc_comm::Communicator;
use deeprc_frame::Table;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The outcome of [`run`].
#[derive(Debug)]
pub struct HydroReport {
    /// NSE per basin: `gauge, n, nse, nse_climatology`.
    pub nse: Table,
    /// Median NSE of the model over the basins.
    pub median_nse: f64,
    /// Median NSE of the day-of-year climatology.
    pub median_climatology: f64,
    /// All predictions (on rank 0; `None` elsewhere), sorted by gauge and
    /// date.
    pub predictions: Option<Table>,
    /// The training run.
    pub trained: Trained,
    /// Seconds of preprocessing (read, join, clean, sort).
    pub preprocess_seconds: f64,
    /// Rows after preprocessing (all ranks).
    pub rows: u64,
    /// Basins of the files left out (no day with both forcing and flow).
    pub dropped: Vec<DroppedBasin>,
}

/// Reads CAMELS-US from `data`, preprocesses it, trains and tests the LSTM,
/// and computes NSE per basin; every rank of `comm` calls it.
///
/// # Errors
/// Any stage's error, naming what was wrong (a missing file, a basin with
/// no overlapping dates, a lost peer).
pub fn run(comm: Arc<dyn Communicator>, data: &Path, opts: &HydroOptions) -> Result<HydroReport> {
    let t0 = Instant::now();
    let Preprocessed { table, dropped } = preprocess(&comm, data)?;
    let rows = table.num_rows()?;
    let preprocess_seconds = t0.elapsed().as_secs_f64();
    let clim = climatology(&table)?;
    let trained = train_and_predict(&table, opts)?;
    let nse = nse_per_basin(&trained.predictions, &clim)?;
    let median = |col: &str| -> Result<f64> {
        let mut v: Vec<f64> = nse.column_as::<f64>(col)?.into_iter().flatten().collect();
        v.sort_by(f64::total_cmp);
        Ok(match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        })
    };
    let predictions = trained
        .predictions
        .gather(0)?
        .map(|t| {
            t.sort(&[
                deeprc_frame::SortKey::asc("gauge"),
                deeprc_frame::SortKey::asc("date"),
            ])
        })
        .transpose()?;
    Ok(HydroReport {
        median_nse: median("nse")?,
        median_climatology: median("nse_climatology")?,
        nse,
        predictions,
        trained,
        preprocess_seconds,
        rows,
        dropped,
    })
}
