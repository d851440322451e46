//! deeprc-frame benchmark: distributed join, sort and group-by of two 10M-row
//! tables, on 1 and 2 thread ranks and 2 tcp rank processes, beside the tools
//! a user would pick instead, all measured in the same run on the same rows:
//! DataFusion (Rust, in-process, 2 threads) and, through
//! `benches/peers/frame_peers.py` in the benchmark venv, DuckDB, Polars,
//! pandas, DataFusion's Python bindings and Dask (distributed, 2 workers).
//!
//! ```text
//! benches/peers/setup.sh        # once: the peers into .venv-bench (PyPI)
//! cargo run --release -p deeprc-benches --bin frame_bench             # 10M rows, 3 rounds
//! cargo run --release -p deeprc-benches --bin frame_bench -- --rows 1000000 --rounds 1 --peers duckdb,polars
//! # 3 ranks on one host and on 3 hosts of the namespace Slurm cluster (srun), tcp and UCX:
//! cargo build --release -p deeprc-benches --features ucx --bin frame_bench
//! (cd target/hosts-bench && ../release/frame_bench --hosts --cases join,sort)
//! ```
//!
//! With `--hosts` the configurations are 3 process ranks on this host and 3
//! ranks on 3 nodes of `scripts/netns-slurm.sh up 3 4` started by `srun`
//! (each rank finds its place from Slurm's variables), over tcp and, with
//! the `ucx` feature, UCX; no peers. Run it from a folder every node sees
//! (not /tmp).
//!
//! Tables L and R: `key` int64 uniform in [0, 10M) (so the join is about
//! 1:1) and four f64 columns `v0..v3`, generated from a counter hash, so
//! every rank generates its own rows of the same global table; the same rows
//! are written once as Parquet (`target/frame-bench-data/`) for the peers,
//! which load them before the clock starts. Operators: inner join L, R on
//! key; sort L by key; group-by `key % 1000` with `sum(v0)` (and with the
//! four sums); every result is materialised in memory. Every configuration
//! and every peer runs in a fresh process, one operator per process (run
//! twice: the first run warms up page faults, thread pools and allocators,
//! the second is timed, on both sides alike), and
//! the rounds are interleaved (round 1 runs everything once, then round 2,
//! ...), so drift in the machine's load spreads over all of them; the
//! 1-minute load average is recorded beside each figure. Deep RC's times are
//! the slowest rank's, from a barrier to a barrier, shuffles included. The
//! figure is the median over rounds; a peer that fails gets no figure and
//! nothing stands in for it.

use deeprc_benches::{load_average, median, peers_python};
use deeprc_comm::tcp::TcpComm;
use deeprc_comm::{local, Communicator};
use deeprc_frame::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use deeprc_frame::arrow::datatypes::{DataType, Field, Schema};
use deeprc_frame::{
    io::write_parquet, Agg, DistTable, FrameContext, FrameError, JoinOptions, SortKey, Table,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

const KEY_RANGE: u64 = 10_000_000;
const BATCH: usize = 1 << 16;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rows `lo..hi` of table `seed` (L = 1, R = 2).
fn gen(seed: u64, lo: u64, hi: u64) -> Table {
    let schema = Arc::new(Schema::new(
        std::iter::once(Field::new("key", DataType::Int64, false))
            .chain((0..4).map(|i| Field::new(format!("v{i}"), DataType::Float64, false)))
            .collect::<Vec<_>>(),
    ));
    let mut batches = Vec::new();
    let mut start = lo;
    while start < hi {
        let end = (start + BATCH as u64).min(hi);
        let key: Int64Array = (start..end)
            .map(|i| (splitmix(seed << 40 ^ i) % KEY_RANGE) as i64)
            .collect();
        let mut cols: Vec<ArrayRef> = vec![Arc::new(key)];
        for c in 0..4u64 {
            let v: Float64Array = (start..end)
                .map(|i| {
                    (splitmix((seed << 40 ^ i).wrapping_add(c + 1)) >> 11) as f64
                        / (1u64 << 53) as f64
                })
                .collect();
            cols.push(Arc::new(v));
        }
        batches.push(RecordBatch::try_new(Arc::clone(&schema), cols).unwrap());
        start = end;
    }
    Table::try_new(schema, batches).unwrap()
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The figure of one process's repetitions: the first is a warm-up (page
/// faults, thread pools, allocator) when there are more; the median of the
/// rest.
fn warm(times: Vec<f64>) -> f64 {
    if times.len() > 1 {
        median(times[1..].to_vec())
    } else {
        median(times)
    }
}

/// Runs `case` on this rank `reps` times; returns (times, output rows).
fn run_rank(
    comm: Arc<dyn Communicator>,
    case: &str,
    rows: u64,
    reps: usize,
) -> Result<(Vec<f64>, u64), FrameError> {
    let (r, n) = (comm.rank() as u64, comm.size() as u64);
    let (lo, hi) = (rows * r / n, rows * (r + 1) / n);
    let l = DistTable::new(gen(1, lo, hi), Arc::clone(&comm))?;
    let rt = DistTable::new(gen(2, lo, hi), Arc::clone(&comm))?;
    let mut times = Vec::new();
    let mut out_rows = 0;
    for _ in 0..reps {
        comm.barrier()?;
        let t = Instant::now();
        let out = match case {
            "join" => l.join(&rt, &JoinOptions::on(&["key"]))?,
            "sort" => l.sort(&[SortKey::asc("key")])?,
            "groupby" => l
                .with_column_sql("g", "key % 1000")?
                .group_by(&["g"], &[Agg::sum("v0")])?,
            "groupby4" => l.with_column_sql("g", "key % 1000")?.group_by(
                &["g"],
                &[
                    Agg::sum("v0"),
                    Agg::sum("v1"),
                    Agg::sum("v2"),
                    Agg::sum("v3"),
                ],
            )?,
            other => {
                return Err(FrameError::InvalidArgument {
                    op: "frame_bench",
                    reason: format!("unknown case {other}"),
                })
            }
        };
        comm.barrier()?;
        times.push(t.elapsed().as_secs_f64());
        out_rows = out.num_rows()?;
        drop(out);
    }
    Ok((times, out_rows))
}

fn run_datafusion(case: &str, rows: u64, reps: usize) -> (Vec<f64>, u64) {
    let ctx = FrameContext::with_threads(2).unwrap();
    // Two partitions per table, as two threads would read them.
    let mem = |seed| {
        let parts: Vec<Vec<RecordBatch>> = (0..2)
            .map(|p| gen(seed, rows * p / 2, rows * (p + 1) / 2).into_batches())
            .collect();
        let schema = parts[0][0].schema();
        Arc::new(deeprc_frame::datafusion::datasource::MemTable::try_new(schema, parts).unwrap())
    };
    ctx.session().register_table("l", mem(1)).unwrap();
    ctx.session().register_table("r", mem(2)).unwrap();
    let q = match case {
        "join" => "SELECT * FROM l JOIN r ON l.key = r.key",
        "sort" => "SELECT * FROM l ORDER BY key",
        "groupby" => "SELECT key % 1000 AS g, sum(v0) FROM l GROUP BY g",
        "groupby4" => {
            "SELECT key % 1000 AS g, sum(v0), sum(v1), sum(v2), sum(v3) FROM l GROUP BY g"
        }
        _ => unreachable!(),
    };
    let mut times = Vec::new();
    let mut out_rows = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let out = ctx.sql(q).unwrap();
        times.push(t.elapsed().as_secs_f64());
        out_rows = out.num_rows() as u64;
    }
    (times, out_rows)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Child process: one configuration; prints `RESULT <times> <rss_kb> <rows>`.
fn child(args: &[String]) {
    let case = arg(args, "--case").unwrap();
    let backend = arg(args, "--backend").unwrap();
    let ranks: usize = arg(args, "--ranks").unwrap().parse().unwrap();
    let rows: u64 = arg(args, "--rows").unwrap().parse().unwrap();
    let reps: usize = arg(args, "--reps").unwrap().parse().unwrap();
    let (times, out_rows) = match backend.as_str() {
        "datafusion" => run_datafusion(&case, rows, reps),
        "threads" => {
            let res = local::launch(ranks, |c| run_rank(Arc::new(c), &case, rows, reps)).unwrap();
            let times = (0..reps)
                .map(|i| res.iter().map(|(t, _)| t[i]).fold(0.0, f64::max))
                .collect();
            (times, res[0].1)
        }
        "tcp" => {
            let comm = TcpComm::from_env().unwrap();
            run_rank(Arc::new(comm), &case, rows, reps).unwrap()
        }
        // Started by srun or with DEEPRC_BACKEND set: whatever it names.
        "env" => run_rank(deeprc_comm::from_env().unwrap(), &case, rows, reps).unwrap(),
        _ => unreachable!(),
    };
    let ts: Vec<String> = times.iter().map(|t| format!("{t:.4}")).collect();
    println!("RESULT {} {} {}", ts.join(","), peak_rss_kb(), out_rows);
}

#[derive(Clone, Copy)]
struct Outcome {
    median: f64,
    rss_mb: f64,
    rows: u64,
}

fn parse(stdout: &str) -> Option<(Vec<f64>, u64, u64)> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "))?;
    let mut it = line.split_whitespace();
    let times = it
        .next()?
        .split(',')
        .filter_map(|t| t.parse().ok())
        .collect();
    Some((times, it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn spawn(case: &str, backend: &str, ranks: usize, rows: u64, reps: usize) -> Outcome {
    let exe = std::env::current_exe().unwrap();
    // The child's arguments; `child_backend` is what the child runs
    // ("env": the communicator deeprc_comm::from_env() makes).
    let base = |c: &mut Command, child_backend: &str| {
        c.args(["--child", "--case", case, "--backend", child_backend])
            .args([
                "--ranks",
                &ranks.to_string(),
                "--rows",
                &rows.to_string(),
                "--reps",
                &reps.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
    };
    if let Some(b) = backend.strip_prefix("hosts-") {
        // One rank per node of the namespace cluster, started by srun.
        let mut c = Command::new("srun");
        c.args(["-N", &ranks.to_string(), "--ntasks-per-node=1", "-t", "20"])
            .arg(&exe);
        base(&mut c, "env");
        c.env("DEEPRC_BACKEND", b)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let results: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("RESULT "))
            .filter_map(parse)
            .collect();
        assert_eq!(results.len(), ranks, "srun {backend}: {text}");
        return combine(&results);
    }
    // Process ranks on this host: tcp as such, or `local-<backend>` through
    // deeprc_comm::from_env with DEEPRC_BACKEND.
    let local = backend.strip_prefix("local-");
    if backend != "tcp" && local.is_none() {
        let mut c = Command::new(&exe);
        base(&mut c, backend);
        let out = c.output().unwrap();
        let (times, rss, rows) =
            parse(&String::from_utf8_lossy(&out.stdout)).expect("child result");
        return Outcome {
            median: warm(times),
            rss_mb: rss as f64 / 1024.0,
            rows,
        };
    }
    let dir = std::env::temp_dir().join(format!("frame-bench-{}-{case}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kids: Vec<_> = (0..ranks)
        .map(|r| {
            let mut c = Command::new(&exe);
            base(&mut c, if local.is_some() { "env" } else { backend });
            if let Some(b) = local {
                c.env("DEEPRC_BACKEND", b);
            }
            c.env("DEEPRC_RANK", r.to_string())
                .env("DEEPRC_WORLD_SIZE", ranks.to_string())
                .env("DEEPRC_STORE", dir.display().to_string())
                .env("DEEPRC_TOKEN", "frame-bench-token-0123456789");
            c.spawn().unwrap()
        })
        .collect();
    let results: Vec<_> = kids
        .into_iter()
        .map(|k| {
            parse(&String::from_utf8_lossy(
                &k.wait_with_output().unwrap().stdout,
            ))
            .expect("rank result")
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    combine(&results)
}

/// The outcome of a run whose ranks each printed a result: the slowest
/// rank's time per repetition, the sum of their peak RSS.
fn combine(results: &[(Vec<f64>, u64, u64)]) -> Outcome {
    let times = (0..results[0].0.len())
        .map(|i| results.iter().map(|r| r.0[i]).fold(0.0, f64::max))
        .collect();
    Outcome {
        median: warm(times),
        rss_mb: results.iter().map(|r| r.1).sum::<u64>() as f64 / 1024.0,
        rows: results.iter().map(|r| r.2).next().unwrap_or(0),
    }
}

/// The peers of `benches/peers/frame_peers.py`: its `--tool` and a label.
const PEERS: [(&str, &str); 5] = [
    ("duckdb", "DuckDB, 2 threads"),
    ("polars", "Polars, 2 threads"),
    ("datafusion", "DataFusion-python, 2 partitions"),
    ("pandas", "pandas (1 thread by design)"),
    ("dask", "Dask distributed, 2 worker processes"),
];

/// L and R of `rows` rows as Parquet, written once (the rows the ranks
/// generate, in one file each); their paths.
fn parquet_data(rows: u64) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/frame-bench-data")
        .join(format!("rows-{rows}"));
    let (l, r) = (dir.join("L.parquet"), dir.join("R.parquet"));
    if !(l.exists() && r.exists()) {
        std::fs::create_dir_all(&dir).unwrap();
        for (seed, path) in [(1, &l), (2, &r)] {
            let part = path.with_extension("parquet.part");
            write_parquet(&gen(seed, 0, rows), &part).unwrap();
            std::fs::rename(&part, path).unwrap();
        }
    }
    (l, r)
}

/// One peer on one operator, in a fresh Python process; the error names
/// why it gave no figure.
fn spawn_peer(
    tool: &str,
    case: &str,
    data: &(PathBuf, PathBuf),
    reps: usize,
) -> Result<Outcome, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/frame_peers.py");
    let out = Command::new(peers_python())
        .arg(script)
        .args(["--tool", tool, "--case", case, "--threads", "2"])
        .args(["--reps", &reps.to_string()])
        .arg("--left")
        .arg(&data.0)
        .arg("--right")
        .arg(&data.1)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{} did not start: {e}", peers_python().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match parse(&stdout) {
        Some((times, rss, rows)) if out.status.success() => Ok(Outcome {
            median: warm(times),
            rss_mb: rss as f64 / 1024.0,
            rows,
        }),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "{tool} {case} failed ({}): {}",
                out.status,
                err.lines().last().unwrap_or("")
            ))
        }
    }
}

/// What one row of the table runs.
enum Runner {
    /// Deep RC (or in-process DataFusion): backend, ranks, rows.
    Ours(&'static str, usize, u64),
    /// A tool of `frame_peers.py`.
    Peer(&'static str),
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--child") {
        child(&args);
        return;
    }
    let rows: u64 = arg(&args, "--rows").map_or(10_000_000, |v| v.parse().unwrap());
    let rounds: usize = arg(&args, "--rounds")
        .or_else(|| arg(&args, "--reps"))
        .map_or(3, |v| v.parse().unwrap());
    let cases = arg(&args, "--cases").unwrap_or_else(|| "join,sort,groupby,groupby4".into());
    let wanted = arg(&args, "--peers").unwrap_or_else(|| "all".into());
    let hosts = args.iter().any(|a| a == "--hosts");
    let peers: Vec<(&str, &str)> = PEERS
        .iter()
        .copied()
        .filter(|(t, _)| !hosts && (wanted == "all" || wanted.split(',').any(|w| w == *t)))
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut configs: Vec<(String, Runner)> = vec![
        (
            "DataFusion (Rust), 2 threads, in-process".into(),
            Runner::Ours("datafusion", 2, rows),
        ),
        (
            "deeprc 1 thread rank (weak: half rows)".into(),
            Runner::Ours("threads", 1, rows / 2),
        ),
        (
            "deeprc 1 thread rank".into(),
            Runner::Ours("threads", 1, rows),
        ),
        (
            "deeprc 2 thread ranks".into(),
            Runner::Ours("threads", 2, rows),
        ),
        (
            "deeprc 2 tcp rank processes".into(),
            Runner::Ours("tcp", 2, rows),
        ),
    ];
    configs.extend(peers.iter().map(|(t, l)| (l.to_string(), Runner::Peer(t))));
    if hosts {
        configs.truncate(1); // DataFusion (Rust), the ratios' base
        configs.push((
            "deeprc 1 thread rank".into(),
            Runner::Ours("threads", 1, rows),
        ));
        let mut backends = vec!["tcp"];
        if cfg!(feature = "ucx") {
            backends.push("ucx");
        }
        for b in backends {
            let (local, hosts): (&'static str, &'static str) = match b {
                "tcp" => ("local-tcp", "hosts-tcp"),
                _ => ("local-ucx", "hosts-ucx"),
            };
            configs.push((
                format!("deeprc 3 {b} ranks, one host"),
                Runner::Ours(local, 3, rows),
            ));
            configs.push((
                format!("deeprc 3 {b} ranks, 3 namespace hosts (srun)"),
                Runner::Ours(hosts, 3, rows),
            ));
        }
    }
    let data = if peers.is_empty() {
        None
    } else {
        eprintln!("frame_bench: writing the tables as Parquet for the peers (once per size)");
        Some(parquet_data(rows))
    };
    let cases: Vec<&str> = cases.split(',').collect();
    // results[case][config]: (outcome, load) per round, or why it failed.
    let mut results: Vec<Vec<Vec<(Outcome, f64)>>> =
        vec![vec![Vec::new(); configs.len()]; cases.len()];
    let mut failures: Vec<String> = Vec::new();
    for round in 0..rounds {
        for (ci, case) in cases.iter().enumerate() {
            for (k, (label, runner)) in configs.iter().enumerate() {
                let load = load_average();
                let outcome = match runner {
                    Runner::Ours(backend, ranks, n) => Ok(spawn(case, backend, *ranks, *n, 2)),
                    Runner::Peer(tool) => spawn_peer(tool, case, data.as_ref().unwrap(), 2),
                };
                match outcome {
                    Ok(o) => {
                        eprintln!(
                            "frame_bench: round {}/{rounds} {case} {label}: {:.3} s (load {load:.2})",
                            round + 1,
                            o.median
                        );
                        results[ci][k].push((o, load));
                    }
                    Err(e) => {
                        eprintln!("frame_bench: {e}");
                        failures.push(e);
                    }
                }
            }
        }
    }
    println!(
        "# frame_bench: L and R of {rows} rows (key int64 in [0, {KEY_RANGE}), v0..v3 f64), \
         median of {rounds} interleaved rounds, {cores} cores"
    );
    println!(
        "# times in seconds (Deep RC: slowest rank, shuffles included; peers: the operator \
         with its result materialised, Parquet load not timed); peak RSS of the process(es) \
         in MiB, inputs included; every figure from this run"
    );
    println!();
    println!(
        "| operator | configuration | rows | time (s) | ÷ DuckDB | ÷ DataFusion (Rust) | peak RSS (MiB) | output rows | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (ci, case) in cases.iter().enumerate() {
        let summary = |k: usize| -> Option<(Outcome, f64)> {
            let runs = &results[ci][k];
            if runs.is_empty() {
                return None;
            }
            let mut o = runs[0].0;
            o.median = median(runs.iter().map(|r| r.0.median).collect());
            o.rss_mb = runs.iter().map(|r| r.0.rss_mb).fold(0.0, f64::max);
            Some((o, median(runs.iter().map(|r| r.1).collect())))
        };
        let duckdb = configs
            .iter()
            .position(|(_, r)| matches!(r, Runner::Peer("duckdb")))
            .and_then(summary);
        let df = summary(0);
        for (k, (label, runner)) in configs.iter().enumerate() {
            let n = match runner {
                Runner::Ours(_, _, n) => *n,
                Runner::Peer(_) => rows,
            };
            let Some((o, load)) = summary(k) else {
                println!("| {case} | {label} | {n} | failed (see above) | | | | | |");
                continue;
            };
            let ratio = |base: Option<(Outcome, f64)>| match base {
                Some((b, _)) if n == rows => format!("{:.2}x", o.median / b.median),
                _ => "-".into(),
            };
            let rows_note = match df {
                Some((d, _)) if n == rows && d.rows != o.rows => {
                    format!("{} (≠ {})", o.rows, d.rows)
                }
                _ => o.rows.to_string(),
            };
            println!(
                "| {case} | {label} | {n} | {:.3} | {} | {} | {:.0} | {rows_note} | {load:.2} |",
                o.median,
                ratio(duckdb),
                ratio(df),
                o.rss_mb,
            );
        }
    }
    if !failures.is_empty() {
        println!();
        println!("failed runs (no figure, no stand-in):");
        for f in &failures {
            println!("- {f}");
        }
    }
}
