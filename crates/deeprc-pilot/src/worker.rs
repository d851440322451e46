//! Worker mode: the host program re-executed to run function tasks in
//! their own processes.
//!
//! A pilot starts worker processes by running its worker executable
//! (by default the host program itself, `std::env::current_exe()`) with
//! `DEEPRC_PILOT_WORKER` set. The host must therefore build its
//! [`Registry`] and call [`run_if_worker`] first in `main`: in a normal run
//! it returns at once; in a worker it serves tasks and exits the process.
//!
//! ```no_run
//! use deeprc_pilot::Registry;
//!
//! fn registry() -> Registry {
//!     let mut r = Registry::new();
//!     r.register("null", |_ctx, _args| Ok::<_, String>(Vec::new()));
//!     r
//! }
//!
//! fn main() {
//!     let registry = registry();
//!     deeprc_pilot::worker::run_if_worker(&registry); // never returns in a worker
//!     // ... the host program: Session, pilots, tasks ...
//! }
//! ```
//!
//! Modes (the value of `DEEPRC_PILOT_WORKER`):
//! - `pool`: a long-lived worker of the pilot's pool. It connects to the
//!   agent's Unix socket (`DEEPRC_PILOT_SOCKET`), introduces itself with its
//!   core slot and the pool's token, pins itself to its CPU and runs the
//!   ranks it is sent one after the other. A multi-rank task's ranks each
//!   build a `tcp` communicator from the rendezvous the agent made for the
//!   task (a store directory and a fresh token).
//! - `mpi`: one rank of a function task under `mpirun` (cargo feature
//!   `mpi`): the communicator is `MPI_COMM_WORLD`; each rank writes its
//!   result into the task's sandbox.
//! - `srun`: one rank of a function task of a Slurm pilot, started by
//!   `srun` on its node: the communicator is `TcpComm::from_env()` (the
//!   rank from `SLURM_PROCID`, the store and token the agent set); each
//!   rank writes its result into the task's sandbox, which every node
//!   sees.

use crate::{
    launch::{
        pool::{ENV_CORE, ENV_CPUS, ENV_MAX_FRAME, ENV_MODE, ENV_SOCKET, ENV_TOKEN},
        threads::panic_message,
    },
    registry::TaskContext,
    sys,
    usage::{CallMeter, RankUsage},
    wire::{self, CommSpec, Dec, DoneMsg, Enc, RunMsg, Status},
    Registry,
};
use deeprc_comm::{
    tcp::{StoreSpec, TcpComm, TcpOptions},
    CommConfig, Communicator,
};
use deeprc_core::sync::lock;
use deeprc_core::{now_ns, TaskId};
use std::{
    io::BufReader,
    os::unix::net::UnixStream,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

/// `true` when this process was started as a worker.
pub fn is_worker_process() -> bool {
    std::env::var_os(ENV_MODE).is_some()
}

/// Runs the worker loop and exits the process if this process is a
/// worker; returns at once otherwise. Call it first in `main`, after
/// building the same [`Registry`] the session uses.
pub fn run_if_worker(registry: &Registry) {
    let Ok(mode) = std::env::var(ENV_MODE) else {
        return;
    };
    let code = match mode.as_str() {
        "pool" => pool_main(registry),
        "mpi" => mpi_main(registry),
        // The agent chose tcp for these ranks. TcpComm, not
        // deeprc_comm::from_env: from_env reaches GlooComm, whose gloo
        // symbols a program that also links libtorch resolves from
        // libtorch_cuda.so (torch exports its bundled gloo), which then
        // must load with all of CUDA (CI: "libcusparse.so.12: cannot open
        // shared object file" from the pipelines' worker processes).
        "srun" => launched_main(registry, &|| {
            TcpComm::from_env()
                .map(|c| Arc::new(c) as Arc<dyn Communicator>)
                .map_err(|e| format!("the task's communicator: {e}"))
        }),
        other => {
            eprintln!("deeprc-pilot worker: unknown mode {other:?} in {ENV_MODE}");
            2
        }
    };
    std::process::exit(code);
}

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Workers report panics with their location and keep the message for the
/// task's failure reason.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = panic_message(info.payload());
        let text = match info.location() {
            Some(l) => format!("{msg} (at {}:{})", l.file(), l.line()),
            None => msg,
        };
        eprintln!("deeprc-pilot worker: a task panicked: {text}");
        *lock(&LAST_PANIC) = Some(text);
    }));
}

fn pool_main(registry: &Registry) -> i32 {
    let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let setup = (|| -> Result<(String, usize, String, Vec<usize>), String> {
        let socket = var(ENV_SOCKET)?;
        let core = var(ENV_CORE)?
            .parse()
            .map_err(|_| format!("{ENV_CORE} is not a number"))?;
        let token = var(ENV_TOKEN)?;
        let cpus = std::env::var(ENV_CPUS)
            .ok()
            .map(|s| s.split(',').filter_map(|c| c.trim().parse().ok()).collect())
            .unwrap_or_default();
        Ok((socket, core, token, cpus))
    })();
    let (socket, core, token, cpus) = match setup {
        Ok(s) => s,
        Err(e) => {
            eprintln!("deeprc-pilot worker: {e}");
            return 2;
        }
    };
    let max_frame = max_frame_from_env();
    // Programs this worker's tasks start must not become workers.
    for k in [
        ENV_MODE,
        ENV_SOCKET,
        ENV_CORE,
        ENV_TOKEN,
        ENV_CPUS,
        ENV_MAX_FRAME,
    ] {
        std::env::remove_var(k);
    }
    install_panic_hook();
    let mut pinned = Vec::new();
    if !cpus.is_empty() && sys::pin_current_thread(&cpus).is_ok() {
        pinned = cpus;
    }
    let stream = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("deeprc-pilot worker: connecting to {socket}: {e}");
            return 3;
        }
    };
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("deeprc-pilot worker: {e}");
            return 3;
        }
    };
    let mut hello = Enc::new(wire::HELLO);
    hello
        .u32(core as u32)
        .u32(std::process::id())
        .str(&token)
        .u32(wire::PROTOCOL_VERSION);
    if let Err(e) = wire::write_frame(&mut writer, &mut hello) {
        eprintln!("deeprc-pilot worker: saying hello: {e}");
        return 3;
    }
    // An orphan must not run its task on (the client was killed).
    if let Err(e) = crate::orphan::exit_when_orphaned() {
        eprintln!("deeprc-pilot worker: watching the agent: {e}");
        return 3;
    }
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut buf = Vec::new();
    loop {
        match wire::read_frame(&mut reader, &mut buf, max_frame) {
            Ok(Some(wire::RUN)) => {
                let done = match RunMsg::decode(&mut Dec::new(&buf)) {
                    // A result the agent would refuse is reported as such.
                    Ok(msg) => run_rank(registry, &msg, &mut pinned).fit(max_frame),
                    Err(e) => {
                        eprintln!("deeprc-pilot worker: bad frame: {e}");
                        return 4;
                    }
                };
                let mut e = Enc::new(wire::DONE);
                done.encode(&mut e);
                if wire::write_frame(&mut writer, &mut e).is_err() {
                    return 0;
                }
            }
            Ok(Some(wire::EXIT)) | Ok(None) => return 0,
            Ok(Some(_)) => {}
            Err(e) => {
                eprintln!("deeprc-pilot worker: reading from the agent: {e}");
                return 4;
            }
        }
    }
}

/// Runs one rank of a function task in this process.
fn run_rank(registry: &Registry, msg: &RunMsg<'_>, pinned: &mut Vec<usize>) -> DoneMsg {
    if !msg.cpus.is_empty() && *pinned != msg.cpus && sys::pin_current_thread(&msg.cpus).is_ok() {
        pinned.clone_from(&msg.cpus);
    }
    let comm = match &msg.comm {
        CommSpec::None => None,
        CommSpec::Tcp {
            store,
            token,
            timeout_ms,
            connect_timeout_ms,
            max_frame_bytes,
        } => {
            let t0 = Instant::now();
            let config = CommConfig::default()
                .with_timeout(Duration::from_millis(*timeout_ms))
                .with_connect_timeout(Duration::from_millis(*connect_timeout_ms))
                .with_max_frame_bytes(*max_frame_bytes);
            let opts = TcpOptions::new(
                msg.rank as usize,
                msg.size as usize,
                StoreSpec::Dir(PathBuf::from(store)),
                token.as_str(),
            )
            .with_config(config);
            match TcpComm::connect(opts) {
                Ok(c) => Some((Arc::new(c) as Arc<dyn Communicator>, t0.elapsed())),
                Err(e) => {
                    let now = now_ns();
                    return done(
                        msg,
                        (now, now),
                        t0.elapsed(),
                        Status::Comm,
                        e.to_string().into_bytes(),
                        None,
                    );
                }
            }
        }
    };
    execute(registry, msg, comm)
}

fn done(
    msg: &RunMsg<'_>,
    (start, end): (u64, u64),
    comm: Duration,
    status: Status,
    payload: Vec<u8>,
    usage: Option<RankUsage>,
) -> DoneMsg {
    DoneMsg {
        task: msg.task,
        attempt: msg.attempt,
        rank: msg.rank,
        exec_start: start,
        exec_end: end,
        comm_ns: comm.as_nanos() as u64,
        status,
        payload,
        usage,
    }
}

/// Calls the function with a context built from `msg` and `comm`.
fn execute(
    registry: &Registry,
    msg: &RunMsg<'_>,
    comm: Option<(Arc<dyn Communicator>, Duration)>,
) -> DoneMsg {
    let comm_time = comm.as_ref().map(|c| c.1).unwrap_or_default();
    let exec_start = now_ns();
    let Some(entry) = registry.get(msg.func) else {
        let text = format!("no function named {:?} in the worker's registry", msg.func);
        return done(
            msg,
            (exec_start, now_ns()),
            comm_time,
            Status::Error,
            text.into_bytes(),
            None,
        );
    };
    let cell = OnceLock::new();
    if let Some((c, _)) = comm {
        let _ = cell.set(c);
    }
    let ctx = TaskContext {
        task: TaskId(msg.task),
        attempt: msg.attempt,
        rank: msg.rank as usize,
        size: msg.size as usize,
        node: msg.node as usize,
        cpus: msg.cpus.clone(),
        gpus: msg.gpus.clone(),
        sandbox: (!msg.sandbox.is_empty()).then(|| PathBuf::from(msg.sandbox)),
        comm: cell,
        comm_setup: comm_time,
        comm_config: CommConfig::default(),
        canceled: None,
    };
    // This process's CPU time and peak memory over the call (the worker
    // runs one rank at a time).
    let meter = CallMeter::start();
    let out = catch_unwind(AssertUnwindSafe(|| (entry.func)(&ctx, msg.args)));
    drop(ctx);
    let usage = meter.stop();
    let exec_end = now_ns();
    let (status, payload) = match out {
        Ok(Ok(v)) => (Status::Ok, v),
        Ok(Err(e)) => (Status::Error, e.into_bytes()),
        Err(p) => {
            let text = lock(&LAST_PANIC)
                .take()
                .unwrap_or_else(|| panic_message(&*p));
            (Status::Panic, text.into_bytes())
        }
    };
    done(
        msg,
        (exec_start, exec_end),
        comm_time,
        status,
        payload,
        Some(usage),
    )
}

fn mpi_result_path(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!("rank.{rank}.done"))
}

/// The agent's message limit, as it passed it (the default if it did not).
fn max_frame_from_env() -> u64 {
    std::env::var(ENV_MAX_FRAME)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(wire::DEFAULT_MAX_FRAME)
}

/// Reads the result an `mpi`-mode rank left in the task's sandbox.
pub(crate) fn read_mpi_result(dir: &Path, rank: usize, max_frame: u64) -> Option<DoneMsg> {
    let bytes = std::fs::read(mpi_result_path(dir, rank)).ok()?;
    let mut cur = std::io::Cursor::new(bytes);
    let mut buf = Vec::new();
    match wire::read_frame(&mut cur, &mut buf, max_frame) {
        Ok(Some(wire::DONE)) => DoneMsg::decode(&mut Dec::new(&buf)).ok(),
        _ => None,
    }
}

/// Writes the description of a function task for its `mpi`- or
/// `srun`-mode ranks.
pub(crate) fn write_mpi_task(
    path: &Path,
    task: u64,
    attempt: u32,
    size: usize,
    func: &str,
    args: &[u8],
    dir: &Path,
) -> std::io::Result<()> {
    let sandbox = dir.display().to_string();
    let msg = RunMsg {
        task,
        attempt,
        rank: 0,
        size: size as u32,
        node: 0,
        func,
        args,
        cpus: Vec::new(),
        gpus: Vec::new(),
        sandbox: &sandbox,
        comm: CommSpec::None,
    };
    let mut e = Enc::new(wire::RUN);
    msg.encode(&mut e);
    std::fs::write(path, e.finish())
}

#[cfg(feature = "mpi")]
fn mpi_main(registry: &Registry) -> i32 {
    launched_main(registry, &|| {
        deeprc_comm::mpi::MpiComm::world()
            .map(|c| Arc::new(c) as Arc<dyn Communicator>)
            .map_err(|e| format!("MPI: {e}"))
    })
}

/// One rank of a function task whose processes a launcher started
/// (`mpirun`, `srun`): reads the task from `DEEPRC_PILOT_TASK_FILE`,
/// builds the communicator with `comm`, runs the function and writes the
/// result into the task's sandbox.
fn launched_main(
    registry: &Registry,
    comm: &dyn Fn() -> Result<Arc<dyn Communicator>, String>,
) -> i32 {
    let Ok(file) = std::env::var("DEEPRC_PILOT_TASK_FILE") else {
        eprintln!("deeprc-pilot worker: DEEPRC_PILOT_TASK_FILE is not set");
        return 2;
    };
    let max_frame = max_frame_from_env();
    std::env::remove_var(ENV_MODE);
    std::env::remove_var(ENV_MAX_FRAME);
    install_panic_hook();
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("deeprc-pilot worker: reading {file}: {e}");
            return 2;
        }
    };
    let mut cur = std::io::Cursor::new(bytes);
    let mut buf = Vec::new();
    if !matches!(
        wire::read_frame(&mut cur, &mut buf, max_frame),
        Ok(Some(wire::RUN))
    ) {
        eprintln!("deeprc-pilot worker: {file} is not a task description");
        return 2;
    }
    let mut msg = match RunMsg::decode(&mut Dec::new(&buf)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("deeprc-pilot worker: {file}: {e}");
            return 2;
        }
    };
    let t0 = Instant::now();
    let comm = match comm() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deeprc-pilot worker: {e}");
            return 5;
        }
    };
    let setup = t0.elapsed();
    msg.rank = comm.rank() as u32;
    let done = execute(registry, &msg, Some((comm, setup))).fit(max_frame);
    let mut e = Enc::new(wire::DONE);
    done.encode(&mut e);
    let dir = PathBuf::from(msg.sandbox);
    match std::fs::write(mpi_result_path(&dir, msg.rank as usize), e.finish()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("deeprc-pilot worker: writing the result: {e}");
            6
        }
    }
}

#[cfg(not(feature = "mpi"))]
fn mpi_main(_registry: &Registry) -> i32 {
    eprintln!(
        "deeprc-pilot worker: this program was built without the `mpi` feature of deeprc-pilot"
    );
    2
}
