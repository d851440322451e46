//! The `ucx` backend was not compiled in (enable the cargo feature `ucx` of
//! deeprc-comm, which needs Debian's `libucx-dev`).
//!
//! The names of the real module exist so that code naming them compiles
//! everywhere; creating a communicator answers
//! [`CommError::NotCompiled`](crate::CommError::NotCompiled).

use crate::{Backend, CommConfig, Result};
use std::{convert::Infallible, time::Duration};

/// How to create a [`UcxComm`].
#[derive(Debug, Clone)]
pub struct UcxOptions {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// The rendezvous store (`host:port` or a shared folder).
    pub store: String,
    /// The job token.
    pub token: String,
    /// Timeouts and limits.
    pub config: CommConfig,
}

impl UcxOptions {
    /// Always [`CommError::NotCompiled`](crate::CommError::NotCompiled): the `ucx` feature is off.
    pub fn from_env() -> Result<Self> {
        Err(Backend::Ucx.not_compiled())
    }
}

/// A communicator over UCX; without the `ucx` feature no value of this type
/// can exist.
#[derive(Debug)]
pub struct UcxComm {
    never: Infallible,
}

impl UcxComm {
    /// Always [`CommError::NotCompiled`](crate::CommError::NotCompiled): the `ucx` feature is off.
    pub fn from_env() -> Result<Self> {
        Err(Backend::Ucx.not_compiled())
    }

    /// Always [`CommError::NotCompiled`](crate::CommError::NotCompiled): the `ucx` feature is off.
    pub fn connect(options: UcxOptions) -> Result<Self> {
        let _ = options;
        Err(Backend::Ucx.not_compiled())
    }

    /// How long creating this communicator took.
    pub fn setup_time(&self) -> Duration {
        match self.never {}
    }
}

uninhabited_communicator!(UcxComm, Backend::Ucx);
