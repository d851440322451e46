//! Pilots on a real Slurm 22.05 cluster: `scripts/netns-slurm.sh up 3 4`
//! (slurmctld on this host, one slurmd per node in its own network
//! namespace with its own hostname, address and /tmp). Each test starts
//! the cluster if it is not up (the script is idempotent and serialised)
//! and leaves it up for the next. Needs root, as CI has: without it these
//! tests fail and say why; `DEEPRC_NO_SLURM=1` skips them explicitly.
//!
//! Task sandboxes and the result files live under the checkout's target
//! directory, which every node sees (each node has its own /tmp).

use deeprc_pilot::{
    slurm::{SlurmJob, SlurmProvider},
    FailReason, FunctionLaunch, Pilot, PilotDescription, PilotError, PilotState, Session,
    TaskDescription, TaskState,
};
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

#[path = "../../deeprc-comm/tests/common/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "common/functions.rs"]
mod functions;

use cluster::{cluster, scratch, NODES};

fn session(dir: &Path) -> (Session, Arc<SlurmProvider>) {
    // The test host binary (the pilots' worker executable) registers the
    // same functions.
    let mut registry = functions::registry();
    registry.register("noop", |_ctx, _args| Ok::<_, String>(Vec::new()));
    let session = Session::builder()
        .registry(registry)
        .sandbox(dir.join("sandbox"))
        .build()
        .unwrap();
    let slurm = Arc::new(SlurmProvider::new().with_poll_interval(Duration::from_millis(300)));
    session
        .pilot_manager()
        .register_provider(Arc::clone(&slurm) as _);
    (session, slurm)
}

/// What `squeue` says of job `id` (`CANCELLED`, ...; empty once purged).
fn job_state(id: &str) -> String {
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-j", id, "-o", "%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The node each rank of `task` was placed on, by name.
fn placed_nodes(pilot: &Pilot, task: &deeprc_pilot::Task) -> Vec<String> {
    let p = task.placement().expect("a placed task");
    p.ranks
        .iter()
        .map(|r| pilot.nodes()[r.node].name.clone())
        .collect()
}

/// Every rank of `task` (function `allreduce_where`) summed 1 + 2 + 3 + 4
/// over `backend` on the node it was placed on, and the ranks covered 2
/// nodes.
fn check_spanning(pilot: &Pilot, task: &deeprc_pilot::Task, backend: &str) {
    let placed = placed_nodes(pilot, task);
    let outs = task.outputs();
    assert_eq!(outs.len(), 4);
    let mut hosts = BTreeSet::new();
    for o in &outs {
        let (rank, sum, host, b): (usize, f64, String, String) = serde_json::from_slice(o).unwrap();
        assert_eq!((sum, b.as_str()), (10.0, backend), "rank {rank}");
        assert_eq!(host, placed[rank], "rank {rank} ran where it was placed");
        hosts.insert(host);
    }
    assert_eq!(hosts.len(), 2, "{backend} ranks on two hosts: {hosts:?}");
}

/// A tiny MPI program: each rank all-reduces rank + 1 and prints where it
/// ran.
fn mpi_allreduce_binary(dir: &Path) -> PathBuf {
    let src = dir.join("allreduce.c");
    std::fs::write(
        &src,
        r#"#include <mpi.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    int mine = rank + 1, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d of %d on %s sum %d\n", rank, size, host, sum);
    fflush(stdout);
    MPI_Finalize();
    return 0;
}
"#,
    )
    .unwrap();
    let bin = dir.join("allreduce");
    let mpicc = std::env::var("MPICC").unwrap_or_else(|_| "mpicc".into());
    let out = Command::new(&mpicc)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("{mpicc} (OpenMPI, scripts/setup.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{mpicc} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// An sbatch pilot: ACTIVE on two nodes, `hostname` tasks on both, ranks of
/// one task on the nodes they were placed on, an MPI all-reduce across the
/// nodes, function tasks of 4 ranks across the nodes over tcp and MPI, one
/// `squeue` per poll for two pilots, and
/// a clean cancel.
#[test]
fn sbatch_pilot_runs_tasks_across_nodes() {
    if !cluster() {
        return;
    }
    let dir = scratch("sbatch");
    let mpi = mpi_allreduce_binary(&dir);
    let (session, slurm) = session(&dir);
    let pmgr = session.pilot_manager();
    let job = |name: &str, nodes, cores| {
        SlurmJob::nodes(nodes)
            .cores_per_node(cores)
            .walltime(Duration::from_secs(600))
            .job_name(format!("deeprc-test-{name}"))
    };
    // Two pilots submitted together: their jobs are polled together.
    let (big, small) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            pmgr.submit(
                PilotDescription::slurm(job("sbatch", 2, 2))
                    .worker_executable(env!("CARGO_BIN_EXE_deeprc-pilot-test-host")),
            )
        });
        let b = s.spawn(|| pmgr.submit(PilotDescription::slurm(job("small", 1, 1))));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (big, small) = (big.unwrap(), small.unwrap());
    assert_eq!(big.state(), PilotState::Active);
    let stats = slurm.stats();
    assert_eq!(stats.sbatch_calls, 2);
    assert!(
        stats.most_jobs_per_squeue >= 2,
        "one squeue per poll for both jobs: {stats:?}"
    );
    let job_id = big.allocation().expect("a Slurm job id").to_string();
    assert_eq!(job_state(&job_id), "RUNNING");
    let names: BTreeSet<String> = big.nodes().iter().map(|n| n.name.clone()).collect();
    assert_eq!(names.len(), 2, "{:?}", big.nodes());
    assert!(names.iter().all(|n| n.starts_with("dn")), "{names:?}");
    assert!(big.nodes().iter().all(|n| n.cores == 2));

    let tmgr = session.task_manager();
    tmgr.add_pilot(&big).unwrap();
    // Four one-rank tasks fill both nodes' cores: each runs where it was
    // placed.
    let hosts = tmgr
        .submit_many(
            (0..4)
                .map(|_| TaskDescription::executable(["hostname"]))
                .collect(),
        )
        .unwrap();
    let mut ran_on = BTreeSet::new();
    for t in &hosts {
        assert_eq!(
            t.wait(),
            TaskState::Done,
            "{:?} {:?}",
            t.reason(),
            t.stderr_tail()
        );
        let out = t.stdout().unwrap().trim().to_string();
        assert_eq!(vec![out.clone()], placed_nodes(&big, t));
        ran_on.insert(out);
    }
    assert_eq!(ran_on, names, "hostname tasks ran on both nodes");

    // One task of four ranks spans the two nodes; rank i runs on the node
    // it was placed on.
    let spread = tmgr
        .submit(
            TaskDescription::executable(["/bin/sh", "-c", "echo $SLURM_PROCID $(hostname)"])
                .ranks(4),
        )
        .unwrap();
    assert_eq!(spread.wait(), TaskState::Done, "{:?}", spread.stderr_tail());
    let placed = placed_nodes(&big, &spread);
    let mut lines: Vec<(usize, String)> = spread
        .stdout()
        .unwrap()
        .lines()
        .map(|l| {
            let (r, h) = l.split_once(' ').unwrap();
            (r.parse().unwrap(), h.to_string())
        })
        .collect();
    lines.sort();
    assert_eq!(lines.len(), 4);
    for (r, h) in &lines {
        assert_eq!(h, &placed[*r], "rank {r}: {lines:?} placed {placed:?}");
    }
    assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 2);

    // An MPI program's 4 ranks across the 2 nodes, one world (srun
    // --mpi=pmix through the pilot's `mpirun`).
    let allreduce = tmgr
        .submit(
            TaskDescription::executable([mpi.display().to_string()])
                .ranks(4)
                .mpirun(),
        )
        .unwrap();
    assert_eq!(
        allreduce.wait(),
        TaskState::Done,
        "{:?}",
        allreduce.stderr_tail()
    );
    let out = allreduce.stdout().unwrap();
    let mpi_hosts: BTreeSet<&str> = out
        .lines()
        .map(|l| {
            assert!(l.ends_with("of 4 on ") || l.contains(" of 4 on "), "{l}");
            assert!(l.ends_with(" sum 10"), "all-reduce of 1+2+3+4: {l}");
            l.split(" on ").nth(1).unwrap().split(' ').next().unwrap()
        })
        .collect();
    assert_eq!(out.lines().count(), 4, "{out}");
    assert_eq!(mpi_hosts.len(), 2, "MPI ranks on two hosts: {out}");

    // A task that fails on its node fails alone, with its exit code.
    let bad = tmgr
        .submit(TaskDescription::executable(["/bin/sh", "-c", "exit 3"]))
        .unwrap();
    assert_eq!(bad.wait(), TaskState::Failed);
    assert_eq!(bad.reason(), Some(FailReason::ExitCode(3)));

    // A function task whose 4 ranks span the 2 nodes all-reduces over tcp:
    // srun starts a worker per rank on its node, rank 0 serves the store.
    // (Thread launches keep their ranks on one node.)
    let spanning = tmgr
        .submit(
            TaskDescription::function("allreduce_where")
                .ranks(4)
                .function_launch(FunctionLaunch::Processes)
                .try_args(&())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        spanning.wait(),
        TaskState::Done,
        "{:?} {:?}",
        spanning.reason(),
        spanning.stderr_tail()
    );
    check_spanning(&big, &spanning, "tcp");
    // And over MPI, the same function under the pilot's `mpirun` (srun
    // --mpi=pmix).
    #[cfg(feature = "mpi")]
    {
        let mpi_task = tmgr
            .submit(
                TaskDescription::function("allreduce_where")
                    .ranks(4)
                    .mpirun()
                    .try_args(&())
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(
            mpi_task.wait(),
            TaskState::Done,
            "{:?} {:?}",
            mpi_task.reason(),
            mpi_task.stderr_tail()
        );
        check_spanning(&big, &mpi_task, "mpi");
    }
    // A function that fails fails its task with the function's reason.
    let failing = tmgr
        .submit(TaskDescription::function("fail").ranks(2))
        .unwrap();
    assert_eq!(failing.wait(), TaskState::Failed);
    assert!(
        format!("{:?}", failing.reason()).contains("the function said no"),
        "{:?}",
        failing.reason()
    );

    // The small pilot works on its own node.
    let tm2 = session.task_manager();
    tm2.add_pilot(&small).unwrap();
    let one = tm2
        .submit(TaskDescription::executable(["hostname"]))
        .unwrap();
    assert_eq!(one.wait(), TaskState::Done);
    assert_eq!(one.stdout().unwrap().trim(), small.nodes()[0].name);

    big.cancel();
    assert_eq!(big.state(), PilotState::Canceled);
    let st = job_state(&job_id);
    assert!(
        st.is_empty() || st == "CANCELLED" || st == "COMPLETING",
        "job {job_id} after cancel: {st}"
    );
    let small_job = small.allocation().unwrap().to_string();
    let summary = session.close().unwrap();
    let function_tasks = if cfg!(feature = "mpi") { 2 } else { 1 };
    assert_eq!(summary.done, 4 + 1 + 1 + function_tasks + 1);
    assert_eq!(summary.failed, 2);
    let st = job_state(&small_job);
    assert!(
        st.is_empty() || st == "CANCELLED" || st == "COMPLETING",
        "{st}"
    );
}

/// Refused jobs: a partition that does not exist (sbatch refuses it) and
/// more nodes than the cluster has (accepted, pending `PartitionConfig` or
/// `PartitionNodeLimit` for ever): both pilots fail with Slurm's reason, and the pending job is
/// cancelled.
#[test]
fn refused_pilots_fail_with_slurms_reason() {
    if !cluster() {
        return;
    }
    let dir = scratch("refused");
    let (session, slurm) = session(&dir);
    let pmgr = session.pilot_manager();
    let err = pmgr
        .submit(PilotDescription::slurm(
            SlurmJob::nodes(1)
                .partition("nosuch")
                .job_name("deeprc-test-refused"),
        ))
        .unwrap_err();
    match &err {
        PilotError::ResourceFailed { resource, reason } => {
            assert_eq!(resource, "slurm");
            assert!(reason.contains("Invalid partition"), "{reason}");
        }
        other => panic!("{other}"),
    }
    let err = pmgr
        .submit(PilotDescription::slurm(
            SlurmJob::nodes(NODES + 2).job_name("deeprc-test-refused"),
        ))
        .unwrap_err();
    let PilotError::ResourceFailed { reason, .. } = &err else {
        panic!("{err}");
    };
    // PartitionNodeLimit, or PartitionConfig for whole (exclusive) nodes.
    assert!(
        reason.contains("PartitionNodeLimit") || reason.contains("PartitionConfig"),
        "{reason}"
    );
    let id: String = reason
        .split("Slurm job ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let st = job_state(&id);
    assert!(st.is_empty() || st == "CANCELLED", "job {id}: {st}");
    assert_eq!(slurm.stats().sbatch_calls, 2);
    assert!(pmgr.pilots().is_empty());
    session.close().unwrap();
}

/// A pilot whose job reaches its 1-minute walltime ends DONE with Slurm's
/// reason, and every task has a final state: the finished one DONE, the
/// running one killed by Slurm (FAILED) or cancelled, the waiting one
/// CANCELED (or FAILED if it was launched into the dying job).
#[test]
fn walltime_ends_the_pilot_cleanly() {
    if !cluster() {
        return;
    }
    let dir = scratch("walltime");
    let (session, _slurm) = session(&dir);
    let pilot = session
        .pilot_manager()
        .submit(PilotDescription::slurm(
            SlurmJob::nodes(1)
                .cores_per_node(1)
                .walltime(Duration::from_secs(60))
                .job_name("deeprc-test-walltime"),
        ))
        .unwrap();
    let started = Instant::now();
    let tmgr = session.task_manager();
    tmgr.add_pilot(&pilot).unwrap();
    let quick = tmgr.submit(TaskDescription::executable(["true"])).unwrap();
    assert_eq!(quick.wait(), TaskState::Done);
    let long = tmgr
        .submit(TaskDescription::executable(["sleep", "600"]))
        .unwrap();
    let waiting = tmgr
        .submit(TaskDescription::executable(["sleep", "600"]))
        .unwrap();
    // Slurm checks time limits every 30 s or so: 60 to 100 s.
    let deadline = Instant::now() + Duration::from_secs(240);
    while pilot.state() == PilotState::Active {
        assert!(
            Instant::now() < deadline,
            "the walltime did not end the pilot"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    assert_eq!(pilot.state(), PilotState::Done, "{:?}", pilot.end_reason());
    let reason = pilot.end_reason().unwrap();
    // Slurm shows the job TIMEOUT, or first COMPLETING with reason
    // TimeLimit; the provider takes both for the walltime.
    assert!(
        (reason.contains("TIMEOUT") || reason.contains("(TimeLimit)"))
            && reason.contains("walltime"),
        "{reason}"
    );
    assert!(took >= Duration::from_secs(55), "ended after {took:?}");
    assert!(tmgr.wait_all_timeout(Duration::from_secs(30)));
    assert_eq!(quick.state(), TaskState::Done);
    for t in [&long, &waiting] {
        assert!(
            matches!(t.state(), TaskState::Failed | TaskState::Canceled),
            "{:?} {:?}",
            t.state(),
            t.reason()
        );
    }
    eprintln!(
        "walltime: pilot ended after {took:?}: {reason}; running task {:?} {:?}, waiting task {:?} {:?}",
        long.state(),
        long.reason(),
        waiting.state(),
        waiting.reason()
    );
    let summary = session.close().unwrap();
    assert_eq!(summary.tasks, 3);
    assert_eq!(summary.done + summary.failed + summary.canceled, 3);
}

/// Outside any allocation, `slurm_allocation` fails and says why (no
/// cluster needed).
#[test]
fn slurm_allocation_outside_a_job_says_why() {
    if std::env::var_os("SLURM_JOB_ID").is_some() {
        return; // inside a job: nothing to refuse
    }
    let session = Session::new().unwrap();
    let err = session
        .pilot_manager()
        .submit(PilotDescription::slurm_allocation())
        .unwrap_err();
    assert!(
        matches!(&err, PilotError::ResourceFailed { reason, .. } if reason.contains("SLURM_JOB_ID is not set")),
        "{err}"
    );
    session.close().unwrap();
}

/// A pilot inside an existing allocation: this test binary runs
/// `inner_pilot_in_allocation` under `sbatch -N 2` (on the job's first
/// node), which reports back through a file under the checkout.
#[test]
fn pilot_inside_an_allocation() {
    if !cluster() {
        return;
    }
    let dir = scratch("allocation");
    let result = dir.join("result.json");
    let log = dir.join("job.out");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sbatch")
        .args([
            "--parsable",
            "--nodes=2",
            "--ntasks-per-node=2",
            "--time=5",
            "--job-name=deeprc-test-allocation",
        ])
        .arg(format!("--output={}", log.display()))
        .arg(format!("--chdir={}", dir.display()))
        .arg(format!(
            "--wrap={} --exact inner_pilot_in_allocation --include-ignored --nocapture",
            exe.display()
        ))
        .env("DEEPRC_SLURM_RESULT", &result)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let st = job_state(&id);
        if !matches!(
            st.as_str(),
            "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING"
        ) {
            break;
        }
        if Instant::now() > deadline {
            let _ = Command::new("scancel").arg(&id).status();
            panic!("job {id} still {st} after 240 s");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let text = std::fs::read_to_string(&result)
        .unwrap_or_else(|e| panic!("no result from job {id} ({e}); its output:\n{log_text}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["job"], id.as_str(), "{v}");
    let nodes: BTreeSet<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "{v}");
    let hosts: BTreeSet<&str> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(
        hosts, nodes,
        "tasks ran on both nodes of the allocation: {v}"
    );
    assert_eq!(
        v["client_host"].as_str().unwrap(),
        v["nodes"][0].as_str().unwrap()
    );
    assert_eq!(v["all_placed_right"], true, "{v}");
    assert_eq!(v["mpi_sum_ok"], true, "{v}");
}

/// The body of `pilot_inside_an_allocation`, run by it inside the job.
#[test]
#[ignore = "runs inside the Slurm allocation that pilot_inside_an_allocation makes"]
fn inner_pilot_in_allocation() {
    let result = PathBuf::from(
        std::env::var("DEEPRC_SLURM_RESULT").expect("run by pilot_inside_an_allocation"),
    );
    let dir = result.parent().unwrap();
    let mpi = mpi_allreduce_binary(dir);
    let session = Session::builder()
        .sandbox(dir.join("sandbox"))
        .build()
        .unwrap();
    let pilot = session
        .pilot_manager()
        .submit(PilotDescription::slurm_allocation())
        .unwrap();
    assert_eq!(
        pilot.allocation(),
        std::env::var("SLURM_JOB_ID").ok().as_deref()
    );
    let tmgr = session.task_manager();
    tmgr.add_pilot(&pilot).unwrap();
    let tasks = tmgr
        .submit_many(
            (0..4)
                .map(|_| TaskDescription::executable(["hostname"]))
                .collect(),
        )
        .unwrap();
    let mut hosts = Vec::new();
    let mut all_placed_right = true;
    for t in &tasks {
        assert_eq!(t.wait(), TaskState::Done, "{:?}", t.stderr_tail());
        let h = t.stdout().unwrap().trim().to_string();
        all_placed_right &= vec![h.clone()] == placed_nodes(&pilot, t);
        hosts.push(h);
    }
    let allreduce = tmgr
        .submit(
            TaskDescription::executable([mpi.display().to_string()])
                .ranks(4)
                .mpirun(),
        )
        .unwrap();
    assert_eq!(
        allreduce.wait(),
        TaskState::Done,
        "{:?}",
        allreduce.stderr_tail()
    );
    let out = allreduce.stdout().unwrap();
    let mpi_sum_ok = out.lines().count() == 4 && out.lines().all(|l| l.ends_with(" sum 10"));
    let client_host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let report = serde_json::json!({
        "job": pilot.allocation(),
        "nodes": pilot.nodes().iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        "cores": pilot.nodes().iter().map(|n| n.cores).collect::<Vec<_>>(),
        "hosts": hosts,
        "all_placed_right": all_placed_right,
        "mpi_sum_ok": mpi_sum_ok,
        "mpi": out,
        "client_host": client_host,
    });
    session.close().unwrap();
    std::fs::write(&result, report.to_string()).unwrap();
}
