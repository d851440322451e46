//! Both pipelines as pilot workloads, and the same functions on bare metal.
//!
//! ```text
//!  one local pilot
//!   ├── hydrology            (R ranks, one communicator from the System Bridge)
//!   ├── forecast_train × M   (R ranks each: the models, data-parallel)
//!   │     └── forecast_predict × P each (1 rank; the paper's prediction phase)
//!   └── then: the prediction Parquet files read as one DistTable,
//!             MSE / MAE / MAPE per model by a group-by
//!  bare metal: the same registered functions called on R thread ranks
//!              started directly (deeprc_comm::local::launch), one after another
//! ```
//!
//! The functions are registered by name ([`registry`]) so that worker
//! processes (the host binary re-executed) find them too.

use crate::error::{PipelineError, Result};
use crate::forecast::{self, ForecastOptions, Target};
use crate::hydrology::{self, Framework, HydroOptions};
use deeprc_comm::Communicator;
use deeprc_frame::Table;
use deeprc_models::ModelSize;
use deeprc_pilot::{Registry, TaskContext};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The arguments of the `hydrology` task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HydroTask {
    /// The data folder (with `camels_us_4basins/`).
    pub data: PathBuf,
    /// Where rank 0 writes predictions, NSE and hydrographs.
    pub out: PathBuf,
    /// Days per sequence.
    pub seq_len: usize,
    /// LSTM cells.
    pub hidden: usize,
    /// Epochs.
    pub epochs: usize,
    /// The global batch.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// `"tch"` or `"tensorflow"`.
    pub framework: String,
    /// Seed.
    pub seed: u64,
}

/// What the `hydrology` task returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HydroSummary {
    /// (gauge, NSE, climatology NSE) per basin.
    pub basins: Vec<(String, f64, f64)>,
    /// Median NSE.
    pub median_nse: f64,
    /// Median climatology NSE.
    pub median_climatology: f64,
    /// Optimizer steps.
    pub steps: u64,
    /// Seconds preprocessing.
    pub preprocess_seconds: f64,
    /// Seconds training and predicting.
    pub train_seconds: f64,
    /// Seconds of the whole function.
    pub seconds: f64,
    /// Rows after preprocessing.
    pub rows: u64,
    /// Training, validation and test windows.
    pub windows: [u64; 3],
    /// (epoch, train loss, validation MSE).
    pub curve: Vec<(usize, f64, f64)>,
    /// (gauge, why) of the basins left out: no day with both forcing and
    /// streamflow.
    pub dropped: Vec<(String, String)>,
}

/// The arguments of `forecast_train` and `forecast_predict`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForecastTask {
    /// The data folder (with `ETT-small/ETTh1.csv`).
    pub data: PathBuf,
    /// The model's name.
    pub model: String,
    /// Look-back.
    pub input_size: usize,
    /// Horizon.
    pub horizon: usize,
    /// The small variant instead of the published size.
    pub small: bool,
    /// Optimizer steps at most.
    pub max_steps: u64,
    /// Validate every this many steps.
    pub val_every: u64,
    /// Global batch.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed.
    pub seed: u64,
    /// The trained parameters' file.
    pub model_file: PathBuf,
    /// For `forecast_predict`: this part of `parts` of the test windows,
    /// written as Parquet to `predictions`.
    pub part: usize,
    /// Parts of the prediction phase.
    pub parts: usize,
    /// Where the prediction part goes.
    pub predictions: PathBuf,
}

impl ForecastTask {
    fn options(&self) -> ForecastOptions {
        let mut o = ForecastOptions::new(&self.model, self.input_size, self.horizon);
        o.target = Target::All;
        o.size = if self.small {
            ModelSize::Small
        } else {
            ModelSize::Paper
        };
        o.max_steps = self.max_steps;
        o.val_every = self.val_every;
        o.batch_size = self.batch_size;
        o.lr = self.lr;
        o.seed = self.seed;
        o.patience = 3;
        o.max_val_windows = Some(512);
        o.keep_examples = 2;
        o.save_to = Some(self.model_file.clone());
        o
    }
}

/// What `forecast_train` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainSummary {
    /// The model.
    pub model: String,
    /// Test MSE (normalised, all channels).
    pub mse: f64,
    /// Test MAE.
    pub mae: f64,
    /// Steps.
    pub steps: u64,
    /// Trainable parameters.
    pub parameters: usize,
    /// Seconds of the whole function.
    pub seconds: f64,
    /// (step, train loss, val MSE).
    pub curve: Vec<(u64, f64, f64)>,
    /// OT of test window 0: history, truth, forecast (normalised).
    pub example: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
}

fn etth1(data: &Path) -> Result<Table> {
    Ok(deeprc_frame::io::read_etth1(
        data.join("ETT-small/ETTh1.csv"),
    )?)
}

/// The hydrology pipeline on `comm`; rank 0 writes its outputs.
///
/// # Errors
/// As [`hydrology::run`], and writing the outputs.
pub fn hydrology_task(comm: Arc<dyn Communicator>, args: &HydroTask) -> Result<HydroSummary> {
    let t0 = Instant::now();
    let framework = match args.framework.as_str() {
        "tch" => Framework::Tch,
        "tensorflow" | "tf" => Framework::TensorFlow,
        f => {
            return Err(PipelineError::Invalid(format!(
                "unknown framework {f:?} (tch or tensorflow)"
            )))
        }
    };
    let opts = HydroOptions {
        seq_len: args.seq_len,
        hidden: args.hidden,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        framework,
        ..HydroOptions::default()
    };
    let rank = comm.rank();
    let r = hydrology::run(comm, &args.data, &opts)?;
    let gauges: Vec<Option<String>> = r.nse.column_as::<String>("gauge")?;
    let nse: Vec<Option<f64>> = r.nse.column_as::<f64>("nse")?;
    let clim: Vec<Option<f64>> = r.nse.column_as::<f64>("nse_climatology")?;
    let basins = gauges
        .into_iter()
        .zip(nse)
        .zip(clim)
        .map(|((g, n), c)| {
            (
                g.unwrap_or_default(),
                n.unwrap_or(f64::NAN),
                c.unwrap_or(f64::NAN),
            )
        })
        .collect();
    if rank == 0 {
        if let Some(p) = &r.predictions {
            crate::report::hydrology_outputs(&args.out, p, &r.nse, &args.framework)?;
        }
    }
    Ok(HydroSummary {
        basins,
        median_nse: r.median_nse,
        median_climatology: r.median_climatology,
        steps: r.trained.steps,
        preprocess_seconds: r.preprocess_seconds,
        train_seconds: r.trained.seconds,
        seconds: t0.elapsed().as_secs_f64(),
        rows: r.rows,
        windows: r.trained.windows,
        curve: r.trained.curve.clone(),
        dropped: r
            .dropped
            .iter()
            .map(|d| (d.gauge.clone(), d.reason.clone()))
            .collect(),
    })
}

/// Trains one forecasting model on `comm` and saves it.
///
/// # Errors
/// As [`forecast::train_forecaster`].
pub fn forecast_train_task(
    comm: Arc<dyn Communicator>,
    args: &ForecastTask,
) -> Result<TrainSummary> {
    let t0 = Instant::now();
    let table = etth1(&args.data)?;
    let r = forecast::train_forecaster(comm, &table, &args.options())?;
    Ok(TrainSummary {
        model: r.model.clone(),
        mse: r.mse,
        mae: r.mae,
        steps: r.steps,
        parameters: r.parameters,
        seconds: t0.elapsed().as_secs_f64(),
        curve: r
            .curve
            .iter()
            .map(|c| (c.step, c.train_loss, c.val_mse))
            .collect(),
        example: r
            .examples
            .first()
            .map(|e| (e.history.clone(), e.truth.clone(), e.forecast.clone())),
    })
}

/// One part of one model's prediction phase, written as Parquet; returns
/// the rows written.
///
/// # Errors
/// As [`forecast::predict_part`], and writing the file.
pub fn forecast_predict_task(args: &ForecastTask) -> Result<usize> {
    let table = etth1(&args.data)?;
    let t = forecast::predict_part(&table, &args.options(), args.part, args.parts)?;
    if let Some(dir) = args.predictions.parent() {
        std::fs::create_dir_all(dir).map_err(|e| PipelineError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    deeprc_frame::io::write_parquet(&t, &args.predictions)?;
    Ok(t.num_rows())
}

/// The registry of the pipelines' functions.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    let comm_of = |ctx: &TaskContext| -> std::result::Result<Arc<dyn Communicator>, String> {
        ctx.comm().map(Arc::clone).map_err(|e| e.to_string())
    };
    r.register_typed("hydrology", move |ctx: &TaskContext, a: HydroTask| {
        hydrology_task(comm_of(ctx)?, &a).map_err(|e| e.to_string())
    });
    r.register_typed(
        "forecast_train",
        move |ctx: &TaskContext, a: ForecastTask| {
            forecast_train_task(comm_of(ctx)?, &a).map_err(|e| e.to_string())
        },
    );
    r.register_typed("forecast_predict", |_ctx: &TaskContext, a: ForecastTask| {
        forecast_predict_task(&a).map_err(|e| e.to_string())
    });
    r
}
