//! Attention blocks shared by the transformer forecasters
//! (VanillaTransformer, PatchTST, TFT; Autoformer uses the embedding).
//!
//! * [`MultiHeadAttention`]: multi-head scaled dot-product attention
//!   (Vaswani et al. 2017), `softmax(Q K^T / sqrt(d_head)) V` per head,
//!   with an optional causal mask (query `i` sees keys `j <= i`), dropout
//!   on the attention probabilities, and optionally the pre-softmax scores
//!   of the previous layer added to its own (the "residual attention" of
//!   RealFormer that PatchTST uses).
//! * [`EncoderLayer`] and [`DecoderLayer`]: the transformer layers of
//!   Vaswani et al. 2017 as Informer and NeuralForecast
//!   (`TransEncoderLayer` / `TransDecoderLayer`) write them: **post-norm**
//!   (`x = LayerNorm(x + Dropout(Sublayer(x)))` after every sub-layer), a
//!   position-wise feed-forward network `d_model -> d_ff -> d_model`
//!   (NeuralForecast's kernel-1 convolutions, which are linear maps) with
//!   dropout after the activation and after the second map.
//! * [`sinusoidal_encoding`]: the fixed positional encoding
//!   `PE(t, 2i) = sin(t / 10000^(2i/d))`, `PE(t, 2i+1) = cos(...)`.
//! * [`TokenEmbedding`] and [`DataEmbedding`]: Informer's value embedding,
//!   a kernel-3 convolution with circular padding and no bias over the
//!   series, plus (optionally) the positional encoding, then dropout.
//!
//! Every linear map here is made by [`torch_linear`], with PyTorch's
//! `nn.Linear` initialisation (weights and biases uniform in
//! `±1/sqrt(fan_in)`); tch's own default (Kaiming uniform with the ReLU
//! gain, `±sqrt(6/fan_in)`) is about 2.4 times wider, which makes deep
//! attention stacks start with large, saturated scores.
//!
//! Shapes: sequences are `[B, T, d_model]` (batch first).

use super::torch_linear;
use crate::dropout::Dropout;
use crate::{ModelError, Result};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The activation of a feed-forward network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// The exact (erf) GELU, as `torch.nn.functional.gelu`.
    #[default]
    Gelu,
}

impl Activation {
    /// The activation of `x`.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu("none"),
        }
    }
}

/// A `[lq, lk]` boolean mask, `true` where key `j` lies after query `i`
/// (`j > i`): the positions a causal attention must not see.
pub fn causal_mask(lq: i64, lk: i64, device: Device) -> Tensor {
    Tensor::ones([lq, lk], (Kind::Bool, device)).triu(1)
}

/// Scaled dot-product attention of `q: [B, h, Lq, d]` over
/// `k: [B, h, Lk, d]` and `v: [B, h, Lk, dv]`.
///
/// The scores `q k^T * scale` (plus `prev`, the previous layer's scores of
/// shape `[B, h, Lq, Lk]`, when given) are masked to `-inf` above the
/// diagonal when `causal`, turned into probabilities by a softmax over the
/// keys, dropped out with probability `dropout` when `train`, and applied
/// to `v`. Returns the output `[B, h, Lq, dv]` and the pre-softmax scores
/// `[B, h, Lq, Lk]` (with `prev` added, unmasked), which a next layer with
/// residual attention takes as its `prev`.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    prev: Option<&Tensor>,
    dropout: f64,
    train: bool,
) -> (Tensor, Tensor) {
    let d = q.size().last().copied().unwrap_or(1).max(1);
    let scores = q.matmul(&k.transpose(-2, -1)) * (1.0 / (d as f64).sqrt());
    let scores = match prev {
        Some(prev) => scores + prev,
        None => scores,
    };
    let masked = if causal {
        let lq = q.size()[q.dim() - 2];
        let lk = k.size()[k.dim() - 2];
        scores.masked_fill(&causal_mask(lq, lk, q.device()), f64::NEG_INFINITY)
    } else {
        scores.shallow_clone()
    };
    let probs = masked.softmax(-1, q.kind()).dropout_t(dropout, train);
    (probs.matmul(v), scores)
}

/// Multi-head attention: linear projections of the queries, keys and
/// values into `n_heads` heads of `d_model / n_heads`, scaled dot-product
/// attention in each, the heads concatenated and projected back to
/// `d_model`.
///
/// Parameters under its path: `query`, `key`, `value`, `out` (linear maps
/// with biases).
#[derive(Debug)]
pub struct MultiHeadAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    out: nn::Linear,
    n_heads: i64,
    d_head: i64,
    dropout: f64,
}

impl MultiHeadAttention {
    /// Attention of width `d_model` with `n_heads` heads and dropout
    /// `dropout` on the attention probabilities, for the model `model`
    /// (named in errors).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] when `d_model` or `n_heads` is below
    /// 1, `d_model` is not a multiple of `n_heads`, or `dropout` is not in
    /// `[0, 1)`.
    pub fn new(
        p: nn::Path<'_>,
        model: &'static str,
        d_model: i64,
        n_heads: i64,
        dropout: f64,
    ) -> Result<Self> {
        if d_model < 1 || n_heads < 1 || d_model % n_heads != 0 {
            return Err(ModelError::InvalidConfig {
                model,
                reason: format!(
                    "the model width {d_model} must be a positive multiple of the {n_heads} attention heads"
                ),
            });
        }
        check_dropout(model, "attention dropout", dropout)?;
        Ok(Self {
            query: torch_linear(&p / "query", d_model, d_model, true),
            key: torch_linear(&p / "key", d_model, d_model, true),
            value: torch_linear(&p / "value", d_model, d_model, true),
            out: torch_linear(&p / "out", d_model, d_model, true),
            n_heads,
            d_head: d_model / n_heads,
            dropout,
        })
    }

    /// `[B, T, d_model]` into `[B, h, T, d_head]`.
    fn heads(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        x.view([s[0], s[1], self.n_heads, self.d_head])
            .transpose(1, 2)
    }

    /// The attention of `query: [B, Lq, d_model]` over
    /// `key_value: [B, Lk, d_model]` (the same tensor for self-attention),
    /// causal when `causal`, with `prev` scores `[B, h, Lq, Lk]` added
    /// before the softmax when given. Returns the output `[B, Lq, d_model]`
    /// and this layer's pre-softmax scores `[B, h, Lq, Lk]`.
    pub fn forward_with_scores(
        &self,
        query: &Tensor,
        key_value: &Tensor,
        causal: bool,
        prev: Option<&Tensor>,
        train: bool,
    ) -> (Tensor, Tensor) {
        let s = query.size();
        let q = self.heads(&self.query.forward(query));
        let k = self.heads(&self.key.forward(key_value));
        let v = self.heads(&self.value.forward(key_value));
        let (o, scores) =
            scaled_dot_product_attention(&q, &k, &v, causal, prev, self.dropout, train);
        let o = o
            .transpose(1, 2)
            .contiguous()
            .view([s[0], s[1], self.n_heads * self.d_head]);
        (self.out.forward(&o), scores)
    }

    /// The attention output `[B, Lq, d_model]` of `query` over `key_value`
    /// (see [`MultiHeadAttention::forward_with_scores`]).
    pub fn forward_t(
        &self,
        query: &Tensor,
        key_value: &Tensor,
        causal: bool,
        train: bool,
    ) -> Tensor {
        self.forward_with_scores(query, key_value, causal, None, train)
            .0
    }
}

/// The sizes of a transformer layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerConfig {
    /// Width of the sequence features (`d_model`).
    pub d_model: i64,
    /// Attention heads (`d_model` must be a multiple).
    pub n_heads: i64,
    /// Hidden width of the position-wise feed-forward network (`d_ff`).
    pub d_ff: i64,
    /// Dropout on the attention probabilities, after every sub-layer and
    /// inside the feed-forward network.
    pub dropout: f64,
    /// Activation of the feed-forward network.
    pub activation: Activation,
}

impl LayerConfig {
    /// Checks the sizes for the model `model`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for a width, head count or
    /// feed-forward width below 1, a width not a multiple of the heads, or
    /// a dropout outside `[0, 1)`.
    pub fn validate(&self, model: &'static str) -> Result<()> {
        if self.d_model < 1 || self.n_heads < 1 || self.d_model % self.n_heads != 0 {
            return Err(ModelError::InvalidConfig {
                model,
                reason: format!(
                    "the model width {} must be a positive multiple of the {} attention heads",
                    self.d_model, self.n_heads
                ),
            });
        }
        if self.d_ff < 1 {
            return Err(ModelError::InvalidConfig {
                model,
                reason: format!("the feed-forward width {} must be at least 1", self.d_ff),
            });
        }
        check_dropout(model, "dropout", self.dropout)
    }
}

/// Checks that a dropout probability `p` is in `[0, 1)`.
///
/// # Errors
/// [`ModelError::InvalidConfig`] naming `model` and `what` otherwise.
pub fn check_dropout(model: &'static str, what: &str, p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(ModelError::InvalidConfig {
            model,
            reason: format!("{what} {p} must be in [0, 1)"),
        });
    }
    Ok(())
}

/// The position-wise feed-forward network `d_model -> d_ff -> d_model`
/// with dropout after the activation and after the second map
/// (parameters `ff1`, `ff2`).
#[derive(Debug)]
struct FeedForward {
    ff1: nn::Linear,
    ff2: nn::Linear,
    activation: Activation,
    dropout: f64,
}

impl FeedForward {
    fn new(p: &nn::Path<'_>, c: &LayerConfig) -> Self {
        Self {
            ff1: torch_linear(p / "ff1", c.d_model, c.d_ff, true),
            ff2: torch_linear(p / "ff2", c.d_ff, c.d_model, true),
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

fn layer_norm(p: nn::Path<'_>, d: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![d], Default::default())
}

/// A post-norm transformer encoder layer (Vaswani et al. 2017;
/// NeuralForecast's `TransEncoderLayer`):
///
/// ```text
/// x = LayerNorm1(x + Dropout(SelfAttention(x)))
/// x = LayerNorm2(x + FeedForward(x))
/// ```
///
/// Parameters: `attention/*`, `ff1`, `ff2`, `norm1`, `norm2`.
#[derive(Debug)]
pub struct EncoderLayer {
    attention: MultiHeadAttention,
    ff: FeedForward,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
    dropout: f64,
}

impl EncoderLayer {
    /// An encoder layer of sizes `c` for the model `model`.
    ///
    /// # Errors
    /// As [`LayerConfig::validate`].
    pub fn new(p: &nn::Path<'_>, model: &'static str, c: &LayerConfig) -> Result<Self> {
        c.validate(model)?;
        Ok(Self {
            attention: MultiHeadAttention::new(
                p / "attention",
                model,
                c.d_model,
                c.n_heads,
                c.dropout,
            )?,
            ff: FeedForward::new(p, c),
            norm1: layer_norm(p / "norm1", c.d_model),
            norm2: layer_norm(p / "norm2", c.d_model),
            dropout: c.dropout,
        })
    }

    /// The layer applied to `x: [B, T, d_model]` (self-attention causal
    /// when `causal`).
    pub fn forward_t(&self, x: &Tensor, causal: bool, train: bool) -> Tensor {
        let a = self.attention.forward_t(x, x, causal, train);
        let x = self.norm1.forward(&(x + a.dropout_t(self.dropout, train)));
        let y = self.ff.forward_t(&x, train);
        self.norm2.forward(&(x + y))
    }
}

/// A post-norm transformer decoder layer (Vaswani et al. 2017;
/// NeuralForecast's `TransDecoderLayer`):
///
/// ```text
/// x = LayerNorm1(x + Dropout(SelfAttention(x)))        (causal if asked)
/// x = LayerNorm2(x + Dropout(CrossAttention(x, memory)))
/// x = LayerNorm3(x + FeedForward(x))
/// ```
///
/// Parameters: `self_attention/*`, `cross_attention/*`, `ff1`, `ff2`,
/// `norm1`, `norm2`, `norm3`.
#[derive(Debug)]
pub struct DecoderLayer {
    self_attention: MultiHeadAttention,
    cross_attention: MultiHeadAttention,
    ff: FeedForward,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
    norm3: nn::LayerNorm,
    dropout: f64,
}

impl DecoderLayer {
    /// A decoder layer of sizes `c` for the model `model`.
    ///
    /// # Errors
    /// As [`LayerConfig::validate`].
    pub fn new(p: &nn::Path<'_>, model: &'static str, c: &LayerConfig) -> Result<Self> {
        c.validate(model)?;
        Ok(Self {
            self_attention: MultiHeadAttention::new(
                p / "self_attention",
                model,
                c.d_model,
                c.n_heads,
                c.dropout,
            )?,
            cross_attention: MultiHeadAttention::new(
                p / "cross_attention",
                model,
                c.d_model,
                c.n_heads,
                c.dropout,
            )?,
            ff: FeedForward::new(p, c),
            norm1: layer_norm(p / "norm1", c.d_model),
            norm2: layer_norm(p / "norm2", c.d_model),
            norm3: layer_norm(p / "norm3", c.d_model),
            dropout: c.dropout,
        })
    }

    /// The layer applied to `x: [B, T, d_model]` attending to the encoder
    /// output `memory: [B, S, d_model]`; the self-attention is causal when
    /// `causal`.
    pub fn forward_t(&self, x: &Tensor, memory: &Tensor, causal: bool, train: bool) -> Tensor {
        let a = self.self_attention.forward_t(x, x, causal, train);
        let x = self.norm1.forward(&(x + a.dropout_t(self.dropout, train)));
        let c = self.cross_attention.forward_t(&x, memory, false, train);
        let x = self.norm2.forward(&(x + c.dropout_t(self.dropout, train)));
        let y = self.ff.forward_t(&x, train);
        self.norm3.forward(&(x + y))
    }
}

/// The sinusoidal positional encoding `[len, d_model]` (float, on
/// `device`): `PE(t, 2i) = sin(t w_i)`, `PE(t, 2i+1) = cos(t w_i)` with
/// `w_i = 10000^(-2i/d_model)`, as Vaswani et al. 2017. An odd `d_model`
/// gets one more sine than cosine column.
pub fn sinusoidal_encoding(len: i64, d_model: i64, device: Device) -> Tensor {
    let (len_u, d_u) = (len.max(0) as usize, d_model.max(0) as usize);
    let mut pe = vec![0f32; len_u * d_u];
    let step = -(10000f64.ln()) / d_model.max(1) as f64;
    for t in 0..len_u {
        for j in 0..d_u {
            let w = ((j - j % 2) as f64 * step).exp();
            let a = t as f64 * w;
            pe[t * d_u + j] = if j % 2 == 0 { a.sin() } else { a.cos() } as f32;
        }
    }
    Tensor::from_slice(&pe)
        .view([len.max(0), d_model.max(0)])
        .to_device(device)
}

/// Informer's value ("token") embedding: a kernel-3 convolution over time
/// with circular padding and no bias, `c_in` channels to `d_model`,
/// initialised Kaiming-normal (fan in) as in NeuralForecast's
/// `TokenEmbedding`. Parameter: `conv/weight` (`[d_model, c_in, 3]`).
#[derive(Debug)]
pub struct TokenEmbedding {
    conv: nn::Conv1D,
}

impl TokenEmbedding {
    /// An embedding of `c_in` channels into `d_model`.
    pub fn new(p: nn::Path<'_>, c_in: i64, d_model: i64) -> Self {
        let conv = nn::conv1d(
            &p / "conv",
            c_in,
            d_model,
            3,
            nn::ConvConfig {
                padding: 1,
                bias: false,
                ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
                padding_mode: nn::PaddingMode::Circular,
                ..Default::default()
            },
        );
        Self { conv }
    }

    /// `x: [B, T, c_in]` embedded as `[B, T, d_model]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(&x.transpose(1, 2)).transpose(1, 2)
    }
}

/// Informer's data embedding without calendar features: the
/// [`TokenEmbedding`] of the values plus (when asked) the
/// [`sinusoidal_encoding`] of the positions within the window, then
/// dropout. Parameters: `value/conv/weight`.
#[derive(Debug)]
pub struct DataEmbedding {
    value: TokenEmbedding,
    positions: Option<Tensor>,
    dropout: f64,
}

impl DataEmbedding {
    /// An embedding of `c_in` channels into `d_model` for sequences of at
    /// most `max_len` steps, with the positional encoding when `positional`.
    pub fn new(
        p: nn::Path<'_>,
        c_in: i64,
        d_model: i64,
        max_len: i64,
        positional: bool,
        dropout: f64,
    ) -> Self {
        let positions = positional.then(|| sinusoidal_encoding(max_len, d_model, p.device()));
        Self {
            value: TokenEmbedding::new(&p / "value", c_in, d_model),
            positions,
            dropout,
        }
    }

    /// `x: [B, T, c_in]` (`T` at most the `max_len` given to
    /// [`DataEmbedding::new`]) embedded as `[B, T, d_model]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let e = self.value.forward(x);
        let e = match &self.positions {
            Some(pe) => e + pe.narrow(0, 0, x.size()[1]).unsqueeze(0),
            None => e,
        };
        e.dropout_t(self.dropout, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_shapes_and_causality() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mha = MultiHeadAttention::new(vs.root() / "mha", "test", 8, 2, 0.0).expect("valid");
        let x = Tensor::randn([3, 5, 8], (Kind::Float, Device::Cpu));
        let (y, s) = mha.forward_with_scores(&x, &x, true, None, false);
        assert_eq!(y.size(), vec![3, 5, 8]);
        assert_eq!(s.size(), vec![3, 2, 5, 5]);
        // With a causal mask the first output depends on the first step only.
        let x2 = x.copy();
        let _ = x2.narrow(1, 1, 4).fill_(3.0);
        let y2 = mha.forward_t(&x2, &x2, true, false);
        let d = (y.select(1, 0) - y2.select(1, 0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-6, "causal output moved by {d}");
        let y3 = mha.forward_t(&x2, &x2, false, false);
        let d = (y.select(1, 0) - y3.select(1, 0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(d > 1e-4, "full attention should see the future");
        assert!(matches!(
            MultiHeadAttention::new(vs.root() / "bad", "test", 10, 3, 0.0),
            Err(ModelError::InvalidConfig { .. })
        ));
    }

    #[test]
    fn layers_and_embeddings() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let c = LayerConfig {
            d_model: 8,
            n_heads: 2,
            d_ff: 16,
            dropout: 0.1,
            activation: Activation::Gelu,
        };
        let enc = EncoderLayer::new(&(vs.root() / "enc"), "test", &c).expect("valid");
        let dec = DecoderLayer::new(&(vs.root() / "dec"), "test", &c).expect("valid");
        let emb = DataEmbedding::new(vs.root() / "emb", 1, 8, 20, true, 0.1);
        let x = emb.forward_t(&Tensor::randn([2, 7, 1], (Kind::Float, Device::Cpu)), true);
        assert_eq!(x.size(), vec![2, 7, 8]);
        let m = enc.forward_t(&x, false, true);
        let y = dec.forward_t(&x.narrow(1, 0, 4), &m, true, true);
        assert_eq!(y.size(), vec![2, 4, 8]);
        let pe = sinusoidal_encoding(4, 6, Device::Cpu);
        assert!((pe.double_value(&[0, 1]) - 1.0).abs() < 1e-6);
        assert!((pe.double_value(&[2, 0]) - 2f64.sin()).abs() < 1e-6);
        let w2 = 10000f64.powf(-2.0 / 6.0);
        assert!((pe.double_value(&[3, 3]) - (3.0 * w2).cos()).abs() < 1e-6);
        assert!(LayerConfig { d_ff: 0, ..c }.validate("test").is_err());
        assert!(LayerConfig { dropout: 1.0, ..c }.validate("test").is_err());
    }
}
