//! # deeprc-models
//!
//! The paper's models in `tch` (libtorch 2.13): the forecasting zoo that
//! Deep RC trains on ETTh1, and the hydrology LSTM it trains on CAMELS-US.
//! Each follows its original paper and NeuralForecast's implementation
//! (read, not copied) and is written from scratch here.
//!
//! ```text
//!  windows [B, L, C] --ChannelIndependent--> [B*C, L] --Forecaster--> [B*C, H] --> [B, H, C]
//!                        (optional per-window standard scaling, undone on the output)
//! ```
//!
//! Every forecaster is univariate and channel-independent, as in
//! NeuralForecast: a window of `L` past values of one series in, `H` future
//! values out; [`ChannelIndependent`] applies one to every channel of a
//! multivariate window with shared weights.
//!
//! | model | module | family |
//! |---|---|---|
//! | NLinear, DLinear | [`nlinear`], [`dlinear`] | linear (Zeng et al. 2023) |
//! | MLP | [`mlp`] | multilayer perceptron |
//! | NBEATS, NHITS | [`nbeats`], [`nhits`] | stacked MLP blocks with backcast (Oreshkin 2020, Challu 2023) |
//! | TiDE | [`tide`] | MLP encoder-decoder (Das et al. 2023) |
//! | LSTM, GRU | [`rnn`] | recurrent encoder, MLP decoder |
//! | DeepAR | [`deepar`] | autoregressive LSTM with a likelihood (Salinas et al. 2020) |
//! | TimesNet | [`timesnet`] | 2-D inception convolutions over periods (Wu et al. 2023) |
//! | VanillaTransformer | [`vanilla_transformer`] | encoder-decoder attention (Vaswani 2017) |
//! | PatchTST | [`patchtst`] | patches + transformer encoder (Nie et al. 2023) |
//! | Autoformer | [`autoformer`] | decomposition + auto-correlation (Wu et al. 2021) |
//! | TFT | [`tft`] | gated residual networks + attention (Lim et al. 2021) |
//!
//! ```
//! use deeprc_models::{build, ForecastConfig, ModelSize};
//! use tch::{nn, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let cfg = ForecastConfig::new(96, 24).size(ModelSize::Small);
//! let model = build("NLinear", &vs.root(), &cfg)?;
//! let x = Tensor::randn([8, 96], (Kind::Float, Device::Cpu));
//! assert_eq!(model.forward_t(&x, false).size(), vec![8, 24]);
//! # Ok::<(), deeprc_models::ModelError>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

/// Implements [`Forecaster`] for a model whose checked forward pass is
/// `try_forward(&self, x, train) -> Result<Tensor>`: `forward_t` is
/// `try_forward` that panics with the error's message, so callers that
/// want the error call `try_forward`.
macro_rules! forecaster_via_try_forward {
    ($model:ty, $name:expr) => {
        impl $crate::Forecaster for $model {
            fn name(&self) -> &'static str {
                $name
            }

            /// # Panics
            /// When `x` is not `[N, L]` (the model's `try_forward` returns
            /// that as an error instead).
            fn forward_t(&self, x: &tch::Tensor, train: bool) -> tch::Tensor {
                match self.try_forward(x, train) {
                    Ok(y) => y,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    };
}
pub(crate) use forecaster_via_try_forward;

pub mod dropout;
pub mod error;
pub mod layers;

pub mod autoformer;
pub mod deepar;
pub mod dlinear;
pub mod hydro;
pub mod mlp;
pub mod nbeats;
pub mod nhits;
pub mod nlinear;
pub mod patchtst;
pub mod rnn;
pub mod tft;
pub mod tide;
pub mod timesnet;
pub mod vanilla_transformer;

mod channel;
mod registry;
#[cfg(test)]
mod testing;

pub use channel::{ChannelIndependent, WindowScaling};
pub use error::{ModelError, Result};
pub use registry::{build, MODELS, PAPER_MODELS};

use tch::{Reduction, Tensor};

/// How big a model to build: the published hyperparameters, or a small
/// variant with the same structure for tests and quick runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelSize {
    /// The hyperparameters of the original paper / NeuralForecast's defaults.
    #[default]
    Paper,
    /// Few and narrow layers: the same code paths, a fraction of the cost.
    Small,
    /// What the model's paper ran on ETTh1 where that differs from
    /// [`Paper`](Self::Paper): PatchTST's scripts for the small datasets
    /// (ETTh1, ETTh2, ILI) use 3 layers of width 16 with 4 heads, 128 feed-
    /// forward units and dropout 0.3 ([`PatchTSTConfig::etth1`](crate::patchtst::PatchTSTConfig::etth1));
    /// every other model is built as `Paper`.
    Etth1,
}

/// What every forecaster is built from: the window lengths and a size.
/// Model-specific hyperparameters live in each model's own config, made
/// from this one with the published defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastConfig {
    /// Past values in (`L`, the look-back).
    pub input_size: i64,
    /// Future values out (`H`).
    pub horizon: i64,
    /// Published or small hyperparameters.
    pub size: ModelSize,
    /// Dropout probability where the model has dropout (its default if
    /// `None`).
    pub dropout: Option<f64>,
}

impl ForecastConfig {
    /// A configuration of look-back `input_size` and `horizon`, at the
    /// published size.
    pub fn new(input_size: i64, horizon: i64) -> Self {
        Self {
            input_size,
            horizon,
            size: ModelSize::Paper,
            dropout: None,
        }
    }

    /// The same with another size.
    pub fn size(mut self, size: ModelSize) -> Self {
        self.size = size;
        self
    }

    /// The same with a dropout probability.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = Some(p);
        self
    }

    /// Whether the small variant was asked for.
    pub fn is_small(&self) -> bool {
        self.size == ModelSize::Small
    }

    /// `self.dropout`, or `default`.
    pub fn dropout_or(&self, default: f64) -> f64 {
        self.dropout.unwrap_or(default)
    }
}

/// A univariate forecaster: `N` windows of `L` past values in, `N`
/// forecasts of `H` values out.
///
/// Implementations are `tch` modules whose parameters live in the
/// [`tch::nn::VarStore`] they were built on, so a data-parallel trainer can
/// broadcast, all-reduce and checkpoint them without knowing the model.
pub trait Forecaster: Send + std::fmt::Debug {
    /// The model's name, as in [`MODELS`].
    fn name(&self) -> &'static str;

    /// Point forecasts `[N, H]` of the windows `x: [N, L]` (float), in
    /// training mode (dropout on) when `train`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor;

    /// The training loss of windows `x: [N, L]` against targets
    /// `y: [N, H]`: the mean squared error of the point forecast unless the
    /// model is probabilistic (then its negative log-likelihood).
    fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.forward_t(x, true).mse_loss(y, Reduction::Mean)
    }

    /// `n` sampled forecasts `[n, N, H]` for a probabilistic model; `None`
    /// for a point model.
    fn sample(&self, x: &Tensor, n: i64) -> Option<Tensor> {
        let _ = (x, n);
        None
    }
}

/// Checks that `x` is `[N, input_size]`.
///
/// # Errors
/// [`ModelError::Shape`] naming the model otherwise.
pub fn check_window(model: &'static str, x: &Tensor, input_size: i64) -> Result<()> {
    let got = x.size();
    if got.len() != 2 || got[1] != input_size {
        return Err(ModelError::Shape {
            model,
            expected: format!("[N, {input_size}]"),
            got,
        });
    }
    Ok(())
}
