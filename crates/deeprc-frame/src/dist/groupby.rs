//! Distributed group-by: local pre-aggregation of decomposable aggregates,
//! shuffle of the partial states by key, merge. Non-decomposable aggregates
//! (nunique, quantile) shuffle the needed columns of the raw rows instead.

use crate::dist::shuffle::{send_all_to, shuffle};
use crate::error::Result;
use crate::local::groupby::{
    check_group_by, group_by as local_group_by, merge_partials, partial_aggregate, Agg,
};
use crate::local::select::project;
use crate::table::Table;
use deeprc_comm::Communicator;

/// Groups the distributed table by `keys` and aggregates; each group ends on
/// one rank. With no keys the single result row is on rank 0 (the other
/// ranks hold an empty partition).
///
/// # Errors
/// As [`crate::local::group_by()`], on every rank alike.
pub fn group_by(
    comm: &dyn Communicator,
    table: &Table,
    keys: &[&str],
    aggs: &[Agg],
) -> Result<Table> {
    check_group_by(table.schema(), keys, aggs)?;
    if comm.size() == 1 {
        return local_group_by(table, keys, aggs);
    }
    if aggs.iter().all(|a| a.func.is_decomposable()) {
        let partial = partial_aggregate(table, keys, aggs)?;
        let moved = if keys.is_empty() {
            send_all_to(comm, &partial, 0)?
        } else {
            shuffle(comm, &partial, keys)?
        };
        if keys.is_empty() && comm.rank() != 0 {
            return empty_result(table, keys, aggs);
        }
        return merge_partials(&moved, keys, aggs);
    }
    // Only the columns the aggregation needs travel.
    let mut cols: Vec<&str> = keys.to_vec();
    for a in aggs {
        if !cols.contains(&a.column.as_str()) {
            cols.push(&a.column);
        }
    }
    let narrow = project(table, &cols)?;
    let moved = if keys.is_empty() {
        send_all_to(comm, &narrow, 0)?
    } else {
        shuffle(comm, &narrow, keys)?
    };
    if keys.is_empty() && comm.rank() != 0 {
        return empty_result(table, keys, aggs);
    }
    local_group_by(&moved, keys, aggs)
}

/// An empty partition with the result's schema.
fn empty_result(table: &Table, keys: &[&str], aggs: &[Agg]) -> Result<Table> {
    let empty = local_group_by(&table.head(0), keys, aggs)?;
    Ok(Table::empty(std::sync::Arc::clone(empty.schema())))
}
