//! The functions of the integration tests, registered both in the test
//! process (tasks on threads) and in the test host binary (worker
//! processes).

use deeprc_comm::{CommunicatorExt, ReduceOp};
use deeprc_pilot::{Registry, TaskContext};
use std::time::{Duration, Instant};

fn comm_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// Spins until this thread has used `d` more CPU time; returns a value
/// that depends on the work.
pub(crate) fn spin_thread_cpu(d: Duration) -> u64 {
    let end = thread_cpu() + d;
    let mut x = 1u64;
    while thread_cpu() < end {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

/// Allocates `mib` MiB, writes every page and returns their sum.
pub(crate) fn touch_mib(mib: usize) -> u64 {
    let v = std::hint::black_box(vec![1u8; mib << 20]);
    v.iter().step_by(4096).map(|&b| u64::from(b)).sum()
}

/// Every test function.
pub(crate) fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("null", |_ctx: &TaskContext, _args: &[u8]| {
        Ok::<_, String>(Vec::new())
    });
    r.register("echo", |_ctx: &TaskContext, args: &[u8]| {
        Ok::<_, String>(args.to_vec())
    });
    r.register_typed("add", |_ctx: &TaskContext, (a, b): (i64, i64)| {
        Ok::<_, String>(a + b)
    });
    r.register("fail", |_ctx: &TaskContext, _args: &[u8]| {
        Err::<Vec<u8>, _>("the function said no")
    });
    r.register(
        "panic",
        |_ctx: &TaskContext, _args: &[u8]| -> Result<Vec<u8>, String> {
            panic!("deliberate panic in a test task")
        },
    );
    // Aborts the process: only ever run it in worker processes.
    r.register(
        "crash",
        |_ctx: &TaskContext, _args: &[u8]| -> Result<Vec<u8>, String> {
            eprintln!("about to abort");
            std::process::abort()
        },
    );
    // Sleeps `ms` milliseconds, returning early if canceled.
    r.register_typed("sleep", |ctx: &TaskContext, ms: u64| {
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            if ctx.is_canceled() {
                return Err("canceled".to_string());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(ms)
    });
    // Writes this process's id to `path`, then sleeps `ms` milliseconds
    // (returning early if canceled): a task to kill the worker of.
    r.register_typed(
        "pid_then_sleep",
        |ctx: &TaskContext, (path, ms): (String, u64)| {
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, std::process::id().to_string()).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
            let end = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < end {
                if ctx.is_canceled() {
                    return Err("canceled".to_string());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(ms)
        },
    );
    // Sum over ranks of (rank + 1), through the task's communicator.
    r.register_typed("allreduce", |ctx: &TaskContext, _: ()| {
        let comm = ctx.comm().map_err(comm_err)?;
        if comm.size() != ctx.size() || comm.rank() != ctx.rank() {
            return Err(format!(
                "communicator is rank {} of {}",
                comm.rank(),
                comm.size()
            ));
        }
        let mut v = vec![(ctx.rank() + 1) as f64; 1024];
        comm.all_reduce(&mut v, ReduceOp::Sum).map_err(comm_err)?;
        Ok((v[0], ctx.comm_setup_time().as_nanos() as u64))
    });
    // The all-reduce above, with the host the rank ran on and the
    // communicator's backend (tasks of Slurm pilots span hosts).
    r.register_typed("allreduce_where", |ctx: &TaskContext, _: ()| {
        let comm = ctx.comm().map_err(comm_err)?;
        let mut v = vec![(ctx.rank() + 1) as f64; 1 << 16];
        comm.all_reduce(&mut v, ReduceOp::Sum).map_err(comm_err)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Ok::<_, String>((
            ctx.rank(),
            v[0],
            host.trim().to_string(),
            comm.backend().to_string(),
        ))
    });
    // Fails on its first attempt, succeeds on the next.
    r.register_typed("flaky", |ctx: &TaskContext, _: ()| {
        if ctx.attempt() == 0 {
            Err("first attempt fails".to_string())
        } else {
            Ok(ctx.attempt())
        }
    });
    // Where the rank runs: pid, rank, node, the CPUs it was given, its
    // GPUs, and the CPUs the kernel lets this thread run on.
    r.register_typed("whereami", |ctx: &TaskContext, _: ()| {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_string();
        Ok::<_, String>((
            std::process::id(),
            ctx.rank(),
            ctx.node(),
            ctx.cpus().to_vec(),
            ctx.cuda_visible_devices(),
            allowed,
        ))
    });
    // Returns `n` bytes (a large result from small arguments).
    r.register_typed("big", |_ctx: &TaskContext, n: usize| {
        Ok::<_, String>(vec![7u8; n])
    });
    // Burns `ms` milliseconds of this thread's CPU time (measured by its
    // CPU clock, so a loaded machine makes it longer, never less work).
    r.register_typed("spin", |_ctx: &TaskContext, ms: u64| {
        Ok::<_, String>(spin_thread_cpu(Duration::from_millis(ms)))
    });
    // Allocates and touches `mib` MiB, and returns a checksum.
    r.register_typed("alloc", |_ctx: &TaskContext, mib: usize| {
        Ok::<_, String>(touch_mib(mib))
    });
    // Writes a file into the sandbox and returns its path.
    r.register("sandbox", |ctx: &TaskContext, _args: &[u8]| {
        let dir = ctx.sandbox().ok_or("no sandbox")?;
        let p = dir.join("out.txt");
        std::fs::write(&p, b"hi").map_err(|e| e.to_string())?;
        Ok::<_, String>(p.display().to_string().into_bytes())
    });
    r
}
