//! Distributed join: shuffle both sides by their keys, then join locally.

use crate::dist::shuffle::shuffle;
use crate::error::Result;
use crate::local::join::{check_join_keys, join as local_join, JoinOptions};
use crate::table::Table;
use deeprc_comm::Communicator;

/// Joins the distributed tables whose partitions are `left` and `right`
/// (every join type of [`crate::local::join`]): rows with equal keys meet on
/// one rank after the shuffle. The result stays distributed.
///
/// # Errors
/// As [`crate::local::join`], on every rank alike (schemas are the same on
/// every rank); communication errors.
pub fn join(comm: &dyn Communicator, left: &Table, right: &Table, options: &JoinOptions) -> Result<Table> {
    check_join_keys(left.schema(), right.schema(), options)?;
    if comm.size() == 1 {
        return local_join(left, right, options);
    }
    let lk: Vec<&str> = options.left_on.iter().map(String::as_str).collect();
    let rk: Vec<&str> = options.right_on.iter().map(String::as_str).collect();
    let l = shuffle(comm, left, &lk)?;
    let r = shuffle(comm, right, &rk)?;
    local_join(&l, &r, options)
}
