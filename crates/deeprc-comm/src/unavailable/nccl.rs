//! The `nccl` backend was not compiled in (enable the cargo feature `nccl`
//! of deeprc-comm).
//!
//! The names of the real module exist so that code naming them compiles
//! everywhere; creating a communicator or probing answers
//! [`CommError::NotCompiled`](crate::CommError::NotCompiled). The device-buffer collectives, which take
//! cudarc types, exist only with the feature.

use crate::{Backend, CommOp, Communicator, DType, ReduceOp, Result};
use std::{convert::Infallible, sync::Arc};

pub use crate::nccl_types::{DeviceInfo, NcclOptions, NcclRoute, NcclVersion};

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

    /// The operations of this communicator's [`Communicator`]
    /// implementation that do **not** run on NCCL: they are delegated to
    /// the host communicator ([`NcclRoute::Host`]) even though
    /// [`Communicator::backend`] says [`Backend::Nccl`]. They are `send`,
    /// `recv`, `barrier`, `gather`, `all_to_all_v` and `split`.
    pub fn host_fallback_ops() -> &'static [CommOp] {
        &crate::nccl_types::HOST_FALLBACK_OPS
    }

    /// The operations that go through NCCL: `broadcast`, `all_gather` and
    /// `all_reduce` (see [`NcclComm::all_reduce_route`] for float sums).
    pub fn nccl_ops() -> &'static [CommOp] {
        &crate::nccl_types::NCCL_OPS
    }

    /// Where `op` runs on this backend.
    pub fn route(op: CommOp) -> NcclRoute {
        crate::nccl_types::route(op)
    }

    /// Where an all-reduce of `dtype` with `op` runs: float sums and
    /// products are all-gathered by NCCL and reduced on the host.
    pub fn all_reduce_route(dtype: DType, op: ReduceOp) -> NcclRoute {
        crate::nccl_types::all_reduce_route(dtype, op)
    }

    /// The backend with its host fallback, e.g. `nccl+tcp`.
    pub fn backend_name(&self) -> String {
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
        let comms = crate::local::create(1, crate::CommConfig::default()).unwrap();
        let host: Arc<dyn Communicator> = Arc::new(comms.into_iter().next().unwrap());
        assert!(matches!(
            NcclComm::from_host(host, 0),
            Err(CommError::NotCompiled {
                backend: Backend::Nccl,
                ..
            })
        ));
        assert_eq!(NcclVersion::from_code(22_304).to_string(), "2.23.4");
        // The reporting of the host fallback exists without the feature too.
        assert!(NcclComm::host_fallback_ops().contains(&CommOp::Barrier));
        assert_eq!(NcclComm::route(CommOp::Send), NcclRoute::Host);
        assert_eq!(NcclComm::route(CommOp::AllGather), NcclRoute::Nccl);
    }
}
