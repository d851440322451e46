//! Settings shared by the backends, with their environment variables.

use crate::{CommError, Result};
use std::time::Duration;

/// Limits and timeouts of a communicator.
///
/// | field | variable | default |
/// |---|---|---|
/// | `timeout` | `DEEPRC_TIMEOUT_MS` | 30 s |
/// | `connect_timeout` | `DEEPRC_CONNECT_TIMEOUT_MS` | 30 s |
/// | `max_frame_bytes` | `DEEPRC_MAX_FRAME_BYTES` | 4 GiB |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommConfig {
    /// How long any blocking operation waits for a peer before failing with
    /// [`CommError::Timeout`].
    pub timeout: Duration,
    /// How long creating a communicator waits for all ranks to appear.
    pub connect_timeout: Duration,
    /// The largest message a process backend accepts from the network.
    pub max_frame_bytes: u64,
}

impl Default for CommConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            max_frame_bytes: 4 << 30,
        }
    }
}

impl CommConfig {
    /// The defaults, overridden by the `DEEPRC_*` variables that are set.
    pub fn from_env() -> Result<Self> {
        let mut c = Self::default();
        if let Some(ms) = env_parse::<u64>("DEEPRC_TIMEOUT_MS")? {
            c.timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = env_parse::<u64>("DEEPRC_CONNECT_TIMEOUT_MS")? {
            c.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(b) = env_parse::<u64>("DEEPRC_MAX_FRAME_BYTES")? {
            c.max_frame_bytes = b;
        }
        Ok(c)
    }

    /// Sets the operation timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sets the frame size limit.
    pub fn with_max_frame_bytes(mut self, b: u64) -> Self {
        self.max_frame_bytes = b;
        self
    }
}

/// Reads and parses an environment variable; `None` when unset.
pub(crate) fn env_parse<T: std::str::FromStr>(name: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| CommError::config(name, format!("cannot parse {v:?}: {e}"))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(CommError::config(name, e.to_string())),
    }
}
