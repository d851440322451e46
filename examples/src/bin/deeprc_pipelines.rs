//! The main job: the hydrology and forecasting pipelines end to end, as
//! multi-rank function tasks of one local pilot, then the same functions on
//! bare metal, and a report of tables and plots.
//!
//! ```text
//! source scripts/env.sh
//! cargo run --profile main -p deeprc-examples --features tch --bin deeprc_pipelines -- \
//!     [--out out] [--ranks 2] [--paper] [--models NLinear,...] [--steps 100] \
//!     [--hydro-epochs 30] [--frameworks tch,tensorflow] [--parts 10] [--no-bare-metal]
//! ```
//!
//! The defaults (embedded: one local pilot, thread ranks, small models, a
//! few hundred steps) finish in minutes on 2 cores; `--paper` runs the
//! published sizes and step budgets (hours on a CPU).
//! Outputs in `--out`: `report.md` (start there), `*.csv`, `plots/*.png`,
//! `hydrology/` (predictions Parquet, NSE, hydrographs), `pilot/` (the
//! pilot's profile and `trace.json` for ui.perfetto.dev).

use deeprc_comm::{local, Communicator};
use deeprc_examples::pipelines::{self, ForecastTask, HydroSummary, HydroTask, TrainSummary};
use deeprc_examples::report::{self, markdown_table};
use deeprc_examples::PipelineError;
use deeprc_models::PAPER_MODELS;
use deeprc_pilot::{PilotDescription, Session, Task, TaskDescription, TaskState};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

#[derive(Debug, Clone)]
struct Args {
    out: PathBuf,
    ranks: usize,
    paper: bool,
    models: Vec<String>,
    steps: u64,
    hydro_epochs: usize,
    hydro_batch: usize,
    hydro_lr: f64,
    frameworks: Vec<String>,
    parts: usize,
    bare_metal: bool,
}

fn parse() -> Result<Args, Error> {
    let mut a = Args {
        out: PathBuf::from("out"),
        ranks: 2,
        paper: false,
        models: PAPER_MODELS.iter().map(|s| s.to_string()).collect(),
        steps: 100,
        hydro_epochs: 30,
        hydro_batch: 32,
        hydro_lr: 5e-3,
        frameworks: vec!["tch".into(), "tensorflow".into()],
        parts: 10,
        bare_metal: true,
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
            "--out" => a.out = PathBuf::from(val()?),
            "--ranks" => a.ranks = val()?.parse()?,
            "--models" => {
                a.models = val()?
                    .split(',')
                    .filter(|m| !m.is_empty() && *m != "none")
                    .map(str::to_string)
                    .collect()
            }
            "--steps" => a.steps = val()?.parse()?,
            "--hydro-epochs" => a.hydro_epochs = val()?.parse()?,
            "--hydro-batch" => a.hydro_batch = val()?.parse()?,
            "--hydro-lr" => a.hydro_lr = val()?.parse()?,
            "--frameworks" => {
                a.frameworks = val()?
                    .split(',')
                    .filter(|f| !f.is_empty() && *f != "none")
                    .map(str::to_string)
                    .collect()
            }
            "--parts" => a.parts = val()?.parse()?,
            "--paper" => {
                a.paper = true;
                a.steps = 1000;
                a.hydro_epochs = 30;
                i -= 1;
            }
            "--no-bare-metal" => {
                a.bare_metal = false;
                i -= 1;
            }
            other => {
                return Err(format!(
                    "unknown argument {other} (see the doc at the top of deeprc_pipelines.rs)"
                )
                .into())
            }
        }
        i += 2;
    }
    if a.ranks == 0 || a.parts == 0 {
        return Err("--ranks and --parts must be at least 1".into());
    }
    Ok(a)
}

fn forecast_task(a: &Args, data: &Path, model: &str) -> ForecastTask {
    let lookback = 96;
    ForecastTask {
        data: data.to_path_buf(),
        model: model.to_string(),
        input_size: lookback,
        horizon: 96,
        small: !a.paper,
        max_steps: a.steps,
        val_every: (a.steps / 4).max(1),
        batch_size: 32,
        lr: if matches!(
            model,
            "PatchTST" | "TimesNet" | "Autoformer" | "VanillaTransformer"
        ) && a.paper
        {
            1e-4
        } else {
            1e-3
        },
        seed: 1,
        model_file: a.out.join("models").join(format!("{model}.ot")),
        part: 0,
        parts: a.parts,
        predictions: PathBuf::new(),
    }
}

fn hydro_task(a: &Args, data: &Path, out: &Path, framework: &str) -> HydroTask {
    HydroTask {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        seq_len: 270,
        hidden: if a.paper { 256 } else { 64 },
        epochs: a.hydro_epochs,
        // 4 basins x 2 years give ~1,500 training windows: Kratzert's batch
        // of 256 would make 6 steps an epoch.
        batch_size: a.hydro_batch,
        lr: a.hydro_lr,
        framework: framework.to_string(),
        seed: 7,
    }
}

/// A model's bare-metal run: (model, its training summary and seconds,
/// the seconds of its prediction parts one after another).
type BareTrain = (String, Option<(TrainSummary, f64)>, f64);

/// One pilot task's times, in seconds.
#[derive(Debug, Clone)]
struct TaskTimes {
    name: String,
    state: TaskState,
    reason: String,
    /// The payload (exec_start -> exec_end).
    payload: f64,
    /// Launch + completion overhead (executing -> exec_start, exec_end -> finished).
    overhead: f64,
    /// Waiting for slots and dependencies.
    queued: f64,
    /// The task's CPU seconds as the pilot measured them (thread ranks:
    /// their thread clocks, which miss libtorch's own intra-op threads).
    cpu_s: Option<f64>,
    /// Its peak RSS in MiB (for thread ranks the host's, not separable).
    max_rss_mib: Option<f64>,
}

fn times(name: &str, t: &Task) -> TaskTimes {
    let ts = t.timestamps();
    let s = |a: u64, b: u64| {
        if b >= a && a > 0 {
            (b - a) as f64 * 1e-9
        } else {
            0.0
        }
    };
    TaskTimes {
        name: name.to_string(),
        state: t.state(),
        reason: t.reason().map(|r| r.to_string()).unwrap_or_default(),
        payload: s(ts.exec_start, ts.exec_end),
        overhead: s(ts.executing, ts.exec_start) + s(ts.exec_end, ts.finished),
        queued: s(ts.scheduling, ts.executing),
        cpu_s: t.resources().map(|u| u.cpu_s()),
        max_rss_mib: t.resources().map(|u| u.max_rss_mib()),
    }
}

fn main() {
    let registry = pipelines::registry();
    deeprc_pilot::worker::run_if_worker(&registry);
    if let Err(e) = run(registry) {
        eprintln!("deeprc_pipelines: {e}");
        std::process::exit(1);
    }
}

fn run(registry: deeprc_pilot::Registry) -> Result<(), Error> {
    let a = parse()?;
    let data = deeprc_frame::io::data_dir();
    for need in ["ETT-small/ETTh1.csv", "camels_us_4basins/daymet"] {
        if !data.join(need).exists() {
            return Err(format!(
                "missing {} (set DEEPRC_DATA to the folder with ETT-small/ETTh1.csv and camels_us_4basins/)",
                data.join(need).display()
            )
            .into());
        }
    }
    let out = a.out.clone();
    for d in ["plots", "models", "predictions", "hydrology", "bare_metal"] {
        report::ensure_dir(&out.join(d))?;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    deeprc_bridge::tch::tch_crate::set_num_threads(1);
    let started = Instant::now();

    // ---- under the pilot -------------------------------------------------
    println!(
        "== pilot: hydrology + {} forecasting pipelines, {} rank(s) each, on {cpus} core(s)",
        a.models.len(),
        a.ranks
    );
    let session = Session::builder()
        .registry(registry)
        .profile_dir(out.join("pilot"))
        .build()?;
    let pilot_cores = cpus.max(a.ranks);
    let pilot = session
        .pilot_manager()
        .submit(PilotDescription::local().cores(pilot_cores))?;
    let tm = session.task_manager();
    tm.add_pilot(&pilot)?;
    let t_pilot = Instant::now();
    let mut hydros = Vec::new();
    for fw in &a.frameworks {
        let args = hydro_task(&a, &data, &out.join("hydrology").join(fw), fw);
        hydros.push((
            fw.clone(),
            tm.submit(
                TaskDescription::function("hydrology")
                    .name(format!("hydrology {fw}"))
                    .ranks(a.ranks)
                    .try_args(&args)?,
            )?,
        ));
    }
    let mut trains = Vec::new();
    let mut predicts = Vec::new();
    for m in &a.models {
        let args = forecast_task(&a, &data, m);
        let train = tm.submit(
            TaskDescription::function("forecast_train")
                .name(format!("train {m}"))
                .ranks(a.ranks)
                .try_args(&args)?,
        )?;
        for p in 0..a.parts {
            let mut pa = args.clone();
            pa.part = p;
            pa.predictions = out.join("predictions").join(format!("{m}-{p:02}.parquet"));
            predicts.push((
                m.clone(),
                tm.submit(
                    TaskDescription::function("forecast_predict")
                        .name(format!("predict {m} {p}"))
                        .depends_on(&train)
                        .try_args(&pa)?,
                )?,
            ));
        }
        trains.push((m.clone(), train));
    }
    let total = hydros.len() + trains.len() + predicts.len();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} tasks {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix("pilot");
    while !tm.wait_all_timeout(Duration::from_millis(500)) {
        bar.set_position(tm.counts().1);
    }
    bar.finish_and_clear();
    let pilot_seconds = t_pilot.elapsed().as_secs_f64();
    let mut task_times: Vec<TaskTimes> = hydros
        .iter()
        .map(|(fw, t)| times(&format!("hydrology {fw}"), t))
        .collect();
    task_times.extend(trains.iter().map(|(m, t)| times(&format!("train {m}"), t)));
    task_times.extend(
        predicts
            .iter()
            .map(|(m, t)| times(&format!("predict {m}"), t)),
    );
    let hydro_pilot: Vec<(String, Option<HydroSummary>)> = hydros
        .iter()
        .map(|(fw, t)| (fw.clone(), t.result().ok()))
        .collect();
    let train_pilot: Vec<(String, Option<TrainSummary>)> = trains
        .iter()
        .map(|(m, t)| (m.clone(), t.result().ok()))
        .collect();
    for t in &task_times {
        if t.state != TaskState::Done {
            println!("  {} {}: {}", t.name, t.state, t.reason);
        }
    }
    let summary = session.close()?;
    println!(
        "   {} tasks: {} done, {} failed in {pilot_seconds:.1} s",
        summary.tasks, summary.done, summary.failed
    );

    // ---- the prediction phase's metrics, by the frame -------------------
    let files: Vec<PathBuf> = predicts
        .iter()
        .enumerate()
        .filter(|(_, (_, t))| t.state() == TaskState::Done)
        .map(|(k, (m, _))| {
            out.join("predictions")
                .join(format!("{m}-{:02}.parquet", k % a.parts))
        })
        .filter(|f| f.exists())
        .collect();
    let metrics = if files.is_empty() {
        None
    } else {
        Some(
            local::launch(a.ranks, |c| {
                report::forecast_metrics(Arc::new(c) as Arc<dyn Communicator>, &files)
            })?
            .remove(0),
        )
    };

    // ---- bare metal -------------------------------------------------------
    let mut bare_hydro: Vec<(String, Option<(HydroSummary, f64)>)> = Vec::new();
    let mut bare_train: Vec<BareTrain> = Vec::new();
    if a.bare_metal {
        println!(
            "== bare metal: the same functions on {} thread rank(s), one after another",
            a.ranks
        );
        let bare_out = out.join("bare_metal");
        for fw in &a.frameworks {
            let ht = hydro_task(&a, &data, &bare_out.join("hydrology").join(fw), fw);
            let t = Instant::now();
            match local::launch(a.ranks, |c| pipelines::hydrology_task(Arc::new(c), &ht)) {
                Ok(mut r) => {
                    bare_hydro.push((fw.clone(), Some((r.remove(0), t.elapsed().as_secs_f64()))))
                }
                Err(e) => {
                    println!("  hydrology {fw}: {e}");
                    bare_hydro.push((fw.clone(), None));
                }
            }
        }
        for m in &a.models {
            let mut ft = forecast_task(&a, &data, m);
            ft.model_file = bare_out.join(format!("{m}.ot"));
            let t = Instant::now();
            let r = local::launch(a.ranks, |c| {
                pipelines::forecast_train_task(Arc::new(c), &ft)
            });
            let train_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut ok = r.is_ok();
            for p in 0..a.parts {
                let mut pa = ft.clone();
                pa.part = p;
                pa.predictions = bare_out
                    .join("predictions")
                    .join(format!("{m}-{p:02}.parquet"));
                if ok {
                    ok = pipelines::forecast_predict_task(&pa).is_ok();
                }
            }
            let predict_s = t.elapsed().as_secs_f64();
            match r {
                Ok(mut v) => bare_train.push((m.clone(), Some((v.remove(0), train_s)), predict_s)),
                Err(e) => {
                    println!("  {m}: {e}");
                    bare_train.push((m.clone(), None, predict_s));
                }
            }
        }
    }

    write_report(
        &a,
        &out,
        &task_times,
        (pilot_seconds, pilot_cores),
        &hydro_pilot,
        &train_pilot,
        metrics.as_ref(),
        &bare_hydro,
        &bare_train,
    )?;
    println!("== done in {:.1} s", started.elapsed().as_secs_f64());
    println!("   report:      {}", out.join("report.md").display());
    println!("   plots:       {}", out.join("plots").display());
    println!(
        "   hydrology:   {} (hydrographs, predictions)",
        out.join("hydrology").display()
    );
    println!(
        "   pilot trace: {} (open in ui.perfetto.dev)",
        out.join("pilot/trace.json").display()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    a: &Args,
    out: &Path,
    tasks: &[TaskTimes],
    (pilot_seconds, pilot_cores): (f64, usize),
    hydros: &[(String, Option<HydroSummary>)],
    trains: &[(String, Option<TrainSummary>)],
    metrics: Option<&deeprc_frame::Table>,
    bare_hydro: &[(String, Option<(HydroSummary, f64)>)],
    bare_train: &[BareTrain],
) -> Result<(), PipelineError> {
    let f = |v: f64| format!("{v:.4}");
    let mut md = String::from("# Deep RC: the pipelines, end to end\n\n");
    md.push_str(&format!(
        "Settings: {} rank(s) per pipeline (thread ranks of one local pilot), {} models ({}), {} steps, hydrology {} epochs ({}), {} prediction tasks per model.\n\n",
        a.ranks,
        a.models.len(),
        if a.paper { "published sizes" } else { "small variants" },
        a.steps,
        a.hydro_epochs,
        a.frameworks.join(" and "),
        a.parts
    ));

    md.push_str("## Hydrology (CAMELS-US, 4 basins, test year 2002)\n\n");
    for (fw, h) in hydros {
        md.push_str(&format!("### LSTM in {fw}\n\n"));
        let Some(h) = h else {
            md.push_str("The task failed (see the failed tasks below).\n\n");
            continue;
        };
        let bare_of = bare_hydro
            .iter()
            .find(|b| &b.0 == fw)
            .and_then(|b| b.1.as_ref());
        let rows: Vec<Vec<String>> = h
            .basins
            .iter()
            .map(|(g, n, c)| {
                let bare = bare_of
                    .and_then(|(b, _)| b.basins.iter().find(|x| &x.0 == g))
                    .map_or("-".into(), |x| f(x.1));
                vec![g.clone(), f(*n), bare, f(*c)]
            })
            .collect();
        md.push_str(&markdown_table(
            &[
                "gauge",
                "NSE (pilot)",
                "NSE (bare metal)",
                "NSE climatology",
            ],
            &rows,
        ));
        report::write(
            &out.join(format!("hydrology_nse_{fw}.csv")),
            &report::csv(
                &["gauge", "nse_pilot", "nse_bare_metal", "nse_climatology"],
                &rows,
            ),
        )?;
        for (g, why) in &h.dropped {
            md.push_str(&format!("\nBasin {g} left out: {why}.\n"));
        }
        md.push_str(&format!(
            "\nMedian NSE {:.3} (climatology {:.3}); {} rows after preprocessing; windows train/val/test {:?}; {} steps; preprocessing {:.2} s, training {:.1} s. Hydrographs: `hydrology/{fw}/hydrograph_*.png`; predictions: `hydrology/{fw}/predictions.parquet`; learning curve: `plots/hydrology_{fw}_loss.png`.\n\n",
            h.median_nse, h.median_climatology, h.rows, h.windows, h.steps, h.preprocess_seconds, h.train_seconds
        ));
        let curve: Vec<(f64, f64, f64)> = h.curve.iter().map(|c| (c.0 as f64, c.1, c.2)).collect();
        if !curve.is_empty() {
            report::loss_plot(
                &out.join(format!("plots/hydrology_{fw}_loss.png")),
                &format!("hydrology LSTM ({fw}): learning curve"),
                &curve,
            )?;
        }
    }

    md.push_str("## Forecasting (ETTh1, horizon 96, look-back 96, normalised test MSE/MAE over 7 channels)\n\n");
    let mut rows = Vec::new();
    for (m, t) in trains {
        let bare = bare_train
            .iter()
            .find(|b| &b.0 == m)
            .and_then(|b| b.1.as_ref());
        match t {
            Some(t) => {
                rows.push(vec![
                    m.clone(),
                    f(t.mse),
                    f(t.mae),
                    bare.map_or("-".into(), |b| f(b.0.mse)),
                    t.steps.to_string(),
                    t.parameters.to_string(),
                    format!("{:.1}", t.seconds),
                ]);
                let curve: Vec<(f64, f64, f64)> =
                    t.curve.iter().map(|c| (c.0 as f64, c.1, c.2)).collect();
                if !curve.is_empty() {
                    report::loss_plot(
                        &out.join(format!("plots/{m}_loss.png")),
                        &format!("{m}: learning curve"),
                        &curve,
                    )?;
                }
                if let Some((h, y, p)) = &t.example {
                    report::forecast_plot(
                        &out.join(format!("plots/{m}_forecast.png")),
                        m,
                        h,
                        y,
                        p,
                    )?;
                }
            }
            None => rows.push(vec![
                m.clone(),
                "failed".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]),
        }
    }
    md.push_str(&markdown_table(
        &[
            "model",
            "MSE",
            "MAE",
            "MSE (bare metal)",
            "steps",
            "parameters",
            "train s",
        ],
        &rows,
    ));
    report::write(
        &out.join("forecast_test.csv"),
        &report::csv(
            &[
                "model",
                "mse",
                "mae",
                "mse_bare_metal",
                "steps",
                "parameters",
                "seconds",
            ],
            &rows,
        ),
    )?;

    if let Some(mt) = metrics {
        md.push_str("\n### Prediction phase: OT in degrees Celsius, from the prediction tasks' Parquet files (a frame group-by)\n\n");
        let models: Vec<String> = mt
            .column_as::<String>("model")?
            .into_iter()
            .flatten()
            .collect();
        let col = |c: &str| -> Result<Vec<f64>, PipelineError> {
            Ok(mt
                .column_as::<f64>(c)?
                .into_iter()
                .map(|v| v.unwrap_or(f64::NAN))
                .collect())
        };
        let (mse, mae, mape) = (col("mse")?, col("mae")?, col("mape")?);
        let points: Vec<u64> = mt
            .column_as::<u64>("points")?
            .into_iter()
            .map(|v| v.unwrap_or(0))
            .collect();
        let rows: Vec<Vec<String>> = (0..models.len())
            .map(|i| {
                vec![
                    models[i].clone(),
                    f(mse[i]),
                    f(mae[i]),
                    format!("{:.2}", mape[i]),
                    points[i].to_string(),
                ]
            })
            .collect();
        md.push_str(&markdown_table(
            &["model", "MSE (°C²)", "MAE (°C)", "MAPE (%)", "points"],
            &rows,
        ));
        report::write(
            &out.join("forecast_prediction_phase.csv"),
            &report::csv(&["model", "mse", "mae", "mape", "points"], &rows),
        )?;
    }

    md.push_str("\n## Pilot overhead against bare metal\n\n");
    let mut rows = Vec::new();
    let mut add = |t: &TaskTimes, bare: Option<f64>| {
        rows.push(vec![
            t.name.clone(),
            format!("{:.2}", t.queued),
            format!("{:.2}", t.payload),
            format!("{:.2}", t.overhead * 1e3),
            format!("{:.3}", 100.0 * t.overhead / t.payload.max(1e-9)),
            t.cpu_s.map_or("-".into(), |c| format!("{c:.2}")),
            t.max_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
            bare.map_or("-".into(), |b| format!("{b:.2}")),
        ]);
    };
    for t in tasks.iter().filter(|t| !t.name.starts_with("predict")) {
        let bare = if let Some(fw) = t.name.strip_prefix("hydrology ") {
            bare_hydro
                .iter()
                .find(|b| b.0 == fw)
                .and_then(|b| b.1.as_ref().map(|x| x.1))
        } else {
            bare_train
                .iter()
                .find(|b| format!("train {}", b.0) == t.name)
                .and_then(|b| b.1.as_ref().map(|x| x.1))
        };
        add(t, bare);
    }
    let preds: Vec<&TaskTimes> = tasks
        .iter()
        .filter(|t| t.name.starts_with("predict"))
        .collect();
    if !preds.is_empty() {
        let bare: f64 = bare_train.iter().map(|b| b.2).sum();
        let sum = TaskTimes {
            name: format!(
                "{} prediction tasks (sum; peak RSS: the largest)",
                preds.len()
            ),
            state: TaskState::Done,
            reason: String::new(),
            payload: preds.iter().map(|t| t.payload).sum(),
            overhead: preds.iter().map(|t| t.overhead).sum(),
            queued: preds.iter().map(|t| t.queued).sum(),
            cpu_s: preds.iter().map(|t| t.cpu_s).sum(),
            max_rss_mib: preds
                .iter()
                .map(|t| t.max_rss_mib)
                .try_fold(0f64, |m, r| r.map(|r| m.max(r))),
        };
        add(&sum, (!bare_train.is_empty()).then_some(bare));
    }
    md.push_str(&markdown_table(
        &[
            "task",
            "queued (s)",
            "run under the pilot (s)",
            "pilot overhead (ms)",
            "overhead (% of task)",
            "CPU (s)",
            "peak RSS (MiB)",
            "bare metal (s)",
        ],
        &rows,
    ));
    report::write(
        &out.join("overhead.csv"),
        &report::csv(
            &[
                "task",
                "queued_s",
                "pilot_s",
                "overhead_ms",
                "overhead_pct",
                "cpu_s",
                "max_rss_mib",
                "bare_metal_s",
            ],
            &rows,
        ),
    )?;
    md.push_str(&format!(
        "\nOverhead is the pilot's launch (EXECUTING to the function's start, communicator creation included) plus completion (the function's end to DONE), from the task timestamps; the paper reports 3 to 6 s per pipeline. All {} tasks took {pilot_seconds:.1} s under one pilot; the profile and the Chrome trace are in `pilot/`.\n",
        tasks.len()
    ));
    let cpu: f64 = tasks.iter().filter_map(|t| t.cpu_s).sum();
    md.push_str(&format!(
        "\nCore utilisation of the pilot run: {:.1}% ({cpu:.1} CPU seconds of the tasks over {pilot_cores} cores x {pilot_seconds:.1} s). CPU time is the operating system's: for these thread ranks, each rank thread's CPU clock (libtorch's own intra-op threads, if any, are not in it), and the peak RSS is the host process's so far (thread ranks share its memory); see docs/pilot.md, Resource monitoring.\n",
        100.0 * cpu / (pilot_cores as f64 * pilot_seconds).max(1e-9)
    ));
    let failed: Vec<&TaskTimes> = tasks
        .iter()
        .filter(|t| t.state != TaskState::Done)
        .collect();
    if !failed.is_empty() {
        md.push_str("\n## Failed tasks\n\n");
        for t in failed {
            md.push_str(&format!("- {}: {} ({})\n", t.name, t.state, t.reason));
        }
    }
    report::write(&out.join("report.md"), &md)
}
