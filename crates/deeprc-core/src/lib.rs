//! # deeprc-core
//!
//! The shared vocabulary of the Deep RC crates: the error type of this crate,
//! rank / task / partition ids, [`Resources`] (cores, GPUs, memory), [`Device`],
//! and the [`ProfileRecord`] (a named, time-stamped event) that the
//! communicator and the pilot runtime both write.
//!
//! It has no heavy dependencies: every other Deep RC crate builds on it.
//!
//! ```
//! use deeprc_core::{Resources, Device, Profiler};
//!
//! let r: Resources = "4c,1.5g,8GiB".parse().unwrap();
//! assert_eq!(r.cores, 4);
//! assert_eq!(r.gpus, 1.5);
//! assert_eq!(r.memory_bytes, 8 << 30);
//! assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
//!
//! let profiler = Profiler::new();
//! profiler.record("rank.0", "comm.create", Some(std::time::Duration::from_micros(40)));
//! assert_eq!(profiler.snapshot().len(), 1);
//! ```
#![forbid(unsafe_code)]

mod device;
mod error;
pub mod hostlist;
mod ids;
mod profile;
mod resources;
pub mod sync;

pub use device::Device;
pub use error::{CoreError, Result};
pub use ids::{PartitionId, Rank, TaskId};
pub use profile::{now_ns, ProfileRecord, Profiler};
pub use resources::Resources;
