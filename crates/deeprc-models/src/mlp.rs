//! MLP: NeuralForecast's multilayer perceptron forecaster (`MLP`), a
//! fully connected network of constant width with ReLU activations from
//! the look-back straight to the horizon.
//!
//! ```text
//!  x [N, L] --Linear(L -> W)--ReLU--[Linear(W -> W)--ReLU] x (layers-1)--Linear(W -> H)--> [N, H]
//! ```
//!
//! Hyperparameters (NeuralForecast's defaults): `num_layers = 2` hidden
//! layers of `hidden_size = 1024` units, no dropout (1,247,328 parameters
//! for `L = H = 96`). Small: 2 layers of 64 units.

use crate::layers::mlp::ReluMlp;
use crate::{check_window, ForecastConfig, Forecaster, ModelError, Result};
use tch::{nn, Tensor};

/// The model's name in the registry.
const NAME: &str = "MLP";

/// The MLP's hyperparameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlpConfig {
    /// Past values in (`L`).
    pub input_size: i64,
    /// Future values out (`H`).
    pub horizon: i64,
    /// Hidden layers, each `Linear + ReLU` (2).
    pub num_layers: i64,
    /// Units of every hidden layer (1024).
    pub hidden_size: i64,
}

impl MlpConfig {
    /// NeuralForecast's defaults (2 x 1024) for [`crate::ModelSize::Paper`],
    /// 2 x 64 for [`crate::ModelSize::Small`].
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            num_layers: 2,
            hidden_size: if cfg.is_small() { 64 } else { 1024 },
        }
    }
}

/// The MLP forecaster.
#[derive(Debug)]
pub struct Mlp {
    config: MlpConfig,
    net: ReluMlp,
}

impl Mlp {
    /// Builds the MLP with its layers at `p / "mlp" / "hidden_{i}"` and
    /// `p / "mlp" / "out"`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] when a length, the number of layers or
    /// the width is not positive.
    pub fn new(p: &nn::Path<'_>, config: &MlpConfig) -> Result<Self> {
        let positive = [
            ("input_size", config.input_size),
            ("horizon", config.horizon),
            ("num_layers", config.num_layers),
            ("hidden_size", config.hidden_size),
        ];
        if let Some((what, v)) = positive.iter().find(|(_, v)| *v < 1) {
            return Err(ModelError::InvalidConfig {
                model: NAME,
                reason: format!("{what} is {v}, must be at least 1"),
            });
        }
        let widths = vec![config.hidden_size; config.num_layers as usize];
        Ok(Self {
            config: config.clone(),
            net: ReluMlp::new(
                &(p / "mlp"),
                config.input_size,
                &widths,
                config.horizon,
                0.0,
            ),
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &MlpConfig {
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

impl Forecaster for Mlp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.net.forward_t(x, train)
    }
}

/// Builds the MLP under `p`.
///
/// # Errors
/// As [`Mlp::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(Mlp::new(p, &MlpConfig::from_forecast(cfg))?))
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
        for (l, h) in [(24, 6), (96, 24)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = crate::build(NAME, &vs.root(), &small(l, h)).expect("builds");
            let x = Tensor::randn([5, l], (Kind::Float, Device::Cpu));
            assert_eq!(model.forward_t(&x, true).size(), vec![5, h]);
            assert_eq!(model.name(), NAME);
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let paper = Mlp::new(
            &vs.root(),
            &MlpConfig::from_forecast(&ForecastConfig::new(96, 96)),
        )
        .expect("builds");
        assert_eq!(
            parameter_count(&vs),
            96 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 96 + 96
        );
        let vs_small = nn::VarStore::new(Device::Cpu);
        Mlp::new(&vs_small.root(), &MlpConfig::from_forecast(&small(96, 96))).expect("builds");
        assert_eq!(parameter_count(&vs_small), 16608);
        let wrong = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
        assert!(matches!(
            paper.try_forward(&wrong, false),
            Err(ModelError::Shape { .. })
        ));
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
        let good = MlpConfig::from_forecast(&small(24, 6));
        let bad = [
            MlpConfig {
                num_layers: 0,
                ..good.clone()
            },
            MlpConfig {
                hidden_size: 0,
                ..good.clone()
            },
            MlpConfig {
                input_size: 0,
                ..good.clone()
            },
            MlpConfig {
                horizon: -2,
                ..good
            },
        ];
        for cfg in bad {
            assert!(matches!(
                Mlp::new(&vs.root(), &cfg),
                Err(ModelError::InvalidConfig { model: NAME, .. })
            ));
        }
    }
}
