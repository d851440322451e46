//! TensorFlow 2.13 (C library of tensorflow-cpu): batches copied once into
//! reused TF tensors, zero-copy TF_Tensors, the repository's SavedModel
//! trained from Rust, and the hydrology LSTM trained through flat gradients
//! averaged in Rust (data parallel).
//!
//! The hydrology tests export a small LSTM (dropout 0, so that gradients
//! are deterministic) with the venv's Python into `CARGO_TARGET_TMPDIR`
//! once (a few seconds; reused while newer than `export_hydro.py`); one
//! test loads the paper-size model that `scripts/setup-ml.sh` exports.

use super::common::{etth1, rows, ETT_FEATURES};
use deeprc_bridge::tensorflow::{
    default_hydro_model_dir, default_model_dir, hydro_export_script, loader, HydroExport,
    HydroGradientModel, HydroModelConfig, SavedModelTrainer,
};
use deeprc_bridge::{
    BridgeError, Loader, LoaderOptions, Normalize, SamplerOptions, Split, TimeStep, WindowSpec,
    ZeroCopy,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn ett_train() -> deeprc_bridge::WindowDataset {
    WindowSpec::new(96, 24, &ETT_FEATURES, &["OT"])
        .time("date", TimeStep::HOUR)
        .normalize(Normalize::ZScore)
        .split(Split::Rows {
            train: 8640,
            val: 2880,
            test: 2880,
        })
        .build(&etth1())
        .unwrap()
        .train
}

#[test]
fn the_saved_model_trains_from_the_loader() {
    let dir = default_model_dir();
    let mut model = SavedModelTrainer::load(&dir)
        .unwrap_or_else(|e| panic!("{e} (scripts/setup-ml.sh exports it)"));
    let tf_loader = loader::<_, f32, f32>(
        ett_train(),
        SamplerOptions::shuffled(64, 3),
        LoaderOptions::default(),
    )
    .unwrap();
    let mut losses = Vec::new();
    let mut ptrs = BTreeSet::new();
    for b in tf_loader.epoch(0).take(60) {
        let b = b.unwrap();
        assert_eq!(b.tf_inputs().dims(), &[64, 96, 7]);
        assert_eq!(b.tf_targets().dims(), &[64, 24, 1]);
        ptrs.insert(b.tf_inputs().as_ptr() as usize);
        losses.push(model.train_step(b.tf_inputs(), b.tf_targets()).unwrap());
    }
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[50..].iter().sum::<f32>() / 10.0;
    assert!(last < 0.7 * first, "loss {first:.3} -> {last:.3}");
    assert!(
        ptrs.len() <= 8,
        "TF tensors are reused: {} distinct buffers for 60 batches",
        ptrs.len()
    );
    let b = tf_loader.epoch(1).next().unwrap().unwrap();
    let pred = model.predict(b.tf_inputs()).unwrap();
    assert_eq!(pred.dims(), &[64, 24, 1]);
    assert!(model
        .loss(b.tf_inputs(), b.tf_targets())
        .unwrap()
        .is_finite());
}

#[test]
fn tf_tensors_can_view_the_staging_buffer() {
    let ds = WindowSpec::new(8, 2, &["x"], &["x"])
        .build(rows(0, 2000, 100_000, 2000))
        .unwrap()
        .train;
    let opts = LoaderOptions {
        zero_copy: ZeroCopy::Never,
        workers: 1,
        prefetch: 2,
        ..Default::default()
    };
    let l = Loader::new(ds, SamplerOptions::shuffled(32, 1), opts).unwrap();
    for b in l.epoch(0).take(40) {
        let b = b.unwrap();
        let (px, py) = (b.inputs().as_ptr(), b.targets().as_ptr());
        let first = b.inputs().to_vec::<f32>().unwrap()[0];
        let (x, y) = b.to_tf_views().unwrap();
        assert_eq!(x.data_ptr(), px, "TF_Tensor data = the staging buffer");
        assert_eq!(y.data_ptr(), py);
        assert_eq!(x.dims(), &[32, 8, 1]);
        // SAFETY-free read through the C API pointer is not needed: the
        // pointer identity is the proof; the value is still there.
        assert_eq!(first, b_first(&x));
    }
    assert!(
        l.buffers_allocated() <= 5,
        "deallocator returns buffers: {}",
        l.buffers_allocated()
    );
    // A TensorFlow-tensor loader cannot promise views.
    let ds = WindowSpec::new(8, 2, &["x"], &["x"])
        .build(rows(0, 100, 1000, 100))
        .unwrap()
        .train;
    let require = LoaderOptions {
        zero_copy: ZeroCopy::Require,
        ..Default::default()
    };
    assert!(loader::<_, f32, f32>(ds, SamplerOptions::sequential(4), require).is_err());
}

/// The first element of a view, read through TF_TensorData.
fn b_first(v: &deeprc_bridge::tensorflow::TfTensorView) -> f32 {
    let bytes = v.bytes();
    f32::from_ne_bytes(bytes[..4].try_into().unwrap())
}

/// The small hydrology LSTM of these tests: 12 days of 3 forcings, 2
/// attributes, 16 cells, no dropout, Adam 5e-3, clipping at norm 1.
fn small_export() -> HydroExport {
    HydroExport {
        seq_len: 12,
        dyn_features: 3,
        static_features: 2,
        hidden: 16,
        dropout: 0.0,
        learning_rate: 5e-3,
        clip_norm: 1.0,
        forget_bias: 5.0,
        seed: 0,
        python: None,
    }
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The small model's directory, exported once per test binary (and reused
/// across runs while newer than the export script).
fn small_hydro() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let e = small_export();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "hydro_lstm_T{}_F{}_S{}_H{}_p{}_lr{}_c{}_s{}",
            e.seq_len,
            e.dyn_features,
            e.static_features,
            e.hidden,
            e.dropout,
            e.learning_rate,
            e.clip_norm,
            e.seed
        ));
        let fresh = matches!(
            (mtime(&dir.join("saved_model.pb")), mtime(&hydro_export_script())),
            (Some(model), Some(script)) if model > script
        );
        if !fresh {
            e.export(&dir)
                .unwrap_or_else(|err| panic!("exporting the test model: {err}"));
        }
        dir
    })
}

fn load_small() -> HydroGradientModel {
    HydroGradientModel::load(small_hydro()).unwrap_or_else(|e| panic!("{e}"))
}

/// A small deterministic generator (xorshift64*), uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        2.0 * u - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// A toy rainfall-runoff batch for a model of `c`'s sizes: runoff is the
/// recent "rain" (feature 0 of the last three days) scaled by the first
/// attribute. Row-major x_dyn [B, T, F], x_static [B, S], y [B].
fn toy_batch(c: &HydroModelConfig, b: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let (t, f, s) = (c.seq_len, c.dyn_features, c.static_features);
    let x_dyn = r.vec(b * t * f);
    let x_static = r.vec(b * s);
    let y = (0..b)
        .map(|i| {
            let rain: f32 = (t - 3..t).map(|d| x_dyn[(i * t + d) * f]).sum();
            let gain = if s > 0 {
                1.0 + 0.5 * x_static[i * s]
            } else {
                1.0
            };
            0.5 * rain * gain
        })
        .collect();
    (x_dyn, x_static, y)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn hydro_model_loads_and_reports_its_config() {
    let m = load_small();
    let e = small_export();
    let c = m.config();
    assert_eq!(
        (c.seq_len, c.dyn_features, c.static_features, c.hidden),
        (12, 3, 2, 16)
    );
    assert_eq!(
        (c.dropout, c.learning_rate, c.clip_norm, c.forget_bias),
        (0.0, 5e-3, 1.0, 5.0)
    );
    // 4H (I + H + 1) + H + 1 with I = 3 + 2, H = 16.
    assert_eq!(m.num_params(), 1425);
    assert_eq!(e.num_params(), 1425);
    assert_eq!(HydroModelConfig::params_for(3, 2, 16), 1425);
    assert_eq!(m.weights().unwrap().len(), 1425);
    assert_eq!(m.dir(), small_hydro());
    // A rank's thread can own its replica.
    fn is_send<T: Send>(_: &T) {}
    is_send(&m);
}

#[test]
fn hydro_gradients_train_the_model() {
    let mut m = load_small();
    let c = m.config().clone();
    let (xd, xs, y) = toy_batch(&c, 32, 1);
    let mut grads = vec![0.0; m.num_params()];
    let mut losses = Vec::new();
    for step in 1..=40u64 {
        let before = m.predict(&xd, &xs).unwrap();
        let loss = m.gradients_into(&xd, &xs, &y, &mut grads).unwrap();
        // Dropout 0: the training loss is the MSE of the prediction.
        let mse = before
            .iter()
            .zip(&y)
            .map(|(p, t)| (p - t).powi(2))
            .sum::<f32>()
            / 32.0;
        assert!((loss - mse).abs() <= 1e-5 * mse.max(1.0), "{loss} vs {mse}");
        assert!(grads.iter().all(|g| g.is_finite()));
        assert!(grads.iter().any(|&g| g != 0.0));
        assert_eq!(m.apply_gradients(&grads).unwrap(), step);
        losses.push(loss);
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(
        last < 0.5 * first,
        "loss {first:.4} -> {last:.4}: {losses:?}"
    );

    // NSE* with q_std = 0.9 divides by (0.9 + 0.1)^2 = 1: the MSE again.
    let (mse, g_mse) = m.gradients(&xd, &xs, &y).unwrap();
    let (nse, g_nse) = m.nse_gradients(&xd, &xs, &y, &[0.9; 32]).unwrap();
    assert!((mse - nse).abs() <= 1e-6 * mse.max(1.0), "{mse} vs {nse}");
    assert!(max_abs_diff(&g_mse, &g_nse) <= 1e-6);
    // Basins of larger discharge variance weigh less.
    let (nse2, g_nse2) = m.nse_gradients(&xd, &xs, &y, &[1.9; 32]).unwrap();
    assert!(
        (nse2 - mse / 4.0).abs() <= 1e-5 * mse.max(1.0),
        "{nse2} vs {mse}/4"
    );
    assert!(max_abs_diff(&g_nse2.iter().map(|g| 4.0 * g).collect::<Vec<_>>(), &g_mse) <= 1e-5);

    m.set_learning_rate(1e-4).unwrap();
    assert_eq!(m.config().learning_rate, 1e-4);
}

#[test]
fn hydro_weights_round_trip() {
    let mut m = load_small();
    let c = m.config().clone();
    let (xd, xs, _) = toy_batch(&c, 5, 2);
    let w0 = m.weights().unwrap();
    let p0 = m.predict(&xd, &xs).unwrap();
    assert_eq!(p0.len(), 5);
    let halved: Vec<f32> = w0.iter().map(|w| 0.5 * w).collect();
    m.set_weights(&halved).unwrap();
    assert_eq!(m.weights().unwrap(), halved);
    assert!(max_abs_diff(&m.predict(&xd, &xs).unwrap(), &p0) > 1e-4);
    m.set_weights(&w0).unwrap();
    assert_eq!(
        m.weights().unwrap(),
        w0,
        "set_weights(get_weights()) is exact"
    );
    assert_eq!(m.predict(&xd, &xs).unwrap(), p0);
    // A second model of the same SavedModel, given these weights, agrees.
    let mut other = load_small();
    other.set_weights(&halved).unwrap();
    other.set_weights(&m.weights().unwrap()).unwrap();
    assert_eq!(other.predict(&xd, &xs).unwrap(), p0);
}

#[test]
fn hydro_data_parallel_shards_match_the_whole_batch() {
    // Two replicas ("ranks") each take the gradients of half a batch, the
    // halves are averaged in Rust (what the communicator's all-reduce does)
    // and both apply the average; a third model trains on the whole batch.
    let mut a = load_small();
    let mut b = load_small();
    let mut whole = load_small();
    let w = a.weights().unwrap();
    // b starts elsewhere, then gets rank 0's weights (the broadcast).
    b.set_weights(&w.iter().map(|x| x + 0.01).collect::<Vec<_>>())
        .unwrap();
    b.set_weights(&w).unwrap();
    whole.set_weights(&w).unwrap();
    let c = a.config().clone();
    let (half_dyn, half_static) = (16 * c.seq_len * c.dyn_features, 16 * c.static_features);
    let p = a.num_params();
    let (mut ga, mut gb, mut gw) = (vec![0.0; p], vec![0.0; p], vec![0.0; p]);
    for step in 0..8 {
        let (xd, xs, y) = toy_batch(&c, 32, 10 + step);
        let la = a
            .gradients_into(&xd[..half_dyn], &xs[..half_static], &y[..16], &mut ga)
            .unwrap();
        let lb = b
            .gradients_into(&xd[half_dyn..], &xs[half_static..], &y[16..], &mut gb)
            .unwrap();
        let avg: Vec<f32> = ga.iter().zip(&gb).map(|(x, y)| 0.5 * (x + y)).collect();
        let lw = whole.gradients_into(&xd, &xs, &y, &mut gw).unwrap();
        assert!((0.5 * (la + lb) - lw).abs() <= 1e-5 * lw.max(1.0));
        let scale = gw.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(
            max_abs_diff(&avg, &gw) <= 1e-5 * scale.max(1e-3),
            "step {step}: mean of the shards' gradients = the batch's gradient"
        );
        a.apply_gradients(&avg).unwrap();
        b.apply_gradients(&avg).unwrap();
        whole.apply_gradients(&gw).unwrap();
    }
    let (wa, wb, ww) = (
        a.weights().unwrap(),
        b.weights().unwrap(),
        whole.weights().unwrap(),
    );
    assert_eq!(
        wa, wb,
        "replicas given the same averaged gradients stay identical"
    );
    assert_ne!(wa, w, "the replicas trained");
    let d = max_abs_diff(&wa, &ww);
    assert!(
        d <= 1e-5,
        "data-parallel vs whole-batch weights differ by {d}"
    );
}

fn invalid_detail(e: BridgeError) -> String {
    match e {
        BridgeError::InvalidArgument { detail, .. } => detail,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn hydro_inputs_are_checked_before_tensorflow() {
    let mut m = load_small();
    let c = m.config().clone();
    let (xd, xs, y) = toy_batch(&c, 4, 3);
    let mut g = vec![0.0; m.num_params()];
    let d = invalid_detail(m.gradients_into(&xd[1..], &xs, &y, &mut g).unwrap_err());
    assert!(d.contains("x_dyn"), "{d}");
    let d = invalid_detail(m.gradients_into(&[], &[], &[], &mut g).unwrap_err());
    assert!(d.contains("x_dyn"), "{d}");
    let d = invalid_detail(m.gradients_into(&xd, &xs[1..], &y, &mut g).unwrap_err());
    assert!(d.contains("x_static"), "{d}");
    let d = invalid_detail(m.gradients_into(&xd, &xs, &y[1..], &mut g).unwrap_err());
    assert!(d.contains("y has 3"), "{d}");
    let d = invalid_detail(
        m.nse_gradients_into(&xd, &xs, &y, &[1.0; 3], &mut g)
            .unwrap_err(),
    );
    assert!(d.contains("q_std"), "{d}");
    let d = invalid_detail(m.gradients_into(&xd, &xs, &y, &mut g[1..]).unwrap_err());
    assert!(d.contains("gradient buffer"), "{d}");
    let d = invalid_detail(m.predict(&xd, &xs[2..]).unwrap_err());
    assert!(d.contains("x_static"), "{d}");
    let d = invalid_detail(m.apply_gradients(&g[1..]).unwrap_err());
    assert!(d.contains("grads has 1424"), "{d}");
    g[7] = f32::NAN;
    let d = invalid_detail(m.apply_gradients(&g).unwrap_err());
    assert!(d.contains("grads[7]"), "{d}");
    let d = invalid_detail(m.set_weights(&g[..10]).unwrap_err());
    assert!(d.contains("weights"), "{d}");
    invalid_detail(m.set_learning_rate(0.0).unwrap_err());
    // Nothing was applied: the model still works and took no step.
    g.fill(0.0);
    assert_eq!(m.apply_gradients(&g).unwrap(), 1);
    // Impossible exports are refused before Python runs.
    let bad = HydroExport {
        hidden: 0,
        ..small_export()
    };
    invalid_detail(
        bad.export(Path::new(env!("CARGO_TARGET_TMPDIR")).join("never"))
            .unwrap_err(),
    );
    let bad = HydroExport {
        dropout: 1.0,
        ..small_export()
    };
    invalid_detail(
        bad.export(Path::new(env!("CARGO_TARGET_TMPDIR")).join("never"))
            .unwrap_err(),
    );
}

#[test]
fn a_model_without_the_hydro_signatures_is_a_typed_error() {
    // The bridge's MLP has train / loss / predict, not gradients.
    let dir = default_model_dir();
    match HydroGradientModel::load(&dir) {
        Err(BridgeError::SignatureMismatch {
            dir: d,
            signature,
            tensor,
            problem,
        }) => {
            assert_eq!(d, dir);
            assert_eq!(signature, "gradients");
            assert_eq!(tensor, None);
            assert!(
                problem.contains("missing") && problem.contains("train"),
                "{problem}"
            );
        }
        other => panic!("expected SignatureMismatch, got {other:?}"),
    }
    let e = HydroGradientModel::load(Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-model"))
        .unwrap_err();
    assert!(e.to_string().contains("no SavedModel"), "{e}");
}

#[test]
fn the_setup_hydro_model_has_the_papers_configuration() {
    let dir = default_hydro_model_dir();
    let m = HydroGradientModel::load(&dir)
        .unwrap_or_else(|e| panic!("{e} (scripts/setup-ml.sh exports it)"));
    let c = m.config();
    assert_eq!(
        (c.seq_len, c.dyn_features, c.static_features, c.hidden),
        (270, 5, 27, 256)
    );
    assert_eq!(
        (c.dropout, c.learning_rate, c.clip_norm, c.forget_bias),
        (0.4, 1e-3, 1.0, 5.0)
    );
    assert_eq!(m.num_params(), 296_193);
    assert_eq!(HydroExport::paper().num_params(), 296_193);
    let (xd, xs, y) = toy_batch(c, 2, 4);
    let (loss, g) = m.gradients(&xd, &xs, &y).unwrap();
    assert!(loss.is_finite());
    assert_eq!(g.len(), 296_193);
    assert!(g.iter().all(|x| x.is_finite()));
    let p = m.predict(&xd, &xs).unwrap();
    assert_eq!(p.len(), 2);
    // Dropout is off in predict: it is deterministic.
    assert_eq!(p, m.predict(&xd, &xs).unwrap());
}
