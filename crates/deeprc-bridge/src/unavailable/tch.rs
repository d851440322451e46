//! PyTorch tensors through `tch`: not compiled in (build with the `tch`
//! feature). Every entry point returns [`BridgeError::NotCompiled`].

use crate::error::{BridgeError, Result};
use crate::loader::{Batch, BatchMemory};
use deeprc_core::Device;

/// A batch as tch tensors (needs the `tch` feature).
#[derive(Debug)]
pub struct TchBatch {
    _private: (),
}

impl<M: BatchMemory> Batch<M> {
    /// Needs the `tch` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn to_tch(self, device: Device) -> Result<TchBatch> {
        let _ = device;
        Err(BridgeError::NotCompiled { feature: "tch" })
    }
}

/// Needs the `tch` feature: always `false`.
pub fn cuda_available() -> bool {
    false
}
