//! Strong and weak scaling of the hydrology preprocessing (the paper's
//! Figure 4): `deeprc_examples::hydrology::preprocess` (read the forcing
//! and streamflow files, the date-shifted join on (gauge, date), the
//! attribute join, unit conversion, shuffle by gauge, local sort) on 1, 2
//! and 4 ranks, as threads of one process and as tcp rank processes.
//!
//! CAMELS-US here has 4 basins (4,384 rows), too few to scale, so the
//! benchmark writes replicas into a temporary folder: basin `k` of the
//! replica is a copy of real basin `k % 4` under the gauge id
//! `9<k:07>` (files and attribute rows alike). Strong scaling: `--basins`
//! replicas (default 64) whatever the ranks; weak scaling:
//! `--basins-per-rank` (default 16) per rank. Times are the slowest rank's,
//! from a barrier to a barrier, median of `--reps` (default 3), each run in
//! its own process(es).
//!
//! ```text
//! source scripts/env.sh
//! cargo run --release -p deeprc-benches --bin preprocess_scaling -- \
//!     [--basins 64] [--basins-per-rank 16] [--ranks 1,2,4] [--reps 3] [--out out/scaling]
//! ```
//!
//! Prints a Markdown table and draws `<out>/preprocess_scaling.png`.

use deeprc_comm::tcp::TcpComm;
use deeprc_comm::{local, Communicator};
use deeprc_examples::hydrology;
use deeprc_examples::plot::{line_chart, Line};
use deeprc_examples::PipelineError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

type Error = Box<dyn std::error::Error>;

const REAL: [&str; 4] = ["01022500", "01547700", "02064000", "03015500"];

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Writes `n` replica basins under `dir/camels_us_4basins` and returns
/// `dir` (the data folder the pipeline reads).
fn replicate(real: &Path, dir: &Path, n: usize) -> Result<PathBuf, Error> {
    let src = real.join("camels_us_4basins");
    let root = dir.join("camels_us_4basins");
    for sub in ["daymet", "usgs_streamflow", "attributes"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    let forcing: Vec<String> = REAL
        .iter()
        .map(|g| {
            std::fs::read_to_string(src.join(format!("daymet/{g}_lump_cida_forcing_leap.txt")))
        })
        .collect::<Result<_, _>>()?;
    let flow: Vec<String> = REAL
        .iter()
        .map(|g| {
            std::fs::read_to_string(src.join(format!("usgs_streamflow/{g}_streamflow_qc.txt")))
        })
        .collect::<Result<_, _>>()?;
    let id = |k: usize| format!("9{k:07}");
    for k in 0..n {
        let g = id(k);
        std::fs::write(
            root.join(format!("daymet/{g}_lump_cida_forcing_leap.txt")),
            &forcing[k % 4],
        )?;
        let renamed: String = flow[k % 4]
            .lines()
            .map(|l| format!("{g}{}\n", &l[l.find(' ').unwrap_or(0)..]))
            .collect();
        std::fs::write(
            root.join(format!("usgs_streamflow/{g}_streamflow_qc.txt")),
            renamed,
        )?;
    }
    for e in std::fs::read_dir(src.join("attributes"))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("camels_") {
            continue;
        }
        let text = std::fs::read_to_string(e.path())?;
        let mut lines = text.lines();
        let mut out = format!("{}\n", lines.next().unwrap_or_default());
        let rows: Vec<&str> = lines.collect();
        for k in 0..n {
            if let Some(row) = rows.iter().find(|r| r.starts_with(REAL[k % 4])) {
                out.push_str(&format!("{}{}\n", id(k), &row[REAL[k % 4].len()..]));
            }
        }
        std::fs::write(root.join("attributes").join(name), out)?;
    }
    Ok(dir.to_path_buf())
}

/// One rank's preprocessing: seconds from a barrier to a barrier per rep,
/// and the rows.
fn rank_run(
    comm: Arc<dyn Communicator>,
    data: &Path,
    reps: usize,
) -> Result<(Vec<f64>, u64), PipelineError> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..reps {
        comm.barrier()?;
        let t = Instant::now();
        let p = hydrology::preprocess(&comm, data)?;
        rows = p.table.num_rows()?;
        comm.barrier()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok((times, rows))
}

/// Child process: prints `RESULT <t1,t2,..> <rows>`.
fn child(args: &[String]) -> Result<(), Error> {
    let data = PathBuf::from(arg(args, "--data").ok_or("--data")?);
    let backend = arg(args, "--backend").ok_or("--backend")?;
    let ranks: usize = arg(args, "--ranks").ok_or("--ranks")?.parse()?;
    let reps: usize = arg(args, "--reps").ok_or("--reps")?.parse()?;
    let (times, rows) = match backend.as_str() {
        "threads" => {
            let res = local::launch(ranks, |c| rank_run(Arc::new(c), &data, reps))?;
            let times = (0..reps)
                .map(|i| res.iter().map(|r| r.0[i]).fold(0.0, f64::max))
                .collect();
            (times, res[0].1)
        }
        _ => rank_run(Arc::new(TcpComm::from_env()?), &data, reps)?,
    };
    let ts: Vec<String> = times.iter().map(|t| format!("{t:.5}")).collect();
    println!("RESULT {} {rows}", ts.join(","));
    Ok(())
}

fn parse_result(stdout: &str) -> Option<(Vec<f64>, u64)> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "))?;
    let mut it = line.split_whitespace();
    let times = it
        .next()?
        .split(',')
        .filter_map(|t| t.parse().ok())
        .collect();
    Some((times, it.next()?.parse().ok()?))
}

/// Runs one configuration in fresh process(es); (median seconds, rows).
fn spawn(data: &Path, backend: &str, ranks: usize, reps: usize) -> Result<(f64, u64), Error> {
    let exe = std::env::current_exe()?;
    let base = |c: &mut Command| {
        c.args(["--child", "--backend", backend])
            .args(["--ranks", &ranks.to_string(), "--reps", &reps.to_string()])
            .arg("--data")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
    };
    let results: Vec<(Vec<f64>, u64)> = if backend == "threads" {
        let mut c = Command::new(&exe);
        base(&mut c);
        let out = c.output()?;
        vec![parse_result(&String::from_utf8_lossy(&out.stdout))
            .ok_or("no result from the child")?]
    } else {
        let store =
            std::env::temp_dir().join(format!("deeprc-scaling-{}-{ranks}", std::process::id()));
        let kids: Vec<_> = (0..ranks)
            .map(|r| {
                let mut c = Command::new(&exe);
                base(&mut c);
                c.env("DEEPRC_RANK", r.to_string())
                    .env("DEEPRC_WORLD_SIZE", ranks.to_string())
                    .env("DEEPRC_STORE", &store)
                    .env("DEEPRC_TOKEN", "preprocess-scaling-token-0123456789");
                c.spawn()
            })
            .collect::<Result<_, _>>()?;
        let mut res = Vec::new();
        for k in kids {
            let out = k.wait_with_output()?;
            res.push(
                parse_result(&String::from_utf8_lossy(&out.stdout))
                    .ok_or("a rank gave no result")?,
            );
        }
        let _ = std::fs::remove_dir_all(&store);
        res
    };
    let reps_done = results[0].0.len();
    let mut times: Vec<f64> = (0..reps_done)
        .map(|i| results.iter().map(|r| r.0[i]).fold(0.0, f64::max))
        .collect();
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], results[0].1))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let r = if args.iter().any(|a| a == "--child") {
        child(&args)
    } else {
        run(&args)
    };
    if let Err(e) = r {
        eprintln!("preprocess_scaling: {e}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let basins: usize = arg(args, "--basins").map_or(Ok(64), |v| v.parse())?;
    let per_rank: usize = arg(args, "--basins-per-rank").map_or(Ok(16), |v| v.parse())?;
    let reps: usize = arg(args, "--reps").map_or(Ok(3), |v| v.parse())?;
    let ranks: Vec<usize> = arg(args, "--ranks")
        .unwrap_or_else(|| "1,2,4".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let out = PathBuf::from(arg(args, "--out").unwrap_or_else(|| "out/scaling".into()));
    std::fs::create_dir_all(&out)?;
    let real = deeprc_frame::io::data_dir();
    let tmp = std::env::temp_dir().join(format!("deeprc-scaling-data-{}", std::process::id()));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# hydrology preprocessing scaling: {cores} cores, median of {reps}, slowest rank, barrier to barrier");
    println!();
    println!("| scaling | backend | ranks | basins | rows | seconds | speed-up | efficiency |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (kind, basins_of) in [
        (
            "strong",
            Box::new(move |_: usize| basins) as Box<dyn Fn(usize) -> usize>,
        ),
        ("weak", Box::new(move |r: usize| per_rank * r)),
    ] {
        for backend in ["threads", "tcp"] {
            let mut points = Vec::new();
            let mut base = None;
            for &r in &ranks {
                let n = basins_of(r);
                let dir = tmp.join(format!("{n}"));
                if !dir.exists() {
                    replicate(&real, &dir, n)?;
                }
                let (secs, rows) = spawn(&dir, backend, r, reps)?;
                let b = *base.get_or_insert(secs);
                let speedup = b / secs;
                let efficiency = if kind == "strong" {
                    speedup / (r as f64 / ranks[0] as f64)
                } else {
                    speedup
                };
                println!(
                    "| {kind} | {backend} | {r} | {n} | {rows} | {secs:.3} | {speedup:.2} | {:.0}% |",
                    efficiency * 100.0
                );
                points.push((r as f64, secs));
            }
            lines.push((format!("{kind}, {backend}"), points));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let plot = out.join("preprocess_scaling.png");
    let l: Vec<Line<'_>> = lines
        .iter()
        .map(|(label, points)| Line {
            label,
            points: points.clone(),
        })
        .collect();
    line_chart(
        &plot,
        &format!("hydrology preprocessing: {basins} basins (strong), {per_rank} per rank (weak)"),
        ("ranks", "seconds (slowest rank)"),
        &l,
        false,
    )?;
    println!();
    println!("plot: {}", plot.display());
    Ok(())
}
