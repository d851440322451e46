//! The error type of deeprc-models.

use thiserror::Error;

/// What can go wrong building, running or checkpointing a model.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// No model of this name.
    #[error("unknown model {name:?}; the models are: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A configuration that cannot build the model.
    #[error("model {model}: invalid configuration: {reason}")]
    InvalidConfig {
        /// The model.
        model: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Input of the wrong shape.
    #[error("model {model}: expected input {expected}, got {got:?}")]
    Shape {
        /// The model.
        model: &'static str,
        /// The shape expected, in words.
        expected: String,
        /// The shape given.
        got: Vec<i64>,
    },
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// The result type of deeprc-models.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
