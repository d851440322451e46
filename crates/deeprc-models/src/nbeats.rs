//! NBEATS (Oreshkin et al. 2020, "N-BEATS: Neural basis expansion analysis
//! for interpretable time series forecasting", ICLR): stacks of fully
//! connected blocks, each of which reads the residual of the window that
//! the blocks before it could not explain (the backcast residual) and adds
//! its own partial forecast to the sum.
//!
//! ```text
//!  r_0 = flip(x) [N, L]           forecast_0 = x[:, L-1]  (the naive level, [N, 1] broadcast to H)
//!  block b:  theta = FC stack(r_b)              4 x (Linear + ReLU), then Linear -> theta
//!            backcast, partial = basis(theta)   [N, L], [N, H]
//!            r_{b+1} = r_b - backcast           forecast_{b+1} = forecast_b + partial
//!  out: forecast after the last block, [N, H]
//! ```
//!
//! As in the paper's code and NeuralForecast, the window is fed
//! time-reversed (the most recent value first) and the forecast starts
//! from the last observed value.
//!
//! The bases (NeuralForecast's `IdentityBasis`, `TrendBasis`,
//! `SeasonalityBasis`):
//! - identity (generic): `theta` is `L + H` values, backcast and forecast
//!   themselves;
//! - trend: polynomials `(t / len)^i`, `i = 0..=degree`, for `t = 0..len`
//!   (`len = L` for the backcast, `H` for the forecast); `theta` is
//!   `2 (degree + 1)` coefficients;
//! - seasonality: `cos` and `sin` of `2 pi f t / H` for the frequencies
//!   `f = 0` and `f = k / harmonics`, `k = harmonics, harmonics + 1, ..`
//!   below `harmonics * H / 2` (the backcast uses `-2 pi f t / H`, on the
//!   reversed window); `theta` is `2 x 2 F` coefficients for `F`
//!   frequencies.
//!
//! The bases are fixed tensors (not parameters) kept with the model.
//!
//! Hyperparameters, NeuralForecast's defaults for [`crate::ModelSize::Paper`]:
//! stacks `identity, trend, seasonality`, 1 block per stack, no weight
//! sharing, `mlp_units = 3 x [512, 512]` (NeuralForecast builds this as an
//! input layer `L -> 512` and three `512 -> 512` layers, the paper's four
//! fully connected layers of 512), trend degree 2, 2 harmonics, no dropout.
//! One deliberate difference from NeuralForecast: every one of the four
//! hidden layers is followed by a ReLU, as in the paper (NeuralForecast
//! leaves the input layer without activation); the parameter count is the
//! same: 2,809,410 for `L = H = 96`. [`crate::ModelSize::Small`]: the same
//! stacks and bases with two hidden layers of 64 units.

use crate::layers::mlp::ReluMlp;
use crate::{check_window, ForecastConfig, Forecaster, ModelError, Result};
use std::f64::consts::PI;
use tch::{nn, Device, Kind, Tensor};

/// The model's name in the registry.
const NAME: &str = "NBEATS";

/// What a stack's blocks project their `theta` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackType {
    /// Generic: `theta` is the backcast and the forecast themselves.
    Identity,
    /// Interpretable trend: a polynomial of [`NBeatsConfig::trend_degree`].
    Trend,
    /// Interpretable seasonality: a Fourier series of
    /// [`NBeatsConfig::n_harmonics`] harmonics.
    Seasonality,
}

/// NBEATS' hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct NBeatsConfig {
    /// Past values in (`L`).
    pub input_size: i64,
    /// Future values out (`H`).
    pub horizon: i64,
    /// The stacks, in order (identity, trend, seasonality).
    pub stack_types: Vec<StackType>,
    /// Blocks of each stack (1 each); as long as `stack_types`.
    pub n_blocks: Vec<i64>,
    /// Widths of the fully connected layers of every block, each followed
    /// by a ReLU (4 x 512).
    pub hidden: Vec<i64>,
    /// Harmonics of the seasonality basis (2).
    pub n_harmonics: i64,
    /// Degree of the trend polynomial (2).
    pub trend_degree: i64,
    /// Whether the blocks of a stack share one set of weights (false).
    pub shared_weights: bool,
    /// Dropout after every hidden activation (0, NeuralForecast's
    /// `dropout_prob_theta`).
    pub dropout: f64,
}

impl NBeatsConfig {
    /// NeuralForecast's defaults for [`crate::ModelSize::Paper`]; two
    /// hidden layers of 64 units for [`crate::ModelSize::Small`].
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            stack_types: vec![
                StackType::Identity,
                StackType::Trend,
                StackType::Seasonality,
            ],
            n_blocks: vec![1, 1, 1],
            hidden: if cfg.is_small() {
                vec![64; 2]
            } else {
                vec![512; 4]
            },
            n_harmonics: 2,
            trend_degree: 2,
            shared_weights: false,
            dropout: cfg.dropout_or(0.0),
        }
    }

    fn check(&self) -> Result<()> {
        let fail = |reason: String| {
            Err(ModelError::InvalidConfig {
                model: NAME,
                reason,
            })
        };
        if self.input_size < 1 || self.horizon < 1 {
            return fail(format!(
                "input_size {} and horizon {} must both be at least 1",
                self.input_size, self.horizon
            ));
        }
        if self.stack_types.is_empty() || self.stack_types.len() != self.n_blocks.len() {
            return fail(format!(
                "{} stack types and {} block counts: need as many, at least one",
                self.stack_types.len(),
                self.n_blocks.len()
            ));
        }
        if let Some(n) = self.n_blocks.iter().find(|&&n| n < 1) {
            return fail(format!(
                "a stack of {n} blocks; every stack needs at least one"
            ));
        }
        if self.hidden.is_empty() || self.hidden.iter().any(|&w| w < 1) {
            return fail(format!(
                "hidden widths {:?}: need at least one layer, all positive",
                self.hidden
            ));
        }
        let interpretable = self.stack_types.iter().any(|s| *s != StackType::Identity);
        if interpretable && self.horizon == 1 {
            return fail("horizon 1 is incompatible with trend or seasonality stacks".into());
        }
        if self.stack_types.contains(&StackType::Seasonality) && self.n_harmonics < 1 {
            return fail(format!(
                "n_harmonics {} must be at least 1",
                self.n_harmonics
            ));
        }
        if self.stack_types.contains(&StackType::Trend) && self.trend_degree < 0 {
            return fail(format!(
                "trend_degree {} must be at least 0",
                self.trend_degree
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// How a block turns `theta` into a backcast and a forecast.
#[derive(Debug)]
enum Basis {
    /// `theta = [backcast (L) | forecast (H)]`.
    Identity { input_size: i64 },
    /// `theta = [P backcast coefficients | P forecast coefficients]`,
    /// projected on fixed bases `[P, L]` and `[P, H]`.
    Fixed { backcast: Tensor, forecast: Tensor },
}

impl Basis {
    /// The number of `theta` values the basis takes.
    fn theta_size(&self, horizon: i64) -> i64 {
        match self {
            Basis::Identity { input_size } => input_size + horizon,
            Basis::Fixed { backcast, .. } => 2 * backcast.size()[0],
        }
    }

    fn project(&self, theta: &Tensor) -> (Tensor, Tensor) {
        match self {
            Basis::Identity { input_size } => {
                let n = theta.size()[1];
                (
                    theta.narrow(1, 0, *input_size),
                    theta.narrow(1, *input_size, n - input_size),
                )
            }
            Basis::Fixed { backcast, forecast } => {
                let p = backcast.size()[0];
                let device = theta.device();
                let b = theta.narrow(1, 0, p).matmul(&backcast.to_device(device));
                let f = theta.narrow(1, p, p).matmul(&forecast.to_device(device));
                (b, f)
            }
        }
    }
}

/// A `[rows, len]` float tensor on `device` from row-major values.
fn matrix(values: Vec<f32>, rows: i64, len: i64, device: Device) -> Tensor {
    Tensor::from_slice(&values)
        .reshape([rows, len])
        .to_kind(Kind::Float)
        .to_device(device)
}

/// Polynomials `(t / len)^i`, `i = 0..=degree`, `t = 0..len`: `[degree + 1, len]`.
fn polynomial_basis(degree: i64, len: i64, device: Device) -> Tensor {
    let values = (0..=degree)
        .flat_map(|i| (0..len).map(move |t| (t as f64 / len as f64).powi(i as i32) as f32))
        .collect();
    matrix(values, degree + 1, len, device)
}

/// The seasonality frequencies: 0, then `k / harmonics` for
/// `k = harmonics, harmonics + 1, ..` below `harmonics * horizon / 2`.
fn frequencies(harmonics: i64, horizon: i64) -> Vec<f64> {
    let start = harmonics as f64;
    let stop = harmonics as f64 / 2.0 * horizon as f64;
    let n = ((stop - start).ceil().max(0.0)) as i64;
    std::iter::once(0.0)
        .chain((0..n).map(|k| (start + k as f64) / harmonics as f64))
        .collect()
}

/// `[cos; sin]` of `sign * 2 pi f t / horizon`, `t = 0..len`: `[2F, len]`.
fn fourier_basis(freqs: &[f64], len: i64, horizon: i64, sign: f64, device: Device) -> Tensor {
    let angle = |f: f64, t: i64| sign * 2.0 * PI * (t as f64 / horizon as f64) * f;
    let cos = freqs
        .iter()
        .flat_map(|&f| (0..len).map(move |t| angle(f, t).cos() as f32));
    let sin = freqs
        .iter()
        .flat_map(|&f| (0..len).map(move |t| angle(f, t).sin() as f32));
    matrix(
        cos.chain(sin).collect(),
        2 * freqs.len() as i64,
        len,
        device,
    )
}

/// One block: the FC stack and its basis.
#[derive(Debug)]
struct Block {
    mlp: ReluMlp,
    basis: Basis,
}

impl Block {
    fn new(p: &nn::Path<'_>, config: &NBeatsConfig, stack: StackType) -> Self {
        let (l, h, device) = (config.input_size, config.horizon, p.device());
        let basis = match stack {
            StackType::Identity => Basis::Identity { input_size: l },
            StackType::Trend => Basis::Fixed {
                backcast: polynomial_basis(config.trend_degree, l, device),
                forecast: polynomial_basis(config.trend_degree, h, device),
            },
            StackType::Seasonality => {
                let freqs = frequencies(config.n_harmonics, h);
                Basis::Fixed {
                    backcast: fourier_basis(&freqs, l, h, -1.0, device),
                    forecast: fourier_basis(&freqs, h, h, 1.0, device),
                }
            }
        };
        let theta = basis.theta_size(h);
        Self {
            mlp: ReluMlp::new(&(p / "mlp"), l, &config.hidden, theta, config.dropout),
            basis,
        }
    }

    fn forward_t(&self, residual: &Tensor, train: bool) -> (Tensor, Tensor) {
        self.basis.project(&self.mlp.forward_t(residual, train))
    }
}

/// NBEATS: stacks of blocks with backcast residuals and summed forecasts.
#[derive(Debug)]
pub struct NBeats {
    config: NBeatsConfig,
    /// Per stack: its distinct blocks (one when weights are shared) and
    /// how many times blocks are applied.
    stacks: Vec<(Vec<Block>, i64)>,
}

impl NBeats {
    /// Builds NBEATS with block `b` of stack `s` at
    /// `p / "stack_{s}" / "block_{b}" / "mlp"` (only `block_0` when the
    /// weights are shared).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for non-positive lengths, widths or
    /// block counts, as many stack types as block counts not given, a
    /// horizon of 1 with a trend or seasonality stack (the bases collapse,
    /// as NeuralForecast refuses too), fewer than one harmonic, a negative
    /// degree, or a dropout outside `[0, 1)`.
    pub fn new(p: &nn::Path<'_>, config: &NBeatsConfig) -> Result<Self> {
        config.check()?;
        let stacks = config
            .stack_types
            .iter()
            .zip(&config.n_blocks)
            .enumerate()
            .map(|(s, (&stack, &n))| {
                let sp = p / format!("stack_{s}");
                let distinct = if config.shared_weights { 1 } else { n };
                let blocks = (0..distinct)
                    .map(|b| Block::new(&(&sp / format!("block_{b}")), config, stack))
                    .collect();
                (blocks, n)
            })
            .collect();
        Ok(Self {
            config: config.clone(),
            stacks,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &NBeatsConfig {
        &self.config
    }

    /// The naive level and every block's partial forecast, `[N, 1 + blocks, H]`
    /// (their sum over dimension 1 is the forecast), NeuralForecast's
    /// `decompose_forecast`.
    pub fn decompose(&self, x: &Tensor, train: bool) -> Tensor {
        let (level, partials) = self.run(x, train);
        let mut parts = vec![level.expand([-1, self.config.horizon], false)];
        parts.extend(partials);
        Tensor::stack(&parts, 1)
    }

    /// [`Forecaster::forward_t`] after checking that `x` is `[N, L]`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] otherwise.
    pub fn try_forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_window(NAME, x, self.config.input_size)?;
        Ok(self.forward_t(x, train))
    }

    /// The naive level `[N, 1]` and the blocks' partial forecasts `[N, H]`.
    fn run(&self, x: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let level = x.narrow(1, self.config.input_size - 1, 1);
        let mut residual = x.flip([1]);
        let mut partials = Vec::new();
        for (blocks, n) in &self.stacks {
            for b in 0..*n as usize {
                let block = &blocks[b.min(blocks.len() - 1)];
                let (backcast, partial) = block.forward_t(&residual, train);
                residual = &residual - backcast;
                partials.push(partial);
            }
        }
        (level, partials)
    }
}

impl Forecaster for NBeats {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (level, partials) = self.run(x, train);
        partials.into_iter().fold(level, |acc, f| acc + f)
    }
}

/// Builds NBEATS under `p`.
///
/// # Errors
/// As [`NBeats::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(NBeats::new(p, &NBeatsConfig::from_forecast(cfg))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_all_gradients, parameter_count, small, train_sine};

    #[test]
    fn output_shapes_and_sizes() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        for (l, h) in [(24, 6), (96, 24), (5, 2)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = crate::build(NAME, &vs.root(), &small(l, h)).expect("builds");
            let x = Tensor::randn([5, l], (Kind::Float, Device::Cpu));
            assert_eq!(model.forward_t(&x, true).size(), vec![5, h]);
            assert_eq!(model.name(), NAME);
        }
        // seasonality frequencies and theta sizes as in NeuralForecast
        assert_eq!(frequencies(2, 96).len(), 95);
        assert_eq!(frequencies(2, 24).len(), 23);
        assert_eq!(frequencies(3, 4).len(), 1 + 3);
        let vs = nn::VarStore::new(Device::Cpu);
        let paper = NBeats::new(
            &vs.root(),
            &NBeatsConfig::from_forecast(&ForecastConfig::new(96, 96)),
        )
        .expect("builds");
        assert_eq!(parameter_count(&vs), 2_809_410);
        let x = Tensor::randn([3, 96], (Kind::Float, Device::Cpu));
        let parts = paper.decompose(&x, false);
        assert_eq!(parts.size(), vec![3, 4, 96]);
        let diff = (parts.sum_dim_intlist(1, false, Kind::Float) - paper.forward_t(&x, false))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-4, "the parts sum to the forecast ({diff})");
        let vs_small = nn::VarStore::new(Device::Cpu);
        NBeats::new(
            &vs_small.root(),
            &NBeatsConfig::from_forecast(&small(96, 96)),
        )
        .expect("builds");
        assert_eq!(parameter_count(&vs_small), 68674);
        let wrong = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
        assert!(matches!(
            paper.try_forward(&wrong, false),
            Err(ModelError::Shape { .. })
        ));
    }

    #[test]
    fn shared_weights_build_one_block_per_stack() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let mut cfg = NBeatsConfig::from_forecast(&small(24, 6));
        cfg.n_blocks = vec![3, 2, 2];
        let vs = nn::VarStore::new(Device::Cpu);
        let distinct = NBeats::new(&vs.root(), &cfg).expect("builds");
        let unshared = parameter_count(&vs);
        cfg.shared_weights = true;
        let vs2 = nn::VarStore::new(Device::Cpu);
        let shared = NBeats::new(&vs2.root(), &cfg).expect("builds");
        assert!(parameter_count(&vs2) * 2 < unshared);
        let x = Tensor::randn([4, 24], (Kind::Float, Device::Cpu));
        assert_eq!(shared.decompose(&x, false).size(), vec![4, 8, 6]);
        assert_eq!(distinct.forward_t(&x, false).size(), vec![4, 6]);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(&vs.root(), &small(24, 6)).expect("builds");
        assert_all_gradients(&vs, model.as_ref(), 24, 6);
    }

    #[test]
    fn learns_a_noisy_sine() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(&vs.root(), &small(48, 12)).expect("builds");
        let (before, after) = train_sine(&vs, model.as_ref(), 48, 12, 60, 1e-3);
        assert!(after < 0.5 * before, "loss {before} -> {after}");
    }

    #[test]
    fn impossible_configurations_are_refused() {
        let vs = nn::VarStore::new(Device::Cpu);
        let good = NBeatsConfig::from_forecast(&small(24, 6));
        let bad = [
            NBeatsConfig {
                horizon: 1,
                ..good.clone()
            },
            NBeatsConfig {
                input_size: 0,
                ..good.clone()
            },
            NBeatsConfig {
                n_blocks: vec![1, 1],
                ..good.clone()
            },
            NBeatsConfig {
                n_blocks: vec![1, 0, 1],
                ..good.clone()
            },
            NBeatsConfig {
                stack_types: vec![],
                n_blocks: vec![],
                ..good.clone()
            },
            NBeatsConfig {
                hidden: vec![],
                ..good.clone()
            },
            NBeatsConfig {
                hidden: vec![64, 0],
                ..good.clone()
            },
            NBeatsConfig {
                n_harmonics: 0,
                ..good.clone()
            },
            NBeatsConfig {
                trend_degree: -1,
                ..good.clone()
            },
            NBeatsConfig {
                dropout: 1.0,
                ..good.clone()
            },
        ];
        for cfg in bad {
            assert!(
                matches!(
                    NBeats::new(&vs.root(), &cfg),
                    Err(ModelError::InvalidConfig { model: NAME, .. })
                ),
                "{cfg:?} accepted"
            );
        }
        // a generic-only NBEATS forecasts a single step
        let generic = NBeatsConfig {
            horizon: 1,
            stack_types: vec![StackType::Identity; 2],
            n_blocks: vec![1, 1],
            ..good
        };
        assert!(NBeats::new(&vs.root(), &generic).is_ok());
    }
}
