//! The shuffle: hash-partition rows by key columns and exchange them, the
//! one path every keyed distributed operator takes.
//!
//! ```text
//!  batch --create_hashes(keys)--> dest = hash -> rank --counting sort--> one `take`
//!        --> slices per rank --> exchange:
//!              thread ranks : Vec<RecordBatch> moved through all_to_all_objects (no copy)
//!              process ranks: Arrow IPC streams through all_to_all_v (zero-copy decode)
//! ```

use crate::dist::DistOptions;
use crate::error::{Context, FrameError, Result};
use crate::ipc;
use crate::limits::max_rows;
use crate::table::{column_index, Table};
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::create_hashes;
use deeprc_comm::{AnyBox, Communicator, CommunicatorExt};
use std::sync::Arc;

/// The hasher of the shuffle: fixed seeds, so that every rank (thread or
/// process of the same build) sends equal keys to the same rank.
pub(crate) fn shuffle_hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x5eed_0001_d00d_f00d,
        0x0dd5_eed5_1234_5678,
        0x9abc_def0_0fed_cba9,
        0x1357_9bdf_2468_ace0,
    )
}

/// Sends `parts[j]` to rank `j`; returns what every rank sent here, in rank
/// order (so concatenating keeps the global order of rows), without the
/// empty batches. Thread ranks move the batches; process ranks send Arrow
/// IPC streams.
pub fn exchange(
    comm: &dyn Communicator,
    schema: &SchemaRef,
    parts: Vec<Vec<RecordBatch>>,
) -> Result<Vec<RecordBatch>> {
    let got = exchange_from_each(comm, schema, parts, false)?;
    Ok(got
        .into_iter()
        .flatten()
        .filter(|b| b.num_rows() > 0)
        .collect())
}

/// Splits `batch` into `n` parts by `dest[i]` (the rank of row `i`) with one
/// `take`: rows keep their relative order within each part. The `take`
/// indices are `u32`, or `u64` for a batch past the row limit (any batch
/// can be shuffled, and no rank fails alone before the exchange).
pub(crate) fn split_by_dest(
    batch: &RecordBatch,
    dest: &[u32],
    n: usize,
) -> Result<Vec<RecordBatch>> {
    if n == 1 {
        return Ok(vec![batch.clone()]);
    }
    let mut counts = vec![0usize; n + 1];
    for &d in dest {
        counts[d as usize + 1] += 1;
    }
    // All rows to one rank: no take needed.
    if let Some(j) = (0..n).find(|&j| counts[j + 1] == dest.len()) {
        return Ok((0..n)
            .map(|k| {
                if k == j {
                    batch.clone()
                } else {
                    batch.slice(0, 0)
                }
            })
            .collect());
    }
    for j in 0..n {
        counts[j + 1] += counts[j];
    }
    let mut fill = counts.clone();
    let sorted = if dest.len() <= max_rows() {
        let mut perm = vec![0u32; dest.len()];
        for (i, &d) in dest.iter().enumerate() {
            let f = &mut fill[d as usize];
            perm[*f] = i as u32;
            *f += 1;
        }
        take_record_batch(batch, &UInt32Array::from(perm))
    } else {
        let mut perm = vec![0u64; dest.len()];
        for (i, &d) in dest.iter().enumerate() {
            let f = &mut fill[d as usize];
            perm[*f] = i as u64;
            *f += 1;
        }
        take_record_batch(batch, &UInt64Array::from(perm))
    }
    .ctx("partitioning rows")?;
    Ok((0..n)
        .map(|j| sorted.slice(counts[j], counts[j + 1] - counts[j]))
        .collect())
}

/// The destination rank of every row of `batch` by hash of `key_idx`.
pub(crate) fn hash_dest(batch: &RecordBatch, key_idx: &[usize], n: usize) -> Result<Vec<u32>> {
    let cols: Vec<ArrayRef> = key_idx
        .iter()
        .map(|&i| Arc::clone(batch.column(i)))
        .collect();
    hash_dest_arrays(&cols, batch.num_rows(), n)
}

/// The destination rank of every row by hash of the key arrays `cols`.
pub(crate) fn hash_dest_arrays(cols: &[ArrayRef], rows: usize, n: usize) -> Result<Vec<u32>> {
    let mut hashes = vec![0u64; rows];
    create_hashes(cols, &shuffle_hasher(), &mut hashes).ctx("hashing key columns")?;
    Ok(hashes
        .iter()
        .map(|&h| ((h as u128 * n as u128) >> 64) as u32)
        .collect())
}

/// Hash-partitions `table` by `keys` over the ranks of `comm`: afterwards
/// every row with a given key is on one rank, the same for every table
/// whose key columns have the same types.
///
/// # Errors
/// [`FrameError::ColumnNotFound`] (on every rank alike); communication errors.
pub fn shuffle(comm: &dyn Communicator, table: &Table, keys: &[&str]) -> Result<Table> {
    let key_idx = keys
        .iter()
        .map(|k| column_index(table.schema(), k))
        .collect::<Result<Vec<_>>>()?;
    if key_idx.is_empty() {
        return Err(FrameError::invalid("shuffle", "no key column given"));
    }
    let n = comm.size();
    if n == 1 {
        return Ok(table.clone());
    }
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    for b in table.non_empty_batches() {
        let dest = hash_dest(b, &key_idx, n)?;
        for (j, p) in split_by_dest(b, &dest, n)?.into_iter().enumerate() {
            if p.num_rows() > 0 {
                parts[j].push(p);
            }
        }
    }
    let got = exchange(comm, table.schema(), parts)?;
    Table::try_new(Arc::clone(table.schema()), got)
}

/// Sends every row of this rank to `dest`.
pub(crate) fn send_all_to(comm: &dyn Communicator, table: &Table, dest: usize) -> Result<Table> {
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); comm.size()];
    parts[dest] = table.non_empty_batches().cloned().collect();
    let got = exchange(comm, table.schema(), parts)?;
    Table::try_new(Arc::clone(table.schema()), got)
}

// ---- bucketed exchange: cache-sized pieces for join and sort ----

/// Buckets per rank for a partition of at most `max_rows` rows on any rank
/// and buckets of about `bucket_rows` rows (the same on every rank: callers
/// pass agreed values, see [`agree_buckets`]).
pub(crate) fn buckets_per_rank(max_rows: u64, bucket_rows: usize) -> usize {
    let target = bucket_rows.max(1) as u64;
    (max_rows.div_ceil(target).min(1024) as usize)
        .next_power_of_two()
        .clamp(1, 1024)
}

/// The buckets per rank of a bucketed operator `op` over partitions of
/// `rows` rows (collective): every rank sends its row count and its
/// [`DistOptions::bucket_rows`] in one all-gather, so all ranks compute the
/// same number from the largest partition, or all fail when their options
/// differ (a bucket count that differed between ranks would send rows to
/// the wrong ranks).
///
/// # Errors
/// [`FrameError::InvalidArgument`] on every rank when the ranks' options
/// disagree; [`FrameError::MalformedPeerData`]; communication errors.
pub(crate) fn agree_buckets(
    comm: &dyn Communicator,
    op: &'static str,
    rows: usize,
    options: &DistOptions,
) -> Result<usize> {
    if comm.size() == 1 {
        return Ok(buckets_per_rank(rows as u64, options.bucket_rows));
    }
    let all = comm.all_gather_pod(&[rows as u64, options.bucket_rows as u64])?;
    let mut most = 0u64;
    let mut wanted = Vec::with_capacity(all.len());
    for (rank, v) in all.iter().enumerate() {
        let [r, b] = v[..] else {
            return Err(FrameError::MalformedPeerData {
                op,
                what: "bucket plan",
                rank,
                reason: format!("{} values instead of 2", v.len()),
            });
        };
        most = most.max(r);
        wanted.push(b);
    }
    if wanted.iter().any(|&b| b != wanted[0]) {
        return Err(FrameError::invalid(
            op,
            format!(
                "the ranks disagree on DistOptions::bucket_rows ({}): every rank must use the same options",
                wanted
                    .iter()
                    .enumerate()
                    .map(|(r, b)| format!("rank {r}: {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(buckets_per_rank(most, options.bucket_rows))
}

/// Like [`exchange`] but keeps every batch sent, empty ones included, in
/// order: `out[s]` is the list rank `s` sent here.
pub(crate) fn exchange_keep(
    comm: &dyn Communicator,
    schema: &SchemaRef,
    parts: Vec<Vec<RecordBatch>>,
) -> Result<Vec<Vec<RecordBatch>>> {
    exchange_from_each(comm, schema, parts, true)
}

/// The exchange of [`exchange`] and [`exchange_keep`]: `out[s]` is the list
/// rank `s` sent here. Without `keep_empty`, a process rank sends nothing
/// for a part with no rows (an empty list arrives in its place).
fn exchange_from_each(
    comm: &dyn Communicator,
    schema: &SchemaRef,
    mut parts: Vec<Vec<RecordBatch>>,
    keep_empty: bool,
) -> Result<Vec<Vec<RecordBatch>>> {
    let n = comm.size();
    if parts.len() != n {
        return Err(FrameError::internal(format!(
            "exchange: {} parts for {n} ranks",
            parts.len()
        )));
    }
    if n == 1 {
        return Ok(vec![parts.pop().unwrap_or_default()]);
    }
    if comm.supports_objects() {
        let boxed: Vec<AnyBox> = parts.into_iter().map(|p| Box::new(p) as AnyBox).collect();
        return comm
            .all_to_all_objects(boxed)?
            .into_iter()
            .map(|g| {
                g.downcast::<Vec<RecordBatch>>()
                    .map(|v| *v)
                    .map_err(|_| FrameError::internal("exchange: a peer sent something else"))
            })
            .collect();
    }
    let me = comm.rank();
    let mut own = Vec::new();
    let mut payload = Vec::with_capacity(n);
    for (j, p) in parts.into_iter().enumerate() {
        if j == me {
            own = p;
            payload.push(Bytes::new());
        } else if !keep_empty && p.iter().all(|b| b.num_rows() == 0) {
            payload.push(Bytes::new());
        } else {
            payload.push(ipc::encode_batches(schema, &p)?);
        }
    }
    let got = comm.all_to_all_v(payload)?;
    let mut out = Vec::with_capacity(n);
    for (j, bytes) in got.into_iter().enumerate() {
        if j == me {
            out.push(std::mem::take(&mut own));
        } else if bytes.is_empty() {
            out.push(Vec::new());
        } else {
            let batches = ipc::decode_batches_from(bytes, "exchange", j)?.1;
            out.push(
                batches
                    .into_iter()
                    .map(|b| relabel(schema, b))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
    }
    Ok(out)
}

/// `b` under the table's schema exactly (IPC round trips keep the fields,
/// but metadata and nullability must match the table's), its row count
/// kept for batches without columns.
fn relabel(schema: &SchemaRef, b: RecordBatch) -> Result<RecordBatch> {
    if b.schema().as_ref() == schema.as_ref() {
        return Ok(b);
    }
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        b.columns().to_vec(),
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
    )
    .ctx("relabelling received batch")
}

/// Splits every batch of `table` into `size * per_rank` buckets by
/// `bucket_of` (bucket `b` goes to rank `b / per_rank`), exchanges them, and
/// returns this rank's `per_rank` buckets, each the list of pieces received
/// for it (in rank order, then batch order).
pub(crate) fn bucket_exchange(
    comm: &dyn Communicator,
    table: &Table,
    per_rank: usize,
    mut bucket_of: impl FnMut(&RecordBatch) -> Result<Vec<u32>>,
) -> Result<Vec<Vec<RecordBatch>>> {
    let n = comm.size();
    let total = n * per_rank;
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    for b in table.non_empty_batches() {
        let dest = bucket_of(b)?;
        let pieces = split_by_dest(b, &dest, total)?;
        for (k, p) in pieces.into_iter().enumerate() {
            parts[k / per_rank].push(p);
        }
    }
    if !comm.supports_objects() && n > 1 {
        // Process ranks: one IPC message per bucket rather than one per
        // piece (the encoder copies anyway).
        for (d, p) in parts.iter_mut().enumerate() {
            if d == comm.rank() {
                continue;
            }
            let pieces = std::mem::take(p);
            for k in 0..per_rank {
                let same: Vec<&RecordBatch> = pieces.iter().skip(k).step_by(per_rank).collect();
                p.push(
                    datafusion::arrow::compute::concat_batches(table.schema(), same)
                        .ctx("merging the pieces of a bucket")?,
                );
            }
        }
    }
    let got = exchange_keep(comm, table.schema(), parts)?;
    let mut buckets: Vec<Vec<RecordBatch>> = vec![Vec::new(); per_rank];
    for list in got {
        for (k, p) in list.into_iter().enumerate() {
            if p.num_rows() > 0 {
                buckets[k % per_rank].push(p);
            }
        }
    }
    Ok(buckets)
}

/// Bucket of every row by hash of `key_idx`: rank from the high bits of the
/// hash, bucket within the rank from the low bits.
pub(crate) fn hash_buckets(
    batch: &RecordBatch,
    key_idx: &[usize],
    n: usize,
    per_rank: usize,
) -> Result<Vec<u32>> {
    let cols: Vec<ArrayRef> = key_idx
        .iter()
        .map(|&i| Arc::clone(batch.column(i)))
        .collect();
    let mut hashes = vec![0u64; batch.num_rows()];
    create_hashes(&cols, &shuffle_hasher(), &mut hashes).ctx("hashing key columns")?;
    Ok(hashes
        .iter()
        .map(|&h| {
            let rank = ((h as u128 * n as u128) >> 64) as u64;
            let sub = ((h & 0xffff_ffff) * per_rank as u64) >> 32;
            (rank * per_rank as u64 + sub) as u32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::with_max_rows;
    use datafusion::arrow::array::Int64Array;

    /// A batch past the row limit is split with 64-bit indices, to the same
    /// parts.
    #[test]
    fn split_by_dest_handles_batches_past_the_row_limit() {
        let t = Table::from_columns(vec![(
            "v",
            Arc::new(Int64Array::from((0..10).collect::<Vec<i64>>())) as ArrayRef,
        )])
        .unwrap();
        let b = t.to_batch().unwrap();
        let dest: Vec<u32> = (0..10).map(|i| (i * 7 % 3) as u32).collect();
        let narrow = split_by_dest(&b, &dest, 3).unwrap();
        let wide = with_max_rows(4, || split_by_dest(&b, &dest, 3)).unwrap();
        assert_eq!(narrow, wide);
        let part0 = Table::from_batch(wide[0].clone());
        assert_eq!(
            part0.column_as::<i64>("v").unwrap(),
            vec![Some(0), Some(3), Some(6), Some(9)]
        );
    }
}
