//! The Data Bridge end to end: ETTh1 -> windows (96 hours in, 24 out,
//! target OT) -> loader -> a small tch model trained for a few epochs, with
//! the validation loss per epoch, de-normalised forecasts on the test split
//! written as CSV and SVG. With the `tensorflow` feature, the repository's
//! SavedModel (crates/deeprc-bridge/python/export_model.py) is trained from
//! the same kind of loader too.
//!
//! ```text
//! source scripts/env-ml.sh
//! cargo run --release -p deeprc-examples --features tch,tensorflow --bin bridge_demo -- [out_dir] [--epochs 5]
//! ```
//!
//! Data: `$DEEPRC_DATA/ETT-small/ETTh1.csv` (default `../shared/data`).
//! Output (default `out/bridge`): `forecast.csv` (every test window, every
//! horizon step: forecast and truth in degrees C) and `forecast.svg` (the
//! one-hour-ahead forecast against the truth over the test period).

use deeprc_bridge::{Dataset, Normalize, Split, Splits, TimeStep, WindowDataset, WindowSpec};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

const FEATURES: [&str; 7] = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"];
const IN_LEN: usize = 96;
const HORIZON: usize = 24;

type Error = Box<dyn std::error::Error>;

fn main() {
    if let Err(e) = run() {
        eprintln!("bridge_demo: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = PathBuf::from("out/bridge");
    let mut epochs = 5usize;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--epochs" => {
                epochs = args.get(i + 1).ok_or("--epochs takes a number")?.parse()?;
                i += 1;
            }
            other => out = PathBuf::from(other),
        }
        i += 1;
    }
    std::fs::create_dir_all(&out)?;
    let path = deeprc_frame::io::data_dir().join("ETT-small/ETTh1.csv");
    let t = Instant::now();
    let table = deeprc_frame::io::read_etth1(&path)?;
    let splits = spec().build(&table)?;
    println!(
        "ETTh1: {} rows -> windows {IN_LEN} in / {HORIZON} out: train {}, val {}, test {} ({:.2} s)",
        table.num_rows(),
        splits.train.len(),
        splits.val.as_ref().map_or(0, |d| d.len()),
        splits.test.as_ref().map_or(0, |d| d.len()),
        t.elapsed().as_secs_f64()
    );
    let ot = splits.scaler.get("OT")?;
    println!(
        "OT scaled with the training rows' mean {:.3} and std {:.3}",
        ot.shift, ot.scale
    );
    let trained = train_tch(splits, epochs, &out)?;
    if let Some(files) = trained {
        println!("wrote {}", files);
    }
    train_tf()?;
    Ok(())
}

/// The windows of the usual ETTh1 split (12 / 4 / 4 months).
fn spec() -> WindowSpec {
    WindowSpec::new(IN_LEN, HORIZON, &FEATURES, &["OT"])
        .time("date", TimeStep::HOUR)
        .normalize(Normalize::ZScore)
        .split(Split::Rows {
            train: 8640,
            val: 2880,
            test: 2880,
        })
}

/// `YYYY-MM-DD HH:00` of seconds since 1970.
fn civil(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:00", rem / 3600)
}

/// An SVG line chart of forecast and truth.
fn svg(path: &Path, title: &str, forecast: &[f32], truth: &[f32]) -> std::io::Result<()> {
    let (w, h, pad) = (1000.0f32, 360.0f32, 40.0f32);
    let all = forecast.iter().chain(truth);
    let lo = all.clone().fold(f32::INFINITY, |a, &b| a.min(b));
    let hi = all.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let n = truth.len().max(2) as f32;
    let line = |v: &[f32]| -> String {
        v.iter()
            .enumerate()
            .map(|(i, &y)| {
                let px = pad + (w - 2.0 * pad) * i as f32 / (n - 1.0);
                let py = h - pad - (h - 2.0 * pad) * (y - lo) / (hi - lo).max(1e-6);
                format!("{px:.1},{py:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20">{title}</text>
<text x="{pad}" y="{}">{lo:.1} C</text><text x="{pad}" y="{}">{hi:.1} C</text>
<polyline fill="none" stroke="#888" stroke-width="1" points="{}"/>
<polyline fill="none" stroke="#d62728" stroke-width="1" points="{}"/>
<text x="{}" y="20" fill="#888">truth</text><text x="{}" y="20" fill="#d62728">forecast</text>
</svg>
"##,
        h - pad + 14.0,
        pad - 4.0,
        line(truth),
        line(forecast),
        w - 150.0,
        w - 100.0,
    );
    std::fs::write(path, s)
}

#[cfg(feature = "tch")]
fn train_tch(
    splits: Splits<WindowDataset>,
    epochs: usize,
    out: &Path,
) -> Result<Option<String>, Error> {
    use deeprc_bridge::tch::tch_crate::nn::{self, Module, OptimizerConfig};
    use deeprc_bridge::tch::tch_crate::{self as tch, Kind, Tensor};
    use deeprc_bridge::{BridgeError, Loader, LoaderOptions, SamplerOptions};
    use deeprc_core::Device;
    let Splits {
        train,
        val,
        test,
        scaler,
    } = splits;
    let (val, test) = (
        val.ok_or("no validation windows")?,
        test.ok_or("no test windows")?,
    );
    let device = if tch::Cuda::is_available() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let train = Loader::new(
        train,
        SamplerOptions::shuffled(64, 42),
        LoaderOptions::default(),
    )?;
    let val = Loader::new(
        val,
        SamplerOptions::sequential(256),
        LoaderOptions::default(),
    )?;
    let test = Loader::new(
        test,
        SamplerOptions::sequential(256),
        LoaderOptions::default(),
    )?;
    println!(
        "tch on {device}; staging memory: {}",
        train.describe_memory()
    );

    tch::manual_seed(0);
    let vs = nn::VarStore::new(deeprc_bridge::tch::device(device));
    let p = vs.root();
    let net = nn::seq()
        .add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(
            &p / "l1",
            (IN_LEN * FEATURES.len()) as i64,
            256,
            Default::default(),
        ))
        .add_fn(|x| x.relu())
        .add(nn::linear(
            &p / "l2",
            256,
            HORIZON as i64,
            Default::default(),
        ));
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
    let mse = |pred: &Tensor, y: &Tensor| pred.mse_loss(&y.squeeze_dim(-1), tch::Reduction::Mean);
    let evaluate = |loader: &Loader<WindowDataset>| -> Result<f64, BridgeError> {
        let _guard = tch::no_grad_guard();
        let (mut sum, mut n) = (0.0, 0usize);
        for b in loader.epoch(0) {
            let b = b?.to_tch(device)?;
            let k = b.valid();
            let loss = mse(
                &net.forward(b.inputs()).narrow(0, 0, k as i64),
                &b.targets().narrow(0, 0, k as i64),
            );
            sum += loss.double_value(&[]) * k as f64;
            n += k;
        }
        Ok(sum / n as f64)
    };
    for epoch in 0..epochs {
        let t = Instant::now();
        let (mut sum, mut batches) = (0.0, 0);
        for b in train.epoch(epoch as u64) {
            let b = b?.to_tch(device)?;
            let loss = mse(&net.forward(b.inputs()), b.targets());
            opt.backward_step(&loss);
            sum += loss.double_value(&[]);
            batches += 1;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "epoch {epoch}: train MSE {:.4}  val MSE {:.4}  ({batches} batches, {:.1} s, {:.0} batches/s)",
            sum / batches as f64,
            evaluate(&val)?,
            secs,
            batches as f64 / secs
        );
    }

    // Test: de-normalised forecasts.
    let _guard = tch::no_grad_guard();
    let mut csv = String::from("sample,target_start,step,forecast_c,truth_c\n");
    let (mut step1_f, mut step1_t) = (Vec::new(), Vec::new());
    let (mut se, mut ae, mut se_norm, mut count) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    let ds = std::sync::Arc::clone(test.dataset());
    for b in test.epoch(0) {
        let b = b?;
        let samples = b.samples()[..b.valid()].to_vec();
        let tb = b.to_tch(device)?;
        let pred = net
            .forward(tb.inputs())
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float);
        let mut f: Vec<f32> = Vec::try_from(pred.flatten(0, -1))?;
        let mut y: Vec<f32> =
            Vec::try_from(tb.targets().to_device(tch::Device::Cpu).flatten(0, -1))?;
        for (a, b) in f.iter().zip(&y).take(samples.len() * HORIZON) {
            se_norm += f64::from(a - b).powi(2);
        }
        scaler.inverse_rows(&["OT"], &mut f)?;
        scaler.inverse_rows(&["OT"], &mut y)?;
        for (i, &s) in samples.iter().enumerate() {
            let meta = ds.meta(s);
            let start = meta.time.unwrap_or_default();
            for k in 0..HORIZON {
                let (fc, tr) = (f[i * HORIZON + k], y[i * HORIZON + k]);
                let _ = writeln!(
                    csv,
                    "{},{},{},{fc:.3},{tr:.3}",
                    meta.id,
                    civil(start),
                    k + 1
                );
                se += f64::from(fc - tr).powi(2);
                ae += f64::from(fc - tr).abs();
                count += 1;
            }
            step1_f.push(f[i * HORIZON]);
            step1_t.push(y[i * HORIZON]);
        }
    }
    println!(
        "test: MSE {:.4} (normalised), MAE {:.3} C, RMSE {:.3} C over {} windows x {HORIZON} hours",
        se_norm / count as f64,
        ae / count as f64,
        (se / count as f64).sqrt(),
        count / HORIZON
    );
    let csv_path = out.join("forecast.csv");
    std::fs::write(&csv_path, csv)?;
    let svg_path = out.join("forecast.svg");
    svg(
        &svg_path,
        "ETTh1 test split: OT one hour ahead (tch MLP via deeprc-bridge)",
        &step1_f,
        &step1_t,
    )?;
    Ok(Some(format!(
        "{} and {}",
        csv_path.display(),
        svg_path.display()
    )))
}

#[cfg(not(feature = "tch"))]
fn train_tch(
    _splits: Splits<WindowDataset>,
    _epochs: usize,
    _out: &Path,
) -> Result<Option<String>, Error> {
    println!("tch: not compiled in (rebuild with --features tch after scripts/setup-ml.sh)");
    let _ = svg;
    let _ = civil;
    Ok(None)
}

#[cfg(feature = "tensorflow")]
fn train_tf() -> Result<(), Error> {
    use deeprc_bridge::tensorflow::{default_model_dir, loader, SavedModelTrainer};
    use deeprc_bridge::{BridgeError, Loader, LoaderOptions, SamplerOptions};
    let dir = default_model_dir();
    let mut model = SavedModelTrainer::load(&dir)?;
    let path = deeprc_frame::io::data_dir().join("ETT-small/ETTh1.csv");
    let splits = spec().build(&deeprc_frame::io::read_etth1(&path)?)?;
    let train = loader::<_, f32, f32>(
        splits.train,
        SamplerOptions::shuffled(64, 7),
        LoaderOptions::default(),
    )?;
    let val = loader::<_, f32, f32>(
        splits.val.ok_or("no validation windows")?,
        SamplerOptions {
            drop_incomplete: true,
            ..SamplerOptions::sequential(256)
        },
        LoaderOptions::default(),
    )?;
    type TfLoader = Loader<WindowDataset, deeprc_bridge::tensorflow::TfPool<f32, f32>>;
    fn val_loss(m: &SavedModelTrainer, val: &TfLoader) -> Result<f32, BridgeError> {
        let (mut s, mut n) = (0.0, 0);
        for b in val.epoch(0) {
            let b = b?;
            s += m.loss(b.tf_inputs(), b.tf_targets())?;
            n += 1;
        }
        Ok(s / n as f32)
    }
    let before = val_loss(&model, &val)?;
    let t = Instant::now();
    let mut steps = 0;
    let mut first = None;
    let mut last = 0.0;
    for b in train.epoch(0) {
        let b = b?;
        last = model.train_step(b.tf_inputs(), b.tf_targets())?;
        first.get_or_insert(last);
        steps += 1;
    }
    println!(
        "TensorFlow SavedModel {}: one epoch, {steps} train steps in {:.1} s: batch loss {:.3} -> {:.3}, val MSE {:.4} -> {:.4}",
        dir.display(),
        t.elapsed().as_secs_f64(),
        first.unwrap_or(0.0),
        last,
        before,
        val_loss(&model, &val)?
    );
    Ok(())
}

#[cfg(not(feature = "tensorflow"))]
fn train_tf() -> Result<(), Error> {
    println!("tensorflow: not compiled in (rebuild with --features tensorflow after scripts/setup-ml.sh)");
    Ok(())
}
