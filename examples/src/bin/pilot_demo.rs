//! The pilot demo: a mixed workload on a local pilot, with its profile.
//!
//! An executable prepares, then (depending on it) function tasks run on
//! threads and in worker processes, a 4-rank all-reduce runs once on thread
//! ranks and once on process ranks (each rank gets a communicator of
//! exactly its task's ranks), one task fails on purpose, and a last
//! executable waits for the all-reduces. The profile (JSON Lines, CSV,
//! Chrome trace, summary) goes to the directory given on the command line.
//!
//! ```text
//! cargo run --release -p deeprc-examples --bin pilot_demo -- [out/pilot]
//! ```
//!
//! Open `trace.json` in <https://ui.perfetto.dev> to see the tasks on their
//! cores.

use deeprc_comm::{CommunicatorExt, ReduceOp};
use deeprc_pilot::{
    FunctionLaunch, PilotDescription, Registry, Session, TaskContext, TaskDescription, TaskState,
};
use std::{error::Error, path::PathBuf};

/// The functions of this program. Worker processes build the same registry.
fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_typed("square", |_ctx: &TaskContext, x: u64| {
        Ok::<_, String>(x * x)
    });
    // Each rank contributes rank + 1: the sum over 4 ranks is 10.
    r.register_typed("allreduce", |ctx: &TaskContext, n: usize| {
        let comm = ctx.comm().map_err(|e| e.to_string())?;
        let mut v = vec![(ctx.rank() + 1) as f64; n];
        comm.all_reduce(&mut v, ReduceOp::Sum)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((v[0], ctx.comm_setup_time().as_secs_f64() * 1e3))
    });
    r.register("divide_by_zero", |_ctx: &TaskContext, _args: &[u8]| {
        Err::<Vec<u8>, _>("refusing to divide by zero")
    });
    r
}

fn main() -> Result<(), Box<dyn Error>> {
    let registry = registry();
    // Worker processes are this program re-executed: let them in first.
    deeprc_pilot::worker::run_if_worker(&registry);

    let out: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "out/pilot".to_string())
        .into();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let session = Session::builder()
        .registry(registry)
        .profile_dir(&out)
        .build()?;
    let pilot = session
        .pilot_manager()
        .submit(PilotDescription::local().cores(cpus.max(4)))?;
    println!(
        "session {}: pilot {} with {} on {} node(s)",
        session.id(),
        pilot.id(),
        pilot.resources(),
        pilot.nodes().len()
    );
    let tmgr = session.task_manager();
    tmgr.add_pilot(&pilot)?;
    tmgr.register_callback(|t, state| {
        if state.is_final() {
            let why = t.reason().map(|r| format!(" ({r})")).unwrap_or_default();
            println!(
                "  {} {:<14} -> {state}{why}",
                t.id(),
                t.description().label_for_demo()
            );
        }
    });

    let prepare = tmgr.submit(
        TaskDescription::executable(["/bin/sh", "-c", "echo preparing on $(hostname); sleep 0.2"])
            .name("prepare"),
    )?;
    let mut squares = Vec::new();
    for (i, launch) in [FunctionLaunch::Threads, FunctionLaunch::Processes]
        .into_iter()
        .cycle()
        .take(8)
        .enumerate()
    {
        squares.push(
            tmgr.submit(
                TaskDescription::function("square")
                    .function_launch(launch)
                    .depends_on("prepare")
                    .try_args(&(i as u64))?,
            )?,
        );
    }
    let allreduce_threads = tmgr.submit(
        TaskDescription::function("allreduce")
            .name("allreduce-threads")
            .ranks(4)
            .in_threads()
            .try_args(&1_000_000usize)?,
    )?;
    let allreduce_processes = tmgr.submit(
        TaskDescription::function("allreduce")
            .name("allreduce-processes")
            .ranks(4)
            .in_processes()
            .try_args(&1_000_000usize)?,
    )?;
    let failing = tmgr.submit(TaskDescription::function("divide_by_zero").retries(1))?;
    let crash = tmgr.submit(TaskDescription::executable([
        "/bin/sh",
        "-c",
        "echo 'segfaulting on purpose' >&2; kill -SEGV $$",
    ]))?;
    let report = tmgr.submit(
        TaskDescription::executable(["/bin/echo", "both all-reduces are done"])
            .depends_on("allreduce-threads")
            .depends_on("allreduce-processes"),
    )?;

    tmgr.wait_all();
    println!();
    println!(
        "prepare said: {}",
        prepare.stdout().unwrap_or_default().trim()
    );
    let values: Vec<u64> = squares
        .iter()
        .map(|t| t.result::<u64>())
        .collect::<Result<_, _>>()?;
    println!("squares: {values:?}");
    for t in [&allreduce_threads, &allreduce_processes] {
        let (sum, setup_ms): (f64, f64) = t.result()?;
        println!(
            "{}: sum over 4 ranks = {sum} (expected 10), communicator made in {setup_ms:.3} ms",
            t.name().unwrap_or_default()
        );
    }
    println!(
        "failing task: {} after {} attempts: {}",
        failing.state(),
        failing.attempts(),
        failing.reason().map(|r| r.to_string()).unwrap_or_default()
    );
    println!(
        "crashing task: {}: {}; stderr: {}",
        crash.state(),
        crash.reason().map(|r| r.to_string()).unwrap_or_default(),
        crash.stderr_tail().unwrap_or_default()
    );
    println!(
        "report said: {}",
        report.stdout().unwrap_or_default().trim()
    );
    assert_eq!(report.state(), TaskState::Done);

    let summary = session.close()?;
    println!();
    println!("{summary}");
    println!();
    for f in ["profile.jsonl", "profile.csv", "trace.json", "summary.json"] {
        println!("wrote {}", out.join(f).display());
    }
    Ok(())
}

/// A short label for the demo's output.
trait DemoLabel {
    fn label_for_demo(&self) -> String;
}

impl DemoLabel for TaskDescription {
    fn label_for_demo(&self) -> String {
        match (&self.name, &self.kind) {
            (Some(n), _) => n.clone(),
            (None, deeprc_pilot::TaskKind::Function(f)) => f.name.clone(),
            (None, deeprc_pilot::TaskKind::Executable(e)) => {
                e.argv.join(" ").chars().take(14).collect()
            }
        }
    }
}
