//! Plain types of the `nccl` backend, shared by the real module and the
//! stub used when the feature is off (neither needs cudarc for them).

use crate::{CommConfig, Result};
use std::{fmt, time::Duration};

/// An NCCL library version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NcclVersion {
    /// Major version (2 for every NCCL in use).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level.
    pub patch: u32,
}

impl NcclVersion {
    /// Decodes `NCCL_VERSION_CODE` as returned by `ncclGetVersion`
    /// (`major*10000 + minor*100 + patch` since 2.9, `major*1000 +
    /// minor*100 + patch` before).
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

/// What [`probe`](crate::nccl::probe) found: the GPUs and libraries this process can use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The number of CUDA devices visible to this process (at least 1).
    pub device_count: usize,
    /// The CUDA driver's API version (`cuDriverGetVersion`, e.g. 12080).
    pub cuda_driver_version: i32,
    /// The NCCL library's version.
    pub nccl_version: NcclVersion,
}

/// Settings of an [`NcclComm`](crate::nccl::NcclComm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NcclOptions {
    /// How long one NCCL operation may take before the communicator is
    /// aborted and the call fails with [`CommError::Timeout`](crate::CommError::Timeout).
    pub timeout: Duration,
    /// How long `ncclCommInitRank` may take.
    pub connect_timeout: Duration,
    /// Whether the device collectives first check over the host
    /// communicator that every rank passed buffers of matching lengths (a
    /// few bytes through the host communicator per call). Without the
    /// check, mismatched lengths make NCCL read or write out of bounds of
    /// the smaller buffers, or hang. The host-bytes operations of
    /// [`Communicator`](crate::Communicator) always check.
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

    /// The timeouts of [`CommConfig::from_env`] (`DEEPRC_TIMEOUT_MS`,
    /// `DEEPRC_CONNECT_TIMEOUT_MS`), with the count check on.
    pub fn from_env() -> Result<Self> {
        Ok(Self::from_config(&CommConfig::from_env()?))
    }

    /// Turns the count check of the device collectives on or off.
    pub fn with_check_counts(mut self, on: bool) -> Self {
        self.check_counts = on;
        self
    }
}
