//! deeprc-frame benchmark: distributed join, sort and group-by of two 10M-row
//! tables, on 1 and 2 thread ranks and 2 tcp rank processes, beside DataFusion
//! on 2 threads in the same run and the DuckDB / Polars / Dask figures
//! measured on this machine (issue 3).
//!
//! ```text
//! cargo run --release -p deeprc-benches --bin frame_bench             # 10M rows, median of 3
//! cargo run --release -p deeprc-benches --bin frame_bench -- --rows 1000000 --reps 1
//! ```
//!
//! Tables L and R: `key` int64 uniform in [0, 10M) (so the join is about
//! 1:1) and four f64 columns `v0..v3`, generated from a counter hash, so
//! every rank generates its own rows of the same global table. Operators:
//! inner join L, R on key; sort L by key; group-by `key % 1000` with
//! `sum(v0)` (and with the four sums). Each configuration runs in its own
//! process (so peak RSS is its own); times are the slowest rank's, from a
//! barrier to a barrier, shuffles included, median of the repetitions.

use deeprc_comm::tcp::TcpComm;
use deeprc_comm::{local, Communicator};
use deeprc_frame::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use deeprc_frame::arrow::datatypes::{DataType, Field, Schema};
use deeprc_frame::{Agg, DistTable, FrameContext, FrameError, JoinOptions, SortKey, Table};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

const KEY_RANGE: u64 = 10_000_000;
const BATCH: usize = 1 << 16;

/// DuckDB, Polars and Dask on this machine, 2 threads (from the issue).
fn reference(case: &str) -> Vec<(&'static str, f64)> {
    match case {
        "join" => vec![
            ("DataFusion-python", 1.50),
            ("DuckDB", 1.70),
            ("Polars", 2.97),
            ("Dask", 10.5),
        ],
        "sort" => vec![("DuckDB", 1.10), ("Polars", 1.23), ("Dask", 5.56)],
        "groupby" | "groupby4" => vec![("DuckDB", 0.07), ("Polars", 0.36)],
        _ => vec![],
    }
}

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    let base = |c: &mut Command| {
        c.args(["--child", "--case", case, "--backend", backend])
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
    if backend != "tcp" {
        let mut c = Command::new(&exe);
        base(&mut c);
        let out = c.output().unwrap();
        let (times, rss, rows) =
            parse(&String::from_utf8_lossy(&out.stdout)).expect("child result");
        return Outcome {
            median: median(times),
            rss_mb: rss as f64 / 1024.0,
            rows,
        };
    }
    let dir = std::env::temp_dir().join(format!("frame-bench-{}-{case}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kids: Vec<_> = (0..ranks)
        .map(|r| {
            let mut c = Command::new(&exe);
            base(&mut c);
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
    let times = (0..results[0].0.len())
        .map(|i| results.iter().map(|r| r.0[i]).fold(0.0, f64::max))
        .collect();
    Outcome {
        median: median(times),
        rss_mb: results.iter().map(|r| r.1).sum::<u64>() as f64 / 1024.0,
        rows: results.iter().map(|r| r.2).next().unwrap_or(0),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--child") {
        child(&args);
        return;
    }
    let rows: u64 = arg(&args, "--rows").map_or(10_000_000, |v| v.parse().unwrap());
    let reps: usize = arg(&args, "--reps").map_or(3, |v| v.parse().unwrap());
    let cases = arg(&args, "--cases").unwrap_or_else(|| "join,sort,groupby,groupby4".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# frame_bench: L and R of {rows} rows (key int64 in [0, {KEY_RANGE}), v0..v3 f64), median of {reps}, {cores} cores");
    println!("# times in seconds (slowest rank, shuffles included); peak RSS of the process(es) in MiB, inputs included");
    println!();
    println!("| operator | configuration | rows | time (s) | vs DataFusion 2 thr | vs reference | peak RSS (MiB) | output rows |");
    println!("|---|---|---|---|---|---|---|---|");
    for case in cases.split(',') {
        let df = spawn(case, "datafusion", 2, rows, reps);
        let refs = reference(case);
        let goal = refs.iter().find(|(n, _)| *n == "DuckDB").map(|r| r.1);
        let configs: Vec<(&str, &str, usize, u64)> = vec![
            ("DataFusion, 2 threads (in-process)", "datafusion", 2, rows),
            (
                "deeprc 1 thread rank (weak: half rows)",
                "threads",
                1,
                rows / 2,
            ),
            ("deeprc 1 thread rank", "threads", 1, rows),
            ("deeprc 2 thread ranks", "threads", 2, rows),
            ("deeprc 2 tcp rank processes", "tcp", 2, rows),
        ];
        for (label, backend, ranks, n) in configs {
            let o = if backend == "datafusion" {
                df
            } else {
                spawn(case, backend, ranks, n, reps)
            };
            let vs_df = if n == rows {
                format!("{:.2}x", o.median / df.median)
            } else {
                "-".into()
            };
            let vs_ref = match (goal, n == rows) {
                (Some(g), true) => format!("{:.2}x DuckDB", o.median / g),
                _ => "-".into(),
            };
            println!(
                "| {case} | {label} | {n} | {:.3} | {vs_df} | {vs_ref} | {:.0} | {} |",
                o.median, o.rss_mb, o.rows
            );
        }
        let r: Vec<String> = refs.iter().map(|(n, t)| format!("{n} {t:.2} s")).collect();
        println!(
            "| {case} | reference (issue, 2 threads) | {rows} | | | {} | | |",
            r.join(", ")
        );
    }
}
