//! Task and pilot states, and why a task failed.
//!
//! ```text
//!   NEW ──> SCHEDULING ──> EXECUTING ──> DONE
//!               ^  │            │  └───> FAILED ──(retries left)──┐
//!               │  │            └──────> CANCELED                 │
//!               │  └──> FAILED | CANCELED (dependency failed,     │
//!               │       canceled while waiting)                   │
//!               └─────────────────────────────────────────────────┘
//! ```

use deeprc_core::TaskId;
use serde::{Deserialize, Serialize};
use std::{fmt, time::Duration};

/// The state of a task. Every transition is time-stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    /// Accepted by the task manager.
    New,
    /// With the agent's scheduler: waiting for its dependencies and for free
    /// slots.
    Scheduling,
    /// Placed on slots and handed to a launch method.
    Executing,
    /// Ended successfully (final).
    Done,
    /// Ended with a [`FailReason`] and no retry left (final).
    Failed,
    /// Canceled by the user or by closing the session (final).
    Canceled,
}

impl TaskState {
    /// Every state, in order.
    pub const ALL: [TaskState; 6] = [
        TaskState::New,
        TaskState::Scheduling,
        TaskState::Executing,
        TaskState::Done,
        TaskState::Failed,
        TaskState::Canceled,
    ];

    /// `true` for DONE, FAILED and CANCELED.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Done | TaskState::Failed | TaskState::Canceled
        )
    }

    /// The upper-case name RADICAL-Pilot users know (`EXECUTING`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "NEW",
            TaskState::Scheduling => "SCHEDULING",
            TaskState::Executing => "EXECUTING",
            TaskState::Done => "DONE",
            TaskState::Failed => "FAILED",
            TaskState::Canceled => "CANCELED",
        }
    }

    /// The profile event name of entering this state (`state.executing`).
    pub fn event(self) -> &'static str {
        match self {
            TaskState::New => "state.new",
            TaskState::Scheduling => "state.scheduling",
            TaskState::Executing => "state.executing",
            TaskState::Done => "state.done",
            TaskState::Failed => "state.failed",
            TaskState::Canceled => "state.canceled",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(i: u8) -> Option<TaskState> {
        TaskState::ALL.get(usize::from(i)).copied()
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a pilot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PilotState {
    /// Resources are being acquired.
    Launching,
    /// The agent runs and accepts tasks.
    Active,
    /// The pilot was closed normally.
    Done,
    /// The pilot could not acquire its resources or its agent died.
    Failed,
    /// The pilot was canceled.
    Canceled,
}

impl fmt::Display for PilotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PilotState::Launching => "LAUNCHING",
            PilotState::Active => "ACTIVE",
            PilotState::Done => "DONE",
            PilotState::Failed => "FAILED",
            PilotState::Canceled => "CANCELED",
        })
    }
}

/// Why a task ended FAILED (or CANCELED).
///
/// The last lines of the task's stderr, when there is one, are kept beside
/// the reason (`Task::stderr_tail`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FailReason {
    /// An executable exited with this non-zero code.
    ExitCode(i32),
    /// An executable (or an `mpirun`) was killed by this signal.
    Signal(i32),
    /// A function task panicked with this message.
    Panic(String),
    /// A function task returned this error.
    Error(String),
    /// The task ran longer than its timeout and was stopped.
    Timeout(Duration),
    /// The worker process running a function task died.
    WorkerCrashed {
        /// The worker (its core slot in the pilot).
        worker: usize,
        /// How it died, e.g. `killed by signal 6 (SIGABRT)`.
        status: String,
    },
    /// The task could not be launched (spawn failed, worker start failed).
    Launch(String),
    /// The task's launch method could not give it command lines to run: it
    /// returned an error, panicked, or returned commands that cannot run
    /// (see [`LaunchMethod`](crate::LaunchMethod)).
    LaunchMethod {
        /// The launch method's name.
        method: String,
        /// What went wrong.
        reason: String,
    },
    /// The task's communicator could not be created.
    Comm(String),
    /// A rank's result was too large for the message that takes it back
    /// from its worker process (see
    /// [`PilotDescription::max_message_bytes`](crate::PilotDescription::max_message_bytes)).
    ResultTooLarge {
        /// The size of the result in bytes.
        size: u64,
        /// The pilot's message limit (the result and a few dozen bytes of
        /// other fields).
        limit: u64,
    },
    /// A dependency ended FAILED or CANCELED, so this task never ran.
    DependencyFailed {
        /// The dependency.
        dependency: TaskId,
        /// How it ended.
        state: TaskState,
    },
    /// The task was canceled.
    Canceled,
}

impl FailReason {
    /// `true` when retrying may help (not for cancellation or failed
    /// dependencies).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            FailReason::Canceled | FailReason::DependencyFailed { .. }
        )
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::ExitCode(c) => write!(f, "exited with code {c}"),
            FailReason::Signal(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
            FailReason::Panic(m) => write!(f, "panicked: {m}"),
            FailReason::Error(m) => write!(f, "returned an error: {m}"),
            FailReason::Timeout(d) => write!(f, "timed out after {d:?}"),
            FailReason::WorkerCrashed { worker, status } => {
                write!(f, "worker process {worker} crashed: {status}")
            }
            FailReason::Launch(m) => write!(f, "launch failed: {m}"),
            FailReason::LaunchMethod { method, reason } => {
                write!(f, "launch method {method} failed: {reason}")
            }
            FailReason::Comm(m) => write!(f, "communicator creation failed: {m}"),
            FailReason::ResultTooLarge { size, limit } => write!(
                f,
                "its result of {size} bytes does not fit the {limit}-byte message limit \
                 (max_message_bytes)"
            ),
            FailReason::DependencyFailed { dependency, state } => {
                write!(f, "dependency {dependency} ended {state}")
            }
            FailReason::Canceled => write!(f, "canceled"),
        }
    }
}

/// The conventional name of a signal number (`SIGKILL`), or `?`.
pub fn signal_name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_display() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::from_index(s.index() as u8), Some(s));
        }
        assert!(TaskState::Canceled.is_final() && !TaskState::Executing.is_final());
        assert_eq!(TaskState::Executing.to_string(), "EXECUTING");
        assert_eq!(
            FailReason::Signal(9).to_string(),
            "killed by signal 9 (SIGKILL)"
        );
        assert!(!FailReason::Canceled.is_retryable());
    }
}
