//! Accuracy of the hydrology LSTM on CAMELS-US (4 basins): NSE per basin
//! on the held-out year 2002, trained on 2000-01-01..2001-09-30 with early
//! stopping on 2001-10-01..2001-12-31, from forcings and static attributes
//! only, beside a day-of-year climatology of the training days; in tch and
//! in TensorFlow (the SavedModel, gradients all-reduced by Deep RC), each
//! data-parallel over thread ranks, one run per seed. Rows go to
//! `docs/results/camels.csv`
//! (`framework,seed,gauge,nse,nse_climatology,epochs,hidden,seq_len,batch,lr,loss,forget_bias,steps,seconds`;
//! a rerun replaces the rows of the (framework, seed) pairs it ran), a
//! `median` row per run, and with several seeds the NSE of the mean of
//! their predictions (seed `ensembleN`); hydrographs and learning curves
//! to `out/camels/`.
//!
//! ```text
//! source scripts/env.sh
//! cargo run --release -p deeprc-benches --features tch,tensorflow --bin camels_accuracy -- \
//!     [--frameworks tch,tensorflow] [--seeds 7] [--ranks 2] [--epochs 30] [--hidden 256] \
//!     [--seq-len 270] [--batch 32] [--lr 1e-3] [--loss nse|mse] [--forget-bias 0] \
//!     [--csv docs/results/camels.csv]
//! camels_accuracy --ensemble-of out/camels/tch-7,out/camels/tch-8   # from earlier runs
//! ```
//!
//! The protocol and the model are `deeprc_examples::hydrology` (the same
//! function the main job runs as a pilot task).

use deeprc_comm::{local, Communicator};
use deeprc_examples::hydrology::{self, Framework, HydroLoss, HydroOptions};
use deeprc_examples::plot::{line_chart, Line};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

type Error = Box<dyn std::error::Error>;

struct Args {
    frameworks: Vec<Framework>,
    seeds: Vec<u64>,
    ranks: usize,
    opts: HydroOptions,
    csv: PathBuf,
    out: PathBuf,
}

fn parse() -> Result<Args, Error> {
    let mut a = Args {
        frameworks: vec![Framework::Tch, Framework::TensorFlow],
        seeds: vec![7],
        ranks: 2,
        opts: HydroOptions {
            batch_size: 32,
            ..HydroOptions::default()
        },
        csv: PathBuf::from("docs/results/camels.csv"),
        out: PathBuf::from("out/camels"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args
            .get(i + 1)
            .ok_or_else(|| format!("{} takes a value", args[i]))?;
        match args[i].as_str() {
            "--frameworks" => {
                a.frameworks = v
                    .split(',')
                    .map(|f| match f {
                        "tch" => Ok(Framework::Tch),
                        "tensorflow" | "tf" => Ok(Framework::TensorFlow),
                        other => Err(format!("unknown framework {other} (tch, tensorflow)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--seeds" => a.seeds = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--ranks" => a.ranks = v.parse()?,
            "--epochs" => a.opts.epochs = v.parse()?,
            "--hidden" => a.opts.hidden = v.parse()?,
            "--seq-len" => a.opts.seq_len = v.parse()?,
            "--batch" => a.opts.batch_size = v.parse()?,
            "--lr" => a.opts.lr = v.parse()?,
            "--dropout" => a.opts.dropout = v.parse()?,
            "--forget-bias" => a.opts.forget_bias = v.parse()?,
            "--loss" => {
                a.opts.loss = match v.as_str() {
                    "nse" => HydroLoss::NseStar,
                    "mse" => HydroLoss::Mse,
                    other => return Err(format!("--loss nse|mse, not {other}").into()),
                }
            }
            "--csv" => a.csv = PathBuf::from(v),
            "--out" => a.out = PathBuf::from(v),
            other => return Err(format!("unknown argument {other}").into()),
        }
        i += 2;
    }
    if a.ranks == 0 {
        return Err("--ranks must be at least 1".into());
    }
    Ok(a)
}

const HEADER: &str = "framework,seed,gauge,nse,nse_climatology,epochs,hidden,seq_len,batch,lr,loss,forget_bias,steps,seconds";

/// Replaces the rows of each (framework, seed) of `rows` in the CSV.
fn merge_csv(path: &Path, rows: &[String]) -> Result<(), Error> {
    let key = |l: &str| l.split(',').take(3).collect::<Vec<_>>().join(",");
    let run = |l: &str| l.split(',').take(2).collect::<Vec<_>>().join(",");
    let replaced: Vec<String> = rows.iter().map(|r| run(r)).collect();
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(old) = std::fs::read_to_string(path) {
        for l in old.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            if !replaced.contains(&run(l)) {
                all.insert(key(l), l.to_string());
            }
        }
    }
    for r in rows {
        all.insert(key(r), r.clone());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut s = format!("{HEADER}\n");
    for l in all.values() {
        s.push_str(l);
        s.push('\n');
    }
    std::fs::write(path, s)?;
    Ok(())
}

/// NSE per basin of the mean of the members' predictions (Kratzert et
/// al. report such ensembles): the members are the rank-0 prediction
/// tables of one framework's seeds, sorted alike by (gauge, date).
fn ensemble_nse(members: &[deeprc_frame::Table]) -> Result<Vec<(String, f64)>, Error> {
    let gauges = members[0].column_as::<String>("gauge")?;
    let observed = members[0].column_as::<f64>("observed")?;
    let mut mean = vec![0.0; observed.len()];
    for m in members {
        let p = m.column_as::<f64>("predicted")?;
        if p.len() != mean.len() || m.column_as::<String>("gauge")? != gauges {
            return Err("the seeds predicted different test days".into());
        }
        for (acc, v) in mean.iter_mut().zip(p) {
            *acc += v.unwrap_or(f64::NAN) / members.len() as f64;
        }
    }
    let mut by_gauge: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for ((g, o), p) in gauges.into_iter().zip(observed).zip(mean) {
        if let (Some(g), Some(o)) = (g, o) {
            by_gauge.entry(g).or_default().push((o, p));
        }
    }
    Ok(by_gauge
        .into_iter()
        .map(|(g, v)| {
            let mean_o = v.iter().map(|x| x.0).sum::<f64>() / v.len() as f64;
            let sse: f64 = v.iter().map(|(o, p)| (o - p).powi(2)).sum();
            let sst: f64 = v.iter().map(|(o, _)| (o - mean_o).powi(2)).sum();
            (g, 1.0 - sse / sst)
        })
        .collect())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("camels_accuracy: {e}");
        std::process::exit(1);
    }
}

/// `--ensemble-of DIR,DIR,..`: the NSE of the mean of the predictions of
/// earlier runs (their `predictions.parquet`), without training.
fn ensemble_of(dirs: &str) -> Result<(), Error> {
    let members: Vec<deeprc_frame::Table> = dirs
        .split(',')
        .map(|d| deeprc_frame::io::read_parquet(Path::new(d).join("predictions.parquet")))
        .collect::<Result<_, _>>()?;
    for (g, n) in ensemble_nse(&members)? {
        println!("ensemble of {} runs {g}: NSE {n:.4}", members.len());
    }
    Ok(())
}

fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--ensemble-of") {
        return ensemble_of(args.get(i + 1).ok_or("--ensemble-of takes DIR,DIR,..")?);
    }
    let a = parse()?;
    let data = deeprc_frame::io::data_dir();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    tch::set_num_threads((cpus / a.ranks).max(1) as i32);
    println!(
        "CAMELS-US, 4 basins; {} thread ranks; seq {} days, {} cells, batch {}, lr {} (schedule 1, 1/2, 1/10 by thirds), {} epochs, loss {:?}, forget bias {}",
        a.ranks, a.opts.seq_len, a.opts.hidden, a.opts.batch_size, a.opts.lr, a.opts.epochs, a.opts.loss, a.opts.forget_bias
    );
    let mut rows = Vec::new();
    for &fw in &a.frameworks {
        let mut members: Vec<deeprc_frame::Table> = Vec::new();
        let mut total_seconds = 0.0;
        for &seed in &a.seeds {
            let opts = HydroOptions {
                framework: fw,
                seed,
                progress: true,
                ..a.opts.clone()
            };
            let t = Instant::now();
            let mut reports = local::launch(a.ranks, |c| {
                hydrology::run(Arc::new(c) as Arc<dyn Communicator>, &data, &opts)
            })?;
            let seconds = t.elapsed().as_secs_f64();
            total_seconds += seconds;
            let r = reports.remove(0);
            let gauges = r.nse.column_as::<String>("gauge")?;
            let nse = r.nse.column_as::<f64>("nse")?;
            let clim = r.nse.column_as::<f64>("nse_climatology")?;
            let row = |g: &str, n: f64, c: f64| {
                format!(
                    "{fw},{seed},{g},{n:.4},{c:.4},{},{},{},{},{},{},{},{},{seconds:.1}",
                    opts.epochs,
                    opts.hidden,
                    opts.seq_len,
                    opts.batch_size,
                    opts.lr,
                    match opts.loss {
                        HydroLoss::NseStar => "nse_star",
                        HydroLoss::Mse => "mse",
                    },
                    opts.forget_bias,
                    r.trained.steps
                )
            };
            for ((g, n), c) in gauges.iter().zip(&nse).zip(&clim) {
                let (g, n, c) = (
                    g.clone().unwrap_or_default(),
                    n.unwrap_or(f64::NAN),
                    c.unwrap_or(f64::NAN),
                );
                println!("  {fw} seed {seed} {g}: NSE {n:.3} (climatology {c:.3})");
                rows.push(row(&g, n, c));
            }
            println!(
                "  {fw} seed {seed}: median NSE {:.3} (climatology {:.3}), {} steps, {seconds:.0} s",
                r.median_nse, r.median_climatology, r.trained.steps
            );
            rows.push(row("median", r.median_nse, r.median_climatology));
            let dir = a.out.join(format!("{fw}-{seed}"));
            if let Some(p) = &r.predictions {
                deeprc_examples::report::hydrology_outputs(&dir, p, &r.nse, &fw.to_string())?;
            }
            let curve = &r.trained.curve;
            line_chart(
                &dir.join("loss.png"),
                &format!("hydrology LSTM ({fw}, seed {seed}): learning curve"),
                ("epoch", "loss (normalised)"),
                &[
                    Line {
                        label: "train loss",
                        points: curve.iter().map(|c| (c.0 as f64, c.1)).collect(),
                    },
                    Line {
                        label: "validation MSE",
                        points: curve.iter().map(|c| (c.0 as f64, c.2)).collect(),
                    },
                ],
                true,
            )?;
            if let Some(p) = &r.predictions {
                members.push(p.clone());
            }
            merge_csv(&a.csv, &rows)?;
        }
        if members.len() > 1 {
            let nse = ensemble_nse(&members)?;
            let mut vals: Vec<f64> = nse.iter().map(|x| x.1).collect();
            vals.sort_by(f64::total_cmp);
            let median = match vals.len() {
                0 => f64::NAN,
                n if n % 2 == 1 => vals[n / 2],
                n => (vals[n / 2 - 1] + vals[n / 2]) / 2.0,
            };
            let o = &a.opts;
            let loss = match o.loss {
                HydroLoss::NseStar => "nse_star",
                HydroLoss::Mse => "mse",
            };
            for (g, n) in nse
                .iter()
                .map(|(g, n)| (g.as_str(), *n))
                .chain([("median", median)])
            {
                println!("  {fw} ensemble of {} seeds {g}: NSE {n:.3}", members.len());
                rows.push(format!(
                    "{fw},ensemble{},{g},{n:.4},,{},{},{},{},{},{loss},{},,{total_seconds:.1}",
                    members.len(),
                    o.epochs,
                    o.hidden,
                    o.seq_len,
                    o.batch_size,
                    o.lr,
                    o.forget_bias
                ));
            }
            merge_csv(&a.csv, &rows)?;
        }
    }
    println!("rows in {}", a.csv.display());
    Ok(())
}
