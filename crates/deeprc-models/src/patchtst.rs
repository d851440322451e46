//! PatchTST (Nie et al. 2023, "A Time Series is Worth 64 Words: Long-term
//! Forecasting with Transformers"), the channel-independent supervised
//! model, as the paper's code and NeuralForecast's `PatchTST` build it.
//!
//! ```text
//!  x [N, L] -> RevIN (instance norm: minus the window mean, over its std; affine a*x+b)
//!           -> end padding: the last value repeated `stride` times  [N, L + S]
//!           -> patches of patch_len P with stride S                 [N, n, P]
//!              n = floor((L + S - P) / S) + 1   (42 for L=336, P=16, S=8)
//!           -> Linear(P, D) + learned positional embedding [n, D], dropout
//!           -> encoder_layers x (multi-head self-attention with residual scores,
//!              Add & BatchNorm, feed-forward D -> d_ff -> D (GELU), Add & BatchNorm)
//!           -> flatten [N, D * n] -> Linear(D * n, H), head dropout
//!           -> RevIN undone -> forecast [N, H]
//! ```
//!
//! Details that follow the paper's code (and NeuralForecast):
//! * the encoder layers are **post-norm** with **BatchNorm** over the model
//!   width (the paper's choice over LayerNorm, which it found better for
//!   time series: BatchNorm1d on `[N, D, n]`, normalising each feature over
//!   windows and patches); [`PatchNorm::Layer`] and
//!   [`PatchTSTConfig::pre_norm`] are available;
//! * **residual attention** (RealFormer): each layer adds the previous
//!   layer's pre-softmax scores to its own;
//! * the attention output goes through dropout twice (the projection's own
//!   dropout and the residual dropout), the feed-forward network has
//!   dropout after its activation, the residual branch after it;
//! * the positional embedding is learned, initialised uniform in
//!   `±0.02` (`pe="zeros"`, `learn_pe=True`);
//! * the patch length is clipped to `L + stride` so that any look-back
//!   gives at least one patch (NeuralForecast's rule).
//!
//! Hyperparameters ([`PatchTSTConfig::from_forecast`]):
//!
//! | | Paper | Small |
//! |---|---|---|
//! | `patch_len` / `stride` | 16 / 8 | 16 / 8 |
//! | `encoder_layers` | 3 | 2 |
//! | `hidden_size` (D) / `n_heads` / `linear_hidden_size` | 128 / 16 / 256 | 16 / 4 / 32 |
//! | `dropout` / `attn_dropout` / `head_dropout` | 0.2 / 0 / 0 | 0.2 / 0 / 0 |
//! | RevIN / affine / subtract last | on / on / off | on / on / off |
//!
//! `Paper` is the default model the paper describes (3 encoder layers,
//! 16 heads, D = 128, F = 256, dropout 0.2), which is
//! also what NeuralForecast's `PatchTST` defaults to today. For the small
//! ETT-hour datasets the paper's scripts shrink it (`scripts/PatchTST/etth1.sh`:
//! 4 heads, D = 16, F = 128, dropout 0.3) to curb overfitting; that
//! variant is [`PatchTSTConfig::etth1`]. `Paper` keeps the default model
//! because it is the one both references call PatchTST and the one
//! NeuralForecast-based comparisons (as the Deep RC paper's) train.
//!
//! RevIN: the paper's code and NeuralForecast enable it by default;
//! the affine parameters are on here (initialised to the identity), while
//! the paper's scripts run `--affine 0` and NeuralForecast defaults to
//! `revin_affine=False, revin_subtract_last=True`; both are fields of the
//! config. [`crate::ChannelIndependent`] may scale the windows as well;
//! RevIN then sees windows that are already standardised.

use crate::dropout::Dropout;
use crate::layers::attention::{check_dropout, Activation, MultiHeadAttention};
use crate::layers::torch_linear;
use crate::{check_window, ForecastConfig, Forecaster, ModelError, Result};
use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

const NAME: &str = "PatchTST";

/// The normalisation of PatchTST's encoder layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatchNorm {
    /// BatchNorm over the model width (the paper's choice).
    #[default]
    Batch,
    /// LayerNorm over the model width.
    Layer,
}

/// The hyperparameters of [`PatchTST`].
#[derive(Debug, Clone, PartialEq)]
pub struct PatchTSTConfig {
    /// Look-back `L`.
    pub input_size: i64,
    /// Horizon `H`.
    pub horizon: i64,
    /// Patch length `P` (at most the padded window, `L + stride`).
    pub patch_len: i64,
    /// Stride `S` between patches.
    pub stride: i64,
    /// Whether the window is padded at the end with `stride` copies of
    /// its last value before patching (`padding_patch="end"`).
    pub pad_end: bool,
    /// Encoder layers (at least 1).
    pub encoder_layers: i64,
    /// Model width `D`.
    pub hidden_size: i64,
    /// Attention heads (`hidden_size` must be a multiple).
    pub n_heads: i64,
    /// Width `F` of the feed-forward network.
    pub linear_hidden_size: i64,
    /// Dropout of the embedding, the attention output and the feed-forward
    /// network.
    pub dropout: f64,
    /// Dropout of the attention probabilities.
    pub attn_dropout: f64,
    /// Dropout after the flatten head.
    pub head_dropout: f64,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Normalisation in the encoder layers.
    pub norm: PatchNorm,
    /// Normalise before each sub-layer instead of after (the paper: after).
    pub pre_norm: bool,
    /// Add the previous layer's attention scores (RealFormer).
    pub res_attention: bool,
    /// Reversible instance normalisation of every window.
    pub revin: bool,
    /// RevIN's learned scale and shift.
    pub revin_affine: bool,
    /// RevIN subtracts the last value instead of the mean.
    pub revin_subtract_last: bool,
}

impl PatchTSTConfig {
    /// The paper's default model for [`crate::ModelSize::Paper`], a narrow
    /// two-layer variant for [`crate::ModelSize::Small`], the paper's ETTh1
    /// script for [`crate::ModelSize::Etth1`] ([`etth1`](Self::etth1)); the
    /// dropout of `cfg` if set. The patch length is clipped to `L + stride`.
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        if cfg.size == crate::ModelSize::Etth1 {
            return Self {
                dropout: cfg.dropout_or(0.3),
                ..Self::etth1(cfg.input_size, cfg.horizon)
            };
        }
        let (encoder_layers, hidden_size, n_heads, linear_hidden_size) = if cfg.is_small() {
            (2, 16, 4, 32)
        } else {
            (3, 128, 16, 256)
        };
        let stride = 8;
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            patch_len: 16.min(cfg.input_size + stride),
            stride,
            pad_end: true,
            encoder_layers,
            hidden_size,
            n_heads,
            linear_hidden_size,
            dropout: cfg.dropout_or(0.2),
            attn_dropout: 0.0,
            head_dropout: 0.0,
            activation: Activation::Gelu,
            norm: PatchNorm::Batch,
            pre_norm: false,
            res_attention: true,
            revin: true,
            revin_affine: true,
            revin_subtract_last: false,
        }
    }

    /// The reduced model of the paper's ETTh1 script (look-back 336 in the
    /// paper): 3 layers, 4 heads, D = 16, F = 128, dropout 0.3, RevIN
    /// without affine parameters, for look-back `input_size` and horizon
    /// `horizon`.
    pub fn etth1(input_size: i64, horizon: i64) -> Self {
        Self {
            hidden_size: 16,
            n_heads: 4,
            linear_hidden_size: 128,
            dropout: 0.3,
            revin_affine: false,
            ..Self::from_forecast(&ForecastConfig::new(input_size, horizon))
        }
    }

    /// The window length after padding.
    fn padded_len(&self) -> i64 {
        self.input_size + if self.pad_end { self.stride } else { 0 }
    }

    /// The number of patches `n`.
    pub fn patch_num(&self) -> i64 {
        (self.padded_len() - self.patch_len).div_euclid(self.stride.max(1)) + 1
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
        if self.patch_len < 1 || self.stride < 1 {
            return bad(format!(
                "patch_len {} and stride {} must be at least 1",
                self.patch_len, self.stride
            ));
        }
        if self.patch_len > self.padded_len() {
            return bad(format!(
                "patch_len {} is longer than the (padded) window of {}",
                self.patch_len,
                self.padded_len()
            ));
        }
        if self.encoder_layers < 1 || self.linear_hidden_size < 1 {
            return bad(format!(
                "encoder_layers {} and linear_hidden_size {} must be at least 1",
                self.encoder_layers, self.linear_hidden_size
            ));
        }
        if self.hidden_size < 1 || self.n_heads < 1 || self.hidden_size % self.n_heads != 0 {
            return bad(format!(
                "hidden_size {} must be a positive multiple of n_heads {}",
                self.hidden_size, self.n_heads
            ));
        }
        check_dropout(NAME, "dropout", self.dropout)?;
        check_dropout(NAME, "attn_dropout", self.attn_dropout)?;
        check_dropout(NAME, "head_dropout", self.head_dropout)
    }
}

/// The normalisation layer of an encoder layer, on `[B, n, D]`.
#[derive(Debug)]
enum NormLayer {
    Batch(nn::BatchNorm),
    Layer(nn::LayerNorm),
}

impl NormLayer {
    fn new(p: nn::Path<'_>, kind: PatchNorm, d: i64) -> Self {
        match kind {
            PatchNorm::Batch => NormLayer::Batch(nn::batch_norm1d(
                p,
                d,
                nn::BatchNormConfig {
                    ws_init: nn::Init::Const(1.0),
                    ..Default::default()
                },
            )),
            PatchNorm::Layer => NormLayer::Layer(nn::layer_norm(p, vec![d], Default::default())),
        }
    }

    /// `x: [B, n, D]`. BatchNorm cannot take batch statistics of a single
    /// value per feature (one window of one patch); it then uses its
    /// running statistics, as in evaluation.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            NormLayer::Batch(bn) => {
                let s = x.size();
                let train = train && s[0] * s[1] > 1;
                bn.forward_t(&x.transpose(1, 2), train).transpose(1, 2)
            }
            NormLayer::Layer(ln) => ln.forward(x),
        }
    }
}

/// One encoder layer (`TSTEncoderLayer`). Parameters: `attention/*`,
/// `norm_attn/*`, `ff1`, `ff2`, `norm_ffn/*`.
#[derive(Debug)]
struct EncoderLayer {
    attention: MultiHeadAttention,
    norm_attn: NormLayer,
    ff1: nn::Linear,
    ff2: nn::Linear,
    norm_ffn: NormLayer,
    dropout: f64,
    activation: Activation,
    pre_norm: bool,
}

impl EncoderLayer {
    fn new(p: &nn::Path<'_>, c: &PatchTSTConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            attention: MultiHeadAttention::new(
                p / "attention",
                NAME,
                d,
                c.n_heads,
                c.attn_dropout,
            )?,
            norm_attn: NormLayer::new(p / "norm_attn", c.norm, d),
            ff1: torch_linear(p / "ff1", d, c.linear_hidden_size, true),
            ff2: torch_linear(p / "ff2", c.linear_hidden_size, d, true),
            norm_ffn: NormLayer::new(p / "norm_ffn", c.norm, d),
            dropout: c.dropout,
            activation: c.activation,
            pre_norm: c.pre_norm,
        })
    }

    /// `src: [B, n, D]` and the previous scores (residual attention) to the
    /// layer output and this layer's scores.
    fn forward_t(&self, src: &Tensor, prev: Option<&Tensor>, train: bool) -> (Tensor, Tensor) {
        let p = self.dropout;
        let mut src = src.shallow_clone();
        if self.pre_norm {
            src = self.norm_attn.forward_t(&src, train);
        }
        let (a, scores) = self
            .attention
            .forward_with_scores(&src, &src, false, prev, train);
        // the projection's dropout, then the residual dropout
        src = &src + a.dropout_t(p, train).dropout_t(p, train);
        if !self.pre_norm {
            src = self.norm_attn.forward_t(&src, train);
        }
        if self.pre_norm {
            src = self.norm_ffn.forward_t(&src, train);
        }
        let y = self.ff2.forward(
            &self
                .activation
                .apply(&self.ff1.forward(&src))
                .dropout_t(p, train),
        );
        src = &src + y.dropout_t(p, train);
        if !self.pre_norm {
            src = self.norm_ffn.forward_t(&src, train);
        }
        (src, scores)
    }
}

/// Reversible instance normalisation (Kim et al. 2022) of `[N, L]`
/// windows: parameters `revin/affine_weight`, `revin/affine_bias` (`[1]`)
/// when affine.
#[derive(Debug)]
struct RevIn {
    affine: Option<(Tensor, Tensor)>,
    subtract_last: bool,
}

const REVIN_EPS: f64 = 1e-5;

impl RevIn {
    fn new(p: nn::Path<'_>, affine: bool, subtract_last: bool) -> Self {
        let affine = affine.then(|| {
            (
                p.var("affine_weight", &[1], nn::Init::Const(1.0)),
                p.var("affine_bias", &[1], nn::Init::Const(0.0)),
            )
        });
        Self {
            affine,
            subtract_last,
        }
    }

    /// The normalised windows and the `(location, scale)` to undo it.
    fn norm(&self, x: &Tensor) -> (Tensor, (Tensor, Tensor)) {
        let l = x.size()[1];
        let loc = if self.subtract_last {
            x.narrow(1, l - 1, 1).detach()
        } else {
            x.mean_dim(1, true, x.kind()).detach()
        };
        let scale = (x.var_dim(1, false, true) + REVIN_EPS).sqrt().detach();
        let mut z = (x - &loc) / &scale;
        if let Some((w, b)) = &self.affine {
            z = z * w + b;
        }
        (z, (loc, scale))
    }

    fn denorm(&self, y: &Tensor, (loc, scale): &(Tensor, Tensor)) -> Tensor {
        let mut y = y.shallow_clone();
        if let Some((w, b)) = &self.affine {
            y = (y - b) / (w + REVIN_EPS * REVIN_EPS);
        }
        y * scale + loc
    }
}

/// The PatchTST forecaster (see the module documentation).
///
/// Parameters: `revin/*` (if RevIN is affine), `patch_embedding/*`,
/// `pos_embedding` (`[n, D]`), `encoder/layer{i}/*`, `head/*`; BatchNorm
/// running statistics are non-trainable variables of the var store.
#[derive(Debug)]
pub struct PatchTST {
    cfg: PatchTSTConfig,
    revin: Option<RevIn>,
    patch_embedding: nn::Linear,
    pos_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    head: nn::Linear,
}

impl PatchTST {
    /// The model of `cfg` with its parameters under `p`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for lengths, sizes or layer counts
    /// below 1, a patch longer than the padded window, a width that the
    /// heads do not divide, or a dropout outside `[0, 1)`.
    pub fn new(p: &nn::Path<'_>, cfg: &PatchTSTConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, n) = (cfg.hidden_size, cfg.patch_num());
        let layers = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::new(&(p / "encoder" / format!("layer{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            revin: cfg
                .revin
                .then(|| RevIn::new(p / "revin", cfg.revin_affine, cfg.revin_subtract_last)),
            patch_embedding: torch_linear(p / "patch_embedding", cfg.patch_len, d, true),
            pos_embedding: p.var(
                "pos_embedding",
                &[n, d],
                nn::Init::Uniform {
                    lo: -0.02,
                    up: 0.02,
                },
            ),
            layers,
            head: torch_linear(p / "head", d * n, cfg.horizon, true),
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PatchTSTConfig {
        &self.cfg
    }

    /// Forecasts `[N, H]` of `x: [N, L]`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] when `x` is not `[N, L]`.
    pub fn try_forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.cfg;
        check_window(NAME, x, c.input_size)?;
        let n = x.size()[0];
        let x = x.to_kind(Kind::Float);
        let (mut z, stats) = match &self.revin {
            Some(r) => {
                let (z, s) = r.norm(&x);
                (z, Some(s))
            }
            None => (x, None),
        };
        if c.pad_end {
            let last = z
                .narrow(1, c.input_size - 1, 1)
                .expand([n, c.stride], false);
            z = Tensor::cat(&[z, last], 1);
        }
        let patches = z.unfold(1, c.patch_len, c.stride); // [N, n, P]
        let mut u = (self.patch_embedding.forward(&patches) + &self.pos_embedding)
            .dropout_t(c.dropout, train);
        let mut scores: Option<Tensor> = None;
        for layer in &self.layers {
            let prev = if c.res_attention {
                scores.as_ref()
            } else {
                None
            };
            let (out, s) = layer.forward_t(&u, prev, train);
            u = out;
            scores = Some(s);
        }
        // [N, n, D] -> [N, D, n] -> [N, D * n] (NeuralForecast's flatten order)
        let flat = u.transpose(1, 2).flatten(1, 2);
        let y = self.head.forward(&flat).dropout_t(c.head_dropout, train);
        Ok(match (&self.revin, &stats) {
            (Some(r), Some(s)) => r.denorm(&y, s),
            _ => y,
        })
    }
}

crate::forecaster_via_try_forward!(PatchTST, NAME);

/// Builds the PatchTST of `cfg` (see [`PatchTSTConfig::from_forecast`])
/// under `p`.
///
/// # Errors
/// As [`PatchTST::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(PatchTST::new(
        p,
        &PatchTSTConfig::from_forecast(cfg),
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
        for (l, h, patches) in [(48, 12, 6), (20, 7, 2), (5, 3, 1)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = PatchTSTConfig::from_forecast(&small(l, h));
            assert_eq!(cfg.patch_num(), patches, "L={l}");
            let m = PatchTST::new(&vs.root(), &cfg).expect("builds");
            let x = Tensor::randn([4, l], (Kind::Float, Device::Cpu));
            assert_eq!(m.forward_t(&x, true).size(), vec![4, h]);
            assert_eq!(m.forward_t(&x, false).size(), vec![4, h]);
            // a single window (one patch for L = 5) also trains
            assert_eq!(m.forward_t(&x.narrow(0, 0, 1), true).size(), vec![1, h]);
        }
        assert_eq!(
            PatchTSTConfig::from_forecast(&ForecastConfig::new(336, 96)).patch_num(),
            42
        );
        let vs = nn::VarStore::new(Device::Cpu);
        let m = PatchTST::new(&vs.root(), &PatchTSTConfig::from_forecast(&small(16, 4)))
            .expect("builds");
        let bad = Tensor::zeros([2, 15], (Kind::Float, Device::Cpu));
        assert!(matches!(
            m.try_forward(&bad, false),
            Err(ModelError::Shape { .. })
        ));
    }

    #[test]
    fn revin_is_reversible_and_variants_run() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let r = RevIn::new(vs.root() / "r", true, false);
        let x = Tensor::randn([3, 10], (Kind::Float, Device::Cpu)) * 5.0 + 2.0;
        let (z, s) = r.norm(&x);
        assert!(
            z.mean_dim(1, false, Kind::Float)
                .abs()
                .max()
                .double_value(&[])
                < 1e-5
        );
        let back = r.denorm(&z, &s);
        assert!((back - &x).abs().max().double_value(&[]) < 1e-4);
        let cfg = PatchTSTConfig {
            norm: PatchNorm::Layer,
            pre_norm: true,
            res_attention: false,
            revin_subtract_last: true,
            pad_end: false,
            ..PatchTSTConfig::from_forecast(&small(32, 8))
        };
        let m = PatchTST::new(&(vs.root() / "m"), &cfg).expect("builds");
        let x = Tensor::randn([2, 32], (Kind::Float, Device::Cpu));
        assert_eq!(m.forward_t(&x, true).size(), vec![2, 8]);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = build(&vs.root(), &small(48, 12)).expect("builds");
        assert_all_gradients(&vs, m.as_ref(), 48, 12);
    }

    #[test]
    fn learns_a_noisy_sine() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = build(&vs.root(), &small(48, 12).dropout(0.0)).expect("builds");
        let (before, after) = train_sine(&vs, m.as_ref(), 48, 12, 60, 5e-3);
        println!("{NAME} training loss {before:.4} -> {after:.4}");
        assert!(after < 0.5 * before, "loss {before} -> {after}");
    }

    #[test]
    fn invalid_configurations() {
        tch::set_num_threads(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let base = PatchTSTConfig::from_forecast(&small(24, 12));
        for bad in [
            PatchTSTConfig {
                patch_len: 40,
                ..base.clone()
            },
            PatchTSTConfig {
                patch_len: 30,
                pad_end: false,
                ..base.clone()
            },
            PatchTSTConfig {
                stride: 0,
                ..base.clone()
            },
            PatchTSTConfig {
                n_heads: 3,
                ..base.clone()
            },
            PatchTSTConfig {
                encoder_layers: 0,
                ..base.clone()
            },
            PatchTSTConfig {
                head_dropout: -0.1,
                ..base.clone()
            },
        ] {
            assert!(matches!(
                PatchTST::new(&vs.root(), &bad),
                Err(ModelError::InvalidConfig { model: NAME, .. })
            ));
        }
    }

    #[test]
    fn parameter_counts() {
        tch::set_num_threads(1);
        for (size, l, h) in [
            (ModelSize::Paper, 336, 96),
            (ModelSize::Paper, 96, 96),
            (ModelSize::Small, 96, 96),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _m = build(&vs.root(), &ForecastConfig::new(l, h).size(size)).expect("builds");
            println!(
                "{NAME} {size:?} L={l} H={h}: {} parameters",
                parameter_count(&vs)
            );
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = PatchTST::new(&vs.root(), &PatchTSTConfig::etth1(336, 96)).expect("builds");
        println!(
            "{NAME} etth1 L=336 H=96: {} parameters",
            parameter_count(&vs)
        );
    }

    #[test]
    fn the_etth1_size_is_the_papers_reduced_model() {
        let cfg = ForecastConfig::new(512, 96).size(ModelSize::Etth1);
        assert_eq!(
            PatchTSTConfig::from_forecast(&cfg),
            PatchTSTConfig::etth1(512, 96)
        );
        let paper = PatchTSTConfig::from_forecast(&ForecastConfig::new(512, 96));
        assert_eq!((paper.hidden_size, paper.n_heads), (128, 16));
        let reduced = PatchTSTConfig::from_forecast(&cfg.dropout(0.1));
        assert_eq!((reduced.hidden_size, reduced.dropout), (16, 0.1));
    }
}
