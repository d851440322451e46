//! Temporal Fusion Transformer (Lim et al. 2021, "Temporal Fusion
//! Transformers for interpretable multi-horizon time series forecasting"),
//! as NeuralForecast's `TFT` builds it, for a single series without
//! exogenous or static covariates.
//!
//! ```text
//!  x [N, L] -> per-step embedding  e_t = x_t * w + b                  [N, L, D]
//!           -> history GRN (the variable selection of one input)       xi_hist
//!  future:  H learned inputs [H, D] (or zeros) -> future GRN          xi_fut [N, H, D]
//!  LSTM encoder over xi_hist (zero initial state), LSTM decoder over xi_fut
//!  from the encoder's final state                                      [N, L + H, D]
//!  gated skip:   phi = LayerNorm(GLU(lstm) + [xi_hist; xi_fut])
//!  (static enrichment: optional context-free GRN(phi); off by default)
//!  interpretable multi-head attention over the L + H steps, causal
//!  keep the H future steps: delta = LayerNorm(GLU(attn) + phi)
//!  position-wise GRN, then  psi = LayerNorm(GLU(GRN(delta)) + phi)
//!  Linear(D, 1) per future step -> forecast [N, H]
//! ```
//!
//! The gated residual network is the paper's
//! `GRN(a) = LayerNorm(a + GLU(Dropout(W_i ELU(W_a a + b_a) + b_i)))`
//! (a linear map on the skip when the widths differ), GLU(z) =
//! `(W_1 z) * sigmoid(W_2 z)`. With a single input variable, variable
//! selection's softmax weight is always 1, so the selection network
//! reduces to that variable's GRN (its weight network would receive no
//! gradient and is left out). There are no static covariates, so the
//! static covariate encoder, the LSTM initial-state contexts (zeros) and
//! the static context of enrichment are absent; NeuralForecast still runs
//! the enrichment GRN with a zero context, available here as
//! [`TftConfig::static_enrichment`] (off by default, as the paper's layer
//! exists to inject static context).
//!
//! Interpretable multi-head attention: each head has its own query and
//! key projection of width `D / n_head`, all heads share one value
//! projection; the heads' outputs are averaged and projected back to `D`.
//! The mask is causal over the whole `L + H` sequence (each step sees
//! itself and the steps before it).
//!
//! Decoder inputs: NeuralForecast, lacking known future inputs, feeds
//! the last observed value repeated over the horizon as a stand-in future
//! covariate; the paper has no such input. Here the decoder steps get
//! either a learned embedding per future step (default,
//! [`FutureInputs::Learned`]) or zeros ([`FutureInputs::Zeros`], the
//! future GRN then being skipped).
//!
//! Hyperparameters ([`TftConfig::from_forecast`]):
//!
//! | | Paper (NeuralForecast defaults) | Small |
//! |---|---|---|
//! | `hidden_size` | 128 | 16 |
//! | `n_head` | 4 | 2 |
//! | `dropout` / `attn_dropout` | 0.1 / 0 | 0.1 / 0 |
//! | LSTM layers | 1 | 1 |
//! | GRN activation | ELU | ELU |
//!
//! Layer norms use `eps = 1e-3` as NeuralForecast; linear maps and LSTMs
//! have PyTorch's initialisation.

use crate::dropout::Dropout;
use crate::layers::attention::{check_dropout, scaled_dot_product_attention};
use crate::layers::torch_linear;
use crate::{check_window, ForecastConfig, Forecaster, ModelError, Result};
use tch::nn::{self, Module, RNN};
use tch::{Kind, Tensor};

const NAME: &str = "TFT";
const LN_EPS: f64 = 1e-3;

/// What the LSTM decoder reads at each future step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FutureInputs {
    /// A learned embedding per future step (through the future GRN).
    #[default]
    Learned,
    /// Zeros (no future GRN).
    Zeros,
}

/// The hyperparameters of [`Tft`].
#[derive(Debug, Clone, PartialEq)]
pub struct TftConfig {
    /// Look-back `L`.
    pub input_size: i64,
    /// Horizon `H`.
    pub horizon: i64,
    /// Width `D` of every layer.
    pub hidden_size: i64,
    /// Attention heads (`hidden_size` must be a multiple).
    pub n_head: i64,
    /// Dropout in the GRNs and after the attention.
    pub dropout: f64,
    /// Dropout of the attention probabilities.
    pub attn_dropout: f64,
    /// Stacked LSTM layers in the encoder and the decoder.
    pub n_rnn_layers: i64,
    /// The decoder's inputs.
    pub future_inputs: FutureInputs,
    /// Apply the (context-free) static enrichment GRN before attention.
    pub static_enrichment: bool,
}

impl TftConfig {
    /// NeuralForecast's defaults for [`crate::ModelSize::Paper`], a narrow
    /// variant for [`crate::ModelSize::Small`]; the dropout of `cfg` if
    /// set.
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        let (hidden_size, n_head) = if cfg.is_small() { (16, 2) } else { (128, 4) };
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            hidden_size,
            n_head,
            dropout: cfg.dropout_or(0.1),
            attn_dropout: 0.0,
            n_rnn_layers: 1,
            future_inputs: FutureInputs::Learned,
            static_enrichment: false,
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
        if self.hidden_size < 1 || self.n_head < 1 || self.hidden_size % self.n_head != 0 {
            return bad(format!(
                "hidden_size {} must be a positive multiple of n_head {}",
                self.hidden_size, self.n_head
            ));
        }
        if self.n_rnn_layers < 1 {
            return bad(format!(
                "n_rnn_layers {} must be at least 1",
                self.n_rnn_layers
            ));
        }
        check_dropout(NAME, "dropout", self.dropout)?;
        check_dropout(NAME, "attn_dropout", self.attn_dropout)
    }
}

fn layer_norm(p: nn::Path<'_>, d: i64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![d],
        nn::LayerNormConfig {
            eps: LN_EPS,
            ..Default::default()
        },
    )
}

/// A gated linear unit `Linear(i, 2o)` then GLU: parameters `linear/*`.
#[derive(Debug)]
struct Glu(nn::Linear);

impl Glu {
    fn new(p: nn::Path<'_>, i: i64, o: i64) -> Self {
        Self(torch_linear(&p / "linear", i, 2 * o, true))
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.0.forward(x).glu(-1)
    }
}

/// A gated residual network (with ELU) from width `i` to `o`:
/// parameters `lin_a`, `lin_i`, `glu/*`, `skip` (when `i != o`), `norm`.
#[derive(Debug)]
struct Grn {
    lin_a: nn::Linear,
    lin_i: nn::Linear,
    glu: Glu,
    skip: Option<nn::Linear>,
    norm: nn::LayerNorm,
    dropout: f64,
}

impl Grn {
    fn new(p: nn::Path<'_>, i: i64, hidden: i64, o: i64, dropout: f64) -> Self {
        Self {
            lin_a: torch_linear(&p / "lin_a", i, hidden, true),
            lin_i: torch_linear(&p / "lin_i", hidden, hidden, true),
            glu: Glu::new(&p / "glu", hidden, o),
            skip: (i != o).then(|| torch_linear(&p / "skip", i, o, true)),
            norm: layer_norm(&p / "norm", o),
            dropout,
        }
    }

    fn forward_t(&self, a: &Tensor, train: bool) -> Tensor {
        let x = self.lin_a.forward(a).elu();
        let x = self.lin_i.forward(&x).dropout_t(self.dropout, train);
        let x = self.glu.forward(&x);
        let skip = match &self.skip {
            Some(s) => s.forward(a),
            None => a.shallow_clone(),
        };
        self.norm.forward(&(x + skip))
    }
}

/// Interpretable multi-head attention: parameters `qkv` (per-head queries
/// and keys, one shared value, no bias) and `out` (no bias).
#[derive(Debug)]
struct InterpretableAttention {
    qkv: nn::Linear,
    out: nn::Linear,
    n_head: i64,
    d_head: i64,
    attn_dropout: f64,
    dropout: f64,
}

impl InterpretableAttention {
    fn new(p: nn::Path<'_>, c: &TftConfig) -> Self {
        let d_head = c.hidden_size / c.n_head;
        Self {
            qkv: torch_linear(
                &p / "qkv",
                c.hidden_size,
                (2 * c.n_head + 1) * d_head,
                false,
            ),
            out: torch_linear(&p / "out", d_head, c.hidden_size, false),
            n_head: c.n_head,
            d_head,
            attn_dropout: c.attn_dropout,
            dropout: c.dropout,
        }
    }

    /// Causal attention of `x: [B, T, D]` to `[B, T, D]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let s = x.size();
        let (b, t) = (s[0], s[1]);
        let (h, d) = (self.n_head, self.d_head);
        let qkv = self.qkv.forward(x);
        let parts = qkv.split_with_sizes([h * d, h * d, d], -1);
        let q = parts[0].view([b, t, h, d]).transpose(1, 2);
        let k = parts[1].view([b, t, h, d]).transpose(1, 2);
        let v = parts[2].unsqueeze(1); // [B, 1, T, d], shared by the heads
        let (o, _) = scaled_dot_product_attention(&q, &k, &v, true, None, self.attn_dropout, train);
        let o = o.mean_dim(1, false, Kind::Float); // [B, T, d]
        self.out.forward(&o).dropout_t(self.dropout, train)
    }
}

fn lstm(p: nn::Path<'_>, d: i64, layers: i64) -> nn::LSTM {
    let bound = 1.0 / (d as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::lstm(
        p,
        d,
        d,
        nn::RNNConfig {
            num_layers: layers,
            batch_first: true,
            w_ih_init: init,
            w_hh_init: init,
            b_ih_init: Some(init),
            b_hh_init: Some(init),
            ..Default::default()
        },
    )
}

/// The TFT forecaster (see the module documentation).
///
/// Parameters: `target_embedding/{weight,bias}`, `future_embedding`
/// (learned inputs), `history_grn/*`, `future_grn/*`, `encoder_lstm/*`,
/// `decoder_lstm/*`, `input_gate/*`, `input_norm/*`, `enrichment_grn/*`
/// (if on), `attention/*`, `attention_gate/*`, `attention_norm/*`,
/// `positionwise_grn/*`, `decoder_gate/*`, `decoder_norm/*`, `output/*`.
#[derive(Debug)]
pub struct Tft {
    cfg: TftConfig,
    target_weight: Tensor,
    target_bias: Tensor,
    future_embedding: Option<Tensor>,
    history_grn: Grn,
    future_grn: Option<Grn>,
    encoder_lstm: nn::LSTM,
    decoder_lstm: nn::LSTM,
    input_gate: Glu,
    input_norm: nn::LayerNorm,
    enrichment_grn: Option<Grn>,
    attention: InterpretableAttention,
    attention_gate: Glu,
    attention_norm: nn::LayerNorm,
    positionwise_grn: Grn,
    decoder_gate: Glu,
    decoder_norm: nn::LayerNorm,
    output: nn::Linear,
}

impl Tft {
    /// The model of `cfg` with its parameters under `p`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for lengths, widths or LSTM layers
    /// below 1, a width that the heads do not divide, or a dropout outside
    /// `[0, 1)`.
    pub fn new(p: &nn::Path<'_>, cfg: &TftConfig) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.hidden_size;
        let drop = cfg.dropout;
        let emb = p / "target_embedding";
        let learned = cfg.future_inputs == FutureInputs::Learned;
        Ok(Self {
            // Xavier-normal as NeuralForecast's TFTEmbedding ([1, D]: fans 1 and D)
            target_weight: emb.var(
                "weight",
                &[d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: (2.0 / (d as f64 + 1.0)).sqrt(),
                },
            ),
            target_bias: emb.var("bias", &[d], nn::Init::Const(0.0)),
            future_embedding: learned.then(|| {
                p.var(
                    "future_embedding",
                    &[cfg.horizon, d],
                    nn::Init::Randn {
                        mean: 0.0,
                        stdev: (2.0 / (cfg.horizon + d) as f64).sqrt(),
                    },
                )
            }),
            history_grn: Grn::new(p / "history_grn", d, d, d, drop),
            future_grn: learned.then(|| Grn::new(p / "future_grn", d, d, d, drop)),
            encoder_lstm: lstm(p / "encoder_lstm", d, cfg.n_rnn_layers),
            decoder_lstm: lstm(p / "decoder_lstm", d, cfg.n_rnn_layers),
            input_gate: Glu::new(p / "input_gate", d, d),
            input_norm: layer_norm(p / "input_norm", d),
            enrichment_grn: cfg
                .static_enrichment
                .then(|| Grn::new(p / "enrichment_grn", d, d, d, drop)),
            attention: InterpretableAttention::new(p / "attention", cfg),
            attention_gate: Glu::new(p / "attention_gate", d, d),
            attention_norm: layer_norm(p / "attention_norm", d),
            positionwise_grn: Grn::new(p / "positionwise_grn", d, d, d, drop),
            decoder_gate: Glu::new(p / "decoder_gate", d, d),
            decoder_norm: layer_norm(p / "decoder_norm", d),
            output: torch_linear(p / "output", d, 1, true),
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TftConfig {
        &self.cfg
    }

    /// Forecasts `[N, H]` of `x: [N, L]`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] when `x` is not `[N, L]`.
    pub fn try_forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.cfg;
        check_window(NAME, x, c.input_size)?;
        let (n, l, h, d) = (x.size()[0], c.input_size, c.horizon, c.hidden_size);
        let x = x.to_kind(Kind::Float);
        // inputs: embedded, then the (degenerate) variable selection
        let e = x.unsqueeze(-1) * &self.target_weight + &self.target_bias; // [N, L, D]
        let hist = self.history_grn.forward_t(&e, train);
        let fut = match (&self.future_embedding, &self.future_grn) {
            (Some(f), Some(grn)) => grn.forward_t(&f.unsqueeze(0).expand([n, h, d], false), train),
            _ => Tensor::zeros([n, h, d], (Kind::Float, x.device())),
        };
        // local processing: LSTM encoder-decoder, gated skip connection
        let (history, state) = self.encoder_lstm.seq(&hist);
        let (future, _) = self.decoder_lstm.seq_init(&fut, &state);
        let lstm_out = Tensor::cat(&[history, future], 1);
        let inputs = Tensor::cat(&[hist, fut], 1);
        let phi = self
            .input_norm
            .forward(&(self.input_gate.forward(&lstm_out) + inputs)); // [N, L + H, D]
        let enriched = match &self.enrichment_grn {
            Some(g) => g.forward_t(&phi, train),
            None => phi.shallow_clone(),
        };
        // temporal self-attention (causal), on the future steps from here on
        let att = self.attention.forward_t(&enriched, train).narrow(1, l, h);
        let delta = self
            .attention_norm
            .forward(&(self.attention_gate.forward(&att) + enriched.narrow(1, l, h)));
        let y = self.positionwise_grn.forward_t(&delta, train);
        let psi = self
            .decoder_norm
            .forward(&(self.decoder_gate.forward(&y) + phi.narrow(1, l, h)));
        Ok(self.output.forward(&psi).squeeze_dim(-1))
    }
}

crate::forecaster_via_try_forward!(Tft, NAME);

/// Builds the Tft of `cfg` (see [`TftConfig::from_forecast`]) under `p`.
///
/// # Errors
/// As [`Tft::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(Tft::new(p, &TftConfig::from_forecast(cfg))?))
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
        for (l, h) in [(24, 12), (7, 3), (1, 1)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let m = build(&vs.root(), &small(l, h)).expect("builds");
            let x = Tensor::randn([3, l], (Kind::Float, Device::Cpu));
            assert_eq!(m.forward_t(&x, true).size(), vec![3, h]);
            assert_eq!(m.forward_t(&x, false).size(), vec![3, h]);
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = TftConfig {
            future_inputs: FutureInputs::Zeros,
            static_enrichment: true,
            n_rnn_layers: 2,
            ..TftConfig::from_forecast(&small(10, 4))
        };
        let m = Tft::new(&vs.root(), &cfg).expect("builds");
        let x = Tensor::randn([2, 10], (Kind::Float, Device::Cpu));
        assert_eq!(m.forward_t(&x, true).size(), vec![2, 4]);
        let bad = Tensor::zeros([2, 9], (Kind::Float, Device::Cpu));
        assert!(matches!(
            m.try_forward(&bad, false),
            Err(ModelError::Shape { .. })
        ));
    }

    #[test]
    fn attention_is_causal() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let att =
            InterpretableAttention::new(vs.root() / "a", &TftConfig::from_forecast(&small(6, 2)));
        let x = Tensor::randn([2, 8, 16], (Kind::Float, Device::Cpu));
        let x2 = x.copy();
        let _ = x2.narrow(1, 5, 3).fill_(1.0);
        let (y, y2) = (att.forward_t(&x, false), att.forward_t(&x2, false));
        let past = (y.narrow(1, 0, 5) - y2.narrow(1, 0, 5))
            .abs()
            .max()
            .double_value(&[]);
        assert!(past < 1e-6, "the past moved by {past}");
        assert_eq!(y.size(), vec![2, 8, 16]);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = TftConfig {
            static_enrichment: true,
            ..TftConfig::from_forecast(&small(24, 12))
        };
        let m = Tft::new(&vs.root(), &cfg).expect("builds");
        assert_all_gradients(&vs, &m, 24, 12);
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
        let base = TftConfig::from_forecast(&small(24, 12));
        for bad in [
            TftConfig {
                n_head: 3,
                ..base.clone()
            },
            TftConfig {
                hidden_size: 0,
                ..base.clone()
            },
            TftConfig {
                n_rnn_layers: 0,
                ..base.clone()
            },
            TftConfig {
                dropout: 1.0,
                ..base.clone()
            },
            TftConfig {
                input_size: 0,
                ..base.clone()
            },
        ] {
            assert!(matches!(
                Tft::new(&vs.root(), &bad),
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
