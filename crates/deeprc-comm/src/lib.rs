//! # deeprc-comm
//!
//! One [`Communicator`] trait over every way Deep RC ranks talk: threads of
//! one process ([`local`], default), processes over TCP ([`tcp`], default),
//! MPI (`mpi`), Gloo (`gloo`) and NCCL (`nccl`).
//!
//! The trait is object safe and byte-oriented (point-to-point, barrier,
//! broadcast, gather, all-gather, variable all-to-all, all-reduce, split);
//! typed helpers are in [`CommunicatorExt`]. Every blocking call fails within
//! the configured timeout ([`CommConfig`]) when a peer dies or hangs, on
//! every backend (MPI included).
//!
//! ```
//! use deeprc_comm::{local, Communicator, CommunicatorExt, ReduceOp};
//!
//! let out = local::launch(4, |comm| {
//!     // Two sub-communicators: even and odd ranks.
//!     let sub = comm.split(Some((comm.rank() % 2) as u32), 0)?.unwrap();
//!     sub.all_reduce_scalar(comm.rank() as u64, ReduceOp::Sum)
//! })
//! .unwrap();
//! assert_eq!(out, vec![2, 4, 2, 4]);
//! ```
//!
//! # Feature flags
//! - `local` (default): ranks as threads, zero-copy hand-over.
//! - `tcp` (default): ranks as processes, rendezvous through a store named in
//!   `DEEPRC_STORE`, authenticated with `DEEPRC_TOKEN`; under srun, torchrun
//!   or mpirun the place of each rank comes from the launcher ([`launcher`]).
//! - `ucx`: ranks over UCX (Debian's `libucx-dev`), the same rendezvous.
//!
//! A backend that was not compiled in still exists in [`Backend`] and answers
//! [`CommError::NotCompiled`].

// Without the local and tcp backends the shared collective machinery is unused.
#![cfg_attr(not(any(feature = "local", feature = "tcp")), allow(dead_code))]

mod communicator;
mod config;
pub mod conformance;
mod error;
mod group;
mod init;
pub mod launcher;
#[macro_use]
mod macros;
mod mailbox;
mod nccl_types;
mod pool;
mod reduce;

#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "tcp")]
pub mod tcp;

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(not(feature = "mpi"))]
#[path = "unavailable/mpi.rs"]
pub mod mpi;

#[cfg(feature = "gloo")]
pub mod gloo;
#[cfg(not(feature = "gloo"))]
#[path = "unavailable/gloo.rs"]
pub mod gloo;

#[cfg(feature = "ucx")]
pub mod ucx;
#[cfg(not(feature = "ucx"))]
#[path = "unavailable/ucx.rs"]
pub mod ucx;

#[cfg(feature = "nccl")]
pub mod nccl;
#[cfg(not(feature = "nccl"))]
#[path = "unavailable/nccl.rs"]
pub mod nccl;

pub use communicator::{
    pod_vec, AnyBox, Backend, CommOp, Communicator, CommunicatorExt, DType, ReduceOp, Reducible,
    Tag,
};
pub use config::CommConfig;
pub use error::{CommError, Result};
pub use init::{backend_from_env, from_env, launched_by_mpi};
