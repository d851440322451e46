//! Load tests: 100,000 null function tasks (on threads and in worker
//! processes) and 10,000 `/bin/true` tasks complete, and the resident
//! memory of the process stays bounded while they run.
//!
//! The bound is on memory, not time: after a warm-up, the growth of VmRSS
//! over the whole run must stay under a fixed budget per task (the
//! compact profile record kept for each task, about 160 bytes, plus
//! allocator slack). Nothing per task is kept on disk for function tasks.

mod common;

use deeprc_pilot::{
    current_rss_bytes, FunctionLaunch, PilotDescription, TaskDescription, TaskManager,
};
use std::sync::Mutex;

/// RSS is per process: run the load tests one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Submits `n` tasks in chunks of `chunk`, dropping the handles, and waits
/// for each chunk (so that at most `chunk` tasks are in flight).
fn run(tm: &TaskManager, n: usize, chunk: usize, make: &dyn Fn() -> TaskDescription) {
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk);
        let tasks = tm.submit_many((0..k).map(|_| make()).collect()).unwrap();
        drop(tasks);
        tm.wait_all();
        left -= k;
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

#[test]
fn hundred_thousand_null_function_tasks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let (session, pilot, tm, dir) =
            common::setup(&format!("load-{launch:?}"), PilotDescription::local());
        let make = move || TaskDescription::function("null").function_launch(launch);
        run(&tm, 10_000, 10_000, &make);
        let before = current_rss_bytes().unwrap();
        run(&tm, 100_000, 10_000, &make);
        let after = current_rss_bytes().unwrap();
        let growth = after.saturating_sub(before);
        // Function tasks leave no files behind (only the worker logs).
        let pilot_sandbox = pilot.sandbox().to_path_buf();
        let entries: Vec<String> = std::fs::read_dir(&pilot_sandbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(entries.iter().all(|e| e == "workers"), "{entries:?}");
        let summary = session.close().unwrap();
        println!(
            "{launch:?}: 110000 null tasks, {:.0} tasks/s (debug build); RSS {:.1} -> {:.1} MiB (+{:.1} MiB)",
            summary.throughput,
            mib(before),
            mib(after),
            mib(growth)
        );
        assert_eq!(summary.done, 110_000);
        // 100,000 tasks: at most 400 bytes each (the profile record is ~160).
        assert!(
            growth < 40 << 20,
            "{launch:?}: RSS grew by {:.1} MiB",
            mib(growth)
        );
        assert!(
            !pilot_sandbox.exists(),
            "an empty sandbox is removed at close"
        );
        drop(dir);
    }
}

#[test]
fn without_task_records_memory_does_not_grow_with_tasks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::scratch("load-norecords");
    let session = deeprc_pilot::Session::builder()
        .registry(common::functions::registry())
        .sandbox(dir.join("sandbox"))
        .keep_task_records(false)
        .build()
        .unwrap();
    let pilot = session
        .pilot_manager()
        .submit(PilotDescription::local())
        .unwrap();
    let tm = session.task_manager();
    tm.add_pilot(&pilot);
    let make = || TaskDescription::function("null");
    run(&tm, 20_000, 10_000, &make);
    let before = current_rss_bytes().unwrap();
    run(&tm, 100_000, 10_000, &make);
    let after = current_rss_bytes().unwrap();
    let growth = after.saturating_sub(before);
    println!(
        "no records: RSS {:.1} -> {:.1} MiB (+{:.1} MiB)",
        mib(before),
        mib(after),
        mib(growth)
    );
    // Only one byte per task (its final state, for dependencies) remains.
    assert!(growth < 4 << 20, "RSS grew by {:.1} MiB", mib(growth));
    assert_eq!(tm.counts(), (120_000, 120_000));
    session.close().unwrap();
    drop(dir);
}

#[test]
fn ten_thousand_bin_true_tasks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (session, _pilot, tm, dir) = common::setup_in(
        common::scratch_in_memory("load-true"),
        PilotDescription::local(),
    );
    let make = || TaskDescription::executable(["/bin/true"]);
    run(&tm, 1_000, 1_000, &make);
    let before = current_rss_bytes().unwrap();
    run(&tm, 10_000, 2_000, &make);
    let after = current_rss_bytes().unwrap();
    let growth = after.saturating_sub(before);
    let summary = session.close().unwrap();
    println!(
        "/bin/true: 11000 tasks, {:.0} tasks/s (debug build); RSS {:.1} -> {:.1} MiB (+{:.1} MiB)",
        summary.throughput,
        mib(before),
        mib(after),
        mib(growth)
    );
    assert_eq!(summary.done, 11_000);
    assert!(growth < 16 << 20, "RSS grew by {:.1} MiB", mib(growth));
    drop(dir);
}
