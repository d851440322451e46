//! The `nccl` backend was not compiled in (enable the cargo feature `nccl`
//! of deeprc-comm).
//!
//! The names of the real module exist so that code naming them compiles
//! everywhere; creating a communicator or probing answers
//! [`CommError::NotCompiled`](crate::CommError::NotCompiled). The device-buffer collectives, which take
//! cudarc types, exist only with the feature.

use crate::{Backend, CommConfig, Communicator, Result};
use std::{convert::Infallible, fmt, sync::Arc, time::Duration};

/// An NCCL library version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NcclVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level.
    pub patch: u32,
}

impl NcclVersion {
    /// Decodes `NCCL_VERSION_CODE` as returned by `ncclGetVersion`.
    pub fn from_code(code: u32) -> Self {
        if code >= 10_000 {
            Self {
                major: code / 10_000,
                minor: code / 100 % 100,
                patch: code % 100,
            }
        } else {
            Self {
                major: code / 1000,
                minor: code / 100 % 10,
                patch: code % 100,
            }
        }
    }
}

impl fmt::Display for NcclVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What `probe` finds with the feature on: the GPUs and libraries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The number of CUDA devices visible to this process.
    pub device_count: usize,
    /// The CUDA driver's API version.
    pub cuda_driver_version: i32,
    /// The NCCL library's version.
    pub nccl_version: NcclVersion,
}

/// Settings of an [`NcclComm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NcclOptions {
    /// How long one NCCL operation may take.
    pub timeout: Duration,
    /// How long `ncclCommInitRank` may take.
    pub connect_timeout: Duration,
    /// Whether the device collectives check buffer lengths across ranks.
    pub check_counts: bool,
}

impl Default for NcclOptions {
    fn default() -> Self {
        Self::from_config(&CommConfig::default())
    }
}

impl NcclOptions {
    /// The timeouts of `config`, with the count check on.
    pub fn from_config(config: &CommConfig) -> Self {
        Self {
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            check_counts: true,
        }
    }

    /// The timeouts of [`CommConfig::from_env`], with the count check on.
    pub fn from_env() -> Result<Self> {
        Ok(Self::from_config(&CommConfig::from_env()?))
    }

    /// Turns the count check of the device collectives on or off.
    pub fn with_check_counts(mut self, on: bool) -> Self {
        self.check_counts = on;
        self
    }
}

/// Always [`CommError::NotCompiled`](crate::CommError::NotCompiled): the `nccl` feature is off.
pub fn probe() -> Result<DeviceInfo> {
    Err(Backend::Nccl.not_compiled())
}

/// Always `false`: the `nccl` feature is off.
pub fn is_available() -> bool {
    false
}

/// A communicator of GPU ranks; without the `nccl` feature no value of this
/// type can exist.
#[derive(Debug)]
pub struct NcclComm {
    never: Infallible,
}

impl NcclComm {
    /// Always [`CommError::NotCompiled`](crate::CommError::NotCompiled): the `nccl` feature is off.
    pub fn from_host(host: Arc<dyn Communicator>, device: usize) -> Result<NcclComm> {
        let _ = (host, device);
        Err(Backend::Nccl.not_compiled())
    }

    /// Always [`CommError::NotCompiled`](crate::CommError::NotCompiled): the `nccl` feature is off.
    pub fn from_host_with(
        host: Arc<dyn Communicator>,
        device: usize,
        options: NcclOptions,
    ) -> Result<NcclComm> {
        let _ = (host, device, options);
        Err(Backend::Nccl.not_compiled())
    }

    /// The host communicator this one was created from.
    pub fn host(&self) -> &Arc<dyn Communicator> {
        match self.never {}
    }

    /// The CUDA device ordinal of this rank.
    pub fn device(&self) -> usize {
        match self.never {}
    }

    /// The settings of this communicator.
    pub fn options(&self) -> &NcclOptions {
        match self.never {}
    }

    /// Whether an earlier failure aborted the NCCL communicator.
    pub fn is_aborted(&self) -> bool {
        match self.never {}
    }
}

uninhabited_communicator!(NcclComm, Backend::Nccl);

#[cfg(all(test, feature = "local"))]
mod tests {
    use super::*;
    use crate::CommError;

    #[test]
    fn everything_answers_not_compiled() {
        assert!(!is_available());
        assert!(matches!(
            probe(),
            Err(CommError::NotCompiled {
                backend: Backend::Nccl,
                ..
            })
        ));
        let comms = crate::local::create(1, CommConfig::default()).unwrap();
        let host: Arc<dyn Communicator> = Arc::new(comms.into_iter().next().unwrap());
        assert!(matches!(
            NcclComm::from_host(host, 0),
            Err(CommError::NotCompiled {
                backend: Backend::Nccl,
                ..
            })
        ));
        assert_eq!(NcclVersion::from_code(22_304).to_string(), "2.23.4");
    }
}
