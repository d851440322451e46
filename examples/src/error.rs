//! The error type of the pipelines.

use thiserror::Error;

/// What can stop a pipeline, with the component that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The Data Bridge (datasets, loaders, training).
    #[error(transparent)]
    Bridge(#[from] deeprc_bridge::BridgeError),
    /// The frame (reading, joins, group-bys).
    #[error(transparent)]
    Frame(#[from] deeprc_frame::FrameError),
    /// A communicator.
    #[error(transparent)]
    Comm(#[from] deeprc_comm::CommError),
    /// A model.
    #[cfg(feature = "tch")]
    #[error(transparent)]
    Model(#[from] deeprc_models::ModelError),
    /// libtorch.
    #[cfg(feature = "tch")]
    #[error("libtorch: {0}")]
    Torch(#[from] deeprc_bridge::tch::tch_crate::TchError),
    /// Writing outputs.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A plot that could not be drawn.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Settings that cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl deeprc_comm::local::AsPeerFailure for PipelineError {
    fn is_peer_failure(&self) -> bool {
        match self {
            PipelineError::Comm(e) => e.is_peer_failure(),
            PipelineError::Bridge(e) => deeprc_comm::local::AsPeerFailure::is_peer_failure(e),
            _ => false,
        }
    }
}

/// `Result` with [`PipelineError`].
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
