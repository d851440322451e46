//! Data Bridge benchmarks: the loader's throughput beside PyTorch's
//! `DataLoader` and memcpy bandwidth, all measured in the same run on the
//! same rows, against the issue's goals (at least half of memcpy, at least
//! 10x PyTorch's DataLoader). No constant stands in for a peer.
//!
//! ```text
//! benches/peers/setup.sh     # once: the benchmark venv .venv-bench (PyTorch 2.13.0 + peers)
//! cargo run --release -p deeprc-benches --bin bridge_bench            # 10M rows, 3 rounds
//! cargo run --release -p deeprc-benches --bin bridge_bench -- --rows 1000000 --batches 1000 --rounds 1
//! cargo run --release -p deeprc-benches --bin bridge_bench -- --peers batched   # or none
//! cargo run --release -p deeprc-benches --features tch --bin bridge_bench   # + tch tensors
//! ```
//!
//! 1. Windows: 96 input rows + 24 target rows over 8 `f32` features (the
//!    targets are the same 8 features: multivariate forecasting), batch
//!    256, shuffled, over `--rows` rows in 10 series. GB/s counts the
//!    tensor bytes produced (inputs + targets: 3840 B per window).
//! 2. Tabular: the same rows as samples, 8 `f32` features + 1 `f32` label
//!    (36 B per sample), batch 256, shuffled and sequential.
//! 3. When a CUDA device is present: host-to-device copies from the
//!    loader's staging buffers (needs `--features tch`).
//!
//! PyTorch: `benches/peers/loader_peers.py` runs PyTorch's
//! `torch.utils.data.DataLoader` on the same workloads, in a fresh process of
//! the benchmark venv's Python (`DEEPRC_PEERS_PYTHON` overrides the default
//! `.venv-bench/bin/python`) per configuration and round, in two variants
//! (`--peers`, default `map,batched`): `map`, a map-style `Dataset` with one
//! sample per `__getitem__` batched by `default_collate` (what the tutorial
//! writes), and `batched`, a `BatchSampler` as the sampler so that
//! `__getitem__` builds a whole batch with one vectorised `index_select` per
//! tensor (PyTorch at its best). It gets the same number of workers (worker
//! processes there, threads here) and `torch.set_num_threads(max(1,
//! workers))`. The rows: the table generated here is written once per run
//! as raw little-endian `.npy` files under
//! `target/bridge-bench-data/rows-<rows>/` (`x.npy`: `f32 [rows, 9]`, f0..f7
//! then the label; `series.npy`: `i64 [rows]`), which the script loads (and
//! z-scores, for the windows, as the Data Bridge does at build time) before
//! its clock starts. Timing and byte accounting are the same on both sides:
//! one warm-up batch, then the clock over `--batches` batches (4x for the
//! tabular rows) cycling epochs, counting the tensor bytes produced; a
//! PyTorch run also stops its clock after `--peer-seconds` (default 10) and
//! its figure is then the rate over the batches it did. Per configuration
//! the rounds are interleaved (Data Bridge, PyTorch map, PyTorch batched,
//! then again), each figure is the median over `--rounds` (default 3) and
//! the 1-minute load average (`/proc/loadavg`) at the start of each run is
//! recorded; its median is printed beside the figure. A peer that fails
//! prints why and gets no figure; nothing stands in for it.

use deeprc_benches::{load_average, peers_python};
use deeprc_bridge::arrow::array::{Array, ArrayRef, Float32Array, Int64Array, RecordBatch};
use deeprc_bridge::arrow::datatypes::{DataType, Field, Schema};
use deeprc_bridge::{
    DataSource, Dataset, Loader, LoaderOptions, Normalize, RowSpec, SamplerOptions, WindowSpec,
    ZeroCopy,
};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

const FEATURES: [&str; 8] = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"];
/// Tensor bytes of one window (96 + 24 rows of 8 `f32`).
const WINDOW_BYTES: usize = (96 + 24) * 8 * 4;
/// Tensor bytes of one tabular sample (8 `f32` features + 1 `f32` label).
const ROW_BYTES: usize = 9 * 4;

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn arg(name: &str, default: usize) -> usize {
    arg_str(name)
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

/// memcpy bandwidth (one thread) in GB/s over `bytes`, best of 5.
fn memcpy_gbps(bytes: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    (0..5)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            bytes as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// `rows` rows of 8 `f32` features (smooth signals + noise) and a series id,
/// in record batches of 1M rows.
fn table(rows: usize, series: usize) -> DataSource {
    let mut fields: Vec<Field> = vec![Field::new("series", DataType::Int64, false)];
    fields.extend(
        FEATURES
            .iter()
            .map(|f| Field::new(*f, DataType::Float32, false)),
    );
    fields.push(Field::new("label", DataType::Float32, false));
    let schema = Arc::new(Schema::new(fields));
    let per_series = rows.div_ceil(series);
    let mut batches = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for lo in (0..rows).step_by(1 << 20) {
        let hi = (lo + (1 << 20)).min(rows);
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
            (lo..hi).map(|r| (r / per_series) as i64),
        ))];
        for f in 0..FEATURES.len() {
            let v: Vec<f32> = (lo..hi)
                .map(|r| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ((r as f32) * 0.01 * (f + 1) as f32).sin() * 10.0 + (x % 1000) as f32 * 1e-3
                })
                .collect();
            cols.push(Arc::new(Float32Array::from(v)));
        }
        cols.push(Arc::new(Float32Array::from_iter_values(
            (lo..hi).map(|r| (r % 7) as f32),
        )));
        batches.push(RecordBatch::try_new(Arc::clone(&schema), cols).expect("batch"));
    }
    DataSource::from_batches(schema, batches).expect("source")
}

/// The header of a version 1.0 `.npy` file of a C-order array.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.as_slice() {
        [d] => format!("({d},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // magic + version (8 B) + header length (2 B) + dict + '\n', padded to 64 B.
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    dict.push_str(&" ".repeat(total - 10 - dict.len() - 1));
    dict.push('\n');
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h
}

/// Writes the rows of `src` for the PyTorch peer (`x.npy`: `f32 [rows, 9]`,
/// f0..f7 then the label; `series.npy`: `i64 [rows]`); returns their folder.
fn write_peer_data(src: &DataSource, rows: usize) -> std::io::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bridge-bench-data")
        .join(format!("rows-{rows}"));
    std::fs::create_dir_all(&dir)?;
    let (x_part, s_part) = (dir.join("x.npy.part"), dir.join("series.npy.part"));
    let mut x = BufWriter::new(std::fs::File::create(&x_part)?);
    let mut s = BufWriter::new(std::fs::File::create(&s_part)?);
    x.write_all(&npy_header("<f4", &[rows, 1 + FEATURES.len()]))?;
    s.write_all(&npy_header("<i8", &[rows]))?;
    let mut buf = Vec::new();
    for b in src.batches() {
        let ids = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("series column");
        let cols: Vec<&Float32Array> = (1..=1 + FEATURES.len())
            .map(|i| {
                b.column(i)
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .expect("f32 column")
            })
            .collect();
        buf.clear();
        for r in 0..b.num_rows() {
            for c in &cols {
                buf.extend_from_slice(&c.value(r).to_le_bytes());
            }
        }
        x.write_all(&buf)?;
        buf.clear();
        for v in ids.values() {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        s.write_all(&buf)?;
    }
    x.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    s.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&x_part, dir.join("x.npy"))?;
    std::fs::rename(&s_part, dir.join("series.npy"))?;
    Ok(dir.canonicalize().unwrap_or(dir))
}

#[derive(Clone, Copy)]
struct Run {
    batches: usize,
    samples: usize,
    bytes: usize,
    secs: f64,
}

impl Run {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e9
    }
}

/// Loads `n` batches (cycling epochs), touching one byte of each part.
fn run<D: Dataset>(loader: &Loader<D>, n: usize) -> Run {
    // Warm-up: one batch (allocates the staging buffers).
    let _ = loader.epoch(1_000).next();
    let t = Instant::now();
    let (mut batches, mut samples, mut bytes, mut sink) = (0, 0, 0, 0u8);
    'outer: for e in 0.. {
        for b in loader.epoch(e) {
            let b = b.expect("batch");
            sink ^= b.inputs().bytes()[0] ^ b.targets().bytes()[0];
            bytes += b.nbytes();
            samples += b.len();
            batches += 1;
            if batches == n {
                break 'outer;
            }
        }
    }
    std::hint::black_box(sink);
    Run {
        batches,
        samples,
        bytes,
        secs: t.elapsed().as_secs_f64(),
    }
}

/// The PyTorch variants of `loader_peers.py`: its `--variant` and a label.
const PEERS: [(&str, &str); 2] = [
    ("map", "PyTorch map-style + collate"),
    ("batched", "PyTorch BatchSampler+index_select"),
];

/// One configuration, run by the Data Bridge and by each PyTorch variant.
struct Config {
    label: &'static str,
    /// `loader_peers.py --workload`.
    workload: &'static str,
    shuffle: bool,
    workers: usize,
    batches: usize,
}

impl Config {
    fn sampler(&self) -> SamplerOptions {
        if self.shuffle {
            SamplerOptions::shuffled(256, 1)
        } else {
            SamplerOptions::sequential(256)
        }
    }

    fn sample_bytes(&self) -> usize {
        if self.workload == "windows" {
            WINDOW_BYTES
        } else {
            ROW_BYTES
        }
    }
}

/// What the whole run shares.
struct Bench {
    memcpy: f64,
    rounds: usize,
    peers: Vec<(&'static str, &'static str)>,
    /// The rows for the peers (or why there are none).
    data: Result<PathBuf, String>,
    peer_seconds: f64,
    failures: Vec<String>,
}

/// One PyTorch variant on one configuration, in a fresh Python process; the
/// error names why it gave no figure.
fn spawn_peer(data: &Path, variant: &str, c: &Config, max_secs: f64) -> Result<Run, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/loader_peers.py");
    let order = if c.shuffle { "shuffled" } else { "sequential" };
    let what = format!("PyTorch {variant} {} {order} w{}", c.workload, c.workers);
    let out = Command::new(peers_python())
        .arg(script)
        .arg("--data")
        .arg(data)
        .args([
            "--workload",
            c.workload,
            "--variant",
            variant,
            "--order",
            order,
        ])
        .args(["--workers", &c.workers.to_string()])
        .args(["--batches", &c.batches.to_string()])
        .args(["--threads", &c.workers.max(1).to_string()])
        .args(["--max-seconds", &max_secs.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{what}: {} did not start: {e}", peers_python().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [_, batches, secs, bytes] => Some((
                    batches.parse::<usize>().ok()?,
                    secs.parse::<f64>().ok()?,
                    bytes.parse::<usize>().ok()?,
                )),
                _ => None,
            }
        });
    match parsed {
        Some((batches, secs, bytes)) if out.status.success() => Ok(Run {
            batches,
            samples: bytes / c.sample_bytes(),
            bytes,
            secs,
        }),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "{what} failed ({}): {}",
                out.status,
                err.lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("no output")
            ))
        }
    }
}

/// The median run (by GB/s) and the median load of `runs`.
fn median(runs: &[(Run, f64)]) -> Option<(Run, f64)> {
    if runs.is_empty() {
        return None;
    }
    let mut by_rate: Vec<Run> = runs.iter().map(|r| r.0).collect();
    by_rate.sort_by(|a, b| a.gbps().total_cmp(&b.gbps()));
    let mut loads: Vec<f64> = runs.iter().map(|r| r.1).collect();
    loads.sort_by(f64::total_cmp);
    Some((by_rate[by_rate.len() / 2], loads[loads.len() / 2]))
}

/// One figure's line; `ratio` is the Data Bridge's GB/s over this one's.
fn line(who: &str, r: &Run, memcpy: f64, ratio: Option<f64>, load: f64) {
    let ratio = ratio.map_or(String::new(), |x| format!("ours {x:.2}x"));
    println!(
        "    {who:<34} {:>7.0} batches/s {:>6.2} M samples/s {:>7.3} GB/s  {:.3}x memcpy  {ratio:<12} load {load:.2}  ({} batches in {:.2} s)",
        r.batches as f64 / r.secs,
        r.samples as f64 / r.secs / 1e6,
        r.gbps(),
        r.gbps() / memcpy,
        r.batches,
        r.secs,
    );
}

/// The median figures of one configuration: the Data Bridge's, then each
/// PyTorch variant's (`None`: it failed every round).
struct Figures {
    ours: Run,
    peers: Vec<Option<Run>>,
}

/// Runs `c` `rounds` times, interleaving the Data Bridge and the PyTorch
/// variants, and prints the median figures.
fn compare<D: Dataset>(bench: &mut Bench, ds: &Arc<D>, c: &Config) -> (Figures, Loader<D>) {
    let l = Loader::new(
        Arc::clone(ds),
        c.sampler(),
        opts(c.workers, ZeroCopy::Prefer),
    )
    .expect("loader");
    let mut ours = Vec::new();
    let mut peers: Vec<Vec<(Run, f64)>> = vec![Vec::new(); bench.peers.len()];
    let mut why: Vec<Option<String>> = vec![None; bench.peers.len()];
    for round in 1..=bench.rounds {
        let load = load_average();
        let r = run(&l, c.batches);
        eprintln!(
            "bridge_bench: round {round}/{} {} {}: Data Bridge {:.2} GB/s (load {load:.2})",
            bench.rounds,
            c.workload,
            c.label,
            r.gbps()
        );
        ours.push((r, load));
        for (k, (variant, _)) in bench.peers.iter().enumerate() {
            let load = load_average();
            let outcome = match &bench.data {
                Ok(dir) => spawn_peer(dir, variant, c, bench.peer_seconds),
                Err(e) => Err(e.clone()),
            };
            match outcome {
                Ok(r) => {
                    eprintln!(
                        "bridge_bench: round {round}/{} {} {}: PyTorch {variant} {:.3} GB/s (load {load:.2})",
                        bench.rounds,
                        c.workload,
                        c.label,
                        r.gbps()
                    );
                    peers[k].push((r, load));
                }
                Err(e) => {
                    eprintln!("bridge_bench: {e}");
                    bench.failures.push(e.clone());
                    why[k] = Some(e);
                }
            }
        }
    }
    let (o, o_load) = median(&ours).expect("rounds >= 1");
    println!("  {}", c.label);
    line("Data Bridge", &o, bench.memcpy, None, o_load);
    let mut figures = Vec::new();
    for (k, (_, label)) in bench.peers.iter().enumerate() {
        match median(&peers[k]) {
            Some((p, load)) => {
                line(label, &p, bench.memcpy, Some(o.gbps() / p.gbps()), load);
                figures.push(Some(p));
            }
            None => {
                println!(
                    "    {label:<34} no figure: {}",
                    why[k].as_deref().unwrap_or("not run")
                );
                figures.push(None);
            }
        }
    }
    (
        Figures {
            ours: o,
            peers: figures,
        },
        l,
    )
}

fn opts(workers: usize, zero_copy: ZeroCopy) -> LoaderOptions {
    LoaderOptions {
        workers,
        prefetch: 8,
        zero_copy,
        ..Default::default()
    }
}

/// `10 x PyTorch` goal text for the best PyTorch figure of a variant.
fn goal_vs(best: f64, label: &str, peer: Option<f64>) -> String {
    match peer {
        Some(p) => format!(
            ">= 10 x {label} ({:.2} = 10 x {p:.3}): {}",
            10.0 * p,
            if best >= 10.0 * p { "MET" } else { "NOT MET" }
        ),
        None => format!("vs {label}: no PyTorch figure in this run, not judged"),
    }
}

fn main() {
    let rows = arg("--rows", 10_000_000);
    let n = arg("--batches", 4000);
    let rounds = arg("--rounds", 3).max(1);
    let peer_seconds = arg_str("--peer-seconds").map_or(10.0, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("--peer-seconds takes a number"))
    });
    let wanted = arg_str("--peers").unwrap_or_else(|| "map,batched".into());
    let peers: Vec<(&str, &str)> = PEERS
        .iter()
        .copied()
        .filter(|(v, _)| wanted.split(',').any(|w| w == *v))
        .collect();
    let series = 10;
    println!("bridge_bench: {rows} rows x 8 f32 features ({series} series), batch 256, {n} batches per figure (tabular: {}), median of {rounds} interleaved rounds", n * 4);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("  machine: {cores} cores, load {:.2}", load_average());
    let load = load_average();
    let memcpy = memcpy_gbps(256 << 20);
    println!("  memcpy, 1 thread, 256 MiB:          {memcpy:.2} GB/s (this run, load {load:.2})");

    let t = Instant::now();
    let src = table(rows, series);
    println!("  table generated in {:.2} s", t.elapsed().as_secs_f64());
    let data = if peers.is_empty() {
        Err("no PyTorch variant asked for (--peers)".to_string())
    } else {
        let t = Instant::now();
        let d = write_peer_data(&src, rows)
            .map_err(|e| format!("writing the rows for PyTorch failed: {e}"));
        if let Ok(dir) = &d {
            println!(
                "  rows written for PyTorch in {:.2} s: {}/{{x,series}}.npy (PyTorch: {}, benches/peers/loader_peers.py, --peer-seconds {peer_seconds})",
                t.elapsed().as_secs_f64(),
                dir.display(),
                peers_python().display(),
            );
        }
        d
    };
    let mut bench = Bench {
        memcpy,
        rounds,
        peers,
        data,
        peer_seconds,
        failures: Vec::new(),
    };

    // ---- windows ----
    let t = Instant::now();
    let ds = Arc::new(
        WindowSpec::new(96, 24, &FEATURES, &FEATURES)
            .series("series")
            .normalize(Normalize::ZScore)
            .build(src.clone())
            .expect("windows")
            .train,
    );
    println!(
        "windows 96 + 24 rows over 8 features: {} windows, built (z-score + frames) in {:.2} s",
        ds.len(),
        t.elapsed().as_secs_f64()
    );
    let mut best = 0.0f64;
    let mut peer_best: Vec<Option<f64>> = vec![None; bench.peers.len()];
    let mut peer_w2: Option<f64> = None;
    for (label, workers) in [
        ("shuffled, 0 workers", 0),
        ("shuffled, 1 worker", 1),
        ("shuffled, 2 workers", 2),
    ] {
        let c = Config {
            label,
            workload: "windows",
            shuffle: true,
            workers,
            batches: n,
        };
        let (f, l) = compare(&mut bench, &ds, &c);
        best = best.max(f.ours.gbps());
        for (b, p) in peer_best.iter_mut().zip(&f.peers) {
            if let Some(p) = p {
                *b = Some(b.map_or(p.gbps(), |b: f64| b.max(p.gbps())));
            }
        }
        if workers == 2 {
            peer_w2 = f.peers.iter().flatten().map(Run::gbps).reduce(f64::max);
            println!("  staging memory: {}", l.describe_memory());
            println!(
                "  staging buffers allocated: {} for {} batches",
                l.buffers_allocated(),
                f.ours.batches
            );
        }
    }
    let c = Config {
        label: "sequential, 2 workers (zero-copy views)",
        workload: "windows",
        shuffle: false,
        workers: 2,
        batches: n,
    };
    compare(&mut bench, &ds, &c);
    let goals: Vec<String> = bench
        .peers
        .iter()
        .zip(&peer_best)
        .map(|((_, label), p)| goal_vs(best, label, *p))
        .collect();
    println!(
        "  goal (best shuffled, each side's best over 0-2 workers): {:.2} GB/s >= 0.5 x memcpy ({:.2}): {}",
        best,
        0.5 * memcpy,
        if best >= 0.5 * memcpy { "MET" } else { "NOT MET" },
    );
    for g in goals {
        println!("    {g}");
    }
    #[cfg(feature = "tch")]
    tch_section(&ds, n, memcpy, peer_w2);
    #[cfg(not(feature = "tch"))]
    let _ = peer_w2;
    h2d_section(&ds, n);
    drop(ds);

    // ---- tabular ----
    let t = Instant::now();
    let rows_ds = Arc::new(
        RowSpec::new(&FEATURES, &["label"])
            .build(src)
            .expect("rows")
            .train,
    );
    println!(
        "tabular: {} rows, 8 f32 features + 1 label, built in {:.3} s (no copy: views of the Arrow columns)",
        rows_ds.len(),
        t.elapsed().as_secs_f64()
    );
    for (label, shuffle, workers) in [
        ("shuffled, 0 workers", true, 0),
        ("shuffled, 2 workers", true, 2),
        ("sequential, 2 workers", false, 2),
    ] {
        let c = Config {
            label,
            workload: "tabular",
            shuffle,
            workers,
            batches: n * 4,
        };
        compare(&mut bench, &rows_ds, &c);
    }
    let full = rows / 256;
    let l = Loader::new(
        Arc::clone(&rows_ds),
        SamplerOptions::sequential(256),
        opts(2, ZeroCopy::Prefer),
    )
    .expect("loader");
    let t = Instant::now();
    let mut b = 0;
    for batch in l.epoch(0) {
        std::hint::black_box(batch.expect("batch").inputs().bytes()[0]);
        b += 1;
    }
    println!(
        "  one whole sequential epoch: {b} batches ({full} full) of the {rows}-row stream in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    if !bench.failures.is_empty() {
        println!("failed PyTorch runs (no figure, no stand-in):");
        for f in &bench.failures {
            println!("- {f}");
        }
    }
}

fn no_cuda_reason() -> String {
    match deeprc_bridge::mem::cuda_status() {
        deeprc_bridge::PinStatus::Pinned => "a CUDA device is present".into(),
        deeprc_bridge::PinStatus::Unpinned { reason } => reason,
    }
}

#[cfg(feature = "tch")]
/// The loader's batches made into `tch::Tensor`s, beside the best PyTorch
/// figure of this run on the same configuration (shuffled, 2 workers).
fn tch_section(
    ds: &Arc<deeprc_bridge::WindowDataset>,
    n: usize,
    memcpy: f64,
    pytorch_w2: Option<f64>,
) {
    use deeprc_core::Device;
    let l = Loader::new(
        Arc::clone(ds),
        SamplerOptions::shuffled(256, 1),
        opts(2, ZeroCopy::Prefer),
    )
    .expect("loader");
    let _ = l.epoch(1_000).next();
    let load = load_average();
    let t = Instant::now();
    let (mut batches, mut samples, mut bytes) = (0, 0, 0);
    'outer: for e in 0.. {
        for b in l.epoch(e) {
            let b = b.expect("batch");
            bytes += b.nbytes();
            samples += b.len();
            let tb = b.to_tch(Device::Cpu).expect("tch");
            std::hint::black_box(tb.inputs().data_ptr());
            batches += 1;
            if batches == n {
                break 'outer;
            }
        }
    }
    let r = Run {
        batches,
        samples,
        bytes,
        secs: t.elapsed().as_secs_f64(),
    };
    println!("  shuffled -> tch::Tensor, 2 workers");
    line(
        "Data Bridge -> tch::Tensor",
        &r,
        memcpy,
        pytorch_w2.map(|p| r.gbps() / p),
        load,
    );
    if pytorch_w2.is_none() {
        println!("    (no PyTorch figure for shuffled, 2 workers in this run: no ratio)");
    }
}

#[cfg(feature = "tch")]
fn h2d_section(ds: &Arc<deeprc_bridge::WindowDataset>, n: usize) {
    use deeprc_bridge::tch::tch_crate::{Cuda, Device as TDevice, Kind, Tensor};
    use deeprc_core::Device;
    if !Cuda::is_available() {
        println!(
            "host-to-device: libtorch sees no CUDA device ({}); skipped",
            no_cuda_reason()
        );
        return;
    }
    let l = Loader::new(
        Arc::clone(ds),
        SamplerOptions::shuffled(256, 1),
        opts(2, ZeroCopy::Never),
    )
    .expect("loader");
    println!("host-to-device: staging memory: {}", l.describe_memory());
    let _ = l
        .epoch(1_000)
        .next()
        .map(|b| b.expect("batch").to_tch(Device::Cuda(0)).expect("to cuda"));
    let t = Instant::now();
    let (mut batches, mut bytes) = (0, 0);
    'outer: for e in 0.. {
        for b in l.epoch(e) {
            let b = b.expect("batch");
            bytes += b.nbytes();
            drop(b.to_tch(Device::Cuda(0)).expect("to cuda"));
            batches += 1;
            if batches == n {
                break 'outer;
            }
        }
    }
    Cuda::synchronize(0);
    let staged = bytes as f64 / t.elapsed().as_secs_f64() / 1e9;
    let size = 256 << 20;
    let pinned = Tensor::zeros([(size / 4) as i64], (Kind::Float, TDevice::Cpu))
        .pin_memory(TDevice::Cuda(0));
    let mut gpu = Tensor::zeros([(size / 4) as i64], (Kind::Float, TDevice::Cuda(0)));
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        gpu.copy_(&pinned);
        Cuda::synchronize(0);
        best = best.max(size as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    println!(
        "host-to-device: loader -> CUDA tensors {staged:.2} GB/s ({batches} batches) vs pinned 256 MiB copy {best:.2} GB/s ({:.2}x)",
        staged / best
    );
}

#[cfg(not(feature = "tch"))]
fn h2d_section(_ds: &Arc<deeprc_bridge::WindowDataset>, _n: usize) {
    println!(
        "host-to-device: needs --features tch and a CUDA device (here: {})",
        no_cuda_reason()
    );
}
