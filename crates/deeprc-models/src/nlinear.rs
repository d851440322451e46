//! NLinear (Zeng et al. 2023, "Are Transformers Effective for Time Series
//! Forecasting?", AAAI): one linear layer from the look-back to the
//! horizon, on the window minus its last value.
//!
//! ```text
//!  x [N, L] -- minus x[:, L-1] --> Linear(L -> H) -- plus x[:, L-1] --> [N, H]
//! ```
//!
//! Subtracting the last value (and adding it back) is the paper's simple
//! normalisation against a distribution shift between the look-back and
//! the horizon. As in NeuralForecast's `NLinear`, one layer is shared by
//! all series (channel independence). Hyperparameters: none beyond `L` and
//! `H`; the small variant is the same model (`L*H + H` parameters, 9,312
//! for `L = H = 96`).

use crate::{check_window, layers, ForecastConfig, Forecaster, ModelError, Result};
use tch::nn::{self, Module};
use tch::Tensor;

/// The model's name in the registry.
const NAME: &str = "NLinear";

/// NLinear's hyperparameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NLinearConfig {
    /// Past values in (`L`).
    pub input_size: i64,
    /// Future values out (`H`).
    pub horizon: i64,
}

impl NLinearConfig {
    /// The configuration for `cfg`'s lengths (the model has no other
    /// hyperparameters, so Paper and Small are the same).
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
        }
    }
}

/// NLinear: `Linear(x - x_last) + x_last`.
#[derive(Debug)]
pub struct NLinear {
    config: NLinearConfig,
    linear: nn::Linear,
}

impl NLinear {
    /// Builds NLinear with its layer at `p / "linear"`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] when `input_size` or `horizon` is not
    /// positive.
    pub fn new(p: &nn::Path<'_>, config: &NLinearConfig) -> Result<Self> {
        if config.input_size < 1 || config.horizon < 1 {
            return Err(ModelError::InvalidConfig {
                model: NAME,
                reason: format!(
                    "input_size {} and horizon {} must both be at least 1",
                    config.input_size, config.horizon
                ),
            });
        }
        Ok(Self {
            config: config.clone(),
            linear: layers::linear(p / "linear", config.input_size, config.horizon),
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &NLinearConfig {
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

impl Forecaster for NLinear {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let last = x.narrow(1, self.config.input_size - 1, 1);
        self.linear.forward(&(x - &last)) + last
    }
}

/// Builds NLinear under `p`.
///
/// # Errors
/// As [`NLinear::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(NLinear::new(
        p,
        &NLinearConfig::from_forecast(cfg),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_all_gradients, small, train_sine};
    use tch::{Device, Kind};

    #[test]
    fn output_shapes() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        for (l, h) in [(24, 6), (96, 24), (1, 3)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = crate::build(NAME, &vs.root(), &small(l, h)).expect("builds");
            let x = Tensor::randn([5, l], (Kind::Float, Device::Cpu));
            assert_eq!(model.forward_t(&x, true).size(), vec![5, h]);
            assert_eq!(model.name(), NAME);
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let m = NLinear::new(&vs.root(), &NLinearConfig::from_forecast(&small(96, 96)))
            .expect("builds");
        assert_eq!(
            vs.trainable_variables()
                .iter()
                .map(|t| t.numel())
                .sum::<usize>(),
            9312
        );
        let wrong = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
        assert!(matches!(
            m.try_forward(&wrong, false),
            Err(ModelError::Shape { .. })
        ));
    }

    #[test]
    fn a_constant_window_is_forecast_by_bias_plus_level() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m =
            NLinear::new(&vs.root(), &NLinearConfig::from_forecast(&small(8, 4))).expect("builds");
        let x = Tensor::full([1, 8], 3.0, (Kind::Float, Device::Cpu));
        let y = m.forward_t(&x, false);
        let bias = m.linear.bs.as_ref().expect("a bias").shallow_clone();
        let diff = (y.squeeze_dim(0) - bias - 3.0)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5);
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
        let (before, after) = train_sine(&vs, model.as_ref(), 48, 12, 60, 1e-2);
        assert!(after < 0.5 * before, "loss {before} -> {after}");
    }

    #[test]
    fn impossible_configurations_are_refused() {
        let vs = nn::VarStore::new(Device::Cpu);
        for (l, h) in [(0, 4), (4, 0), (-1, 1)] {
            let cfg = NLinearConfig {
                input_size: l,
                horizon: h,
            };
            assert!(matches!(
                NLinear::new(&vs.root(), &cfg),
                Err(ModelError::InvalidConfig { model: NAME, .. })
            ));
        }
    }
}
