//! Distributed unique, union, intersect, subtract and equality: shuffle by
//! the compared columns so that equal rows meet, then the local operator.

use crate::dist::gather::{repartition, row_counts};
use crate::dist::shuffle::shuffle;
use crate::error::Result;
use crate::local::{self, unique::subset_indices, UniqueOptions};
use crate::table::{check_same_columns, first_difference, Table};
use deeprc_comm::{Communicator, CommunicatorExt, ReduceOp};

fn all_columns(t: &Table) -> Vec<String> {
    t.column_names()
}

fn shuffle_all(comm: &dyn Communicator, t: &Table) -> Result<Table> {
    let cols = all_columns(t);
    let refs: Vec<&str> = cols.iter().map(String::as_str).collect();
    shuffle(comm, t, &refs)
}

/// Drops duplicate rows across all ranks; the kept occurrence is the first
/// (or last) in the global order of rows.
pub fn unique(comm: &dyn Communicator, table: &Table, options: &UniqueOptions) -> Result<Table> {
    let idx = subset_indices(table, options)?;
    if comm.size() == 1 {
        return local::unique(table, options);
    }
    let names: Vec<String> = idx
        .iter()
        .map(|&i| table.schema().field(i).name().clone())
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    if refs.is_empty() {
        return local::unique(&crate::dist::gather::slice(comm, table, 0, 1)?, options);
    }
    let moved = shuffle(comm, table, &refs)?;
    local::unique(&moved, options)
}

/// Distinct rows of either table.
pub fn union(comm: &dyn Communicator, a: &Table, b: &Table) -> Result<Table> {
    check_same_columns("union", a.schema(), b.schema())?;
    if comm.size() == 1 {
        return local::union(a, b);
    }
    local::union(&shuffle_all(comm, a)?, &shuffle_all(comm, b)?)
}

/// Distinct rows of `a` also in `b`.
pub fn intersect(comm: &dyn Communicator, a: &Table, b: &Table) -> Result<Table> {
    check_same_columns("intersect", a.schema(), b.schema())?;
    if comm.size() == 1 {
        return local::intersect(a, b);
    }
    local::intersect(&shuffle_all(comm, a)?, &shuffle_all(comm, b)?)
}

/// Distinct rows of `a` not in `b`.
pub fn subtract(comm: &dyn Communicator, a: &Table, b: &Table) -> Result<Table> {
    check_same_columns("subtract", a.schema(), b.schema())?;
    if comm.size() == 1 {
        return local::subtract(a, b);
    }
    local::subtract(&shuffle_all(comm, a)?, &shuffle_all(comm, b)?)
}

fn all_ranks_agree(comm: &dyn Communicator, local_ok: bool) -> Result<bool> {
    Ok(comm.all_reduce_scalar(u8::from(local_ok), ReduceOp::Min)? == 1)
}

/// `true` on every rank when both distributed tables have the same rows in
/// the same global order.
pub fn equals(comm: &dyn Communicator, a: &Table, b: &Table) -> Result<bool> {
    if first_difference(a.schema(), b.schema()).is_some() {
        return Ok(false);
    }
    let (ca, cb) = (row_counts(comm, a)?, row_counts(comm, b)?);
    if ca.iter().sum::<u64>() != cb.iter().sum::<u64>() {
        return Ok(false);
    }
    let b2 = if ca == cb {
        b.clone()
    } else {
        repartition(comm, b, Some(&ca))?
    };
    all_ranks_agree(comm, local::equals(a, &b2)?)
}

/// `true` on every rank when both distributed tables have the same multiset
/// of rows.
pub fn equals_unordered(comm: &dyn Communicator, a: &Table, b: &Table) -> Result<bool> {
    if first_difference(a.schema(), b.schema()).is_some() {
        return Ok(false);
    }
    if comm.size() == 1 {
        return local::equals_unordered(a, b);
    }
    let ok = local::equals_unordered(&shuffle_all(comm, a)?, &shuffle_all(comm, b)?)?;
    all_ranks_agree(comm, ok)
}
