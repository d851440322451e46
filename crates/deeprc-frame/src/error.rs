//! The error type of `deeprc-frame`.

use datafusion::arrow::{datatypes::DataType, error::ArrowError};
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;
use deeprc_comm::CommError;
use std::path::PathBuf;

/// Everything a table operation can fail with.
///
/// Bad input always gets a specific variant naming what was wrong (the
/// column, the type, the file and line, the ranks); library errors are
/// wrapped with the operation that was running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A column named in an operation is not in the table.
    #[error("column {column:?} not found (available: {})", available.join(", "))]
    ColumnNotFound {
        /// The column asked for.
        column: String,
        /// The columns of the table.
        available: Vec<String>,
    },
    /// Key columns paired by a join (or a set operation) have different types.
    #[error("key column {left:?} is {left_type} but key column {right:?} is {right_type}")]
    KeyTypeMismatch {
        /// The left key column.
        left: String,
        /// Its type.
        left_type: DataType,
        /// The right key column.
        right: String,
        /// Its type.
        right_type: DataType,
    },
    /// The partitions of a distributed table do not have the same schema.
    #[error("schema mismatch across ranks at column {column:?}: {detail} (ranks {ranks:?} differ from rank 0)")]
    SchemaMismatch {
        /// The first column that differs (by position or name).
        column: String,
        /// The ranks whose schema differs from rank 0's.
        ranks: Vec<usize>,
        /// What differs.
        detail: String,
    },
    /// Two tables given to one operation have incompatible schemas.
    #[error("{op}: incompatible schemas at column {column:?}: {detail}")]
    IncompatibleSchemas {
        /// The operation.
        op: &'static str,
        /// The first column that differs.
        column: String,
        /// What differs.
        detail: String,
    },
    /// A line of an input file cannot be parsed.
    #[error("{}{}: column {column:?}: {reason}", file.display(), line_suffix(*line))]
    Malformed {
        /// The file.
        file: PathBuf,
        /// The 1-based line number in the file, the header (if any) being
        /// line 1; `None` when the reader does not say.
        line: Option<usize>,
        /// The column (name, or position when no name is known; `"?"`
        /// when the error is not about one column).
        column: String,
        /// What was wrong.
        reason: String,
    },
    /// Input data is not where it is expected.
    #[error("data not found at {}: expected {expected}", path.display())]
    DataMissing {
        /// The missing path.
        path: PathBuf,
        /// What should be there.
        expected: String,
    },
    /// An argument does not fit the operation.
    #[error("invalid argument to {op}: {reason}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The operation does not support this input (a type, a query shape).
    #[error("{op} does not support {what}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// What is not supported.
        what: String,
    },
    /// An operator would number more rows than its `u32` row ids can: a
    /// partition, or a local join's output, past
    /// [`MAX_ROWS`](crate::limits::MAX_ROWS). Checked before computing.
    #[error(
        "{op}: {rows} rows exceed the limit of {limit} rows per partition \
         (row ids are 32-bit); spread the table over more ranks"
    )]
    TooManyRows {
        /// The operation.
        op: &'static str,
        /// The rows it would have to number (`u64::MAX` when the count
        /// itself overflows).
        rows: u64,
        /// The limit.
        limit: u64,
    },
    /// Bytes received from another rank do not decode: a truncated,
    /// corrupt or forged message. Never a panic.
    #[error("{op}: malformed {what} from rank {rank}: {reason}")]
    MalformedPeerData {
        /// The operation that received the message.
        op: &'static str,
        /// The message (e.g. `"sort samples"`).
        what: &'static str,
        /// The rank that sent it.
        rank: usize,
        /// What was wrong, with the byte offset.
        reason: String,
    },
    /// A collective step failed on another rank, so this rank stopped too
    /// (instead of waiting for it in the next collective): `rank` is the
    /// first rank that failed and `source` its error, rebuilt here
    /// ([`FrameError::Malformed`] and [`FrameError::DataMissing`] keep their
    /// fields, other errors come as [`FrameError::Remote`]).
    #[error("{op} failed on rank {rank}: {source}")]
    FailedOnRank {
        /// The operation.
        op: &'static str,
        /// The first rank that failed.
        rank: usize,
        /// Its error.
        #[source]
        source: Box<FrameError>,
    },
    /// An error another rank reported, as its message.
    #[error("{0}")]
    Remote(String),
    /// A communicator operation failed.
    #[error(transparent)]
    Comm(#[from] CommError),
    /// An Arrow kernel failed.
    #[error("{context}: {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// The Arrow error.
        #[source]
        source: ArrowError,
    },
    /// DataFusion failed.
    #[error("{context}: {source}")]
    DataFusion {
        /// What was being done.
        context: String,
        /// The DataFusion error.
        #[source]
        source: Box<DataFusionError>,
    },
    /// The Parquet reader or writer failed.
    #[error("{context}: {source}")]
    Parquet {
        /// What was being done.
        context: String,
        /// The Parquet error.
        #[source]
        source: ParquetError,
    },
    /// An operating-system I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A broken internal invariant (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// `Result` with [`FrameError`] as the default error.
pub type Result<T, E = FrameError> = std::result::Result<T, E>;

impl FrameError {
    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(op: &'static str, what: impl Into<String>) -> Self {
        Self::Unsupported {
            op,
            what: what.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// `true` when this error only reports that a peer rank failed: a lost
    /// or silent peer, or [`FrameError::FailedOnRank`] (whose source is the
    /// root cause).
    pub fn is_peer_failure(&self) -> bool {
        match self {
            Self::Comm(e) => e.is_peer_failure(),
            Self::FailedOnRank { .. } => true,
            _ => false,
        }
    }
}

/// `":N"` for a known line, nothing otherwise.
fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

impl deeprc_comm::local::AsPeerFailure for FrameError {
    fn is_peer_failure(&self) -> bool {
        FrameError::is_peer_failure(self)
    }
}

/// Adds context to Arrow, DataFusion, Parquet and I/O errors.
pub(crate) trait Context<T> {
    /// Wraps the error with `context`.
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, ArrowError> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| FrameError::Arrow {
            context: context.to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, DataFusionError> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| FrameError::DataFusion {
            context: context.to_string(),
            source: Box::new(source),
        })
    }
}

impl<T> Context<T> for std::result::Result<T, ParquetError> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| FrameError::Parquet {
            context: context.to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| FrameError::io(context, source))
    }
}
