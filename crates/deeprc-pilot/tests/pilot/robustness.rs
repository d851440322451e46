//! Regression tests of defects found in review: each failed (or hung) on
//! the code before its fix.

use super::*;
use common::{host, scratch, Scratch};
use deeprc_core::TaskId;
use deeprc_pilot::{CommandSpec, Fork, LaunchMethod, LaunchRequest, Pilot, TaskManager};
use std::sync::Barrier;

/// Waits at most `secs` for a task to end; `None` if it did not.
fn fin_within(t: &Task, secs: u64) -> Option<TaskState> {
    t.wait_timeout(Duration::from_secs(secs))
}

/// A session with the test functions and one task manager, no pilot.
fn session_in(dir: &Scratch) -> (Session, TaskManager) {
    let session = Session::builder()
        .registry(common::functions::registry())
        .sandbox(dir.join("sandbox"))
        .profile_dir(dir.join("profile"))
        .build()
        .unwrap();
    let tm = session.task_manager();
    (session, tm)
}

fn pilot(session: &Session, desc: PilotDescription) -> Pilot {
    session
        .pilot_manager()
        .submit(desc.worker_executable(host()))
        .unwrap()
}

/// A launch method for tests: `fork`'s command lines under another name,
/// available or not, spanning nodes or not.
#[derive(Debug)]
struct Named {
    name: &'static str,
    available: bool,
    spans: bool,
}

impl LaunchMethod for Named {
    fn name(&self) -> &str {
        self.name
    }

    fn check(&self) -> Result<(), String> {
        if self.available {
            Ok(())
        } else {
            Err(format!("{} is not installed here", self.name))
        }
    }

    fn spans_nodes(&self) -> bool {
        self.spans
    }

    fn commands(&self, req: &LaunchRequest<'_>) -> Result<Vec<CommandSpec>, String> {
        Fork.commands(req)
    }
}

fn named(name: &'static str, available: bool, spans: bool) -> Arc<dyn LaunchMethod> {
    Arc::new(Named {
        name,
        available,
        spans,
    })
}

/// A launch method whose command lines are broken in a given way.
#[derive(Debug)]
enum Broken {
    EmptyArgv,
    NoCommands,
    MissingRank,
    Panics,
}

impl LaunchMethod for Broken {
    fn name(&self) -> &str {
        match self {
            Broken::EmptyArgv => "empty-argv",
            Broken::NoCommands => "no-commands",
            Broken::MissingRank => "missing-rank",
            Broken::Panics => "panics",
        }
    }

    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    fn commands(&self, req: &LaunchRequest<'_>) -> Result<Vec<CommandSpec>, String> {
        let mut cmds = Fork.commands(req)?;
        match self {
            Broken::EmptyArgv => cmds[0].argv.clear(),
            Broken::NoCommands => cmds.clear(),
            Broken::MissingRank => {
                cmds.pop();
            }
            Broken::Panics => panic!("deliberate panic in a launch method"),
        }
        Ok(cmds)
    }
}

// ----- 1. a retried task that ends DONE has no failure reason -----------

#[test]
fn a_task_done_after_a_retry_has_no_reason() {
    let (session, _p, tm, _dir) = setup("retry-reason", local(2));
    let t = tm
        .submit(
            TaskDescription::function("flaky")
                .retries(2)
                .try_args(&())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
    assert_eq!(t.reason(), None);
    // The earlier attempt's failure is kept with the attempts' history.
    let first = FailReason::Error("first attempt fails".into());
    assert_eq!(t.failed_attempts(), vec![first.clone()]);
    let records = session.task_records();
    let r = records.iter().find(|r| r.id == t.id()).unwrap();
    let h = r.history.as_deref().unwrap();
    assert_eq!(&h.failures[..], std::slice::from_ref(&first));
    let failed: Vec<_> = r
        .events()
        .into_iter()
        .filter(|e| e.event == "state.failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]
        .attrs
        .contains(&("reason".to_string(), first.to_string())));
    // A task that fails for good keeps its last reason, and the earlier
    // ones in order.
    let e = tm
        .submit(TaskDescription::executable(["/bin/sh", "-c", "exit 3"]).retries(1))
        .unwrap();
    assert_eq!(fin(&e), TaskState::Failed);
    assert_eq!(e.reason(), Some(FailReason::ExitCode(3)));
    assert_eq!(e.failed_attempts(), vec![FailReason::ExitCode(3)]);
    session.close().unwrap();
}

// ----- 2. a name is claimed once, however many submit it at once --------

#[test]
fn concurrent_submissions_of_one_name_admit_exactly_one() {
    let (session, _p, tm, _dir) = setup("dup-race", local(2));
    const THREADS: usize = 16;
    for round in 0..30 {
        let name = format!("same-{round}");
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let tm = tm.clone();
                let barrier = Arc::clone(&barrier);
                let name = name.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    // A program found on PATH: its look-up widens the window
                    // between a separate check and insert.
                    tm.submit(TaskDescription::executable(["true"]).name(name))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {ok} submissions claimed {name:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, PilotError::DuplicateName { name: n } if *n == name),
                    "{e}"
                );
            }
        }
    }
    tm.wait_all();
    session.close().unwrap();
}

// ----- 3. launch methods are looked up on the pilot a task goes to ------

#[test]
fn launch_methods_are_checked_on_every_pilot() {
    let dir = scratch("methods-pilots");
    let (session, _) = session_in(&dir);
    let plain = pilot(&session, local(1));
    let wrap = pilot(&session, local(1).launch_method(named("wrap", true, true)));
    // Order of the pilots in the task manager: the plain one first, then
    // the other way round.
    for order in [[&plain, &wrap], [&wrap, &plain]] {
        let tm = session.task_manager();
        for p in order {
            tm.add_pilot(p).unwrap();
        }
        let tasks: Vec<Task> = (0..4)
            .map(|_| {
                tm.submit(TaskDescription::executable(["/bin/true"]).launch_method("wrap"))
                    .unwrap()
            })
            .collect();
        for t in &tasks {
            assert_eq!(fin(t), TaskState::Done, "{:?}", t.reason());
            assert_eq!(t.pilot(), wrap.id());
        }
        // A method no pilot knows names them all.
        match tm
            .submit(TaskDescription::executable(["/bin/true"]).launch_method("srun"))
            .unwrap_err()
        {
            PilotError::UnknownLaunchMethod { known, .. } => {
                assert!(known.contains("wrap") && known.contains("fork"), "{known}")
            }
            other => panic!("{other}"),
        }
    }
    // Available on the second pilot only.
    let gone = pilot(&session, local(1).launch_method(named("gate", false, true)));
    let here = pilot(&session, local(1).launch_method(named("gate", true, true)));
    let tm = session.task_manager();
    tm.add_pilot(&gone).unwrap();
    tm.add_pilot(&here).unwrap();
    for _ in 0..3 {
        let t = tm
            .submit(TaskDescription::executable(["/bin/true"]).launch_method("gate"))
            .unwrap();
        assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
        assert_eq!(t.pilot(), here.id());
    }
    let only_gone = session.task_manager();
    only_gone.add_pilot(&gone).unwrap();
    assert!(matches!(
        only_gone.submit(TaskDescription::executable(["/bin/true"]).launch_method("gate")),
        Err(PilotError::LauncherUnavailable { .. })
    ));
    // Whether ranks may span nodes is the placed pilot's method's word.
    let two = PilotDescription::local().nodes(2, "1c,0g,1GiB".parse().unwrap());
    let narrow = pilot(
        &session,
        two.clone().launch_method(named("span", true, false)),
    );
    let wide = pilot(&session, two.launch_method(named("span", true, true)));
    let tm = session.task_manager();
    tm.add_pilot(&narrow).unwrap();
    tm.add_pilot(&wide).unwrap();
    let t = tm
        .submit(
            TaskDescription::executable(["/bin/true"])
                .ranks(2)
                .launch_method("span"),
        )
        .unwrap();
    assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
    assert_eq!(t.pilot(), wide.id());
    session.close().unwrap();
}

#[test]
fn mpirun_checks_consider_every_pilot() {
    if which_mpirun().is_none() {
        eprintln!("mpirun not installed: skipped");
        return;
    }
    let dir = scratch("mpirun-pilots");
    let (session, tm) = session_in(&dir);
    let missing = deeprc_pilot::Mpirun::new().with_program("/no/such/mpirun");
    let without = pilot(&session, local(2).launch_method(Arc::new(missing)));
    let present = deeprc_pilot::Mpirun::new().with_extra_args(["--allow-run-as-root"]);
    let with = pilot(&session, local(2).launch_method(Arc::new(present)));
    tm.add_pilot(&without).unwrap();
    tm.add_pilot(&with).unwrap();
    for _ in 0..2 {
        let t = tm
            .submit(
                TaskDescription::executable(["/bin/true"])
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
        assert_eq!(t.pilot(), with.id());
    }
    if cfg!(feature = "mpi") {
        let t = tm
            .submit(
                TaskDescription::function("allreduce")
                    .ranks(2)
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
        assert_eq!(t.pilot(), with.id());
    }
    let alone = session.task_manager();
    alone.add_pilot(&without).unwrap();
    assert!(matches!(
        alone.submit(TaskDescription::executable(["/bin/true"]).mpirun()),
        Err(PilotError::LauncherUnavailable { .. })
    ));
    session.close().unwrap();
}

// ----- 4. broken launch methods fail their task, nothing panics ---------

#[test]
fn broken_launch_methods_fail_their_task() {
    let desc = local(2)
        .launch_method(Arc::new(Broken::EmptyArgv))
        .launch_method(Arc::new(Broken::NoCommands))
        .launch_method(Arc::new(Broken::MissingRank))
        .launch_method(Arc::new(Broken::Panics));
    let (session, p, tm, _dir) = setup("broken-methods", desc);
    for (method, ranks) in [
        ("empty-argv", 1),
        ("no-commands", 1),
        ("missing-rank", 2),
        ("panics", 1),
    ] {
        let t = tm
            .submit(
                TaskDescription::executable(["/bin/true"])
                    .ranks(ranks)
                    .launch_method(method),
            )
            .unwrap();
        let state = fin_within(&t, 20);
        assert_eq!(state, Some(TaskState::Failed), "{method}: {:?}", t.state());
        match t.reason() {
            Some(FailReason::LaunchMethod { method: m, reason }) => {
                assert_eq!(m, method, "{reason}");
                assert!(t.reason().unwrap().to_string().contains(method));
            }
            other => panic!("{method}: {other:?}"),
        }
    }
    // The pilot goes on.
    let ok = tm
        .submit(TaskDescription::executable(["/bin/true"]).ranks(2))
        .unwrap();
    assert_eq!(fin(&ok), TaskState::Done, "{:?}", ok.reason());
    assert_eq!(p.state(), deeprc_pilot::PilotState::Active);
    session.close().unwrap();
}

// ----- 5. a slow worker start does not hold up the scheduler ------------

/// A worker executable that waits `ms` before becoming a worker.
fn slow_worker(dir: &Scratch, ms: u64) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("slow-worker.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nDEEPRC_PILOT_TEST_HOST_DELAY_MS={ms} exec '{}' \"$@\"\n",
            host().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn cancels_and_timeouts_are_handled_during_a_slow_worker_start() {
    let dir = scratch("slow-worker");
    // Far longer than the test may take: nothing below waits for it.
    let exe = slow_worker(&dir, 30_000);
    let mut desc = local(3).worker_executable(exe);
    desc.worker_start_timeout = Duration::from_secs(900);
    let (session, _p, tm, _dir) = common::setup_in(dir, desc);
    let started = Instant::now();
    let waits = tm
        .submit(TaskDescription::function("null").in_processes())
        .unwrap();
    until_executing(&waits);
    // Another task, on threads, canceled while the worker starts.
    let sleeper = tm
        .submit(
            TaskDescription::function("sleep")
                .try_args(&600_000u64)
                .unwrap(),
        )
        .unwrap();
    until_executing(&sleeper);
    sleeper.cancel();
    assert_eq!(fin_within(&sleeper, 10), Some(TaskState::Canceled));
    assert!(!waits.state().is_final(), "{:?}", waits.reason());
    // A third one times out meanwhile.
    let timed = tm
        .submit(
            TaskDescription::function("sleep")
                .timeout(Duration::from_millis(100))
                .try_args(&600_000u64)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin_within(&timed, 10), Some(TaskState::Failed));
    assert_eq!(
        timed.reason(),
        Some(FailReason::Timeout(Duration::from_millis(100)))
    );
    // The task waiting for its worker can be canceled too.
    assert!(!waits.state().is_final(), "{:?}", waits.reason());
    waits.cancel();
    assert_eq!(fin_within(&waits, 10), Some(TaskState::Canceled));
    // Closing does not wait for the worker either.
    session.close().unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
}

// ----- more: ids, timeouts, pilots ---------------------------------------

#[test]
fn a_rejected_batch_leaves_no_task_ids_to_depend_on() {
    let (session, _p, tm, _dir) = setup("id-gaps", local(2));
    assert!(matches!(
        tm.submit_many(vec![
            TaskDescription::function("null"),
            TaskDescription::function("null").depends_on("never-submitted"),
        ]),
        Err(PilotError::UnknownDependency { .. })
    ));
    let t = tm.submit(TaskDescription::function("null")).unwrap();
    assert_eq!(fin(&t), TaskState::Done);
    // Every id below the last one is a task that was submitted.
    for id in 1..t.id().0 {
        let d = tm.submit(TaskDescription::function("null").depends_on(TaskId(id)));
        match d {
            Ok(d) => assert_eq!(fin_within(&d, 20), Some(TaskState::Done), "{}", d.id()),
            Err(e) => panic!("depending on {} was refused: {e}", TaskId(id)),
        }
    }
    let never = tm.submit(TaskDescription::function("null").depends_on(TaskId(t.id().0 + 1)));
    assert!(matches!(never, Err(PilotError::UnknownDependency { .. })));
    session.close().unwrap();
}

#[test]
fn huge_timeouts_mean_no_timeout() {
    let mut desc = local(2);
    desc.worker_start_timeout = Duration::MAX;
    let (session, _p, tm, _dir) = setup("huge-timeouts", desc);
    for launch in [FunctionLaunch::Threads, FunctionLaunch::Processes] {
        let t = tm
            .submit(
                TaskDescription::function("null")
                    .function_launch(launch)
                    .timeout(Duration::MAX),
            )
            .unwrap();
        assert_eq!(
            t.wait_timeout(Duration::MAX),
            Some(TaskState::Done),
            "{launch:?}: {:?}",
            t.reason()
        );
    }
    assert!(tm.wait_all_timeout(Duration::MAX));
    session.close().unwrap();
}

#[test]
fn absurd_sizes_are_rejected_without_panicking() {
    let (session, _p, tm, _dir) = setup("absurd", local(2));
    for d in [
        TaskDescription::function("null").ranks(usize::MAX),
        TaskDescription::function("null")
            .ranks(2)
            .cores_per_rank(usize::MAX),
        TaskDescription::function("null")
            .ranks(2)
            .mem_per_rank(u64::MAX),
        TaskDescription::executable(["/bin/true"]).ranks(usize::MAX / 2 + 1),
    ] {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tm.submit(d)))
            .expect("submit panicked");
        assert!(
            matches!(
                e,
                Err(PilotError::InvalidDescription { .. }
                    | PilotError::InsufficientResources { .. })
            ),
            "{e:?}"
        );
    }
    session.close().unwrap();
}

#[test]
fn a_canceled_pilot_does_not_block_the_others() {
    let dir = scratch("canceled-pilot");
    let (session, tm) = session_in(&dir);
    let a = pilot(&session, local(1));
    let b = pilot(&session, local(1));
    tm.add_pilot(&a).unwrap();
    tm.add_pilot(&b).unwrap();
    a.cancel();
    let tasks: Vec<Task> = (0..4)
        .map(|_| tm.submit(TaskDescription::function("null")).unwrap())
        .collect();
    for t in &tasks {
        assert_eq!(fin(t), TaskState::Done, "{:?}", t.reason());
        assert_eq!(t.pilot(), b.id());
    }
    b.cancel();
    assert!(matches!(
        tm.submit(TaskDescription::function("null")),
        Err(PilotError::Closed { .. })
    ));
    session.close().unwrap();
}

#[test]
fn submissions_racing_a_pilot_cancel_all_end() {
    let dir = scratch("submit-vs-cancel");
    let (session, _) = session_in(&dir);
    for round in 0..20 {
        let p = pilot(&session, local(1));
        let tm = session.task_manager();
        tm.add_pilot(&p).unwrap();
        let barrier = Arc::new(Barrier::new(5));
        let submitters: Vec<_> = (0..4)
            .map(|_| {
                let tm = tm.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut tasks = Vec::new();
                    for _ in 0..50 {
                        if let Ok(t) = tm.submit(TaskDescription::function("null")) {
                            tasks.push(t);
                        }
                    }
                    tasks
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(Duration::from_micros(200 * round));
        p.cancel();
        for s in submitters {
            for t in s.join().unwrap() {
                assert!(
                    fin_within(&t, 20).is_some(),
                    "round {round}: {} never ended ({:?})",
                    t.id(),
                    t.state()
                );
            }
        }
        assert!(
            tm.wait_all_timeout(Duration::from_secs(20)),
            "round {round}"
        );
    }
    session.close().unwrap();
}

#[test]
fn pilots_of_another_session_are_refused() {
    let dir_a = scratch("foreign-a");
    let dir_b = scratch("foreign-b");
    let (a, tm_a) = session_in(&dir_a);
    let (b, tm_b) = session_in(&dir_b);
    let pb = pilot(&b, local(2));
    tm_b.add_pilot(&pb).unwrap();
    // Task ids, names and dependencies are per session: a task of session
    // A on B's pilot would share its id with one of B's and end it for B's
    // dependents (it did: B's dependent ran before its dependency).
    match tm_a.add_pilot(&pb) {
        Err(PilotError::ForeignPilot {
            pilot,
            pilot_session,
            session,
        }) => {
            assert_eq!(pilot, pb.id());
            assert_eq!(pilot_session, b.id());
            assert_eq!(session, a.id());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        tm_a.submit(TaskDescription::function("null")),
        Err(PilotError::NoPilot)
    ));
    // B's own tasks are unaffected.
    let long = tm_b
        .submit(
            TaskDescription::function("sleep")
                .try_args(&300u64)
                .unwrap(),
        )
        .unwrap();
    let after = tm_b
        .submit(TaskDescription::function("null").depends_on(&long))
        .unwrap();
    assert_eq!(fin(&after), TaskState::Done);
    assert!(long.timestamps().finished <= after.timestamps().executing);
    b.close().unwrap();
    a.close().unwrap();
}

// ----- 6. messages over the frame limit are clear errors ----------------

#[test]
fn messages_over_the_limit_are_clear_errors() {
    const LIMIT: u64 = 64 * 1024;
    let (session, _p, tm, _dir) = setup("frame-limit", local(2).max_message_bytes(LIMIT));
    // Arguments: refused at submission, naming size and limit.
    let args = vec![b'x'; 100 * 1024];
    match tm.submit(
        TaskDescription::function("echo")
            .in_processes()
            .args_bytes(args.clone()),
    ) {
        Err(PilotError::ArgumentsTooLarge { size, limit, .. }) => {
            assert_eq!(size, args.len() as u64);
            assert!(limit < LIMIT, "{limit}");
        }
        other => panic!("{other:?}"),
    }
    // The same on threads is no message: it runs.
    let t = tm
        .submit(TaskDescription::function("echo").args_bytes(args.clone()))
        .unwrap();
    assert_eq!(fin(&t), TaskState::Done, "{:?}", t.reason());
    assert_eq!(t.output().unwrap(), args);
    // Results: the task fails with the result's size, not a crash.
    let big = tm
        .submit(
            TaskDescription::function("big")
                .in_processes()
                .try_args(&(100 * 1024usize))
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&big), TaskState::Failed);
    match big.reason() {
        Some(FailReason::ResultTooLarge { size, limit }) => {
            assert!(size > LIMIT, "{size}");
            assert_eq!(limit, LIMIT);
        }
        other => panic!("{other:?}"),
    }
    // The worker lives on: a result under the limit comes back.
    let small = tm
        .submit(
            TaskDescription::function("big")
                .in_processes()
                .try_args(&(1024usize))
                .unwrap(),
        )
        .unwrap();
    assert_eq!(fin(&small), TaskState::Done, "{:?}", small.reason());
    assert_eq!(small.result::<Vec<u8>>().unwrap().len(), 1024);
    // Limits a pilot cannot have.
    for bad in [0, 1024, u64::from(u32::MAX) + 1] {
        assert!(matches!(
            session
                .pilot_manager()
                .submit(local(1).max_message_bytes(bad)),
            Err(PilotError::InvalidPilot { .. })
        ));
    }
    session.close().unwrap();
}

// ----- more: launch methods' checks, stopping pilots ----------------------

/// A launch method whose availability check panics.
#[derive(Debug)]
struct PanickyCheck;

impl LaunchMethod for PanickyCheck {
    fn name(&self) -> &str {
        "panicky"
    }

    fn check(&self) -> Result<(), String> {
        panic!("deliberate panic in a launch method's check")
    }

    fn commands(&self, req: &LaunchRequest<'_>) -> Result<Vec<CommandSpec>, String> {
        Fork.commands(req)
    }
}

#[test]
fn a_panicking_launch_method_check_is_an_error() {
    let (session, _p, tm, _dir) = setup(
        "panicky-check",
        local(1).launch_method(Arc::new(PanickyCheck)),
    );
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tm.submit(TaskDescription::executable(["/bin/true"]).launch_method("panicky"))
    }))
    .expect("submit panicked");
    match got {
        Err(PilotError::LauncherUnavailable { method, reason, .. }) => {
            assert_eq!(method, "panicky");
            assert!(reason.contains("deliberate panic"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    session.close().unwrap();
}

/// `local`, counting how often its nodes are given back.
#[derive(Debug, Default)]
struct Counted {
    released: std::sync::atomic::AtomicUsize,
}

impl deeprc_pilot::ResourceProvider for Counted {
    fn name(&self) -> &str {
        "counted"
    }

    fn acquire(
        &self,
        desc: &PilotDescription,
    ) -> deeprc_pilot::Result<Vec<deeprc_pilot::NodeSpec>> {
        deeprc_pilot::LocalResources.acquire(desc)
    }

    fn release(&self, _nodes: &[deeprc_pilot::NodeSpec]) {
        self.released
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_pilot_stopped_from_its_own_callback_is_released_once() {
    let dir = scratch("self-stop");
    let (session, tm) = session_in(&dir);
    let counted = Arc::new(Counted::default());
    session
        .pilot_manager()
        .register_provider(Arc::clone(&counted) as _);
    let p = pilot(&session, local(1).resource("counted"));
    tm.add_pilot(&p).unwrap();
    let me = p.clone();
    tm.register_callback(move |_t, state| {
        if state == TaskState::Done {
            me.cancel();
        }
    });
    let t = tm.submit(TaskDescription::function("null")).unwrap();
    assert_eq!(fin(&t), TaskState::Done);
    assert!(tm.wait_all_timeout(Duration::from_secs(20)));
    session.close().unwrap();
    assert_eq!(p.state(), deeprc_pilot::PilotState::Canceled);
    assert_eq!(
        counted.released.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let stops = session_events_of(&dir, &p);
    assert_eq!(stops, 1);
}

/// How many `pilot.stop` events of `p` the profile written at close has.
fn session_events_of(dir: &Scratch, p: &Pilot) -> usize {
    let text = std::fs::read_to_string(dir.join("profile").join("profile.jsonl")).unwrap();
    text.lines()
        .filter(|l| l.contains("\"pilot.stop\"") && l.contains(&format!("\"{}\"", p.id())))
        .count()
}

#[test]
fn closing_waits_for_a_concurrent_pilot_cancel() {
    for round in 0..5 {
        let dir = scratch(&format!("close-vs-cancel-{round}"));
        let session = Session::builder()
            .registry(common::functions::registry())
            .sandbox(dir.join("sandbox"))
            .build()
            .unwrap();
        let p = pilot(&session, local(1));
        let tm = session.task_manager();
        tm.add_pilot(&p).unwrap();
        let mut descs = vec![TaskDescription::function("sleep")
            .try_args(&600_000u64)
            .unwrap()];
        descs.extend((0..5000).map(|_| TaskDescription::function("null")));
        let n = descs.len();
        let tasks = tm.submit_many(descs).unwrap();
        until_executing(&tasks[0]);
        let canceler = {
            let p = p.clone();
            std::thread::spawn(move || p.cancel())
        };
        // Close while the cancel is under way (the agent is ending its
        // thousands of waiting tasks).
        while p.state() == deeprc_pilot::PilotState::Active {
            std::thread::yield_now();
        }
        let summary = session.close().unwrap();
        canceler.join().unwrap();
        // Closing returns once every task of the stopped pilot is final.
        assert_eq!(summary.tasks, n, "round {round}");
        assert!(tasks.iter().all(|t| t.state().is_final()), "round {round}");
    }
}

#[test]
fn a_pilot_that_cannot_start_gives_its_resources_back() {
    let dir = scratch("pilot-start-fails");
    let (session, _) = session_in(&dir);
    let counted = Arc::new(Counted::default());
    session
        .pilot_manager()
        .register_provider(Arc::clone(&counted) as _);
    // A sandbox that cannot be made.
    let err = session
        .pilot_manager()
        .submit(local(1).resource("counted").sandbox("/proc/deeprc-no-such"))
        .unwrap_err();
    assert!(matches!(err, PilotError::Io { .. }), "{err}");
    assert_eq!(
        counted.released.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    session.close().unwrap();
}

#[test]
fn a_panicking_new_callback_does_not_lose_tasks() {
    let (session, _p, tm, _dir) = setup("new-callback-panics", local(1));
    tm.register_callback(|_t, state| {
        if state == TaskState::New {
            panic!("deliberate panic in a callback");
        }
    });
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tm.submit(TaskDescription::function("null").name("first"))
    }))
    .expect("submit panicked");
    let t = got.unwrap();
    assert_eq!(fin(&t), TaskState::Done);
    assert!(tm.wait_all_timeout(Duration::from_secs(20)));
    let d = tm
        .submit(TaskDescription::function("null").depends_on("first"))
        .unwrap();
    assert_eq!(fin(&d), TaskState::Done);
    session.close().unwrap();
}

#[test]
fn pilots_submitted_while_closing_do_not_outlive_the_session() {
    for round in 0..20 {
        let dir = scratch(&format!("pilot-vs-close-{round}"));
        let session = Session::builder()
            .sandbox(dir.join("sandbox"))
            .build()
            .unwrap();
        let pm = session.pilot_manager();
        let submitter = std::thread::spawn(move || {
            let mut pilots = Vec::new();
            while let Ok(p) = pm.submit(local(1).worker_executable(host())) {
                pilots.push(p);
            }
            pilots
        });
        std::thread::sleep(Duration::from_millis(2 * round));
        session.close().unwrap();
        for p in submitter.join().unwrap() {
            assert_ne!(
                p.state(),
                deeprc_pilot::PilotState::Active,
                "round {round}: {} outlived its session",
                p.id()
            );
        }
    }
}
