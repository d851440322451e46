//! Forecasting on ETTh1 with the model zoo of `deeprc-models`, trained
//! data-parallel over any communicator: the standard long-horizon protocol.
//!
//! Protocol (Informer, Autoformer, PatchTST and NeuralForecast use it):
//! - the first 12 months train (8,640 hours), the next 4 validate, the next
//!   4 test (2,880 each); a window belongs to the split that holds its
//!   targets, its look-back may reach into the split before;
//! - every channel z-scored with the training rows' mean and deviation;
//! - multivariate (`Target::All`): the 7 channels in, the 7 channels out,
//!   each forecast channel by channel with shared weights; univariate
//!   (`Target::Ot`): OT in, OT out;
//! - test MSE and MAE on the normalised scale, averaged over channels,
//!   horizon steps and every test window (stride 1);
//! - Adam, early stopping on the validation MSE, the best parameters
//!   restored for the test.
//!
//! Every rank trains on its own shard of each global batch (the bridge's
//! sampler) and evaluates its own shard of the validation and test windows;
//! the sums are all-reduced, so the metrics are those of the whole split.

use crate::error::{PipelineError, Result};
use deeprc_bridge::tch::tch_crate::{self as tch, nn, Kind, Tensor};
use deeprc_bridge::train::{DistributedTrainer, OptimizerKind};
use deeprc_bridge::{
    DataSource, Loader, LoaderOptions, Normalize, SamplerOptions, Split, TimeStep, WindowDataset,
    WindowSpec,
};
use deeprc_comm::{Communicator, CommunicatorExt, ReduceOp};
use deeprc_frame::Table;
use deeprc_models::{ChannelIndependent, ForecastConfig, ModelSize, WindowScaling};
use std::sync::Arc;
use std::time::Instant;

/// ETTh1's channels, OT (oil temperature) last.
pub const ETTH1_CHANNELS: [&str; 7] = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"];

/// The usual split of ETTh1, in hours.
pub const ETTH1_SPLIT: Split = Split::Rows {
    train: 8640,
    val: 2880,
    test: 2880,
};

/// What is forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The 7 channels from the 7 channels.
    All,
    /// OT alone from OT alone.
    Ot,
}

impl Target {
    /// The channels in and out.
    pub fn channels(self) -> &'static [&'static str] {
        match self {
            Target::All => &ETTH1_CHANNELS,
            Target::Ot => &ETTH1_CHANNELS[6..],
        }
    }

    /// `"all"` or `"OT"`.
    pub fn label(self) -> &'static str {
        match self {
            Target::All => "all",
            Target::Ot => "OT",
        }
    }
}

/// One training run of one model.
#[derive(Debug, Clone)]
pub struct ForecastOptions {
    /// A name of [`deeprc_models::MODELS`].
    pub model: String,
    /// Look-back in hours.
    pub input_size: usize,
    /// Horizon in hours.
    pub horizon: usize,
    /// What is forecast.
    pub target: Target,
    /// Published or small hyperparameters.
    pub size: ModelSize,
    /// The global batch (split evenly over the ranks).
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// The learning rate is multiplied by this at the start of every epoch
    /// after the first (1: constant; LTSF-Linear's DLinear and NLinear
    /// halve it every epoch, their `lradj = type1`).
    pub lr_epoch_decay: f64,
    /// At most this many optimizer steps.
    pub max_steps: u64,
    /// Validate every this many steps.
    pub val_every: u64,
    /// Stop after this many validations without improvement.
    pub patience: u32,
    /// Seed of the initial parameters and the shuffling.
    pub seed: u64,
    /// Per-window scaling (`None`: the model's default, see
    /// [`default_scaling`]).
    pub scaling: Option<WindowScaling>,
    /// Validate on at most this many windows (evenly spaced), for speed;
    /// the test always uses every window.
    pub max_val_windows: Option<usize>,
    /// Test windows whose forecasts are kept for plots (rank 0's first).
    pub keep_examples: usize,
    /// Show a progress bar (on rank 0, when stderr is a terminal).
    pub progress: bool,
    /// Where rank 0 saves the trained parameters (libtorch's `.ot`), for
    /// [`predict_part`].
    pub save_to: Option<std::path::PathBuf>,
}

impl ForecastOptions {
    /// `model` with look-back `input_size` and `horizon`, multivariate,
    /// published size, batch 32, learning rate 1e-3, 1,000 steps validated
    /// every 100 with patience 5.
    pub fn new(model: &str, input_size: usize, horizon: usize) -> Self {
        Self {
            model: model.to_string(),
            input_size,
            horizon,
            target: Target::All,
            size: ModelSize::Paper,
            batch_size: 32,
            lr: 1e-3,
            lr_epoch_decay: 1.0,
            max_steps: 1000,
            val_every: 100,
            patience: 5,
            seed: 1,
            scaling: None,
            max_val_windows: None,
            keep_examples: 4,
            progress: false,
            save_to: None,
        }
    }
}

/// The per-window scaling a model trains with by default: none for NLinear
/// and DLinear (whose papers use none; NLinear subtracts the last value
/// itself), standard (RevIN without affine parameters) for the others.
pub fn default_scaling(model: &str) -> WindowScaling {
    match model.to_ascii_lowercase().as_str() {
        "nlinear" | "dlinear" => WindowScaling::Identity,
        _ => WindowScaling::Standard,
    }
}

/// One point of the learning curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Optimizer steps taken.
    pub step: u64,
    /// Mean training loss since the previous point.
    pub train_loss: f64,
    /// Validation MSE at this step.
    pub val_mse: f64,
}

/// One test window kept for plots: channel OT on the normalised scale.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastExample {
    /// The look-back.
    pub history: Vec<f32>,
    /// The truth over the horizon.
    pub truth: Vec<f32>,
    /// The forecast over the horizon.
    pub forecast: Vec<f32>,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastReport {
    /// The model.
    pub model: String,
    /// Horizon.
    pub horizon: usize,
    /// What was forecast.
    pub target: Target,
    /// Look-back.
    pub lookback: usize,
    /// Test MSE (normalised scale).
    pub mse: f64,
    /// Test MAE (normalised scale).
    pub mae: f64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// The step whose parameters were kept (best validation MSE).
    pub best_step: u64,
    /// Wall time of training and testing.
    pub seconds: f64,
    /// Trainable parameters.
    pub parameters: usize,
    /// Test windows evaluated.
    pub test_windows: u64,
    /// The learning curve.
    pub curve: Vec<CurvePoint>,
    /// A few test windows with their forecasts.
    pub examples: Vec<ForecastExample>,
}

/// The seasonal-naive forecast of ETTh1's test split with a daily season
/// (each hour forecast by the same hour of the last day of the look-back)
/// and its MSE and MAE under the protocol above. Computed without a
/// model: the baseline every table shows.
///
/// # Errors
/// As the dataset build.
pub fn seasonal_naive(
    comm: Arc<dyn Communicator>,
    table: &Table,
    input_size: usize,
    horizon: usize,
    target: Target,
) -> Result<(f64, f64)> {
    let season = 24usize;
    if input_size < season {
        return Err(PipelineError::Invalid(format!(
            "seasonal naive needs a look-back of at least {season} hours"
        )));
    }
    let (_, _, test) = loaders(&comm, table, input_size, horizon, target, 64, 0)?;
    let mut sums = [0.0f64; 3];
    for b in test.epoch(0) {
        let b = b?;
        let x = b.inputs().to_vec::<f32>()?;
        let y = b.targets().to_vec::<f32>()?;
        let c = target.channels().len();
        for i in 0..b.valid() {
            for h in 0..horizon {
                for ch in 0..c {
                    let past = input_size - season + (h % season);
                    let f = x[(i * input_size + past) * c + ch];
                    let t = y[(i * horizon + h) * c + ch];
                    let e = f64::from(f - t);
                    sums[0] += e * e;
                    sums[1] += e.abs();
                    sums[2] += 1.0;
                }
            }
        }
    }
    comm.all_reduce(&mut sums, ReduceOp::Sum)?;
    Ok((sums[0] / sums[2], sums[1] / sums[2]))
}

type Loaders = (
    Loader<WindowDataset>,
    Loader<WindowDataset>,
    Loader<WindowDataset>,
);

fn loaders(
    comm: &Arc<dyn Communicator>,
    table: &Table,
    input_size: usize,
    horizon: usize,
    target: Target,
    batch_per_rank: usize,
    seed: u64,
) -> Result<Loaders> {
    let cols = target.channels();
    let splits = WindowSpec::new(input_size, horizon, cols, cols)
        .time("date", TimeStep::HOUR)
        .normalize(Normalize::ZScore)
        .split(ETTH1_SPLIT)
        .build(DataSource::from(table).replicated(Arc::clone(comm)))?;
    let missing = |what: &str| PipelineError::Invalid(format!("ETTh1 gave no {what} windows"));
    let train = Loader::new(
        splits.train,
        SamplerOptions::shuffled(batch_per_rank, seed),
        LoaderOptions::default(),
    )?;
    let val = Loader::new(
        splits.val.ok_or_else(|| missing("validation"))?,
        SamplerOptions::sequential(256),
        LoaderOptions::default(),
    )?;
    let test = Loader::new(
        splits.test.ok_or_else(|| missing("test"))?,
        SamplerOptions::sequential(256),
        LoaderOptions::default(),
    )?;
    Ok((train, val, test))
}

/// Sums of squared and absolute errors and the count, over this rank's
/// windows of `loader` (every `every`-th batch), all-reduced.
fn evaluate(
    comm: &Arc<dyn Communicator>,
    model: &ChannelIndependent,
    loader: &Loader<WindowDataset>,
    every: usize,
    keep: usize,
    examples: &mut Vec<ForecastExample>,
) -> Result<[f64; 3]> {
    let _guard = tch::no_grad_guard();
    let mut sums = [0.0f64; 3];
    for (k, b) in loader.epoch(0).enumerate() {
        if k % every != 0 {
            continue;
        }
        let b = b?.to_tch(deeprc_core::Device::Cpu)?;
        let n = b.valid() as i64;
        if n == 0 {
            continue;
        }
        let x = b.inputs().narrow(0, 0, n);
        let y = b.targets().narrow(0, 0, n);
        let f = model.forward_t(&x, false)?;
        let e = &f - &y;
        sums[0] += e.square().sum(Kind::Double).double_value(&[]);
        sums[1] += e.abs().sum(Kind::Double).double_value(&[]);
        sums[2] += e.numel() as f64;
        if examples.len() < keep && comm.rank() == 0 {
            let c = x.size()[2];
            for i in 0..n.min((keep - examples.len()) as i64) {
                let col = |t: &Tensor| -> Result<Vec<f32>> {
                    Ok(Vec::<f32>::try_from(
                        t.get(i).select(1, c - 1).contiguous(),
                    )?)
                };
                examples.push(ForecastExample {
                    history: col(&x)?,
                    truth: col(&y)?,
                    forecast: col(&f)?,
                });
            }
        }
    }
    comm.all_reduce(&mut sums, ReduceOp::Sum)?;
    Ok(sums)
}

/// This thread's dropout generator for the length of a training: seeded
/// from the run's seed and the rank, forgotten at the end.
struct RankDropout;

impl RankDropout {
    fn seed(seed: u64, rank: usize) -> Self {
        deeprc_models::dropout::seed_thread(
            seed ^ (rank as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        RankDropout
    }
}

impl Drop for RankDropout {
    fn drop(&mut self) {
        deeprc_models::dropout::unseed_thread();
    }
}

/// Trains and tests one model on ETTh1 on every rank of `comm` (all ranks
/// call it with the same options and the whole table); returns the same
/// report on every rank.
///
/// # Errors
/// [`PipelineError::Invalid`] for settings that cannot work (a global batch
/// smaller than the ranks); the model's, the bridge's and the
/// communicator's errors (an unknown model, a non-finite loss, a lost peer).
pub fn train_forecaster(
    comm: Arc<dyn Communicator>,
    table: &Table,
    opts: &ForecastOptions,
) -> Result<ForecastReport> {
    let world = comm.size();
    if opts.batch_size < world || opts.val_every == 0 {
        return Err(PipelineError::Invalid(format!(
            "a global batch of {} over {world} ranks (validating every {} steps) cannot train",
            opts.batch_size, opts.val_every
        )));
    }
    let start = Instant::now();
    let (train, val, test) = loaders(
        &comm,
        table,
        opts.input_size,
        opts.horizon,
        opts.target,
        opts.batch_size / world,
        opts.seed,
    )?;
    let cfg = ForecastConfig::new(opts.input_size as i64, opts.horizon as i64).size(opts.size);
    let scaling = opts.scaling.unwrap_or_else(|| default_scaling(&opts.model));
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let inner = crate::seeded(opts.seed, || {
        deeprc_models::build(&opts.model, &vs.root(), &cfg)
    })?;
    let model = ChannelIndependent::new(inner, cfg.input_size, cfg.horizon, scaling);
    // Dropout masks from this rank's own generator, so that concurrent
    // ranks and tasks in one process cannot change each other's masks.
    let _masks = RankDropout::seed(opts.seed, comm.rank());
    let mut trainer =
        DistributedTrainer::new(&vs, Arc::clone(&comm), OptimizerKind::adam(), opts.lr)?
            .clip_grad_norm(1.0);
    let parameters = trainer.data_parallel().num_parameters();
    let val_batches = val.batches_per_epoch().max(1);
    let val_every_batch = opts
        .max_val_windows
        .map_or(1, |m| (val_batches * 256 / world / m.max(1)).max(1));
    let bar = progress_bar(opts, comm.rank());
    let (mut best, mut best_step, mut stale) = (f64::INFINITY, 0u64, 0u32);
    let mut snapshot: Option<Vec<Tensor>> = None;
    let mut curve = Vec::new();
    let (mut loss_sum, mut loss_n) = (0.0f64, 0u64);
    let mut epoch = 0u64;
    'train: while trainer.steps() < opts.max_steps {
        let decay = opts
            .lr_epoch_decay
            .powi(i32::try_from(epoch).unwrap_or(i32::MAX));
        trainer.optimizer_mut().set_lr(opts.lr * decay);
        for b in train.epoch(epoch) {
            let b = b?.to_tch(deeprc_core::Device::Cpu)?;
            let loss = model.loss(b.inputs(), b.targets())?;
            loss_sum += trainer.step(&loss)?;
            loss_n += 1;
            let step = trainer.steps();
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            if step % opts.val_every == 0 || step == opts.max_steps {
                let s = evaluate(&comm, &model, &val, val_every_batch, 0, &mut Vec::new())?;
                let val_mse = s[0] / s[2].max(1.0);
                curve.push(CurvePoint {
                    step,
                    train_loss: loss_sum / loss_n.max(1) as f64,
                    val_mse,
                });
                (loss_sum, loss_n) = (0.0, 0);
                if let Some(bar) = &bar {
                    bar.set_message(format!(
                        "val MSE {val_mse:.4} (best {:.4})",
                        best.min(val_mse)
                    ));
                }
                if val_mse < best {
                    (best, best_step, stale) = (val_mse, step, 0);
                    snapshot = Some(
                        trainer
                            .data_parallel()
                            .parameters()
                            .map(|(_, t)| t.detach().copy())
                            .collect(),
                    );
                } else {
                    stale += 1;
                    if stale >= opts.patience {
                        break 'train;
                    }
                }
            }
            if step >= opts.max_steps {
                break 'train;
            }
        }
        epoch += 1;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(best_params) = snapshot {
        tch::no_grad(|| {
            for ((_, p), b) in trainer.data_parallel().parameters().zip(&best_params) {
                let mut p = p.shallow_clone();
                p.copy_(b);
            }
        });
    }
    if let (Some(path), 0) = (&opts.save_to, comm.rank()) {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| PipelineError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        vs.save(path)?;
    }
    let mut examples = Vec::new();
    let s = evaluate(&comm, &model, &test, 1, opts.keep_examples, &mut examples)?;
    let channels = opts.target.channels().len() as f64;
    Ok(ForecastReport {
        model: model.model().name().to_string(),
        horizon: opts.horizon,
        target: opts.target,
        lookback: opts.input_size,
        mse: s[0] / s[2],
        mae: s[1] / s[2],
        steps: trainer.steps(),
        best_step,
        seconds: start.elapsed().as_secs_f64(),
        parameters,
        test_windows: (s[2] / channels / opts.horizon as f64).round() as u64,
        curve,
        examples,
    })
}

fn progress_bar(opts: &ForecastOptions, rank: usize) -> Option<indicatif::ProgressBar> {
    if !opts.progress || rank != 0 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(opts.max_steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>20} [{bar:30}] {pos}/{len} steps {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} h={}", opts.model, opts.horizon));
    Some(bar)
}

/// Forecasts of OT in degrees Celsius for part `part` of `parts` of the
/// test windows (every window's every horizon step), by a model trained
/// with `opts` and saved at `opts.save_to`: the paper's prediction phase, in
/// which each trained model predicts as several parallel tasks.
///
/// Returns a table `model, window, step, forecast, truth`.
///
/// # Errors
/// [`PipelineError::Invalid`] without `save_to` or with `part >= parts`; a
/// missing or mismatched parameter file (libtorch's error); the bridge's.
pub fn predict_part(
    table: &Table,
    opts: &ForecastOptions,
    part: usize,
    parts: usize,
) -> Result<Table> {
    use deeprc_bridge::arrow::array::{ArrayRef, Float32Array, StringArray, UInt32Array};
    let path = opts.save_to.as_ref().ok_or_else(|| {
        PipelineError::Invalid("predict_part needs save_to (the trained model)".into())
    })?;
    if part >= parts {
        return Err(PipelineError::Invalid(format!("part {part} of {parts}")));
    }
    let comm: Arc<dyn Communicator> = Arc::new(
        deeprc_comm::local::create(1, deeprc_comm::CommConfig::default())?
            .pop()
            .ok_or_else(|| PipelineError::Invalid("no communicator".into()))?,
    );
    let cols = opts.target.channels();
    let splits = WindowSpec::new(opts.input_size, opts.horizon, cols, cols)
        .time("date", TimeStep::HOUR)
        .normalize(Normalize::ZScore)
        .split(ETTH1_SPLIT)
        .build(DataSource::from(table).replicated(Arc::clone(&comm)))?;
    let scaler = splits.scaler.clone();
    let test = splits
        .test
        .ok_or_else(|| PipelineError::Invalid("ETTh1 gave no test windows".into()))?;
    let n = deeprc_bridge::Dataset::len(&test);
    let (lo, hi) = (n * part / parts, n * (part + 1) / parts);
    let cfg = ForecastConfig::new(opts.input_size as i64, opts.horizon as i64).size(opts.size);
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let inner = deeprc_models::build(&opts.model, &vs.root(), &cfg)?;
    vs.load(path)?;
    let scaling = opts.scaling.unwrap_or_else(|| default_scaling(&opts.model));
    let model = ChannelIndependent::new(inner, cfg.input_size, cfg.horizon, scaling);
    let loader = Loader::new(
        test,
        SamplerOptions::sequential(256),
        LoaderOptions::default(),
    )?;
    let _guard = tch::no_grad_guard();
    let c = cols.len() as i64;
    let (mut win, mut step, mut fc, mut tr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for b in loader.epoch(0) {
        let b = b?;
        let samples: Vec<u32> = b.samples()[..b.valid()].to_vec();
        if samples
            .iter()
            .all(|&s| (s as usize) < lo || (s as usize) >= hi)
        {
            continue;
        }
        let tb = b.to_tch(deeprc_core::Device::Cpu)?;
        let f = model
            .forward_t(tb.inputs(), false)?
            .select(2, c - 1)
            .contiguous();
        let y = tb.targets().select(2, c - 1).contiguous();
        let mut f: Vec<f32> = Vec::try_from(f.reshape([-1]))?;
        let mut y: Vec<f32> = Vec::try_from(y.reshape([-1]))?;
        scaler.inverse_rows(&["OT"], &mut f)?;
        scaler.inverse_rows(&["OT"], &mut y)?;
        for (i, &s) in samples.iter().enumerate() {
            if (s as usize) < lo || (s as usize) >= hi {
                continue;
            }
            for h in 0..opts.horizon {
                win.push(s);
                step.push(h as u32 + 1);
                fc.push(f[i * opts.horizon + h]);
                tr.push(y[i * opts.horizon + h]);
            }
        }
    }
    let name = model.model().name();
    Ok(Table::from_columns(vec![
        (
            "model",
            Arc::new(StringArray::from(vec![name; win.len()])) as ArrayRef,
        ),
        ("window", Arc::new(UInt32Array::from(win))),
        ("step", Arc::new(UInt32Array::from(step))),
        ("forecast", Arc::new(Float32Array::from(fc))),
        ("truth", Arc::new(Float32Array::from(tr))),
    ])?)
}
