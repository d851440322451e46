//! Per-task resource monitoring with real processes and threads: CPU time
//! and peak memory from `wait4`, thread CPU clocks and worker rusage; the
//! sampler's samples and the trace's counter tracks; the worker protocol's
//! version check; NVML's absence (feature `nvml`).
//!
//! Only lower bounds are asserted (work done, memory touched), never upper
//! bounds on time.

use super::*;
use common::{host, scratch, Scratch};
use deeprc_pilot::{ResourceSample, ResourceUsage, RssScope};

fn usage(t: &Task) -> ResourceUsage {
    t.resources()
        .unwrap_or_else(|| panic!("{} has no resource usage", t.id()))
}

#[test]
fn executables_report_cpu_time_and_peak_memory() {
    let (session, _p, tm, _dir) = setup("res-exe", local(2));
    let burn = tm
        .submit(TaskDescription::executable([
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done",
        ]))
        .unwrap();
    let host = host().display().to_string();
    let alloc = tm
        .submit(TaskDescription::executable([
            host.as_str(),
            "alloc-mib",
            // Far above this test process's own peak (it is the spawner's
            // peak that a task must exceed to count as its own): with 50
            // MiB the figure was twice marked `AtMost` while a CI build ran
            // beside the test.
            "300",
        ]))
        .unwrap();
    assert_eq!(fin(&burn), TaskState::Done, "{:?}", burn.reason());
    assert_eq!(fin(&alloc), TaskState::Done, "{:?}", alloc.reason());
    let b = usage(&burn);
    println!("burn: {b:?}");
    assert!(b.user_cpu_s + b.sys_cpu_s > 0.1, "{b:?}");
    assert!(b.max_rss_kib > 0, "{b:?}");
    assert_eq!(b.thread_cpu_s, None);
    // A shell smaller than this test process: Linux may have counted the
    // test's memory at the spawn, so it is only a bound.
    assert!(
        matches!(b.rss_scope, RssScope::Task | RssScope::AtMost),
        "{b:?}"
    );
    let a = usage(&alloc);
    println!("alloc 300 MiB: {a:?}");
    assert!(a.max_rss_kib >= 250 * 1024, "{a:?}");
    // Above anything this test process held: the task's own.
    assert_eq!(a.rss_scope, RssScope::Task, "{a:?}");
    // A host holding 100 MiB spawns /bin/true: Linux's figure is the
    // host's memory, and it is marked as a bound, not as the task's.
    let held = std::hint::black_box(vec![1u8; 100 << 20]);
    let tiny = tm
        .submit(TaskDescription::executable(["/bin/true"]))
        .unwrap();
    assert_eq!(fin(&tiny), TaskState::Done);
    let t = usage(&tiny);
    println!("/bin/true from a host holding 100 MiB: {t:?}");
    assert_eq!(t.rss_scope, RssScope::AtMost, "{t:?}");
    drop(held);
    // The same figures are in the profile record and the summary.
    let records = session.task_records();
    let rec = records.iter().find(|r| r.id == alloc.id()).unwrap();
    assert_eq!(rec.usage.as_deref(), Some(&a));
    let summary = session.close().unwrap();
    assert!(summary.cpu_s >= b.cpu_s(), "{summary:?}");
    assert!(summary.max_rss_kib >= 40 * 1024);
    assert!(summary.to_string().contains("CPU time"), "{summary}");
}

#[test]
fn thread_ranks_report_their_thread_cpu_time() {
    let (session, _p, tm, _dir) = setup("res-threads", local(2));
    let t = tm
        .submit(
            TaskDescription::function("spin")
                .ranks(2)
                .try_args(&200u64)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
    let u = usage(&t);
    println!("2 thread ranks spinning 0.2 s each: {u:?}");
    let thread = u.thread_cpu_s.expect("thread ranks have a thread CPU time");
    assert!(thread >= 0.3, "{u:?}");
    assert_eq!(u.cpu_s(), thread);
    // The host's CPU time over the task bounds the ranks' from above (up to
    // the rounding of the two clocks).
    assert!(u.process_cpu_s() + 0.02 >= thread, "{u:?}");
    assert!(u.max_rss_kib > 0);
    assert_eq!(u.rss_scope, RssScope::Process);
    session.close().unwrap();
}

#[test]
fn worker_processes_report_their_own_rusage() {
    // One core: both tasks run in the same worker, one after the other.
    let (session, _p, tm, _dir) = setup("res-workers", local(1));
    let spin = tm
        .submit(
            TaskDescription::function("spin")
                .in_processes()
                .try_args(&300u64)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&spin), TaskState::Done, "{:?}", spin.reason());
    let s = usage(&spin);
    println!("worker spinning 0.3 s: {s:?}");
    assert!(s.user_cpu_s + s.sys_cpu_s >= 0.25, "{s:?}");
    assert_eq!(s.thread_cpu_s, None);
    assert!(s.max_rss_kib > 0);
    let alloc = tm
        .submit(
            TaskDescription::function("alloc")
                .in_processes()
                .try_args(&50usize)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&alloc), TaskState::Done, "{:?}", alloc.reason());
    let a = usage(&alloc);
    println!("worker allocating 50 MiB: {a:?}");
    assert!(a.max_rss_kib >= 40 * 1024, "{a:?}");
    let after = tm
        .submit(TaskDescription::function("null").in_processes())
        .unwrap();
    assert_eq!(fin(&after), TaskState::Done);
    let n = usage(&after);
    println!("the next task in the same worker: {n:?}");
    if n.rss_scope == RssScope::Task {
        // The worker's peak was reset before the call: the 50 MiB of the
        // previous task are not this one's.
        assert!(n.max_rss_kib < a.max_rss_kib, "{n:?} vs {a:?}");
    }
    session.close().unwrap();
}

/// Every counter event of a trace: `(name, pid)`.
fn counters(trace: &serde_json::Value) -> Vec<(String, u64)> {
    trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "C")
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn long_tasks_are_sampled_into_the_profile_and_the_trace() {
    let dir = scratch("res-sampler");
    let (session, pilot, tm, dir) = common::setup_in(dir, local(3));
    assert_eq!(
        pilot.description().resource_sampling,
        Some(Duration::from_secs(1)),
        "sampling is on by default, every second"
    );
    let exe = tm
        .submit(TaskDescription::executable([
            "/bin/sh",
            "-c",
            "end=$(($(date +%s%N) + 1500000000)); while [ $(date +%s%N) -lt $end ]; do :; done",
        ]))
        .unwrap();
    let thread = tm
        .submit(
            TaskDescription::function("spin")
                .try_args(&1500u64)
                .unwrap(),
        )
        .unwrap();
    let worker = tm
        .submit(
            TaskDescription::function("sleep")
                .in_processes()
                .try_args(&1500u64)
                .unwrap(),
        )
        .unwrap();
    let short = tm.submit(TaskDescription::function("null")).unwrap();
    for t in [&exe, &thread, &worker, &short] {
        assert_eq!(fin(t), TaskState::Done, "{}: {:?}", t.id(), t.reason());
    }
    for t in [&exe, &thread, &worker] {
        let u = usage(t);
        println!("{}: {u:?}", t.id());
        assert!(u.samples >= 1, "{}: {u:?}", t.id());
    }
    assert_eq!(usage(&short).samples, 0);
    // Written as they are taken, in the pilot's sandbox.
    let live = pilot.sandbox().join("resources.jsonl");
    assert!(live.exists());
    let files = session.write_profile(&dir.join("profile")).unwrap();
    let samples: Vec<ResourceSample> = std::fs::read_to_string(&files.resources)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (t, scope) in [(&exe, "group"), (&thread, "thread"), (&worker, "process")] {
        let mine: Vec<&ResourceSample> = samples
            .iter()
            .filter(|s| s.task == t.id().to_string())
            .collect();
        println!("{}: {mine:?}", t.id());
        assert!(!mine.is_empty(), "no sample of {}", t.id());
        assert!(mine.iter().all(|s| s.scope == scope && s.rss_kib > 0));
    }
    // The busy ones show CPU use (the executable from its first sample on).
    let exe_cpu = samples
        .iter()
        .filter(|s| s.task == exe.id().to_string())
        .filter_map(|s| s.cpu_pct)
        .fold(0.0, f64::max);
    assert!(exe_cpu > 0.0, "{samples:?}");
    assert!(!samples.iter().any(|s| s.task == short.id().to_string()));
    // The trace: counter tracks per sampled task, CPU and RSS on the slices.
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files.chrome_trace).unwrap()).unwrap();
    let c = counters(&trace);
    for t in [&exe, &thread, &worker] {
        let rss = format!("{} r0 rss MiB", t.id());
        assert!(c.iter().any(|(n, _)| *n == rss), "{rss} not in {c:?}");
    }
    assert!(c
        .iter()
        .any(|(n, _)| *n == format!("{} r0 cpu %", exe.id())));
    let slice = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["ph"] == "X"
                && e["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(&exe.id().to_string())
        })
        .unwrap();
    assert!(slice["args"]["cpu_s"].as_f64().unwrap() > 0.0, "{slice}");
    assert!(slice["args"]["max_rss_mib"].as_f64().unwrap() > 0.0);
    // The profile's `exec.stop` events carry the same figures.
    let jsonl = std::fs::read_to_string(&files.jsonl).unwrap();
    let stop = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["entity"] == exe.id().to_string() && r["event"] == "exec.stop")
        .unwrap();
    assert!(stop.to_string().contains("max_rss_kib"), "{stop}");
    session.close().unwrap();
}

#[test]
fn sampling_can_be_turned_off() {
    let (session, pilot, tm, _dir) =
        setup("res-nosampler", local(1).resource_sampling(Duration::ZERO));
    let t = tm
        .submit(
            TaskDescription::function("sleep")
                .try_args(&300u64)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&t), TaskState::Done);
    // Totals are still measured.
    let u = usage(&t);
    assert_eq!(u.samples, 0);
    assert!(u.thread_cpu_s.is_some());
    assert!(!pilot.sandbox().join("resources.jsonl").exists());
    session.close().unwrap();
}

/// A worker executable that introduces itself with protocol version 1.
fn old_worker(dir: &Scratch) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("old-worker.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nDEEPRC_PILOT_TEST_HOST_OLD_HELLO=1 exec '{}' \"$@\"\n",
            host().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_worker_of_another_protocol_version_is_refused_clearly() {
    let dir = scratch("res-old-worker");
    let exe = old_worker(&dir);
    let (session, _p, tm, _dir) = common::setup_in(dir, local(1).worker_executable(exe));
    let t = tm
        .submit(TaskDescription::function("null").in_processes())
        .unwrap();
    assert_eq!(fin(&t), TaskState::Failed);
    let why = t.reason().unwrap().to_string();
    assert!(why.contains("version 1 of the worker protocol"), "{why}");
    session.close().unwrap();
}

#[cfg(feature = "nvml")]
#[test]
fn without_nvml_gpu_tasks_record_nothing_and_say_so_once() {
    let (session, _p, tm, _dir) = setup(
        "res-nvml",
        local(2)
            .gpus(1)
            .resource_sampling(Duration::from_millis(100)),
    );
    let tasks: Vec<Task> = (0..2)
        .map(|_| {
            tm.submit(
                TaskDescription::function("sleep")
                    .gpus_per_rank(0.5)
                    .try_args(&500u64)
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    for t in &tasks {
        assert_eq!(fin(t), TaskState::Done, "{:?}", t.reason());
    }
    let missing = session
        .events()
        .iter()
        .filter(|e| e.event == "nvml.unavailable")
        .count();
    for t in &tasks {
        let u = usage(t);
        println!("{}: {u:?}", t.id());
        assert!(u.samples >= 1, "{u:?}");
        if missing > 0 {
            assert_eq!(u.gpu, None);
        }
    }
    // Here (no GPU, no driver) NVML is absent; on a GPU machine it is not.
    assert!(missing <= 1, "said {missing} times");
    if missing == 0 {
        assert!(tasks.iter().all(|t| usage(t).gpu.is_some()));
    }
    session.close().unwrap();
}
