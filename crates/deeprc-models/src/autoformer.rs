//! Autoformer (Wu et al. 2021, "Autoformer: Decomposition Transformers
//! with Auto-Correlation for Long-Term Series Forecasting"), as the
//! paper's code and NeuralForecast's `Autoformer` build it.
//!
//! ```text
//!  x [N, L] -> [N, L, 1];  seasonal_x, trend_x = series_decomp(x, 25)
//!  encoder: TokenEmbedding(x) (no positional encoding), dropout
//!           -> encoder_layers x [ x = decomp(x + AutoCorrelation(x, x)).seasonal
//!                                 x = decomp(x + FeedForward(x)).seasonal ]
//!           -> seasonal LayerNorm                                   = memory [N, L, D]
//!  decoder input (length label_len + H):
//!     seasonal: last label_len of seasonal_x, then H zeros -> TokenEmbedding, dropout
//!     trend:    last label_len of trend_x, then H copies of the window mean  [N, Ld, 1]
//!           -> decoder_layers x [ x, t1 = decomp(x + AutoCorrelation(x, x))
//!                                 x, t2 = decomp(x + AutoCorrelation(x, memory))
//!                                 x, t3 = decomp(x + FeedForward(x))
//!                                 trend += Conv1d_k3_circular(t1 + t2 + t3)  (D -> 1) ]
//!           -> seasonal LayerNorm -> Linear(D, 1) + trend -> the last H steps [N, H]
//! ```
//!
//! **Auto-correlation** replaces attention: per head and channel, the
//! correlation of queries and keys at every lag `tau` is computed with the
//! FFT (`R(tau) = irfft(rfft(q) * conj(rfft(k)))`, Wiener-Khinchin); the
//! `k = floor(factor * ln(L))` lags with the largest mean correlation are
//! the period-based dependencies, and the values rolled by each of those
//! lags are summed with the softmax of their correlations (time-delay
//! aggregation). As in the paper's code, training picks the `k` lags from
//! the correlation averaged over the batch (and rolls), inference picks
//! them per window (and gathers). Keys and values shorter than the queries
//! are padded with zeros, longer ones cut to the query length.
//! "Seasonal LayerNorm" is a LayerNorm minus its mean over time.
//! The decomposition is [`crate::layers::decomp::series_decomp`] (moving
//! average with replicate padding).
//!
//! Hyperparameters ([`AutoformerConfig::from_forecast`]):
//!
//! | | Paper (NeuralForecast defaults) | Small |
//! |---|---|---|
//! | `hidden_size` / `n_head` / `conv_hidden_size` | 128 / 4 / 32 | 16 / 2 / 16 |
//! | `encoder_layers` / `decoder_layers` | 2 / 1 | 1 / 1 |
//! | `moving_avg` / `factor` | 25 / 3 | 25 / 3 |
//! | `dropout` / activation | 0.05 / GELU | 0.05 / GELU |
//! | `label_len` | `ceil(L / 2)` | `ceil(L / 2)` |
//!
//! `Paper` takes NeuralForecast's widths; the Autoformer paper's runs use
//! `d_model` 512, 8 heads and `d_ff` 2048 (with the same 2 + 1 layers,
//! kernel 25 and factor 3 in its ETT scripts): about 10.5 million
//! parameters, 36 times the 0.29 million here, a size the univariate,
//! channel-independent setting does not need.
//! NeuralForecast's `irfft` takes no length, so for an odd sequence length
//! its correlation is one lag short; here the inverse FFT has the
//! sequence's length.

use crate::dropout::Dropout;
use crate::layers::attention::{check_dropout, Activation, DataEmbedding};
use crate::layers::decomp::series_decomp;
use crate::layers::torch_linear;
use crate::{check_window, ForecastConfig, Forecaster, ModelError, Result};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

const NAME: &str = "Autoformer";

/// The hyperparameters of [`Autoformer`].
#[derive(Debug, Clone, PartialEq)]
pub struct AutoformerConfig {
    /// Look-back `L`.
    pub input_size: i64,
    /// Horizon `H`.
    pub horizon: i64,
    /// Known steps that start the decoder input, at most `L`;
    /// NeuralForecast: `ceil(L * 0.5)`.
    pub label_len: i64,
    /// Model width `d_model`.
    pub hidden_size: i64,
    /// Auto-correlation heads (`hidden_size` must be a multiple).
    pub n_head: i64,
    /// Width of the feed-forward network.
    pub conv_hidden_size: i64,
    /// Encoder layers (at least 1).
    pub encoder_layers: i64,
    /// Decoder layers (at least 1).
    pub decoder_layers: i64,
    /// Kernel of the moving average in every decomposition block.
    pub moving_avg: i64,
    /// The auto-correlation keeps `floor(factor * ln(length))` lags.
    pub factor: f64,
    /// Dropout of the embeddings and layers.
    pub dropout: f64,
    /// Feed-forward activation.
    pub activation: Activation,
}

impl AutoformerConfig {
    /// NeuralForecast's defaults for [`crate::ModelSize::Paper`], a narrow
    /// one-layer variant for [`crate::ModelSize::Small`]; the dropout of
    /// `cfg` if set.
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        let (hidden_size, n_head, conv_hidden_size, encoder_layers) = if cfg.is_small() {
            (16, 2, 16, 1)
        } else {
            (128, 4, 32, 2)
        };
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            label_len: (cfg.input_size + 1) / 2,
            hidden_size,
            n_head,
            conv_hidden_size,
            encoder_layers,
            decoder_layers: 1,
            moving_avg: 25,
            factor: 3.0,
            dropout: cfg.dropout_or(0.05),
            activation: Activation::Gelu,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(ModelError::InvalidConfig {
                model: NAME,
                reason,
            })
        };
        if self.input_size < 1 || self.horizon < 1 {
            return bad(format!(
                "input_size {} and horizon {} must be at least 1",
                self.input_size, self.horizon
            ));
        }
        if !(0..=self.input_size).contains(&self.label_len) {
            return bad(format!(
                "label_len {} must be in [0, input_size {}]",
                self.label_len, self.input_size
            ));
        }
        if self.encoder_layers < 1 || self.decoder_layers < 1 || self.conv_hidden_size < 1 {
            return bad(format!(
                "encoder_layers {}, decoder_layers {} and conv_hidden_size {} must be at least 1",
                self.encoder_layers, self.decoder_layers, self.conv_hidden_size
            ));
        }
        if self.hidden_size < 1 || self.n_head < 1 || self.hidden_size % self.n_head != 0 {
            return bad(format!(
                "hidden_size {} must be a positive multiple of n_head {}",
                self.hidden_size, self.n_head
            ));
        }
        if self.moving_avg < 1 {
            return bad(format!("moving_avg {} must be at least 1", self.moving_avg));
        }
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return bad(format!("factor {} must be positive", self.factor));
        }
        check_dropout(NAME, "dropout", self.dropout)
    }
}

/// The lags that time-delay aggregation keeps for a sequence of `len`.
fn top_k(factor: f64, len: i64) -> i64 {
    ((factor * (len as f64).ln()).floor() as i64).clamp(1, len.max(1))
}

/// The auto-correlation layer: query/key/value projections into heads,
/// the auto-correlation, the output projection. Parameters: `query`,
/// `key`, `value`, `out`.
#[derive(Debug)]
struct AutoCorrelation {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    out: nn::Linear,
    n_heads: i64,
    d_head: i64,
    factor: f64,
}

impl AutoCorrelation {
    fn new(p: nn::Path<'_>, c: &AutoformerConfig) -> Self {
        let d = c.hidden_size;
        Self {
            query: torch_linear(&p / "query", d, d, true),
            key: torch_linear(&p / "key", d, d, true),
            value: torch_linear(&p / "value", d, d, true),
            out: torch_linear(&p / "out", d, d, true),
            n_heads: c.n_head,
            d_head: d / c.n_head,
            factor: c.factor,
        }
    }

    /// `[B, T, D]` as `[B, h, d, T]` (time last, for the FFT).
    fn heads(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        x.view([s[0], s[1], self.n_heads, self.d_head])
            .permute([0, 2, 3, 1])
    }

    /// `x` (`[B, S, D]`) zero-padded or cut to `len` steps.
    fn fit(x: &Tensor, len: i64) -> Tensor {
        let s = x.size();
        if s[1] < len {
            let zeros = Tensor::zeros([s[0], len - s[1], s[2]], (x.kind(), x.device()));
            Tensor::cat(&[x.shallow_clone(), zeros], 1)
        } else {
            x.narrow(1, 0, len)
        }
    }

    /// `query: [B, L, D]` over `key_value: [B, S, D]` to `[B, L, D]`.
    fn forward_t(&self, query: &Tensor, key_value: &Tensor, train: bool) -> Tensor {
        let s = query.size();
        let (b, l) = (s[0], s[1]);
        let q = self.heads(&self.query.forward(query));
        let k = self.heads(&Self::fit(&self.key.forward(key_value), l));
        let v = self.heads(&Self::fit(&self.value.forward(key_value), l));
        // period-based dependencies: R(tau) for tau = 0..L-1, [B, h, d, L]
        let qf = q.fft_rfft(None::<i64>, -1, "backward");
        let kf = k.fft_rfft(None::<i64>, -1, "backward");
        let corr = (qf * kf.conj()).fft_irfft(Some(l), -1, "backward");
        // mean over heads and channels: [B, L]
        let mean_corr = corr.mean_dim([1i64, 2].as_slice(), false, Kind::Float);
        let k_lags = top_k(self.factor, l);
        let agg = if train {
            // lags shared by the batch (the paper's fast training path)
            let (_, lags) = mean_corr
                .mean_dim(0, false, Kind::Float)
                .topk(k_lags, -1, true, true);
            let weights = mean_corr.index_select(1, &lags).softmax(-1, Kind::Float);
            let mut agg = v.zeros_like();
            for i in 0..k_lags {
                let tau = lags.int64_value(&[i]);
                let w = weights.select(1, i).view([b, 1, 1, 1]);
                agg += v.roll([-tau], [-1]) * w;
            }
            agg
        } else {
            // lags per window
            let (top, lags) = mean_corr.topk(k_lags, -1, true, true);
            let weights = top.softmax(-1, Kind::Float);
            let doubled = v.repeat([1, 1, 1, 2]);
            let steps = Tensor::arange(l, (Kind::Int64, v.device())).view([1, 1, 1, l]);
            let vs = v.size();
            let mut agg = v.zeros_like();
            for i in 0..k_lags {
                let index =
                    (&steps + lags.select(1, i).view([b, 1, 1, 1])).expand(vs.as_slice(), false);
                let w = weights.select(1, i).view([b, 1, 1, 1]);
                agg += doubled.gather(-1, &index, false) * w;
            }
            agg
        };
        let out = agg
            .permute([0, 3, 1, 2])
            .contiguous()
            .view([b, l, self.n_heads * self.d_head]);
        self.out.forward(&out)
    }
}

/// The feed-forward network of Autoformer's layers (kernel-1
/// convolutions without bias): `ff1`, `ff2`.
#[derive(Debug)]
struct FeedForward {
    ff1: nn::Linear,
    ff2: nn::Linear,
    activation: Activation,
    dropout: f64,
}

impl FeedForward {
    fn new(p: &nn::Path<'_>, c: &AutoformerConfig) -> Self {
        Self {
            ff1: torch_linear(p / "ff1", c.hidden_size, c.conv_hidden_size, false),
            ff2: torch_linear(p / "ff2", c.conv_hidden_size, c.hidden_size, false),
            activation: c.activation,
            dropout: c.dropout,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = self
            .activation
            .apply(&self.ff1.forward(x))
            .dropout_t(self.dropout, train);
        self.ff2.forward(&y).dropout_t(self.dropout, train)
    }
}

/// LayerNorm minus its mean over time (`my_Layernorm`), on `[B, T, D]`.
#[derive(Debug)]
struct SeasonalLayerNorm(nn::LayerNorm);

impl SeasonalLayerNorm {
    fn new(p: nn::Path<'_>, d: i64) -> Self {
        Self(nn::layer_norm(p, vec![d], Default::default()))
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.0.forward(x);
        let mean = x.mean_dim(1, true, Kind::Float);
        x - mean
    }
}

/// An encoder layer: `attention/*`, `ff1`, `ff2`.
#[derive(Debug)]
struct EncoderLayer {
    attention: AutoCorrelation,
    ff: FeedForward,
    kernel: i64,
    dropout: f64,
}

impl EncoderLayer {
    fn new(p: &nn::Path<'_>, c: &AutoformerConfig) -> Self {
        Self {
            attention: AutoCorrelation::new(p / "attention", c),
            ff: FeedForward::new(p, c),
            kernel: c.moving_avg,
            dropout: c.dropout,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let a = self
            .attention
            .forward_t(x, x, train)
            .dropout_t(self.dropout, train);
        let (x, _) = series_decomp(&(x + a), self.kernel);
        let y = self.ff.forward_t(&x, train);
        series_decomp(&(x + y), self.kernel).0
    }
}

/// A decoder layer: `self_attention/*`, `cross_attention/*`, `ff1`,
/// `ff2`, `trend_projection/weight` (`[1, D, 3]`).
#[derive(Debug)]
struct DecoderLayer {
    self_attention: AutoCorrelation,
    cross_attention: AutoCorrelation,
    ff: FeedForward,
    trend_projection: nn::Conv1D,
    kernel: i64,
    dropout: f64,
}

impl DecoderLayer {
    fn new(p: &nn::Path<'_>, c: &AutoformerConfig) -> Self {
        let bound = 1.0 / ((3 * c.hidden_size) as f64).sqrt();
        Self {
            self_attention: AutoCorrelation::new(p / "self_attention", c),
            cross_attention: AutoCorrelation::new(p / "cross_attention", c),
            ff: FeedForward::new(p, c),
            trend_projection: nn::conv1d(
                p / "trend_projection",
                c.hidden_size,
                1,
                3,
                nn::ConvConfig {
                    padding: 1,
                    bias: false,
                    ws_init: nn::Init::Uniform {
                        lo: -bound,
                        up: bound,
                    },
                    padding_mode: nn::PaddingMode::Circular,
                    ..Default::default()
                },
            ),
            kernel: c.moving_avg,
            dropout: c.dropout,
        }
    }

    /// The seasonal part `[B, Ld, D]` and this layer's trend `[B, Ld, 1]`.
    fn forward_t(&self, x: &Tensor, memory: &Tensor, train: bool) -> (Tensor, Tensor) {
        let p = self.dropout;
        let a = self
            .self_attention
            .forward_t(x, x, train)
            .dropout_t(p, train);
        let (x, t1) = series_decomp(&(x + a), self.kernel);
        let c = self
            .cross_attention
            .forward_t(&x, memory, train)
            .dropout_t(p, train);
        let (x, t2) = series_decomp(&(x + c), self.kernel);
        let y = self.ff.forward_t(&x, train);
        let (x, t3) = series_decomp(&(x + y), self.kernel);
        let trend = self
            .trend_projection
            .forward(&(t1 + t2 + t3).transpose(1, 2))
            .transpose(1, 2);
        (x, trend)
    }
}

/// The Autoformer forecaster (see the module documentation).
///
/// Parameters: `enc_embedding/*`, `dec_embedding/*`, `encoder/layer{i}/*`,
/// `encoder/norm/*`, `decoder/layer{i}/*`, `decoder/norm/*`,
/// `projection/*`.
#[derive(Debug)]
pub struct Autoformer {
    cfg: AutoformerConfig,
    enc_embedding: DataEmbedding,
    dec_embedding: DataEmbedding,
    encoder: Vec<EncoderLayer>,
    encoder_norm: SeasonalLayerNorm,
    decoder: Vec<DecoderLayer>,
    decoder_norm: SeasonalLayerNorm,
    projection: nn::Linear,
}

impl Autoformer {
    /// The model of `cfg` with its parameters under `p`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for lengths, widths or layer counts
    /// below 1, a `label_len` outside `[0, L]`, a width that the heads do
    /// not divide, a moving-average kernel below 1, a non-positive factor,
    /// or a dropout outside `[0, 1)`.
    pub fn new(p: &nn::Path<'_>, cfg: &AutoformerConfig) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.hidden_size;
        let dec_len = cfg.label_len + cfg.horizon;
        Ok(Self {
            enc_embedding: DataEmbedding::new(
                p / "enc_embedding",
                1,
                d,
                cfg.input_size,
                false,
                cfg.dropout,
            ),
            dec_embedding: DataEmbedding::new(
                p / "dec_embedding",
                1,
                d,
                dec_len,
                false,
                cfg.dropout,
            ),
            encoder: (0..cfg.encoder_layers)
                .map(|i| EncoderLayer::new(&(p / "encoder" / format!("layer{i}")), cfg))
                .collect(),
            encoder_norm: SeasonalLayerNorm::new(p / "encoder" / "norm", d),
            decoder: (0..cfg.decoder_layers)
                .map(|i| DecoderLayer::new(&(p / "decoder" / format!("layer{i}")), cfg))
                .collect(),
            decoder_norm: SeasonalLayerNorm::new(p / "decoder" / "norm", d),
            projection: torch_linear(p / "projection", d, 1, true),
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AutoformerConfig {
        &self.cfg
    }

    /// Forecasts `[N, H]` of `x: [N, L]`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] when `x` is not `[N, L]`.
    pub fn try_forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.cfg;
        check_window(NAME, x, c.input_size)?;
        let (n, l, h, label) = (x.size()[0], c.input_size, c.horizon, c.label_len);
        let x = x.to_kind(Kind::Float).unsqueeze(-1); // [N, L, 1]
        let (seasonal_x, trend_x) = series_decomp(&x, c.moving_avg);
        let mean = x.mean_dim(1, true, Kind::Float).expand([n, h, 1], false);
        let zeros = Tensor::zeros([n, h, 1], (Kind::Float, x.device()));
        let trend_init = Tensor::cat(&[trend_x.narrow(1, l - label, label), mean], 1);
        let seasonal_init = Tensor::cat(&[seasonal_x.narrow(1, l - label, label), zeros], 1);

        let mut memory = self.enc_embedding.forward_t(&x, train);
        for layer in &self.encoder {
            memory = layer.forward_t(&memory, train);
        }
        let memory = self.encoder_norm.forward(&memory);

        let seasonal = self.dec_embedding.forward_t(&seasonal_init, train);
        let (seasonal, trend) =
            self.decoder
                .iter()
                .fold((seasonal, trend_init), |(seasonal, trend), layer| {
                    let (seasonal, t) = layer.forward_t(&seasonal, &memory, train);
                    (seasonal, trend + t)
                });
        let seasonal = self
            .projection
            .forward(&self.decoder_norm.forward(&seasonal));
        Ok((trend + seasonal).squeeze_dim(-1).narrow(1, label, h))
    }
}

crate::forecaster_via_try_forward!(Autoformer, NAME);

/// Builds the Autoformer of `cfg` (see [`AutoformerConfig::from_forecast`])
/// under `p`.
///
/// # Errors
/// As [`Autoformer::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(Autoformer::new(
        p,
        &AutoformerConfig::from_forecast(cfg),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_all_gradients, parameter_count, small, train_sine};
    use crate::ModelSize;
    use tch::Device;

    #[test]
    fn output_shapes() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        // decoder longer than the encoder (padding), shorter (cut), odd lengths
        for (l, h) in [(24, 12), (48, 6), (17, 5), (1, 2)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let m = build(&vs.root(), &small(l, h)).expect("builds");
            let x = Tensor::randn([3, l], (Kind::Float, Device::Cpu));
            assert_eq!(m.forward_t(&x, true).size(), vec![3, h]);
            assert_eq!(m.forward_t(&x, false).size(), vec![3, h]);
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Autoformer::new(&vs.root(), &AutoformerConfig::from_forecast(&small(8, 2)))
            .expect("builds");
        let bad = Tensor::zeros([2, 7], (Kind::Float, Device::Cpu));
        assert!(matches!(
            m.try_forward(&bad, false),
            Err(ModelError::Shape { .. })
        ));
        assert_eq!(top_k(3.0, 96), 13);
        assert_eq!(top_k(3.0, 1), 1);
    }

    #[test]
    fn auto_correlation_finds_the_period() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        // With identity projections, the correlation of a period-8 signal
        // peaks at lags 0, 8, 16, ...; the aggregation of such a signal
        // rolled by those lags is the signal itself.
        let vs = nn::VarStore::new(Device::Cpu);
        let c = AutoformerConfig {
            hidden_size: 1,
            n_head: 1,
            factor: 1.0,
            ..AutoformerConfig::from_forecast(&small(32, 8))
        };
        let ac = AutoCorrelation::new(vs.root() / "ac", &c);
        tch::no_grad(|| {
            for lin in [&ac.query, &ac.key, &ac.value, &ac.out] {
                let _ = lin.ws.shallow_clone().fill_(1.0);
                if let Some(b) = &lin.bs {
                    let _ = b.shallow_clone().fill_(0.0);
                }
            }
        });
        let t = Tensor::arange(32, (Kind::Float, Device::Cpu));
        let x = (t * (2.0 * std::f64::consts::PI / 8.0))
            .sin()
            .view([1, 32, 1]);
        for train in [true, false] {
            let y = ac.forward_t(&x, &x, train);
            let d = (y - &x).abs().max().double_value(&[]);
            assert!(d < 1e-4, "train={train}: off by {d}");
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = build(&vs.root(), &small(24, 12)).expect("builds");
        assert_all_gradients(&vs, m.as_ref(), 24, 12);
    }

    #[test]
    fn learns_a_noisy_sine() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = build(&vs.root(), &small(36, 12).dropout(0.0)).expect("builds");
        let (before, after) = train_sine(&vs, m.as_ref(), 36, 12, 60, 5e-3);
        println!("{NAME} training loss {before:.4} -> {after:.4}");
        assert!(after < 0.5 * before, "loss {before} -> {after}");
    }

    #[test]
    fn invalid_configurations() {
        tch::set_num_threads(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let base = AutoformerConfig::from_forecast(&small(24, 12));
        for bad in [
            AutoformerConfig {
                n_head: 5,
                ..base.clone()
            },
            AutoformerConfig {
                label_len: -1,
                ..base.clone()
            },
            AutoformerConfig {
                moving_avg: 0,
                ..base.clone()
            },
            AutoformerConfig {
                factor: 0.0,
                ..base.clone()
            },
            AutoformerConfig {
                decoder_layers: 0,
                ..base.clone()
            },
            AutoformerConfig {
                dropout: 1.0,
                ..base.clone()
            },
        ] {
            assert!(matches!(
                Autoformer::new(&vs.root(), &bad),
                Err(ModelError::InvalidConfig { model: NAME, .. })
            ));
        }
    }

    #[test]
    fn parameter_counts() {
        tch::set_num_threads(1);
        for size in [ModelSize::Paper, ModelSize::Small] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _m = build(&vs.root(), &ForecastConfig::new(96, 96).size(size)).expect("builds");
            println!(
                "{NAME} {size:?} L=96 H=96: {} parameters",
                parameter_count(&vs)
            );
        }
    }
}
