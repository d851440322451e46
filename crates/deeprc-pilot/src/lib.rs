//! # deeprc-pilot
//!
//! A pilot-job runtime with RADICAL-Pilot's model, as an embeddable Rust
//! library: a [`Session`] owns a [`PilotManager`], which turns a
//! [`PilotDescription`] into a [`Pilot`] (a placeholder of node, core, GPU
//! and memory slots with an agent: a scheduler and an executor), and
//! [`TaskManager`]s, which submit [`TaskDescription`]s to pilots.
//!
//! - Executable tasks (argv, environment, working directory, pre-exec
//!   commands; output captured in a per-task sandbox) are launched with a
//!   [`LaunchMethod`]: [`Fork`] or [`Mpirun`].
//! - Function tasks call a function registered by name in a [`Registry`],
//!   on in-process threads or in worker processes (the host binary
//!   re-executed in worker mode: [`worker::run_if_worker`]).
//! - Both have `ranks`, `cores_per_rank`, fractional `gpus_per_rank`,
//!   `mem_per_rank`, dependencies, priority, timeout, retries and tags.
//! - The System Bridge: each rank of a multi-rank function task receives a
//!   [`TaskContext`] with a communicator of exactly its ranks (`local` on
//!   threads, `tcp` in worker processes, MPI under `mpirun`), its cores,
//!   GPUs and sandbox; the communicator's creation is timed.
//! - States NEW → SCHEDULING → EXECUTING → DONE | FAILED | CANCELED, each
//!   time-stamped; callbacks; waiting; cancellation. Failures are isolated:
//!   a panic, an error, a non-zero exit, a signal, a crashed worker or a
//!   timeout fails that task alone, with a typed [`FailReason`].
//! - Profiles: per-task records exported as JSON Lines, CSV and a Chrome
//!   trace, and a [`Summary`] (throughput, overheads, utilisation); each
//!   task's CPU time and peak memory from the operating system
//!   ([`Task::resources`], [`ResourceUsage`]) and, for long tasks, sampled
//!   CPU utilisation and memory over time ([`ResourceSample`], counter
//!   tracks in the trace).
//!
//! ```
//! use deeprc_pilot::{PilotDescription, Registry, Session, TaskDescription, TaskState};
//!
//! let mut registry = Registry::new();
//! registry.register_typed("sum", |ctx, x: u64| {
//!     use deeprc_comm::{CommunicatorExt, ReduceOp};
//!     let comm = ctx.comm().map_err(|e| e.to_string())?;
//!     comm.all_reduce_scalar(x + ctx.rank() as u64, ReduceOp::Sum).map_err(|e| e.to_string())
//! });
//! // A real host calls deeprc_pilot::worker::run_if_worker(&registry) here.
//!
//! let session = Session::builder().registry(registry).build()?;
//! let pilot = session.pilot_manager().submit(PilotDescription::local().cores(4))?;
//! let tmgr = session.task_manager();
//! tmgr.add_pilot(&pilot)?;
//!
//! // Four thread ranks all-reducing over their communicator.
//! let t = tmgr.submit(TaskDescription::function("sum").ranks(4).try_args(&10u64)?)?;
//! let echo = tmgr.submit(TaskDescription::executable(["/bin/echo", "hello"]))?;
//! assert_eq!(t.wait(), TaskState::Done);
//! assert_eq!(t.result::<u64>()?, 4 * 10 + (0 + 1 + 2 + 3));
//! assert_eq!(echo.wait(), TaskState::Done);
//! assert_eq!(echo.stdout().unwrap(), "hello\n");
//! # let sandbox = session.sandbox().to_path_buf();
//! let summary = session.close()?;
//! assert_eq!(summary.done, 2);
//! # std::fs::remove_dir_all(sandbox).unwrap();
//! # Ok::<(), deeprc_pilot::PilotError>(())
//! ```
//!
//! # Feature flags
//! - `mpi`: function tasks under `mpirun`, each rank with an MPI
//!   communicator (forwards to `deeprc-comm/mpi`). Without it such tasks are
//!   rejected at submission with [`PilotError::NotCompiled`]; executables
//!   launched with [`Mpirun`] need no feature.
//! - `nvml`: GPU memory and utilisation of tasks with GPUs in the resource
//!   samples and [`ResourceUsage::gpu`], through NVML (`nvml-wrapper`,
//!   which loads `libnvidia-ml` at run time; without a driver nothing is
//!   sampled and the pilot says so once).
// One unsafe block: `wait4` in usage.rs (nix does not wrap it).
#![deny(unsafe_code)]

mod agent;
mod description;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod journal;
mod launch;
mod orphan;
mod profile;
mod ready;
mod reaper;
mod registry;
mod resource;
mod sampler;
pub mod scheduler;
mod session;
pub mod slurm;
mod state;
mod sys;
mod task;
#[allow(unsafe_code)]
mod usage;
mod wire;
pub mod worker;

pub use description::{
    ExecutableSpec, FunctionLaunch, FunctionSpec, PilotDescription, TaskDescription, TaskKind,
    TaskRef,
};
pub use error::{PilotError, Result};
pub use journal::{Journal, JournalEntry, JournalRead};
pub use launch::{CommEnv, CommandSpec, Fork, LaunchMethod, LaunchRequest, Mpirun};
pub use profile::{PlacementRecord, ProfileFiles, RetryHistory, Stats, Summary, TaskRecord};
pub use registry::{Registry, TaskContext};
pub use resource::{
    Allocation, GpuShare, LocalResources, NodeSpec, PilotLink, Placement, RankPlacement,
    ResourceProvider,
};
pub use sampler::ResourceSample;
pub use session::{Callback, Pilot, PilotManager, Session, SessionBuilder, TaskManager};
pub use state::{signal_name, FailReason, PilotState, TaskState};
pub use sys::current_rss_bytes;
pub use task::{Task, Timestamps};
pub use usage::{GpuUsage, ResourceUsage, RssScope};
