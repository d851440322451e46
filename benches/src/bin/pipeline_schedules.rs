//! The forecasting pipelines (one per model: training on R ranks, then the
//! paper's prediction phase of P one-rank tasks) run three ways on the
//! same machine and the same work (issue 9):
//!
//! - `concurrent`: every pipeline submitted at once to one local pilot,
//!   which packs the tasks onto its cores;
//! - `sequential`: the same pipelines under one pilot, one after another
//!   (a pipeline's prediction tasks still run side by side);
//! - `separate`: one bare-metal process per pipeline, all started at once
//!   (as a user's shell script of background jobs would), each training on
//!   R thread ranks and then predicting its P parts one after another.
//!
//! Printed and written to `--out` (`schedules.md`, `schedules.csv`): the
//! total time, the CPU seconds and core utilisation (the operating
//! system's `getrusage`: this process for the pilot modes, the waited-for
//! children for `separate`), the pilot's own utilisation figures, and
//! whether every mode gave each model the same test MSE. Timelines:
//! `<out>/<mode>/trace.json` (the pilot's Chrome trace; for `separate`,
//! one built from the processes' reported phases), for ui.perfetto.dev.
//!
//! ```text
//! source scripts/env.sh
//! cargo run --release -p deeprc-benches --features tch --bin pipeline_schedules -- \
//!     [--models all|NLinear,...] [--ranks 1] [--steps 100] [--parts 10] [--cores N] \
//!     [--modes concurrent,sequential,separate] [--train-first] [--out out/schedules]
//! ```
//!
//! `--train-first` gives the training tasks a higher priority than the
//! prediction tasks under the pilot, so that every training starts before
//! any prediction task takes a core.

use deeprc_comm::local;
use deeprc_examples::pipelines::{self, ForecastTask, TrainSummary};
use deeprc_examples::report::{self, markdown_table};
use deeprc_models::{MODELS, PAPER_MODELS};
use deeprc_pilot::{PilotDescription, Session, Task, TaskDescription, TaskState};
use nix::sys::resource::{getrusage, UsageWho};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

type Error = Box<dyn std::error::Error>;

const MODES: [&str; 3] = ["concurrent", "sequential", "separate"];

#[derive(Debug, Clone)]
struct Args {
    models: Vec<String>,
    ranks: usize,
    steps: u64,
    parts: usize,
    cores: usize,
    modes: Vec<String>,
    out: PathBuf,
    /// Training tasks at a higher priority than prediction tasks (the pilot
    /// modes), so that the long trainings start first.
    train_first: bool,
    /// Internal: run one model's pipeline on bare metal and print its
    /// phases as one JSON line (the `separate` mode's child processes).
    one: Option<String>,
}

fn parse() -> Result<Args, Error> {
    let mut a = Args {
        models: PAPER_MODELS.iter().map(|s| s.to_string()).collect(),
        ranks: 1,
        steps: 100,
        parts: 10,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        modes: MODES.iter().map(|s| s.to_string()).collect(),
        out: PathBuf::from("out/schedules"),
        train_first: false,
        one: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = || {
            v.get(i + 1)
                .cloned()
                .ok_or_else(|| format!("{} takes a value", v[i]))
        };
        match v[i].as_str() {
            "--models" => {
                let m = val()?;
                if m != "all" {
                    a.models = m.split(',').map(str::to_string).collect();
                }
            }
            "--ranks" => a.ranks = val()?.parse()?,
            "--steps" => a.steps = val()?.parse()?,
            "--parts" => a.parts = val()?.parse()?,
            "--cores" => a.cores = val()?.parse()?,
            "--modes" => a.modes = val()?.split(',').map(str::to_string).collect(),
            "--out" => a.out = PathBuf::from(val()?),
            "--one" => a.one = Some(val()?),
            "--train-first" => {
                a.train_first = true;
                i -= 1;
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
        i += 2;
    }
    if a.ranks == 0 || a.parts == 0 || a.steps == 0 || a.cores == 0 {
        return Err("--ranks, --parts, --steps and --cores must be at least 1".into());
    }
    if let Some(m) = a.modes.iter().find(|m| !MODES.contains(&m.as_str())) {
        return Err(format!("unknown mode {m}; the modes are {}", MODES.join(", ")).into());
    }
    if let Some(m) = a.models.iter().find(|m| !MODELS.iter().any(|k| k == m)) {
        return Err(format!("unknown model {m}; the models are {}", MODELS.join(", ")).into());
    }
    Ok(a)
}

/// The same arguments as the main job's pipelines (small models, look-back
/// and horizon 96, seed 1), written under `dir`.
fn task(a: &Args, model: &str, dir: &Path) -> ForecastTask {
    ForecastTask {
        data: deeprc_frame::io::data_dir(),
        model: model.to_string(),
        input_size: 96,
        horizon: 96,
        small: true,
        max_steps: a.steps,
        val_every: (a.steps / 4).max(1),
        batch_size: 32,
        lr: 1e-3,
        seed: 1,
        model_file: dir.join("models").join(format!("{model}.ot")),
        part: 0,
        parts: a.parts,
        predictions: PathBuf::new(),
    }
}

fn part(t: &ForecastTask, dir: &Path, p: usize) -> ForecastTask {
    let mut pa = t.clone();
    pa.part = p;
    pa.predictions = dir
        .join("predictions")
        .join(format!("{}-{p:02}.parquet", t.model));
    pa
}

/// CPU seconds (user + system) of this process, or of its waited-for
/// children.
fn cpu_seconds(who: UsageWho) -> f64 {
    getrusage(who).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 * 1e-6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What one mode measured.
struct Outcome {
    mode: String,
    seconds: f64,
    cpu_s: f64,
    /// The pilot's busy core-seconds over its core-seconds (pilot modes).
    reserved_utilisation: Option<f64>,
    /// Test MSE per model (`None`: the pipeline failed).
    mse: BTreeMap<String, Option<f64>>,
    failed: Vec<String>,
}

fn run_pilot(a: &Args, mode: &str, registry: deeprc_pilot::Registry) -> Result<Outcome, Error> {
    let dir = a.out.join(mode);
    let session = Session::builder()
        .registry(registry)
        .profile_dir(&dir)
        .build()?;
    let pilot = session
        .pilot_manager()
        .submit(PilotDescription::local().cores(a.cores.max(a.ranks)))?;
    let tm = session.task_manager();
    tm.add_pilot(&pilot)?;
    let cpu0 = cpu_seconds(UsageWho::RUSAGE_SELF);
    let t0 = Instant::now();
    let bar = indicatif::ProgressBar::new(a.models.len() as u64);
    bar.set_prefix(mode.to_string());
    let mut trains: Vec<(String, Task, Vec<Task>)> = Vec::new();
    for m in &a.models {
        let t = task(a, m, &dir);
        let train = tm.submit(
            TaskDescription::function("forecast_train")
                .name(format!("train {m}"))
                .ranks(a.ranks)
                .priority(i32::from(a.train_first))
                .try_args(&t)?,
        )?;
        let mut predicts = Vec::new();
        for p in 0..a.parts {
            predicts.push(
                tm.submit(
                    TaskDescription::function("forecast_predict")
                        .name(format!("predict {m} {p}"))
                        .depends_on(&train)
                        .try_args(&part(&t, &dir, p))?,
                )?,
            );
        }
        if mode == "sequential" {
            train.wait();
            tm.wait(&predicts);
            bar.inc(1);
        }
        trains.push((m.clone(), train, predicts));
    }
    tm.wait_all();
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(UsageWho::RUSAGE_SELF) - cpu0;
    let mut mse = BTreeMap::new();
    let mut failed = Vec::new();
    for (m, train, predicts) in &trains {
        let r: Option<TrainSummary> = train.result().ok();
        let ok = r.is_some() && predicts.iter().all(|p| p.state() == TaskState::Done);
        if !ok {
            failed.push(format!(
                "{m}: {}",
                train
                    .reason()
                    .map_or("a prediction task failed".into(), |r| r
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string())
            ));
        }
        mse.insert(m.clone(), r.filter(|_| ok).map(|s| s.mse));
    }
    let summary = session.close()?;
    Ok(Outcome {
        mode: mode.to_string(),
        seconds,
        cpu_s,
        reserved_utilisation: Some(summary.core_utilization),
        mse,
        failed,
    })
}

/// The `separate` mode's child: one pipeline on bare metal; prints
/// `{"model", "mse", "start_us", "trained_us", "end_us"}`.
fn run_one(a: &Args, model: &str) -> Result<(), Error> {
    deeprc_bridge::tch::tch_crate::set_num_threads(1);
    let dir = a.out.join("separate");
    let start_us = now_us();
    let t = task(a, model, &dir);
    let summary =
        local::launch(a.ranks, |c| pipelines::forecast_train_task(Arc::new(c), &t))?.remove(0);
    let trained_us = now_us();
    for p in 0..a.parts {
        pipelines::forecast_predict_task(&part(&t, &dir, p))?;
    }
    println!(
        "{}",
        serde_json::json!({
            "model": model,
            "mse": summary.mse,
            "start_us": start_us,
            "trained_us": trained_us,
            "end_us": now_us(),
        })
    );
    Ok(())
}

fn run_separate(a: &Args) -> Result<Outcome, Error> {
    let dir = a.out.join("separate");
    report::ensure_dir(&dir)?;
    let exe = std::env::current_exe()?;
    let cpu0 = cpu_seconds(UsageWho::RUSAGE_CHILDREN);
    let t0 = Instant::now();
    let mut children = Vec::new();
    for m in &a.models {
        let child = Command::new(&exe)
            .args(["--one", m, "--ranks", &a.ranks.to_string()])
            .args([
                "--steps",
                &a.steps.to_string(),
                "--parts",
                &a.parts.to_string(),
            ])
            .arg("--out")
            .arg(&a.out)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        children.push((m.clone(), child));
    }
    let mut mse = BTreeMap::new();
    let mut failed = Vec::new();
    let mut events = Vec::new();
    for (m, child) in children {
        let out = child.wait_with_output()?;
        let line = String::from_utf8_lossy(&out.stdout);
        let record: Option<serde_json::Value> = line
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok());
        match (out.status.success(), record) {
            (true, Some(r)) => {
                mse.insert(m.clone(), r["mse"].as_f64());
                let us = |k: &str| r[k].as_u64().unwrap_or(0);
                for (name, from, to) in [
                    (format!("train {m}"), us("start_us"), us("trained_us")),
                    (format!("predict {m}"), us("trained_us"), us("end_us")),
                ] {
                    events.push(serde_json::json!({
                        "name": name, "ph": "X", "pid": 1, "tid": m,
                        "ts": from, "dur": to.saturating_sub(from),
                    }));
                }
            }
            (ok, _) => {
                let err = String::from_utf8_lossy(&out.stderr);
                failed.push(format!(
                    "{m}: exit {:?}{}: {}",
                    out.status.code(),
                    if ok { ", no result line" } else { "" },
                    err.lines().last().unwrap_or("")
                ));
                mse.insert(m.clone(), None);
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(UsageWho::RUSAGE_CHILDREN) - cpu0;
    report::write(
        &dir.join("trace.json"),
        &serde_json::json!({ "traceEvents": events }).to_string(),
    )?;
    Ok(Outcome {
        mode: "separate".into(),
        seconds,
        cpu_s,
        reserved_utilisation: None,
        mse,
        failed,
    })
}

fn main() {
    let registry = pipelines::registry();
    deeprc_pilot::worker::run_if_worker(&registry);
    if let Err(e) = run(registry) {
        eprintln!("pipeline_schedules: {e}");
        std::process::exit(1);
    }
}

fn run(registry: deeprc_pilot::Registry) -> Result<(), Error> {
    let a = parse()?;
    if let Some(m) = &a.one {
        return run_one(&a, m);
    }
    let data = deeprc_frame::io::data_dir();
    if !data.join("ETT-small/ETTh1.csv").exists() {
        return Err(format!(
            "missing {} (set DEEPRC_DATA)",
            data.join("ETT-small/ETTh1.csv").display()
        )
        .into());
    }
    deeprc_bridge::tch::tch_crate::set_num_threads(1);
    report::ensure_dir(&a.out)?;
    println!(
        "{} forecasting pipelines ({} training steps on {} rank(s), {} prediction tasks each) on {} core(s)",
        a.models.len(),
        a.steps,
        a.ranks,
        a.parts,
        a.cores
    );
    let mut outcomes = Vec::new();
    for mode in &a.modes {
        let o = if mode == "separate" {
            run_separate(&a)?
        } else {
            run_pilot(&a, mode, registry.clone())?
        };
        println!(
            "{:<11} {:>8.1} s  CPU {:>8.1} s  utilisation {:>5.1}%{}",
            o.mode,
            o.seconds,
            o.cpu_s,
            100.0 * o.cpu_s / (a.cores as f64 * o.seconds).max(1e-9),
            o.failed
                .iter()
                .map(|f| format!("\n  failed: {f}"))
                .collect::<String>()
        );
        outcomes.push(o);
    }
    write_report(&a, &outcomes)
}

fn write_report(a: &Args, outcomes: &[Outcome]) -> Result<(), Error> {
    let first = outcomes.first().map(|o| o.seconds).unwrap_or(f64::NAN);
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.mode.clone(),
                format!("{:.1}", o.seconds),
                format!("{:.2}", o.seconds / first),
                format!("{:.1}", o.cpu_s),
                format!(
                    "{:.1}",
                    100.0 * o.cpu_s / (a.cores as f64 * o.seconds).max(1e-9)
                ),
                o.reserved_utilisation
                    .map_or("-".into(), |u| format!("{:.1}", 100.0 * u)),
                o.failed.len().to_string(),
            ]
        })
        .collect();
    let header = [
        "mode",
        "total (s)",
        "vs first mode",
        "CPU (s)",
        "CPU utilisation (%)",
        "pilot's reserved-core utilisation (%)",
        "failed pipelines",
    ];
    let mut md = format!(
        "# {} forecasting pipelines, three schedules\n\n{} training steps on {} rank(s) and {} prediction tasks per pipeline, {} core(s){}.\n\n",
        a.models.len(),
        a.steps,
        a.ranks,
        a.parts,
        a.cores,
        if a.train_first {
            ", training tasks at a higher priority"
        } else {
            ""
        }
    );
    md.push_str(&markdown_table(&header, &rows));
    // The same seed and data: every mode must give each model the same MSE.
    let mut worst = 0f64;
    let mut missing = Vec::new();
    for m in &a.models {
        let v: Vec<Option<f64>> = outcomes
            .iter()
            .map(|o| o.mse.get(m).copied().flatten())
            .collect();
        if v.iter().any(Option::is_none) {
            missing.push(m.clone());
            continue;
        }
        let v: Vec<f64> = v.into_iter().flatten().collect();
        for x in &v {
            worst = worst.max((x - v[0]).abs());
        }
    }
    let same = format!(
        "\nLargest difference in a model's test MSE between the modes: {worst:.3e}{}.\n",
        if missing.is_empty() {
            String::new()
        } else {
            format!(" (not compared, failed somewhere: {})", missing.join(", "))
        }
    );
    print!("{same}");
    md.push_str(&same);
    md.push_str("\nTimelines: `<mode>/trace.json` (ui.perfetto.dev).\n");
    report::write(&a.out.join("schedules.md"), &md)?;
    report::write(&a.out.join("schedules.csv"), &report::csv(&header, &rows))?;
    println!("wrote {}", a.out.join("schedules.md").display());
    Ok(())
}
