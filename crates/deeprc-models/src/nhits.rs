//! NHITS (Challu et al. 2023, "NHITS: Neural Hierarchical Interpolation
//! for Time Series Forecasting", AAAI): NBEATS-style stacks of MLP blocks
//! with backcast residuals, where each stack sees the window through a
//! max-pooling of its own size and forecasts a few knots that linear
//! interpolation spreads over the horizon, so that the first stacks
//! specialise in slow, the last in fast components.
//!
//! ```text
//!  r_0 = flip(x) [N, L]                 forecast_0 = x[:, L-1] (the naive level)
//!  block of stack s:  MaxPool1d(k_s, stride k_s, ceil)(r_b)     [N, ceil(L / k_s)]
//!                     theta = MLP (2 x (Linear 512 + ReLU)) -> Linear   [N, L + K_s]
//!                     backcast = theta[:, ..L]                             [N, L]
//!                     partial  = linear interpolation of theta[:, L..]     K_s = max(H / d_s, 1) knots -> [N, H]
//!                     r_{b+1} = r_b - backcast, forecast += partial
//! ```
//!
//! As in NeuralForecast, the window is fed time-reversed and the forecast
//! starts from the last observed value; the interpolation is PyTorch's
//! `interpolate(mode="linear", align_corners=False)` (`upsample_linear1d`).
//!
//! Hyperparameters, NeuralForecast's defaults for [`crate::ModelSize::Paper`]:
//! 3 stacks of 1 identity block each, pooling kernels `[2, 2, 1]`
//! (`MaxPool1d`), frequency downsampling `[4, 2, 1]`, MLPs of 2 hidden
//! layers of 512 units (the paper's Table A3), ReLU, dropout 0
//! (1,121,736 parameters for `L = H = 96`). [`crate::ModelSize::Small`]:
//! the same stacks, pooling and downsampling with 2 hidden layers of 64.

use crate::layers::mlp::ReluMlp;
use crate::{check_window, ForecastConfig, Forecaster, ModelError, Result};
use tch::{nn, Tensor};

/// The model's name in the registry.
const NAME: &str = "NHITS";

/// How a block pools its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// `MaxPool1d` (NeuralForecast's default).
    #[default]
    Max,
    /// `AvgPool1d`.
    Avg,
}

/// NHITS' hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct NHitsConfig {
    /// Past values in (`L`).
    pub input_size: i64,
    /// Future values out (`H`).
    pub horizon: i64,
    /// Blocks of each stack (`[1, 1, 1]`); one entry per stack.
    pub n_blocks: Vec<i64>,
    /// Pooling kernel (and stride) of each stack's input (`[2, 2, 1]`).
    pub pool_kernel_sizes: Vec<i64>,
    /// Each stack forecasts `max(H / d, 1)` knots (`d = [4, 2, 1]`).
    pub freq_downsample: Vec<i64>,
    /// Widths of every block's hidden layers, each `Linear + ReLU`
    /// (`[512, 512]`).
    pub hidden: Vec<i64>,
    /// The pooling (max).
    pub pooling: Pooling,
    /// Dropout after every hidden activation (0).
    pub dropout: f64,
}

impl NHitsConfig {
    /// NeuralForecast's defaults for [`crate::ModelSize::Paper`], hidden
    /// layers of 64 for [`crate::ModelSize::Small`].
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            n_blocks: vec![1, 1, 1],
            pool_kernel_sizes: vec![2, 2, 1],
            freq_downsample: vec![4, 2, 1],
            hidden: if cfg.is_small() {
                vec![64; 2]
            } else {
                vec![512; 2]
            },
            pooling: Pooling::Max,
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
        let stacks = self.n_blocks.len();
        if stacks == 0
            || self.pool_kernel_sizes.len() != stacks
            || self.freq_downsample.len() != stacks
        {
            return fail(format!(
                "n_blocks {:?}, pool_kernel_sizes {:?} and freq_downsample {:?} need one entry per stack, at least one stack",
                self.n_blocks, self.pool_kernel_sizes, self.freq_downsample
            ));
        }
        if let Some(n) = self.n_blocks.iter().find(|&&n| n < 1) {
            return fail(format!(
                "a stack of {n} blocks; every stack needs at least one"
            ));
        }
        if let Some(k) = self
            .pool_kernel_sizes
            .iter()
            .find(|&&k| k < 1 || k > self.input_size)
        {
            return fail(format!(
                "pooling kernel {k} must be between 1 and the input size {}",
                self.input_size
            ));
        }
        if let Some(d) = self.freq_downsample.iter().find(|&&d| d < 1) {
            return fail(format!("frequency downsampling {d} must be at least 1"));
        }
        if self.hidden.is_empty() || self.hidden.iter().any(|&w| w < 1) {
            return fail(format!(
                "hidden widths {:?}: need at least one layer, all positive",
                self.hidden
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// One block: pooling, MLP, identity basis with interpolated knots.
#[derive(Debug)]
struct Block {
    kernel: i64,
    knots: i64,
    mlp: ReluMlp,
}

/// Everything a block's forward needs besides its own parameters.
#[derive(Debug, Clone, Copy)]
struct Shape {
    input_size: i64,
    horizon: i64,
    pooling: Pooling,
}

impl Block {
    fn forward_t(&self, residual: &Tensor, shape: Shape, train: bool) -> (Tensor, Tensor) {
        let seq = residual.unsqueeze(1);
        let k = self.kernel;
        let pooled = match shape.pooling {
            Pooling::Max => seq.max_pool1d([k], [k], [0], [1], true),
            Pooling::Avg => seq.avg_pool1d([k], [k], [0], true, true),
        }
        .squeeze_dim(1);
        let theta = self.mlp.forward_t(&pooled, train);
        let backcast = theta.narrow(1, 0, shape.input_size);
        let knots = theta.narrow(1, shape.input_size, self.knots).unsqueeze(1);
        let forecast = knots
            .upsample_linear1d([shape.horizon], false, None)
            .squeeze_dim(1);
        (backcast, forecast)
    }
}

/// NHITS: pooled, interpolating NBEATS-style stacks.
#[derive(Debug)]
pub struct NHits {
    config: NHitsConfig,
    blocks: Vec<Block>,
}

impl NHits {
    /// Builds NHITS with block `b` of stack `s` at
    /// `p / "stack_{s}" / "block_{b}" / "mlp"`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for non-positive lengths, widths,
    /// block counts or downsampling factors, per-stack lists of different
    /// lengths, a pooling kernel longer than the window, or a dropout
    /// outside `[0, 1)`.
    pub fn new(p: &nn::Path<'_>, config: &NHitsConfig) -> Result<Self> {
        config.check()?;
        let (l, h) = (config.input_size, config.horizon);
        let mut blocks = Vec::new();
        for (s, ((&n, &kernel), &down)) in config
            .n_blocks
            .iter()
            .zip(&config.pool_kernel_sizes)
            .zip(&config.freq_downsample)
            .enumerate()
        {
            let knots = (h / down).max(1);
            let pooled = (l + kernel - 1) / kernel;
            for b in 0..n {
                let bp = p / format!("stack_{s}") / format!("block_{b}") / "mlp";
                blocks.push(Block {
                    kernel,
                    knots,
                    mlp: ReluMlp::new(&bp, pooled, &config.hidden, l + knots, config.dropout),
                });
            }
        }
        Ok(Self {
            config: config.clone(),
            blocks,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &NHitsConfig {
        &self.config
    }

    fn shape(&self) -> Shape {
        Shape {
            input_size: self.config.input_size,
            horizon: self.config.horizon,
            pooling: self.config.pooling,
        }
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
        let shape = self.shape();
        let level = x.narrow(1, self.config.input_size - 1, 1);
        let mut residual = x.flip([1]);
        let mut partials = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (backcast, partial) = block.forward_t(&residual, shape, train);
            residual = &residual - backcast;
            partials.push(partial);
        }
        (level, partials)
    }
}

impl Forecaster for NHits {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (level, partials) = self.run(x, train);
        partials.into_iter().fold(level, |acc, f| acc + f)
    }
}

/// Builds NHITS under `p`.
///
/// # Errors
/// As [`NHits::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(NHits::new(p, &NHitsConfig::from_forecast(cfg))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_all_gradients, parameter_count, small, train_sine};
    use tch::{Device, Kind};

    #[test]
    fn output_shapes_and_sizes() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        // odd lengths exercise the ceil-mode pooling, H < 4 a single knot
        for (l, h) in [(24, 6), (96, 24), (7, 3), (2, 1)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = crate::build(NAME, &vs.root(), &small(l, h)).expect("builds");
            let x = Tensor::randn([5, l], (Kind::Float, Device::Cpu));
            assert_eq!(model.forward_t(&x, true).size(), vec![5, h]);
            assert_eq!(model.name(), NAME);
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let paper = NHits::new(
            &vs.root(),
            &NHitsConfig::from_forecast(&ForecastConfig::new(96, 96)),
        )
        .expect("builds");
        // per block: pooled*512+512 + 512*512+512 + 512*(96+knots)+(96+knots)
        let block =
            |pooled: i64, knots: i64| pooled * 512 + 512 + 512 * 512 + 512 + 513 * (96 + knots);
        assert_eq!(
            parameter_count(&vs),
            block(48, 24) + block(48, 48) + block(96, 96)
        );
        assert_eq!(parameter_count(&vs), 1_121_736);
        let x = Tensor::randn([3, 96], (Kind::Float, Device::Cpu));
        let parts = paper.decompose(&x, false);
        assert_eq!(parts.size(), vec![3, 4, 96]);
        let diff = (parts.sum_dim_intlist(1, false, Kind::Float) - paper.forward_t(&x, false))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-4, "the parts sum to the forecast ({diff})");
        let mut avg = NHitsConfig::from_forecast(&small(9, 4));
        avg.pooling = Pooling::Avg;
        let vs = nn::VarStore::new(Device::Cpu);
        let m = NHits::new(&vs.root(), &avg).expect("builds");
        let x = Tensor::randn([2, 9], (Kind::Float, Device::Cpu));
        assert_eq!(m.forward_t(&x, false).size(), vec![2, 4]);
        let vs_small = nn::VarStore::new(Device::Cpu);
        NHits::new(
            &vs_small.root(),
            &NHitsConfig::from_forecast(&small(96, 96)),
        )
        .expect("builds");
        assert_eq!(parameter_count(&vs_small), 54600);
        let wrong = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
        assert!(matches!(
            m.try_forward(&wrong, false),
            Err(ModelError::Shape { .. })
        ));
    }

    #[test]
    fn the_interpolation_is_linear_between_knots() {
        tch::set_num_threads(1);
        // align_corners=False: 2 knots to 4 steps
        let knots = Tensor::from_slice(&[0.0f32, 4.0]).reshape([1, 1, 2]);
        let up = knots.upsample_linear1d([4], false, None).reshape([4]);
        let got = Vec::<f32>::try_from(up).expect("values");
        assert_eq!(got, vec![0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(&vs.root(), &small(24, 8)).expect("builds");
        assert_all_gradients(&vs, model.as_ref(), 24, 8);
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
        let good = NHitsConfig::from_forecast(&small(24, 6));
        let bad = [
            NHitsConfig {
                horizon: 0,
                ..good.clone()
            },
            NHitsConfig {
                n_blocks: vec![1, 1],
                ..good.clone()
            },
            NHitsConfig {
                n_blocks: vec![],
                pool_kernel_sizes: vec![],
                freq_downsample: vec![],
                ..good.clone()
            },
            NHitsConfig {
                n_blocks: vec![1, 0, 1],
                ..good.clone()
            },
            NHitsConfig {
                pool_kernel_sizes: vec![2, 0, 1],
                ..good.clone()
            },
            NHitsConfig {
                pool_kernel_sizes: vec![25, 2, 1],
                ..good.clone()
            },
            NHitsConfig {
                freq_downsample: vec![4, 0, 1],
                ..good.clone()
            },
            NHitsConfig {
                hidden: vec![],
                ..good.clone()
            },
            NHitsConfig {
                dropout: -0.1,
                ..good
            },
        ];
        for cfg in bad {
            assert!(
                matches!(
                    NHits::new(&vs.root(), &cfg),
                    Err(ModelError::InvalidConfig { model: NAME, .. })
                ),
                "{cfg:?} accepted"
            );
        }
    }
}
