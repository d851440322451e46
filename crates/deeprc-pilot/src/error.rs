//! The error type of `deeprc-pilot`.

use crate::{FailReason, TaskState};
use deeprc_core::{Resources, TaskId};

/// Everything the pilot API can fail with.
///
/// Submission errors (`InsufficientResources`, `UnknownFunction`,
/// `ExecutableNotFound`, `DependencyCycle`, ...) are returned by
/// `TaskManager::submit` before anything runs. A task that fails while
/// running is not an error of the API: it ends in [`TaskState::Failed`] with
/// a [`FailReason`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PilotError {
    /// A task asks for more than the pilot can ever give it.
    #[error(
        "task {task} asks for {asked} ({detail}), more than pilot {pilot} holds ({available})"
    )]
    InsufficientResources {
        /// The task (its name, or its position in the submitted batch).
        task: String,
        /// The pilot that was considered.
        pilot: String,
        /// What the task asks for in total (all ranks).
        asked: Resources,
        /// What the pilot holds in total.
        available: Resources,
        /// Which constraint cannot be met, e.g. `a rank needs 4 cores, the
        /// largest node has 2`.
        detail: String,
    },
    /// A function task names a function that is not in the registry.
    #[error("task {task}: no function named {name:?} is registered (registered: {known})")]
    UnknownFunction {
        /// The task.
        task: String,
        /// The unknown name.
        name: String,
        /// The names that are registered, comma separated.
        known: String,
    },
    /// An executable task names a program that does not exist or is not
    /// executable.
    #[error("task {task}: executable {path:?} not found or not executable")]
    ExecutableNotFound {
        /// The task.
        task: String,
        /// The program as given in `argv[0]`.
        path: String,
    },
    /// A task asks for a launch method the pilot does not know.
    #[error("task {task}: unknown launch method {method:?} (known: {known})")]
    UnknownLaunchMethod {
        /// The task.
        task: String,
        /// The unknown method.
        method: String,
        /// The methods the pilot knows, comma separated.
        known: String,
    },
    /// A launch method cannot run here (e.g. `mpirun` is not installed).
    #[error("task {task}: launch method {method} is unavailable: {reason}")]
    LauncherUnavailable {
        /// The task.
        task: String,
        /// The method.
        method: String,
        /// Why it cannot run.
        reason: String,
    },
    /// The tasks of a submitted batch depend on each other in a cycle.
    #[error("dependency cycle between tasks {}", tasks.join(" -> "))]
    DependencyCycle {
        /// The tasks of the cycle, in order (the first is repeated last).
        tasks: Vec<String>,
    },
    /// A task depends on a task that does not exist.
    #[error("task {task} depends on {dependency}, which was never submitted")]
    UnknownDependency {
        /// The task.
        task: String,
        /// The missing dependency (an id or a name).
        dependency: String,
    },
    /// Two tasks were given the same name.
    #[error("a task named {name:?} was already submitted")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A description has a value that makes no sense (zero ranks, a negative
    /// GPU share, an empty argv, ...).
    #[error("task {task}: invalid description: {reason}")]
    InvalidDescription {
        /// The task (or the pilot).
        task: String,
        /// What is wrong.
        reason: String,
    },
    /// A pilot description cannot be satisfied.
    #[error("invalid pilot description: {reason}")]
    InvalidPilot {
        /// What is wrong.
        reason: String,
    },
    /// The resource provider could not acquire a pilot's resources: a Slurm
    /// job refused by `sbatch`, cancelled or ended before it ran, or
    /// pending for a reason that never clears (`PartitionNodeLimit`).
    #[error("pilot on {resource}: {reason}")]
    ResourceFailed {
        /// The provider (`slurm`).
        resource: String,
        /// Why, in the provider's words (Slurm's message or reason).
        reason: String,
    },
    /// No resource provider is registered under this name.
    #[error("unknown resource {resource:?} (known: {known})")]
    UnknownResource {
        /// The resource asked for.
        resource: String,
        /// The providers that are registered, comma separated.
        known: String,
    },
    /// A function task's arguments are too large for the message that takes
    /// them to a worker process (see
    /// [`PilotDescription::max_message_bytes`](crate::PilotDescription::max_message_bytes)).
    #[error(
        "task {task}: its arguments are {size} bytes, more than the {limit} a message to a \
         worker of pilot {pilot} can carry (max_message_bytes {max_message_bytes}, less the \
         message's other fields); pass large data another way (a file in the sandbox) or \
         raise the limit"
    )]
    ArgumentsTooLarge {
        /// The task.
        task: String,
        /// The pilot with the largest limit.
        pilot: String,
        /// The size of the arguments in bytes.
        size: u64,
        /// The most argument bytes a message can carry.
        limit: u64,
        /// The pilot's message limit.
        max_message_bytes: u64,
    },
    /// A pilot of one session was added to a task manager of another.
    #[error("pilot {pilot} belongs to session {pilot_session}, not to {session}")]
    ForeignPilot {
        /// The pilot.
        pilot: String,
        /// The session it belongs to.
        pilot_session: String,
        /// The task manager's session.
        session: String,
    },
    /// A task was submitted to a task manager without pilots.
    #[error("the task manager has no pilot: call TaskManager::add_pilot first")]
    NoPilot,
    /// The session or the pilot was closed.
    #[error("{what} is closed")]
    Closed {
        /// What was closed.
        what: String,
    },
    /// A feature was not compiled in.
    #[error("{what} needs the cargo feature `{feature}` of deeprc-pilot")]
    NotCompiled {
        /// What was asked for.
        what: String,
        /// The feature that would enable it.
        feature: &'static str,
    },
    /// Worker processes could not be started.
    #[error("cannot start worker processes: {reason}")]
    WorkerStart {
        /// Why, with the worker's stderr when there is one.
        reason: String,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding arguments or decoding a result failed.
    #[error("{context}: {source}")]
    Encode {
        /// What was being encoded or decoded.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A task's result was asked for, but the task did not end DONE.
    #[error("{task} ended {state}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    TaskFailed {
        /// The task.
        task: TaskId,
        /// Its final state.
        state: TaskState,
        /// Why it failed.
        reason: Option<FailReason>,
    },
    /// A task's result was asked for before the task ended.
    #[error("{task} has not finished (state {state})")]
    NotFinished {
        /// The task.
        task: TaskId,
        /// Its current state.
        state: TaskState,
    },
    /// A communicator could not be created.
    #[error(transparent)]
    Comm(#[from] deeprc_comm::CommError),
    /// A shared vocabulary error (e.g. writing a profile).
    #[error(transparent)]
    Core(#[from] deeprc_core::CoreError),
}

impl PilotError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(task: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidDescription {
            task: task.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with [`PilotError`] as the default error.
pub type Result<T, E = PilotError> = std::result::Result<T, E>;
