//! TensorFlow 2.13 (C library of tensorflow-cpu): batches copied once into
//! reused TF tensors, zero-copy TF_Tensors, and the repository's SavedModel
//! trained from Rust.

use super::common::{etth1, rows, ETT_FEATURES};
use deeprc_bridge::tensorflow::{default_model_dir, loader, SavedModelTrainer};
use deeprc_bridge::{
    Loader, LoaderOptions, Normalize, SamplerOptions, Split, TimeStep, WindowSpec, ZeroCopy,
};
use std::collections::BTreeSet;

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
