//! Distributed sample sort: afterwards rank `r` holds keys `<=` those of
//! rank `r + 1`, each partition sorted.
//!
//! ```text
//!  1. every rank samples its keys; all-gather the samples
//!  2. sort them, pick size * B - 1 splitters at even quantiles (B cache-sized
//!     buckets per rank; bucket b goes to rank b / B)
//!  3. each row goes to the bucket its key falls in; rows equal to splitters
//!     are spread over the buckets those splitters bound (so one key holding
//!     most rows does not land on one rank)
//!  4. exchange, then sort each bucket locally (in cache) and concatenate
//! ```
//!
//! One integer-like or float key uses `u64` order codes (and the radix sort
//! locally), nulls going to the first or the last bucket; other keys use the
//! Arrow row format, whose bytes compare in sort order.

use crate::dist::shuffle::{agree_buckets, bucket_exchange};
use crate::dist::DistOptions;
use crate::error::{Context, FrameError, Result};
use crate::local::keys::row_converter;
use crate::local::sort::{
    check_keys, codes_supported, order_codes, sort as local_sort, OrderCodes, SortKey,
};
use crate::table::{column_index, Table};
use crate::wire::{put_bytes, WireReader};
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{Rows, SortField};
use deeprc_comm::{Communicator, CommunicatorExt};
use std::sync::Arc;

/// Sorts the distributed table by `keys` across all ranks.
///
/// # Errors
/// As [`crate::local::sort()`], on every rank alike; communication errors.
pub fn sort(comm: &dyn Communicator, table: &Table, keys: &[SortKey]) -> Result<Table> {
    sort_with(comm, table, keys, &DistOptions::default())
}

/// [`sort()`] with the tuning knobs `dist` (the bucket size), which every
/// rank must pass alike.
///
/// # Errors
/// As [`sort()`]; [`FrameError::InvalidArgument`] on every rank when the
/// ranks pass different `dist`.
pub fn sort_with(
    comm: &dyn Communicator,
    table: &Table,
    keys: &[SortKey],
    dist: &DistOptions,
) -> Result<Table> {
    check_keys(table, keys)?;
    let n = comm.size();
    let per_rank = agree_buckets(comm, "sort", table.num_rows(), dist)?;
    if n == 1 && per_rank == 1 {
        return local_sort(table, keys);
    }
    let idx: Vec<usize> = keys
        .iter()
        .map(|k| column_index(table.schema(), &k.column))
        .collect::<Result<_>>()?;
    let batches: Vec<&RecordBatch> = table.non_empty_batches().collect();
    let key_cols = |b: &RecordBatch| -> Vec<ArrayRef> {
        idx.iter().map(|&i| Arc::clone(b.column(i))).collect()
    };
    let fast = keys.len() == 1 && codes_supported(table.schema().field(idx[0]).data_type());
    let nb = n * per_rank;
    let sample_count = (16 * per_rank).max(256);
    let mut dests: Vec<Vec<u32>> = if fast {
        let codes = batches
            .iter()
            .map(|b| {
                order_codes(&key_cols(b)[0], &keys[0])?
                    .ok_or_else(|| FrameError::internal("no order codes"))
            })
            .collect::<Result<Vec<_>>>()?;
        dest_by_codes(comm, &codes, &keys[0], nb, sample_count)?
    } else {
        let fields = idx
            .iter()
            .zip(keys)
            .map(|(&i, k)| {
                SortField::new_with_options(
                    table.schema().field(i).data_type().clone(),
                    k.options(),
                )
            })
            .collect();
        let types: Vec<&DataType> = idx
            .iter()
            .map(|&i| table.schema().field(i).data_type())
            .collect();
        let conv = row_converter("sort", &types, fields)?;
        let rows = batches
            .iter()
            .map(|b| conv.convert_columns(&key_cols(b)).ctx("encoding sort keys"))
            .collect::<Result<Vec<_>>>()?;
        dest_by_rows(comm, &rows, nb, sample_count)?
    };
    dests.reverse();
    let buckets = bucket_exchange(comm, table, per_rank, |_| {
        dests
            .pop()
            .ok_or_else(|| FrameError::internal("sort: a batch without destinations"))
    })?;
    let mut out = Vec::new();
    for pieces in buckets {
        if pieces.is_empty() {
            continue;
        }
        let t = Table::try_new(Arc::clone(table.schema()), pieces)?;
        out.extend(local_sort(&t, keys)?.into_batches());
    }
    Table::try_new(Arc::clone(table.schema()), out)
}

/// `count` evenly spaced positions among `len` items.
fn sample_positions(len: usize, count: usize) -> impl Iterator<Item = usize> {
    let s = len.min(count);
    (0..s).map(move |i| (2 * i + 1) * len / (2 * s))
}

/// Bucket for a key: `lo` = splitters strictly below, `hi` = splitters at
/// or below; the row may go to any bucket in `lo..=hi`.
#[inline]
fn choose(lo: usize, hi: usize, i: usize, rank: usize) -> u32 {
    if lo == hi {
        lo as u32
    } else {
        (lo + (i + rank) % (hi - lo + 1)) as u32
    }
}

fn splitters<T: Ord + Clone>(mut all: Vec<T>, nb: usize) -> Vec<T> {
    all.sort_unstable();
    if all.is_empty() {
        return Vec::new();
    }
    (1..nb).map(|k| all[k * all.len() / nb].clone()).collect()
}

fn dest_by_codes(
    comm: &dyn Communicator,
    codes: &[OrderCodes],
    key: &SortKey,
    nb: usize,
    sample_count: usize,
) -> Result<Vec<Vec<u32>>> {
    let me = comm.rank();
    let is_null = |c: &OrderCodes, i: usize| c.nulls.as_ref().is_some_and(|nb| nb.is_null(i));
    // Valid codes, in order, for sampling.
    let valid: Vec<u64> = codes
        .iter()
        .flat_map(|c| {
            (0..c.codes.len())
                .filter(|&i| !is_null(c, i))
                .map(|i| c.codes[i])
        })
        .collect();
    let sample: Vec<u64> = sample_positions(valid.len(), sample_count)
        .map(|p| valid[p])
        .collect();
    drop(valid);
    let all: Vec<u64> = comm
        .all_gather_pod(&sample)?
        .into_iter()
        .flatten()
        .collect();
    let split = splitters(all, nb);
    let null_dest = if key.nulls_first { 0 } else { (nb - 1) as u32 };
    let home = (me * nb / comm.size()) as u32;
    Ok(codes
        .iter()
        .map(|c| {
            c.codes
                .iter()
                .enumerate()
                .map(|(i, &code)| {
                    if is_null(c, i) {
                        return null_dest;
                    }
                    if split.is_empty() {
                        return home;
                    }
                    let lo = split.partition_point(|&s| s < code);
                    let hi = split.partition_point(|&s| s <= code);
                    choose(lo, hi, i, me)
                })
                .collect()
        })
        .collect())
}

fn dest_by_rows(
    comm: &dyn Communicator,
    rows: &[Rows],
    nb: usize,
    sample_count: usize,
) -> Result<Vec<Vec<u32>>> {
    let me = comm.rank();
    let total: usize = rows.iter().map(|r| r.num_rows()).sum();
    // Samples travel as length-prefixed row bytes (see `crate::wire`).
    let mut buf = Vec::new();
    let mut cum = 0;
    let mut bi = 0;
    for p in sample_positions(total, sample_count) {
        while p >= cum + rows[bi].num_rows() {
            cum += rows[bi].num_rows();
            bi += 1;
        }
        put_bytes(&mut buf, "sort", rows[bi].row(p - cum).as_ref())?;
    }
    let all = decode_samples(comm.all_gather(Bytes::from(buf))?)?;
    let split = splitters(all, nb);
    let home = (me * nb / comm.size()) as u32;
    Ok(rows
        .iter()
        .map(|rs| {
            (0..rs.num_rows())
                .map(|i| {
                    if split.is_empty() {
                        return home;
                    }
                    let r = rs.row(i);
                    let c = r.as_ref();
                    let lo = split.partition_point(|s| s.as_slice() < c);
                    let hi = split.partition_point(|s| s.as_slice() <= c);
                    choose(lo, hi, i, me)
                })
                .collect()
        })
        .collect())
}

/// The row samples every rank sent (`parts[r]` from rank `r`): each a
/// sequence of `u32`-length-prefixed rows, every length checked.
pub(crate) fn decode_samples(parts: Vec<Bytes>) -> Result<Vec<Vec<u8>>> {
    let mut all: Vec<Vec<u8>> = Vec::new();
    for (rank, part) in parts.iter().enumerate() {
        let mut r = WireReader::new("sort", "sort samples", rank, part);
        while !r.is_empty() {
            all.push(r.bytes("a sample row")?.to_vec());
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_bytes(rows: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for r in rows {
            buf.extend_from_slice(&(r.len() as u32).to_le_bytes());
            buf.extend_from_slice(r);
        }
        buf
    }

    #[test]
    fn samples_from_peers_decode() {
        let a = sample_bytes(&[b"ab", b"", b"xyz"]);
        let b = sample_bytes(&[b"q"]);
        let got = decode_samples(vec![Bytes::from(a), Bytes::new(), Bytes::from(b)]).unwrap();
        assert_eq!(
            got,
            vec![b"ab".to_vec(), vec![], b"xyz".to_vec(), b"q".to_vec()]
        );
    }

    /// A truncated or forged sample message is a typed error naming the
    /// sending rank, never a panic or a silently shorter sample.
    #[test]
    fn truncated_or_forged_samples_are_typed_errors() {
        let good = sample_bytes(&[b"abc", b"de"]);
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        // Every truncation inside a sample (7 ends the first one).
        for cut in (1..good.len()).filter(|&c| c != 7) {
            cases.push((format!("cut at {cut}"), good[..cut].to_vec()));
        }
        // A length larger than what follows, and one that overflows.
        let mut long = good.clone();
        long[..4].copy_from_slice(&100u32.to_le_bytes());
        cases.push(("length past the end".into(), long));
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push(("length u32::MAX".into(), huge));
        for (what, bytes) in cases {
            let parts = vec![Bytes::from(good.clone()), Bytes::from(bytes)];
            let r = std::panic::catch_unwind(|| decode_samples(parts));
            match r {
                Ok(Err(FrameError::MalformedPeerData { rank, what: w, .. })) => {
                    assert_eq!(rank, 1, "{what}");
                    assert_eq!(w, "sort samples", "{what}");
                }
                Ok(other) => panic!("{what}: {other:?}"),
                Err(_) => panic!("{what}: panicked"),
            }
        }
    }
}
