//! Faults with real processes: a worker process killed (SIGKILL) in the
//! middle of a task, and the client itself killed in the middle of a
//! session. What finished is intact: the results in the session, and the
//! journal's lines (results and profile events) that a new session reads.

mod common;

use deeprc_pilot::{
    FailReason, FunctionLaunch, Journal, PilotDescription, Task, TaskDescription, TaskManager,
    TaskState,
};
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Waits for `path` to hold something; its contents.
fn wait_for(path: &Path, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(start.elapsed() < limit, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for this purpose: it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
}

/// Echo tasks `first..first + n`, alternately on threads and in worker
/// processes, each named `echo<i>` and returning `r<i>`.
fn echoes(tm: &TaskManager, first: usize, n: usize) -> Vec<Task> {
    (first..first + n)
        .map(|i| {
            let launch = if i % 2 == 0 {
                FunctionLaunch::Threads
            } else {
                FunctionLaunch::Processes
            };
            tm.submit(
                TaskDescription::function("echo")
                    .name(format!("echo{i}"))
                    .args_bytes(format!("r{i}"))
                    .function_launch(launch),
            )
            .unwrap()
        })
        .collect()
}

/// A task that writes its worker's pid to `pidfile`, then sleeps a minute.
fn victim(tm: &TaskManager, pidfile: &Path) -> Task {
    tm.submit(
        TaskDescription::function("pid_then_sleep")
            .name("victim")
            .in_processes()
            .try_args(&(pidfile.display().to_string(), 60_000u64))
            .unwrap(),
    )
    .unwrap()
}

/// Checks journal entries of finished echo tasks: DONE, their result, and
/// their profile events in order (NEW, SCHEDULING, EXECUTING, DONE).
fn check_echo_entries(journal: &Path, names: &[usize]) {
    let read = Journal::read(journal).unwrap();
    assert_eq!(read.torn_tail, None);
    for &i in names {
        let name = format!("echo{i}");
        let e = read
            .entries
            .iter()
            .find(|e| e.name.as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} is not in the journal: {:?}", read.entries));
        assert!(e.is_done(), "{e:?}");
        assert_eq!(e.output(), Some(format!("r{i}").as_bytes()), "{e:?}");
        let states: Vec<&str> = e.transitions.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            states,
            ["NEW", "SCHEDULING", "EXECUTING", "DONE"],
            "{name}: {e:?}"
        );
        assert!(e.transitions.windows(2).all(|w| w[0].1 <= w[1].1), "{e:?}");
        assert!(e.timestamps.exec_start <= e.timestamps.exec_end, "{e:?}");
    }
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_alone_and_nothing_finished_is_lost() {
    let (session, _pilot, tm, dir) =
        common::setup("fault-worker", PilotDescription::local().cores(2));
    let journal_path = dir.join("tasks.jsonl");
    let journal = Journal::open(&journal_path).unwrap();
    journal.attach(&tm);
    let done = echoes(&tm, 0, 8);
    tm.wait_all();
    let pidfile = dir.join("worker.pid");
    let v = victim(&tm, &pidfile);
    let pid: i32 = wait_for(&pidfile, Duration::from_secs(60)).parse().unwrap();
    let killed = Instant::now();
    sigkill(pid);
    let state = v.wait_timeout(Duration::from_secs(30));
    let detect = killed.elapsed();
    println!(
        "FAULT pilot worker process killed mid-task: its task FAILED after {:.1} ms: {:?}",
        detect.as_secs_f64() * 1e3,
        v.reason()
    );
    assert_eq!(state, Some(TaskState::Failed));
    match v.reason() {
        Some(FailReason::WorkerCrashed { status, .. }) => {
            assert!(status.contains("SIGKILL"), "{status}")
        }
        other => panic!("{other:?}"),
    }
    assert!(detect < Duration::from_secs(5), "{detect:?}");
    // Finished tasks keep their results; the pilot goes on (a new worker).
    for (i, t) in done.iter().enumerate() {
        assert_eq!(t.output(), Some(format!("r{i}").into_bytes()));
    }
    let more = echoes(&tm, 8, 4);
    tm.wait_all();
    assert!(more.iter().all(|t| t.state() == TaskState::Done));
    session.close().unwrap();
    assert!(journal.errors().is_empty(), "{:?}", journal.errors());
    check_echo_entries(&journal_path, &(0..12).collect::<Vec<_>>());
    let read = Journal::read(&journal_path).unwrap();
    let v = read
        .entries
        .iter()
        .find(|e| e.name.as_deref() == Some("victim"))
        .unwrap();
    assert_eq!(v.state, "FAILED");
    assert!(v.reason.as_deref().unwrap().contains("SIGKILL"), "{v:?}");
    assert_eq!(read.entries.len(), 13);
}

/// kill -9 of the client process (a session with a pilot, worker processes
/// and a journal) while a task runs in a worker: the journal holds every
/// finished task, a new session reads it and appends to it, and the killed
/// client's worker process does not outlive it for long.
#[test]
fn a_client_killed_mid_session_leaves_a_journal_a_new_session_reads() {
    let dir = common::scratch("fault-client");
    let exe = std::env::current_exe().unwrap();
    let mut client = Command::new(exe)
        .args([
            "client_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DEEPRC_PILOT_FAULT_DIR", &*dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pidfile = dir.join("worker.pid");
    let worker: i32 = wait_for(&pidfile, Duration::from_secs(120))
        .parse()
        .unwrap();
    wait_for(&dir.join("ready"), Duration::from_secs(60));
    let killed = Instant::now();
    client.kill().unwrap(); // SIGKILL
    client.wait().unwrap();
    let journal_path = dir.join("tasks.jsonl");
    check_echo_entries(&journal_path, &(0..6).collect::<Vec<_>>());
    assert_eq!(Journal::read(&journal_path).unwrap().entries.len(), 6);

    // The orphaned worker: its task runs a minute; it must not.
    let start = Instant::now();
    while alive(worker) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let orphan_ms = killed.elapsed().as_secs_f64() * 1e3;
    let left = alive(worker);
    if left {
        sigkill(worker);
    }
    println!(
        "FAULT pilot client killed mid-session: 6 finished tasks in the journal; its worker \
         process (mid-task) {} after {orphan_ms:.0} ms",
        if left {
            "was STILL RUNNING"
        } else {
            "was gone"
        }
    );
    assert!(
        !left,
        "the killed client's worker {worker} outlived it by 30 s"
    );

    // A new session: reads what finished, runs the rest, appends.
    let (session, _pilot, tm) =
        common::session_in(&dir.join("sandbox2"), PilotDescription::local().cores(2));
    let journal = Journal::open(&journal_path).unwrap();
    let finished: Vec<String> = Journal::read(&journal_path)
        .unwrap()
        .entries
        .into_iter()
        .filter(|e| e.is_done())
        .filter_map(|e| e.name)
        .collect();
    journal.attach(&tm);
    let todo: Vec<usize> = (0..8)
        .filter(|i| !finished.contains(&format!("echo{i}")))
        .collect();
    assert_eq!(todo, vec![6, 7]);
    echoes(&tm, 6, 2);
    tm.wait_all();
    session.close().unwrap();
    check_echo_entries(&journal_path, &(0..8).collect::<Vec<_>>());
    assert_eq!(Journal::read(&journal_path).unwrap().entries.len(), 8);
}

/// The client of the test above: six tasks finish, then one runs in a
/// worker process and another on a thread, and the client waits to be
/// killed.
#[test]
#[ignore = "run by a_client_killed_mid_session_leaves_a_journal_a_new_session_reads"]
fn client_process() {
    let Some(dir) = std::env::var_os("DEEPRC_PILOT_FAULT_DIR").map(PathBuf::from) else {
        return;
    };
    let (_session, _pilot, tm) =
        common::session_in(&dir.join("sandbox"), PilotDescription::local().cores(3));
    let journal = Journal::open(dir.join("tasks.jsonl")).unwrap();
    journal.attach(&tm);
    echoes(&tm, 0, 6);
    tm.wait_all();
    victim(&tm, &dir.join("worker.pid"));
    tm.submit(
        TaskDescription::function("sleep")
            .try_args(&60_000u64)
            .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("ready"), "yes").unwrap();
    std::thread::sleep(Duration::from_secs(600));
}
