//! Gather to a root, all-gather, broadcast, repartition (even or given row
//! counts, keeping the global order) and global slices.

use crate::dist::shuffle::{exchange, send_all_to};
use crate::error::{FrameError, Result};
use crate::ipc;
use crate::local;
use crate::table::Table;
use datafusion::arrow::array::RecordBatch;
use deeprc_comm::{Communicator, CommunicatorExt};
use std::sync::Arc;

fn check_root(comm: &dyn Communicator, root: usize) -> Result<()> {
    if root >= comm.size() {
        return Err(FrameError::invalid(
            "gather",
            format!("root {root} is not a rank of a group of {}", comm.size()),
        ));
    }
    Ok(())
}

/// Every rank's rows on `root`, in rank order; `None` on the other ranks.
pub fn gather(comm: &dyn Communicator, table: &Table, root: usize) -> Result<Option<Table>> {
    check_root(comm, root)?;
    let t = send_all_to(comm, table, root)?;
    Ok((comm.rank() == root).then_some(t))
}

/// Every rank's rows on every rank, in rank order.
pub fn all_gather(comm: &dyn Communicator, table: &Table) -> Result<Table> {
    let n = comm.size();
    if n == 1 {
        return Ok(table.clone());
    }
    let mine: Vec<RecordBatch> = table.non_empty_batches().cloned().collect();
    let batches = if comm.supports_objects() {
        exchange(comm, table.schema(), vec![mine; n])?
    } else {
        let got = comm.all_gather(ipc::encode_batches(table.schema(), &mine)?)?;
        let mut out = Vec::new();
        for (j, bytes) in got.into_iter().enumerate() {
            if j == comm.rank() {
                out.extend(mine.iter().cloned());
            } else {
                out.extend(ipc::decode_batches_from(bytes, "all_gather", j)?.1);
            }
        }
        out
    };
    Table::try_new(Arc::clone(table.schema()), batches)
}

/// `root`'s table on every rank (the other ranks' `table` gives only the
/// schema, which all ranks share).
pub fn broadcast(comm: &dyn Communicator, table: &Table, root: usize) -> Result<Table> {
    check_root(comm, root)?;
    let n = comm.size();
    if n == 1 {
        return Ok(table.clone());
    }
    if comm.supports_objects() {
        let parts = if comm.rank() == root {
            vec![table.non_empty_batches().cloned().collect::<Vec<_>>(); n]
        } else {
            vec![Vec::new(); n]
        };
        return Table::try_new(
            Arc::clone(table.schema()),
            exchange(comm, table.schema(), parts)?,
        );
    }
    let payload = if comm.rank() == root {
        ipc::encode(table)?
    } else {
        bytes::Bytes::new()
    };
    let got = comm.broadcast(root, payload)?;
    if comm.rank() == root {
        return Ok(table.clone());
    }
    let (_, batches) = ipc::decode_batches_from(got, "broadcast", root)?;
    Table::try_new(Arc::clone(table.schema()), batches)
}

/// The number of rows of every rank.
///
/// # Errors
/// [`FrameError::MalformedPeerData`] when a rank sends something other than
/// one count, or counts whose total overflows `u64`; communication errors.
pub fn row_counts(comm: &dyn Communicator, table: &Table) -> Result<Vec<u64>> {
    decode_row_counts(comm.all_gather_pod(&[table.num_rows() as u64])?)
}

/// Checks the counts every rank sent: exactly one each, with a total that
/// fits in `u64` (callers add them up).
pub(crate) fn decode_row_counts(parts: Vec<Vec<u64>>) -> Result<Vec<u64>> {
    let mut total = 0u64;
    let mut out = Vec::with_capacity(parts.len());
    for (rank, p) in parts.into_iter().enumerate() {
        let malformed = |reason: String| FrameError::MalformedPeerData {
            op: "row_counts",
            what: "row count",
            rank,
            reason,
        };
        let [c] = p[..] else {
            return Err(malformed(format!("{} values instead of one", p.len())));
        };
        total = total
            .checked_add(c)
            .ok_or_else(|| malformed(format!("{c} rows make the total overflow u64")))?;
        out.push(c);
    }
    Ok(out)
}

/// Moves rows so that rank `r` holds `counts[r]` rows (an even split when
/// `counts` is `None`), keeping the global order of rows.
///
/// # Errors
/// [`FrameError::InvalidArgument`] when `counts` has the wrong length or
/// does not add up to the global number of rows.
pub fn repartition(
    comm: &dyn Communicator,
    table: &Table,
    counts: Option<&[u64]>,
) -> Result<Table> {
    let n = comm.size();
    let have = row_counts(comm, table)?;
    let total: u64 = have.iter().sum();
    let want: Vec<u64> = match counts {
        Some(c) => {
            let sum = c.iter().try_fold(0u64, |a, &x| a.checked_add(x));
            if c.len() != n || sum != Some(total) {
                return Err(FrameError::invalid(
                    "repartition",
                    format!(
                        "counts {c:?} must have {n} entries adding up to the {total} rows of the table"
                    ),
                ));
            }
            c.to_vec()
        }
        None => (0..n as u64)
            .map(|r| total / n as u64 + u64::from(r < total % n as u64))
            .collect(),
    };
    if n == 1 {
        return Ok(table.clone());
    }
    let me = comm.rank();
    let my_start: u64 = have[..me].iter().sum();
    let my_end = my_start + have[me];
    let mut parts = vec![Vec::new(); n];
    let mut t_start = 0u64;
    let compact = table.compact()?;
    for (j, &w) in want.iter().enumerate() {
        let t_end = t_start + w;
        let lo = t_start.max(my_start);
        let hi = t_end.min(my_end);
        if lo < hi {
            let s = local::slice(&compact, (lo - my_start) as usize, (hi - lo) as usize);
            parts[j] = s.into_batches();
        }
        t_start = t_end;
    }
    let got = exchange(comm, table.schema(), parts)?;
    Table::try_new(Arc::clone(table.schema()), got)
}

/// This rank's part of the global rows `offset..offset + len`.
pub fn slice(comm: &dyn Communicator, table: &Table, offset: u64, len: u64) -> Result<Table> {
    let have = row_counts(comm, table)?;
    let me = comm.rank();
    let my_start: u64 = have[..me].iter().sum();
    let my_end = my_start + have[me];
    let lo = offset.max(my_start);
    let hi = offset.saturating_add(len).min(my_end);
    if lo >= hi {
        return Ok(Table::empty(Arc::clone(table.schema())));
    }
    Ok(local::slice(
        table,
        (lo - my_start) as usize,
        (hi - lo) as usize,
    ))
}

/// The global number of rows.
pub fn num_rows(comm: &dyn Communicator, table: &Table) -> Result<u64> {
    Ok(comm.all_reduce_scalar(table.num_rows() as u64, deeprc_comm::ReduceOp::Sum)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_row_counts_are_typed_errors() {
        assert_eq!(
            decode_row_counts(vec![vec![3], vec![0], vec![5]]).unwrap(),
            vec![3, 0, 5]
        );
        for (parts, bad_rank) in [
            (vec![vec![3], vec![]], 1),
            (vec![vec![3, 4], vec![1]], 0),
            (vec![vec![1], vec![2], vec![u64::MAX]], 2),
        ] {
            match decode_row_counts(parts) {
                Err(FrameError::MalformedPeerData { rank, what, .. }) => {
                    assert_eq!((rank, what), (bad_rank, "row count"))
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
