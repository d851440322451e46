//! Load tests: 100,000 null function tasks (on threads and in worker
//! processes) and 10,000 `/bin/true` tasks complete, and the memory the
//! client keeps does not grow with the number of tasks beyond a fixed
//! budget per task; 64 multi-rank tasks create their communicators at
//! once; 200 sessions opened and closed leak no threads, file descriptors
//! or heap.
//!
//! What is measured is what the claim is about: the live heap bytes of this
//! process (a counting global allocator), read after a warm-up and again
//! after many more tasks, divided by the number of tasks in between. Unlike
//! VmRSS, this figure does not move with allocator arenas, page trimming or
//! whatever else runs on the machine, so the tests fail only when memory
//! really grows with tasks. (An earlier version bounded the growth of VmRSS
//! and failed on a loaded CI machine with nothing wrong.) The RSS is still
//! printed beside it for the reader.

mod common;

use deeprc_core::sync::lock;
use deeprc_pilot::{
    current_rss_bytes, FunctionLaunch, PilotDescription, TaskDescription, TaskManager, TaskState,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// The system allocator, counting the bytes currently allocated.
struct CountingAllocator;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed` is forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (above).
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The heap bytes live in this process now.
fn live_heap_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// The heap is per process: run the load tests one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Heap and RSS read at one point of a run.
#[derive(Clone, Copy)]
struct Reading {
    heap: i64,
    rss: u64,
}

impl Reading {
    fn now() -> Self {
        Reading {
            heap: live_heap_bytes(),
            rss: current_rss_bytes().unwrap_or(0),
        }
    }
}

/// Checks that the heap grew by at most `budget` bytes per task between
/// `before` and `after`, `tasks` tasks apart; prints both measures.
fn assert_growth_per_task(label: &str, before: Reading, after: Reading, tasks: usize, budget: f64) {
    let per_task = (after.heap - before.heap) as f64 / tasks as f64;
    println!(
        "{label}: live heap {:.1} -> {:.1} MiB over {tasks} tasks ({per_task:.1} B/task, budget \
         {budget} B/task); RSS {:.1} -> {:.1} MiB",
        before.heap as f64 / (1 << 20) as f64,
        after.heap as f64 / (1 << 20) as f64,
        mib(before.rss),
        mib(after.rss),
    );
    assert!(
        per_task <= budget,
        "{label}: the heap grew by {per_task:.1} bytes per task (budget {budget})"
    );
}

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
    let _serial = lock(&SERIAL);
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let (session, pilot, tm, dir) =
            common::setup(&format!("load-{launch:?}"), PilotDescription::local());
        let make = move || TaskDescription::function("null").function_launch(launch);
        run(&tm, 10_000, 10_000, &make);
        let before = Reading::now();
        run(&tm, 100_000, 10_000, &make);
        let after = Reading::now();
        // Function tasks leave no files behind (only the worker logs).
        let pilot_sandbox = pilot.sandbox().to_path_buf();
        let entries: Vec<String> = std::fs::read_dir(&pilot_sandbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(entries.iter().all(|e| e == "workers"), "{entries:?}");
        // The profile record kept per task is about 160 bytes; allow for
        // the growth of the vector that holds them (up to 2x).
        assert_growth_per_task(&format!("{launch:?}"), before, after, 100_000, 400.0);
        let summary = session.close().unwrap();
        println!(
            "{launch:?}: 110000 null tasks, {:.0} tasks/s (debug build)",
            summary.throughput
        );
        assert_eq!(summary.done, 110_000);
        assert!(
            !pilot_sandbox.exists(),
            "an empty sandbox is removed at close"
        );
        drop(dir);
    }
}

#[test]
fn without_task_records_memory_does_not_grow_with_tasks() {
    let _serial = lock(&SERIAL);
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
    tm.add_pilot(&pilot).unwrap();
    let make = || TaskDescription::function("null");
    run(&tm, 20_000, 10_000, &make);
    let before = Reading::now();
    run(&tm, 100_000, 10_000, &make);
    let after = Reading::now();
    // Only the final state of each task (for dependencies) remains: a few
    // bytes in a map, with the map's spare capacity.
    assert_growth_per_task("no records", before, after, 100_000, 48.0);
    assert_eq!(tm.counts(), (120_000, 120_000));
    session.close().unwrap();
    drop(dir);
}

#[test]
fn ten_thousand_bin_true_tasks() {
    let _serial = lock(&SERIAL);
    let (session, _pilot, tm, dir) = common::setup_in(
        common::scratch_in_memory("load-true"),
        PilotDescription::local(),
    );
    let make = || TaskDescription::executable(["/bin/true"]);
    run(&tm, 1_000, 1_000, &make);
    let before = Reading::now();
    run(&tm, 10_000, 2_000, &make);
    let after = Reading::now();
    // A record per task plus its sandbox path and exit status.
    assert_growth_per_task("/bin/true", before, after, 10_000, 1024.0);
    let summary = session.close().unwrap();
    println!(
        "/bin/true: 11000 tasks, {:.0} tasks/s (debug build)",
        summary.throughput
    );
    assert_eq!(summary.done, 11_000);
    drop(dir);
}

/// 64 four-rank function tasks placed at once, on thread ranks (local
/// communicators) and again in worker processes (tcp communicators): 256
/// ranks on a pilot of 256 core slots, however few CPUs there are, each
/// task creating its communicator and all-reducing at the same time. All
/// end DONE with the right sum.
#[test]
fn sixty_four_concurrent_multi_rank_tasks_create_communicators_at_once() {
    let _serial = lock(&SERIAL);
    for (launch, tasks) in [
        (FunctionLaunch::Threads, 64),
        (FunctionLaunch::Processes, 64),
    ] {
        let (session, _pilot, tm, dir) = common::setup(
            &format!("load-concurrent-{launch:?}"),
            PilotDescription::local().cores(4 * tasks).pin_cpus(false),
        );
        let start = std::time::Instant::now();
        let all = tm
            .submit_many(
                (0..tasks)
                    .map(|_| {
                        TaskDescription::function("allreduce")
                            .ranks(4)
                            .function_launch(launch)
                            .try_args(&())
                            .unwrap()
                    })
                    .collect(),
            )
            .unwrap();
        tm.wait_all();
        let mut setups = Vec::new();
        for t in &all {
            assert_eq!(t.state(), TaskState::Done, "{:?}", t.reason());
            for out in t.outputs() {
                let (sum, setup_ns): (f64, u64) = serde_json::from_slice(&out).unwrap();
                assert_eq!(sum, 1.0 + 2.0 + 3.0 + 4.0);
                setups.push(setup_ns);
            }
        }
        setups.sort_unstable();
        println!(
            "{tasks} concurrent 4-rank all-reduce tasks ({launch:?}): all DONE in {:.2} s; \
             communicator setup median {:.2} ms, max {:.2} ms",
            start.elapsed().as_secs_f64(),
            setups[setups.len() / 2] as f64 / 1e6,
            setups[setups.len() - 1] as f64 / 1e6,
        );
        session.close().unwrap();
        drop(dir);
    }
}

/// The threads and open file descriptors of this process.
fn threads_and_fds() -> (i64, i64) {
    let count = |d: &str| std::fs::read_dir(d).map(|r| r.count() as i64).unwrap_or(-1);
    (count("/proc/self/task"), count("/proc/self/fd"))
}

/// The least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    cov / var
}

/// A day of a pilot's life compressed: 200 sessions opened and closed, each
/// with a pilot, function tasks on threads and in worker processes, a
/// multi-rank task with a communicator and an executable. Threads, file
/// descriptors and live heap must not grow with sessions: the slopes over
/// sessions 40..200 (after a warm-up) stay within generous budgets.
#[test]
fn two_hundred_sessions_leak_no_threads_fds_or_memory() {
    let _serial = lock(&SERIAL);
    let root = common::scratch_in_memory("soak");
    let (mut xs, mut threads, mut fds, mut heap) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut first = None;
    for i in 0..200 {
        let (session, _pilot, tm) =
            common::session_in(&root.join("sandbox"), PilotDescription::local().cores(4));
        let tasks = tm
            .submit_many(vec![
                TaskDescription::function("echo").args_bytes(format!("{i}")),
                TaskDescription::function("echo")
                    .args_bytes(format!("{i}"))
                    .in_processes(),
                TaskDescription::function("allreduce")
                    .ranks(2)
                    .try_args(&())
                    .unwrap(),
                TaskDescription::executable(["/bin/true"]),
            ])
            .unwrap();
        tm.wait_all();
        for t in &tasks {
            assert_eq!(t.state(), TaskState::Done, "session {i}: {:?}", t.reason());
        }
        assert_eq!(tasks[1].output(), Some(format!("{i}").into_bytes()));
        drop(tasks);
        session.close().unwrap();
        if i >= 40 && i % 10 == 9 {
            let (t, f) = threads_and_fds();
            xs.push(i as f64);
            threads.push(t as f64);
            fds.push(f as f64);
            heap.push(live_heap_bytes() as f64);
            first.get_or_insert((t, f, live_heap_bytes()));
        }
    }
    let (t0, f0, h0) = first.unwrap();
    let (ts, fs, hs) = (slope(&xs, &threads), slope(&xs, &fds), slope(&xs, &heap));
    println!(
        "soak, 200 sessions: threads {t0} -> {} ({ts:+.3}/session), fds {f0} -> {} \
         ({fs:+.3}/session), live heap {:.2} -> {:.2} MiB ({hs:+.0} B/session)",
        threads.last().unwrap(),
        fds.last().unwrap(),
        h0 as f64 / (1 << 20) as f64,
        heap.last().unwrap() / (1 << 20) as f64,
    );
    // A leak of one thread or descriptor every 10 sessions fails; so does
    // 16 KiB of heap per session (a session's records are a few KiB).
    assert!(ts < 0.1, "threads grow by {ts} per session: {threads:?}");
    assert!(
        fs < 0.1,
        "file descriptors grow by {fs} per session: {fds:?}"
    );
    assert!(
        hs < 16384.0,
        "the heap grows by {hs} bytes per session: {heap:?}"
    );
}
