//! Placeholder: the mpi backend.
