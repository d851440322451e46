//! DLinear (Zeng et al. 2023, "Are Transformers Effective for Time Series
//! Forecasting?", AAAI): a moving-average decomposition of the window into
//! trend and seasonal parts, one linear layer from the look-back to the
//! horizon for each, summed.
//!
//! ```text
//!  x [N, L] --series_decomp(25)--> seasonal [N, L] --Linear(L -> H)--+
//!                               \-> trend    [N, L] --Linear(L -> H)--+--> [N, H]
//! ```
//!
//! The trend is a moving average of 25 steps (stride 1) over the window
//! padded at both ends by repeating its first and last values, as in the
//! paper's code and NeuralForecast's `SeriesDecomp`
//! ([`crate::layers::decomp`]); the seasonal part is the rest. One pair of
//! layers is shared by all series (channel independence, NeuralForecast's
//! `DLinear`). Hyperparameters: `moving_avg_window = 25` (odd), Paper and
//! Small alike; `2 * (L*H + H)` parameters (18,624 for `L = H = 96`).

use crate::layers::{self, decomp};
use crate::{check_window, ForecastConfig, Forecaster, ModelError, Result};
use tch::nn::{self, Module};
use tch::Tensor;

/// The model's name in the registry.
const NAME: &str = "DLinear";

/// DLinear's hyperparameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DLinearConfig {
    /// Past values in (`L`).
    pub input_size: i64,
    /// Future values out (`H`).
    pub horizon: i64,
    /// Steps of the moving average that gives the trend; odd (25 in the
    /// paper and NeuralForecast).
    pub moving_avg_window: i64,
}

impl DLinearConfig {
    /// The published configuration for `cfg`'s lengths (a kernel of 25;
    /// the model is as cheap as it gets, so Small is the same).
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            moving_avg_window: 25,
        }
    }
}

/// DLinear: `Linear_s(seasonal(x)) + Linear_t(trend(x))`.
#[derive(Debug)]
pub struct DLinear {
    config: DLinearConfig,
    linear_seasonal: nn::Linear,
    linear_trend: nn::Linear,
}

impl DLinear {
    /// Builds DLinear with its layers at `p / "linear_seasonal"` and
    /// `p / "linear_trend"`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] when `input_size` or `horizon` is not
    /// positive, or the moving average's window is not a positive odd
    /// number.
    pub fn new(p: &nn::Path<'_>, config: &DLinearConfig) -> Result<Self> {
        if config.input_size < 1 || config.horizon < 1 {
            return Err(ModelError::InvalidConfig {
                model: NAME,
                reason: format!(
                    "input_size {} and horizon {} must both be at least 1",
                    config.input_size, config.horizon
                ),
            });
        }
        if config.moving_avg_window < 1 || config.moving_avg_window % 2 == 0 {
            return Err(ModelError::InvalidConfig {
                model: NAME,
                reason: format!(
                    "moving_avg_window {} must be a positive odd number",
                    config.moving_avg_window
                ),
            });
        }
        let (l, h) = (config.input_size, config.horizon);
        Ok(Self {
            config: config.clone(),
            linear_seasonal: layers::linear(p / "linear_seasonal", l, h),
            linear_trend: layers::linear(p / "linear_trend", l, h),
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &DLinearConfig {
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

impl Forecaster for DLinear {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let (seasonal, trend) = decomp::series_decomp(x, self.config.moving_avg_window);
        self.linear_seasonal.forward(&seasonal) + self.linear_trend.forward(&trend)
    }
}

/// Builds DLinear under `p`.
///
/// # Errors
/// As [`DLinear::new`].
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(DLinear::new(
        p,
        &DLinearConfig::from_forecast(cfg),
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
        // windows shorter than the kernel too
        for (l, h) in [(24, 6), (96, 24), (3, 2)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = crate::build(NAME, &vs.root(), &small(l, h)).expect("builds");
            let x = Tensor::randn([5, l], (Kind::Float, Device::Cpu));
            assert_eq!(model.forward_t(&x, true).size(), vec![5, h]);
            assert_eq!(model.name(), NAME);
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let m = DLinear::new(&vs.root(), &DLinearConfig::from_forecast(&small(96, 96)))
            .expect("builds");
        assert_eq!(
            vs.trainable_variables()
                .iter()
                .map(|t| t.numel())
                .sum::<usize>(),
            18_624
        );
        let wrong = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
        assert!(matches!(
            m.try_forward(&wrong, false),
            Err(ModelError::Shape { .. })
        ));
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(&vs.root(), &small(48, 12)).expect("builds");
        assert_all_gradients(&vs, model.as_ref(), 48, 12);
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
        for (l, h, k) in [
            (0, 4, 25),
            (4, 0, 25),
            (96, 24, 24),
            (96, 24, 0),
            (96, 24, -3),
        ] {
            let cfg = DLinearConfig {
                input_size: l,
                horizon: h,
                moving_avg_window: k,
            };
            assert!(matches!(
                DLinear::new(&vs.root(), &cfg),
                Err(ModelError::InvalidConfig { model: NAME, .. })
            ));
        }
    }
}
