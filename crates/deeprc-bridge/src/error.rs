//! The error type of `deeprc-bridge`.

use crate::dtype::DType;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use deeprc_comm::CommError;
use deeprc_frame::FrameError;

/// Everything the Data Bridge can fail with.
///
/// Bad input gets a specific variant naming what was wrong: the column, the
/// series, the rank. Failures of the layers below (communicator, Arrow,
/// frame, the tensor frameworks) are wrapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// A column named in a dataset specification is not in the table.
    #[error("column {column:?} not found (available: {})", available.join(", "))]
    ColumnNotFound {
        /// The column asked for.
        column: String,
        /// The columns of the table.
        available: Vec<String>,
    },
    /// A feature or target column has nulls and the dataset has no fill
    /// policy ([`NullPolicy::Error`](crate::NullPolicy::Error)).
    #[error("column {column:?} has {count} null(s) and the null policy is Error (use NullPolicy::Fill or NullPolicy::Skip)")]
    NullsInColumn {
        /// The column.
        column: String,
        /// How many nulls this rank saw.
        count: usize,
    },
    /// A feature or target column is not numeric.
    #[error("column {column:?} is {dtype}, not a numeric type (integers, floats, booleans or fixed-size lists of them)")]
    NotNumeric {
        /// The column.
        column: String,
        /// Its Arrow type.
        dtype: DataType,
    },
    /// A series has no run of rows long enough for one window.
    #[error("series {series:?}: its longest run without gaps has {len} rows but a window needs {need} (input length + horizon)")]
    WindowTooLong {
        /// The series (its id as text; `"<all rows>"` without a series column).
        series: String,
        /// The longest gap-free run of the series.
        len: usize,
        /// Rows one window needs.
        need: usize,
    },
    /// A rank would get no samples.
    #[error("rank {rank} has no samples{detail}")]
    EmptyPartition {
        /// The first rank without samples.
        rank: usize,
        /// Why (the counts).
        detail: String,
    },
    /// The rows of a series are not in increasing time order.
    #[error("series {series:?} is not sorted by time at row {row} ({prev} then {next}); sort the table by (series, time) first")]
    NotSorted {
        /// The series.
        series: String,
        /// The local row (0-based) where time goes backwards or repeats.
        row: usize,
        /// The time before.
        prev: i64,
        /// The time at `row`.
        next: i64,
    },
    /// A time column of a type that cannot be an axis.
    #[error("time column {column:?} is {dtype}; expected a timestamp, a date or an integer")]
    BadTimeColumn {
        /// The column.
        column: String,
        /// Its Arrow type.
        dtype: DataType,
    },
    /// A zero-copy view was required ([`ZeroCopy::Require`](crate::ZeroCopy::Require)) but the layout does not allow it.
    #[error("zero-copy required but not possible for {part}: {reason}")]
    ZeroCopyUnavailable {
        /// `inputs` or `targets`.
        part: &'static str,
        /// Why not.
        reason: String,
    },
    /// A typed access asked for another element type than the data has.
    #[error("dtype mismatch: {what} is {actual}, asked for {expected}")]
    DTypeMismatch {
        /// What was accessed.
        what: String,
        /// The type asked for.
        expected: DType,
        /// The type it has.
        actual: DType,
    },
    /// An argument is out of its domain.
    #[error("{what}: {detail}")]
    InvalidArgument {
        /// The argument or operation.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Page-locked memory was required but is not available.
    #[error("pinned memory unavailable: {reason}")]
    PinUnavailable {
        /// Why (no CUDA runtime, no device, registration failed).
        reason: String,
    },
    /// A feature of this crate that was not compiled in (`tch`, `tensorflow`).
    #[error("deeprc-bridge was built without the {feature:?} feature")]
    NotCompiled {
        /// The cargo feature.
        feature: &'static str,
    },
    /// An error of a tensor framework (libtorch, TensorFlow).
    #[error("{framework}: {message}")]
    Framework {
        /// `libtorch` or `tensorflow`.
        framework: &'static str,
        /// Its message.
        message: String,
    },
    /// A SavedModel lacks a signature that its Rust wrapper needs, or a
    /// signature lacks an input or output, or has one of another type or
    /// shape (e.g. a model exported by another script or with other
    /// dimensions).
    #[error("SavedModel {}: signature {signature:?}{}: {problem}", dir.display(), tensor.as_deref().map(|t| format!(", tensor {t:?}")).unwrap_or_default())]
    SignatureMismatch {
        /// The SavedModel's directory.
        dir: std::path::PathBuf,
        /// The signature.
        signature: String,
        /// The input or output of the signature, when one is at fault.
        tensor: Option<String>,
        /// What is missing or different.
        problem: String,
    },
    /// A loader worker thread panicked.
    #[error("loader worker panicked while building batch {batch}: {message}")]
    WorkerPanicked {
        /// The batch it was building.
        batch: usize,
        /// The panic message.
        message: String,
    },
    /// Another rank failed while building the same dataset (its own error
    /// names the cause).
    #[error("rank {rank} failed while building the dataset")]
    PeerFailed {
        /// The first rank that failed.
        rank: usize,
    },
    /// A communicator failure.
    #[error(transparent)]
    Comm(#[from] CommError),
    /// An Arrow failure.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// A table operation failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The loss of a training step is NaN or infinite on some rank (every
    /// rank sees the same mean loss and fails at the same step).
    #[error("training step {step}: the loss is not finite (mean over {ranks} rank(s): {loss}); lower the learning rate or check the inputs")]
    NonFiniteLoss {
        /// The optimizer step that failed (counted from 0).
        step: u64,
        /// The number of ranks whose losses were averaged.
        ranks: usize,
        /// The mean loss.
        loss: f64,
    },
    /// The model's parameters differ between ranks (a data-parallel run
    /// that diverged: a rank stepped differently or saw other parameters).
    #[error("parameters differ between ranks at step {step}: checksums {checksums}")]
    Diverged {
        /// The optimizer step at which the check ran.
        step: u64,
        /// Every rank's checksum, in rank order.
        checksums: String,
    },
    /// A checkpoint that cannot be written, read or used for this model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint's directory.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A broken invariant of this crate (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// `Result` with [`BridgeError`] as the default error.
pub type Result<T, E = BridgeError> = std::result::Result<T, E>;

impl BridgeError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        BridgeError::InvalidArgument {
            what,
            detail: detail.into(),
        }
    }
}

impl deeprc_comm::local::AsPeerFailure for BridgeError {
    fn is_peer_failure(&self) -> bool {
        match self {
            BridgeError::PeerFailed { .. } => true,
            BridgeError::Comm(e) => e.is_peer_failure(),
            _ => false,
        }
    }
}
