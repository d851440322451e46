//! LSTM and GRU forecasters: a recurrent encoder over the window, an MLP
//! decoder to the horizon.
//!
//! NeuralForecast's `LSTM` and `GRU` (Hochreiter & Schmidhuber 1997; Cho et
//! al. 2014) in their default, direct (non-recurrent) mode, which is what
//! `neuralforecast/models/lstm.py` and `gru.py` do today:
//!
//! ```text
//!  x [N, L] -> [N, L, 1] --LSTM/GRU (layers, batch first)--> hidden [N, L, D]
//!    H <= L: the last H hidden states               [N, H, D]
//!    H >  L: a Linear L -> H over the time axis     [N, H, D]
//!  --MLP decoder, per step (D -> decoder_hidden -> ... -> 1, ReLU)--> [N, H]
//! ```
//!
//! The hidden state at step `L - H + j` is decoded into the forecast of
//! step `L + j`: each forecast step reads the encoder at its own position
//! (NeuralForecast dropped the old "context adapter" that decoded the last
//! hidden state alone).
//!
//! Hyperparameters ([`RnnConfig::from_forecast`]), NeuralForecast's
//! defaults for [`ModelSize::Paper`](crate::ModelSize::Paper):
//!
//! | | LSTM | GRU | Small (both) |
//! |---|---|---|---|
//! | `encoder_n_layers` | 2 | 2 | 2 |
//! | `encoder_hidden_size` | 128 | 200 | 16 |
//! | `encoder_dropout` (between layers) | 0.0 | 0.0 | 0.0 |
//! | `decoder_hidden_size` | 128 | 128 | 16 |
//! | `decoder_layers` (linear layers) | 2 | 2 | 2 |
//!
//! (`ForecastConfig::dropout` overrides the encoder dropout.) At `L = H = 96`
//! the LSTM has 215,809 parameters and the GRU 388,857; the small variants
//! 3,681 and 2,833.
//!
//! The recurrent layers are created by `tch`'s [`nn::lstm`] / [`nn::gru`]
//! (PyTorch's layout and names `weight_ih_l{k}`, `weight_hh_l{k}`,
//! `bias_ih_l{k}`, `bias_hh_l{k}`, PyTorch's uniform `±1/sqrt(D)`
//! initialisation) and run through libtorch's fused `lstm`/`gru` op with the
//! caller's training flag, since `tch`'s [`nn::RNN`] fixes dropout on or off
//! when the layer is built. [`RecurrentStack`] is shared with
//! [DeepAR](crate::deepar).

use crate::{ForecastConfig, Forecaster, ModelError, Result};
use tch::nn::{self, Module};
use tch::Tensor;

/// The recurrent cell of an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RnnCell {
    /// Long short-term memory (Hochreiter & Schmidhuber 1997).
    Lstm,
    /// Gated recurrent unit (Cho et al. 2014).
    Gru,
}

impl RnnCell {
    /// The model name of a forecaster with this cell, as in
    /// [`MODELS`](crate::MODELS).
    pub fn model_name(self) -> &'static str {
        match self {
            RnnCell::Lstm => "LSTM",
            RnnCell::Gru => "GRU",
        }
    }
}

/// The hidden state of a [`RecurrentStack`] between calls (for
/// step-by-step decoding): `[layers, B, D]` tensors.
#[derive(Debug)]
pub(crate) enum RecurrentState {
    /// Hidden and cell state.
    Lstm(Tensor, Tensor),
    /// Hidden state.
    Gru(Tensor),
}

impl RecurrentState {
    /// Each of the `B` states repeated `n` times along the batch axis, as
    /// `[layers, n * B, D]` with batch index `i * B + b`.
    pub(crate) fn tile(&self, n: i64) -> Self {
        match self {
            RecurrentState::Lstm(h, c) => {
                RecurrentState::Lstm(h.repeat([1, n, 1]), c.repeat([1, n, 1]))
            }
            RecurrentState::Gru(h) => RecurrentState::Gru(h.repeat([1, n, 1])),
        }
    }
}

/// A stack of LSTM or GRU layers, batch first, with dropout between the
/// layers in training mode (PyTorch's `nn.LSTM`/`nn.GRU` semantics).
#[derive(Debug)]
pub(crate) struct RecurrentStack {
    cell: RnnCell,
    /// tch's flat weights, layer by layer: `w_ih, w_hh, b_ih, b_hh`.
    weights: Vec<Tensor>,
    layers: i64,
    hidden: i64,
    dropout: f64,
}

impl RecurrentStack {
    /// A stack of `layers` cells of `hidden` units on `input` features,
    /// with its parameters directly under `p`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] (naming `model`) for non-positive
    /// sizes, a dropout outside `[0, 1)`, or a path that already holds
    /// recurrent weights.
    pub(crate) fn new(
        p: &nn::Path<'_>,
        model: &'static str,
        cell: RnnCell,
        input: i64,
        hidden: i64,
        layers: i64,
        dropout: f64,
    ) -> Result<Self> {
        let invalid = |reason: String| ModelError::InvalidConfig { model, reason };
        if input < 1 || hidden < 1 || layers < 1 {
            return Err(invalid(format!(
                "the recurrent encoder needs at least one input feature, hidden unit and \
                 layer (got input {input}, hidden {hidden}, layers {layers})"
            )));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(invalid(format!("dropout {dropout} is not in [0, 1)")));
        }
        if p.get("weight_ih_l0").is_some() {
            return Err(invalid(format!(
                "the path {:?} already holds recurrent weights",
                p.components().collect::<Vec<_>>().join(".")
            )));
        }
        let bound = 1.0 / (hidden as f64).sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let rnn_cfg = nn::RNNConfig {
            has_biases: true,
            num_layers: layers,
            dropout,
            train: true,
            bidirectional: false,
            batch_first: true,
            w_ih_init: init,
            w_hh_init: init,
            b_ih_init: Some(init),
            b_hh_init: Some(init),
        };
        // The layer object fixes training mode at construction; keep its
        // parameters (read back by their names) and call the fused op with
        // the caller's flag instead.
        match cell {
            RnnCell::Lstm => drop(nn::lstm(p, input, hidden, rnn_cfg)),
            RnnCell::Gru => drop(nn::gru(p, input, hidden, rnn_cfg)),
        }
        let mut weights = Vec::with_capacity(4 * layers as usize);
        for l in 0..layers {
            for name in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
                let full = format!("{name}_l{l}");
                let w = p.get(&full).ok_or_else(|| {
                    invalid(format!("tch did not create the recurrent weight {full}"))
                })?;
                weights.push(w);
            }
        }
        Ok(Self {
            cell,
            weights,
            layers,
            hidden,
            dropout,
        })
    }

    /// A zero state for a batch of `batch`.
    fn zero_state(&self, batch: i64) -> RecurrentState {
        let z = Tensor::zeros(
            [self.layers, batch, self.hidden],
            (self.weights[0].kind(), self.weights[0].device()),
        );
        match self.cell {
            RnnCell::Lstm => RecurrentState::Lstm(z.shallow_clone(), z),
            RnnCell::Gru => RecurrentState::Gru(z),
        }
    }

    /// Runs the stack over `x: [B, T, F]` from `state` (zeros if `None`):
    /// the last layer's outputs `[B, T, D]` and the final state.
    pub(crate) fn run(
        &self,
        x: &Tensor,
        state: Option<&RecurrentState>,
        train: bool,
    ) -> (Tensor, RecurrentState) {
        let zero;
        let state = match state {
            Some(s) => s,
            None => {
                zero = self.zero_state(x.size()[0]);
                &zero
            }
        };
        // libtorch's fused op draws its inter-layer dropout from the
        // process-wide generator; when this thread has its own (see
        // `crate::dropout`), run the layers one by one and drop out
        // between them with it.
        if train && self.dropout > 0.0 && self.layers > 1 && crate::dropout::thread_is_seeded() {
            return self.run_layer_by_layer(x, state, train);
        }
        self.run_fused(x, state, self.layers, &self.weights, self.dropout, train)
    }

    /// The fused op over `layers` layers of `weights` (4 per layer).
    fn run_fused(
        &self,
        x: &Tensor,
        state: &RecurrentState,
        layers: i64,
        weights: &[Tensor],
        dropout: f64,
        train: bool,
    ) -> (Tensor, RecurrentState) {
        match state {
            RecurrentState::Lstm(h, c) => {
                let (out, h, c) = x.lstm(
                    &[h, c],
                    &weights.iter().collect::<Vec<_>>(),
                    true,
                    layers,
                    dropout,
                    train,
                    false,
                    true,
                );
                (out, RecurrentState::Lstm(h, c))
            }
            RecurrentState::Gru(h) => {
                let (out, h) = x.gru(h, weights, true, layers, dropout, train, false, true);
                (out, RecurrentState::Gru(h))
            }
        }
    }

    /// One layer at a time, with this thread's dropout between layers.
    fn run_layer_by_layer(
        &self,
        x: &Tensor,
        state: &RecurrentState,
        train: bool,
    ) -> (Tensor, RecurrentState) {
        use crate::dropout::Dropout;
        let layer_state = |l: i64| match state {
            RecurrentState::Lstm(h, c) => {
                RecurrentState::Lstm(h.narrow(0, l, 1), c.narrow(0, l, 1))
            }
            RecurrentState::Gru(h) => RecurrentState::Gru(h.narrow(0, l, 1)),
        };
        let mut input = x.shallow_clone();
        let (mut hs, mut cs) = (Vec::new(), Vec::new());
        for l in 0..self.layers {
            let w = &self.weights[4 * l as usize..4 * (l as usize + 1)];
            let (out, st) = self.run_fused(&input, &layer_state(l), 1, w, 0.0, train);
            match st {
                RecurrentState::Lstm(h, c) => {
                    hs.push(h);
                    cs.push(c);
                }
                RecurrentState::Gru(h) => hs.push(h),
            }
            input = if l + 1 < self.layers {
                out.dropout_t(self.dropout, true)
            } else {
                out
            };
        }
        let h = Tensor::cat(&hs, 0);
        let st = match self.cell {
            RnnCell::Lstm => RecurrentState::Lstm(h, Tensor::cat(&cs, 0)),
            RnnCell::Gru => RecurrentState::Gru(h),
        };
        (input, st)
    }
}

/// NeuralForecast's `MLP` module without dropout: `layers` linear layers
/// (one: a plain projection), ReLU between them, all hidden layers
/// `hidden` wide.
#[derive(Debug)]
pub(crate) struct Mlp {
    layers: Vec<nn::Linear>,
}

impl Mlp {
    /// An MLP `input -> hidden -> ... -> output` of `layers` linear layers
    /// named `0, 1, ...` under `p`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] (naming `model`) for no layer, or a
    /// non-positive width that is used.
    pub(crate) fn new(
        p: &nn::Path<'_>,
        model: &'static str,
        input: i64,
        hidden: i64,
        output: i64,
        layers: i64,
    ) -> Result<Self> {
        if layers < 1 || input < 1 || output < 1 || (layers > 1 && hidden < 1) {
            return Err(ModelError::InvalidConfig {
                model,
                reason: format!(
                    "the MLP decoder needs at least one layer and positive widths (got \
                     {layers} layers, {input} -> {hidden} -> {output})"
                ),
            });
        }
        let layers = (0..layers)
            .map(|i| {
                let i_dim = if i == 0 { input } else { hidden };
                let o_dim = if i == layers - 1 { output } else { hidden };
                crate::layers::linear(p / i.to_string(), i_dim, o_dim)
            })
            .collect();
        Ok(Self { layers })
    }

    /// Applies the MLP to the last axis of `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        let mut h = x.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i < last {
                h = h.relu();
            }
        }
        h
    }
}

/// The hyperparameters of the LSTM and GRU forecasters.
#[derive(Debug, Clone, PartialEq)]
pub struct RnnConfig {
    /// Look-back `L`.
    pub input_size: i64,
    /// Horizon `H`.
    pub horizon: i64,
    /// LSTM or GRU cells.
    pub cell: RnnCell,
    /// Recurrent layers (NeuralForecast `encoder_n_layers`, 2).
    pub encoder_n_layers: i64,
    /// Units of each recurrent layer (`encoder_hidden_size`: 128 for the
    /// LSTM, 200 for the GRU).
    pub encoder_hidden_size: i64,
    /// Dropout between the recurrent layers in training
    /// (`encoder_dropout`, 0.0).
    pub encoder_dropout: f64,
    /// Width of the decoder's hidden layers (`decoder_hidden_size`, 128).
    pub decoder_hidden_size: i64,
    /// Linear layers of the decoder, output layer included
    /// (`decoder_layers`, 2).
    pub decoder_layers: i64,
}

impl RnnConfig {
    /// NeuralForecast's defaults for `cell` (or the small variant), for the
    /// lengths of `cfg`.
    pub fn from_forecast(cell: RnnCell, cfg: &ForecastConfig) -> Self {
        let (hidden, decoder_hidden) = match (cfg.is_small(), cell) {
            (true, _) => (16, 16),
            (false, RnnCell::Lstm) => (128, 128),
            (false, RnnCell::Gru) => (200, 128),
        };
        Self {
            input_size: cfg.input_size,
            horizon: cfg.horizon,
            cell,
            encoder_n_layers: 2,
            encoder_hidden_size: hidden,
            encoder_dropout: cfg.dropout_or(0.0),
            decoder_hidden_size: decoder_hidden,
            decoder_layers: 2,
        }
    }

    /// [`RnnConfig::from_forecast`] with LSTM cells.
    pub fn lstm(cfg: &ForecastConfig) -> Self {
        Self::from_forecast(RnnCell::Lstm, cfg)
    }

    /// [`RnnConfig::from_forecast`] with GRU cells.
    pub fn gru(cfg: &ForecastConfig) -> Self {
        Self::from_forecast(RnnCell::Gru, cfg)
    }
}

/// The LSTM or GRU forecaster (see the [module](self) documentation).
#[derive(Debug)]
pub struct RnnForecaster {
    cfg: RnnConfig,
    encoder: RecurrentStack,
    upsample: Option<nn::Linear>,
    decoder: Mlp,
}

impl RnnForecaster {
    /// Builds the model with its parameters under `p`: `encoder`
    /// (recurrent weights), `upsample` (only when `H > L`) and `decoder`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for non-positive lengths or sizes, or
    /// a dropout outside `[0, 1)`.
    pub fn new(p: &nn::Path<'_>, cfg: &RnnConfig) -> Result<Self> {
        let model = cfg.cell.model_name();
        if cfg.input_size < 1 || cfg.horizon < 1 {
            return Err(ModelError::InvalidConfig {
                model,
                reason: format!(
                    "input_size {} and horizon {} must both be at least 1",
                    cfg.input_size, cfg.horizon
                ),
            });
        }
        let encoder = RecurrentStack::new(
            &(p / "encoder"),
            model,
            cfg.cell,
            1,
            cfg.encoder_hidden_size,
            cfg.encoder_n_layers,
            cfg.encoder_dropout,
        )?;
        let decoder = Mlp::new(
            &(p / "decoder"),
            model,
            cfg.encoder_hidden_size,
            cfg.decoder_hidden_size,
            1,
            cfg.decoder_layers,
        )?;
        let upsample = (cfg.horizon > cfg.input_size)
            .then(|| crate::layers::linear(p / "upsample", cfg.input_size, cfg.horizon));
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            upsample,
            decoder,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &RnnConfig {
        &self.cfg
    }
}

impl Forecaster for RnnForecaster {
    fn name(&self) -> &'static str {
        self.cfg.cell.model_name()
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (hidden, _) = self.encoder.run(&x.unsqueeze(-1), None, train);
        let hidden = match &self.upsample {
            Some(up) => up.forward(&hidden.permute([0, 2, 1])).permute([0, 2, 1]),
            None => hidden.narrow(1, self.cfg.input_size - self.cfg.horizon, self.cfg.horizon),
        };
        self.decoder.forward(&hidden).squeeze_dim(-1)
    }
}

/// Builds the LSTM forecaster under `p`.
///
/// # Errors
/// [`ModelError::InvalidConfig`] when the lengths or the dropout cannot
/// build it.
pub fn build_lstm(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(RnnForecaster::new(p, &RnnConfig::lstm(cfg))?))
}

/// Builds the GRU forecaster under `p`.
///
/// # Errors
/// [`ModelError::InvalidConfig`] when the lengths or the dropout cannot
/// build it.
pub fn build_gru(p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    Ok(Box::new(RnnForecaster::new(p, &RnnConfig::gru(cfg))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;
    use tch::{Device, Kind, Reduction};

    fn setup() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
    }

    use crate::testing::small;

    fn sines(n: i64, l: i64, h: i64) -> (Tensor, Tensor) {
        crate::testing::noisy_sines(n, l, h, 0.05)
    }

    #[test]
    fn output_shapes() {
        setup();
        for cell in [RnnCell::Lstm, RnnCell::Gru] {
            // H < L (last H states), H = L, H > L (upsampled).
            for (l, h) in [(24, 8), (16, 16), (8, 12)] {
                let vs = nn::VarStore::new(Device::Cpu);
                let m =
                    RnnForecaster::new(&vs.root(), &RnnConfig::from_forecast(cell, &small(l, h)))
                        .expect("builds");
                let x = Tensor::randn([5, l], (Kind::Float, Device::Cpu));
                assert_eq!(m.forward_t(&x, false).size(), vec![5, h]);
                assert_eq!(m.forward_t(&x, true).size(), vec![5, h]);
            }
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        setup();
        for cell in [RnnCell::Lstm, RnnCell::Gru] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = RnnConfig::from_forecast(cell, &small(8, 12));
            let m = RnnForecaster::new(&vs.root(), &cfg).expect("builds");
            crate::testing::assert_all_gradients(&vs, &m, 8, 12);
        }
    }

    #[test]
    fn training_reduces_the_loss() {
        setup();
        for cell in [RnnCell::Lstm, RnnCell::Gru] {
            let vs = nn::VarStore::new(Device::Cpu);
            let m = RnnForecaster::new(&vs.root(), &RnnConfig::from_forecast(cell, &small(24, 8)))
                .expect("builds");
            let mut opt = nn::Adam::default().build(&vs, 1e-2).expect("adam");
            let (x, y) = sines(64, 24, 8);
            let eval = |m: &RnnForecaster| {
                tch::no_grad(|| {
                    m.forward_t(&x, false)
                        .mse_loss(&y, Reduction::Mean)
                        .double_value(&[])
                })
            };
            let before = eval(&m);
            for _ in 0..80 {
                let loss = m.loss(&x, &y);
                opt.backward_step(&loss);
            }
            let after = eval(&m);
            assert!(after < 0.5 * before, "{cell:?}: loss {before} -> {after}");
        }
    }

    #[test]
    fn impossible_configurations_are_rejected() {
        setup();
        let vs = nn::VarStore::new(Device::Cpu);
        let bad = [
            RnnConfig {
                encoder_n_layers: 0,
                ..RnnConfig::lstm(&small(8, 4))
            },
            RnnConfig {
                encoder_hidden_size: 0,
                ..RnnConfig::gru(&small(8, 4))
            },
            RnnConfig {
                encoder_dropout: 1.0,
                ..RnnConfig::lstm(&small(8, 4))
            },
            RnnConfig {
                decoder_layers: 0,
                ..RnnConfig::gru(&small(8, 4))
            },
            RnnConfig::lstm(&small(0, 4)),
            RnnConfig::gru(&small(8, 0)),
        ];
        for (i, cfg) in bad.iter().enumerate() {
            let r = RnnForecaster::new(&(vs.root() / i), cfg);
            assert!(
                matches!(r, Err(ModelError::InvalidConfig { .. })),
                "{cfg:?}"
            );
        }
        // Two models on the same path would silently duplicate weights.
        let ok = RnnConfig::lstm(&small(8, 4));
        RnnForecaster::new(&(vs.root() / "same"), &ok).expect("builds");
        let again = RnnForecaster::new(&(vs.root() / "same"), &ok);
        assert!(matches!(again, Err(ModelError::InvalidConfig { .. })));
    }

    #[test]
    fn parameter_counts() {
        setup();
        let counts = |cell, cfg: &ForecastConfig| {
            let vs = nn::VarStore::new(Device::Cpu);
            RnnForecaster::new(&vs.root(), &RnnConfig::from_forecast(cell, cfg)).expect("builds");
            crate::testing::parameter_count(&vs)
        };
        let paper = ForecastConfig::new(96, 96);
        // LSTM: 4D(1 + D + 2) + 4D(2D + 2) with D = 128, decoder 128*128+128 + 128+1.
        assert_eq!(counts(RnnCell::Lstm, &paper), 215_809);
        assert_eq!(counts(RnnCell::Gru, &paper), 388_857);
        assert_eq!(counts(RnnCell::Lstm, &small(96, 96)), 3_681);
        assert_eq!(counts(RnnCell::Gru, &small(96, 96)), 2_833);
        // Dropout is off in evaluation: two passes agree.
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = RnnConfig::lstm(&small(12, 4).dropout(0.5));
        let m = RnnForecaster::new(&vs.root(), &cfg).expect("builds");
        let x = Tensor::randn([3, 12], (Kind::Float, Device::Cpu));
        let a = m.forward_t(&x, false);
        let b = m.forward_t(&x, false);
        assert!(a.allclose(&b, 0.0, 0.0, false));
    }

    /// Layer by layer is the fused op when no dropout is drawn, and with
    /// this thread's generator the same seed gives the same output.
    #[test]
    fn layer_by_layer_matches_the_fused_op() {
        setup();
        for cell in [RnnCell::Lstm, RnnCell::Gru] {
            let vs = nn::VarStore::new(Device::Cpu);
            let plain = RecurrentStack::new(&(vs.root() / "a"), "test", cell, 3, 8, 3, 0.0)
                .expect("builds");
            let x = Tensor::randn([2, 5, 3], (Kind::Float, Device::Cpu));
            let zero = plain.zero_state(2);
            let (fused, _) = plain.run_fused(&x, &zero, 3, &plain.weights, 0.0, true);
            let (stepwise, st) = plain.run_layer_by_layer(&x, &zero, true);
            assert!(fused.allclose(&stepwise, 1e-6, 1e-6, false), "{cell:?}");
            let h = match st {
                RecurrentState::Lstm(h, _) | RecurrentState::Gru(h) => h,
            };
            assert_eq!(h.size(), vec![3, 2, 8]);
            let dropped = RecurrentStack::new(&(vs.root() / "b"), "test", cell, 3, 8, 3, 0.5)
                .expect("builds");
            let run = |seed| {
                crate::dropout::seed_thread(seed);
                let (out, _) = dropped.run(&x, None, true);
                crate::dropout::unseed_thread();
                out
            };
            assert!(run(4).equal(&run(4)), "{cell:?}: same seed, same output");
            assert!(
                !run(4).equal(&run(5)),
                "{cell:?}: another seed, other masks"
            );
        }
    }
}
