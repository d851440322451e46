//! Helpers for the model tests of this crate (one noisy-sine data set,
//! the gradient check, the training loop, the small configuration).
use crate::{ForecastConfig, Forecaster, ModelSize};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Reduction, Tensor};

/// `n` windows of a noisy sine (period 12, random phase, amplitude
/// 1, noise 0.1): inputs `[n, l]` and targets `[n, h]`.
pub(crate) fn sine_windows(n: i64, l: i64, h: i64) -> (Tensor, Tensor) {
    noisy_sines(n, l, h, 0.1)
}

/// The same with Gaussian noise of standard deviation `noise`.
pub(crate) fn noisy_sines(n: i64, l: i64, h: i64, noise: f64) -> (Tensor, Tensor) {
    let opts = (Kind::Float, Device::Cpu);
    let phase = Tensor::rand([n, 1], opts) * (2.0 * std::f64::consts::PI);
    let t = Tensor::arange(l + h, opts).unsqueeze(0);
    let s = (t * (2.0 * std::f64::consts::PI / 12.0) + phase).sin()
        + Tensor::randn([n, l + h], opts) * noise;
    (s.narrow(1, 0, l), s.narrow(1, l, h))
}

/// Every trainable variable of `vs` has a nonzero gradient after one
/// backward pass of `model`'s loss on a sine batch.
pub(crate) fn assert_all_gradients(vs: &nn::VarStore, model: &dyn Forecaster, l: i64, h: i64) {
    let (x, y) = sine_windows(16, l, h);
    let loss = model.loss(&x, &y);
    loss.backward();
    let vars = vs.variables();
    let mut names: Vec<_> = vars.keys().cloned().collect();
    names.sort();
    let mut trainable = 0;
    for name in names {
        let v = &vars[&name];
        if !v.requires_grad() {
            continue;
        }
        trainable += 1;
        let g = v.grad();
        let model = model.name();
        assert!(g.defined(), "{model}: {name} has no gradient");
        let norm = g.abs().sum(Kind::Float).double_value(&[]);
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{model}: {name} has gradient norm {norm}"
        );
    }
    assert!(trainable > 0, "{}: no trainable variables", model.name());
}

/// Trains `model` with Adam (`lr`) for `steps` on one sine batch and
/// returns the evaluation-mode training loss before and after.
pub(crate) fn train_sine(
    vs: &nn::VarStore,
    model: &dyn Forecaster,
    l: i64,
    h: i64,
    steps: usize,
    lr: f64,
) -> (f64, f64) {
    let (x, y) = sine_windows(64, l, h);
    let eval = |m: &dyn Forecaster| {
        let _g = tch::no_grad_guard();
        m.forward_t(&x, false)
            .mse_loss(&y, Reduction::Mean)
            .double_value(&[])
    };
    let before = eval(model);
    let mut opt = nn::Adam::default().build(vs, lr).expect("an optimizer");
    for _ in 0..steps {
        let loss = model.loss(&x, &y);
        opt.backward_step(&loss);
    }
    (before, eval(model))
}

/// The number of trainable scalars in `vs`.
pub(crate) fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// The small variant of look-back `l` and horizon `h`.
pub(crate) fn small(l: i64, h: i64) -> ForecastConfig {
    ForecastConfig::new(l, h).size(ModelSize::Small)
}
