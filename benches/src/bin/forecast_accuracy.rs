//! Accuracy of the forecasting zoo on ETTh1 under the standard
//! long-horizon protocol (see `deeprc_examples::forecast`), each model
//! trained data-parallel on thread ranks, beside the seasonal-naive
//! baseline. Rows go to `docs/results/etth1.csv`
//! (`model,horizon,target,lookback,mse,mae,steps,seconds`; a rerun replaces
//! the rows of the models it ran), learning curves and forecasts of a few
//! test windows to `out/accuracy/` as PNG.
//!
//! ```text
//! source scripts/env.sh
//! cargo run --release -p deeprc-benches --features tch --bin forecast_accuracy -- \
//!     [--models NLinear,DLinear,...] [--horizon 96] [--target all|OT] [--ranks 2] \
//!     [--max-steps 1000] [--val-every 100] [--patience 5] [--small | --default-size] \
//!     [--csv docs/results/etth1.csv] [--out out/accuracy]
//! ```
//!
//! Each model takes its published look-back and learning rate
//! ([`published`]) and its paper's ETTh1 configuration
//! (`ModelSize::Etth1`: PatchTST's reduced model, the others at their
//! published size; `--default-size` takes PatchTST's default width 128);
//! `--lookback` overrides the look-back for every model.

use deeprc_comm::{local, Communicator};
use deeprc_examples::forecast::{self, ForecastOptions, ForecastReport, Target};
use deeprc_examples::plot::{line_chart, Line};
use deeprc_models::{ModelSize, MODELS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Error = Box<dyn std::error::Error>;

/// A model's published look-back, learning rate and global batch for
/// ETTh1 (PatchTST/64: 512 and 1e-4; DLinear and NLinear: the LTSF-Linear
/// settings 336 / 96 and 5e-3, halved every epoch; TiDE: 720; NHITS and NBEATS: 5 horizons;
/// TimesNet, Autoformer and the transformers: 96 and 1e-4 as their papers;
/// the recurrent models: 96 and 1e-3 as NeuralForecast).
pub fn published(model: &str, horizon: usize) -> (usize, f64, usize) {
    match model {
        "PatchTST" => (512, 1e-4, 128),
        "DLinear" => (336, 5e-3, 32),
        "NLinear" => (96, 5e-3, 32),
        "TiDE" => (720, 1e-3, 64),
        "NHITS" | "NBEATS" | "MLP" => (5 * horizon, 1e-3, 32),
        "TimesNet" | "Autoformer" | "VanillaTransformer" => (96, 1e-4, 32),
        _ => (96, 1e-3, 32),
    }
}

struct Args {
    models: Vec<String>,
    horizon: usize,
    target: Target,
    ranks: usize,
    max_steps: u64,
    val_every: u64,
    patience: u32,
    size: ModelSize,
    lookback: Option<usize>,
    csv: PathBuf,
    out: PathBuf,
}

fn parse() -> Result<Args, Error> {
    let mut a = Args {
        models: MODELS.iter().map(|s| s.to_string()).collect(),
        horizon: 96,
        target: Target::All,
        ranks: 2,
        max_steps: 1000,
        val_every: 100,
        patience: 5,
        // Each model as its paper ran it on ETTh1 (PatchTST's reduced
        // model for small datasets; the others at their published size).
        size: ModelSize::Etth1,
        lookback: None,
        csv: PathBuf::from("docs/results/etth1.csv"),
        out: PathBuf::from("out/accuracy"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let value = |i: usize| -> Result<&String, Error> {
        args.get(i + 1)
            .ok_or_else(|| format!("{} takes a value", args[i]).into())
    };
    while i < args.len() {
        match args[i].as_str() {
            "--models" => a.models = value(i)?.split(',').map(str::to_string).collect(),
            "--horizon" => a.horizon = value(i)?.parse()?,
            "--target" => {
                a.target = match value(i)?.as_str() {
                    "all" => Target::All,
                    "OT" | "ot" => Target::Ot,
                    t => return Err(format!("--target all|OT, not {t}").into()),
                }
            }
            "--ranks" => a.ranks = value(i)?.parse()?,
            "--max-steps" => a.max_steps = value(i)?.parse()?,
            "--val-every" => a.val_every = value(i)?.parse()?,
            "--patience" => a.patience = value(i)?.parse()?,
            "--lookback" => a.lookback = Some(value(i)?.parse()?),
            "--csv" => a.csv = PathBuf::from(value(i)?),
            "--out" => a.out = PathBuf::from(value(i)?),
            "--small" => {
                a.size = ModelSize::Small;
                i -= 1;
            }
            "--default-size" => {
                a.size = ModelSize::Paper;
                i -= 1;
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
        i += 2;
    }
    for m in &a.models {
        if !MODELS.iter().any(|k| k.eq_ignore_ascii_case(m)) && m != "SeasonalNaive" {
            return Err(format!("unknown model {m}; the models are {}", MODELS.join(", ")).into());
        }
    }
    Ok(a)
}

const HEADER: &str = "model,horizon,target,lookback,mse,mae,steps,seconds";

/// Replaces the rows of `rows`' (model, horizon, target) in the CSV.
fn merge_csv(path: &Path, rows: &[String]) -> Result<(), Error> {
    let key = |line: &str| -> String { line.split(',').take(3).collect::<Vec<_>>().join(",") };
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(old) = std::fs::read_to_string(path) {
        for l in old.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            all.insert(key(l), l.to_string());
        }
    }
    for r in rows {
        all.insert(key(r), r.clone());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut s = String::from(HEADER);
    s.push('\n');
    for l in all.values() {
        s.push_str(l);
        s.push('\n');
    }
    std::fs::write(path, s)?;
    Ok(())
}

fn plots(out: &Path, r: &ForecastReport) -> Result<(), Error> {
    let tag = format!("{}_h{}_{}", r.model, r.horizon, r.target.label());
    let train: Vec<(f64, f64)> = r
        .curve
        .iter()
        .map(|p| (p.step as f64, p.train_loss))
        .collect();
    let val: Vec<(f64, f64)> = r.curve.iter().map(|p| (p.step as f64, p.val_mse)).collect();
    if !r.curve.is_empty() {
        line_chart(
            &out.join(format!("{tag}_loss.png")),
            &format!(
                "{} on ETTh1 (horizon {}): learning curve",
                r.model, r.horizon
            ),
            ("optimizer step", "loss (normalised)"),
            &[
                Line {
                    label: "train loss",
                    points: train,
                },
                Line {
                    label: "validation MSE",
                    points: val,
                },
            ],
            true,
        )?;
    }
    for (k, ex) in r.examples.iter().enumerate().take(2) {
        let l = ex.history.len() as f64;
        line_chart(
            &out.join(format!("{tag}_forecast{k}.png")),
            &format!("{}: OT, test window {k} (normalised)", r.model),
            ("hour", "OT (z-score)"),
            &[
                Line::indexed("history", 0.0, &ex.history),
                Line::indexed("forecast", l, &ex.forecast),
                Line::indexed("truth", l, &ex.truth),
            ],
            false,
        )?;
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("forecast_accuracy: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let a = parse()?;
    std::fs::create_dir_all(&a.out)?;
    let table =
        deeprc_frame::io::read_etth1(deeprc_frame::io::data_dir().join("ETT-small/ETTh1.csv"))?;
    tch::set_num_threads((num_cpus() / a.ranks).max(1) as i32);
    let mut rows = Vec::new();
    for lookback in a
        .models
        .iter()
        .map(|m| published(m, a.horizon).0)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let lb = a.lookback.unwrap_or(lookback);
        let (mse, mae) = local::launch(1, |c| {
            forecast::seasonal_naive(
                Arc::new(c) as Arc<dyn Communicator>,
                &table,
                lb,
                a.horizon,
                a.target,
            )
        })?[0];
        println!("SeasonalNaive (24 h) lookback {lb}: test MSE {mse:.4} MAE {mae:.4}");
        rows.push(format!(
            "SeasonalNaive,{},{},{lb},{mse:.6},{mae:.6},0,0",
            a.horizon,
            a.target.label()
        ));
    }
    for m in a.models.iter().filter(|m| *m != "SeasonalNaive") {
        let (lookback, lr, batch) = published(m, a.horizon);
        let mut o = ForecastOptions::new(m, a.lookback.unwrap_or(lookback), a.horizon);
        o.target = a.target;
        o.size = a.size;
        o.lr = lr;
        if matches!(m.as_str(), "DLinear" | "NLinear") {
            // LTSF-Linear's schedule (lradj type1): halved every epoch.
            o.lr_epoch_decay = 0.5;
        }
        o.batch_size = batch.max(a.ranks);
        o.max_steps = a.max_steps;
        o.val_every = a.val_every;
        o.patience = a.patience;
        o.max_val_windows = Some(1024);
        o.progress = true;
        let reports = match local::launch(a.ranks, |c| {
            forecast::train_forecaster(Arc::new(c), &table, &o)
        }) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{m}: failed: {e}");
                continue;
            }
        };
        let r = &reports[0];
        println!(
            "{:<20} h={} {} L={} params {:>9}  test MSE {:.4} MAE {:.4}  ({} steps, best at {}, {:.0} s, {} windows)",
            r.model, r.horizon, r.target.label(), r.lookback, r.parameters, r.mse, r.mae, r.steps, r.best_step, r.seconds, r.test_windows
        );
        rows.push(format!(
            "{},{},{},{},{:.6},{:.6},{},{:.1}",
            r.model,
            r.horizon,
            r.target.label(),
            r.lookback,
            r.mse,
            r.mae,
            r.steps,
            r.seconds
        ));
        plots(&a.out, r)?;
        merge_csv(&a.csv, &rows)?;
    }
    merge_csv(&a.csv, &rows)?;
    println!("wrote {} and plots in {}", a.csv.display(), a.out.display());
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
