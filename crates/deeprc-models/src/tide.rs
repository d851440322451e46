//! TiDE (Das et al. 2023, "Long-term Forecasting with TiDE: Time-series
//! Dense Encoder", TMLR): an MLP encoder-decoder of residual blocks, a
//! per-step temporal decoder, and a global linear residual from the
//! look-back to the horizon. Without covariates, as NeuralForecast builds
//! it when none are given.
//!
//! ```text
//!  x [N, L] --encoder: ResidualBlock(L -> 512) [x num_encoder_layers]--> [N, 512]
//!           --decoder: ResidualBlock(512 -> 512 .. -> 32 H)------------> [N, H, 32]
//!           --temporal decoder: ResidualBlock(32 -> 128 -> 1), per step-> [N, H]
//!           + global residual Linear(L -> H)(x) ------------------------> [N, H]
//!  ResidualBlock(in -> hidden -> out) = LayerNorm(Dropout(Linear(ReLU(Linear(v)))) + Linear(v))
//! ```
//!
//! Hyperparameters, NeuralForecast's defaults for [`crate::ModelSize::Paper`]:
//! `hidden_size = 512`, `decoder_output_dim = 32`,
//! `temporal_decoder_dim = 128`, 1 encoder and 1 decoder layer, layer
//! norm, dropout 0.3 (3,797,378 parameters for `L = H = 96`).
//! [`crate::ModelSize::Small`]: hidden 64, decoder output 8, temporal
//! decoder 16, one layer each, the same dropout.
//!
//! One deliberate difference from NeuralForecast and the paper's code: the
//! temporal decoder's residual block has no layer norm. Its output has a
//! single feature, and a layer norm over one feature is the constant bias
//! whatever the input (google-research/google-research issue #2133), which
//! would cut the encoder, decoder and temporal decoder off the forecast
//! and leave only the global linear residual to learn.

use crate::layers::{self, mlp::ResidualBlock};
use crate::{check_window, ForecastConfig, Forecaster, ModelError, Result};
use tch::nn::{self, Module};
use tch::Tensor;

/// The model's name in the registry.
const NAME: &str = "TiDE";

/// TiDE's hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TideConfig {
    /// Past values in (`L`).
    pub input_size: i64,
    /// Future values out (`H`).
    pub horizon: i64,
    /// Width of the encoder and decoder residual blocks (512).
    pub hidden_size: i64,
    /// Features per horizon step out of the dense decoder (32).
    pub decoder_output_dim: i64,
    /// Hidden units of the temporal decoder (128).
    pub temporal_decoder_dim: i64,
    /// Residual blocks of the encoder (1).
    pub num_encoder_layers: i64,
    /// Residual blocks of the decoder (1).
    pub num_decoder_layers: i64,
    /// Layer norm at the end of every encoder and decoder block (true).
    pub layer_norm: bool,
    /// Dropout of every residual block (0.3).
    pub dropout: f64,
}

impl TideConfig {
    /// NeuralForecast's defaults for [`crate::ModelSize::Paper`], a narrow
    /// variant for [`crate::ModelSize::Small`]; the dropout is
    /// `cfg.dropout` or 0.3.
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        let small = cfg.is_small();
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            hidden_size: if small { 64 } else { 512 },
            decoder_output_dim: if small { 8 } else { 32 },
            temporal_decoder_dim: if small { 16 } else { 128 },
            num_encoder_layers: 1,
            num_decoder_layers: 1,
            layer_norm: true,
            dropout: cfg.dropout_or(0.3),
        }
    }

    fn check(&self) -> Result<()> {
        let positive = [
            ("input_size", self.input_size),
            ("horizon", self.horizon),
            ("hidden_size", self.hidden_size),
            ("decoder_output_dim", self.decoder_output_dim),
            ("temporal_decoder_dim", self.temporal_decoder_dim),
            ("num_encoder_layers", self.num_encoder_layers),
            ("num_decoder_layers", self.num_decoder_layers),
        ];
        if let Some((what, v)) = positive.iter().find(|(_, v)| *v < 1) {
            return Err(ModelError::InvalidConfig {
                model: NAME,
                reason: format!("{what} is {v}, must be at least 1"),
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::InvalidConfig {
                model: NAME,
                reason: format!("dropout {} must be in [0, 1)", self.dropout),
            });
        }
        Ok(())
    }
}

/// TiDE without covariates.
#[derive(Debug)]
pub struct Tide {
    config: TideConfig,
    encoder: Vec<ResidualBlock>,
    decoder: Vec<ResidualBlock>,
    temporal_decoder: ResidualBlock,
    global_skip: nn::Linear,
}

impl Tide {
    /// Builds TiDE with its blocks at `p / "encoder" / "block_{i}"`,
    /// `p / "decoder" / "block_{i}"`, `p / "temporal_decoder"` and the
    /// global residual at `p / "global_skip"`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] when a length, width or layer count is
    /// not positive, or the dropout is outside `[0, 1)`.
    pub fn new(p: &nn::Path<'_>, config: &TideConfig) -> Result<Self> {
        config.check()?;
        let c = config;
        let (hidden, drop, norm) = (c.hidden_size, c.dropout, c.layer_norm);
        let encoder = (0..c.num_encoder_layers)
            .map(|i| {
                let input = if i == 0 { c.input_size } else { hidden };
                let bp = p / "encoder" / format!("block_{i}");
                ResidualBlock::new(&bp, input, hidden, hidden, drop, norm)
            })
            .collect();
        let decoder = (0..c.num_decoder_layers)
            .map(|i| {
                let output = if i == c.num_decoder_layers - 1 {
                    c.decoder_output_dim * c.horizon
                } else {
                    hidden
                };
                let bp = p / "decoder" / format!("block_{i}");
                ResidualBlock::new(&bp, hidden, hidden, output, drop, norm)
            })
            .collect();
        let temporal_decoder = ResidualBlock::new(
            &(p / "temporal_decoder"),
            c.decoder_output_dim,
            c.temporal_decoder_dim,
            1,
            drop,
            false,
        );
        Ok(Self {
            config: config.clone(),
            encoder,
            decoder,
            temporal_decoder,
            global_skip: layers::linear(p / "global_skip", c.input_size, c.horizon),
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &TideConfig {
        &self.config
    }

    /// [`Forecaster::forward_t`] after checking that `x` is `[N, L]`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] otherwise.
    pub fn try_forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_window(NAME, x, self.config.input_size)?;
        Ok(self.forward_t(x, train))
    }
}

impl Forecaster for Tide {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let n = x.size()[0];
        let skip = self.global_skip.forward(x);
        let mut h = x.shallow_clone();
        for block in self.encoder.iter().chain(&self.decoder) {
            h = block.forward_t(&h, train);
        }
        let h = h.reshape([n, self.config.horizon, self.config.decoder_output_dim]);
        let steps = self.temporal_decoder.forward_t(&h, train).squeeze_dim(2);
        steps + skip
    }
}

/// Builds TiDE under `p`.
///
/// # Errors
/// As [`Tide::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(Tide::new(p, &TideConfig::from_forecast(cfg))?))
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
        for (l, h) in [(24, 6), (96, 24), (3, 1)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = crate::build(NAME, &vs.root(), &small(l, h)).expect("builds");
            let x = Tensor::randn([5, l], (Kind::Float, Device::Cpu));
            assert_eq!(model.forward_t(&x, true).size(), vec![5, h]);
            assert_eq!(model.forward_t(&x, false).size(), vec![5, h]);
            assert_eq!(model.name(), NAME);
        }
        let mut deep = TideConfig::from_forecast(&small(24, 6));
        deep.num_encoder_layers = 2;
        deep.num_decoder_layers = 3;
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Tide::new(&vs.root(), &deep).expect("builds");
        let x = Tensor::randn([2, 24], (Kind::Float, Device::Cpu));
        assert_eq!(m.forward_t(&x, true).size(), vec![2, 6]);
        let vs_small = nn::VarStore::new(Device::Cpu);
        Tide::new(&vs_small.root(), &TideConfig::from_forecast(&small(96, 96))).expect("builds");
        assert_eq!(parameter_count(&vs_small), 131722);
        let wrong = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
        assert!(matches!(
            m.try_forward(&wrong, false),
            Err(ModelError::Shape { .. })
        ));
        let vs = nn::VarStore::new(Device::Cpu);
        let _paper = Tide::new(
            &vs.root(),
            &TideConfig::from_forecast(&ForecastConfig::new(96, 96)),
        )
        .expect("builds");
        assert_eq!(parameter_count(&vs), 3_797_378);
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
        let good = TideConfig::from_forecast(&small(24, 6));
        let bad = [
            TideConfig {
                input_size: 0,
                ..good.clone()
            },
            TideConfig {
                hidden_size: 0,
                ..good.clone()
            },
            TideConfig {
                decoder_output_dim: 0,
                ..good.clone()
            },
            TideConfig {
                temporal_decoder_dim: -1,
                ..good.clone()
            },
            TideConfig {
                num_encoder_layers: 0,
                ..good.clone()
            },
            TideConfig {
                num_decoder_layers: 0,
                ..good.clone()
            },
            TideConfig {
                dropout: 1.5,
                ..good
            },
        ];
        for cfg in bad {
            assert!(
                matches!(
                    Tide::new(&vs.root(), &cfg),
                    Err(ModelError::InvalidConfig { model: NAME, .. })
                ),
                "{cfg:?} accepted"
            );
        }
    }
}
