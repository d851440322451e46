//! Integration tests of deeprc-pilot with real processes: executables that
//! succeed, fail, crash and hang; function tasks on threads and in worker
//! processes (the test host binary); multi-rank all-reduce; dependencies;
//! priorities; fractional GPUs on slots; cancellation; submission errors;
//! profiles.
//!
//! Tests never assert on time: waits have generous limits only so that a
//! bug shows as a failure instead of a hang.

mod common;
#[path = "pilot/resources.rs"]
mod resources;
#[path = "pilot/robustness.rs"]
mod robustness;

use common::setup;
use deeprc_pilot::{
    FailReason, FunctionLaunch, PilotDescription, PilotError, Session, Task, TaskDescription,
    TaskState,
};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Waits for a task to end (a hang guard, not a time assertion).
fn fin(t: &Task) -> TaskState {
    t.wait_timeout(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("{} did not finish: {:?}", t.id(), t.state()))
}

/// Waits until a task is EXECUTING (its payload may not have started yet).
fn until_executing(t: &Task) {
    until_state(t, TaskState::Executing);
}

/// Waits until a task is in `state` (a hang guard, not a time assertion).
fn until_state(t: &Task, state: TaskState) {
    let end = Instant::now() + Duration::from_secs(60);
    while t.state() != state {
        assert!(
            !t.state().is_final(),
            "{} ended early: {:?}",
            t.id(),
            t.reason()
        );
        assert!(Instant::now() < end, "{} never started", t.id());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn local(cores: usize) -> PilotDescription {
    PilotDescription::local().cores(cores)
}

#[test]
fn executables_succeed_with_env_cwd_and_pre_exec() {
    let (session, _p, tm, dir) = setup("exe-ok", local(2));
    let t = tm
        .submit(
            TaskDescription::executable(["/bin/sh", "-c", "echo \"$GREETING $PRE\"; pwd"])
                .env("GREETING", "hello")
                .pre_exec("export PRE=from-pre-exec")
                .cwd(dir.to_path_buf()),
        )
        .unwrap();
    assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
    assert_eq!(t.exit_code(), Some(0));
    let out = t.stdout().unwrap();
    assert_eq!(out, format!("hello from-pre-exec\n{}\n", dir.display()));
    // The default working directory is the sandbox.
    let s = tm
        .submit(TaskDescription::executable(["/bin/pwd"]))
        .unwrap();
    assert_eq!(fin(&s), TaskState::Done);
    assert_eq!(
        s.stdout().unwrap().trim(),
        s.sandbox().unwrap().display().to_string()
    );
    // A failing pre-exec command fails the task.
    let p = tm
        .submit(TaskDescription::executable(["/bin/true"]).pre_exec("echo broken setup >&2; false"))
        .unwrap();
    assert_eq!(fin(&p), TaskState::Failed);
    assert_eq!(p.reason(), Some(FailReason::ExitCode(1)));
    assert!(p.stderr_tail().unwrap().contains("broken setup"));
    session.close().unwrap();
}

#[test]
fn executables_that_fail_crash_and_hang() {
    let (session, _p, tm, _dir) = setup("exe-fail", local(4));
    let fail = tm
        .submit(TaskDescription::executable([
            "/bin/sh",
            "-c",
            "echo line1 >&2; echo the last words >&2; exit 3",
        ]))
        .unwrap();
    let kill = tm
        .submit(TaskDescription::executable([
            "/bin/sh",
            "-c",
            "kill -KILL $$",
        ]))
        .unwrap();
    let segv = tm
        .submit(TaskDescription::executable([
            "/bin/sh",
            "-c",
            "kill -SEGV $$",
        ]))
        .unwrap();
    let hang = tm
        .submit(
            TaskDescription::executable(["/bin/sleep", "600"]).timeout(Duration::from_millis(300)),
        )
        .unwrap();
    let ok = tm
        .submit(TaskDescription::executable(["/bin/true"]))
        .unwrap();

    assert_eq!(fin(&fail), TaskState::Failed);
    assert_eq!(fail.reason(), Some(FailReason::ExitCode(3)));
    assert_eq!(fail.exit_code(), Some(3));
    assert!(fail.stderr_tail().unwrap().ends_with("the last words"));
    assert_eq!(fin(&kill), TaskState::Failed);
    assert_eq!(kill.reason(), Some(FailReason::Signal(9)));
    assert_eq!(fin(&segv), TaskState::Failed);
    assert_eq!(segv.reason(), Some(FailReason::Signal(11)));
    assert!(segv.reason().unwrap().to_string().contains("SIGSEGV"));
    assert_eq!(fin(&hang), TaskState::Failed);
    assert_eq!(
        hang.reason(),
        Some(FailReason::Timeout(Duration::from_millis(300)))
    );
    // The agent went on.
    assert_eq!(fin(&ok), TaskState::Done);
    let after = tm
        .submit(TaskDescription::executable(["/bin/true"]))
        .unwrap();
    assert_eq!(fin(&after), TaskState::Done);
    let s = session.close().unwrap();
    assert_eq!((s.done, s.failed), (2, 4));
}

#[test]
fn multi_rank_executables_get_rank_env() {
    let (session, _p, tm, _dir) = setup("exe-ranks", local(2));
    let t = tm
        .submit(
            TaskDescription::executable([
                "/bin/sh",
                "-c",
                "echo rank=$DEEPRC_RANK size=$DEEPRC_WORLD_SIZE token=${#DEEPRC_TOKEN}",
            ])
            .ranks(2),
        )
        .unwrap();
    assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
    let mut lines: Vec<String> = t.stdout().unwrap().lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["rank=0 size=2 token=32", "rank=1 size=2 token=32"]
    );
    // One failing rank fails the task and the other rank is stopped.
    let f = tm
        .submit(
            TaskDescription::executable([
                "/bin/sh",
                "-c",
                "if [ $DEEPRC_RANK = 1 ]; then exit 7; fi; sleep 600",
            ])
            .ranks(2),
        )
        .unwrap();
    assert_eq!(fin(&f), TaskState::Failed);
    assert_eq!(f.reason(), Some(FailReason::ExitCode(7)));
    session.close().unwrap();
}

#[test]
fn mpirun_launches_executables() {
    if which_mpirun().is_none() {
        eprintln!("mpirun not installed: skipped");
        return;
    }
    let (session, _p, tm, _dir) = setup("mpirun", local(2));
    let t = tm
        .submit(
            TaskDescription::executable([
                "/bin/sh",
                "-c",
                "echo rank=${OMPI_COMM_WORLD_RANK:-$PMI_RANK}",
            ])
            .ranks(2)
            .mpirun()
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
        )
        .unwrap();
    assert_eq!(
        fin(&t),
        TaskState::Done,
        "{:?} {:?}",
        t.reason(),
        t.stderr_tail()
    );
    let mut lines: Vec<String> = t.stdout().unwrap().lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, vec!["rank=0", "rank=1"]);
    assert_eq!(t.placement().unwrap().ranks.len(), 2);
    session.close().unwrap();
}

/// A 4-rank function task under `mpirun`: the host binary in `mpi` worker
/// mode, each rank with an MPI communicator.
#[cfg(feature = "mpi")]
#[test]
fn four_rank_all_reduce_under_mpirun() {
    if which_mpirun().is_none() {
        eprintln!("mpirun not installed: skipped");
        return;
    }
    let mpirun = deeprc_pilot::Mpirun::new().with_extra_args(["--allow-run-as-root"]);
    let (session, _p, tm, _dir) = setup("mpi-fn", local(4).launch_method(Arc::new(mpirun)));
    let t = tm
        .submit(
            TaskDescription::function("allreduce")
                .ranks(4)
                .mpirun()
                .try_args(&())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        fin(&t),
        TaskState::Done,
        "{:?} {:?}",
        t.reason(),
        t.stderr_tail()
    );
    let outs = t.outputs();
    assert_eq!(outs.len(), 4);
    for o in &outs {
        let (sum, _): (f64, u64) = serde_json::from_slice(o).unwrap();
        assert_eq!(sum, 10.0);
    }
    assert!(t.comm_creation_time() > Duration::ZERO);
    let p = tm
        .submit(TaskDescription::function("panic").ranks(2).mpirun())
        .unwrap();
    assert_eq!(fin(&p), TaskState::Failed);
    assert!(
        matches!(p.reason(), Some(FailReason::Panic(_))),
        "{:?}",
        p.reason()
    );
    session.close().unwrap();
}

fn which_mpirun() -> Option<std::path::PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| std::path::Path::new(d).join("mpirun"))
        .find(|p| p.is_file())
}

#[test]
fn function_tasks_fail_alone() {
    let (session, _p, tm, _dir) = setup("fn-fail", local(2));
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let panic = tm
            .submit(TaskDescription::function("panic").function_launch(launch))
            .unwrap();
        let err = tm
            .submit(TaskDescription::function("fail").function_launch(launch))
            .unwrap();
        let ok = tm
            .submit(
                TaskDescription::function("add")
                    .function_launch(launch)
                    .try_args(&(40i64, 2i64))
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(fin(&panic), TaskState::Failed);
        match panic.reason() {
            Some(FailReason::Panic(m)) => assert!(m.contains("deliberate panic"), "{m}"),
            other => panic!("{launch:?}: {other:?}"),
        }
        assert_eq!(fin(&err), TaskState::Failed);
        assert_eq!(
            err.reason(),
            Some(FailReason::Error("the function said no".into()))
        );
        assert!(matches!(
            err.result::<i64>(),
            Err(PilotError::TaskFailed { .. })
        ));
        assert_eq!(fin(&ok), TaskState::Done);
        assert_eq!(ok.result::<i64>().unwrap(), 42);
    }
    session.close().unwrap();
}

#[test]
fn crashed_workers_fail_their_task_and_are_replaced() {
    let (session, _p, tm, _dir) = setup("fn-crash", local(1));
    let crash = tm
        .submit(TaskDescription::function("crash").in_processes())
        .unwrap();
    let next = tm
        .submit(
            TaskDescription::function("whereami")
                .in_processes()
                .try_args(&())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&crash), TaskState::Failed);
    match crash.reason() {
        Some(FailReason::WorkerCrashed { worker, status }) => {
            assert_eq!(worker, 0);
            assert!(status.contains("SIGABRT"), "{status}");
        }
        other => panic!("{other:?}"),
    }
    assert!(crash.stderr_tail().unwrap().contains("about to abort"));
    assert_eq!(fin(&next), TaskState::Done, "{:?}", next.reason());
    type Where = (u32, usize, usize, Vec<usize>, String, String);
    let (pid, rank, node, _cpus, _gpus, _allowed): Where = next.result().unwrap();
    assert_ne!(pid, std::process::id());
    assert_eq!((rank, node), (0, 0));
    session.close().unwrap();
}

#[test]
fn function_timeouts_on_threads_and_processes() {
    let (session, _p, tm, _dir) = setup("fn-timeout", local(2));
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let t = tm
            .submit(
                TaskDescription::function("sleep")
                    .function_launch(launch)
                    .timeout(Duration::from_millis(200))
                    .try_args(&600_000u64)
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(fin(&t), TaskState::Failed, "{launch:?}");
        assert_eq!(
            t.reason(),
            Some(FailReason::Timeout(Duration::from_millis(200)))
        );
        let ok = tm
            .submit(
                TaskDescription::function("sleep")
                    .function_launch(launch)
                    .try_args(&1u64)
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(fin(&ok), TaskState::Done, "{launch:?}: {:?}", ok.reason());
    }
    session.close().unwrap();
}

#[test]
fn four_rank_all_reduce_on_threads_and_processes() {
    let (session, _p, tm, _dir) = setup("allreduce", local(4));
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let t = tm
            .submit(
                TaskDescription::function("allreduce")
                    .ranks(4)
                    .function_launch(launch)
                    .try_args(&())
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(fin(&t), TaskState::Done, "{launch:?}: {:?}", t.reason());
        let outs = t.outputs();
        assert_eq!(outs.len(), 4);
        for o in &outs {
            let (sum, _): (f64, u64) = serde_json::from_slice(o).unwrap();
            assert_eq!(sum, 10.0);
        }
        assert!(t.comm_creation_time() > Duration::ZERO);
        assert_eq!(t.placement().unwrap().ranks.len(), 4);
        let records = session.task_records();
        let r = records.iter().find(|r| r.id == t.id()).unwrap();
        assert!(r.comm_ns > 0);
    }
    let s = session.summary();
    assert_eq!(s.comm_creation.count, 2);
    session.close().unwrap();
}

#[test]
fn ranks_span_nodes_only_for_processes() {
    let two_nodes = PilotDescription::local().nodes(2, "1c,0g,1GiB".parse().unwrap());
    let (session, pilot, tm, _dir) = setup("nodes", two_nodes);
    assert_eq!(pilot.nodes().len(), 2);
    let t = tm
        .submit(
            TaskDescription::function("allreduce")
                .ranks(2)
                .in_processes()
                .try_args(&())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
    assert_eq!(t.placement().unwrap().nodes(), vec![0, 1]);
    let (sum, _): (f64, u64) = t.result().unwrap();
    assert_eq!(sum, 3.0);
    // Thread ranks share one process, so one node: this can never fit.
    let err = tm
        .submit(TaskDescription::function("allreduce").ranks(2).in_threads())
        .unwrap_err();
    assert!(
        matches!(err, PilotError::InsufficientResources { .. }),
        "{err}"
    );
    session.close().unwrap();
}

#[test]
fn ranks_are_pinned_to_their_cpus() {
    let (session, pilot, tm, _dir) = setup("pinning", local(2));
    let cpu_of = |t: &Task| {
        let p = t.placement().unwrap();
        let r = &p.ranks[0];
        pilot.nodes()[r.node].cpu_ids[r.cores[0]]
    };
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let t = tm
            .submit(
                TaskDescription::function("whereami")
                    .function_launch(launch)
                    .try_args(&())
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
        type Where = (u32, usize, usize, Vec<usize>, String, String);
        let (_pid, _rank, _node, cpus, _gpus, allowed): Where = t.result().unwrap();
        assert_eq!(cpus, vec![cpu_of(&t)], "{launch:?}");
        assert_eq!(allowed, cpu_of(&t).to_string(), "{launch:?}");
    }
    let e = tm
        .submit(TaskDescription::executable([
            "/bin/sh",
            "-c",
            "grep Cpus_allowed_list /proc/self/status | cut -f2",
        ]))
        .unwrap();
    assert_eq!(fin(&e), TaskState::Done);
    assert_eq!(e.stdout().unwrap().trim(), cpu_of(&e).to_string());
    session.close().unwrap();
}

#[test]
fn dependency_chains_and_fan_in() {
    let (session, _p, tm, _dir) = setup("deps", local(4));
    let sleep = |name: &str, ms: u64| {
        TaskDescription::function("sleep")
            .name(name)
            .try_args(&ms)
            .unwrap()
    };
    let tasks = tm
        .submit_many(vec![
            sleep("c", 1).depends_on("b"),
            sleep("b", 1).depends_on("a"),
            sleep("a", 30),
            sleep("x", 20),
            sleep("y", 5),
            sleep("fan-in", 1)
                .depends_on("c")
                .depends_on("x")
                .depends_on("y"),
        ])
        .unwrap();
    for t in &tasks {
        assert_eq!(fin(t), TaskState::Done, "{:?}: {:?}", t.name(), t.reason());
    }
    let ts = |i: usize| tasks[i].timestamps();
    // a -> b -> c: each starts after its dependency ended.
    assert!(ts(1).exec_start >= ts(2).finished);
    assert!(ts(0).exec_start >= ts(1).finished);
    for dep in [0, 3, 4] {
        assert!(ts(5).exec_start >= ts(dep).finished);
    }
    // A dependency by id, and a failed dependency.
    let bad = tm.submit(TaskDescription::function("fail")).unwrap();
    let after_bad = tm
        .submit(TaskDescription::function("null").depends_on(&bad))
        .unwrap();
    let after_after = tm
        .submit(TaskDescription::function("null").depends_on(&after_bad))
        .unwrap();
    assert_eq!(fin(&after_after), TaskState::Failed);
    assert_eq!(
        after_bad.reason(),
        Some(FailReason::DependencyFailed {
            dependency: bad.id(),
            state: TaskState::Failed
        })
    );
    assert!(matches!(
        after_after.reason(),
        Some(FailReason::DependencyFailed { .. })
    ));
    // On a task already done.
    let late = tm
        .submit(TaskDescription::function("null").depends_on("fan-in"))
        .unwrap();
    assert_eq!(fin(&late), TaskState::Done);
    session.close().unwrap();
}

#[test]
fn priorities_order_waiting_tasks() {
    let (session, _p, tm, _dir) = setup("prio", local(1));
    let blocker = tm
        .submit(
            TaskDescription::function("sleep")
                .try_args(&100u64)
                .unwrap(),
        )
        .unwrap();
    until_executing(&blocker);
    let mut descs = Vec::new();
    for i in 0..6 {
        let prio = if i % 2 == 0 { 0 } else { 10 };
        descs.push(
            TaskDescription::function("null")
                .priority(prio)
                .tag(format!("p{prio}")),
        );
    }
    let tasks = tm.submit_many(descs).unwrap();
    for t in &tasks {
        assert_eq!(fin(t), TaskState::Done);
    }
    let mut order: Vec<(u64, i32)> = tasks
        .iter()
        .map(|t| (t.timestamps().exec_start, t.description().priority))
        .collect();
    order.sort();
    let prios: Vec<i32> = order.iter().map(|o| o.1).collect();
    assert_eq!(prios, vec![10, 10, 10, 0, 0, 0]);
    session.close().unwrap();
}

#[test]
fn fractional_gpus_are_placed_on_slots() {
    // No GPU is needed: the scheduler works on slots.
    let (session, _p, tm, _dir) = setup("gpus", PilotDescription::local().cores(8).gpus(2));
    let tasks = tm
        .submit_many(
            (0..8)
                .map(|_| {
                    TaskDescription::function("sleep")
                        .gpus_per_rank(0.5)
                        .try_args(&20u64)
                        .unwrap()
                })
                .collect(),
        )
        .unwrap();
    for t in &tasks {
        assert_eq!(fin(t), TaskState::Done);
    }
    // At no time does a GPU hold more than its capacity.
    let spans: Vec<(u64, u64, usize, f64)> = tasks
        .iter()
        .map(|t| {
            let p = t.placement().unwrap();
            let g = p.ranks[0].gpus[0];
            let ts = t.timestamps();
            (ts.executing, ts.finished, g.gpu, g.fraction)
        })
        .collect();
    for &(start, _, gpu, _) in &spans {
        let load: f64 = spans
            .iter()
            .filter(|s| s.2 == gpu && s.0 <= start && start < s.1)
            .map(|s| s.3)
            .sum();
        assert!(load <= 1.0 + 1e-9, "GPU {gpu} holds {load}");
    }
    // Executables see their GPU in CUDA_VISIBLE_DEVICES.
    let e = tm
        .submit(
            TaskDescription::executable(["/bin/sh", "-c", "echo $CUDA_VISIBLE_DEVICES"])
                .gpus_per_rank(0.25),
        )
        .unwrap();
    assert_eq!(fin(&e), TaskState::Done);
    let dev = e.placement().unwrap().ranks[0].gpus[0].device;
    assert_eq!(e.stdout().unwrap().trim(), dev.to_string());
    // A whole GPU on a pilot without one is refused at submit.
    let (s2, _p2, tm2, _d2) = setup("nogpu", local(2).gpus(0));
    let err = tm2
        .submit(TaskDescription::function("null").gpus_per_rank(0.5))
        .unwrap_err();
    assert!(err.to_string().contains("GPU"), "{err}");
    s2.close().unwrap();
    session.close().unwrap();
}

#[test]
fn cancel_waiting_and_running_tasks() {
    let (session, _p, tm, _dir) = setup("cancel", local(3));
    let exe = tm
        .submit(TaskDescription::executable(["/bin/sleep", "600"]))
        .unwrap();
    let proc_fn = tm
        .submit(
            TaskDescription::function("sleep")
                .in_processes()
                .try_args(&600_000u64)
                .unwrap(),
        )
        .unwrap();
    let thread_fn = tm
        .submit(
            TaskDescription::function("sleep")
                .try_args(&600_000u64)
                .unwrap(),
        )
        .unwrap();
    let waiting = tm.submit(TaskDescription::function("null")).unwrap();
    for t in [&exe, &proc_fn, &thread_fn] {
        until_executing(t);
    }
    until_state(&waiting, TaskState::Scheduling);
    waiting.cancel();
    assert_eq!(fin(&waiting), TaskState::Canceled);
    std::thread::sleep(Duration::from_millis(50));
    for t in [&exe, &proc_fn, &thread_fn] {
        tm.cancel(t);
        assert_eq!(fin(t), TaskState::Canceled);
        assert_eq!(t.reason(), Some(FailReason::Canceled));
    }
    // The pilot goes on, on the freed cores.
    let ok: Vec<Task> = tm
        .submit_many(
            (0..3)
                .map(|_| TaskDescription::function("null").in_processes())
                .collect(),
        )
        .unwrap();
    for t in &ok {
        assert_eq!(fin(t), TaskState::Done);
    }
    session.close().unwrap();
}

#[test]
fn retries_rerun_failed_tasks() {
    let (session, _p, tm, _dir) = setup("retry", local(2));
    let t = tm
        .submit(
            TaskDescription::function("flaky")
                .retries(2)
                .try_args(&())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
    assert_eq!(t.result::<u32>().unwrap(), 1);
    assert_eq!(t.attempts(), 2);
    let states: Vec<TaskState> = t.history().into_iter().map(|h| h.0).collect();
    use TaskState::*;
    assert_eq!(
        states,
        vec![New, Scheduling, Executing, Failed, Scheduling, Executing, Done]
    );
    let e = tm
        .submit(TaskDescription::executable(["/bin/false"]).retries(1))
        .unwrap();
    assert_eq!(fin(&e), TaskState::Failed);
    assert_eq!(e.attempts(), 2);
    let records = session.task_records();
    let r = records.iter().find(|r| r.id == t.id()).unwrap();
    assert_eq!(r.attempts, 2);
    assert_eq!(r.transitions().len(), 7);
    session.close().unwrap();
}

#[test]
fn bad_submissions_are_rejected() {
    let (session, _p, tm, _dir) = setup("reject", local(2));
    let err = |d: TaskDescription| tm.submit(d).unwrap_err();
    let e = err(TaskDescription::function("null").ranks(3));
    match &e {
        PilotError::InsufficientResources {
            asked, available, ..
        } => {
            assert_eq!(asked.cores, 3);
            assert_eq!(available.cores, 2);
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        err(TaskDescription::function("null").cores_per_rank(4)),
        PilotError::InsufficientResources { .. }
    ));
    assert!(matches!(
        err(TaskDescription::function("nope")),
        PilotError::UnknownFunction { ref name, .. } if name == "nope"
    ));
    assert!(matches!(
        err(TaskDescription::executable(["/no/such/program"])),
        PilotError::ExecutableNotFound { ref path, .. } if path == "/no/such/program"
    ));
    assert!(matches!(
        err(TaskDescription::executable(["no-such-program-on-path"])),
        PilotError::ExecutableNotFound { .. }
    ));
    assert!(matches!(
        err(TaskDescription::executable(Vec::<String>::new())),
        PilotError::InvalidDescription { .. }
    ));
    assert!(matches!(
        err(TaskDescription::function("null").ranks(0)),
        PilotError::InvalidDescription { .. }
    ));
    assert!(matches!(
        err(TaskDescription::function("null").gpus_per_rank(1.5)),
        PilotError::InvalidDescription { .. }
    ));
    assert!(matches!(
        err(TaskDescription::executable(["/bin/true"]).launch_method("srun")),
        PilotError::UnknownLaunchMethod { .. }
    ));
    assert!(matches!(
        err(TaskDescription::function("null").depends_on("never-submitted")),
        PilotError::UnknownDependency { .. }
    ));
    assert!(matches!(
        err(TaskDescription::function("null").depends_on(deeprc_core::TaskId(999_999))),
        PilotError::UnknownDependency { .. }
    ));
    let cycle = tm
        .submit_many(vec![
            TaskDescription::function("null").name("a").depends_on("b"),
            TaskDescription::function("null").name("b").depends_on("a"),
        ])
        .unwrap_err();
    match &cycle {
        PilotError::DependencyCycle { tasks } => assert_eq!(tasks.len(), 3),
        other => panic!("{other}"),
    }
    assert!(cycle.to_string().contains("\"a\""), "{cycle}");
    tm.submit(TaskDescription::function("null").name("once"))
        .unwrap();
    assert!(matches!(
        err(TaskDescription::function("null").name("once")),
        PilotError::DuplicateName { .. }
    ));
    // A rejected batch submits nothing.
    let before = tm.counts().0;
    assert!(tm
        .submit_many(vec![
            TaskDescription::function("null"),
            TaskDescription::function("nope")
        ])
        .is_err());
    assert_eq!(tm.counts().0, before);
    if !cfg!(feature = "mpi") {
        assert!(matches!(
            err(TaskDescription::function("null").mpirun()),
            PilotError::NotCompiled { feature: "mpi", .. }
        ));
    }
    // A task manager without a pilot.
    let lonely = session.task_manager();
    assert!(matches!(
        lonely.submit(TaskDescription::function("null")),
        Err(PilotError::NoPilot)
    ));
    tm.wait_all();
    session.close().unwrap();
}

#[test]
fn callbacks_see_every_transition() {
    let (session, _p, tm, _dir) = setup("callbacks", local(2));
    let seen: Arc<Mutex<Vec<(u64, TaskState)>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    tm.register_callback(move |t, state| s2.lock().unwrap().push((t.id().0, state)));
    let t = tm.submit(TaskDescription::function("null")).unwrap();
    let e = tm
        .submit(TaskDescription::executable(["/bin/false"]))
        .unwrap();
    fin(&t);
    fin(&e);
    tm.wait_all();
    let seen = seen.lock().unwrap().clone();
    let of = |id: u64| {
        seen.iter()
            .filter(|s| s.0 == id)
            .map(|s| s.1)
            .collect::<Vec<_>>()
    };
    use TaskState::*;
    assert_eq!(of(t.id().0), vec![New, Scheduling, Executing, Done]);
    assert_eq!(of(e.id().0), vec![New, Scheduling, Executing, Failed]);
    session.close().unwrap();
}

#[test]
fn function_sandboxes_and_profiles() {
    let dir = common::scratch("profile");
    let session = Session::builder()
        .registry(common::functions::registry())
        .sandbox(dir.join("sandbox"))
        .profile_dir(dir.join("profile"))
        .build()
        .unwrap();
    let pilot = session
        .pilot_manager()
        .submit(local(4).worker_executable(common::host()))
        .unwrap();
    let tm = session.task_manager();
    tm.add_pilot(&pilot).unwrap();
    let sb = tm
        .submit(
            TaskDescription::function("sandbox")
                .with_sandbox()
                .in_processes(),
        )
        .unwrap();
    let nosb = tm.submit(TaskDescription::function("sandbox")).unwrap();
    let ar = tm
        .submit(
            TaskDescription::function("allreduce")
                .ranks(4)
                .try_args(&())
                .unwrap(),
        )
        .unwrap();
    let exe = tm
        .submit(TaskDescription::executable(["/bin/true"]))
        .unwrap();
    assert_eq!(fin(&sb), TaskState::Done, "{:?}", sb.reason());
    let path = String::from_utf8(sb.output().unwrap()).unwrap();
    assert!(path.starts_with(&sb.sandbox().unwrap().display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), b"hi");
    assert_eq!(fin(&nosb), TaskState::Failed);
    assert_eq!(fin(&ar), TaskState::Done);
    assert_eq!(fin(&exe), TaskState::Done);
    assert!(exe.stdout_path().unwrap().is_file());

    let files = session.write_profile(&dir.join("explicit")).unwrap();
    let jsonl = std::fs::read_to_string(&files.jsonl).unwrap();
    let records: Vec<deeprc_core::ProfileRecord> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |id: deeprc_core::TaskId| -> Vec<String> {
        records
            .iter()
            .filter(|r| r.entity == id.to_string())
            .map(|r| r.event.clone())
            .collect()
    };
    let ar_events = of(ar.id());
    for e in [
        "state.new",
        "state.scheduling",
        "state.executing",
        "exec.start",
        "exec.stop",
        "comm.create",
        "state.done",
    ] {
        assert!(
            ar_events.iter().any(|x| x == e),
            "{e} missing from {ar_events:?}"
        );
    }
    assert!(records.iter().any(|r| r.event == "pilot.active"));
    assert!(records.iter().any(|r| r.event == "worker.start"));
    let csv = std::fs::read_to_string(&files.csv).unwrap();
    assert!(csv.starts_with("timestamp_ns,entity,event,duration_ns,attrs"));
    assert_eq!(csv.lines().count(), records.len() + 1);
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files.chrome_trace).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    // Four slices for the four ranks of the all-reduce task.
    let ar_name = format!("{} allreduce", ar.id());
    assert_eq!(
        events
            .iter()
            .filter(|e| e["name"] == ar_name.as_str())
            .count(),
        4
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files.summary).unwrap()).unwrap();
    assert_eq!(summary["tasks"], 4);

    let s = session.close().unwrap();
    assert_eq!((s.tasks, s.done, s.failed), (4, 3, 1));
    assert!(s.throughput > 0.0 && s.core_utilization >= 0.0);
    assert!(dir.join("profile").join("trace.json").is_file());
}

#[test]
fn closing_cancels_what_is_left() {
    let (session, pilot, tm, _dir) = setup("close", local(1));
    let running = tm
        .submit(TaskDescription::executable(["/bin/sleep", "600"]))
        .unwrap();
    let waiting = tm.submit(TaskDescription::function("null")).unwrap();
    until_executing(&running);
    let summary = session.close().unwrap();
    assert_eq!(running.state(), TaskState::Canceled);
    assert_eq!(waiting.state(), TaskState::Canceled);
    assert_eq!(summary.canceled, 2);
    assert_eq!(pilot.state(), deeprc_pilot::PilotState::Done);
    assert!(matches!(
        tm.submit(TaskDescription::function("null")),
        Err(PilotError::Closed { .. })
    ));
}

#[test]
fn a_host_without_worker_mode_fails_clearly() {
    let (session, _p, tm, _dir) = setup("no-worker-mode", local(1).worker_executable("/bin/true"));
    let t = tm
        .submit(TaskDescription::function("null").in_processes())
        .unwrap();
    assert_eq!(fin(&t), TaskState::Failed);
    match t.reason() {
        Some(FailReason::Launch(m)) => assert!(m.contains("run_if_worker"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Threads still work.
    let ok = tm.submit(TaskDescription::function("null")).unwrap();
    assert_eq!(fin(&ok), TaskState::Done);
    session.close().unwrap();
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Session>();
    check::<deeprc_pilot::PilotManager>();
    check::<deeprc_pilot::Pilot>();
    check::<deeprc_pilot::TaskManager>();
    check::<Task>();
    check::<deeprc_pilot::Registry>();
    check::<deeprc_pilot::TaskContext>();
    check::<PilotError>();
    check::<deeprc_pilot::TaskRecord>();
    let _: Option<&dyn deeprc_pilot::LaunchMethod> = None;
    let _: Option<&dyn deeprc_pilot::ResourceProvider> = None;
}

#[test]
fn unknown_resources_are_rejected() {
    let session = Session::new().unwrap();
    let err = session
        .pilot_manager()
        .submit(PilotDescription::local().resource("pbs"))
        .unwrap_err();
    assert!(matches!(err, PilotError::UnknownResource { .. }), "{err}");
    session.close().unwrap();
}
