//! Training and prediction of the hydrology LSTM on the windows of the
//! preprocessed table, data-parallel over the table's communicator, in tch
//! ([`deeprc_models::hydro::HydroLstm`] with the bridge's trainer) or in
//! TensorFlow (the SavedModel of `export_hydro.py`, gradients out, our
//! all-reduce, averaged gradients in).

use super::data::{prediction_table, ATTRIBUTES, FORCINGS, TEST_START, VAL_START};
use crate::error::{PipelineError, Result};
use deeprc_bridge::{
    DataSource, Dataset, Loader, LoaderOptions, Normalize, SamplerOptions, Scaler, Split, Splits,
    TimeStep, WindowDataset, WindowSpec,
};
use deeprc_comm::{Communicator, CommunicatorExt, ReduceOp};
use deeprc_frame::{Agg, DistTable};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Which framework trains the LSTM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// libtorch through tch.
    Tch,
    /// TensorFlow through the SavedModel's signatures.
    TensorFlow,
}

impl std::fmt::Display for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Framework::Tch => "tch",
            Framework::TensorFlow => "tensorflow",
        })
    }
}

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HydroLoss {
    /// Mean squared error on the z-scored flow.
    Mse,
    /// Kratzert et al.'s NSE*: each squared error divided by
    /// `(σ_basin + 0.1)²`, `σ_basin` the standard deviation of the
    /// (z-scored) flow of the sample's basin over the training days, so that
    /// a basin with large flows does not dominate the loss (eq. 4 of the
    /// paper).
    NseStar,
}

/// Settings of one hydrology run.
#[derive(Debug, Clone)]
pub struct HydroOptions {
    /// Days per input sequence (Kratzert et al.: 270).
    pub seq_len: usize,
    /// LSTM cells (Kratzert et al.: 256).
    pub hidden: usize,
    /// Dropout on the last hidden state (0.4).
    pub dropout: f64,
    /// Initial bias of the forget gate. Kratzert et al. start at 5 (the
    /// cell keeps its memory), which suits their ~250,000 steps over 531
    /// basins; with the ~1,400 steps that 4 basins and 21 months give, a
    /// PyTorch replica of the same model and init stayed near NSE 0.1
    /// after 3 epochs where a zero bias reached 0.25 after 2 (logs in
    /// `docs/results/logs/camels_init_*.log`), so the default is 0.
    pub forget_bias: f64,
    /// Epochs over the training windows.
    pub epochs: usize,
    /// The global batch, split over the ranks (256).
    pub batch_size: usize,
    /// Adam's learning rate (1e-3) for the first third of the epochs,
    /// halved for the second third and a tenth of it for the last
    /// (Kratzert et al.'s 1e-3, 5e-4, 1e-4 over 30 epochs).
    pub lr: f64,
    /// The loss (NSE*).
    pub loss: HydroLoss,
    /// Seed of the initial weights and the shuffling.
    pub seed: u64,
    /// The framework.
    pub framework: Framework,
    /// Show a progress bar on rank 0 (when stderr is a terminal).
    pub progress: bool,
}

impl Default for HydroOptions {
    fn default() -> Self {
        Self {
            seq_len: 270,
            hidden: 256,
            dropout: 0.4,
            forget_bias: 0.0,
            epochs: 30,
            batch_size: 256,
            lr: 1e-3,
            loss: HydroLoss::NseStar,
            seed: 7,
            framework: Framework::Tch,
            progress: false,
        }
    }
}

/// What one trained model gives back (the same on every rank, but the
/// predictions, which each rank holds for its own windows).
#[derive(Debug)]
pub struct Trained {
    /// This rank's predictions: gauge, date, observed, predicted (mm/day).
    pub predictions: DistTable,
    /// (epoch, mean training loss, validation MSE) on the normalised scale.
    pub curve: Vec<(usize, f64, f64)>,
    /// Optimizer steps.
    pub steps: u64,
    /// Seconds of training and prediction.
    pub seconds: f64,
    /// Windows of the three splits (all ranks).
    pub windows: [u64; 3],
    /// Trainable parameters.
    pub parameters: usize,
}

/// Model input columns: the forcings, then the attributes.
pub fn feature_columns() -> Vec<&'static str> {
    FORCINGS
        .iter()
        .copied()
        .chain(ATTRIBUTES.iter().map(|(_, c)| *c))
        .collect()
}

fn windows(table: &DistTable, seq_len: usize) -> Result<Splits<WindowDataset>> {
    let features = feature_columns();
    Ok(WindowSpec::new(seq_len, 1, &features, &["q_mm"])
        .series("gauge")
        .time("date", TimeStep::DAY)
        .normalize(Normalize::ZScore)
        .split(Split::Time {
            val_start: VAL_START,
            test_start: TEST_START,
        })
        .build(DataSource::from(table).partitioned(Arc::clone(table.comm())))?)
}

/// The global count of a split.
fn global_len(comm: &Arc<dyn Communicator>, ds: Option<&WindowDataset>) -> Result<u64> {
    Ok(comm.all_reduce_scalar(ds.map_or(0, |d| d.len() as u64), ReduceOp::Sum)?)
}

/// Inputs `[B, T, F]` split into forcings `[B, T, 5]` and the attributes
/// of the first day `[B, 12]`.
fn split_inputs(x: &[f32], b: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
    let f = FORCINGS.len() + ATTRIBUTES.len();
    let d = FORCINGS.len();
    let mut dyn_part = Vec::with_capacity(b * t * d);
    let mut stat = Vec::with_capacity(b * (f - d));
    for i in 0..b {
        for s in 0..t {
            let row = &x[(i * t + s) * f..(i * t + s + 1) * f];
            dyn_part.extend_from_slice(&row[..d]);
            if s == 0 {
                stat.extend_from_slice(&row[d..]);
            }
        }
    }
    (dyn_part, stat)
}

/// One framework's model behind the training loop: a step on a batch, a
/// prediction, and the parameters as one flat vector (for the best-epoch
/// snapshot).
trait HydroModel {
    /// One step on a batch; `q_std` (one per sample) selects NSE*.
    fn step(
        &mut self,
        x_dyn: &[f32],
        x_static: &[f32],
        y: &[f32],
        q_std: Option<&[f32]>,
        b: usize,
    ) -> Result<f64>;
    fn set_learning_rate(&mut self, lr: f64) -> Result<()>;
    fn predict(&mut self, x_dyn: &[f32], x_static: &[f32], b: usize) -> Result<Vec<f32>>;
    fn weights(&mut self) -> Result<Vec<f32>>;
    fn set_weights(&mut self, w: &[f32]) -> Result<()>;
    fn parameters(&self) -> usize;
}

/// Trains on the training windows, keeps the parameters of the epoch with
/// the best validation MSE, and predicts every test window.
///
/// # Errors
/// The bridge's (no windows, an empty shard after balancing), the model's
/// and the communicator's errors.
pub fn train_and_predict(table: &DistTable, opts: &HydroOptions) -> Result<Trained> {
    let comm = Arc::clone(table.comm());
    let world = comm.size();
    if opts.batch_size < world {
        return Err(PipelineError::Invalid(format!(
            "a global batch of {} cannot be split over {world} ranks",
            opts.batch_size
        )));
    }
    let start = Instant::now();
    let splits = windows(table, opts.seq_len)?;
    let counts = [
        global_len(&comm, Some(&splits.train))?,
        global_len(&comm, splits.val.as_ref())?,
        global_len(&comm, splits.test.as_ref())?,
    ];
    let scaler = splits.scaler.clone();
    let q_std = match opts.loss {
        HydroLoss::NseStar => Some(basin_flow_std(table, &scaler)?),
        HydroLoss::Mse => None,
    };
    let missing =
        |s: &str| PipelineError::Invalid(format!("no {s} windows (the data ends too early?)"));
    let train = Loader::new(
        splits.train,
        SamplerOptions::shuffled(opts.batch_size / world, opts.seed),
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
    let mut model: Box<dyn HydroModel> = match opts.framework {
        Framework::Tch => Box::new(tch_model::TchHydro::new(Arc::clone(&comm), opts)?),
        Framework::TensorFlow => Box::new(tf_model::TfHydro::new(Arc::clone(&comm), opts)?),
    };
    let parameters = model.parameters();
    let t = opts.seq_len;
    let bar = (opts.progress && comm.rank() == 0).then(|| {
        let bar = indicatif::ProgressBar::new((opts.epochs * train.batches_per_epoch()) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>20} [{bar:30}] {pos}/{len} steps {elapsed_precise} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("LSTM ({})", opts.framework));
        bar
    });
    let mut curve = Vec::new();
    let (mut best, mut best_w) = (f64::INFINITY, None);
    let mut steps = 0u64;
    let train_ds = Arc::clone(train.dataset());
    let mut batch_std = Vec::new();
    for epoch in 0..opts.epochs {
        model.set_learning_rate(scheduled_lr(opts.lr, epoch, opts.epochs))?;
        let (mut sum, mut n) = (0.0, 0usize);
        for b in train.epoch(epoch as u64) {
            let b = b?;
            let x = b.inputs().to_vec::<f32>()?;
            let y = b.targets().to_vec::<f32>()?;
            let (xd, xs) = split_inputs(&x, b.len(), t);
            let weights = match &q_std {
                Some(by_basin) => {
                    batch_std.clear();
                    for &s in b.samples() {
                        let meta = train_ds.meta(s);
                        let basin = meta.series.as_deref().unwrap_or_default();
                        batch_std.push(*by_basin.get(basin).ok_or_else(|| {
                            PipelineError::Invalid(format!(
                                "basin {basin} has no training days for NSE*"
                            ))
                        })?);
                    }
                    Some(batch_std.as_slice())
                }
                None => None,
            };
            sum += model.step(&xd, &xs, &y, weights, b.len())?;
            n += 1;
            steps += 1;
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        let (se, cnt) = squared_errors(model.as_mut(), &val, t, &mut |_, _, _| Ok(()))?;
        let mut sums = [se, cnt];
        comm.all_reduce(&mut sums, ReduceOp::Sum)?;
        let val_mse = sums[0] / sums[1].max(1.0);
        curve.push((epoch, sum / n.max(1) as f64, val_mse));
        if let Some(bar) = &bar {
            bar.set_message(format!("epoch {epoch} val MSE {val_mse:.3}"));
        }
        if val_mse < best {
            best = val_mse;
            best_w = Some(model.weights()?);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(w) = best_w {
        model.set_weights(&w)?;
    }
    let ds = Arc::clone(test.dataset());
    let (mut gauges, mut days, mut obs, mut pred) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    squared_errors(model.as_mut(), &test, t, &mut |samples, y, p| {
        for (k, &s) in samples.iter().enumerate() {
            let meta = ds.meta(s);
            gauges.push(meta.series.as_deref().unwrap_or("?").to_string());
            days.push(meta.time.unwrap_or(0) as i32);
            obs.push(unscale(&scaler, y[k])?);
            pred.push(unscale(&scaler, p[k])?);
        }
        Ok(())
    })?;
    let predictions = DistTable::new(prediction_table(gauges, days, obs, pred)?, comm)?;
    Ok(Trained {
        predictions,
        curve,
        steps,
        seconds: start.elapsed().as_secs_f64(),
        windows: counts,
        parameters,
    })
}

/// Kratzert et al.'s schedule scaled to `epochs`: `lr` for the first
/// third, `lr / 2` for the second, `lr / 10` for the last.
fn scheduled_lr(lr: f64, epoch: usize, epochs: usize) -> f64 {
    match (3 * epoch) / epochs.max(1) {
        0 => lr,
        1 => lr / 2.0,
        _ => lr / 10.0,
    }
}

/// NSE*'s `σ_basin`: the standard deviation of each basin's z-scored flow
/// over the training days (before `VAL_START`), on every rank.
fn basin_flow_std(table: &DistTable, scaler: &Scaler) -> Result<HashMap<String, f32>> {
    let scale = scaler.get("q_mm")?.scale;
    let stds = table
        .filter_sql(&format!("CAST(date AS INT) < {VAL_START}"))?
        .group_by(&["gauge"], &[Agg::std("q_mm").alias("q_std")])?
        .all_gather()?;
    let gauges = stds.column_as::<String>("gauge")?;
    let values = stds.column_as::<f64>("q_std")?;
    Ok(gauges
        .into_iter()
        .zip(values)
        .filter_map(|(g, v)| Some((g?, (v? / scale) as f32)))
        .collect())
}

fn unscale(scaler: &Scaler, v: f32) -> Result<f64> {
    Ok(scaler.inverse("q_mm", f64::from(v))?)
}

/// Called with a batch's valid samples, their targets and predictions.
type EachBatch<'a> = dyn FnMut(&[u32], &[f32], &[f32]) -> Result<()> + 'a;

/// Squared errors and count over this rank's windows of `loader`, calling
/// `each(samples, targets, predictions)` for every batch's valid samples.
fn squared_errors(
    model: &mut dyn HydroModel,
    loader: &Loader<WindowDataset>,
    t: usize,
    each: &mut EachBatch<'_>,
) -> Result<(f64, f64)> {
    let (mut se, mut n) = (0.0, 0.0);
    for b in loader.epoch(0) {
        let b = b?;
        let k = b.valid();
        if k == 0 {
            continue;
        }
        let x = b.inputs().to_vec::<f32>()?;
        let y = b.targets().to_vec::<f32>()?;
        let (xd, xs) = split_inputs(&x, b.len(), t);
        let p = model.predict(&xd, &xs, b.len())?;
        for i in 0..k {
            se += f64::from(p[i] - y[i]).powi(2);
        }
        n += k as f64;
        each(&b.samples()[..k], &y[..k], &p[..k])?;
    }
    Ok((se, n))
}

#[cfg(feature = "tch")]
mod tch_model {
    use super::{HydroModel, HydroOptions, ATTRIBUTES, FORCINGS};
    use crate::error::Result;
    use deeprc_bridge::tch::tch_crate::{self as tch, nn, Tensor};
    use deeprc_bridge::train::{DistributedTrainer, OptimizerKind};
    use deeprc_comm::Communicator;
    use deeprc_models::hydro::{nse_star_loss, HydroLstm, HydroLstmConfig};
    use std::sync::Arc;

    pub(super) struct TchHydro {
        _vs: nn::VarStore,
        model: HydroLstm,
        trainer: DistributedTrainer,
        t: i64,
    }

    impl TchHydro {
        pub(super) fn new(comm: Arc<dyn Communicator>, opts: &HydroOptions) -> Result<Self> {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let cfg = HydroLstmConfig {
                hidden: opts.hidden as i64,
                dropout: opts.dropout,
                seq_len: Some(opts.seq_len as i64),
                initial_forget_bias: opts.forget_bias,
                ..HydroLstmConfig::paper()
            }
            .features(FORCINGS.len() as i64, ATTRIBUTES.len() as i64);
            let model = crate::seeded(opts.seed, || HydroLstm::new(&vs.root(), &cfg))?;
            // Each rank's dropout masks from its own generator: thread
            // ranks share libtorch's, which made runs irreproducible.
            model.set_dropout_seed(
                opts.seed ^ (comm.rank() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let trainer = DistributedTrainer::new(&vs, comm, OptimizerKind::adam(), opts.lr)?
                .clip_grad_norm(1.0);
            Ok(Self {
                _vs: vs,
                model,
                trainer,
                t: opts.seq_len as i64,
            })
        }

        fn inputs(&self, xd: &[f32], xs: &[f32], b: usize) -> (Tensor, Tensor) {
            let b = b as i64;
            (
                Tensor::from_slice(xd).reshape([b, self.t, FORCINGS.len() as i64]),
                Tensor::from_slice(xs).reshape([b, ATTRIBUTES.len() as i64]),
            )
        }
    }

    impl HydroModel for TchHydro {
        fn step(
            &mut self,
            xd: &[f32],
            xs: &[f32],
            y: &[f32],
            q_std: Option<&[f32]>,
            b: usize,
        ) -> Result<f64> {
            let (xd, xs) = self.inputs(xd, xs, b);
            let y = Tensor::from_slice(y).reshape([b as i64, 1]);
            let loss = match q_std {
                Some(q) => {
                    let pred = self.model.forward_t(&xd, &xs, true)?;
                    let q = Tensor::from_slice(q).reshape([b as i64, 1]);
                    nse_star_loss(&pred, &y, &q)?
                }
                None => self.model.mse_loss(&xd, &xs, &y)?,
            };
            Ok(self.trainer.step(&loss)?)
        }
        fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
            self.trainer.optimizer_mut().set_lr(lr);
            Ok(())
        }
        fn predict(&mut self, xd: &[f32], xs: &[f32], b: usize) -> Result<Vec<f32>> {
            let _g = tch::no_grad_guard();
            let (xd, xs) = self.inputs(xd, xs, b);
            let p = self.model.forward_t(&xd, &xs, false)?;
            Ok(Vec::<f32>::try_from(p.reshape([-1]))?)
        }
        fn weights(&mut self) -> Result<Vec<f32>> {
            Ok(self.model.flat_weights()?)
        }
        fn set_weights(&mut self, w: &[f32]) -> Result<()> {
            Ok(self.model.set_flat_weights(w)?)
        }
        fn parameters(&self) -> usize {
            self.model.num_params() as usize
        }
    }
}

#[cfg(not(feature = "tch"))]
mod tch_model {
    use super::{HydroModel, HydroOptions};
    use crate::error::{PipelineError, Result};
    use deeprc_comm::Communicator;
    use std::sync::Arc;

    /// Without the `tch` feature there is no tch model.
    pub(super) enum TchHydro {}

    impl TchHydro {
        pub(super) fn new(_: Arc<dyn Communicator>, _: &HydroOptions) -> Result<Self> {
            Err(PipelineError::Invalid(
                "the tch framework needs the `tch` feature".into(),
            ))
        }
    }

    impl HydroModel for TchHydro {
        fn step(
            &mut self,
            _: &[f32],
            _: &[f32],
            _: &[f32],
            _: Option<&[f32]>,
            _: usize,
        ) -> Result<f64> {
            match *self {}
        }
        fn set_learning_rate(&mut self, _: f64) -> Result<()> {
            match *self {}
        }
        fn predict(&mut self, _: &[f32], _: &[f32], _: usize) -> Result<Vec<f32>> {
            match *self {}
        }
        fn weights(&mut self) -> Result<Vec<f32>> {
            match *self {}
        }
        fn set_weights(&mut self, _: &[f32]) -> Result<()> {
            match *self {}
        }
        fn parameters(&self) -> usize {
            match *self {}
        }
    }
}

mod tf_model {
    use super::{HydroModel, HydroOptions, ATTRIBUTES, FORCINGS};
    use crate::error::{PipelineError, Result};
    use deeprc_bridge::tensorflow::{HydroExport, HydroGradientModel};
    use deeprc_comm::{Communicator, CommunicatorExt, ReduceOp};
    use std::sync::Arc;

    /// The SavedModel: gradients out of TensorFlow, averaged over the ranks
    /// here, applied by its own Adam.
    pub(super) struct TfHydro {
        model: HydroGradientModel,
        comm: Arc<dyn Communicator>,
        grads: Vec<f32>,
    }

    impl TfHydro {
        pub(super) fn new(comm: Arc<dyn Communicator>, opts: &HydroOptions) -> Result<Self> {
            let export = HydroExport {
                seq_len: opts.seq_len,
                dyn_features: FORCINGS.len(),
                static_features: ATTRIBUTES.len(),
                hidden: opts.hidden,
                dropout: opts.dropout as f32,
                forget_bias: opts.forget_bias as f32,
                learning_rate: opts.lr as f32,
                seed: opts.seed,
                ..HydroExport::paper()
            };
            // Rank 0 exports into a folder named by a nonce it broadcasts;
            // the ranks (threads or processes of one host) load it.
            let nonce = comm.broadcast_pod(0, &[std::process::id() as u64 ^ now_nanos()])?[0];
            let dir = std::env::temp_dir().join(format!("deeprc-hydro-{nonce:016x}"));
            let exported = if comm.rank() == 0 {
                export.export(&dir).map_err(PipelineError::from)
            } else {
                Ok(())
            };
            let ok = comm.all_reduce_scalar(u8::from(exported.is_ok()), ReduceOp::Min)?;
            exported?;
            if ok == 0 {
                return Err(PipelineError::Invalid(
                    "rank 0 could not export the TensorFlow model".into(),
                ));
            }
            let loaded = HydroGradientModel::load(&dir);
            comm.barrier()?;
            if comm.rank() == 0 {
                let _ = std::fs::remove_dir_all(&dir);
            }
            let mut model = loaded?;
            // Rank 0's weights on every rank.
            let w = comm.broadcast_pod(0, &model.weights()?)?;
            model.set_weights(&w)?;
            let n = model.num_params();
            if n != export.num_params() {
                return Err(PipelineError::Invalid(format!(
                    "the exported model has {n} parameters, expected {}",
                    export.num_params()
                )));
            }
            Ok(Self {
                model,
                comm,
                grads: vec![0.0; n + 1],
            })
        }
    }

    fn now_nanos() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    impl HydroModel for TfHydro {
        fn step(
            &mut self,
            xd: &[f32],
            xs: &[f32],
            y: &[f32],
            q_std: Option<&[f32]>,
            _b: usize,
        ) -> Result<f64> {
            let n = self.model.num_params();
            let loss = match q_std {
                Some(q) => self
                    .model
                    .nse_gradients_into(xd, xs, y, q, &mut self.grads[..n])?,
                None => self.model.gradients_into(xd, xs, y, &mut self.grads[..n])?,
            };
            self.grads[n] = loss;
            self.comm.all_reduce(&mut self.grads, ReduceOp::Sum)?;
            let w = self.comm.size() as f32;
            self.grads.iter_mut().for_each(|g| *g /= w);
            let mean = f64::from(self.grads[n]);
            if !mean.is_finite() {
                return Err(PipelineError::Bridge(
                    deeprc_bridge::BridgeError::NonFiniteLoss {
                        step: 0,
                        ranks: self.comm.size(),
                        loss: mean,
                    },
                ));
            }
            self.model.apply_gradients(&self.grads[..n])?;
            Ok(mean)
        }
        fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
            Ok(self.model.set_learning_rate(lr as f32)?)
        }
        fn predict(&mut self, xd: &[f32], xs: &[f32], _b: usize) -> Result<Vec<f32>> {
            Ok(self.model.predict(xd, xs)?)
        }
        fn weights(&mut self) -> Result<Vec<f32>> {
            Ok(self.model.weights()?)
        }
        fn set_weights(&mut self, w: &[f32]) -> Result<()> {
            Ok(self.model.set_weights(w)?)
        }
        fn parameters(&self) -> usize {
            self.model.num_params()
        }
    }
}
