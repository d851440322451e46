//! Placeholder: the mpi backend's stub is written with the backend.
