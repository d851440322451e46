//! DeepAR: an autoregressive LSTM with a likelihood.
//!
//! Salinas, Flunkert, Gasthaus & Januschowski (2020), "DeepAR:
//! Probabilistic forecasting with autoregressive recurrent networks",
//! International Journal of Forecasting; as NeuralForecast's `DeepAR`
//! (`neuralforecast/models/deepar.py`) builds it, univariate, without
//! covariates:
//!
//! ```text
//!  z_{t-1} [B, 1] --LSTM (2 layers, batch first)--> h_t [B, D]
//!        --decoder (Linear D -> P)--> distribution parameters of z_t
//!  Gaussian:  (mu, sigma = softplus(.) + min_scale)                       P = 2
//!  Student-t: (nu = 3 + softplus(.), mu, sigma = softplus(.) + min_scale)  P = 3
//! ```
//!
//! * **Training** ([`Forecaster::loss`]): teacher forcing over the window
//!   and the horizon, `z = [x, y]` (`[N, L + H]`): the inputs
//!   `z_1..z_{L+H-1}` predict `z_2..z_{L+H}`; the loss is the mean negative
//!   log-likelihood of those `L + H - 1` one-step-ahead targets (the
//!   paper's conditioning and prediction ranges together).
//! * **Point forecast** ([`Forecaster::forward_t`], `[N, H]`): the LSTM
//!   reads the window; each of the `H` steps outputs the *mean* of its
//!   predicted distribution (`mu`, for the Student-t too since `nu > 3`),
//!   which is fed back as the next input. This is what NeuralForecast's
//!   recurrent prediction does (it feeds back `distr_mean`); it is
//!   deterministic and differentiable.
//! * **Samples** ([`Forecaster::sample`], `[n, N, H]`): `n` paths per
//!   window, each step drawn from the predicted distribution and fed back
//!   (the paper's ancestral sampling), in evaluation mode, without
//!   gradients.
//!
//! Hyperparameters ([`DeepArConfig::from_forecast`]), NeuralForecast's
//! defaults for [`ModelSize::Paper`](crate::ModelSize::Paper): LSTM of
//! `lstm_n_layers` 2 × `lstm_hidden_size` 128, `lstm_dropout` 0.1
//! (between the layers; `ForecastConfig::dropout` overrides it), a linear
//! decoder (`decoder_hidden_layers` 0), a Gaussian likelihood (the
//! paper's choice for real-valued series; NeuralForecast's default loss is
//! its Student-t, [`Likelihood::StudentT`] here), and NeuralForecast's
//! scale floors (`eps` of its `scale_decouple`: 0.2 Gaussian, 0.1
//! Student-t). Small: 2 × 16, the same decoder. The Paper model has
//! 199,426 parameters (Gaussian; 199,555 Student-t), the small one 3,426.
//! No scaling inside the model (NeuralForecast's DeepAR default is
//! `scaler_type="identity"`); [`ChannelIndependent`](crate::ChannelIndependent)
//! can standardise each window.

use crate::rnn::{Mlp, RecurrentStack, RecurrentState, RnnCell};
use crate::{ForecastConfig, Forecaster, ModelError, Result};
use tch::{nn, Kind, Tensor};

const MODEL: &str = "DeepAR";

/// The distribution of each next value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Likelihood {
    /// Normal with mean `mu` and standard deviation `sigma`.
    #[default]
    Gaussian,
    /// Student-t with `nu` degrees of freedom (above 3), location `mu` and
    /// scale `sigma`.
    StudentT,
}

impl Likelihood {
    /// How many parameters the decoder outputs per step.
    pub fn n_params(self) -> i64 {
        match self {
            Likelihood::Gaussian => 2,
            Likelihood::StudentT => 3,
        }
    }

    /// NeuralForecast's lower bound on the scale (`eps` of its
    /// `normal_scale_decouple` / `student_scale_decouple`).
    pub fn default_min_scale(self) -> f64 {
        match self {
            Likelihood::Gaussian => 0.2,
            Likelihood::StudentT => 0.1,
        }
    }
}

/// The hyperparameters of DeepAR.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepArConfig {
    /// Look-back `L` (the conditioning range).
    pub input_size: i64,
    /// Horizon `H` (the prediction range).
    pub horizon: i64,
    /// LSTM layers (`lstm_n_layers`, 2).
    pub lstm_n_layers: i64,
    /// LSTM units per layer (`lstm_hidden_size`, 128).
    pub lstm_hidden_size: i64,
    /// Dropout between LSTM layers in training (`lstm_dropout`, 0.1).
    pub lstm_dropout: f64,
    /// Hidden layers of the decoder MLP (`decoder_hidden_layers`, 0: a
    /// linear layer).
    pub decoder_hidden_layers: i64,
    /// Width of the decoder's hidden layers (`decoder_hidden_size`; unused
    /// with no hidden layer).
    pub decoder_hidden_size: i64,
    /// The distribution of the next value (Gaussian).
    pub likelihood: Likelihood,
    /// The smallest scale `sigma` (`None`: the likelihood's
    /// [`Likelihood::default_min_scale`]).
    pub min_scale: Option<f64>,
}

impl DeepArConfig {
    /// NeuralForecast's defaults (or the small variant) for the lengths of
    /// `cfg`, with a Gaussian likelihood.
    pub fn from_forecast(cfg: &ForecastConfig) -> Self {
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            lstm_n_layers: 2,
            lstm_hidden_size: if cfg.is_small() { 16 } else { 128 },
            lstm_dropout: cfg.dropout_or(0.1),
            decoder_hidden_layers: 0,
            decoder_hidden_size: 0,
            likelihood: Likelihood::Gaussian,
            min_scale: None,
        }
    }

    /// The same with another likelihood.
    pub fn likelihood(mut self, likelihood: Likelihood) -> Self {
        self.likelihood = likelihood;
        self
    }

    fn min_scale_or_default(&self) -> f64 {
        self.min_scale
            .unwrap_or_else(|| self.likelihood.default_min_scale())
    }
}

/// A predicted distribution per step: `[B, T]` parameters.
struct Predicted {
    loc: Tensor,
    scale: Tensor,
    /// Degrees of freedom (Student-t only).
    df: Option<Tensor>,
}

impl Predicted {
    /// The negative log-likelihood of `y: [B, T]`, elementwise.
    fn nll(&self, y: &Tensor) -> Tensor {
        let z = (y - &self.loc) / &self.scale;
        match &self.df {
            Some(df) => {
                let half = (df + 1.0) * 0.5;
                let log_norm = half.lgamma()
                    - (df * 0.5).lgamma()
                    - (df * std::f64::consts::PI).log() * 0.5
                    - self.scale.log();
                half * (z.square() / df).log1p() - log_norm
            }
            None => z.square() * 0.5 + self.scale.log() + 0.5 * (2.0 * std::f64::consts::PI).ln(),
        }
    }

    /// The mean of each step's distribution.
    fn mean(&self) -> Tensor {
        self.loc.shallow_clone()
    }

    /// One draw per step.
    fn sample(&self) -> Tensor {
        let eps = self.loc.randn_like();
        let eps = match &self.df {
            // t = Z / sqrt(V / nu) with V ~ chi2(nu) = 2 Gamma(nu / 2, 1).
            Some(df) => {
                let chi2 = (df * 0.5).internal_standard_gamma() * 2.0;
                eps / (chi2 / df).sqrt()
            }
            None => eps,
        };
        &self.loc + &self.scale * eps
    }
}

/// DeepAR (see the [module](self) documentation).
#[derive(Debug)]
pub struct DeepAr {
    cfg: DeepArConfig,
    min_scale: f64,
    lstm: RecurrentStack,
    decoder: Mlp,
}

impl DeepAr {
    /// Builds the model with its parameters under `p`: `lstm` (recurrent
    /// weights) and `decoder`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for non-positive lengths or sizes, a
    /// dropout outside `[0, 1)`, a negative number of decoder hidden
    /// layers, or a negative or non-finite `min_scale`.
    pub fn new(p: &nn::Path<'_>, cfg: &DeepArConfig) -> Result<Self> {
        let invalid = |reason: String| ModelError::InvalidConfig {
            model: MODEL,
            reason,
        };
        if cfg.input_size < 1 || cfg.horizon < 1 {
            return Err(invalid(format!(
                "input_size {} and horizon {} must both be at least 1",
                cfg.input_size, cfg.horizon
            )));
        }
        if cfg.decoder_hidden_layers < 0 {
            return Err(invalid(format!(
                "decoder_hidden_layers {} is negative",
                cfg.decoder_hidden_layers
            )));
        }
        let min_scale = cfg.min_scale_or_default();
        if !(min_scale.is_finite() && min_scale >= 0.0) {
            return Err(invalid(format!(
                "min_scale {min_scale} must be finite and non-negative"
            )));
        }
        let lstm = RecurrentStack::new(
            &(p / "lstm"),
            MODEL,
            RnnCell::Lstm,
            1,
            cfg.lstm_hidden_size,
            cfg.lstm_n_layers,
            cfg.lstm_dropout,
        )?;
        let decoder = Mlp::new(
            &(p / "decoder"),
            MODEL,
            cfg.lstm_hidden_size,
            cfg.decoder_hidden_size,
            cfg.likelihood.n_params(),
            cfg.decoder_hidden_layers + 1,
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            min_scale,
            lstm,
            decoder,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &DeepArConfig {
        &self.cfg
    }

    /// The distributions predicted from LSTM outputs `[B, T, D]`.
    fn predict(&self, hidden: &Tensor) -> Predicted {
        let out = self.decoder.forward(hidden);
        let param = |i: i64| out.select(-1, i);
        let scale = |raw: Tensor| raw.softplus() + self.min_scale;
        match self.cfg.likelihood {
            Likelihood::Gaussian => Predicted {
                loc: param(0),
                scale: scale(param(1)),
                df: None,
            },
            Likelihood::StudentT => Predicted {
                df: Some(param(0).softplus() + 3.0),
                loc: param(1),
                scale: scale(param(2)),
            },
        }
    }

    /// Reads the windows `x: [B, L]`: the distribution of the first
    /// future value and the LSTM state after the window.
    fn condition(&self, x: &Tensor, train: bool) -> (Predicted, RecurrentState) {
        let (hidden, state) = self.lstm.run(&x.unsqueeze(-1), None, train);
        let last = hidden.narrow(1, self.cfg.input_size - 1, 1);
        (self.predict(&last), state)
    }

    /// Unrolls the horizon from the first prediction and the state after
    /// the window, feeding back `pick` of each step's distribution:
    /// `[B, H]`.
    fn unroll(
        &self,
        first: Predicted,
        mut state: RecurrentState,
        train: bool,
        pick: impl Fn(&Predicted) -> Tensor,
    ) -> Tensor {
        let mut steps = Vec::with_capacity(self.cfg.horizon as usize);
        let mut value = pick(&first);
        for _ in 1..self.cfg.horizon {
            let (hidden, next) = self.lstm.run(&value.unsqueeze(-1), Some(&state), train);
            state = next;
            steps.push(value);
            value = pick(&self.predict(&hidden));
        }
        steps.push(value);
        Tensor::cat(&steps, 1)
    }

    /// The mean negative log-likelihood of the targets `y: [N, H]`
    /// following the windows `x: [N, L]` (teacher forcing over the
    /// window's one-step-ahead targets and the horizon), with dropout when
    /// `train`.
    pub fn nll(&self, x: &Tensor, y: &Tensor, train: bool) -> Tensor {
        let z = Tensor::cat(&[x, &y.to_kind(x.kind())], 1);
        let len = self.cfg.input_size + self.cfg.horizon - 1;
        let inputs = z.narrow(1, 0, len).unsqueeze(-1);
        let targets = z.narrow(1, 1, len);
        let (hidden, _) = self.lstm.run(&inputs, None, train);
        self.predict(&hidden).nll(&targets).mean(Kind::Float)
    }
}

impl Forecaster for DeepAr {
    fn name(&self) -> &'static str {
        MODEL
    }

    /// The mean of each step's predicted distribution, fed back
    /// autoregressively: `[N, H]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (first, state) = self.condition(x, train);
        self.unroll(first, state, train, Predicted::mean)
    }

    /// The negative log-likelihood (see [`DeepAr::nll`]).
    fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.nll(x, y, true)
    }

    /// `n` sample paths `[n, N, H]`, each step drawn and fed back, in
    /// evaluation mode and without gradients.
    fn sample(&self, x: &Tensor, n: i64) -> Option<Tensor> {
        let batch = x.size()[0];
        let n = n.max(0);
        if n == 0 {
            return Some(Tensor::zeros(
                [0, batch, self.cfg.horizon],
                (x.kind(), x.device()),
            ));
        }
        let _guard = tch::no_grad_guard();
        let (hidden, state) = self.lstm.run(&x.unsqueeze(-1), None, false);
        // Path i of window b sits at batch index i * N + b.
        let last = hidden
            .narrow(1, self.cfg.input_size - 1, 1)
            .repeat([n, 1, 1]);
        let paths = self.unroll(self.predict(&last), state.tile(n), false, Predicted::sample);
        Some(paths.reshape([n, batch, self.cfg.horizon]))
    }
}

/// Builds DeepAR under `p`.
///
/// # Errors
/// [`ModelError::InvalidConfig`] when the lengths or the dropout cannot
/// build it.
pub fn build(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(DeepAr::new(p, &DeepArConfig::from_forecast(cfg))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelSize;
    use tch::nn::OptimizerConfig;
    use tch::Device;

    fn setup() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
    }

    fn small(l: i64, h: i64) -> DeepArConfig {
        DeepArConfig::from_forecast(&ForecastConfig::new(l, h).size(ModelSize::Small))
    }

    fn sines(n: i64, l: i64, h: i64) -> (Tensor, Tensor) {
        crate::testing::noisy_sines(n, l, h, 0.05)
    }

    #[test]
    fn output_shapes() {
        setup();
        for likelihood in [Likelihood::Gaussian, Likelihood::StudentT] {
            for (l, h) in [(16, 4), (6, 10), (1, 1)] {
                let vs = nn::VarStore::new(Device::Cpu);
                let m =
                    DeepAr::new(&vs.root(), &small(l, h).likelihood(likelihood)).expect("builds");
                let x = Tensor::randn([5, l], (Kind::Float, Device::Cpu));
                assert_eq!(m.forward_t(&x, false).size(), vec![5, h]);
                assert_eq!(m.forward_t(&x, true).size(), vec![5, h]);
                let s = m.sample(&x, 7).expect("probabilistic");
                assert_eq!(s.size(), vec![7, 5, h]);
                assert_eq!(
                    m.sample(&x, 0).expect("probabilistic").size(),
                    vec![0, 5, h]
                );
                let y = Tensor::randn([5, h], (Kind::Float, Device::Cpu));
                assert_eq!(m.loss(&x, &y).size(), Vec::<i64>::new());
            }
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        setup();
        for likelihood in [Likelihood::Gaussian, Likelihood::StudentT] {
            let vs = nn::VarStore::new(Device::Cpu);
            let m = DeepAr::new(&vs.root(), &small(10, 5).likelihood(likelihood)).expect("builds");
            crate::testing::assert_all_gradients(&vs, &m, 10, 5);
        }
    }

    /// NLL falls in training; the mean of sample paths then follows the
    /// point forecast; the point forecast beats the trivial one.
    #[test]
    fn training_reduces_the_nll_and_samples_follow_the_forecast() {
        setup();
        let (l, h) = (24, 8);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = DeepAr::new(&vs.root(), &small(l, h)).expect("builds");
        let mut opt = nn::Adam::default().build(&vs, 1e-2).expect("adam");
        let (x, y) = sines(64, l, h);
        let nll = |m: &DeepAr| tch::no_grad(|| m.nll(&x, &y, false).double_value(&[]));
        let before = nll(&m);
        for _ in 0..80 {
            let loss = m.loss(&x, &y);
            opt.backward_step(&loss);
        }
        let after = nll(&m);
        // From about 1.1 nats to below 0 (the floor is sigma = 0.2: -0.69).
        assert!(after < before - 1.0, "NLL {before} -> {after}");

        let point = tch::no_grad(|| m.forward_t(&x, false));
        let mse = (&point - &y).square().mean(Kind::Float).double_value(&[]);
        assert!(mse < 0.25, "point forecast MSE {mse}");
        let samples = m.sample(&x, 200).expect("probabilistic");
        assert_eq!(samples.size(), vec![200, 64, h]);
        let gap = (samples.mean_dim(0, false, Kind::Float) - &point)
            .abs()
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(gap < 0.15, "mean |sample mean - point| = {gap}");
        assert!(
            samples.std(true).double_value(&[]) > 0.1,
            "samples do not spread"
        );
    }

    #[test]
    fn student_t_nll_is_finite_and_falls() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let m = DeepAr::new(&vs.root(), &small(24, 8).likelihood(Likelihood::StudentT))
            .expect("builds");
        let mut opt = nn::Adam::default().build(&vs, 1e-2).expect("adam");
        let (x, y) = sines(32, 24, 8);
        let first = m.loss(&x, &y);
        let before = first.double_value(&[]);
        assert!(before.is_finite(), "Student-t NLL {before}");
        // Far outliers stay finite too.
        let far = tch::no_grad(|| m.nll(&x, &(&y * 1e3), false).double_value(&[]));
        assert!(far.is_finite(), "Student-t NLL of outliers {far}");
        opt.backward_step(&first);
        for _ in 0..40 {
            let loss = m.loss(&x, &y);
            opt.backward_step(&loss);
        }
        let after = tch::no_grad(|| m.nll(&x, &y, false).double_value(&[]));
        assert!(
            after.is_finite() && after < before - 0.5,
            "NLL {before} -> {after}"
        );
        let s = m.sample(&x, 5).expect("probabilistic");
        assert!(
            bool::try_from(s.isfinite().all()).expect("bool"),
            "non-finite samples"
        );
    }

    #[test]
    fn through_the_registry_and_the_channel_wrapper() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ForecastConfig::new(12, 4).size(ModelSize::Small);
        let model = crate::build("deepar", &vs.root(), &cfg).expect("builds");
        let ci = crate::ChannelIndependent::new(model, 12, 4, crate::WindowScaling::Standard);
        let x = Tensor::randn([3, 12, 2], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([3, 4, 2], (Kind::Float, Device::Cpu));
        assert_eq!(
            ci.forward_t(&x, false).expect("forecasts").size(),
            vec![3, 4, 2]
        );
        let s = ci.sample(&x, 6).expect("samples").expect("probabilistic");
        assert_eq!(s.size(), vec![6, 3, 4, 2]);
        assert!(ci.loss(&x, &y).expect("loss").double_value(&[]).is_finite());
    }

    #[test]
    fn evaluation_is_deterministic() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let m = DeepAr::new(&vs.root(), &small(12, 6)).expect("builds");
        let x = Tensor::randn([3, 12], (Kind::Float, Device::Cpu));
        let a = m.forward_t(&x, false);
        let b = m.forward_t(&x, false);
        assert!(a.allclose(&b, 0.0, 0.0, false));
    }

    #[test]
    fn impossible_configurations_are_rejected() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let bad = [
            DeepArConfig {
                lstm_n_layers: 0,
                ..small(8, 4)
            },
            DeepArConfig {
                lstm_hidden_size: -1,
                ..small(8, 4)
            },
            DeepArConfig {
                lstm_dropout: 1.5,
                ..small(8, 4)
            },
            DeepArConfig {
                decoder_hidden_layers: -1,
                ..small(8, 4)
            },
            DeepArConfig {
                decoder_hidden_layers: 1,
                decoder_hidden_size: 0,
                ..small(8, 4)
            },
            DeepArConfig {
                min_scale: Some(-0.1),
                ..small(8, 4)
            },
            DeepArConfig {
                min_scale: Some(f64::NAN),
                ..small(8, 4)
            },
            small(0, 4),
            small(8, 0),
        ];
        for (i, cfg) in bad.iter().enumerate() {
            let r = DeepAr::new(&(vs.root() / i), cfg);
            assert!(
                matches!(r, Err(ModelError::InvalidConfig { .. })),
                "{cfg:?}"
            );
        }
    }

    #[test]
    fn parameter_counts() {
        setup();
        let count = |cfg: &DeepArConfig| {
            let vs = nn::VarStore::new(Device::Cpu);
            DeepAr::new(&vs.root(), cfg).expect("builds");
            crate::testing::parameter_count(&vs)
        };
        let paper = DeepArConfig::from_forecast(&ForecastConfig::new(96, 96));
        assert_eq!(count(&paper), 199_426);
        assert_eq!(
            count(&paper.clone().likelihood(Likelihood::StudentT)),
            199_555
        );
        assert_eq!(count(&small(96, 96)), 3_426);
    }
}
