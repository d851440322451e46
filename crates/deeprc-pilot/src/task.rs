//! The [`Task`] handle and the state it shares with the agent.

use crate::{
    agent::AgentEvent,
    registry::RawFn,
    scheduler::Shape,
    session::{PilotShared, TmgrShared},
    usage::ResourceUsage,
    FailReason, PilotError, Placement, Result, TaskDescription, TaskKind, TaskState,
};
use deeprc_core::sync::lock;
use deeprc_core::TaskId;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// When a task entered each state of its last attempt, and when its
/// payload ran, in nanoseconds since the Unix epoch (0: not reached).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamps {
    /// NEW: accepted by the task manager.
    pub new: u64,
    /// SCHEDULING: received by the agent (or re-queued for a retry).
    pub scheduling: u64,
    /// EXECUTING: placed and handed to the launch method.
    pub executing: u64,
    /// The payload started: process spawned, or function called (after its
    /// communicator was made).
    pub exec_start: u64,
    /// The payload ended (last rank).
    pub exec_end: u64,
    /// DONE, FAILED or CANCELED.
    pub finished: u64,
}

impl Timestamps {
    pub(crate) fn set(&mut self, state: TaskState, ns: u64) {
        match state {
            TaskState::New => self.new = ns,
            TaskState::Scheduling => self.scheduling = ns,
            TaskState::Executing => self.executing = ns,
            TaskState::Done | TaskState::Failed | TaskState::Canceled => self.finished = ns,
        }
    }
}

/// What the agent writes and the handle reads.
#[derive(Debug, Default)]
pub(crate) struct TaskInner {
    pub(crate) state: Option<TaskState>,
    pub(crate) ts: Timestamps,
    pub(crate) attempt: u32,
    pub(crate) placement: Option<Arc<Placement>>,
    pub(crate) reason: Option<FailReason>,
    pub(crate) stderr_tail: Option<String>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) outputs: Vec<Vec<u8>>,
    pub(crate) sandbox: Option<PathBuf>,
    pub(crate) comm_ns: u64,
    /// What its last attempt used (shared with its profile record).
    pub(crate) usage: Option<Arc<ResourceUsage>>,
    /// Transitions of earlier attempts (only for retried tasks).
    pub(crate) history: Vec<(TaskState, u64)>,
    /// Why each earlier attempt failed (only for retried tasks).
    pub(crate) failures: Vec<FailReason>,
    pub(crate) waiters: u32,
}

/// A task as the agent and the handles share it.
pub(crate) struct TaskShared {
    pub(crate) id: TaskId,
    pub(crate) desc: TaskDescription,
    /// The function's name or the program's file name.
    pub(crate) label: Arc<str>,
    /// `function.threads`, `executable.fork` ...
    pub(crate) kind: Arc<str>,
    pub(crate) shape: Shape,
    pub(crate) func: Option<Arc<RawFn>>,
    pub(crate) deps: Vec<TaskId>,
    pub(crate) pilot: Arc<PilotShared>,
    pub(crate) tmgr: Arc<TmgrShared>,
    pub(crate) inner: Mutex<TaskInner>,
    pub(crate) changed: Condvar,
}

impl TaskShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, TaskInner> {
        lock(&self.inner)
    }
}

/// A handle on a submitted task: its state, its result, waiting and
/// canceling. Cheap to clone.
///
/// The agent forgets a task once it is final; the handle keeps its result
/// for as long as it is held.
#[derive(Clone)]
pub struct Task {
    pub(crate) shared: Arc<TaskShared>,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.shared.id)
            .field("label", &self.shared.label)
            .field("state", &self.state())
            .finish()
    }
}

impl PartialEq for Task {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Task {
    /// The task's id (`task.000042`).
    pub fn id(&self) -> TaskId {
        self.shared.id
    }

    /// The name given in the description, if any.
    pub fn name(&self) -> Option<&str> {
        self.shared.desc.name.as_deref()
    }

    /// The description it was submitted with.
    pub fn description(&self) -> &TaskDescription {
        &self.shared.desc
    }

    /// The id of the pilot it runs on.
    pub fn pilot(&self) -> &str {
        &self.shared.pilot.id
    }

    /// Its current state.
    pub fn state(&self) -> TaskState {
        self.shared.lock().state.unwrap_or(TaskState::New)
    }

    /// Blocks until the task is final and returns its final state.
    pub fn wait(&self) -> TaskState {
        let mut g = self.shared.lock();
        loop {
            if let Some(s) = g.state.filter(|s| s.is_final()) {
                return s;
            }
            g.waiters += 1;
            g = self
                .shared
                .changed
                .wait(g)
                .unwrap_or_else(PoisonError::into_inner);
            g.waiters -= 1;
        }
    }

    /// Like [`wait`](Self::wait) for at most `timeout`; `None` if the task
    /// is not final by then. A timeout too long to represent waits forever.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<TaskState> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Some(self.wait());
        };
        let mut g = self.shared.lock();
        loop {
            if let Some(s) = g.state.filter(|s| s.is_final()) {
                return Some(s);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            g.waiters += 1;
            g = self
                .shared
                .changed
                .wait_timeout(g, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            g.waiters -= 1;
        }
    }

    /// Asks the agent to cancel the task: a waiting task is dropped, a
    /// running process is killed, a function on threads is flagged
    /// ([`TaskContext::is_canceled`](crate::TaskContext::is_canceled)). The
    /// task ends CANCELED unless it ends first.
    pub fn cancel(&self) {
        let _ = self
            .shared
            .pilot
            .tx
            .send(AgentEvent::Cancel(self.shared.id));
    }

    /// Why it failed or was canceled: the reason of its final attempt
    /// (`None` while it runs and once it is DONE, retried or not; see
    /// [`failed_attempts`](Self::failed_attempts) for earlier attempts).
    pub fn reason(&self) -> Option<FailReason> {
        self.shared.lock().reason.clone()
    }

    /// Why each earlier attempt failed, in order: one entry per retry used
    /// (empty for a task that was not retried).
    pub fn failed_attempts(&self) -> Vec<FailReason> {
        self.shared.lock().failures.clone()
    }

    /// The last lines of stderr of a failed executable, or the output of a
    /// crashed worker process.
    pub fn stderr_tail(&self) -> Option<String> {
        self.shared.lock().stderr_tail.clone()
    }

    /// The exit code of an executable (of its first failing rank).
    pub fn exit_code(&self) -> Option<i32> {
        self.shared.lock().exit_code
    }

    /// The raw result of rank 0 of a function task that ended DONE.
    pub fn output(&self) -> Option<Vec<u8>> {
        let g = self.shared.lock();
        (g.state == Some(TaskState::Done))
            .then(|| g.outputs.first().cloned())
            .flatten()
    }

    /// The raw results of every rank of a function task that ended DONE.
    pub fn outputs(&self) -> Vec<Vec<u8>> {
        let g = self.shared.lock();
        if g.state == Some(TaskState::Done) {
            g.outputs.clone()
        } else {
            Vec::new()
        }
    }

    /// Decodes rank 0's result (JSON, as `Registry::register_typed`
    /// encodes it). Fails when the task did not end DONE.
    pub fn result<T: DeserializeOwned>(&self) -> Result<T> {
        let (state, reason, bytes) = {
            let g = self.shared.lock();
            (
                g.state.unwrap_or(TaskState::New),
                g.reason.clone(),
                g.outputs.first().cloned().unwrap_or_default(),
            )
        };
        match state {
            TaskState::Done => {
                serde_json::from_slice(&bytes).map_err(|source| PilotError::Encode {
                    context: format!("decoding the result of {}", self.id()),
                    source,
                })
            }
            s if s.is_final() => Err(PilotError::TaskFailed {
                task: self.id(),
                state: s,
                reason,
            }),
            s => Err(PilotError::NotFinished {
                task: self.id(),
                state: s,
            }),
        }
    }

    /// Where it ran.
    pub fn placement(&self) -> Option<Arc<Placement>> {
        self.shared.lock().placement.clone()
    }

    /// When it entered each state (of its last attempt).
    pub fn timestamps(&self) -> Timestamps {
        self.shared.lock().ts
    }

    /// How long creating its communicator took (multi-rank function tasks).
    pub fn comm_creation_time(&self) -> Duration {
        Duration::from_nanos(self.shared.lock().comm_ns)
    }

    /// What its last attempt used: CPU time and peak memory as the
    /// operating system counts them (and GPU figures with the feature
    /// `nvml`); `None` until it is final, and for a task that never ran.
    /// See [`ResourceUsage`] for what each kind of task measures.
    pub fn resources(&self) -> Option<ResourceUsage> {
        self.shared.lock().usage.as_deref().cloned()
    }

    /// How many times it ran (1 + retries used).
    pub fn attempts(&self) -> u32 {
        let g = self.shared.lock();
        g.attempt + u32::from(g.ts.executing != 0)
    }

    /// Every state transition with its time, earlier attempts included.
    pub fn history(&self) -> Vec<(TaskState, u64)> {
        let g = self.shared.lock();
        let mut h = g.history.clone();
        h.extend(current_transitions(&g));
        h
    }

    /// The sandbox directory (executables, and functions that asked).
    pub fn sandbox(&self) -> Option<PathBuf> {
        self.shared.lock().sandbox.clone()
    }

    /// The file an executable's stdout went to.
    pub fn stdout_path(&self) -> Option<PathBuf> {
        self.is_executable()
            .then(|| self.sandbox().map(|s| s.join("stdout")))
            .flatten()
    }

    /// The file an executable's stderr went to.
    pub fn stderr_path(&self) -> Option<PathBuf> {
        self.is_executable()
            .then(|| self.sandbox().map(|s| s.join("stderr")))
            .flatten()
    }

    /// Reads an executable's captured stdout.
    pub fn stdout(&self) -> Option<String> {
        self.stdout_path().and_then(|p| read_lossy(&p))
    }

    fn is_executable(&self) -> bool {
        matches!(self.shared.desc.kind, TaskKind::Executable(_))
    }
}

fn read_lossy(p: &Path) -> Option<String> {
    std::fs::read(p)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The transitions of the current attempt, in order.
pub(crate) fn current_transitions(g: &TaskInner) -> Vec<(TaskState, u64)> {
    let mut v = Vec::with_capacity(4);
    if g.ts.new != 0 && g.history.is_empty() {
        v.push((TaskState::New, g.ts.new));
    }
    if g.ts.scheduling != 0 {
        v.push((TaskState::Scheduling, g.ts.scheduling));
    }
    if g.ts.executing != 0 {
        v.push((TaskState::Executing, g.ts.executing));
    }
    if let Some(s) = g.state.filter(|s| s.is_final()) {
        v.push((s, g.ts.finished));
    }
    v
}
