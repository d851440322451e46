//! tch (libtorch 2.13): zero-copy tensors that own what they view, and a
//! small model trained from the loader.

use super::common::{etth1, rows, ETT_FEATURES};
use deeprc_bridge::arrow::array::AsArray;
use deeprc_bridge::arrow::datatypes::Float32Type;
use deeprc_bridge::{
    Loader, LoaderOptions, Normalize, PartKind, RowSpec, SamplerOptions, Split, TimeStep,
    WindowSpec, ZeroCopy,
};
use deeprc_core::Device;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Kind, Tensor};

#[test]
fn tensors_view_arrow_and_staging_memory_in_place() {
    let src = rows(0, 64, 1000, 64);
    let arrow_ptr = src.batches()[0]
        .column(1)
        .as_primitive::<Float32Type>()
        .values()
        .as_ptr() as usize;
    let ds = RowSpec::new(&["x"], &["id"]).build(src).unwrap().train;
    let loader = Loader::new(ds, SamplerOptions::sequential(16), LoaderOptions::default()).unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    assert!(b.inputs().is_zero_copy() && !b.targets().is_zero_copy());
    let staging_ptr = b.targets().as_ptr() as usize;
    let t = b.to_tch(Device::Cpu).unwrap();
    assert!(t.is_zero_copy(PartKind::Inputs));
    assert_eq!(
        t.inputs().data_ptr() as usize,
        arrow_ptr,
        "inputs tensor = the Arrow column's buffer"
    );
    assert_eq!(
        t.targets().data_ptr() as usize,
        staging_ptr,
        "targets tensor = the staging buffer"
    );
    assert_eq!(t.inputs().size(), vec![16, 1]);
    assert_eq!(t.targets().kind(), Kind::Float);
    let x: Vec<f32> = Vec::try_from(t.inputs().flatten(0, -1)).unwrap();
    assert_eq!(x[..3], [0.0, 0.5, 1.0]);
}

#[test]
fn a_view_outlives_the_batch_loader_and_dataset() {
    let ds = WindowSpec::new(4, 2, &["x"], &["x"])
        .build(rows(0, 100, 1000, 100))
        .unwrap()
        .train;
    let opts = LoaderOptions {
        zero_copy: ZeroCopy::Never,
        ..Default::default()
    };
    let loader = Loader::new(ds, SamplerOptions::sequential(8), opts).unwrap();
    let view = {
        let b = loader.epoch(0).nth(2).unwrap().unwrap();
        let t = b.to_tch(Device::Cpu).unwrap();
        t.inputs().shallow_clone().narrow(0, 1, 2)
    };
    drop(loader);
    // The staging buffer is still alive: libtorch holds it through the deleter.
    let v: Vec<f32> = Vec::try_from(view.flatten(0, -1)).unwrap();
    assert_eq!(v, vec![8.5, 9.0, 9.5, 10.0, 9.0, 9.5, 10.0, 10.5]);
}

#[test]
fn buffers_come_back_when_libtorch_frees_the_tensors() {
    let ds = WindowSpec::new(8, 2, &["x"], &["x"])
        .build(rows(0, 5000, 100_000, 1000))
        .unwrap()
        .train;
    let opts = LoaderOptions {
        workers: 2,
        prefetch: 2,
        zero_copy: ZeroCopy::Never,
        ..Default::default()
    };
    let loader = Loader::new(ds, SamplerOptions::shuffled(32, 1), opts).unwrap();
    for b in loader.epoch(0).take(100) {
        let t = b.unwrap().to_tch(Device::Cpu).unwrap();
        let _ = t.inputs().sum(Kind::Float);
    }
    let reused = loader.buffers_allocated();
    assert!(reused <= 6, "{reused} buffers for 100 batches");
    // Tensors kept alive keep their buffers: the loader must allocate more.
    let kept: Vec<Tensor> = loader
        .epoch(1)
        .take(20)
        .map(|b| b.unwrap().to_tch(Device::Cpu).unwrap().into_tensors().0)
        .collect();
    assert!(
        loader.buffers_allocated() >= 20,
        "{}",
        loader.buffers_allocated()
    );
    let firsts: Vec<f64> = kept.iter().map(|t| t.double_value(&[0, 0, 0])).collect();
    assert_eq!(firsts.len(), 20);
}

#[test]
fn an_mlp_learns_etth1_from_the_loader() {
    let (l, h, f) = (96i64, 24i64, 7i64);
    let splits = WindowSpec::new(l as usize, h as usize, &ETT_FEATURES, &["OT"])
        .time("date", TimeStep::HOUR)
        .normalize(Normalize::ZScore)
        .split(Split::Rows {
            train: 8640,
            val: 2880,
            test: 2880,
        })
        .build(&etth1())
        .unwrap();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let p = vs.root();
    let net = nn::seq()
        .add_fn(move |x| x.flatten(1, -1))
        .add(nn::linear(&p / "l1", l * f, 64, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&p / "l2", 64, h, Default::default()));
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let loader = Loader::new(
        splits.train,
        SamplerOptions::shuffled(64, 7),
        LoaderOptions::default(),
    )
    .unwrap();
    let mut losses = Vec::new();
    for b in loader.epoch(0).take(60) {
        let t = b.unwrap().to_tch(Device::Cpu).unwrap();
        let pred = net.forward(t.inputs());
        let loss = pred.mse_loss(&t.targets().squeeze_dim(-1), tch::Reduction::Mean);
        opt.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[50..].iter().sum::<f64>() / 10.0;
    assert!(last < 0.7 * first, "loss {first:.3} -> {last:.3}");
}
