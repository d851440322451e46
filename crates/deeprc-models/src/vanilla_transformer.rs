//! VanillaTransformer: the encoder-decoder Transformer of Vaswani et al.
//! 2017 ("Attention is all you need") as the Informer paper (Zhou et al.
//! 2021) uses it for long-horizon forecasting, and as NeuralForecast's
//! `VanillaTransformer` implements it.
//!
//! ```text
//!  x [N, L] -> [N, L, 1] -> DataEmbedding (conv token + sinusoidal PE, dropout)
//!           -> encoder_layers x EncoderLayer (full self-attention) -> LayerNorm  = memory [N, L, D]
//!  decoder input [N, label_len + H, 1] = last label_len values of x, then H zeros
//!           -> DataEmbedding -> decoder_layers x DecoderLayer (causal self-attention,
//!              cross-attention to memory) -> LayerNorm -> Linear(D, 1)
//!           -> the last H steps = forecast [N, H]
//! ```
//!
//! The whole horizon comes out of one forward pass (Informer's "generative
//! style" decoder), not step by step. The layers are post-norm (see
//! [`crate::layers::attention`]).
//!
//! Hyperparameters ([`VanillaTransformerConfig::from_forecast`]):
//!
//! | | Paper (NeuralForecast defaults) | Small |
//! |---|---|---|
//! | `hidden_size` | 128 | 16 |
//! | `n_head` | 4 | 2 |
//! | `conv_hidden_size` (feed-forward width) | 32 | 16 |
//! | `encoder_layers` / `decoder_layers` | 2 / 1 | 1 / 1 |
//! | `dropout` | 0.05 | 0.05 |
//! | activation | GELU | GELU |
//! | `label_len` | `ceil(L / 2)` | `ceil(L / 2)` |
//!
//! One deliberate difference from NeuralForecast: its decoder
//! self-attention is built with `mask_flag=True` but, on its fused
//! (`scaled_dot_product_attention`) path, applies no mask unless one is
//! passed, and none is; Vaswani et al. and Informer's own code mask it
//! causally, and so does this model by default
//! ([`VanillaTransformerConfig::causal_decoder`]). There are no calendar
//! features (the univariate, covariate-free setting of the paper's runs).

use crate::layers::attention::{
    check_dropout, Activation, DataEmbedding, DecoderLayer, EncoderLayer, LayerConfig,
};
use crate::layers::torch_linear;
use crate::{check_window, ForecastConfig, Forecaster, ModelError, Result};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

const NAME: &str = "VanillaTransformer";

/// The hyperparameters of [`VanillaTransformer`].
#[derive(Debug, Clone, PartialEq)]
pub struct VanillaTransformerConfig {
    /// Look-back `L`.
    pub input_size: i64,
    /// Horizon `H`.
    pub horizon: i64,
    /// Known values that start the decoder input (Informer's "start
    /// token"), at most `L`; NeuralForecast: `ceil(L * 0.5)`.
    pub label_len: i64,
    /// Model width `d_model`.
    pub hidden_size: i64,
    /// Attention heads (`hidden_size` must be a multiple).
    pub n_head: i64,
    /// Width of the position-wise feed-forward network.
    pub conv_hidden_size: i64,
    /// Encoder layers (at least 1).
    pub encoder_layers: i64,
    /// Decoder layers (at least 1).
    pub decoder_layers: i64,
    /// Dropout of the embeddings, attention and layers.
    pub dropout: f64,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Whether the decoder self-attention is causal (Vaswani, Informer).
    pub causal_decoder: bool,
}

impl VanillaTransformerConfig {
    /// NeuralForecast's defaults for [`crate::ModelSize::Paper`], a
    /// narrow one-layer variant for [`crate::ModelSize::Small`]; the
    /// dropout of `cfg` if set.
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        let label_len = (cfg.input_size + 1) / 2;
        let (hidden_size, n_head, conv_hidden_size, encoder_layers) = if cfg.is_small() {
            (16, 2, 16, 1)
        } else {
            (128, 4, 32, 2)
        };
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            label_len,
            hidden_size,
            n_head,
            conv_hidden_size,
            encoder_layers,
            decoder_layers: 1,
            dropout: cfg.dropout_or(0.05),
            activation: Activation::Gelu,
            causal_decoder: true,
        }
    }

    fn layer(&self) -> LayerConfig {
        LayerConfig {
            d_model: self.hidden_size,
            n_heads: self.n_head,
            d_ff: self.conv_hidden_size,
            dropout: self.dropout,
            activation: self.activation,
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
        if self.encoder_layers < 1 || self.decoder_layers < 1 {
            return bad(format!(
                "encoder_layers {} and decoder_layers {} must be at least 1",
                self.encoder_layers, self.decoder_layers
            ));
        }
        check_dropout(NAME, "dropout", self.dropout)?;
        self.layer().validate(NAME)
    }
}

/// The VanillaTransformer forecaster (see the module documentation).
///
/// Parameters: `enc_embedding/*`, `dec_embedding/*`, `encoder/layer{i}/*`,
/// `encoder/norm/*`, `decoder/layer{i}/*`, `decoder/norm/*`, `projection/*`.
#[derive(Debug)]
pub struct VanillaTransformer {
    cfg: VanillaTransformerConfig,
    enc_embedding: DataEmbedding,
    dec_embedding: DataEmbedding,
    encoder: Vec<EncoderLayer>,
    encoder_norm: nn::LayerNorm,
    decoder: Vec<DecoderLayer>,
    decoder_norm: nn::LayerNorm,
    projection: nn::Linear,
}

impl VanillaTransformer {
    /// The model of `cfg` with its parameters under `p`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for lengths below 1, a `label_len`
    /// outside `[0, L]`, no encoder or decoder layer, a width that the
    /// heads do not divide, or a dropout outside `[0, 1)`.
    pub fn new(p: &nn::Path<'_>, cfg: &VanillaTransformerConfig) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.hidden_size;
        let layer = cfg.layer();
        let dec_len = cfg.label_len + cfg.horizon;
        let encoder = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::new(&(p / "encoder" / format!("layer{i}")), NAME, &layer))
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..cfg.decoder_layers)
            .map(|i| DecoderLayer::new(&(p / "decoder" / format!("layer{i}")), NAME, &layer))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            enc_embedding: DataEmbedding::new(
                p / "enc_embedding",
                1,
                d,
                cfg.input_size,
                true,
                cfg.dropout,
            ),
            dec_embedding: DataEmbedding::new(
                p / "dec_embedding",
                1,
                d,
                dec_len,
                true,
                cfg.dropout,
            ),
            encoder,
            encoder_norm: nn::layer_norm(p / "encoder" / "norm", vec![d], Default::default()),
            decoder,
            decoder_norm: nn::layer_norm(p / "decoder" / "norm", vec![d], Default::default()),
            projection: torch_linear(p / "projection", d, 1, true),
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VanillaTransformerConfig {
        &self.cfg
    }

    /// Forecasts `[N, H]` of `x: [N, L]`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] when `x` is not `[N, L]`.
    pub fn try_forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_window(NAME, x, self.cfg.input_size)?;
        let (n, l, h) = (x.size()[0], self.cfg.input_size, self.cfg.horizon);
        let x = x.to_kind(Kind::Float);
        let mut memory = self.enc_embedding.forward_t(&x.unsqueeze(-1), train);
        for layer in &self.encoder {
            memory = layer.forward_t(&memory, false, train);
        }
        let memory = self.encoder_norm.forward(&memory);

        let dec_in = Tensor::cat(
            &[
                x.narrow(1, l - self.cfg.label_len, self.cfg.label_len),
                Tensor::zeros([n, h], (Kind::Float, x.device())),
            ],
            1,
        );
        let mut y = self.dec_embedding.forward_t(&dec_in.unsqueeze(-1), train);
        for layer in &self.decoder {
            y = layer.forward_t(&y, &memory, self.cfg.causal_decoder, train);
        }
        let y = self.projection.forward(&self.decoder_norm.forward(&y));
        Ok(y.squeeze_dim(-1).narrow(1, self.cfg.label_len, h))
    }
}

crate::forecaster_via_try_forward!(VanillaTransformer, NAME);

/// Builds the VanillaTransformer of `cfg` (see
/// [`VanillaTransformerConfig::from_forecast`]) under `p`.
///
/// # Errors
/// As [`VanillaTransformer::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(VanillaTransformer::new(
        p,
        &VanillaTransformerConfig::from_forecast(cfg),
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
        for (l, h) in [(24, 12), (17, 5), (1, 3)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let m = build(&vs.root(), &small(l, h)).expect("builds");
            let x = Tensor::randn([3, l], (Kind::Float, Device::Cpu));
            assert_eq!(m.forward_t(&x, true).size(), vec![3, h]);
            assert_eq!(m.forward_t(&x, false).size(), vec![3, h]);
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let m = VanillaTransformer::new(
            &vs.root(),
            &VanillaTransformerConfig::from_forecast(&small(8, 2)),
        )
        .expect("builds");
        let bad = Tensor::zeros([2, 9], (Kind::Float, Device::Cpu));
        assert!(matches!(
            m.try_forward(&bad, false),
            Err(ModelError::Shape { .. })
        ));
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
        let base = VanillaTransformerConfig::from_forecast(&small(24, 12));
        for bad in [
            VanillaTransformerConfig {
                n_head: 3,
                ..base.clone()
            },
            VanillaTransformerConfig {
                label_len: 25,
                ..base.clone()
            },
            VanillaTransformerConfig {
                encoder_layers: 0,
                ..base.clone()
            },
            VanillaTransformerConfig {
                dropout: 1.5,
                ..base.clone()
            },
            VanillaTransformerConfig {
                horizon: 0,
                ..base.clone()
            },
        ] {
            assert!(matches!(
                VanillaTransformer::new(&vs.root(), &bad),
                Err(ModelError::InvalidConfig { model: NAME, .. })
            ));
        }
    }

    #[test]
    fn parameter_counts() {
        tch::set_num_threads(1);
        for (size, l, h) in [(ModelSize::Paper, 96, 96), (ModelSize::Small, 96, 96)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _m = build(&vs.root(), &ForecastConfig::new(l, h).size(size)).expect("builds");
            println!(
                "{NAME} {size:?} L={l} H={h}: {} parameters",
                parameter_count(&vs)
            );
        }
    }
}
