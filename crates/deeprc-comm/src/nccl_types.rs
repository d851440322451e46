//! Plain types of the `nccl` backend, shared by the real module and the
//! stub used when the feature is off (neither needs cudarc for them).

use crate::{Backend, CommConfig, CommOp, DType, ReduceOp, Result};
use std::{fmt, time::Duration};

/// Where an operation of [`NcclComm`](crate::nccl::NcclComm)'s
/// [`Communicator`](crate::Communicator) implementation runs.
/// [`Communicator::backend`](crate::Communicator::backend) says `Nccl` for
/// all of them; this says which really go through NCCL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NcclRoute {
    /// NCCL moves the bytes on the GPU (host bytes staged through device
    /// memory); lengths are agreed over the host communicator first.
    Nccl,
    /// NCCL all-gathers on the GPU and the host reduces in rank order
    /// (float sums and products, so that the bits equal every other
    /// backend's).
    NcclGatherHostReduce,
    /// The host fallback: the operation is delegated to the host
    /// communicator the NCCL one was made from (tcp, mpi, local...) and
    /// never touches the GPU or NCCL.
    Host,
    /// Not supported: the call returns an error.
    Unsupported,
}

/// The operations that the `nccl` backend delegates to its host
/// communicator: point-to-point messages, barrier, gather, all-to-all and
/// split (they move host bytes of sizes the receiver does not know, which
/// NCCL cannot).
pub(crate) const HOST_FALLBACK_OPS: [CommOp; 6] = [
    CommOp::Send,
    CommOp::Recv,
    CommOp::Barrier,
    CommOp::Gather,
    CommOp::AllToAllV,
    CommOp::Split,
];

/// The operations that go through NCCL.
pub(crate) const NCCL_OPS: [CommOp; 3] = [CommOp::Broadcast, CommOp::AllGather, CommOp::AllReduce];

/// Where `op` runs on the `nccl` backend (for [`CommOp::AllReduce`], the
/// route of integer and min/max reductions: see [`all_reduce_route`]).
pub(crate) fn route(op: CommOp) -> NcclRoute {
    if HOST_FALLBACK_OPS.contains(&op) {
        NcclRoute::Host
    } else if NCCL_OPS.contains(&op) {
        NcclRoute::Nccl
    } else {
        NcclRoute::Unsupported
    }
}

/// Where an all-reduce of `dtype` with `op` runs on the `nccl` backend.
pub(crate) fn all_reduce_route(dtype: DType, op: ReduceOp) -> NcclRoute {
    match (dtype, op) {
        (DType::F32 | DType::F64, ReduceOp::Sum | ReduceOp::Prod) => {
            NcclRoute::NcclGatherHostReduce
        }
        _ => NcclRoute::Nccl,
    }
}

/// The name of an NCCL communicator over a `host` one, e.g. `nccl+tcp`.
#[cfg_attr(not(feature = "nccl"), allow(dead_code))]
pub(crate) fn backend_label(host: Backend) -> String {
    format!("{}+{}", Backend::Nccl, host)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_one_route() {
        for op in CommOp::ALL {
            let fallback = HOST_FALLBACK_OPS.contains(&op);
            let nccl = NCCL_OPS.contains(&op);
            assert!(!(fallback && nccl), "{op}");
            let want = match (fallback, nccl) {
                (true, _) => NcclRoute::Host,
                (_, true) => NcclRoute::Nccl,
                _ => NcclRoute::Unsupported,
            };
            assert_eq!(route(op), want, "{op}");
        }
        assert_eq!(route(CommOp::AllToAllObjects), NcclRoute::Unsupported);
        assert_eq!(
            all_reduce_route(DType::F32, ReduceOp::Sum),
            NcclRoute::NcclGatherHostReduce
        );
        assert_eq!(all_reduce_route(DType::F64, ReduceOp::Max), NcclRoute::Nccl);
        assert_eq!(all_reduce_route(DType::I16, ReduceOp::Sum), NcclRoute::Nccl);
        assert_eq!(backend_label(Backend::Tcp), "nccl+tcp");
        assert_eq!(backend_label(Backend::Mpi), "nccl+mpi");
    }
}
