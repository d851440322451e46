//! TimesNet: 1-D series folded into 2-D by their main periods, 2-D
//! inception convolutions over the folds.
//!
//! Wu, Hu, Liu, Zhou, Wang & Long (2023), "TimesNet: Temporal 2D-Variation
//! Modeling for General Time Series Analysis", ICLR; as NeuralForecast's
//! `TimesNet` (`neuralforecast/models/timesnet.py`) builds it for
//! univariate forecasting, without time features:
//!
//! ```text
//!  x [N, L] --value embedding (Conv1d 1 -> d, kernel 3, circular, no bias)
//!            + sinusoidal positions, dropout-->                    [N, L, d]
//!  --predict: Linear L -> L + H over the time axis-->               [N, T, d]   (T = L + H)
//!  --encoder_layers x { TimesBlock, then one shared LayerNorm(d) }-->  [N, T, d]
//!  --projection Linear d -> 1, the last H steps-->                    [N, H]
//!
//!  TimesBlock(z [N, T, d]):
//!    A = |rfft(z, time)| averaged over d                 [N, T/2 + 1]
//!    the top_k frequencies f_i of A averaged over the batch (DC excluded),
//!    periods p_i = T / f_i (integer division)
//!    for each p_i: zero-pad T to a multiple of p_i, fold to
//!      [N, d, ceil(T / p_i), p_i], Inception(d -> d_ff), GELU, Inception(d_ff -> d),
//!      unfold, cut back to T
//!    sum of the k results weighted by softmax_i(A[:, f_i]), plus z (residual)
//!  Inception(c -> c'): the mean of num_kernels Conv2d of kernels 1, 3, 5, ...
//!    (same padding; Kaiming-normal fan-out weights, zero biases)
//! ```
//!
//! The periods are found per batch (as in the paper and NeuralForecast)
//! and the amplitude weights per window. `top_k` is clamped to the `T / 2`
//! non-constant frequencies, so every period lies in `[2, T]` and folds
//! whatever `L` is.
//!
//! Hyperparameters ([`TimesNetConfig::from_forecast`]), NeuralForecast's
//! defaults for [`ModelSize::Paper`](crate::ModelSize::Paper) (the paper's
//! top_k 5 and 6 kernels too): `hidden_size` 64, `conv_hidden_size` 64,
//! `top_k` 5, `num_kernels` 6, `encoder_layers` 2, `dropout` 0.1
//! (`ForecastConfig::dropout` overrides it): 4,706,369 parameters at
//! `L = H = 96`. Small: 16, 16, 3, 3, 2, 0.1: 54,753 parameters at
//! `L = H = 96`.

use crate::dropout::Dropout;
use crate::{ForecastConfig, Forecaster, ModelError, Result};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

const MODEL: &str = "TimesNet";

/// The hyperparameters of TimesNet.
#[derive(Debug, Clone, PartialEq)]
pub struct TimesNetConfig {
    /// Look-back `L`.
    pub input_size: i64,
    /// Horizon `H`.
    pub horizon: i64,
    /// Embedding width `d` (NeuralForecast `hidden_size`, 64).
    pub hidden_size: i64,
    /// Channels inside each block's inception pair (`conv_hidden_size`,
    /// 64).
    pub conv_hidden_size: i64,
    /// Periods per block (`top_k`, 5).
    pub top_k: i64,
    /// Convolutions per inception block, of kernels 1, 3, ...,
    /// `2 * num_kernels - 1` (`num_kernels`, 6).
    pub num_kernels: i64,
    /// TimesBlocks (`encoder_layers`, 2).
    pub encoder_layers: i64,
    /// Dropout of the embedding in training (`dropout`, 0.1).
    pub dropout: f64,
}

impl TimesNetConfig {
    /// NeuralForecast's defaults (or the small variant) for the lengths of
    /// `cfg`.
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        let (hidden, conv, top_k, kernels) = if cfg.is_small() {
            (16, 16, 3, 3)
        } else {
            (64, 64, 5, 6)
        };
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            hidden_size: hidden,
            conv_hidden_size: conv,
            top_k,
            num_kernels: kernels,
            encoder_layers: 2,
            dropout: cfg.dropout_or(0.1),
        }
    }
}

/// The mean of `num_kernels` same-size 2-D convolutions of odd kernels.
#[derive(Debug)]
struct Inception {
    convs: Vec<nn::Conv2D>,
}

impl Inception {
    fn new(p: &nn::Path<'_>, input: i64, output: i64, num_kernels: i64) -> Self {
        let convs = (0..num_kernels)
            .map(|i| {
                let cfg = nn::ConvConfig {
                    padding: i,
                    ws_init: nn::Init::Kaiming {
                        dist: nn::init::NormalOrUniform::Normal,
                        fan: nn::init::FanInOut::FanOut,
                        non_linearity: nn::init::NonLinearity::ReLU,
                    },
                    bs_init: nn::Init::Const(0.0),
                    ..Default::default()
                };
                nn::conv2d(p / i.to_string(), input, output, 2 * i + 1, cfg)
            })
            .collect();
        Self { convs }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut sum = self.convs[0].forward(x);
        for conv in &self.convs[1..] {
            sum = &sum + conv.forward(x);
        }
        sum / self.convs.len() as f64
    }
}

/// The `k` strongest periods of a batch `x: [B, T, C]` (DC excluded,
/// `k` clamped to the `T / 2` non-constant frequencies) and each window's
/// amplitudes at them, `[B, k]`.
fn periods(x: &Tensor, k: i64) -> (Vec<i64>, Tensor) {
    let t = x.size()[1];
    let amp = x
        .fft_rfft(None, 1, "backward")
        .abs()
        .mean_dim(-1, false, Kind::Float); // [B, T/2 + 1]
    let n_freq = amp.size()[1];
    let k = k.clamp(1, (n_freq - 1).max(1));
    let freq = amp.detach().mean_dim(0, false, Kind::Float);
    let _ = freq.get(0).fill_(0.0);
    let (_, top) = freq.topk(k, 0, true, true);
    let periods = (0..k)
        .map(|i| {
            let f = top.int64_value(&[i]).max(1);
            (t / f).clamp(1, t)
        })
        .collect();
    (periods, amp.index_select(1, &top))
}

/// One TimesBlock: fold by the top periods, inception pair, weighted sum,
/// residual.
#[derive(Debug)]
struct TimesBlock {
    first: Inception,
    second: Inception,
    top_k: i64,
}

impl TimesBlock {
    fn new(p: &nn::Path<'_>, cfg: &TimesNetConfig) -> Self {
        Self {
            first: Inception::new(
                &(p / "inception_0"),
                cfg.hidden_size,
                cfg.conv_hidden_size,
                cfg.num_kernels,
            ),
            second: Inception::new(
                &(p / "inception_1"),
                cfg.conv_hidden_size,
                cfg.hidden_size,
                cfg.num_kernels,
            ),
            top_k: cfg.top_k,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (b, t, c) = (s[0], s[1], s[2]);
        let (periods, amp) = periods(x, self.top_k);
        let weights = amp.softmax(1, Kind::Float); // [B, k]
        let mut out = x.shallow_clone(); // the residual
        for (i, &period) in periods.iter().enumerate() {
            let rows = (t + period - 1) / period;
            let length = rows * period;
            let padded = if length > t {
                x.constant_pad_nd([0, 0, 0, length - t])
            } else {
                x.shallow_clone()
            };
            let folded = padded.reshape([b, rows, period, c]).permute([0, 3, 1, 2]);
            let conv = self
                .second
                .forward(&self.first.forward(&folded).gelu("none"));
            let unfolded = conv
                .permute([0, 2, 3, 1])
                .reshape([b, length, c])
                .narrow(1, 0, t);
            out = &out + unfolded * weights.select(1, i as i64).reshape([b, 1, 1]);
        }
        out
    }
}

/// Sinusoidal positions `[1, len, d]` (Vaswani et al. 2017).
fn positions(len: i64, d: i64, device: tch::Device) -> Tensor {
    let mut pe = Vec::with_capacity((len * d) as usize);
    for pos in 0..len {
        for i in 0..d {
            let rate = (-(10_000f64.ln()) * (2 * (i / 2)) as f64 / d as f64).exp();
            let angle = pos as f64 * rate;
            pe.push(if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    Tensor::from_slice(&pe)
        .reshape([1, len, d])
        .to_device(device)
}

/// TimesNet (see the [module](self) documentation).
#[derive(Debug)]
pub struct TimesNet {
    cfg: TimesNetConfig,
    token: nn::Conv1D,
    positions: Tensor,
    predict: nn::Linear,
    blocks: Vec<TimesBlock>,
    norm: nn::LayerNorm,
    projection: nn::Linear,
}

impl TimesNet {
    /// Builds the model with its parameters under `p`: `token_embedding`,
    /// `predict_linear`, `blocks/{i}/inception_{0,1}/{kernel}`,
    /// `layer_norm` and `projection`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for non-positive lengths or sizes, or
    /// a dropout outside `[0, 1)`.
    pub fn new(p: &nn::Path<'_>, cfg: &TimesNetConfig) -> Result<Self> {
        let invalid = |reason: String| ModelError::InvalidConfig {
            model: MODEL,
            reason,
        };
        if cfg.input_size < 1 || cfg.horizon < 1 {
            return Err(invalid(format!(
                "input_size {} and horizon {} must both be at least 1",
                cfg.input_size, cfg.horizon
            )));
        }
        for (name, v) in [
            ("hidden_size", cfg.hidden_size),
            ("conv_hidden_size", cfg.conv_hidden_size),
            ("top_k", cfg.top_k),
            ("num_kernels", cfg.num_kernels),
            ("encoder_layers", cfg.encoder_layers),
        ] {
            if v < 1 {
                return Err(invalid(format!("{name} {v} must be at least 1")));
            }
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(invalid(format!("dropout {} is not in [0, 1)", cfg.dropout)));
        }
        let d = cfg.hidden_size;
        let token = nn::conv1d(
            p / "token_embedding",
            1,
            d,
            3,
            nn::ConvConfig {
                padding: 1,
                padding_mode: nn::PaddingMode::Circular,
                bias: false,
                ws_init: nn::Init::Kaiming {
                    dist: nn::init::NormalOrUniform::Normal,
                    fan: nn::init::FanInOut::FanIn,
                    // PyTorch's leaky_relu gain with its default slope 0.
                    non_linearity: nn::init::NonLinearity::ReLU,
                },
                ..Default::default()
            },
        );
        let blocks_path = p / "blocks";
        let blocks = (0..cfg.encoder_layers)
            .map(|i| TimesBlock::new(&(&blocks_path / i), cfg))
            .collect();
        Ok(Self {
            cfg: cfg.clone(),
            token,
            positions: positions(cfg.input_size, d, p.device()),
            predict: crate::layers::linear(
                p / "predict_linear",
                cfg.input_size,
                cfg.input_size + cfg.horizon,
            ),
            blocks,
            norm: nn::layer_norm(p / "layer_norm", vec![d], Default::default()),
            projection: crate::layers::linear(p / "projection", d, 1),
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &TimesNetConfig {
        &self.cfg
    }
}

impl Forecaster for TimesNet {
    fn name(&self) -> &'static str {
        MODEL
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let emb = self.token.forward(&x.unsqueeze(1)).transpose(1, 2)
            + self.positions.to_device(x.device());
        let emb = emb.dropout_t(self.cfg.dropout, train);
        let mut z = self.predict.forward(&emb.transpose(1, 2)).transpose(1, 2);
        for block in &self.blocks {
            z = self.norm.forward(&block.forward(&z));
        }
        self.projection
            .forward(&z)
            .narrow(1, self.cfg.input_size, self.cfg.horizon)
            .squeeze_dim(-1)
    }
}

/// Builds TimesNet under `p`.
///
/// # Errors
/// [`ModelError::InvalidConfig`] when the lengths or the dropout cannot
/// build it.
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(TimesNet::new(
        p,
        &TimesNetConfig::from_forecast(cfg),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelSize;
    use tch::nn::OptimizerConfig;
    use tch::{Device, Reduction};

    fn setup() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
    }

    fn small(l: i64, h: i64) -> TimesNetConfig {
        TimesNetConfig::from_forecast(&ForecastConfig::new(l, h).size(ModelSize::Small))
    }

    fn sines(n: i64, l: i64, h: i64) -> (Tensor, Tensor) {
        crate::testing::noisy_sines(n, l, h, 0.05)
    }

    #[test]
    fn output_shapes() {
        setup();
        // Periods that do not divide T = L + H, a T of 2, H > L, and a
        // top_k above the T / 2 frequencies.
        for (l, h, k) in [(24, 8, 3), (13, 5, 3), (1, 1, 3), (5, 20, 3), (4, 2, 50)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = TimesNetConfig {
                top_k: k,
                ..small(l, h)
            };
            let m = TimesNet::new(&vs.root(), &cfg).expect("builds");
            let x = Tensor::randn([5, l], (Kind::Float, Device::Cpu));
            assert_eq!(m.forward_t(&x, false).size(), vec![5, h], "L {l} H {h}");
            assert_eq!(m.forward_t(&x, true).size(), vec![5, h], "L {l} H {h}");
        }
    }

    #[test]
    fn periods_are_found() {
        setup();
        let opts = (Kind::Float, Device::Cpu);
        // Period 12 over T = 48 (frequency 4), and a weaker period 8.
        let t = Tensor::arange(48, opts);
        let tau = 2.0 * std::f64::consts::PI;
        let s = (&t * (tau / 12.0)).sin() + (&t * (tau / 8.0)).sin() * 0.5;
        let x = s.reshape([1, 48, 1]).repeat([3, 1, 2]);
        let (p, amp) = periods(&x, 2);
        assert_eq!(p, vec![12, 8]);
        assert_eq!(amp.size(), vec![3, 2]);
        // T = 7: three non-constant frequencies, periods 7 / f.
        let (p, amp) = periods(&Tensor::randn([2, 7, 4], opts), 10);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|&q| (2..=7).contains(&q)), "{p:?}");
        assert_eq!(amp.size(), vec![2, 3]);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let m = TimesNet::new(&vs.root(), &small(13, 5)).expect("builds");
        crate::testing::assert_all_gradients(&vs, &m, 13, 5);
    }

    #[test]
    fn training_reduces_the_loss() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let m = TimesNet::new(&vs.root(), &small(24, 8)).expect("builds");
        let mut opt = nn::Adam::default().build(&vs, 3e-3).expect("adam");
        let (x, y) = sines(32, 24, 8);
        let eval = |m: &TimesNet| {
            tch::no_grad(|| {
                m.forward_t(&x, false)
                    .mse_loss(&y, Reduction::Mean)
                    .double_value(&[])
            })
        };
        let before = eval(&m);
        for _ in 0..40 {
            let loss = m.loss(&x, &y);
            opt.backward_step(&loss);
        }
        let after = eval(&m);
        assert!(after < 0.5 * before, "loss {before} -> {after}");
    }

    #[test]
    fn impossible_configurations_are_rejected() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let bad = [
            TimesNetConfig {
                hidden_size: 0,
                ..small(8, 4)
            },
            TimesNetConfig {
                conv_hidden_size: -2,
                ..small(8, 4)
            },
            TimesNetConfig {
                top_k: 0,
                ..small(8, 4)
            },
            TimesNetConfig {
                num_kernels: 0,
                ..small(8, 4)
            },
            TimesNetConfig {
                encoder_layers: 0,
                ..small(8, 4)
            },
            TimesNetConfig {
                dropout: -0.1,
                ..small(8, 4)
            },
            small(0, 4),
            small(8, 0),
        ];
        for (i, cfg) in bad.iter().enumerate() {
            let r = TimesNet::new(&(vs.root() / i), cfg);
            assert!(
                matches!(r, Err(ModelError::InvalidConfig { .. })),
                "{cfg:?}"
            );
        }
    }

    #[test]
    fn parameter_counts() {
        setup();
        let count = |cfg: &TimesNetConfig| {
            let vs = nn::VarStore::new(Device::Cpu);
            TimesNet::new(&vs.root(), cfg).expect("builds");
            vs.trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum::<i64>()
        };
        let paper = TimesNetConfig::from_forecast(&ForecastConfig::new(96, 96));
        assert_eq!(count(&paper), 4_706_369);
        assert_eq!(count(&small(96, 96)), 54_753);
    }
}
