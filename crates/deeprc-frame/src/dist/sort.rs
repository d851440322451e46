//! Distributed sample sort: afterwards rank `r` holds keys `<=` those of
//! rank `r + 1`, each partition sorted.
//!
//! ```text
//!  1. every rank samples up to 256 of its keys; all-gather the samples
//!  2. sort them, pick size-1 splitters at even quantiles
//!  3. each row goes to the rank its key falls in; rows equal to splitters
//!     are spread over the ranks those splitters bound (so one key holding
//!     most rows does not land on one rank)
//!  4. exchange, then sort locally
//! ```
//!
//! One integer-like or float key uses `u64` order codes (and the radix sort
//! locally), nulls going to the first or the last rank; other keys use the
//! Arrow row format, whose bytes compare in sort order.

use crate::dist::shuffle::{exchange, split_by_dest};
use crate::error::{Context, Result};
use crate::local::sort::{check_keys, codes_supported, order_codes, sort as local_sort, SortKey};
use crate::table::{column_index, Table};
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::row::{RowConverter, SortField};
use deeprc_comm::{Communicator, CommunicatorExt};
use std::sync::Arc;

const SAMPLES_PER_RANK: usize = 256;

/// Sorts the distributed table by `keys` across all ranks.
///
/// # Errors
/// As [`crate::local::sort`], on every rank alike; communication errors.
pub fn sort(comm: &dyn Communicator, table: &Table, keys: &[SortKey]) -> Result<Table> {
    check_keys(table, keys)?;
    let n = comm.size();
    if n == 1 {
        return local_sort(table, keys);
    }
    let batch = table.to_batch()?;
    let cols: Vec<ArrayRef> = keys
        .iter()
        .map(|k| column_index(table.schema(), &k.column).map(|i| Arc::clone(batch.column(i))))
        .collect::<Result<_>>()?;
    let fast = keys.len() == 1 && codes_supported(cols[0].data_type());
    let dest = if fast {
        dest_by_codes(comm, &cols[0], &keys[0])?
    } else {
        dest_by_rows(comm, &cols, keys)?
    };
    let parts: Vec<Vec<RecordBatch>> = if batch.num_rows() == 0 {
        vec![Vec::new(); n]
    } else {
        split_by_dest(&batch, &dest, n)?
            .into_iter()
            .map(|p| if p.num_rows() > 0 { vec![p] } else { Vec::new() })
            .collect()
    };
    let got = exchange(comm, table.schema(), parts)?;
    local_sort(&Table::try_new(Arc::clone(table.schema()), got)?, keys)
}

/// Evenly spaced sample positions of `len` rows.
fn sample_positions(len: usize) -> impl Iterator<Item = usize> {
    let s = len.min(SAMPLES_PER_RANK);
    (0..s).map(move |i| (2 * i + 1) * len / (2 * s))
}

/// Splitter ranks for a key: `lo` = splitters strictly below, `hi` =
/// splitters at or below; the row may go to any rank in `lo..=hi`.
#[inline]
fn choose(lo: usize, hi: usize, i: usize, rank: usize) -> u32 {
    if lo == hi {
        lo as u32
    } else {
        (lo + (i + rank) % (hi - lo + 1)) as u32
    }
}

fn splitters<T: Ord + Clone>(mut all: Vec<T>, n: usize) -> Vec<T> {
    all.sort_unstable();
    if all.is_empty() {
        return Vec::new();
    }
    (1..n).map(|k| all[k * all.len() / n].clone()).collect()
}

fn dest_by_codes(comm: &dyn Communicator, col: &ArrayRef, key: &SortKey) -> Result<Vec<u32>> {
    let n = comm.size();
    let me = comm.rank();
    let codes = order_codes(col, key)?.ok_or_else(|| crate::FrameError::internal("no order codes"))?;
    let valid: Vec<usize> = match &codes.nulls {
        None => (0..codes.codes.len()).collect(),
        Some(nb) => nb.valid_indices().collect(),
    };
    let sample: Vec<u64> = sample_positions(valid.len())
        .map(|p| codes.codes[valid[p]])
        .collect();
    let all: Vec<u64> = comm.all_gather_pod(&sample)?.into_iter().flatten().collect();
    let split = splitters(all, n);
    let null_dest = if key.nulls_first { 0 } else { (n - 1) as u32 };
    Ok(codes
        .codes
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if codes.nulls.as_ref().is_some_and(|nb| nb.is_null(i)) {
                return null_dest;
            }
            if split.is_empty() {
                return me as u32;
            }
            let lo = split.partition_point(|&s| s < c);
            let hi = split.partition_point(|&s| s <= c);
            choose(lo, hi, i, me)
        })
        .collect())
}

fn dest_by_rows(comm: &dyn Communicator, cols: &[ArrayRef], keys: &[SortKey]) -> Result<Vec<u32>> {
    let n = comm.size();
    let me = comm.rank();
    let fields = cols
        .iter()
        .zip(keys)
        .map(|(c, k)| SortField::new_with_options(c.data_type().clone(), k.options()))
        .collect();
    let conv = RowConverter::new(fields).ctx("making a row converter for sort keys")?;
    let rows = conv.convert_columns(cols).ctx("encoding sort keys")?;
    // Samples travel as length-prefixed row bytes.
    let mut buf = Vec::new();
    for p in sample_positions(rows.num_rows()) {
        let r = rows.row(p);
        buf.extend_from_slice(&(r.as_ref().len() as u32).to_le_bytes());
        buf.extend_from_slice(r.as_ref());
    }
    let mut all: Vec<Vec<u8>> = Vec::new();
    for part in comm.all_gather(Bytes::from(buf))? {
        let mut s = &part[..];
        while s.len() >= 4 {
            let len = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
            all.push(s[4..4 + len].to_vec());
            s = &s[4 + len..];
        }
    }
    let split = splitters(all, n);
    Ok((0..rows.num_rows())
        .map(|i| {
            if split.is_empty() {
                return me as u32;
            }
            let r = rows.row(i);
            let c = r.as_ref();
            let lo = split.partition_point(|s| s.as_slice() < c);
            let hi = split.partition_point(|s| s.as_slice() <= c);
            choose(lo, hi, i, me)
        })
        .collect())
}
