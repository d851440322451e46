//! Pilot benchmarks (issue 4): task rates and overheads of deeprc-pilot,
//! with the goals and the reference figures measured for Ray, Dask,
//! RADICAL-Pilot and raw process spawning.
//!
//! ```text
//! cargo run --release -p deeprc-benches --bin pilot_bench            # full
//! cargo run --release -p deeprc-benches --bin pilot_bench -- --quick # smaller counts
//! ```
//!
//! - null function tasks, in-process threads and worker processes, against
//!   10x Ray's 1,153 tasks/s;
//! - `/bin/true` tasks against the raw `Command::spawn` + `wait` rate
//!   measured in the same run (before and after; goal: 80%);
//! - communicator creation for 4-rank tasks on threads (goal < 1 ms) and
//!   on processes (goal < 50 ms);
//! - per-task overhead of a 4-rank all-reduce "training" task, against the
//!   ~4 s of the Deep RC paper.
//!
//! The program is its own worker host: it calls
//! `deeprc_pilot::worker::run_if_worker` first.

use deeprc_comm::{CommunicatorExt, ReduceOp};
use deeprc_pilot::{
    FunctionLaunch, PilotDescription, Registry, Session, Stats, Task, TaskContext, TaskDescription,
    TaskManager, TaskState,
};
use std::{
    process::{Command, Stdio},
    time::Instant,
};

const RAY_NULL_PER_S: f64 = 1_153.0;
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
}

fn args() -> Args {
    let quick = std::env::args().any(|a| a == "--quick");
    if quick {
        Args {
            null_tasks: 20_000,
            true_tasks: 2_000,
            raw_spawns: 500,
            comm_tasks: 10,
            train_steps: 20,
        }
    } else {
        Args {
            null_tasks: 100_000,
            true_tasks: 10_000,
            raw_spawns: 2_000,
            comm_tasks: 30,
            train_steps: 100,
        }
    }
}

fn new_session(registry: Registry, desc: PilotDescription) -> (Session, TaskManager) {
    let session = Session::builder()
        .registry(registry)
        .build()
        .expect("session");
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

fn main() {
    let registry = registry();
    deeprc_pilot::worker::run_if_worker(&registry);
    let a = args();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# deeprc-pilot benchmark ({cpus} CPUs available)\n");

    // 1. Null function tasks.
    let mut null_rates = Vec::new();
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let (session, tm) = new_session(registry.clone(), PilotDescription::local());
        let make = move || TaskDescription::function("null").function_launch(launch);
        rate(&tm, 5_000, &make); // warm-up (starts the workers)
        let r = rate(&tm, a.null_tasks, &make);
        let summary = session.close().expect("close");
        let where_ = match launch {
            FunctionLaunch::Threads => "in-process threads",
            _ => "worker processes",
        };
        println!(
            "null function tasks, {where_:<18}: {:>9.0} tasks/s  = {:>5.1}x Ray ({RAY_NULL_PER_S}/s)  [goal 10x: {}]",
            r,
            r / RAY_NULL_PER_S,
            check(r >= 10.0 * RAY_NULL_PER_S)
        );
        println!(
            "    launch overhead {}; completion overhead {}",
            summary.launch_overhead, summary.completion_overhead
        );
        null_rates.push(r);
    }

    // 2. /bin/true against raw spawning, in the same run, with the task
    // sandboxes in the default place (the temporary directory, a disk here)
    // and in memory (/dev/shm): each task's sandbox is a directory and two
    // output files, three metadata operations whose cost depends on the
    // file system.
    let raw_before = raw_spawn_rate(a.raw_spawns);
    let raw_par = raw_parallel_spawn_rate(a.raw_spawns, cpus.max(2));
    let shm = std::path::Path::new("/dev/shm");
    let mut places = vec![("temporary directory", std::env::temp_dir())];
    if shm.is_dir() {
        places.push(("memory (/dev/shm)", shm.to_path_buf()));
    }
    let mut true_rates = Vec::new();
    let mut leftovers = Vec::new();
    for (label, root) in &places {
        let cost = sandbox_cost_us(root, 300);
        let sandbox = root.join(format!("deeprc-pilot-bench-{}", std::process::id()));
        let session = Session::builder()
            .registry(registry.clone())
            .sandbox(&sandbox)
            .build()
            .expect("session");
        let pilot = session
            .pilot_manager()
            .submit(PilotDescription::local())
            .expect("pilot");
        let tm = session.task_manager();
        tm.add_pilot(&pilot).expect("add pilot");
        let make = || TaskDescription::executable(["/bin/true"]);
        rate(&tm, 500, &make);
        let r = rate(&tm, a.true_tasks, &make);
        let summary = session.close().expect("close");
        true_rates.push((*label, r, cost, summary));
        leftovers.push(sandbox);
    }
    let raw_after = raw_spawn_rate(a.raw_spawns);
    let raw = (raw_before + raw_after) / 2.0;
    println!();
    println!(
        "raw spawn+wait of /bin/true, sequential: {raw:>9.0} /s (before {raw_before:.0}, after {raw_after:.0}); {} at a time: {raw_par:.0} /s",
        cpus.max(2)
    );
    for (label, r, cost, summary) in &true_rates {
        println!(
            "/bin/true tasks, sandboxes in {label:<19}: {r:>9.0} tasks/s = {:>5.1}% of raw sequential, {:.1}% of raw parallel [goal 80%: {}]",
            100.0 * r / raw,
            100.0 * r / raw_par,
            check(*r >= 0.8 * raw)
        );
        println!(
            "    creating one sandbox there (mkdir + 2 files) takes {cost:.0} us; launch overhead {}; completion overhead {}",
            summary.launch_overhead, summary.completion_overhead
        );
    }
    println!("    (RADICAL-Pilot measured here: 23.5 /bin/true tasks/s)");
    let pilot_true = true_rates[0].1;

    // 3. Communicator creation for 4-rank tasks.
    println!();
    let four = PilotDescription::local().cores(cpus.max(4));
    let mut comm_medians = Vec::new();
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let (session, tm) = new_session(registry.clone(), four.clone());
        let make = move || {
            TaskDescription::function("comm")
                .ranks(4)
                .function_launch(launch)
        };
        let _ = tm.submit(make()).expect("warm-up").wait();
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
            "4-rank communicator creation, {name:<16}: median {}, p95 {}, max {}  [goal < {}: {}]",
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
        let (session, tm) = new_session(registry.clone(), four.clone());
        let make = move || {
            TaskDescription::function("train")
                .ranks(4)
                .function_launch(launch)
                .try_args(&a.train_steps)
                .expect("args")
        };
        let _ = tm.submit(make()).expect("warm-up").wait();
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
            "4-rank all-reduce training task ({} steps, {name:<9}): overhead median {} (payload {}) = {:.0}x below the paper's ~{PAPER_OVERHEAD_S} s",
            a.train_steps,
            ms(o.p50),
            ms(p.p50),
            PAPER_OVERHEAD_S / o.p50.max(1e-9)
        );
    }
    for dir in leftovers {
        let _ = std::fs::remove_dir_all(dir);
    }
    println!();
    println!(
        "summary: null threads {:.0}/s ({:.1}x Ray), null processes {:.0}/s ({:.1}x Ray), /bin/true {:.0}% of raw ({:.0}% with in-memory sandboxes), comm threads {}, comm processes {}",
        null_rates[0],
        null_rates[0] / RAY_NULL_PER_S,
        null_rates[1],
        null_rates[1] / RAY_NULL_PER_S,
        100.0 * pilot_true / raw,
        100.0 * true_rates.last().map_or(pilot_true, |t| t.1) / raw,
        ms(comm_medians[0]),
        ms(comm_medians[1])
    );
}
