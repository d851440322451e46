//! Pilot on Slurm (issue 10): `/bin/true` task throughput across the
//! namespace cluster's nodes through a Slurm pilot, beside one `srun` per
//! task into the same job, measured in the same run.
//!
//! ```text
//! scripts/netns-slurm.sh up 3 4     # as root; the program runs it too
//! cargo run --release -p deeprc-benches --bin slurm_bench -- [TASKS] [NODES] [CORES_PER_NODE]
//! ```
//!
//! Defaults: 200 tasks on 3 nodes x 4 cores. The pilot holds one job
//! (`sbatch`); the baselines launch into that job: `srun` one task at a
//! time, and as many `srun`s at once as the pilot has cores (what the
//! pilot itself does, since it launches every task with `srun` until the
//! per-node agent exists).

use deeprc_pilot::{slurm::SlurmJob, PilotDescription, Session, TaskDescription, TaskState};
use std::{
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|a| a.parse().expect("a number"))
        .unwrap_or(default)
}

/// `count` one-task `srun`s into `job`, `parallel` at a time, spread over
/// `nodes` in turn; tasks per second.
fn srun_rate(job: &str, nodes: &[String], count: usize, parallel: usize) -> f64 {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let ok = Command::new("srun")
                    .args([
                        format!("--jobid={job}"),
                        "--overlap".into(),
                        "--mpi=none".into(),
                        "--ntasks=1".into(),
                        "--nodes=1".into(),
                        format!("--nodelist={}", nodes[i % nodes.len()]),
                        "/bin/true".into(),
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let bad = failed.load(Ordering::Relaxed);
    assert_eq!(bad, 0, "{bad} of {count} srun calls failed");
    count as f64 / secs
}

fn main() {
    let tasks = arg(1, 200);
    let nodes = arg(2, 3);
    let cores = arg(3, 4);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/netns-slurm.sh");
    let up = Command::new("bash")
        .arg(&script)
        .args(["up", &nodes.to_string(), &cores.to_string()])
        .status()
        .expect("running scripts/netns-slurm.sh");
    assert!(
        up.success(),
        "the namespace cluster did not start (needs root)"
    );

    let sandbox = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/slurm-bench");
    let session = Session::builder().sandbox(&sandbox).build().unwrap();
    let t0 = Instant::now();
    let pilot = session
        .pilot_manager()
        .submit(PilotDescription::slurm(
            SlurmJob::nodes(nodes)
                .cores_per_node(cores)
                .walltime(Duration::from_secs(20 * 60))
                .job_name("deeprc-slurm-bench"),
        ))
        .unwrap();
    let active_s = t0.elapsed().as_secs_f64();
    let job = pilot.allocation().unwrap().to_string();
    let names: Vec<String> = pilot.nodes().iter().map(|n| n.name.clone()).collect();
    let slots = pilot.resources().cores;
    println!(
        "pilot {} on Slurm job {job}: {} nodes ({}), {slots} cores, ACTIVE after {active_s:.2} s",
        pilot.id(),
        names.len(),
        names.join(",")
    );
    let tmgr = session.task_manager();
    tmgr.add_pilot(&pilot).unwrap();

    let sequential = srun_rate(&job, &names, tasks.min(100), 1);
    let parallel = srun_rate(&job, &names, tasks, slots);

    let start = Instant::now();
    let handles = tmgr
        .submit_many(
            (0..tasks)
                .map(|_| TaskDescription::executable(["/bin/true"]))
                .collect(),
        )
        .unwrap();
    tmgr.wait_all();
    let pilot_s = start.elapsed().as_secs_f64();
    let done = handles
        .iter()
        .filter(|t| t.state() == TaskState::Done)
        .count();
    assert_eq!(done, tasks, "every task DONE");
    let mut on: Vec<(String, usize)> = names.iter().map(|n| (n.clone(), 0)).collect();
    for t in &handles {
        if let Some(p) = t.placement() {
            for r in &p.ranks {
                on[r.node].1 += 1;
            }
        }
    }
    let pilot_rate = tasks as f64 / pilot_s;
    // How long each task's srun took (its payload time), median.
    let mut step_ms: Vec<f64> = handles
        .iter()
        .map(|t| {
            let ts = t.timestamps();
            ts.exec_end.saturating_sub(ts.exec_start) as f64 * 1e-6
        })
        .collect();
    step_ms.sort_by(f64::total_cmp);
    let step_p50 = step_ms[step_ms.len() / 2];
    // The baseline again after the pilot, for drift on a busy machine.
    let parallel_after = srun_rate(&job, &names, tasks, slots);
    let summary = session.close().unwrap();

    // The same tasks on a local pilot (fork on this host, as a node agent
    // would spawn them on its node), for scale.
    let local = Session::builder().sandbox(&sandbox).build().unwrap();
    let lp = local
        .pilot_manager()
        .submit(PilotDescription::local())
        .unwrap();
    let ltm = local.task_manager();
    ltm.add_pilot(&lp).unwrap();
    let start = Instant::now();
    ltm.submit_many(
        (0..tasks)
            .map(|_| TaskDescription::executable(["/bin/true"]))
            .collect(),
    )
    .unwrap();
    ltm.wait_all();
    let local_rate = tasks as f64 / start.elapsed().as_secs_f64();
    let local_cores = lp.resources().cores;
    local.close().unwrap();

    println!("tasks per node through the pilot: {on:?}");
    println!("| launcher | tasks | tasks/s |");
    println!("|---|---|---|");
    println!(
        "| srun per task, one at a time | {} | {sequential:.1} |",
        tasks.min(100)
    );
    println!(
        "| srun per task, {slots} at a time (before / after) | {tasks} | {parallel:.1} / {parallel_after:.1} |"
    );
    println!("| pilot (srun launch method, {slots} cores) | {tasks} | {pilot_rate:.1} |");
    println!(
        "| local pilot, fork on this host ({local_cores} cores; for scale) | {tasks} | {local_rate:.1} |"
    );
    println!(
        "pilot / concurrent srun: {:.2}x; each task's srun took {step_p50:.0} ms (median); \
         the pilot's own launch overhead p50 {:.2} ms; {} tasks DONE",
        pilot_rate / (0.5 * (parallel + parallel_after)),
        summary.launch_overhead.p50 * 1e3,
        summary.done
    );
}
