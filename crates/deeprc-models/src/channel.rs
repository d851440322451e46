//! Multivariate windows through a univariate forecaster, channel by
//! channel with shared weights (channel independence, as in PatchTST and
//! NeuralForecast), with optional per-window scaling.

use crate::{Forecaster, ModelError, Result};
use tch::{Reduction, Tensor};

/// How each window is scaled before the model sees it (and the forecast
/// scaled back): NeuralForecast's `scaler_type`, PatchTST's RevIN without
/// its affine parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowScaling {
    /// The values as given.
    #[default]
    Identity,
    /// Each window minus its mean, over its standard deviation (plus 1e-5).
    Standard,
}

/// A univariate [`Forecaster`] applied to `[B, L, C]` windows: every
/// channel is a series of its own, forecast with the same weights.
#[derive(Debug)]
pub struct ChannelIndependent {
    model: Box<dyn Forecaster>,
    scaling: WindowScaling,
    input_size: i64,
    horizon: i64,
}

impl ChannelIndependent {
    /// Wraps `model`, which takes windows of `input_size` and forecasts
    /// `horizon` values.
    pub fn new(
        model: Box<dyn Forecaster>,
        input_size: i64,
        horizon: i64,
        scaling: WindowScaling,
    ) -> Self {
        Self {
            model,
            scaling,
            input_size,
            horizon,
        }
    }

    /// The univariate model.
    pub fn model(&self) -> &dyn Forecaster {
        self.model.as_ref()
    }

    /// `[B, L, C]` into `[B*C, L]` (scaled), with the statistics to undo
    /// the scaling.
    fn flatten(&self, x: &Tensor) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let s = x.size();
        if s.len() != 3 || s[1] != self.input_size {
            return Err(ModelError::Shape {
                model: self.model.name(),
                expected: format!("[B, {}, C]", self.input_size),
                got: s,
            });
        }
        let flat = x.permute([0, 2, 1]).reshape([s[0] * s[2], s[1]]);
        Ok(match self.scaling {
            WindowScaling::Identity => (flat, None),
            WindowScaling::Standard => {
                let mean = flat.mean_dim(1, true, flat.kind()).detach();
                let std = (flat.var_dim(1, false, true) + 1e-5).sqrt().detach();
                ((&flat - &mean) / &std, Some((mean, std)))
            }
        })
    }

    /// `[B*C, H]` back into `[B, H, C]`.
    fn unflatten(&self, y: Tensor, batch: i64, channels: i64) -> Tensor {
        y.reshape([batch, channels, self.horizon])
            .permute([0, 2, 1])
    }

    /// Forecasts `[B, H, C]` of windows `x: [B, L, C]`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] when `x` is not `[B, L, C]` with the model's `L`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let s = x.size();
        let (flat, stats) = self.flatten(x)?;
        let mut y = self.model.forward_t(&flat, train);
        if let Some((mean, std)) = stats {
            y = y * std + mean;
        }
        Ok(self.unflatten(y, s[0], s[2]))
    }

    /// The training loss of windows `x: [B, L, C]` against `y: [B, H, C]`:
    /// the model's loss on the scaled series (its likelihood, for a
    /// probabilistic model), so that every channel weighs the same.
    ///
    /// # Errors
    /// [`ModelError::Shape`] when the shapes do not match the model.
    pub fn loss(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let ys = y.size();
        let xs = x.size();
        if ys.len() != 3
            || ys[1] != self.horizon
            || xs.len() != 3
            || ys[0] != xs[0]
            || ys[2] != xs[2]
        {
            return Err(ModelError::Shape {
                model: self.model.name(),
                expected: format!(
                    "targets [B, {}, C] matching the inputs {xs:?}",
                    self.horizon
                ),
                got: ys,
            });
        }
        let (flat, stats) = self.flatten(x)?;
        let mut target = y.permute([0, 2, 1]).reshape([ys[0] * ys[2], ys[1]]);
        if let Some((mean, std)) = &stats {
            target = (target - mean) / std;
        }
        Ok(self.model.loss(&flat, &target))
    }

    /// The mean squared error of the point forecast against `y: [B, H, C]`
    /// on the original scale (no gradient).
    ///
    /// # Errors
    /// As [`ChannelIndependent::forward_t`].
    pub fn mse(&self, x: &Tensor, y: &Tensor) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        Ok(self
            .forward_t(x, false)?
            .mse_loss(y, Reduction::Mean)
            .double_value(&[]))
    }

    /// `n` sampled forecasts `[n, B, H, C]` when the model is
    /// probabilistic.
    ///
    /// # Errors
    /// As [`ChannelIndependent::forward_t`].
    pub fn sample(&self, x: &Tensor, n: i64) -> Result<Option<Tensor>> {
        let s = x.size();
        let (flat, stats) = self.flatten(x)?;
        let Some(mut samples) = self.model.sample(&flat, n) else {
            return Ok(None);
        };
        if let Some((mean, std)) = stats {
            samples = samples * std.unsqueeze(0) + mean.unsqueeze(0);
        }
        Ok(Some(
            samples
                .reshape([n, s[0], s[2], self.horizon])
                .permute([0, 1, 3, 2]),
        ))
    }
}
