//! The mpi backend under a real launcher: the conformance suite on 2 and 4
//! ranks (256 MiB through the large all-to-all on 4), on communicators
//! handed in by a host program, with tiny chunks (every collective in
//! rounds, every message in chunks), as a singleton without a launcher, and
//! the failure of a rank bringing the job down.
//!
//! The launcher is `mpirun` (OpenMPI, what rsmpi links by default on Debian)
//! or `DEEPRC_MPIRUN` (e.g. `mpiexec.mpich` for a build with
//! `MPICC=mpicc.mpich`). A missing launcher fails the tests.

#![cfg(feature = "mpi")]

mod common;

use bytes::Bytes;
use deeprc_comm::{
    conformance::{pattern, run_all, Sizes},
    mpi::MpiComm,
    CommError, Communicator, CommunicatorExt, ReduceOp,
};
use std::{
    io::Read,
    panic::{catch_unwind, AssertUnwindSafe},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const DEADLINE: Duration = Duration::from_secs(300);
const TOTAL_LARGE: usize = 256 << 20;

fn sizes(n: usize) -> Sizes {
    Sizes {
        large_bytes: if n == 4 { TOTAL_LARGE / n } else { 1 << 20 },
    }
}

// ---------------------------------------------------------------- launcher

struct Launcher {
    program: String,
    openmpi: bool,
}

fn launcher() -> Launcher {
    let program = std::env::var("DEEPRC_MPIRUN").unwrap_or_else(|_| "mpirun".to_string());
    let out = Command::new(&program)
        .arg("--version")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the MPI launcher `{program}`: {e}. Install OpenMPI \
                 (apt-get install openmpi-bin libopenmpi-dev) or set DEEPRC_MPIRUN to the \
                 launcher of the MPI that rsmpi was built against"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Launcher {
        openmpi: text.contains("Open MPI") || text.contains("OpenRTE"),
        program,
    }
}

/// Output and exit status of a finished (or killed) job.
struct Job {
    code: Option<i32>,
    stdout: String,
    elapsed: Duration,
}

/// Waits for `child` with a deadline; past it, asks it to stop (SIGTERM,
/// which mpirun forwards to every rank), then kills it.
fn wait_job(mut child: Child, deadline: Duration) -> Job {
    let start = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut code = None;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            code = status.code();
            break;
        }
        if start.elapsed() > deadline {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now();
            while child.try_wait().unwrap().is_none() && grace.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Job {
        code,
        stdout: reader.join().unwrap(),
        elapsed: start.elapsed(),
    }
}

/// Runs the ignored test `entry` of this binary on `n` ranks under the
/// launcher.
fn mpirun(n: usize, entry: &str, deadline: Duration) -> Job {
    let l = launcher();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(&l.program);
    cmd.arg("-np").arg(n.to_string());
    if l.openmpi {
        // More ranks than cores; no pinning on a shared machine.
        cmd.args(["--oversubscribe", "--bind-to", "none"]);
    }
    cmd.arg(&exe)
        .args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("DEEPRC_TEST_RANK_PROCESS", "1")
        .env("DEEPRC_TEST_N", n.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", l.program));
    wait_job(child, deadline)
}

/// The `RESULT` lines of a job, one per rank, sorted by rank.
fn results(stdout: &str) -> Vec<(usize, String)> {
    let mut v: Vec<(usize, String)> = stdout
        .lines()
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_string()))
        .map(|r| {
            let rank = r
                .split_whitespace()
                .skip_while(|w| *w != "rank")
                .nth(1)
                .and_then(|w| w.parse().ok())
                .unwrap_or(usize::MAX);
            (rank, r)
        })
        .collect();
    v.sort();
    v
}

/// Every rank exited 0 (mpirun's status is 0 only then) and printed
/// `RESULT ok ... rank r`.
fn assert_all_ok(n: usize, entry: &str, job: &Job) {
    assert_eq!(
        job.code,
        Some(0),
        "{entry} on {n} ranks: launcher status {:?} after {:?}\n{}",
        job.code,
        job.elapsed,
        job.stdout
    );
    let res = results(&job.stdout);
    assert_eq!(
        res.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>(),
        "{entry} on {n} ranks: one RESULT line per rank\n{}",
        job.stdout
    );
    for (r, line) in &res {
        assert!(
            line.starts_with("ok"),
            "{entry}: rank {r} of {n}: {line}\n{}",
            job.stdout
        );
    }
    eprintln!("{entry} on {n} ranks, {:?}: {:?}", job.elapsed, res);
}

// ------------------------------------------------------------- the tests

#[test]
fn mpi_conformance_2_and_4_ranks() {
    for n in [2, 4] {
        let job = mpirun(n, "mpi_conformance_rank", DEADLINE);
        assert_all_ok(n, "mpi_conformance_rank", &job);
    }
}

#[test]
fn mpi_from_communicator_of_a_host_program() {
    for n in [2, 4] {
        let job = mpirun(n, "mpi_host_rank", DEADLINE);
        assert_all_ok(n, "mpi_host_rank", &job);
    }
}

#[test]
fn mpi_below_thread_multiple() {
    // A host that initialised MPI with less than MPI_THREAD_MULTIPLE:
    // calls are serialised (Serialized) or refused off the main thread
    // (Funneled).
    for entry in ["mpi_serialized_rank", "mpi_funneled_rank"] {
        let job = mpirun(2, entry, DEADLINE);
        assert_all_ok(2, entry, &job);
    }
}

#[test]
fn mpi_tiny_chunks_split_every_message_and_collective() {
    let job = mpirun(3, "mpi_chunked_rank", DEADLINE);
    assert_all_ok(3, "mpi_chunked_rank", &job);
}

#[test]
fn mpi_singleton_without_launcher() {
    // A rank started without mpirun is a world of one.
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "mpi_conformance_rank",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("DEEPRC_TEST_RANK_PROCESS", "1")
        .env("DEEPRC_TEST_N", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let job = wait_job(child, DEADLINE);
    assert_all_ok(1, "singleton", &job);
}

#[test]
fn mpi_a_dying_rank_brings_the_job_down() {
    // Rank 1 crashes while rank 0 waits for it in a receive: the launcher
    // must end the whole job (MPI has no timeouts; this is its bound).
    let job = mpirun(2, "mpi_dying_rank", Duration::from_secs(120));
    assert!(
        job.code.is_some_and(|c| c != 0),
        "the job must fail, not hang: status {:?} after {:?}\n{}",
        job.code,
        job.elapsed,
        job.stdout
    );
    assert!(
        !job.stdout.contains("RESULT"),
        "rank 0 must not get past its receive\n{}",
        job.stdout
    );
    assert!(
        job.elapsed < Duration::from_secs(60),
        "took {:?}",
        job.elapsed
    );
}

#[test]
fn mpi_blocking_calls_time_out_when_a_rank_does_not_take_part() {
    // Rank 0 never sends what rank 1 waits for, and rank 1 never joins the
    // collectives rank 0 waits in: each gets CommError::Timeout naming the
    // operation within the short timeout, instead of hanging.
    let job = mpirun(2, "mpi_timeout_rank", Duration::from_secs(120));
    assert_all_ok(2, "mpi_timeout_rank", &job);
    assert!(
        job.elapsed < Duration::from_secs(60),
        "took {:?}",
        job.elapsed
    );
}

// ------------------------------------------- entry points of the ranks

/// Runs `body` in a rank; prints `RESULT ok <what> rank r` or `RESULT err
/// ...`. On an error or panic the whole job is aborted so that no peer
/// waits for this rank.
fn rank_main(body: impl FnOnce() -> Result<(String, Option<MpiComm>), CommError>) {
    if !common::is_rank_process() {
        return;
    }
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok((what, _))) => println!("RESULT ok {what}"),
        Ok(Err(e)) => {
            println!("RESULT err {e}");
            abort_job(7);
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            println!("RESULT err panic: {msg}");
            abort_job(8);
        }
    }
}

fn abort_job(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    match MpiComm::world() {
        Ok(w) => w.abort(code),
        Err(_) => std::process::exit(code),
    }
}

fn expected_n() -> usize {
    std::env::var("DEEPRC_TEST_N").unwrap().parse().unwrap()
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), CommError> {
    if cond {
        Ok(())
    } else {
        Err(CommError::InvalidArgument {
            op: "test",
            reason: what.into(),
        })
    }
}

/// Point-to-point cases beyond the suite: messages larger than the inline
/// limit and than the chunk, tags MPI cannot carry, interleaved, received
/// out of order across tags; sends to self; a ring of large sends posted
/// before any receive.
fn p2p_extras(c: &dyn Communicator, large: usize) -> Result<(), CommError> {
    let (r, n) = (c.rank(), c.size());
    let next = (r + 1) % n;
    let prev = (r + n - 1) % n;
    let tags = [3u32, u32::MAX, u32::MAX - 1, 1 << 31, 40_000];
    let lens = [0usize, 5, 100 << 10, large];
    for (i, &t) in tags.iter().enumerate() {
        for (j, &len) in lens.iter().enumerate() {
            c.send(next, t, pattern(100 + (i * 10 + j) as u64, r, next, len))?;
        }
    }
    // Receive the tags in reverse order: the others wait in MPI or in the
    // stash of escaped tags.
    for (i, &t) in tags.iter().enumerate().rev() {
        for (j, &len) in lens.iter().enumerate() {
            let got = c.recv(prev, t)?;
            check(
                got == pattern(100 + (i * 10 + j) as u64, prev, r, len),
                format!(
                    "tag {t}: message {j} of {len} bytes ({} arrived)",
                    got.len()
                ),
            )?;
        }
    }
    // To self.
    c.send(r, 9, Bytes::from_static(b"me"))?;
    c.send(r, u32::MAX, pattern(7, r, r, large))?;
    check(
        c.recv(r, u32::MAX)? == pattern(7, r, r, large),
        "large to self",
    )?;
    check(&c.recv(r, 9)?[..] == b"me", "small to self")?;
    // Every rank sends before anyone receives.
    let big = 8 << 20;
    c.send(next, 11, pattern(8, r, next, big))?;
    check(
        c.recv(prev, 11)? == pattern(8, prev, r, big),
        "ring of large sends",
    )?;
    check(
        matches!(c.recv(n, 0), Err(CommError::InvalidRank { .. })),
        "recv from rank size",
    )?;
    c.barrier()
}

#[test]
#[ignore = "entry point of mpirun ranks"]
fn mpi_conformance_rank() {
    rank_main(|| {
        let n = expected_n();
        let comm = MpiComm::world()?;
        check(comm.size() == n, format!("size {} != {n}", comm.size()))?;
        // A second call is another handle to the same world, not a new init.
        let again = MpiComm::world()?;
        check(
            again.rank() == comm.rank() && again.size() == n,
            "second world()",
        )?;
        check(comm.owns_mpi(), "world() initialised MPI")?;
        let passed = run_all(&comm, sizes(n))?;
        p2p_extras(&comm, 3 << 20)?;
        // Messages sent on one handle arrive on the other.
        let (r, next, prev) = (
            comm.rank(),
            (comm.rank() + 1) % n,
            (comm.rank() + n - 1) % n,
        );
        comm.send(next, 1, pattern(9, r, next, 64))?;
        check(
            again.recv(prev, 1)? == pattern(9, prev, r, 64),
            "handles share the world",
        )?;
        // An independent duplicate works too.
        let dup = comm.duplicate()?;
        check(
            dup.all_reduce_scalar(1u32, ReduceOp::Sum)? as usize == n,
            "duplicate",
        )?;
        Ok((
            format!(
                "{} rank {} threading {:?}",
                passed.len(),
                comm.rank(),
                comm.threading()
            ),
            Some(comm),
        ))
    });
}

#[test]
#[ignore = "entry point of mpirun ranks"]
fn mpi_host_rank() {
    rank_main(|| {
        use mpi::traits::Communicator as _;
        let n = expected_n();
        // The host program initialises MPI and keeps the universe.
        let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| CommError::InvalidArgument {
                op: "test",
                reason: "MPI was initialised already".into(),
            })?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let out = {
            // Halves split by rsmpi itself, handed in.
            let half = world
                .split_by_color(mpi::topology::Color::with_value(world.rank() % 2))
                .expect("a color was given");
            let comm = MpiComm::from_communicator(half)?;
            check(!comm.owns_mpi(), "the host owns MPI")?;
            check(comm.size() == (n + 1 - rank % 2) / 2, "half size")?;
            let passed_half = run_all(&comm, Sizes::default())?;
            // The whole world, handed in, and world() attaching to the host's MPI.
            let whole = MpiComm::from_communicator(mpi::topology::SimpleCommunicator::world())?;
            check(whole.size() == n && whole.rank() == rank, "whole world")?;
            let passed_whole = run_all(&whole, Sizes::default())?;
            let attached = MpiComm::world()?;
            check(
                !attached.owns_mpi() && attached.size() == n,
                "world() attaches",
            )?;
            attached.barrier()?;
            format!("{} {} rank {rank}", passed_half.len(), passed_whole.len())
        };
        // The communicators are gone; the host finalises MPI.
        drop(universe);
        Ok((out, None))
    });
}

/// Initialises MPI as a host program would, with `level`.
fn host_init(level: mpi::Threading) -> Result<mpi::environment::Universe, CommError> {
    let (universe, got) =
        mpi::initialize_with_threading(level).ok_or_else(|| CommError::InvalidArgument {
            op: "test",
            reason: "MPI was initialised already".into(),
        })?;
    check(got == level, format!("asked for {level:?}, got {got:?}"))?;
    Ok(universe)
}

#[test]
#[ignore = "entry point of mpirun ranks"]
fn mpi_serialized_rank() {
    rank_main(|| {
        let universe = host_init(mpi::Threading::Serialized)?;
        let out = {
            let comm = std::sync::Arc::new(MpiComm::from_communicator(universe.world())?);
            check(comm.threading() == mpi::Threading::Serialized, "level")?;
            let (r, n) = (comm.rank(), comm.size());
            let (next, prev) = ((r + 1) % n, (r + n - 1) % n);
            // A thread waits in a receive (polling, without holding the
            // lock) while this one sends and runs collectives.
            let c2 = std::sync::Arc::clone(&comm);
            let waiter = std::thread::spawn(move || c2.recv(prev, 50));
            std::thread::sleep(Duration::from_millis(200));
            comm.barrier()?;
            comm.send(next, 50, pattern(50, r, next, 200_000))?;
            let got = waiter.join().expect("receiver thread")?;
            check(
                got == pattern(50, prev, r, 200_000),
                "received in another thread",
            )?;
            let passed = run_all(&*comm, Sizes::default())?;
            p2p_extras(&*comm, 1 << 20)?;
            format!("{} rank {r}", passed.len())
        };
        drop(universe);
        Ok((out, None))
    });
}

#[test]
#[ignore = "entry point of mpirun ranks"]
fn mpi_funneled_rank() {
    rank_main(|| {
        let universe = host_init(mpi::Threading::Funneled)?;
        let out = {
            let comm = std::sync::Arc::new(MpiComm::from_communicator(universe.world())?);
            let passed = run_all(&*comm, Sizes::default())?;
            // Another thread may not call MPI at this level: refused, and
            // nothing reached MPI (no collective is left half done).
            let c2 = std::sync::Arc::clone(&comm);
            let other = std::thread::spawn(move || c2.barrier())
                .join()
                .expect("thread");
            check(
                matches!(other, Err(CommError::InvalidArgument { .. })),
                format!("barrier from another thread: {other:?}"),
            )?;
            comm.barrier()?;
            format!("{} rank {}", passed.len(), comm.rank())
        };
        drop(universe);
        Ok((out, None))
    });
}

#[test]
#[ignore = "entry point of mpirun ranks"]
fn mpi_chunked_rank() {
    rank_main(|| {
        let n = expected_n();
        // 999 bytes a call: 1 KiB messages go in two chunks, every large
        // collective in hundreds of rounds.
        let comm = MpiComm::world()?.with_chunk_bytes(999)?;
        check(comm.chunk_bytes() == 999, "chunk")?;
        check(
            matches!(
                MpiComm::world()?.with_chunk_bytes(0),
                Err(CommError::InvalidArgument { .. })
            ),
            "chunk 0 refused",
        )?;
        let passed = run_all(
            &comm,
            Sizes {
                large_bytes: 200 << 10,
            },
        )?;
        p2p_extras(&comm, 10_000)?;
        // A long all-reduce split in many calls.
        let mut v: Vec<u64> = (0..100_000u64).map(|i| i + comm.rank() as u64).collect();
        comm.all_reduce(&mut v, ReduceOp::Sum)?;
        let nn = n as u64;
        check(
            v.iter()
                .enumerate()
                .all(|(i, &x)| x == nn * i as u64 + nn * (nn - 1) / 2),
            "chunked all_reduce",
        )?;
        // Ranks that disagree on the length get a typed error, not a crash.
        let mut odd = vec![0u32; 4 + comm.rank() % 2];
        let e = comm.all_reduce(&mut odd, ReduceOp::Sum);
        check(
            matches!(e, Err(CommError::SizeMismatch { .. })),
            format!("length mismatch: {e:?}"),
        )?;
        Ok((format!("{} rank {}", passed.len(), comm.rank()), Some(comm)))
    });
}

#[test]
#[ignore = "entry point of mpirun ranks"]
fn mpi_dying_rank() {
    if !common::is_rank_process() {
        return;
    }
    let comm = MpiComm::world().unwrap();
    comm.barrier().unwrap();
    if comm.rank() == 1 {
        // A crash: no MPI_Finalize, no MPI_Abort.
        std::process::abort();
    }
    let got = comm.recv(1, 0);
    println!("RESULT unexpected {got:?} rank {}", comm.rank());
}

/// The timeout of the timeout test, and how much later than it the error
/// may come on a loaded machine.
const SHORT: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_secs(5);

/// `r` must be a `Timeout` of `op` that came after `SHORT` and well within
/// `SHORT + SLACK` of `start`.
fn timed_out<T: std::fmt::Debug>(
    op: &str,
    peer: usize,
    start: Instant,
    r: Result<T, CommError>,
) -> Result<String, CommError> {
    let took = start.elapsed();
    match r {
        Err(CommError::Timeout {
            op: o,
            peer: p,
            after,
        }) if o == op && p == peer => {
            check(after >= SHORT, format!("{op}: waited only {after:?}"))?;
            check(
                took < SHORT + SLACK,
                format!("{op}: returned after {took:?}"),
            )?;
            Ok(format!("{op}:{}ms", took.as_millis()))
        }
        other => Err(CommError::InvalidArgument {
            op: "test",
            reason: format!("{op}: expected a timeout naming it, got {other:?}"),
        }),
    }
}

#[test]
#[ignore = "entry point of mpirun ranks"]
fn mpi_timeout_rank() {
    use deeprc_comm::mpi::UNKNOWN_PEER;
    rank_main(|| {
        check(expected_n() == 2, "runs on 2 ranks")?;
        let world = MpiComm::world()?.with_timeout(Duration::from_secs(60));
        // One communicator per case: a collective that timed out spoils
        // its communicator for collectives.
        let c = (0..5)
            .map(|_| world.duplicate().map(|d| d.with_timeout(SHORT)))
            .collect::<Result<Vec<_>, _>>()?;
        check(c[0].timeout() == SHORT, "the timeout is set")?;
        let me = world.rank();
        let mut seen = Vec::new();
        if me == 1 {
            // Rank 0 never sends on tag 7.
            let t = Instant::now();
            seen.push(timed_out("recv", 0, t, c[0].recv(0, 7))?);
            // Nor on a tag MPI cannot carry (the escaped path).
            let t = Instant::now();
            seen.push(timed_out("recv", 0, t, c[0].recv(0, u32::MAX))?);
        } else {
            // Rank 1 never joins these.
            let t = Instant::now();
            seen.push(timed_out("barrier", UNKNOWN_PEER, t, c[1].barrier())?);
            let mut v = vec![1.0f64; 1 << 16];
            let t = Instant::now();
            let r = c[2].all_reduce(&mut v, ReduceOp::Sum);
            seen.push(timed_out("all_reduce", UNKNOWN_PEER, t, r)?);
            check(
                v.iter().all(|&x| x == 1.0),
                "the caller's buffer is untouched",
            )?;
            let parts = vec![Bytes::from(vec![1u8; 1000]), Bytes::from(vec![2u8; 1000])];
            let t = Instant::now();
            let r = c[3].all_to_all_v(parts);
            seen.push(timed_out("all_to_all_v", UNKNOWN_PEER, t, r)?);
            let t = Instant::now();
            let r = c[4].broadcast(1, Bytes::new());
            seen.push(timed_out("broadcast", UNKNOWN_PEER, t, r)?);
            // A spoiled communicator refuses collectives at once.
            let t = Instant::now();
            let again = c[1].all_gather(Bytes::from_static(b"x"));
            check(
                matches!(&again, Err(CommError::PeerLost { reason, .. }) if reason.contains("barrier timed out")),
                format!("a later collective: {again:?}"),
            )?;
            check(t.elapsed() < SHORT, "refused without waiting")?;
        }
        // Both ranks are here: point-to-point still works on the spoiled
        // communicators, and on the one whose receives timed out.
        world.barrier()?;
        for comm in &c[..2] {
            if me == 0 {
                comm.send(1, 3, Bytes::from_static(b"still"))?;
            } else {
                let got = comm.recv(0, 3)?;
                check(&got[..] == b"still", "a message after the timeouts")?;
            }
        }
        world.barrier()?;
        Ok((format!("{} rank {me}", seen.join(" ")), None))
    });
}
