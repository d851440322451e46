//! Distributed operators: free functions over this rank's partition and a
//! [`Communicator`](deeprc_comm::Communicator); [`crate::DistTable`] wraps
//! them as methods.
//!
//! Every keyed operator goes through [`shuffle::shuffle`]; sort is a sample
//! sort; group-by pre-aggregates; scalar reductions use all-reduce. All
//! ranks must call the same operators in the same order (they are
//! collectives).

pub mod gather;
pub mod groupby;
pub mod join;
pub mod reduce;
pub mod setops;
pub mod shuffle;
pub mod sort;

pub use gather::{all_gather, broadcast, gather, repartition, slice};
pub use groupby::group_by;
pub use join::join;
pub use setops::{equals, equals_unordered, intersect, subtract, union, unique};
pub use shuffle::{exchange, shuffle};
pub use sort::sort;
