//! Choosing a process backend from the environment.

use crate::{Backend, CommError, Communicator, Result};
use std::sync::Arc;

/// Variables that MPI launchers (mpirun, mpiexec, srun) set in each rank.
const MPI_LAUNCHER_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_RANK",
    "MPI_LOCALNRANKS",
];

/// Whether this process looks like a rank started by an MPI launcher.
pub fn launched_by_mpi() -> bool {
    MPI_LAUNCHER_VARS
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// The backend `from_env` would use: `DEEPRC_BACKEND` if set, else `mpi`
/// under an MPI launcher when compiled in, else `tcp`.
pub fn backend_from_env() -> Result<Backend> {
    match std::env::var("DEEPRC_BACKEND") {
        Ok(b) => b.parse(),
        Err(_) if launched_by_mpi() && Backend::Mpi.is_compiled() => Ok(Backend::Mpi),
        Err(_) => Ok(Backend::Tcp),
    }
}

/// Creates the communicator of a process rank from its environment, with
/// the backend of [`backend_from_env`].
///
/// ```no_run
/// // In each of N processes started by mpirun, by deeprc-pilot, or by hand
/// // with DEEPRC_RANK / DEEPRC_WORLD_SIZE / DEEPRC_STORE / DEEPRC_TOKEN:
/// let comm = deeprc_comm::from_env()?;
/// println!("rank {} of {} on {}", comm.rank(), comm.size(), comm.backend());
/// # Ok::<(), deeprc_comm::CommError>(())
/// ```
pub fn from_env() -> Result<Arc<dyn Communicator>> {
    match backend_from_env()? {
        #[cfg(feature = "tcp")]
        Backend::Tcp => Ok(Arc::new(crate::tcp::TcpComm::from_env()?)),
        Backend::Mpi => Ok(Arc::new(crate::mpi::MpiComm::world()?)),
        Backend::Gloo => Ok(Arc::new(crate::gloo::GlooComm::from_env()?)),
        Backend::Ucx => Ok(Arc::new(crate::ucx::UcxComm::from_env()?)),
        Backend::Local => Err(CommError::config(
            "DEEPRC_BACKEND",
            "local ranks are threads: create them with deeprc_comm::local::launch",
        )),
        Backend::Nccl => Err(CommError::config(
            "DEEPRC_BACKEND",
            "an NCCL communicator is made from a host communicator: nccl::NcclComm::from_host",
        )),
        // Reached only by tcp when it is not compiled in.
        #[allow(unreachable_patterns)]
        other => Err(other.not_compiled()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_nccl_are_not_process_backends() {
        // Only this test sets DEEPRC_BACKEND in this process.
        std::env::set_var("DEEPRC_BACKEND", "local");
        assert!(matches!(from_env(), Err(CommError::Config { .. })));
        std::env::set_var("DEEPRC_BACKEND", "ucx");
        if !cfg!(feature = "ucx") {
            assert!(matches!(from_env(), Err(CommError::NotCompiled { .. })));
        }
        std::env::set_var("DEEPRC_BACKEND", "carrier-pigeon");
        assert!(matches!(from_env(), Err(CommError::Config { .. })));
        std::env::remove_var("DEEPRC_BACKEND");
    }
}
