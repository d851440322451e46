//! What users ask for: [`PilotDescription`] and [`TaskDescription`].

use crate::{launch::LaunchMethod, PilotError, Result, Task};
use deeprc_comm::CommConfig;
use deeprc_core::{Resources, TaskId};
use serde::Serialize;
use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

/// What a pilot should hold.
///
/// ```
/// use deeprc_pilot::PilotDescription;
/// // This machine, all of it.
/// let whole = PilotDescription::local();
/// // This machine described as 2 nodes of 1 core and 1 GPU each, to
/// // exercise placement.
/// let two = PilotDescription::local().nodes(2, "1c,1g,1GiB".parse().unwrap());
/// assert_eq!(two.nodes.unwrap().0, 2);
/// # let _ = whole;
/// ```
#[derive(Clone)]
pub struct PilotDescription {
    /// The resource provider: `local` (this machine); others register
    /// their own [`ResourceProvider`](crate::ResourceProvider).
    pub resource: String,
    /// Total cores on a single node (default: the CPUs this process may
    /// use).
    pub cores: Option<usize>,
    /// Total whole GPUs on a single node (default: the visible GPUs; none
    /// are needed, the scheduler works on slots).
    pub gpus: Option<usize>,
    /// Total memory on a single node (default: the machine's memory).
    pub memory_bytes: Option<u64>,
    /// A node layout: this many nodes of these resources each; overrides
    /// `cores`, `gpus` and `memory_bytes`.
    pub nodes: Option<(usize, Resources)>,
    /// The executable that worker processes run (default: this program,
    /// `std::env::current_exe()`); it must call
    /// [`worker::run_if_worker`](crate::worker::run_if_worker) first in
    /// `main`.
    pub worker_executable: Option<PathBuf>,
    /// How long a worker process may take to start and connect (default
    /// 20 s; one too long to represent means no limit). Workers start off
    /// the scheduler: other tasks, cancellations and timeouts are handled
    /// meanwhile.
    pub worker_start_timeout: Duration,
    /// The largest message between the agent and a worker process (or an
    /// `mpirun` rank), in bytes: it bounds a function task's arguments and
    /// each rank's result when they run in processes (default 1 GiB, from
    /// 4 KiB to 4 GiB - 1). Larger arguments are refused at submission
    /// ([`PilotError::ArgumentsTooLarge`]); a larger result fails its task
    /// ([`FailReason::ResultTooLarge`](crate::FailReason::ResultTooLarge)).
    /// Tasks on threads are not bounded.
    pub max_message_bytes: u64,
    /// Where task sandboxes go: `<sandbox>/<session id>/<pilot id>/<task
    /// id>` (default: under the session's sandbox). A local or in-memory
    /// file system makes executables faster to start: each gets a
    /// directory and two output files.
    pub sandbox: Option<PathBuf>,
    /// Pin ranks to their cores (CPU affinity). Default `true`.
    pub pin_cpus: bool,
    /// Timeouts of the communicators made for multi-rank tasks.
    pub comm_config: CommConfig,
    /// Launch methods for executables in addition to `fork` and `mpirun`
    /// (or replacing them, by name).
    pub launch_methods: Vec<Arc<dyn LaunchMethod>>,
    /// Where a Slurm pilot (resource `slurm`) runs and how it launches:
    /// set by [`PilotDescription::slurm`] and
    /// [`PilotDescription::slurm_allocation`] (see [`crate::slurm`]).
    pub slurm: Option<crate::slurm::SlurmPilot>,
    /// How often to sample the CPU utilisation and memory of running tasks
    /// (default every second; `None` turns the sampler off). A task is
    /// sampled from one interval after its start, so tasks shorter than
    /// the interval cost only a map insertion and removal, and no file is
    /// written until a task runs that long. Intervals under 10 ms are
    /// raised to 10 ms. The per-task totals (CPU time, peak memory) are
    /// measured whether or not sampling is on.
    pub resource_sampling: Option<Duration>,
}

impl fmt::Debug for PilotDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PilotDescription")
            .field("resource", &self.resource)
            .field("cores", &self.cores)
            .field("gpus", &self.gpus)
            .field("memory_bytes", &self.memory_bytes)
            .field("nodes", &self.nodes)
            .field("worker_executable", &self.worker_executable)
            .field("worker_start_timeout", &self.worker_start_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("sandbox", &self.sandbox)
            .field("pin_cpus", &self.pin_cpus)
            .field("slurm", &self.slurm)
            .field("resource_sampling", &self.resource_sampling)
            .field(
                "launch_methods",
                &self
                    .launch_methods
                    .iter()
                    .map(|m| m.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for PilotDescription {
    fn default() -> Self {
        Self::local()
    }
}

impl PilotDescription {
    /// This machine (resource `local`), with detected cores, GPUs and
    /// memory.
    pub fn local() -> Self {
        Self {
            resource: "local".to_string(),
            cores: None,
            gpus: None,
            memory_bytes: None,
            nodes: None,
            worker_executable: None,
            worker_start_timeout: Duration::from_secs(20),
            max_message_bytes: crate::wire::DEFAULT_MAX_FRAME,
            sandbox: None,
            pin_cpus: true,
            comm_config: CommConfig::default(),
            launch_methods: Vec::new(),
            slurm: None,
            resource_sampling: Some(Duration::from_secs(1)),
        }
    }

    /// Sets the resource provider's name.
    pub fn resource(mut self, name: impl Into<String>) -> Self {
        self.resource = name.into();
        self
    }

    /// Sets the number of cores (one node).
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = Some(n);
        self
    }

    /// Sets the number of whole GPUs (one node).
    pub fn gpus(mut self, n: usize) -> Self {
        self.gpus = Some(n);
        self
    }

    /// Sets the memory (one node).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// Describes the pilot as `count` nodes of `per_node` each (GPUs per
    /// node must be whole).
    pub fn nodes(mut self, count: usize, per_node: Resources) -> Self {
        self.nodes = Some((count, per_node));
        self
    }

    /// Sets the worker executable.
    pub fn worker_executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_executable = Some(path.into());
        self
    }

    /// Sets how long a worker process may take to start and connect.
    pub fn worker_start_timeout(mut self, timeout: Duration) -> Self {
        self.worker_start_timeout = timeout;
        self
    }

    /// Sets the largest message between the agent and its worker processes
    /// (see [`max_message_bytes`](Self::max_message_bytes)).
    pub fn max_message_bytes(mut self, bytes: u64) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Sets where task sandboxes go.
    pub fn sandbox(mut self, dir: impl Into<PathBuf>) -> Self {
        self.sandbox = Some(dir.into());
        self
    }

    /// Turns CPU pinning on or off.
    pub fn pin_cpus(mut self, on: bool) -> Self {
        self.pin_cpus = on;
        self
    }

    /// Sets the communicator configuration of multi-rank tasks.
    pub fn comm_config(mut self, config: CommConfig) -> Self {
        self.comm_config = config;
        self
    }

    /// Samples running tasks every `interval` (see
    /// [`resource_sampling`](Self::resource_sampling)); `Duration::ZERO`
    /// turns sampling off.
    pub fn resource_sampling(mut self, interval: Duration) -> Self {
        self.resource_sampling = (!interval.is_zero()).then_some(interval);
        self
    }

    /// Adds a launch method for executables (replaces one of the same name).
    pub fn launch_method(mut self, method: Arc<dyn LaunchMethod>) -> Self {
        self.launch_methods.push(method);
        self
    }
}

/// How the ranks of a function task run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum FunctionLaunch {
    /// In-process threads, one per rank, pinned to the rank's cores; a
    /// multi-rank task gets a `local` (thread) communicator.
    #[default]
    Threads,
    /// Long-lived worker processes (the host binary in worker mode), one
    /// per core; a multi-rank task gets a `tcp` communicator.
    Processes,
    /// The host binary in worker mode under `mpirun`, one process per rank,
    /// with an MPI communicator (cargo feature `mpi`).
    Mpirun,
}

impl FunctionLaunch {
    pub(crate) fn label(self) -> &'static str {
        match self {
            FunctionLaunch::Threads => "function.threads",
            FunctionLaunch::Processes => "function.processes",
            FunctionLaunch::Mpirun => "function.mpirun",
        }
    }
}

/// An executable task: a program with its arguments, environment, working
/// directory and pre-exec commands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutableSpec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Environment variables added to the inherited ones.
    pub env: Vec<(String, String)>,
    /// The working directory (default: the task's sandbox).
    pub cwd: Option<PathBuf>,
    /// Shell commands run (with `/bin/sh`) before the program, in the same
    /// shell; if one fails the task fails.
    pub pre_exec: Vec<String>,
    /// The launch method's name: `fork` (default) or `mpirun`.
    pub launch_method: String,
}

/// A function task: a function registered by name, with its arguments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionSpec {
    /// The registered name.
    pub name: String,
    /// The encoded arguments (raw bytes, or JSON from
    /// [`TaskDescription::try_args`]).
    pub args: Vec<u8>,
    /// Threads, worker processes or `mpirun`.
    pub launch: FunctionLaunch,
    /// Give the task a sandbox directory (executables always get one).
    pub sandbox: bool,
}

/// The two kinds of task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TaskKind {
    /// A program.
    Executable(ExecutableSpec),
    /// A registered function.
    Function(FunctionSpec),
}

/// A reference to another task: by id or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum TaskRef {
    /// A task id returned by an earlier submission.
    Id(TaskId),
    /// The name of a task submitted earlier or in the same batch.
    Name(String),
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskRef::Id(id) => write!(f, "{id}"),
            TaskRef::Name(n) => write!(f, "{n:?}"),
        }
    }
}

impl From<TaskId> for TaskRef {
    fn from(id: TaskId) -> Self {
        TaskRef::Id(id)
    }
}

impl From<&Task> for TaskRef {
    fn from(t: &Task) -> Self {
        TaskRef::Id(t.id())
    }
}

impl From<&str> for TaskRef {
    fn from(n: &str) -> Self {
        TaskRef::Name(n.to_string())
    }
}

impl From<String> for TaskRef {
    fn from(n: String) -> Self {
        TaskRef::Name(n)
    }
}

/// What a task is and what it needs.
///
/// ```
/// use deeprc_pilot::TaskDescription;
/// use std::time::Duration;
/// let sim = TaskDescription::executable(["/bin/echo", "hello"])
///     .name("sim")
///     .env("OMP_NUM_THREADS", "1")
///     .timeout(Duration::from_secs(60));
/// let train = TaskDescription::function("train")
///     .ranks(4)
///     .gpus_per_rank(0.25)
///     .in_processes()
///     .depends_on("sim")
///     .priority(10)
///     .retries(1);
/// # let _ = (sim, train);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskDescription {
    /// An optional unique name, usable in other tasks' dependencies.
    pub name: Option<String>,
    /// Executable or function.
    pub kind: TaskKind,
    /// Number of ranks (processes or threads) (default 1).
    pub ranks: usize,
    /// Cores per rank (default 1).
    pub cores_per_rank: usize,
    /// GPUs per rank: a fraction below 1 shares a GPU, or a whole number.
    pub gpus_per_rank: f64,
    /// Memory per rank in bytes (default 0: not accounted).
    pub mem_per_rank: u64,
    /// Tasks that must end DONE before this one starts.
    pub dependencies: Vec<TaskRef>,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Stop the task and fail it after this long in EXECUTING.
    pub timeout: Option<Duration>,
    /// How many times a failed task is re-run (default 0).
    pub retries: u32,
    /// Free-form labels, kept in the profile.
    pub tags: Vec<String>,
}

impl TaskDescription {
    fn with_kind(kind: TaskKind) -> Self {
        Self {
            name: None,
            kind,
            ranks: 1,
            cores_per_rank: 1,
            gpus_per_rank: 0.0,
            mem_per_rank: 0,
            dependencies: Vec::new(),
            priority: 0,
            timeout: None,
            retries: 0,
            tags: Vec::new(),
        }
    }

    /// An executable task running `argv` with the `fork` launch method.
    pub fn executable<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_kind(TaskKind::Executable(ExecutableSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            pre_exec: Vec::new(),
            launch_method: "fork".to_string(),
        }))
    }

    /// A function task calling the function registered as `name`, on
    /// threads, with empty arguments.
    pub fn function(name: impl Into<String>) -> Self {
        Self::with_kind(TaskKind::Function(FunctionSpec {
            name: name.into(),
            args: Vec::new(),
            launch: FunctionLaunch::Threads,
            sandbox: false,
        }))
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the number of ranks.
    pub fn ranks(mut self, n: usize) -> Self {
        self.ranks = n;
        self
    }

    /// Sets the cores per rank.
    pub fn cores_per_rank(mut self, n: usize) -> Self {
        self.cores_per_rank = n;
        self
    }

    /// Sets the GPUs per rank (`0.25`: a quarter of one GPU).
    pub fn gpus_per_rank(mut self, g: f64) -> Self {
        self.gpus_per_rank = g;
        self
    }

    /// Sets the memory per rank in bytes.
    pub fn mem_per_rank(mut self, bytes: u64) -> Self {
        self.mem_per_rank = bytes;
        self
    }

    /// Sets cores, GPUs and memory per rank from a [`Resources`]
    /// (`"2c,0.5g,4GiB"`).
    pub fn per_rank(mut self, r: Resources) -> Self {
        self.cores_per_rank = r.cores;
        self.gpus_per_rank = r.gpus;
        self.mem_per_rank = r.memory_bytes;
        self
    }

    /// Adds a dependency.
    pub fn depends_on(mut self, dep: impl Into<TaskRef>) -> Self {
        self.dependencies.push(dep.into());
        self
    }

    /// Sets the priority (higher runs first).
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Sets the number of retries.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    fn exec_mut(&mut self) -> Option<&mut ExecutableSpec> {
        match &mut self.kind {
            TaskKind::Executable(e) => Some(e),
            TaskKind::Function(_) => None,
        }
    }

    fn func_mut(&mut self) -> Option<&mut FunctionSpec> {
        match &mut self.kind {
            TaskKind::Function(f) => Some(f),
            TaskKind::Executable(_) => None,
        }
    }

    /// Adds an environment variable (executables; ignored for functions).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let Some(e) = self.exec_mut() {
            e.env.push((key.into(), value.into()));
        }
        self
    }

    /// Sets the working directory (executables).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        if let Some(e) = self.exec_mut() {
            e.cwd = Some(dir.into());
        }
        self
    }

    /// Adds a pre-exec shell command (executables).
    pub fn pre_exec(mut self, cmd: impl Into<String>) -> Self {
        if let Some(e) = self.exec_mut() {
            e.pre_exec.push(cmd.into());
        }
        self
    }

    /// Sets the launch method of an executable by name (`fork`, `mpirun`,
    /// or one added to the pilot).
    pub fn launch_method(mut self, name: impl Into<String>) -> Self {
        if let Some(e) = self.exec_mut() {
            e.launch_method = name.into();
        }
        self
    }

    /// Launches an executable with `mpirun`, or a function in worker mode
    /// under `mpirun`.
    pub fn mpirun(mut self) -> Self {
        match &mut self.kind {
            TaskKind::Executable(e) => e.launch_method = "mpirun".to_string(),
            TaskKind::Function(f) => f.launch = FunctionLaunch::Mpirun,
        }
        self
    }

    /// Runs a function task on in-process threads (the default).
    pub fn in_threads(mut self) -> Self {
        if let Some(f) = self.func_mut() {
            f.launch = FunctionLaunch::Threads;
        }
        self
    }

    /// Runs a function task in worker processes.
    pub fn in_processes(mut self) -> Self {
        if let Some(f) = self.func_mut() {
            f.launch = FunctionLaunch::Processes;
        }
        self
    }

    /// Sets how a function task runs.
    pub fn function_launch(mut self, launch: FunctionLaunch) -> Self {
        if let Some(f) = self.func_mut() {
            f.launch = launch;
        }
        self
    }

    /// Sets a function task's raw argument bytes.
    pub fn args_bytes(mut self, args: impl Into<Vec<u8>>) -> Self {
        if let Some(f) = self.func_mut() {
            f.args = args.into();
        }
        self
    }

    /// Sets a function task's arguments, encoded as JSON (what functions
    /// registered with `Registry::register_typed` decode).
    pub fn try_args<T: Serialize + ?Sized>(self, args: &T) -> Result<Self> {
        let bytes = serde_json::to_vec(args).map_err(|source| PilotError::Encode {
            context: "encoding task arguments".to_string(),
            source,
        })?;
        Ok(self.args_bytes(bytes))
    }

    /// Gives a function task a sandbox directory (`TaskContext::sandbox`).
    pub fn with_sandbox(mut self) -> Self {
        if let Some(f) = self.func_mut() {
            f.sandbox = true;
        }
        self
    }

    /// The resources of one rank.
    pub fn rank_resources(&self) -> Resources {
        Resources {
            cores: self.cores_per_rank,
            gpus: self.gpus_per_rank,
            memory_bytes: self.mem_per_rank,
        }
    }

    /// The resources of all ranks.
    pub fn total_resources(&self) -> Resources {
        self.rank_resources().times(self.ranks)
    }

    /// A short label for messages: the name, or the function / program.
    pub(crate) fn label(&self, index: usize) -> String {
        match (&self.name, &self.kind) {
            (Some(n), _) => format!("{n:?}"),
            (None, TaskKind::Function(f)) => format!("#{index} (function {:?})", f.name),
            (None, TaskKind::Executable(e)) => format!(
                "#{index} (executable {:?})",
                e.argv.first().map(String::as_str).unwrap_or("")
            ),
        }
    }
}
