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
