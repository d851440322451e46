//! Pilot benchmarks (issue 4): task rates and overheads of deeprc-pilot,
//! beside Ray, Dask and RADICAL-Pilot measured in the same run on the same
//! machine. Every ratio is between two figures of this run; no constant
//! stands in for a peer.
//!
//! ```text
//! benches/peers/setup.sh        # once: Ray, RADICAL-Pilot, Dask into .venv-bench (PyPI)
//! cargo run --release -p deeprc-benches --bin pilot_bench            # full
//! cargo run --release -p deeprc-benches --bin pilot_bench -- --quick # smaller counts
//! cargo run --release -p deeprc-benches --bin pilot_bench -- --quick --rounds 3 --peers ray,dask
//! cargo run --release -p deeprc-benches --bin pilot_bench -- --million
//! cargo run --release -p deeprc-benches --bin pilot_bench -- --blocked 20000
//! ```
//!
//! Options: `--quick` (smaller counts); `--rounds R` (default 1): sections
//! 1 and 2 run R interleaved rounds, each round running ours and then every
//! peer once, and every figure is the median over the rounds;
//! `--peers LIST` (`ray,dask,radical`, the default, or `none`);
//! `--radical-tasks N` (default 2,000): RADICAL-Pilot runs
//! `min(N, our count)` tasks, as it manages about 15-20 tasks/s here (the
//! table gives every row's count; the ratios are of rates).
//!
//! What is measured:
//!
//! 1. null function tasks, on in-process threads and on worker processes
//!    (a pilot of every detected core), beside Ray (`num_cpus=2`, null
//!    remote functions), Dask distributed (2 workers of 1 thread,
//!    `client.map`) and RADICAL-Pilot (raptor function tasks on a 2-core
//!    `local.localhost` pilot); goal: 10x Ray's rate measured here;
//! 2. `/bin/true` tasks, with the task sandboxes in the temporary directory
//!    and in memory (`/dev/shm`), beside the raw `Command::spawn` + `wait`
//!    rate (before and after; goal: 80%), Ray (a remote task running
//!    `subprocess.run(["/bin/true"])`) and RADICAL-Pilot (executable tasks,
//!    2-core pilot);
//! 3. communicator creation for 4-rank tasks on threads (goal < 1 ms) and
//!    on processes (goal < 50 ms);
//! 4. per-task overhead of a 4-rank all-reduce "training" task (the Deep RC
//!    paper's ~4 s is a published figure, not measured here: printed for
//!    reference, with no ratio);
//! 5. only with `--million` (and then alone): 1,000,000 null function tasks
//!    on in-process threads, with the pilot's task records kept (the
//!    profile) and without (`keep_task_records(false)`): the rate, and the
//!    resident memory (`VmRSS`) after 100,000 and after 1,000,000 tasks,
//!    whose slope is the memory each task leaves behind;
//! 6. only with `--blocked N` (and then alone): N null tasks of 2 cores
//!    each on a pilot of 3 cores, so that one core stays free and every
//!    scheduling pass meets a task that does not fit: the rate, which a
//!    pass walking the whole queue makes fall with N.
//!
//! Each peer runs in a fresh Python process of the benchmark venv,
//! `benches/peers/pilot_peers.py` (its docstring gives the workloads and
//! its output line), with the same task count as ours (RADICAL-Pilot:
//! see `--radical-tasks`); its runtime's start is untimed and reported as
//! startup; the timed part runs from the first submission to the last
//! result, as ours does. The venv's Python is
//! `<CARGO_MANIFEST_DIR>/../.venv-bench/bin/python` unless
//! `DEEPRC_PEERS_PYTHON` names another; the peers get its `bin/` on `PATH`,
//! `VIRTUAL_ENV` and `RADICAL_UTILS_NTPHOST=ntp.invalid` (RADICAL-Pilot
//! then runs offline on `local.localhost`). A peer that fails (no venv, an
//! import error, a timeout of 120 s + 0.2 s per task) prints why and gets
//! no figure; nothing stands in for it. The 1-minute load average
//! (`/proc/loadavg`) is recorded before every measurement and printed
//! beside its figure.
//!
//! The program is its own worker host: it calls
//! `deeprc_pilot::worker::run_if_worker` first.

use deeprc_benches::{load_average, median, peers_python};
use deeprc_comm::{CommunicatorExt, ReduceOp};
use deeprc_pilot::{
    FunctionLaunch, PilotDescription, Registry, Session, SessionBuilder, Stats, Task, TaskContext,
    TaskDescription, TaskManager, TaskState,
};
use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The Deep RC paper's per-task overhead: a published figure, not measured
/// here (printed for reference only, with no ratio).
const PAPER_OVERHEAD_S: f64 = 4.0;

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("null", |_ctx: &TaskContext, _a: &[u8]| {
        Ok::<_, String>(Vec::new())
    });
    // One all-reduce of one value: the communicator is what is measured.
    r.register("comm", |ctx: &TaskContext, _a: &[u8]| {
        let comm = ctx.comm().map_err(|e| e.to_string())?;
        comm.all_reduce_scalar(1u64, ReduceOp::Sum)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(Vec::new())
    });
    // A small data-parallel "training": `steps` steps of local compute on
    // 256 Ki parameters and an all-reduce of the gradient (1 MiB).
    r.register_typed("train", |ctx: &TaskContext, steps: u32| {
        let comm = ctx.comm().map_err(|e| e.to_string())?;
        let n = 256 * 1024;
        let mut w = vec![0.5f32; n];
        let mut g = vec![0f32; n];
        for step in 0..steps {
            for (i, (gi, wi)) in g.iter_mut().zip(&w).enumerate() {
                *gi =
                    (*wi - (i % 7) as f32 * 0.01) * (1.0 + ctx.rank() as f32 + step as f32 * 1e-3);
            }
            comm.all_reduce(&mut g, ReduceOp::Sum)
                .map_err(|e| e.to_string())?;
            let scale = 0.01 / ctx.size() as f32;
            for (wi, gi) in w.iter_mut().zip(&g) {
                *wi -= scale * gi;
            }
        }
        Ok::<_, String>(w[0])
    });
    r
}

struct Args {
    null_tasks: usize,
    true_tasks: usize,
    raw_spawns: usize,
    comm_tasks: usize,
    train_steps: u32,
    rounds: usize,
    peers: Vec<String>,
    radical_tasks: usize,
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let quick = argv.iter().any(|a| a == "--quick");
    let rounds = flag(&argv, "--rounds").map_or(1, |v| v.parse().expect("--rounds N"));
    let peers = match flag(&argv, "--peers").as_deref() {
        None | Some("all") => vec!["ray".into(), "dask".into(), "radical".into()],
        Some("none") => Vec::new(),
        Some(list) => list.split(',').map(str::to_string).collect(),
    };
    let radical_tasks =
        flag(&argv, "--radical-tasks").map_or(2_000, |v| v.parse().expect("--radical-tasks N"));
    let (null_tasks, true_tasks, raw_spawns, comm_tasks, train_steps) = if quick {
        (20_000, 2_000, 500, 10, 20)
    } else {
        (100_000, 10_000, 2_000, 30, 100)
    };
    Args {
        null_tasks,
        true_tasks,
        raw_spawns,
        comm_tasks,
        train_steps,
        rounds: rounds.max(1),
        peers,
        radical_tasks,
    }
}

fn new_session(builder: SessionBuilder, desc: PilotDescription) -> (Session, TaskManager) {
    let session = builder.build().expect("session");
    let pilot = session.pilot_manager().submit(desc).expect("pilot");
    let tm = session.task_manager();
    tm.add_pilot(&pilot).expect("add pilot");
    (session, tm)
}

/// Submits `n` tasks in chunks of 10,000 without waiting between chunks,
/// then waits for all; returns tasks per second.
fn rate(tm: &TaskManager, n: usize, make: &dyn Fn() -> TaskDescription) -> f64 {
    let t0 = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        drop(
            tm.submit_many((0..k).map(|_| make()).collect())
                .expect("submit"),
        );
        left -= k;
    }
    tm.wait_all();
    n as f64 / t0.elapsed().as_secs_f64()
}

/// This process's resident memory in KiB.
fn rss_kib() -> u64 {
    deeprc_pilot::current_rss_bytes().unwrap_or(0) / 1024
}

/// Section 5: a million null tasks, with and without task records.
fn million(registry: &Registry) {
    println!("## 5. 1,000,000 null function tasks on in-process threads\n");
    println!("| task records | tasks | tasks/s (last 900,000) | VmRSS after 100,000 (MiB) | after 1,000,000 (MiB) | growth per task (B) | load |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for keep in [true, false] {
        let (session, tm) = new_session(
            Session::builder()
                .registry(registry.clone())
                .keep_task_records(keep),
            PilotDescription::local(),
        );
        let make = || TaskDescription::function("null");
        rate(&tm, 100_000, &make);
        let before = rss_kib();
        let load = load_average();
        let r = rate(&tm, 900_000, &make);
        let after = rss_kib();
        let (submitted, finished) = tm.counts();
        assert_eq!(
            (submitted, finished),
            (1_000_000, 1_000_000),
            "every task finished"
        );
        let summary = session.close().expect("close");
        assert_eq!(summary.failed, 0);
        println!(
            "| {} | 1,000,000 | {r:.0} | {:.1} | {:.1} | {:.0} | {load:.2} |",
            if keep { "kept" } else { "not kept" },
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            (after as f64 - before as f64) * 1024.0 / 900_000.0
        );
    }
}

/// Section 6: `n` 2-core tasks on a 3-core pilot.
fn blocked(registry: &Registry, n: usize) {
    let (session, tm) = new_session(
        Session::builder()
            .registry(registry.clone())
            .keep_task_records(false),
        PilotDescription::local().cores(3),
    );
    let make = || TaskDescription::function("null").cores_per_rank(2);
    let load = load_average();
    let r = rate(&tm, n, &make);
    let summary = session.close().expect("close");
    assert_eq!(summary.failed, 0);
    println!("## 6. {n} null tasks of 2 cores on a 3-core pilot: {r:.0} tasks/s (load {load:.2})");
}

/// Sequential `Command::spawn` + `wait` of `/bin/true`, per second.
fn raw_spawn_rate(n: usize) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /bin/true")
            .wait()
            .expect("wait");
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// `/bin/true` spawned `k` at a time (each thread spawns and waits), per second.
fn raw_parallel_spawn_rate(n: usize, k: usize) -> f64 {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..k {
            s.spawn(|| raw_spawn_rate(n / k));
        }
    });
    (n / k * k) as f64 / t0.elapsed().as_secs_f64()
}

/// Microseconds to create a task-like sandbox (a directory and two empty
/// files) under `root`, mean over `n`.
fn sandbox_cost_us(root: &std::path::Path, n: usize) -> f64 {
    let base = root.join(format!("deeprc-pilot-bench-probe-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&base);
    let t0 = Instant::now();
    for i in 0..n {
        let d = base.join(format!("task.{i:06}"));
        let _ = std::fs::create_dir(&d);
        for f in ["stdout", "stderr"] {
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join(f));
        }
    }
    let us = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
    let _ = std::fs::remove_dir_all(&base);
    us
}

fn ms(s: f64) -> String {
    format!("{:.3} ms", s * 1e3)
}

fn stats_ns(v: Vec<u64>) -> Stats {
    Stats::from_ns(v)
}

fn check(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// One peer run, as `pilot_peers.py` prints it: `RESULT <tasks done>
/// <seconds> <startup seconds>`.
struct PeerRun {
    tasks: usize,
    seconds: f64,
    startup: f64,
}

fn parse_peer(stdout: &str) -> Option<PeerRun> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "))?;
    let mut it = line.split_whitespace();
    Some(PeerRun {
        tasks: it.next()?.parse().ok()?,
        seconds: it.next()?.parse().ok()?,
        startup: it.next()?.parse().ok()?,
    })
}

/// One workload of `benches/peers/pilot_peers.py` with `tasks` tasks, in a
/// fresh Python process of the benchmark venv; the error says why it gave
/// no figure.
fn spawn_peer(tool: &str, case: &str, tasks: usize) -> Result<PeerRun, String> {
    let python = peers_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/pilot_peers.py");
    // Output to files, not pipes: a runtime process that outlives the
    // peer (a daemon, or one left by a timeout) cannot hold this up.
    let tmp = std::env::temp_dir();
    let stem = format!("pilot-bench-peer-{}-{tool}-{case}", std::process::id());
    let (out_path, err_path) = (
        tmp.join(format!("{stem}.out")),
        tmp.join(format!("{stem}.err")),
    );
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args([
            "--tool",
            tool,
            "--case",
            case,
            "--tasks",
            &tasks.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?)
        .process_group(0);
    // The venv (a Python whose `../pyvenv.cfg` exists) as `activate` sets
    // it up: RADICAL-Pilot starts its agent with the `python` it finds on
    // PATH. And RADICAL-Pilot offline.
    let bin = python.parent().filter(|b| !b.as_os_str().is_empty());
    let venv = bin
        .and_then(Path::parent)
        .filter(|v| v.join("pyvenv.cfg").is_file());
    if let (Some(bin), Some(venv)) = (bin, venv) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)),
        )
        .map_err(|e| format!("PATH: {e}"))?;
        cmd.env("PATH", path).env("VIRTUAL_ENV", venv);
    }
    if std::env::var_os("RADICAL_UTILS_NTPHOST").is_none() {
        cmd.env("RADICAL_UTILS_NTPHOST", "ntp.invalid");
    }
    let limit = Duration::from_secs(120) + Duration::from_millis(200 * tasks as u64);
    let t0 = Instant::now();
    let status = cmd
        .spawn()
        .map_err(|e| format!("{tool} {case}: {} did not start: {e}", python.display()))
        .and_then(|mut child| loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(Some(status)),
                Ok(None) if t0.elapsed() > limit => {
                    // The whole process group: the runtime's processes too.
                    let _ = Command::new("kill")
                        .args(["-KILL", &format!("-{}", child.id())])
                        .status();
                    let _ = child.kill();
                    let _ = child.wait();
                    break Ok(None);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => break Err(format!("{tool} {case}: wait: {e}")),
            }
        });
    let read = |p: &Path| {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(p) {
            let _ = f.read_to_string(&mut s);
        }
        let _ = std::fs::remove_file(p);
        s
    };
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    let why = || {
        stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(nothing on stderr)")
            .trim()
            .to_string()
    };
    let Some(status) = status? else {
        return Err(format!(
            "{tool} {case} ({tasks} tasks) timed out after {} s and was killed: {}",
            limit.as_secs(),
            why()
        ));
    };
    match parse_peer(&stdout) {
        Some(run) if status.success() && run.tasks == tasks => Ok(run),
        run => Err(format!(
            "{tool} {case} ({tasks} tasks) failed ({status}{}): {}",
            run.map(|r| format!(", {} tasks done", r.tasks))
                .unwrap_or_default(),
            why()
        )),
    }
}

/// A workload of `pilot_peers.py`: its `--tool`, `--case` and a label.
struct Peer {
    tool: &'static str,
    case: &'static str,
    label: &'static str,
    /// The name in ratios and in the summary.
    name: &'static str,
}

const NULL_PEERS: [Peer; 3] = [
    Peer {
        tool: "ray",
        case: "null",
        label: "Ray, num_cpus=2, null remote functions",
        name: "Ray",
    },
    Peer {
        tool: "dask",
        case: "null",
        label: "Dask distributed, 2 workers x 1 thread, client.map",
        name: "Dask",
    },
    Peer {
        tool: "radical",
        case: "null",
        label: "RADICAL-Pilot, raptor function tasks, 2-core pilot",
        name: "RADICAL-Pilot",
    },
];

const TRUE_PEERS: [Peer; 2] = [
    Peer {
        tool: "ray",
        case: "bin_true",
        label: "Ray, num_cpus=2, remote subprocess.run /bin/true",
        name: "Ray",
    },
    Peer {
        tool: "radical",
        case: "bin_true",
        label: "RADICAL-Pilot, executable tasks, 2-core pilot",
        name: "RADICAL-Pilot",
    },
];

/// One measurement: tasks per second over `tasks` tasks, the untimed
/// startup (peers only) and the 1-minute load average before it.
#[derive(Clone, Copy)]
struct Figure {
    rate: f64,
    tasks: usize,
    startup: Option<f64>,
    load: f64,
}

/// A row of a table: a label, its figures over the rounds and why any
/// round gave none.
struct Row {
    label: String,
    /// The peer's name in ratios, for peers.
    peer: Option<&'static str>,
    figures: Vec<Figure>,
    failures: Vec<String>,
}

impl Row {
    fn ours(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            peer: None,
            figures: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn peer(p: &Peer) -> Self {
        Self {
            peer: Some(p.name),
            ..Self::ours(p.label)
        }
    }

    /// Records one figure measured now, the load taken before it.
    fn push(&mut self, load: f64, rate: f64, tasks: usize, startup: Option<f64>) {
        eprintln!(
            "pilot_bench: {}: {rate:.0} tasks/s over {tasks} tasks (load {load:.2})",
            self.label
        );
        self.figures.push(Figure {
            rate,
            tasks,
            startup,
            load,
        });
    }

    /// Runs peer `p` once with `tasks` tasks and records its figure, or
    /// why it gave none.
    fn run_peer(&mut self, p: &Peer, tasks: usize) {
        let load = load_average();
        match spawn_peer(p.tool, p.case, tasks) {
            Ok(r) => self.push(
                load,
                r.tasks as f64 / r.seconds.max(1e-9),
                r.tasks,
                Some(r.startup),
            ),
            Err(e) => {
                eprintln!("pilot_bench: {e}");
                self.failures.push(e);
            }
        }
    }

    /// The median over the rounds (rate, startup, load); `None` without
    /// figures.
    fn summary(&self) -> Option<Figure> {
        let f = self.figures.first()?;
        let startups: Vec<f64> = self.figures.iter().filter_map(|f| f.startup).collect();
        Some(Figure {
            rate: median(self.figures.iter().map(|f| f.rate).collect()),
            tasks: f.tasks,
            startup: (!startups.is_empty()).then(|| median(startups)),
            load: median(self.figures.iter().map(|f| f.load).collect()),
        })
    }

    fn rate(&self) -> Option<f64> {
        self.summary().map(|f| f.rate)
    }
}

/// Prints `rows` as a table with a ratio column per `(name, row index)`
/// of ours: that row's rate over this row's; a row without a figure says
/// why.
fn print_table(rows: &[Row], ours: &[(&str, usize)]) {
    let cols: String = ours.iter().map(|(n, _)| format!(" {n} ÷ this |")).collect();
    println!("| runtime | tasks | tasks/s |{cols} startup (s, untimed) | load (1 min) |");
    println!("|---|---|---|{}---|---|", "---|".repeat(ours.len()));
    for row in rows {
        let Some(f) = row.summary() else {
            println!(
                "| {} | - | no figure (see below) |{} - | - |",
                row.label,
                " - |".repeat(ours.len())
            );
            continue;
        };
        let ratios: String = ours
            .iter()
            .map(|&(_, k)| match rows[k].rate() {
                Some(r) => format!(" {:.2}x |", r / f.rate),
                None => " - |".into(),
            })
            .collect();
        let startup = f.startup.map_or("-".into(), |s| format!("{s:.1}"));
        println!(
            "| {} | {} | {:.0} |{ratios} {startup} | {:.2} |",
            row.label, f.tasks, f.rate, f.load
        );
    }
    for row in rows {
        for e in &row.failures {
            println!("    no figure for {}: {e}", row.label);
        }
    }
}

/// `ours` against every peer row of `rows`: "3.2x Ray, 7.1x Dask, no
/// RADICAL-Pilot figure".
fn versus(ours: Option<f64>, rows: &[Row]) -> String {
    rows.iter()
        .filter_map(|row| {
            let name = row.peer?;
            Some(match (ours, row.rate()) {
                (Some(o), Some(p)) => format!("{:.1}x {name}", o / p),
                _ => format!("no {name} figure"),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let registry = registry();
    deeprc_pilot::worker::run_if_worker(&registry);
    if std::env::args().any(|a| a == "--million") {
        million(&registry);
        return;
    }
    let argv: Vec<String> = std::env::args().collect();
    if let Some(n) = flag(&argv, "--blocked") {
        blocked(&registry, n.parse().expect("--blocked N"));
        return;
    }
    let a = args();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = |p: &&Peer| a.peers.iter().any(|w| w == p.tool);
    let peer_tasks = |p: &Peer, n: usize| {
        if p.tool == "radical" {
            n.min(a.radical_tasks)
        } else {
            n
        }
    };
    let null_peers: Vec<&Peer> = NULL_PEERS.iter().filter(wanted).collect();
    let true_peers: Vec<&Peer> = TRUE_PEERS.iter().filter(wanted).collect();
    println!(
        "# deeprc-pilot benchmark ({cpus} CPUs available; {} round(s); peers: {}; every figure from this run)\n",
        a.rounds,
        if a.peers.is_empty() {
            "none".to_string()
        } else {
            a.peers.join(",")
        }
    );

    // Sections 1 and 2, in interleaved rounds: ours, then every peer.
    let mut null_rows = vec![
        Row::ours(format!("deeprc-pilot, in-process threads ({cpus} cores)")),
        Row::ours(format!("deeprc-pilot, worker processes ({cpus} cores)")),
    ];
    null_rows.extend(null_peers.iter().map(|p| Row::peer(p)));
    let mut null_overheads = Vec::new();
    let shm = Path::new("/dev/shm");
    let mut places = vec![("temporary directory", "tmp", std::env::temp_dir())];
    if shm.is_dir() {
        places.push(("memory (/dev/shm)", "shm", shm.to_path_buf()));
    }
    let k = cpus.max(2);
    let mut true_rows = vec![
        Row::ours("raw spawn+wait of /bin/true, sequential, before"),
        Row::ours(format!("raw spawn+wait of /bin/true, {k} at a time")),
    ];
    true_rows.extend(
        places
            .iter()
            .map(|(label, _, _)| Row::ours(format!("deeprc-pilot, sandboxes in {label}"))),
    );
    true_rows.push(Row::ours("raw spawn+wait of /bin/true, sequential, after"));
    let after = true_rows.len() - 1;
    true_rows.extend(true_peers.iter().map(|p| Row::peer(p)));
    let mut true_details = Vec::new();
    for round in 0..a.rounds {
        eprintln!("pilot_bench: round {}/{}", round + 1, a.rounds);
        // 1. Null function tasks.
        null_overheads.clear();
        for (i, launch) in [FunctionLaunch::Threads, FunctionLaunch::Processes]
            .into_iter()
            .enumerate()
        {
            let (session, tm) = new_session(
                Session::builder().registry(registry.clone()),
                PilotDescription::local(),
            );
            let make = move || TaskDescription::function("null").function_launch(launch);
            rate(&tm, 5_000, &make); // warm-up (starts the workers)
            let load = load_average();
            let r = rate(&tm, a.null_tasks, &make);
            let summary = session.close().expect("close");
            null_rows[i].push(load, r, a.null_tasks, None);
            null_overheads.push((
                summary.launch_overhead.to_string(),
                summary.completion_overhead.to_string(),
            ));
        }
        for (j, p) in null_peers.iter().enumerate() {
            null_rows[2 + j].run_peer(p, peer_tasks(p, a.null_tasks));
        }

        // 2. /bin/true against raw spawning, with the task sandboxes in the
        // default place (the temporary directory, a disk here) and in
        // memory (/dev/shm): each task's sandbox is a directory and two
        // output files, three metadata operations whose cost depends on
        // the file system.
        let load = load_average();
        true_rows[0].push(load, raw_spawn_rate(a.raw_spawns), a.raw_spawns, None);
        let load = load_average();
        true_rows[1].push(
            load,
            raw_parallel_spawn_rate(a.raw_spawns, k),
            a.raw_spawns / k * k,
            None,
        );
        true_details.clear();
        for (i, (_, _, root)) in places.iter().enumerate() {
            let cost = sandbox_cost_us(root, 300);
            let sandbox = root.join(format!("deeprc-pilot-bench-{}", std::process::id()));
            let (session, tm) = new_session(
                Session::builder()
                    .registry(registry.clone())
                    .sandbox(&sandbox),
                PilotDescription::local(),
            );
            let make = || TaskDescription::executable(["/bin/true"]);
            rate(&tm, 500, &make);
            let load = load_average();
            let r = rate(&tm, a.true_tasks, &make);
            let summary = session.close().expect("close");
            let _ = std::fs::remove_dir_all(&sandbox);
            true_rows[2 + i].push(load, r, a.true_tasks, None);
            true_details.push((
                cost,
                summary.launch_overhead.to_string(),
                summary.completion_overhead.to_string(),
            ));
        }
        let load = load_average();
        true_rows[after].push(load, raw_spawn_rate(a.raw_spawns), a.raw_spawns, None);
        for (j, p) in true_peers.iter().enumerate() {
            true_rows[after + 1 + j].run_peer(p, peer_tasks(p, a.true_tasks));
        }
    }

    println!(
        "## null function tasks (ours: a pilot of {cpus} cores; the peers: 2 CPUs, 2 workers, \
         a 2-core pilot; median of {} round(s))\n",
        a.rounds
    );
    print_table(&null_rows, &[("threads", 0), ("processes", 1)]);
    if cpus != 2 {
        println!("    note: ours uses {cpus} cores, the peers 2");
    }
    for (i, (launch, completion)) in null_overheads.iter().enumerate() {
        println!(
            "    {}: launch overhead {launch}; completion overhead {completion}",
            ["threads", "processes"][i]
        );
    }
    let ray_null = null_rows
        .iter()
        .find(|r| r.peer == Some("Ray"))
        .and_then(Row::rate);
    for (i, name) in ["threads", "processes"].into_iter().enumerate() {
        match (null_rows[i].rate(), ray_null) {
            (Some(r), Some(ray)) => println!(
                "    goal 10x Ray's rate measured here, {name}: {:.1}x [{}]",
                r / ray,
                check(r >= 10.0 * ray)
            ),
            _ => println!("    goal 10x Ray, {name}: no Ray figure in this run, not checked"),
        }
    }

    println!(
        "\n## /bin/true tasks (ours: a pilot of {cpus} cores; the peers: 2 CPUs, a 2-core pilot; \
         median of {} round(s))\n",
        a.rounds
    );
    let ours_true: Vec<(&str, usize)> = places
        .iter()
        .enumerate()
        .map(|(i, (_, short, _))| (*short, 2 + i))
        .collect();
    print_table(&true_rows, &ours_true);
    let raw = match (true_rows[0].rate(), true_rows[after].rate()) {
        (Some(b), Some(f)) => (b + f) / 2.0,
        _ => f64::NAN,
    };
    let raw_par = true_rows[1].rate().unwrap_or(f64::NAN);
    for (i, (label, _, _)) in places.iter().enumerate() {
        let r = true_rows[2 + i].rate().unwrap_or(f64::NAN);
        println!(
            "    sandboxes in {label:<19}: {:>5.1}% of raw sequential ({raw:.0}/s, mean of before and after), {:.1}% of raw parallel [goal 80%: {}]",
            100.0 * r / raw,
            100.0 * r / raw_par,
            check(r >= 0.8 * raw)
        );
        if let Some((cost, launch, completion)) = true_details.get(i) {
            println!(
                "        creating one sandbox there (mkdir + 2 files) takes {cost:.0} us; launch overhead {launch}; completion overhead {completion}"
            );
        }
    }
    let pilot_true = true_rows[2].rate();
    let pilot_true_last = true_rows[after - 1].rate();

    // 3. Communicator creation for 4-rank tasks.
    println!("\n## communicator creation and per-task overhead");
    println!();
    let four = PilotDescription::local().cores(cpus.max(4));
    let mut comm_medians = Vec::new();
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let (session, tm) =
            new_session(Session::builder().registry(registry.clone()), four.clone());
        let make = move || {
            TaskDescription::function("comm")
                .ranks(4)
                .function_launch(launch)
        };
        let _ = tm.submit(make()).expect("warm-up").wait();
        let load = load_average();
        let tasks: Vec<Task> = (0..a.comm_tasks)
            .map(|_| {
                let t = tm.submit(make()).expect("submit");
                assert_eq!(t.wait(), TaskState::Done, "{:?}", t.reason());
                t
            })
            .collect();
        let st = stats_ns(
            tasks
                .iter()
                .map(|t| t.comm_creation_time().as_nanos() as u64)
                .collect(),
        );
        session.close().expect("close");
        let (goal, name) = match launch {
            FunctionLaunch::Threads => (1e-3, "threads (local)"),
            _ => (50e-3, "processes (tcp)"),
        };
        println!(
            "4-rank communicator creation, {name:<16}: median {}, p95 {}, max {}  [goal < {}: {}]  [load {load:.2}]",
            ms(st.p50),
            ms(st.p95),
            ms(st.max),
            ms(goal),
            check(st.p50 < goal)
        );
        comm_medians.push(st.p50);
    }

    // 4. Per-task overhead of a 4-rank all-reduce training task.
    println!();
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let (session, tm) =
            new_session(Session::builder().registry(registry.clone()), four.clone());
        let make = move || {
            TaskDescription::function("train")
                .ranks(4)
                .function_launch(launch)
                .try_args(&a.train_steps)
                .expect("args")
        };
        let _ = tm.submit(make()).expect("warm-up").wait();
        let load = load_average();
        let tasks: Vec<Task> = (0..5)
            .map(|_| {
                let t = tm.submit(make()).expect("submit");
                assert_eq!(t.wait(), TaskState::Done, "{:?}", t.reason());
                t
            })
            .collect();
        let overhead: Vec<u64> = tasks
            .iter()
            .map(|t| {
                let ts = t.timestamps();
                (ts.finished - ts.new).saturating_sub(ts.exec_end - ts.exec_start)
            })
            .collect();
        let payload: Vec<u64> = tasks
            .iter()
            .map(|t| {
                let ts = t.timestamps();
                ts.exec_end - ts.exec_start
            })
            .collect();
        let o = stats_ns(overhead);
        let p = stats_ns(payload);
        session.close().expect("close");
        let name = match launch {
            FunctionLaunch::Threads => "threads",
            _ => "processes",
        };
        println!(
            "4-rank all-reduce training task ({} steps, {name:<9}): overhead median {} (payload {})  [load {load:.2}]",
            a.train_steps,
            ms(o.p50),
            ms(p.p50),
        );
    }
    println!(
        "    (the Deep RC paper reports ~{PAPER_OVERHEAD_S} s per task: a published figure (paper), not measured here; no ratio)"
    );
    println!();
    let fmt = |r: Option<f64>| r.map_or("no figure".into(), |r| format!("{r:.0}/s"));
    let peers_true = &true_rows[after + 1..];
    println!(
        "summary (every figure and ratio from this run): null threads {} ({}), null processes {} ({}); \
         /bin/true {} = {:.0}% of raw ({}), with in-memory sandboxes {} = {:.0}% of raw ({}); \
         comm threads {}, comm processes {}",
        fmt(null_rows[0].rate()),
        versus(null_rows[0].rate(), &null_rows),
        fmt(null_rows[1].rate()),
        versus(null_rows[1].rate(), &null_rows),
        fmt(pilot_true),
        100.0 * pilot_true.unwrap_or(f64::NAN) / raw,
        versus(pilot_true, peers_true),
        fmt(pilot_true_last),
        100.0 * pilot_true_last.unwrap_or(f64::NAN) / raw,
        versus(pilot_true_last, peers_true),
        ms(comm_medians[0]),
        ms(comm_medians[1])
    );
}
