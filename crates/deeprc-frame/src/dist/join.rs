//! Distributed join: shuffle both sides by their keys, then join locally.
//!
//! The shuffle splits each rank's share into cache-sized buckets (by other
//! bits of the same key hash) and the local join runs bucket by bucket, so
//! its hash table and the columns it gathers from stay in cache: the one
//! partitioning pass the shuffle makes anyway replaces random memory
//! accesses in the join.

use crate::dist::shuffle::{agree_buckets, bucket_exchange, hash_buckets};
use crate::dist::DistOptions;
use crate::error::Result;
use crate::local::join::{check_join_keys, join as local_join, join_schema, JoinOptions};
use crate::table::Table;
use deeprc_comm::Communicator;
use std::sync::Arc;

/// Joins the distributed tables whose partitions are `left` and `right`
/// (every join type of [`crate::local::join()`]): rows with equal keys meet on
/// one rank after the shuffle. The result stays distributed; its row order
/// is unspecified.
///
/// # Errors
/// As [`crate::local::join()`], on every rank alike (schemas are the same on
/// every rank); communication errors.
pub fn join(
    comm: &dyn Communicator,
    left: &Table,
    right: &Table,
    options: &JoinOptions,
) -> Result<Table> {
    join_with(comm, left, right, options, &DistOptions::default())
}

/// [`join()`] with the tuning knobs `dist` (the bucket size), which every
/// rank must pass alike.
///
/// # Errors
/// As [`join()`]; [`crate::FrameError::InvalidArgument`] on every rank when
/// the ranks pass different `dist`.
pub fn join_with(
    comm: &dyn Communicator,
    left: &Table,
    right: &Table,
    options: &JoinOptions,
    dist: &DistOptions,
) -> Result<Table> {
    let keys = check_join_keys(left.schema(), right.schema(), options)?;
    let n = comm.size();
    let most = left.num_rows().max(right.num_rows());
    let per_rank = agree_buckets(comm, "join", most, dist)?;
    if n == 1 && per_rank == 1 {
        return local_join(left, right, options);
    }
    let lb = bucket_exchange(comm, left, per_rank, |b| {
        hash_buckets(b, &keys.left, n, per_rank)
    })?;
    let rb = bucket_exchange(comm, right, per_rank, |b| {
        hash_buckets(b, &keys.right, n, per_rank)
    })?;
    let schema = join_schema(left.schema(), right.schema(), options);
    let mut out = Vec::new();
    for (l, r) in lb.into_iter().zip(rb) {
        if l.is_empty() && r.is_empty() {
            continue;
        }
        let lt = Table::try_new(Arc::clone(left.schema()), l)?;
        let rt = Table::try_new(Arc::clone(right.schema()), r)?;
        let j = local_join(&lt, &rt, options)?;
        out.extend(j.into_batches().into_iter().filter(|b| b.num_rows() > 0));
    }
    Table::try_new(schema, out)
}
