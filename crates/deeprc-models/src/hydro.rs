//! The hydrology LSTM: daily streamflow of a catchment from its weather
//! and its attributes (Kratzert et al. 2019, "Towards learning universal,
//! regional, and local hydrological behaviors via machine learning applied
//! to large-sample datasets", HESS 23, 5089-5110; their code
//! `kratzert/ealstm_regional_modeling`, the LSTM with static inputs
//! concatenated at every step), trained by Deep RC on CAMELS-US.
//!
//! ```text
//!  x_dyn    [B, T, F_dyn]     daily forcings (Daymet prcp, srad, tmax, tmin, vp)
//!  x_static [B, F_static]     catchment attributes, repeated at every day
//!  x = concat(x_dyn, x_static)                [B, T, I]   I = F_dyn + F_static
//!  h_T = LSTM(x)[:, T-1]                      [B, H]      zero initial state
//!  y = dropout(h_T) @ head.weight + head.bias [B, 1]      streamflow of day T
//! ```
//!
//! The cell is Kratzert's: `gates = x_t W_ih + h W_hh + b` split into
//! `f, i, o, g` (in that order), `c = σ(f) c + σ(i) tanh(g)`,
//! `h = σ(o) tanh(c)`, with their initialisation: `W_ih` orthogonal,
//! `W_hh` four identity blocks, `b` zero except the forget block (5). The
//! head is a PyTorch `Linear(H, 1)` (uniform in `±1/sqrt(H)`). It runs
//! through libtorch's fused LSTM (cuDNN on a GPU), the weights reordered
//! into PyTorch's `i, f, g, o` layout on every call, so gradients reach
//! the parameters in Kratzert's layout.
//!
//! This is the twin of the TensorFlow SavedModel of
//! `crates/deeprc-bridge/python/export_hydro.py`: the same parameters in
//! the same flat order ([`HydroLstm::flat_weights`]), so a weight vector
//! moves between the two and gives the same predictions.
//!
//! | hyperparameter | paper ([`HydroLstmConfig::paper`]) | small |
//! |---|---|---|
//! | days per sample `T` | 270 | 30 |
//! | forcings `F_dyn` / attributes `F_static` | 5 / 27 | 5 / 27 |
//! | LSTM cells `H` | 256 | 16 |
//! | dropout (on `h_T`) | 0.4 | 0.4 |
//! | initial forget bias | 5 | 5 |
//! | parameters | 296 193 | 3 153 |
//!
//! Kratzert et al. train with Adam (lr 1e-3, 5e-4 from epoch 11, 1e-4 from
//! epoch 21), batches of 256, gradients clipped to norm 1, and the NSE*
//! loss ([`nse_star_loss`]) or the MSE.
//!
//! Not a [`Forecaster`](crate::Forecaster): it takes two inputs.

use crate::{ModelError, ModelSize, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::{Mutex, PoisonError};
use tch::{nn, Kind, Reduction, Tensor};

/// The model's name in errors.
const MODEL: &str = "HydroLSTM";

/// The `ε` of NSE*: `(q_std + ε)^2` divides each squared error.
pub const NSE_EPS: f64 = 0.1;

/// Hyperparameters of [`HydroLstm`].
#[derive(Debug, Clone, PartialEq)]
pub struct HydroLstmConfig {
    /// Dynamic (daily forcing) features per day, `F_dyn` (at least 1).
    pub dyn_features: i64,
    /// Static catchment attributes per sample, `F_static` (0: none, the
    /// LSTM sees the forcings only).
    pub static_features: i64,
    /// LSTM cells, `H` (at least 1).
    pub hidden: i64,
    /// Dropout probability on the last hidden state in training, in
    /// `[0, 1)`.
    pub dropout: f64,
    /// Days per sample, `T`: `Some` makes [`HydroLstm::forward_t`] refuse
    /// other lengths (as the TensorFlow SavedModel does); `None` takes any.
    pub seq_len: Option<i64>,
    /// Initial value of the forget gate bias (Kratzert et al.: 5, so the
    /// cell keeps its memory at first).
    pub initial_forget_bias: f64,
}

impl Default for HydroLstmConfig {
    fn default() -> Self {
        Self::paper()
    }
}

impl HydroLstmConfig {
    /// The paper's configuration (the defaults of `export_hydro.py`): 270
    /// days of 5 forcings, 27 attributes, 256 cells, dropout 0.4, forget
    /// bias 5.
    pub fn paper() -> Self {
        Self {
            dyn_features: 5,
            static_features: 27,
            hidden: 256,
            dropout: 0.4,
            seq_len: Some(270),
            initial_forget_bias: 5.0,
        }
    }

    /// The same structure, narrow and on short sequences: 30 days, 16
    /// cells.
    pub fn small() -> Self {
        Self {
            hidden: 16,
            seq_len: Some(30),
            ..Self::paper()
        }
    }

    /// [`paper`](Self::paper) or [`small`](Self::small).
    pub fn from_size(size: ModelSize) -> Self {
        match size {
            ModelSize::Paper | ModelSize::Etth1 => Self::paper(),
            ModelSize::Small => Self::small(),
        }
    }

    /// The same with `dyn_features` forcings and `static_features`
    /// attributes.
    pub fn features(mut self, dyn_features: i64, static_features: i64) -> Self {
        self.dyn_features = dyn_features;
        self.static_features = static_features;
        self
    }

    /// The same with another sequence length (`None`: any).
    pub fn seq_len(mut self, seq_len: Option<i64>) -> Self {
        self.seq_len = seq_len;
        self
    }

    /// The same with another dropout probability.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// The LSTM's input size `I = F_dyn + F_static`.
    pub fn input_size(&self) -> i64 {
        self.dyn_features + self.static_features
    }

    /// The number of parameters, `4H (I + H + 1) + H + 1`.
    pub fn num_params(&self) -> i64 {
        4 * self.hidden * (self.input_size() + self.hidden + 1) + self.hidden + 1
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(ModelError::InvalidConfig {
                model: MODEL,
                reason,
            })
        };
        if self.dyn_features < 1 {
            return bad(format!(
                "dyn_features is {}; it needs at least one forcing",
                self.dyn_features
            ));
        }
        if self.static_features < 0 {
            return bad(format!(
                "static_features is {} (0 for none)",
                self.static_features
            ));
        }
        if self.hidden < 1 {
            return bad(format!(
                "hidden is {}; it needs at least one cell",
                self.hidden
            ));
        }
        if let Some(t) = self.seq_len {
            if t < 1 {
                return bad(format!("seq_len is {t}; a sample needs at least one day"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if !self.initial_forget_bias.is_finite() {
            return bad(format!(
                "initial_forget_bias {} is not finite",
                self.initial_forget_bias
            ));
        }
        Ok(())
    }
}

/// The hydrology LSTM (see the module documentation).
///
/// Parameters, under the path given to [`HydroLstm::new`], in the flat
/// order shared with the TensorFlow SavedModel: `lstm.weight_ih [I, 4H]`,
/// `lstm.weight_hh [H, 4H]`, `lstm.bias [4H]`, `head.weight [H, 1]`,
/// `head.bias [1]`.
#[derive(Debug)]
pub struct HydroLstm {
    cfg: HydroLstmConfig,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias: Tensor,
    head_weight: Tensor,
    head_bias: Tensor,
    /// Columns of Kratzert's `f, i, o, g` gates in PyTorch's `i, f, g, o`
    /// order.
    gate_order: Tensor,
    /// The model's own dropout generator, when seeded
    /// ([`set_dropout_seed`](Self::set_dropout_seed)).
    dropout_rng: Mutex<Option<StdRng>>,
}

impl HydroLstm {
    /// Builds the model under `p` with Kratzert's initialisation.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for zero or negative sizes, a dropout
    /// outside `[0, 1)` or a non-finite forget bias; [`ModelError::Torch`]
    /// if libtorch fails.
    pub fn new(p: &nn::Path<'_>, cfg: &HydroLstmConfig) -> Result<Self> {
        cfg.validate()?;
        let (i, h) = (cfg.input_size(), cfg.hidden);
        let opts = (p.kind(), p.device());
        let lstm = p / "lstm";
        let weight_ih = lstm.f_var("weight_ih", &[i, 4 * h], nn::Init::Orthogonal { gain: 1.0 })?;
        let weight_hh = lstm.f_var_copy("weight_hh", &Tensor::f_eye(h, opts)?.f_repeat([1, 4])?)?;
        let bias0 = Tensor::f_cat(
            &[
                Tensor::f_full([h], cfg.initial_forget_bias, opts)?,
                Tensor::f_zeros([3 * h], opts)?,
            ],
            0,
        )?;
        let bias = lstm.f_var_copy("bias", &bias0)?;
        let head = p / "head";
        let bound = 1.0 / (h as f64).sqrt();
        let uniform = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let head_weight = head.f_var("weight", &[h, 1], uniform)?;
        let head_bias = head.f_var("bias", &[1], uniform)?;
        // PyTorch's gate blocks i, f, g, o are Kratzert's blocks 1, 0, 3, 2.
        let order: Vec<i64> = [1, 0, 3, 2]
            .iter()
            .flat_map(|&blk| (blk * h)..((blk + 1) * h))
            .collect();
        let gate_order = Tensor::f_from_slice(&order)?.f_to_device(p.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            weight_ih,
            weight_hh,
            bias,
            head_weight,
            head_bias,
            gate_order,
            dropout_rng: Mutex::new(None),
        })
    }

    /// Draws this model's dropout masks from its own generator, seeded with
    /// `seed`, instead of libtorch's process-wide one.
    ///
    /// Thread ranks share one process and so one libtorch generator: the
    /// masks each rank drew depended on how the threads interleaved, and
    /// two runs with the same seed differed (a median NSE of 0.585 once and
    /// 0.561 on the rerun of the same seed). With a seed per rank each
    /// rank's masks depend only on its seed and its steps.
    ///
    /// ```
    /// # use deeprc_models::hydro::{HydroLstm, HydroLstmConfig};
    /// # use tch::{nn, Device, Kind, Tensor};
    /// let vs = nn::VarStore::new(Device::Cpu);
    /// let model = HydroLstm::new(&vs.root(), &HydroLstmConfig::small().features(2, 1).dropout(0.5))?;
    /// let (xd, xs) = (Tensor::ones([3, 30, 2], (Kind::Float, Device::Cpu)), Tensor::ones([3, 1], (Kind::Float, Device::Cpu)));
    /// model.set_dropout_seed(7);
    /// let a = model.forward_t(&xd, &xs, true)?;
    /// model.set_dropout_seed(7);
    /// let b = model.forward_t(&xd, &xs, true)?;
    /// assert!(a.equal(&b));
    /// # Ok::<(), deeprc_models::ModelError>(())
    /// ```
    pub fn set_dropout_seed(&self, seed: u64) {
        *self
            .dropout_rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(StdRng::seed_from_u64(seed));
    }

    /// Inverted dropout of `x: [B, H]`, with the model's generator when it
    /// has one.
    fn dropout(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let p = self.cfg.dropout;
        if !train || p == 0.0 {
            return Ok(x.shallow_clone());
        }
        let mut rng = self
            .dropout_rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(rng) = rng.as_mut() else {
            return Ok(x.f_dropout(p, train)?);
        };
        let keep = (1.0 / (1.0 - p)) as f32;
        let n = x.numel();
        let mask: Vec<f32> = (0..n)
            .map(|_| if rng.gen::<f64>() < p { 0.0 } else { keep })
            .collect();
        let mask = Tensor::f_from_slice(&mask)?
            .f_reshape(x.size())?
            .f_to_kind(x.kind())?
            .f_to_device(x.device())?;
        Ok(x.f_mul(&mask)?)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &HydroLstmConfig {
        &self.cfg
    }

    /// The parameters in the flat order (shared with the SavedModel).
    pub fn parameters(&self) -> [&Tensor; 5] {
        [
            &self.weight_ih,
            &self.weight_hh,
            &self.bias,
            &self.head_weight,
            &self.head_bias,
        ]
    }

    /// The number of parameters (`P`).
    pub fn num_params(&self) -> i64 {
        self.cfg.num_params()
    }

    /// Checks `x_dyn: [B, T, F_dyn]` and `x_static: [B, F_static]`; `B`.
    fn check_inputs(&self, x_dyn: &Tensor, x_static: &Tensor) -> Result<i64> {
        let c = &self.cfg;
        let d = x_dyn.size();
        let t_ok = |t: i64| c.seq_len.map_or(t >= 1, |want| t == want);
        if d.len() != 3 || d[0] < 1 || !t_ok(d[1]) || d[2] != c.dyn_features {
            let t = c.seq_len.map_or("T".to_string(), |t| t.to_string());
            return Err(ModelError::Shape {
                model: MODEL,
                expected: format!("x_dyn [B >= 1, {t}, {}]", c.dyn_features),
                got: d,
            });
        }
        let s = x_static.size();
        if s.len() != 2 || s[0] != d[0] || s[1] != c.static_features {
            return Err(ModelError::Shape {
                model: MODEL,
                expected: format!("x_static [{}, {}] (B of x_dyn)", d[0], c.static_features),
                got: s,
            });
        }
        Ok(d[0])
    }

    /// Streamflow predictions `[B, 1]` of `x_dyn: [B, T, F_dyn]` and
    /// `x_static: [B, F_static]` (float, on the model's device), with
    /// dropout on when `train`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] for inputs of other shapes (or another `T`
    /// than `seq_len`); [`ModelError::Torch`] if libtorch fails (e.g.
    /// another dtype or device).
    pub fn forward_t(&self, x_dyn: &Tensor, x_static: &Tensor, train: bool) -> Result<Tensor> {
        let b = self.check_inputs(x_dyn, x_static)?;
        let t = x_dyn.size()[1];
        let h = self.cfg.hidden;
        let x = if self.cfg.static_features > 0 {
            let stat = x_static
                .f_unsqueeze(1)?
                .f_expand([b, t, self.cfg.static_features], false)?;
            Tensor::f_cat(&[x_dyn, &stat], 2)?
        } else {
            x_dyn.shallow_clone()
        };
        // Kratzert's [in, 4H] blocks f, i, o, g -> PyTorch's [4H, in] i, f, g, o.
        let w_ih = self
            .weight_ih
            .f_index_select(1, &self.gate_order)?
            .f_transpose(0, 1)?
            .f_contiguous()?;
        let w_hh = self
            .weight_hh
            .f_index_select(1, &self.gate_order)?
            .f_transpose(0, 1)?
            .f_contiguous()?;
        let b_ih = self.bias.f_index_select(0, &self.gate_order)?;
        let b_hh = Tensor::f_zeros([4 * h], (self.bias.kind(), self.bias.device()))?;
        let zeros = Tensor::f_zeros([1, b, h], (x.kind(), x.device()))?;
        let (_, h_n, _) = x.f_lstm(
            &[&zeros, &zeros],
            &[&w_ih, &w_hh, &b_ih, &b_hh],
            true,
            1,
            0.0,
            train,
            false,
            true,
        )?;
        let last = self.dropout(&h_n.f_squeeze_dim(0)?, train)?;
        Ok(last.f_matmul(&self.head_weight)?.f_add(&self.head_bias)?)
    }

    /// The mean squared error of the training-mode predictions against
    /// `y: [B, 1]`.
    ///
    /// # Errors
    /// As [`forward_t`](Self::forward_t); [`ModelError::Shape`] when `y` is
    /// not `[B, 1]`.
    pub fn mse_loss(&self, x_dyn: &Tensor, x_static: &Tensor, y: &Tensor) -> Result<Tensor> {
        let pred = self.forward_t(x_dyn, x_static, true)?;
        check_target("y", &pred, y)?;
        Ok(pred.f_mse_loss(y, Reduction::Mean)?)
    }

    /// All parameters as one flat vector (`P` values, in the order of
    /// [`parameters`](Self::parameters), each row-major): the layout of
    /// the SavedModel's `get_weights`.
    ///
    /// # Errors
    /// [`ModelError::Torch`] if libtorch fails.
    pub fn flat_weights(&self) -> Result<Vec<f32>> {
        let parts = self
            .parameters()
            .iter()
            .map(|p| p.f_detach()?.f_reshape([-1]))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let flat = Tensor::f_cat(&parts, 0)?
            .f_to_kind(Kind::Float)?
            .f_to_device(tch::Device::Cpu)?;
        Ok(Vec::<f32>::try_from(&flat)?)
    }

    /// Sets every parameter from a flat vector in the order of
    /// [`flat_weights`](Self::flat_weights) (e.g. a TensorFlow
    /// `get_weights`).
    ///
    /// # Errors
    /// [`ModelError::Shape`] when `w` does not have `P` values;
    /// [`ModelError::Torch`] if libtorch fails.
    pub fn set_flat_weights(&self, w: &[f32]) -> Result<()> {
        let n = self.num_params();
        if w.len() as i64 != n {
            return Err(ModelError::Shape {
                model: MODEL,
                expected: format!("{n} flat weights"),
                got: vec![w.len() as i64],
            });
        }
        let mut off = 0usize;
        tch::no_grad(|| -> Result<()> {
            for p in self.parameters() {
                let len = p.numel();
                let src = Tensor::f_from_slice(&w[off..off + len])?
                    .f_reshape(p.size())?
                    .f_to_kind(p.kind())?
                    .f_to_device(p.device())?;
                p.shallow_clone().f_copy_(&src)?;
                off += len;
            }
            Ok(())
        })
    }
}

fn check_target(name: &str, pred: &Tensor, t: &Tensor) -> Result<()> {
    if t.size() != pred.size() {
        return Err(ModelError::Shape {
            model: MODEL,
            expected: format!("{name} {:?}", pred.size()),
            got: t.size(),
        });
    }
    Ok(())
}

/// NSE* of Kratzert et al. (2019, eq. 4): `mean((pred - y)^2 / (q_std +
/// 0.1)^2)` over predictions `pred: [B, 1]`, targets `y: [B, 1]` and
/// `q_std: [B, 1]`, the standard deviation of the discharge of each
/// sample's basin over the training period (so that every basin counts
/// alike whatever its flow). The SavedModel's `nse_gradients` uses the
/// same loss.
///
/// # Errors
/// [`ModelError::Shape`] when the three shapes differ; [`ModelError::Torch`]
/// if libtorch fails.
pub fn nse_star_loss(pred: &Tensor, y: &Tensor, q_std: &Tensor) -> Result<Tensor> {
    check_target("y", pred, y)?;
    check_target("q_std", pred, q_std)?;
    let err = pred.f_sub(y)?.f_square()?;
    let w = q_std.f_add_scalar(NSE_EPS)?.f_square()?;
    Ok(err.f_div(&w)?.f_mean(Kind::Float)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::OptimizerConfig, Device};

    fn setup() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
    }

    fn randn(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    fn small(dyn_features: i64, static_features: i64, seq_len: Option<i64>) -> HydroLstmConfig {
        HydroLstmConfig::small()
            .features(dyn_features, static_features)
            .seq_len(seq_len)
    }

    #[test]
    fn output_is_one_value_per_sample() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let m = HydroLstm::new(&vs.root(), &small(5, 27, None)).unwrap();
        for (b, t) in [(4, 30), (1, 7), (3, 1)] {
            let y = m
                .forward_t(&randn(&[b, t, 5]), &randn(&[b, 27]), true)
                .unwrap();
            assert_eq!(y.size(), vec![b, 1]);
        }
        // No attributes: the forcings alone.
        let vs = nn::VarStore::new(Device::Cpu);
        let m = HydroLstm::new(&vs.root(), &small(3, 0, Some(10))).unwrap();
        let y = m
            .forward_t(&randn(&[2, 10, 3]), &randn(&[2, 0]), false)
            .unwrap();
        assert_eq!(y.size(), vec![2, 1]);
        assert_eq!(vs.len(), 5);
    }

    #[test]
    fn parameter_names_shapes_and_count_are_the_documented_ones() {
        setup();
        let cfg = HydroLstmConfig::paper();
        assert_eq!(cfg.num_params(), 296_193);
        assert_eq!(HydroLstmConfig::small().num_params(), 3_153);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = HydroLstm::new(&(vs.root() / "hydro"), &cfg).unwrap();
        let vars = vs.variables();
        let shape = |n: &str| vars[n].size();
        assert_eq!(shape("hydro.lstm.weight_ih"), vec![32, 1024]);
        assert_eq!(shape("hydro.lstm.weight_hh"), vec![256, 1024]);
        assert_eq!(shape("hydro.lstm.bias"), vec![1024]);
        assert_eq!(shape("hydro.head.weight"), vec![256, 1]);
        assert_eq!(shape("hydro.head.bias"), vec![1]);
        let total: i64 = vars.values().map(|v| v.numel() as i64).sum();
        assert_eq!(total, m.num_params());
        // Kratzert's initialisation.
        let b = Vec::<f32>::try_from(&vars["hydro.lstm.bias"]).unwrap();
        assert!(b[..256].iter().all(|&x| x == 5.0) && b[256..].iter().all(|&x| x == 0.0));
        let eye = Tensor::eye(256, (Kind::Float, Device::Cpu));
        let whh = &vars["hydro.lstm.weight_hh"];
        assert!(whh.narrow(1, 512, 256).equal(&eye));
        let wih = &vars["hydro.lstm.weight_ih"];
        let gram = wih.matmul(&wih.tr());
        let eye32 = Tensor::eye(32, (Kind::Float, Device::Cpu));
        assert!(gram.allclose(&eye32, 1e-4, 1e-4, false), "orthogonal rows");
    }

    #[test]
    fn gradients_reach_every_parameter() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let m = HydroLstm::new(&vs.root(), &small(5, 4, Some(12))).unwrap();
        let loss = m
            .mse_loss(&randn(&[8, 12, 5]), &randn(&[8, 4]), &randn(&[8, 1]))
            .unwrap();
        loss.backward();
        for (name, v) in vs.variables() {
            let g = v.grad();
            assert!(g.defined(), "{name} has no gradient");
            let norm = g.abs().sum(Kind::Float).double_value(&[]);
            assert!(norm > 0.0, "{name} gets a zero gradient");
        }
    }

    /// A linear reservoir per basin: storage fills with rain and drains at
    /// a basin-specific rate `k` (the first attribute); the runoff of the
    /// last day is `k * S_T`. Forcings: rain and a noise feature.
    fn reservoir(b: i64, t: i64) -> (Tensor, Tensor, Tensor) {
        let rain = randn(&[b, t]).relu();
        let noise = randn(&[b, t]);
        let k = Tensor::rand([b], (Kind::Float, Device::Cpu)) * 0.4 + 0.1;
        let rain_v = Vec::<f32>::try_from(&rain.reshape([-1])).unwrap();
        let k_v = Vec::<f32>::try_from(&k).unwrap();
        let q: Vec<f32> = (0..b as usize)
            .map(|i| {
                let mut s = 0.0f32;
                for d in 0..t as usize {
                    s = s + rain_v[i * t as usize + d] - k_v[i] * s;
                }
                k_v[i] * s
            })
            .collect();
        let x_dyn = Tensor::stack(&[rain, noise], 2);
        let x_static = Tensor::stack(&[(&k - 0.3) / 0.12, randn(&[b])], 1);
        (x_dyn, x_static, Tensor::from_slice(&q).reshape([b, 1]))
    }

    #[test]
    fn adam_learns_a_rainfall_runoff_toy() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = small(2, 2, Some(20)).dropout(0.0);
        let m = HydroLstm::new(&vs.root(), &cfg).unwrap();
        let (xd, xs, y) = reservoir(64, 20);
        let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
        let mut losses = Vec::new();
        for _ in 0..80 {
            let loss = m.mse_loss(&xd, &xs, &y).unwrap();
            opt.backward_step_clip_norm(&loss, 1.0);
            losses.push(loss.double_value(&[]));
        }
        let first = losses[0];
        let last = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
        assert!(last < 0.5 * first, "loss {first:.4} -> {last:.4}");
        // Better than the mean runoff: it learnt the reservoir, not a constant.
        let var = y.var(false).double_value(&[]);
        assert!(last < 0.5 * var, "loss {last:.4} vs variance {var:.4}");
    }

    #[test]
    fn nse_star_weighs_each_error_by_its_basin() {
        setup();
        let pred = Tensor::from_slice(&[1.0f32, 2.0]).reshape([2, 1]);
        let y = Tensor::from_slice(&[0.0f32, 0.0]).reshape([2, 1]);
        let q = Tensor::from_slice(&[0.9f32, 1.9]).reshape([2, 1]);
        // (1 / 1 + 4 / 4) / 2
        let l = nse_star_loss(&pred, &y, &q).unwrap().double_value(&[]);
        assert!((l - 1.0).abs() < 1e-6, "{l}");
        assert!(matches!(
            nse_star_loss(&pred, &y, &q.reshape([2])),
            Err(ModelError::Shape { .. })
        ));
    }

    /// The TensorFlow twin (export_hydro.py --seq-len 6 --dyn 3 --static 2
    /// --hidden 4), given weights w[k] = 0.3 sin(0.7 k + 0.1), predicts
    /// these for x_dyn = cos(0.3 i), x_static = sin(1.3 j + 0.5) (flat
    /// row-major indices).
    #[test]
    fn matches_the_tensorflow_savedmodel_for_the_same_weights() {
        setup();
        let cfg = HydroLstmConfig {
            hidden: 4,
            ..small(3, 2, Some(6))
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let twin = HydroLstm::new(&vs.root(), &cfg).unwrap();
        assert_eq!(twin.num_params(), 165);
        let w: Vec<f32> = (0..165)
            .map(|k| (0.3 * (0.7 * k as f64 + 0.1).sin()) as f32)
            .collect();
        twin.set_flat_weights(&w).unwrap();
        assert_eq!(twin.flat_weights().unwrap(), w);
        let xd: Vec<f32> = (0..3 * 6 * 3)
            .map(|i| (0.3 * i as f64).cos() as f32)
            .collect();
        let xs: Vec<f32> = (0..3 * 2)
            .map(|j| (1.3 * j as f64 + 0.5).sin() as f32)
            .collect();
        let y = twin
            .forward_t(
                &Tensor::from_slice(&xd).reshape([3, 6, 3]),
                &Tensor::from_slice(&xs).reshape([3, 2]),
                false,
            )
            .unwrap();
        let y = Vec::<f32>::try_from(&y.reshape([-1])).unwrap();
        let tf = [0.199_960_8f32, 0.286_857_16, 0.141_443_79];
        for (a, b) in y.iter().zip(tf) {
            assert!((a - b).abs() < 1e-5, "tch {y:?} vs TensorFlow {tf:?}");
        }
        assert!(matches!(
            twin.set_flat_weights(&w[1..]),
            Err(ModelError::Shape { .. })
        ));
    }

    /// Two thread ranks share libtorch's generator; a seeded model's masks
    /// depend on its seed alone, whatever else draws from that generator.
    #[test]
    fn seeded_dropout_ignores_other_users_of_the_global_generator() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let m = HydroLstm::new(&vs.root(), &small(3, 2, Some(6)).dropout(0.5)).unwrap();
        let (xd, xs) = (randn(&[64, 6, 3]), randn(&[64, 2]));
        let run = |seed: u64, noise: bool| {
            m.set_dropout_seed(seed);
            let mut outs = Vec::new();
            for _ in 0..3 {
                if noise {
                    let _ = randn(&[1000]).dropout(0.5, true);
                }
                outs.push(m.forward_t(&xd, &xs, true).unwrap());
            }
            Tensor::cat(&outs, 0)
        };
        let a = run(11, false);
        assert!(a.equal(&run(11, true)), "the same seed gave other masks");
        assert!(
            !a.equal(&run(12, false)),
            "another seed gave the same masks"
        );
        // Training mode differs from evaluation (masks are drawn) and about
        // half the hidden units are kept: the mask's mean is about 1.
        let eval = m.forward_t(&xd, &xs, false).unwrap();
        assert!(!a.narrow(0, 0, 64).equal(&eval));
        let h = Tensor::ones([200, 50], (Kind::Float, Device::Cpu));
        m.set_dropout_seed(3);
        let kept = m.dropout(&h, true).unwrap();
        let mean = kept.mean(Kind::Float).double_value(&[]);
        assert!((mean - 1.0).abs() < 0.05, "{mean}");
    }

    #[test]
    fn impossible_configurations_and_inputs_are_errors() {
        setup();
        let bad = [
            HydroLstmConfig {
                hidden: 0,
                ..HydroLstmConfig::small()
            },
            HydroLstmConfig::small().features(0, 27),
            HydroLstmConfig::small().features(5, -1),
            HydroLstmConfig::small().seq_len(Some(0)),
            HydroLstmConfig::small().dropout(1.0),
            HydroLstmConfig {
                initial_forget_bias: f64::NAN,
                ..HydroLstmConfig::small()
            },
        ];
        for cfg in bad {
            let vs = nn::VarStore::new(Device::Cpu);
            match HydroLstm::new(&vs.root(), &cfg) {
                Err(ModelError::InvalidConfig { model, .. }) => assert_eq!(model, "HydroLSTM"),
                other => panic!("{cfg:?}: expected InvalidConfig, got {other:?}"),
            }
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let m = HydroLstm::new(&vs.root(), &small(5, 3, Some(10))).unwrap();
        let shape_err = |xd: &[i64], xs: &[i64]| {
            matches!(
                m.forward_t(&randn(xd), &randn(xs), false),
                Err(ModelError::Shape { .. })
            )
        };
        assert!(shape_err(&[2, 9, 5], &[2, 3]), "wrong T");
        assert!(shape_err(&[2, 10, 4], &[2, 3]), "wrong F_dyn");
        assert!(shape_err(&[2, 10, 5], &[3, 3]), "batch mismatch");
        assert!(shape_err(&[2, 10, 5], &[2, 2]), "wrong F_static");
        assert!(shape_err(&[10, 5], &[2, 3]), "rank");
        assert!(shape_err(&[0, 10, 5], &[0, 3]), "empty batch");
        let loss = m.mse_loss(&randn(&[2, 10, 5]), &randn(&[2, 3]), &randn(&[2]));
        assert!(matches!(loss, Err(ModelError::Shape { .. })));
    }
}
