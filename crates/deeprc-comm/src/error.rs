//! The error type of `deeprc-comm`.

use crate::Backend;
use std::time::Duration;

/// Everything a communicator operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommError {
    /// The backend exists in the API but its cargo feature was not enabled.
    #[error("the {backend} backend was not compiled in: enable the cargo feature `{feature}` of deeprc-comm")]
    NotCompiled {
        /// The backend asked for.
        backend: Backend,
        /// The feature that would enable it.
        feature: &'static str,
    },
    /// The backend is compiled in but cannot run here (no GPU, no library).
    #[error("the {backend} backend is unavailable: {reason}")]
    Unavailable {
        /// The backend asked for.
        backend: Backend,
        /// Why it cannot run.
        reason: String,
    },
    /// A rank argument is outside `0..size`.
    #[error("rank {rank} is out of range for a communicator of size {size}")]
    InvalidRank {
        /// The rank given.
        rank: usize,
        /// The communicator's size.
        size: usize,
    },
    /// An argument does not fit the operation (wrong number of parts, a
    /// buffer length that is not a multiple of the element size, ...).
    #[error("invalid argument to {op}: {reason}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Ranks disagree on the size of a collective's buffer.
    #[error("{op}: rank {peer} contributed {actual} bytes, this rank expected {expected}")]
    SizeMismatch {
        /// The operation.
        op: &'static str,
        /// The rank whose contribution differs.
        peer: usize,
        /// The length this rank expected.
        expected: usize,
        /// The length that arrived.
        actual: usize,
    },
    /// No message arrived from a peer within the configured time.
    #[error("{op}: timed out after {after:?} waiting for rank {peer}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The rank that did not answer.
        peer: usize,
        /// The time waited.
        after: Duration,
    },
    /// A peer died, closed its connection, aborted or left the group.
    #[error("{op}: lost rank {peer}: {reason}")]
    PeerLost {
        /// The operation.
        op: &'static str,
        /// The rank that was lost.
        peer: usize,
        /// What happened to it.
        reason: String,
    },
    /// A connection failed authentication (wrong or missing job token).
    #[error("connection from {addr} refused: {reason}")]
    Auth {
        /// The remote address.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// A peer speaks another version of the tcp wire protocol (for example
    /// version 1, which sent the job token in clear).
    #[error("{from} speaks tcp protocol version {theirs}, this side speaks version {ours}")]
    VersionMismatch {
        /// The remote address.
        from: String,
        /// The version this side speaks.
        ours: u8,
        /// The version the peer's frame carries.
        theirs: u8,
    },
    /// A rendezvous directory or file that others could write to (or that
    /// another user owns): a local user could then plant addresses in it.
    #[error("insecure rendezvous store {path}: {reason}")]
    InsecureStore {
        /// The directory or file.
        path: String,
        /// What is wrong with its permissions.
        reason: String,
    },
    /// A frame announced more bytes than the configured limit.
    #[error("frame of {len} bytes from {from} exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Configured limit.
        limit: u64,
        /// Who sent it.
        from: String,
    },
    /// Bytes on a connection that are not a Deep RC frame.
    #[error("malformed frame from {from}: {reason}")]
    MalformedFrame {
        /// Who sent it.
        from: String,
        /// What was wrong.
        reason: String,
    },
    /// A configuration value (usually an environment variable) is missing or bad.
    #[error("configuration {name}: {reason}")]
    Config {
        /// The variable or option.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The rendezvous store failed.
    #[error("rendezvous store {store}: {reason}")]
    Store {
        /// The store's address or directory.
        store: String,
        /// What failed.
        reason: String,
    },
    /// An operating-system I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A rank's closure panicked (local launcher).
    #[error("rank {rank} panicked: {message}")]
    RankPanicked {
        /// The rank.
        rank: usize,
        /// The panic message.
        message: String,
    },
    /// An error reported by the backend library (MPI, Gloo, NCCL).
    #[error("{backend} backend: {message}")]
    Backend {
        /// The backend.
        backend: Backend,
        /// The library's message.
        message: String,
    },
}

impl CommError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }

    pub(crate) fn config(name: &str, reason: impl Into<String>) -> Self {
        Self::Config {
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// Checks that `rank` is a rank of a non-empty world of `size`.
    pub(crate) fn check_world(rank: usize, size: usize) -> Result<()> {
        if size == 0 || rank >= size {
            return Err(Self::InvalidRank { rank, size });
        }
        Ok(())
    }

    /// `true` for errors that mean a peer is gone or unresponsive.
    pub fn is_peer_failure(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::PeerLost { .. })
    }
}

/// `Result` with [`CommError`] as the default error.
pub type Result<T, E = CommError> = std::result::Result<T, E>;
