//! Training step time (issue 8): Deep RC's tch models beside their PyTorch
//! twins on the same libtorch, and the hydrology LSTM SavedModel trained
//! from Rust beside Keras `fit` of the same architecture, in the same run.
//!
//! ```text
//! source scripts/env.sh && benches/setup-bench-venv.sh
//! cargo run --release -p deeprc-benches --features tch,tensorflow --bin train_speed -- \
//!     [--cases hydro,hydro-small,dlinear,mlp,tf,tf-small] [--threads 1,2] [--rounds 3] \
//!     [--scale 1.0] [--rust-adam deeprc|libtorch] [--json out/train_speed.json]
//! ```
//!
//! ```text
//!  round r, case c, threads k:   Rust side (this process)   then   Python side (subprocess)
//!                                (the order flips every round, so machine load hits both alike)
//!  tch cases:  tch::set_num_threads(k), N warm-up + M timed steps     torch.set_num_threads(k), the same
//!              zero_grad, forward, MSE, backward, Adam (lr 1e-3)      benches/python/torch_speed.py
//!  tf cases:   HydroGradientModel::load_with_threads(k, k) in a       Keras fit, intra/inter-op k
//!              worker process: gradients_into + apply_gradients      benches/python/keras_speed.py
//! ```
//!
//! Every step is timed on its own; the timed steps of all rounds are pooled
//! into a median and p10/p90 per side. The PyTorch twins are the Rust
//! models op for op, and both sides print their parameter counts: the run
//! fails when they differ. The Markdown table goes to stdout, progress to
//! stderr.
//!
//! Cases (batch as the pipelines train):
//! - `hydro`: `deeprc_models::hydro::HydroLstm` at the paper's size (270
//!   days, 5 forcings + the pipeline's 12 attributes, 256 cells), batch 256;
//!   `hydro-small`: 30 days, 16 cells, batch 256.
//! - `dlinear`: DLinear, L = H = 96, 32 windows x 7 channels
//!   (channel-independent, 224 series).
//! - `mlp`: NeuralForecast's MLP at its published 2 x 1024, L = H = 96,
//!   32 x 7 windows, per-window standard scaling (as the accuracy runs).
//! - `tf` / `tf-small`: the SavedModel of `export_hydro.py` at those two
//!   sizes (exported here, as the hydrology pipeline does), batch 256.
//!
//! The PyTorch side runs with `$DEEPRC_BENCH_PYTHON` (default
//! `.venv-bench/bin/python`), Keras with `$DEEPRC_VENV/bin/python`.

use deeprc_bridge::tensorflow::{HydroExport, HydroGradientModel};
use deeprc_bridge::train::{Optimizer, OptimizerKind};
use deeprc_models::hydro::{HydroLstm, HydroLstmConfig};
use deeprc_models::{ChannelIndependent, ForecastConfig, ModelSize, WindowScaling};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

type Error = Box<dyn std::error::Error>;

/// The hydrology pipeline's inputs (`examples/src/hydrology/data.rs`:
/// `FORCINGS`, `ATTRIBUTES`).
const DYN_FEATURES: i64 = 5;
const STATIC_FEATURES: i64 = 12;
const LR: f64 = 1e-3;
const SEED: i64 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Hydro,
    HydroSmall,
    DLinear,
    Mlp,
    Tf,
    TfSmall,
}

impl Case {
    const ALL: [Case; 6] = [
        Case::Hydro,
        Case::HydroSmall,
        Case::DLinear,
        Case::Mlp,
        Case::Tf,
        Case::TfSmall,
    ];

    fn key(self) -> &'static str {
        match self {
            Case::Hydro => "hydro",
            Case::HydroSmall => "hydro-small",
            Case::DLinear => "dlinear",
            Case::Mlp => "mlp",
            Case::Tf => "tf",
            Case::TfSmall => "tf-small",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::Hydro => "HydroLSTM T=270 H=256",
            Case::HydroSmall => "HydroLSTM T=30 H=16",
            Case::DLinear => "DLinear L=H=96",
            Case::Mlp => "MLP 2x1024 L=H=96",
            Case::Tf => "TF LSTM T=270 H=256",
            Case::TfSmall => "TF LSTM T=30 H=16",
        }
    }

    fn batch(self) -> &'static str {
        match self {
            Case::DLinear | Case::Mlp => "32 x 7 ch",
            _ => "256",
        }
    }

    fn is_tf(self) -> bool {
        matches!(self, Case::Tf | Case::TfSmall)
    }

    /// Days and cells of the LSTM cases.
    fn lstm_size(self) -> (i64, i64) {
        match self {
            Case::Hydro | Case::Tf => (270, 256),
            _ => (30, 16),
        }
    }

    /// Warm-up and timed steps per round (before `--scale`).
    fn steps(self) -> (usize, usize) {
        match self {
            Case::Hydro | Case::Tf => (1, 3),
            Case::HydroSmall | Case::TfSmall => (5, 30),
            Case::DLinear => (20, 200),
            Case::Mlp => (5, 30),
        }
    }

    fn sides(self) -> (&'static str, &'static str) {
        if self.is_tf() {
            ("Rust + SavedModel", "Keras fit")
        } else {
            ("Rust tch", "PyTorch")
        }
    }

    /// The case's sizes for the Python twin.
    fn python_args(self) -> Vec<String> {
        let (t, h) = self.lstm_size();
        let v: Vec<String> = match self {
            Case::Hydro | Case::HydroSmall | Case::Tf | Case::TfSmall => {
                let mut v = vec![];
                if !self.is_tf() {
                    v.extend(["--case".into(), "hydro".into()]);
                }
                v.extend([
                    "--batch".into(),
                    "256".into(),
                    "--seq-len".into(),
                    t.to_string(),
                    "--dyn".into(),
                    DYN_FEATURES.to_string(),
                    "--static".into(),
                    STATIC_FEATURES.to_string(),
                    "--hidden".into(),
                    h.to_string(),
                    "--dropout".into(),
                    "0.4".into(),
                    "--forget-bias".into(),
                    "5".into(),
                ]);
                v
            }
            Case::DLinear => ["--case", "dlinear", "--batch", "32"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Case::Mlp => [
                "--case", "mlp", "--batch", "32", "--width", "1024", "--layers", "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        };
        let mut v = v;
        if matches!(self, Case::DLinear | Case::Mlp) {
            v.extend(
                ["--lookback", "96", "--horizon", "96", "--channels", "7"]
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RustAdam {
    /// `deeprc_bridge::train::Optimizer` (what `DistributedTrainer` steps).
    Deeprc,
    /// tch's `nn::Adam` (libtorch's `torch::optim::Adam`).
    Libtorch,
}

struct Args {
    cases: Vec<Case>,
    threads: Vec<usize>,
    rounds: usize,
    scale: f64,
    adam: RustAdam,
    json: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, Error> {
    let mut a = Args {
        cases: Case::ALL.to_vec(),
        threads: vec![1, 2],
        rounds: 3,
        scale: 1.0,
        adam: RustAdam::Deeprc,
        json: None,
    };
    let mut i = 0;
    while i < args.len() {
        let value = args
            .get(i + 1)
            .ok_or_else(|| format!("{} takes a value", args[i]))?;
        match args[i].as_str() {
            "--cases" => {
                a.cases = value
                    .split(',')
                    .map(|k| {
                        Case::ALL.into_iter().find(|c| c.key() == k).ok_or_else(|| {
                            let all: Vec<_> = Case::ALL.iter().map(|c| c.key()).collect();
                            format!("unknown case {k}; the cases are {}", all.join(","))
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            "--threads" => {
                a.threads = value.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--rounds" => a.rounds = value.parse()?,
            "--scale" => a.scale = value.parse()?,
            "--rust-adam" => {
                a.adam = match value.as_str() {
                    "deeprc" => RustAdam::Deeprc,
                    "libtorch" => RustAdam::Libtorch,
                    v => return Err(format!("--rust-adam deeprc|libtorch, not {v}").into()),
                }
            }
            "--json" => a.json = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other}").into()),
        }
        i += 2;
    }
    if a.threads.contains(&0) || a.rounds == 0 || a.scale.is_nan() || a.scale <= 0.0 {
        return Err("--threads, --rounds and --scale must be positive".into());
    }
    Ok(a)
}

/// One side's timed steps of one round.
#[derive(Debug, Clone)]
struct Sample {
    params: i64,
    threads: i64,
    ms: Vec<f64>,
    /// Per step, when the side reports them: forward (with zero_grad and
    /// the loss), backward, optimizer step (ms); for the SavedModel:
    /// `gradients`, `apply_gradients`, 0.
    phases: Vec<[f64; 3]>,
    cpu_s: f64,
    wall_s: f64,
    info: Value,
}

impl Sample {
    fn from_json(v: Value) -> Result<Self, Error> {
        let num = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| format!("the JSON has no number {k:?}: {v}"))
        };
        let ms = v["ms"]
            .as_array()
            .ok_or_else(|| format!("the JSON has no \"ms\" list: {v}"))?
            .iter()
            .map(|x| x.as_f64().ok_or("a step time is not a number"))
            .collect::<Result<Vec<_>, _>>()?;
        let phases = v["phases_ms"]
            .as_array()
            .map(|steps| {
                steps
                    .iter()
                    .map(|p| {
                        let at = |i: usize| p[i].as_f64().unwrap_or(f64::NAN);
                        [at(0), at(1), at(2)]
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Sample {
            params: num("params")? as i64,
            threads: num("threads")? as i64,
            cpu_s: num("cpu_s")?,
            wall_s: num("wall_s")?,
            ms,
            phases,
            info: v,
        })
    }
}

/// CPU seconds (user + system) of this process, all threads, from
/// `/proc/self/stat` (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// The file this process mapped whose name contains `needle`.
fn mapped_library(needle: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains(needle))
        .map(str::to_string)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Timed steps: total and per-phase ms, CPU and wall seconds over them.
type Timed = (Vec<f64>, Vec<[f64; 3]>, f64, f64);

/// Times `warmup + steps` calls of `step` (which returns its phases' ms),
/// keeping the timed ones.
fn time_steps(
    warmup: usize,
    steps: usize,
    mut step: impl FnMut() -> Result<[f64; 3], Error>,
) -> Result<Timed, Error> {
    let mut ms = Vec::with_capacity(steps);
    let mut phases = Vec::with_capacity(steps);
    let (mut cpu0, mut wall0) = (0.0, Instant::now());
    for i in 0..warmup + steps {
        if i == warmup {
            cpu0 = cpu_seconds();
            wall0 = Instant::now();
        }
        let t0 = Instant::now();
        let p = step()?;
        if i >= warmup {
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
            phases.push(p);
        }
    }
    Ok((
        ms,
        phases,
        cpu_seconds() - cpu0,
        wall0.elapsed().as_secs_f64(),
    ))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

enum RustOptimizer {
    Deeprc(Optimizer),
    Libtorch(nn::Optimizer),
}

impl RustOptimizer {
    fn new(kind: RustAdam, vs: &nn::VarStore) -> Result<Self, Error> {
        Ok(match kind {
            RustAdam::Deeprc => RustOptimizer::Deeprc(Optimizer::new(
                OptimizerKind::adam(),
                LR,
                vs.trainable_variables(),
            )),
            RustAdam::Libtorch => RustOptimizer::Libtorch(nn::Adam::default().build(vs, LR)?),
        })
    }

    /// The step both sides time: zero the gradients, loss, backward, Adam;
    /// the ms of (zero_grad + loss, backward, Adam).
    fn step(&mut self, loss: impl FnOnce() -> Result<Tensor, Error>) -> Result<[f64; 3], Error> {
        let t0 = Instant::now();
        match self {
            RustOptimizer::Deeprc(o) => o.zero_grad(),
            RustOptimizer::Libtorch(o) => o.zero_grad(),
        }
        let loss = loss()?;
        let forward = ms_since(t0);
        let t1 = Instant::now();
        loss.f_backward()?;
        let backward = ms_since(t1);
        let t2 = Instant::now();
        match self {
            RustOptimizer::Deeprc(o) => o.step(),
            RustOptimizer::Libtorch(o) => o.step(),
        }
        Ok([forward, backward, ms_since(t2)])
    }
}

fn params_of(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// The Rust side of a tch case, in this process.
fn rust_tch(
    case: Case,
    threads: usize,
    adam: RustAdam,
    steps: (usize, usize),
) -> Result<Sample, Error> {
    tch::set_num_threads(threads as i32);
    tch::manual_seed(SEED);
    let opts = (Kind::Float, Device::Cpu);
    let vs = nn::VarStore::new(Device::Cpu);
    let (ms, phases, cpu_s, wall_s) = match case {
        Case::Hydro | Case::HydroSmall => {
            let (t, h) = case.lstm_size();
            let cfg = HydroLstmConfig {
                hidden: h,
                dropout: 0.4,
                seq_len: Some(t),
                ..HydroLstmConfig::paper()
            }
            .features(DYN_FEATURES, STATIC_FEATURES);
            let model = HydroLstm::new(&vs.root(), &cfg)?;
            let b = 256;
            let xd = Tensor::f_randn([b, t, DYN_FEATURES], opts)?;
            let xs = Tensor::f_randn([b, STATIC_FEATURES], opts)?;
            let y = Tensor::f_randn([b, 1], opts)?;
            let mut opt = RustOptimizer::new(adam, &vs)?;
            time_steps(steps.0, steps.1, || {
                opt.step(|| Ok(model.mse_loss(&xd, &xs, &y)?))
            })?
        }
        Case::DLinear | Case::Mlp => {
            let (l, h, c, b) = (96, 96, 7, 32);
            let cfg = ForecastConfig::new(l, h).size(ModelSize::Paper);
            let (name, scaling) = if case == Case::DLinear {
                ("DLinear", WindowScaling::Identity)
            } else {
                ("MLP", WindowScaling::Standard)
            };
            let inner = deeprc_models::build(name, &vs.root(), &cfg)?;
            let model = ChannelIndependent::new(inner, l, h, scaling);
            let x = Tensor::f_randn([b, l, c], opts)?;
            let y = Tensor::f_randn([b, h, c], opts)?;
            let mut opt = RustOptimizer::new(adam, &vs)?;
            time_steps(steps.0, steps.1, || opt.step(|| Ok(model.loss(&x, &y)?)))?
        }
        Case::Tf | Case::TfSmall => unreachable!("TensorFlow cases run in a worker"),
    };
    Ok(Sample {
        params: params_of(&vs),
        threads: i64::from(tch::get_num_threads()),
        ms,
        phases,
        cpu_s,
        wall_s,
        info: json!({
            "side": "rust-tch",
            "tch": "tch 0.26 / torch-sys 0.26",
            "libtorch_env": std::env::var("LIBTORCH").unwrap_or_default(),
            "libtorch_mapped": mapped_library("libtorch_cpu.so").unwrap_or_default(),
            "optimizer": format!("{adam:?}"),
        }),
    })
}

/// Runs `program args`, without `LD_LIBRARY_PATH` (every Python package
/// finds its own libraries), and parses the JSON object on the last line
/// of its stdout.
fn run_json(program: &Path, args: &[String]) -> Result<Value, Error> {
    let out = Command::new(program)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .map_err(|e| format!("starting {}: {e}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} {} failed ({}):\n{}\n{}",
            program.display(),
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("{} printed no JSON:\n{stdout}", program.display()))?;
    Ok(serde_json::from_str(line)?)
}

/// The worker's own command: the TensorFlow side in a fresh process, so
/// that its thread pools are sized by this run's counts.
fn rust_tf(dir: &Path, threads: usize, steps: (usize, usize)) -> Result<Sample, Error> {
    let exe = std::env::current_exe()?;
    let args: Vec<String> = vec![
        "--tf-worker".into(),
        dir.display().to_string(),
        threads.to_string(),
        steps.0.to_string(),
        steps.1.to_string(),
    ];
    // The worker needs LD_LIBRARY_PATH (the bench binaries have no rpath).
    let out = Command::new(&exe)
        .args(&args)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "TensorFlow worker failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or("the TensorFlow worker printed no JSON")?;
    Sample::from_json(serde_json::from_str(line)?)
}

/// `--tf-worker DIR THREADS WARMUP STEPS`: loads the SavedModel with
/// `THREADS` intra- and inter-op threads and times its training steps.
fn tf_worker(args: &[String]) -> Result<(), Error> {
    let [dir, threads, warmup, steps] = args else {
        return Err("--tf-worker DIR THREADS WARMUP STEPS".into());
    };
    let threads: usize = threads.parse()?;
    let mut model = HydroGradientModel::load_with_threads(dir, threads, threads)?;
    let c = model.config().clone();
    let b = 256usize;
    tch::manual_seed(SEED);
    let randn = |n: usize| -> Result<Vec<f32>, Error> {
        Ok(Vec::<f32>::try_from(Tensor::f_randn(
            [n as i64],
            (Kind::Float, Device::Cpu),
        )?)?)
    };
    let batches = (0..2)
        .map(|_| {
            Ok((
                randn(b * c.seq_len * c.dyn_features)?,
                randn(b * c.static_features)?,
                randn(b)?,
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut grads = vec![0f32; model.num_params()];
    let mut i = 0;
    let (ms, phases, cpu_s, wall_s) = time_steps(warmup.parse()?, steps.parse()?, || {
        let (xd, xs, y) = &batches[i % batches.len()];
        i += 1;
        let t0 = Instant::now();
        model.gradients_into(xd, xs, y, &mut grads)?;
        let gradients = ms_since(t0);
        let t1 = Instant::now();
        model.apply_gradients(&grads)?;
        Ok([gradients, ms_since(t1), 0.0])
    })?;
    let v = json!({
        "side": "rust-tensorflow",
        "params": model.num_params(),
        "threads": threads,
        "interop_threads": threads,
        "ms": ms,
        "phases_ms": phases,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "tf_mapped": mapped_library("libtensorflow_framework").unwrap_or_default(),
        "tf_cc_mapped": mapped_library("libtensorflow_cc").unwrap_or_default(),
        "model": dir,
        "config": format!("{c:?}"),
    });
    println!("{v}");
    Ok(())
}

/// Linear-interpolated quantile of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Pooled timed steps of one side: median, p10, p90, CPU / wall.
#[derive(Debug, Default, Clone)]
struct Pool {
    ms: Vec<f64>,
    phases: Vec<[f64; 3]>,
    cpu_s: f64,
    wall_s: f64,
    params: i64,
}

impl Pool {
    fn add(&mut self, s: &Sample) {
        self.ms.extend(&s.ms);
        self.phases.extend(&s.phases);
        self.cpu_s += s.cpu_s;
        self.wall_s += s.wall_s;
        self.params = s.params;
    }

    fn stats(&self) -> (f64, f64, f64) {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        (quantile(&v, 0.5), quantile(&v, 0.1), quantile(&v, 0.9))
    }

    /// The median of each phase (empty when the side reports none).
    fn phase_medians(&self) -> Option<[f64; 3]> {
        if self.phases.is_empty() {
            return None;
        }
        let mut out = [0.0; 3];
        for (k, o) in out.iter_mut().enumerate() {
            let mut v: Vec<f64> = self.phases.iter().map(|p| p[k]).collect();
            v.sort_by(f64::total_cmp);
            *o = quantile(&v, 0.5);
        }
        Some(out)
    }

    fn cell(&self) -> String {
        let (m, p10, p90) = self.stats();
        format!("{} ({}–{})", fmt_ms(m), fmt_ms(p10), fmt_ms(p90))
    }
}

fn fmt_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn check_equal(case: Case, what: &str, rust: i64, python: i64) -> Result<(), Error> {
    if rust != python {
        return Err(format!(
            "{}: {what} differ: Rust {rust}, Python {python}; the twins are not the same model",
            case.key()
        )
        .into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--tf-worker") {
        tf_worker(&args[1..])
    } else {
        run(&args)
    };
    if let Err(e) = result {
        eprintln!("train_speed: {e}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let a = parse(args)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let torch_python = std::env::var_os("DEEPRC_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../.venv-bench/bin/python"));
    let tf_python = std::env::var_os("DEEPRC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../.venv"))
        .join("bin/python");
    let torch_script = root.join("python/torch_speed.py");
    let keras_script = root.join("python/keras_speed.py");
    let load_start = load_average();
    eprintln!("train_speed: load average {load_start} at the start");

    // The SavedModels, exported as the hydrology pipeline does.
    let tmp = std::env::temp_dir().join(format!("deeprc-train-speed-{}", std::process::id()));
    let mut tf_dirs = Vec::new();
    for case in a.cases.iter().copied().filter(|c| c.is_tf()) {
        let (t, h) = case.lstm_size();
        let dir = tmp.join(case.key());
        eprintln!("train_speed: exporting the {} SavedModel", case.label());
        HydroExport {
            seq_len: t as usize,
            dyn_features: DYN_FEATURES as usize,
            static_features: STATIC_FEATURES as usize,
            hidden: h as usize,
            ..HydroExport::paper()
        }
        .export(&dir)?;
        tf_dirs.push((case, dir));
    }
    let result = measure(
        &a,
        &torch_python,
        &torch_script,
        &tf_python,
        &keras_script,
        &tf_dirs,
    );
    let _ = std::fs::remove_dir_all(&tmp);
    let (pools, infos) = result?;
    let load_end = load_average();
    eprintln!("train_speed: load average {load_end} at the end");

    // The table.
    println!(
        "Training step time, ms: median (p10–p90) of {} rounds, sides interleaved; load average {load_start} at the start, {load_end} at the end.",
        a.rounds
    );
    println!();
    println!("| case | parameters | batch | threads | Rust side | Python side | Rust ms/step | Python ms/step | Rust / Python | CPU/wall Rust / Python | steps per side |");
    println!("|---|---:|---|---:|---|---|---:|---:|---:|---:|---:|");
    for ((case, k), (rust, python)) in &pools {
        let (rm, _, _) = rust.stats();
        let (pm, _, _) = python.stats();
        let (rs, ps) = case.sides();
        println!(
            "| {} | {} | {} | {k} | {rs} | {ps} | {} | {} | {:.2} | {:.2} / {:.2} | {} |",
            case.label(),
            rust.params,
            case.batch(),
            rust.cell(),
            python.cell(),
            rm / pm,
            rust.cpu_s / rust.wall_s,
            python.cpu_s / python.wall_s,
            rust.ms.len()
        );
    }
    println!();
    println!("Medians of the phases of a step, ms, Rust / PyTorch: zero_grad + forward + loss, backward, optimizer step.");
    println!();
    println!("| case | threads | forward | backward | optimizer |");
    println!("|---|---:|---:|---:|---:|");
    for ((case, k), (rust, python)) in pools.iter().filter(|((c, _), _)| !c.is_tf()) {
        let (Some(r), Some(p)) = (rust.phase_medians(), python.phase_medians()) else {
            continue;
        };
        let cell = |i: usize| format!("{} / {}", fmt_ms(r[i]), fmt_ms(p[i]));
        println!(
            "| {} | {k} | {} | {} | {} |",
            case.label(),
            cell(0),
            cell(1),
            cell(2)
        );
    }
    println!();
    println!("The SavedModel's two calls per step, medians in ms (Keras fit is one call):");
    println!();
    println!("| case | threads | gradients | apply_gradients |");
    println!("|---|---:|---:|---:|");
    for ((case, k), (rust, _)) in pools.iter().filter(|((c, _), _)| c.is_tf()) {
        if let Some(r) = rust.phase_medians() {
            println!(
                "| {} | {k} | {} | {} |",
                case.label(),
                fmt_ms(r[0]),
                fmt_ms(r[1])
            );
        }
    }
    println!();
    for line in describe(&infos, a.adam) {
        println!("{line}");
    }
    if let Some(path) = &a.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let rows: Vec<Value> = pools
            .iter()
            .map(|((case, k), (r, p))| {
                json!({"case": case.key(), "threads": k, "params": r.params,
                       "rust_ms": r.ms, "python_ms": p.ms,
                       "rust_phases_ms": r.phases, "python_phases_ms": p.phases,
                       "rust_cpu_s": r.cpu_s, "rust_wall_s": r.wall_s,
                       "python_cpu_s": p.cpu_s, "python_wall_s": p.wall_s})
            })
            .collect();
        let doc = json!({"load_start": load_start, "load_end": load_end,
                         "rounds": a.rounds, "rows": rows, "sides": infos});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("train_speed: wrote {}", path.display());
    }
    Ok(())
}

type Pools = Vec<((Case, usize), (Pool, Pool))>;

/// Every round: every case, every thread count, both sides (flipping the
/// order each round). Returns the pools and one description of each
/// side's set-up.
fn measure(
    a: &Args,
    torch_python: &Path,
    torch_script: &Path,
    tf_python: &Path,
    keras_script: &Path,
    tf_dirs: &[(Case, PathBuf)],
) -> Result<(Pools, Vec<Value>), Error> {
    let mut pools: Pools = Vec::new();
    for &case in &a.cases {
        for &k in &a.threads {
            pools.push(((case, k), (Pool::default(), Pool::default())));
        }
    }
    let mut infos: Vec<Value> = Vec::new();
    for round in 0..a.rounds {
        for ((case, k), (rust_pool, python_pool)) in pools.iter_mut() {
            let (case, k) = (*case, *k);
            let (w, s) = case.steps();
            let steps = (w, ((s as f64 * a.scale).round() as usize).max(1));
            let rust = || -> Result<Sample, Error> {
                if case.is_tf() {
                    let dir = &tf_dirs
                        .iter()
                        .find(|(c, _)| *c == case)
                        .ok_or("no SavedModel exported")?
                        .1;
                    rust_tf(dir, k, steps)
                } else {
                    rust_tch(case, k, a.adam, steps)
                }
            };
            let python = || -> Result<Sample, Error> {
                let (program, script) = if case.is_tf() {
                    (tf_python, keras_script)
                } else {
                    (torch_python, torch_script)
                };
                let mut args = vec![script.display().to_string()];
                args.extend(case.python_args());
                args.extend([
                    "--threads".into(),
                    k.to_string(),
                    "--warmup".into(),
                    steps.0.to_string(),
                    "--steps".into(),
                    steps.1.to_string(),
                ]);
                Sample::from_json(run_json(program, &args)?)
            };
            let (r, p) = if round % 2 == 0 {
                let r = rust()?;
                (r, python()?)
            } else {
                let p = python()?;
                (rust()?, p)
            };
            check_equal(case, "parameter counts", r.params, p.params)?;
            check_equal(case, "thread counts", r.threads, p.threads)?;
            check_equal(case, "thread counts", k as i64, r.threads)?;
            let med = |s: &Sample| {
                let mut v = s.ms.clone();
                v.sort_by(f64::total_cmp);
                quantile(&v, 0.5)
            };
            eprintln!(
                "round {round} {:<22} threads {k}: Rust {:>9} ms, Python {:>9} ms (median of {}; {} parameters; load {})",
                case.label(),
                fmt_ms(med(&r)),
                fmt_ms(med(&p)),
                r.ms.len(),
                r.params,
                load_average()
            );
            if round == 0 && infos.len() < 8 {
                for s in [&r, &p] {
                    let side = s.info["side"].as_str().unwrap_or("?").to_string();
                    if !infos.iter().any(|i| i["side"] == side.as_str()) {
                        let mut info = s.info.clone();
                        if let Some(o) = info.as_object_mut() {
                            o.remove("ms");
                            o.remove("phases_ms");
                        }
                        infos.push(info);
                    }
                }
            }
            rust_pool.add(&r);
            python_pool.add(&p);
        }
    }
    Ok((pools, infos))
}

/// The libraries and settings each side used, from their own reports.
fn describe(infos: &[Value], adam: RustAdam) -> Vec<String> {
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("?").to_string();
    let mut out = Vec::new();
    for i in infos {
        match i["side"].as_str() {
            Some("rust-tch") => out.push(format!(
                "- Rust tch: {}, LIBTORCH={}, mapped {}; Adam: {}",
                s(i, "tch"),
                s(i, "libtorch_env"),
                s(i, "libtorch_mapped"),
                match adam {
                    RustAdam::Deeprc => "deeprc_bridge::train::Optimizer (PyTorch's rule, in-place tensor ops)",
                    RustAdam::Libtorch => "tch nn::Adam (libtorch's torch::optim::Adam)",
                }
            )),
            Some("pytorch") => out.push(format!(
                "- PyTorch: torch {} ({}), mapped {}, Python {}; {}",
                s(i, "torch_version"),
                s(i, "torch_file"),
                s(i, "torch_lib_mapped"),
                s(i, "python"),
                s(i, "optimizer")
            )),
            Some("rust-tensorflow") => out.push(format!(
                "- Rust TensorFlow: HydroGradientModel::load_with_threads(k, k) (intra- and inter-op k), mapped {} and {}",
                s(i, "tf_mapped"),
                s(i, "tf_cc_mapped")
            )),
            Some("keras") => out.push(format!(
                "- Keras: TensorFlow {} / Keras {} ({}), mapped {}, Python {}; intra/inter-op threads via tf.config.threading; {}",
                s(i, "tf_version"),
                s(i, "keras_version"),
                s(i, "tf_file"),
                s(i, "tf_mapped"),
                s(i, "python"),
                s(i, "optimizer")
            )),
            _ => {}
        }
    }
    out
}
