//! Functions registered by name, and the [`TaskContext`] they receive.

use crate::{GpuShare, PilotError, Result};
use deeprc_comm::{CommConfig, Communicator};
use deeprc_core::{Device, TaskId};
use serde::{de::DeserializeOwned, Serialize};
use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

/// The stored form of a function: raw argument bytes in, raw result bytes
/// or an error message out.
pub(crate) type RawFn =
    dyn Fn(&TaskContext, &[u8]) -> std::result::Result<Vec<u8>, String> + Send + Sync;

/// A registered function with its interned name.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) name: Arc<str>,
    pub(crate) func: Arc<RawFn>,
}

/// Functions the host program makes available to function tasks, by name.
///
/// The same registry must be built in the host's `main` before
/// [`worker::run_if_worker`](crate::worker::run_if_worker), so that worker
/// processes know the same names.
///
/// ```
/// use deeprc_pilot::Registry;
/// let mut reg = Registry::new();
/// reg.register("null", |_ctx, _args| Ok::<_, String>(Vec::new()));
/// reg.register_typed("add", |_ctx, (a, b): (i64, i64)| Ok::<_, String>(a + b));
/// assert!(reg.contains("add"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    fns: HashMap<String, Entry>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.names())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `f` under `name` (replacing an earlier one): it receives the
    /// task's context and its raw argument bytes and returns raw result
    /// bytes, or an error that fails the task.
    pub fn register<F, E>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(&TaskContext, &[u8]) -> std::result::Result<Vec<u8>, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let func: Arc<RawFn> = Arc::new(move |ctx, args| f(ctx, args).map_err(|e| e.to_string()));
        self.fns.insert(
            name.to_string(),
            Entry {
                name: Arc::from(name),
                func,
            },
        );
        self
    }

    /// Registers a typed function: its arguments are decoded from JSON
    /// ([`TaskDescription::try_args`](crate::TaskDescription::try_args)) and
    /// its result encoded as JSON ([`Task::result`](crate::Task::result)).
    pub fn register_typed<A, R, E, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        A: DeserializeOwned,
        R: Serialize,
        E: fmt::Display,
        F: Fn(&TaskContext, A) -> std::result::Result<R, E> + Send + Sync + 'static,
    {
        let fname = name.to_string();
        self.register(name, move |ctx, bytes| {
            let args: A = serde_json::from_slice(bytes)
                .map_err(|e| format!("decoding the arguments of {fname}: {e}"))?;
            let out = f(ctx, args).map_err(|e| e.to_string())?;
            serde_json::to_vec(&out).map_err(|e| format!("encoding the result of {fname}: {e}"))
        })
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.fns.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.fns.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.fns.get(name)
    }
}

/// What a function task's rank receives: who it is, its communicator, its
/// cores and GPUs, and its sandbox (the System Bridge).
pub struct TaskContext {
    pub(crate) task: TaskId,
    pub(crate) attempt: u32,
    pub(crate) rank: usize,
    pub(crate) size: usize,
    pub(crate) node: usize,
    pub(crate) cpus: Vec<usize>,
    pub(crate) gpus: Vec<GpuShare>,
    pub(crate) sandbox: Option<PathBuf>,
    pub(crate) comm: OnceLock<Arc<dyn Communicator>>,
    pub(crate) comm_setup: Duration,
    pub(crate) comm_config: CommConfig,
    pub(crate) canceled: Option<Arc<AtomicBool>>,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("task", &self.task)
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("node", &self.node)
            .field("cpus", &self.cpus)
            .field("gpus", &self.gpus)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// The task's id.
    pub fn task_id(&self) -> TaskId {
        self.task
    }

    /// Which attempt this is (0 first, then 1, 2 ... on retries).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// This rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks of the task.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The node (index in the pilot) this rank runs on.
    pub fn node(&self) -> usize {
        self.node
    }

    /// The CPUs this rank is pinned to (operating-system CPU numbers).
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The GPU shares of this rank (empty without GPUs).
    pub fn gpus(&self) -> &[GpuShare] {
        &self.gpus
    }

    /// The device to compute on: the first GPU of this rank, or the CPU.
    pub fn device(&self) -> Device {
        self.gpus
            .first()
            .map(|g| Device::Cuda(g.device))
            .unwrap_or(Device::Cpu)
    }

    /// This rank's GPUs as a `CUDA_VISIBLE_DEVICES` value (`"0,1"`; empty
    /// without GPUs).
    pub fn cuda_visible_devices(&self) -> String {
        crate::resource::cuda_visible(&self.gpus)
    }

    /// The task's sandbox directory, if it asked for one.
    pub fn sandbox(&self) -> Option<&Path> {
        self.sandbox.as_deref()
    }

    /// A communicator of exactly this task's ranks: `local` on threads,
    /// `tcp` in worker processes, MPI under `mpirun`. It was created before
    /// the function started (for one rank: on first use).
    pub fn comm(&self) -> Result<&Arc<dyn Communicator>> {
        if let Some(c) = self.comm.get() {
            return Ok(c);
        }
        let mut group = deeprc_comm::local::create(1, self.comm_config.clone())?;
        let c: Arc<dyn Communicator> = Arc::new(group.pop().ok_or_else(|| PilotError::Closed {
            what: "the single-rank communicator".to_string(),
        })?);
        Ok(self.comm.get_or_init(|| c))
    }

    /// How long creating the communicator took (zero for one rank).
    pub fn comm_setup_time(&self) -> Duration {
        self.comm_setup
    }

    /// `true` once the task was canceled or timed out. Functions on threads
    /// cannot be stopped from outside: long ones should check this and
    /// return (the task's cores stay busy until they do).
    pub fn is_canceled(&self) -> bool {
        self.canceled
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}
