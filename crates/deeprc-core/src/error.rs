//! The error type of `deeprc-core`.

/// Errors raised by the shared vocabulary types: parsing resources, devices
/// and ids, and writing profiles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A textual value (resource spec, device name, id) could not be parsed.
    #[error("cannot parse {what} from {input:?}: {reason}")]
    Parse {
        /// What was being parsed, e.g. `"device"`.
        what: &'static str,
        /// The offending input.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Writing or reading a profile failed.
    #[error("profile I/O on {path}: {source}")]
    ProfileIo {
        /// The file that was being written.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl CoreError {
    pub(crate) fn parse(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        Self::Parse {
            what,
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

/// `Result` with [`CoreError`] as the default error.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
