//! The `mpi` backend was not compiled in: enable the cargo feature `mpi` of
//! deeprc-comm (it needs an MPI library, OpenMPI or MPICH, and libclang).
//!
//! The names exist so that code naming them compiles everywhere; every
//! constructor returns [`CommError::NotCompiled`](crate::CommError::NotCompiled).
//!
//! ```
//! use deeprc_comm::{mpi::MpiComm, Backend, CommError};
//! if !Backend::Mpi.is_compiled() {
//!     assert!(matches!(MpiComm::world(), Err(CommError::NotCompiled { .. })));
//! }
//! ```

use crate::{Backend, Result};
use std::convert::Infallible;

/// The default chunk size of the real backend: 1 GiB.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 30;

/// A communicator whose ranks are MPI processes (not compiled in: no value
/// of this type can exist).
#[derive(Debug)]
pub struct MpiComm {
    never: Infallible,
}

impl MpiComm {
    /// Returns [`CommError::NotCompiled`](crate::CommError::NotCompiled):
    /// the `mpi` feature is off.
    pub fn world() -> Result<MpiComm> {
        Err(Backend::Mpi.not_compiled())
    }

    /// An independent communicator over the same ranks (unreachable here).
    pub fn duplicate(&self) -> Result<MpiComm> {
        match self.never {}
    }

    /// Whether Deep RC initialised MPI (unreachable here).
    pub fn owns_mpi(&self) -> bool {
        match self.never {}
    }

    /// The largest number of bytes one MPI call moves (unreachable here).
    pub fn chunk_bytes(&self) -> usize {
        match self.never {}
    }

    /// Sets the chunk size (unreachable here).
    pub fn with_chunk_bytes(self, bytes: usize) -> Result<MpiComm> {
        let _ = bytes;
        match self.never {}
    }

    /// Aborts every rank of the job (unreachable here).
    pub fn abort(&self, code: i32) -> ! {
        let _ = code;
        match self.never {}
    }
}

uninhabited_communicator!(MpiComm, Backend::Mpi);
