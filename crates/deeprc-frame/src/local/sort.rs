//! Sorting by several keys, ascending or descending, nulls first or last.
//!
//! Several keys (or non-numeric keys) use Arrow's `lexsort_to_indices`. One
//! integer-like or float key takes a hand-written LSD radix sort on
//! order-preserving `u64` codes (Arrow has only comparison sorts; the radix
//! sort is several times faster on large columns and is stable).

use crate::error::{Context, FrameError, Result};
use crate::limits::check_rows;
use crate::local::keys::{is_int_like, to_i64};
use crate::table::{column_index, Table};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn, SortOptions};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type};
use std::sync::Arc;

/// One sort key: a column, its direction and where its nulls go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortKey {
    /// The column.
    pub column: String,
    /// Largest first when `true`.
    pub descending: bool,
    /// Nulls before all values when `true`, after them when `false`.
    pub nulls_first: bool,
}

impl SortKey {
    /// Ascending, nulls last (SQL's default for `ASC`).
    pub fn asc(column: impl Into<String>) -> Self {
        Self {
            column: column.into(),
            descending: false,
            nulls_first: false,
        }
    }

    /// Descending, nulls first (SQL's default for `DESC`).
    pub fn desc(column: impl Into<String>) -> Self {
        Self {
            column: column.into(),
            descending: true,
            nulls_first: true,
        }
    }

    /// Puts nulls first.
    #[must_use]
    pub fn nulls_first(mut self) -> Self {
        self.nulls_first = true;
        self
    }

    /// Puts nulls last.
    #[must_use]
    pub fn nulls_last(mut self) -> Self {
        self.nulls_first = false;
        self
    }

    /// The Arrow sort options of this key.
    pub fn options(&self) -> SortOptions {
        SortOptions {
            descending: self.descending,
            nulls_first: self.nulls_first,
        }
    }
}

/// `table` sorted by `keys` (the first key first).
///
/// # Errors
/// [`FrameError::InvalidArgument`] for no key; [`FrameError::ColumnNotFound`];
/// [`FrameError::TooManyRows`] past [`MAX_ROWS`](crate::limits::MAX_ROWS)
/// rows.
pub fn sort(table: &Table, keys: &[SortKey]) -> Result<Table> {
    check_keys(table, keys)?;
    check_rows("sort", table.num_rows())?;
    if table.num_rows() <= 1 {
        return Ok(table.clone());
    }
    let batch = table.to_batch()?;
    let idx = sort_indices(&batch, keys)?;
    let out = take_record_batch(&batch, &idx).ctx("reordering rows")?;
    Ok(Table::from_batch_with_schema(
        Arc::clone(table.schema()),
        out,
    ))
}

pub(crate) fn check_keys(table: &Table, keys: &[SortKey]) -> Result<()> {
    if keys.is_empty() {
        return Err(FrameError::invalid("sort", "no sort key given"));
    }
    for k in keys {
        column_index(table.schema(), &k.column)?;
    }
    Ok(())
}

/// The permutation that sorts `batch` by `keys`.
pub(crate) fn sort_indices(batch: &RecordBatch, keys: &[SortKey]) -> Result<UInt32Array> {
    let cols = keys
        .iter()
        .map(|k| column_index(&batch.schema(), &k.column).map(|i| Arc::clone(batch.column(i))))
        .collect::<Result<Vec<_>>>()?;
    if keys.len() == 1 {
        if let Some(codes) = order_codes(&cols[0], &keys[0])? {
            return Ok(UInt32Array::from(radix_order(&codes, &keys[0])));
        }
    }
    let sort_cols: Vec<SortColumn> = cols
        .into_iter()
        .zip(keys)
        .map(|(values, k)| SortColumn {
            values,
            options: Some(k.options()),
        })
        .collect();
    lexsort_to_indices(&sort_cols, None).ctx("sorting")
}

/// Order-preserving codes of one key column: `u64`s whose unsigned order is
/// the key's order (direction applied), plus the validity. `None` when the
/// column's type has no such code.
pub(crate) struct OrderCodes {
    pub(crate) codes: Vec<u64>,
    pub(crate) nulls: Option<datafusion::arrow::buffer::NullBuffer>,
}

pub(crate) fn codes_supported(dt: &DataType) -> bool {
    is_int_like(dt) || matches!(dt, DataType::Float64 | DataType::Float32)
}

pub(crate) fn order_codes(col: &ArrayRef, key: &SortKey) -> Result<Option<OrderCodes>> {
    let dt = col.data_type();
    let flip: u64 = if key.descending { u64::MAX } else { 0 };
    let codes: Vec<u64> = if is_int_like(dt) {
        let a = to_i64(col)?;
        a.as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&v| ((v as u64) ^ (1 << 63)) ^ flip)
            .collect()
    } else if *dt == DataType::Float64 {
        col.as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|&v| f64_code(v) ^ flip)
            .collect()
    } else if *dt == DataType::Float32 {
        col.as_primitive::<Float32Type>()
            .values()
            .iter()
            .map(|&v| f64_code(v as f64) ^ flip)
            .collect()
    } else {
        return Ok(None);
    };
    Ok(Some(OrderCodes {
        codes,
        nulls: col.logical_nulls().filter(|n| n.null_count() > 0),
    }))
}

/// The total order of `f64::total_cmp` as unsigned integers.
#[inline]
fn f64_code(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// Row order of a stable LSD radix sort of `codes`; null rows go first or
/// last (in their original order) as `key` says.
pub(crate) fn radix_order(codes: &OrderCodes, key: &SortKey) -> Vec<u32> {
    let n = codes.codes.len();
    let (mut k, mut idx): (Vec<u64>, Vec<u32>) = match &codes.nulls {
        None => (codes.codes.clone(), (0..n as u32).collect()),
        Some(nulls) => {
            let mut k = Vec::with_capacity(n);
            let mut idx = Vec::with_capacity(n);
            for i in nulls.valid_indices() {
                k.push(codes.codes[i]);
                idx.push(i as u32);
            }
            (k, idx)
        }
    };
    radix_sort_pairs(&mut k, &mut idx);
    match &codes.nulls {
        None => idx,
        Some(nulls) => {
            let null_rows = (0..n).filter(|&i| nulls.is_null(i)).map(|i| i as u32);
            if key.nulls_first {
                null_rows.chain(idx).collect()
            } else {
                idx.into_iter().chain(null_rows).collect()
            }
        }
    }
}

/// Sorts `keys` ascending, moving `vals` along; stable. 8-bit digits, one
/// pass per digit that is not constant across all keys.
pub(crate) fn radix_sort_pairs(keys: &mut Vec<u64>, vals: &mut Vec<u32>) {
    let n = keys.len();
    if n < 2 {
        return;
    }
    let mut hist = vec![[0usize; 256]; 8];
    for &k in keys.iter() {
        for (d, h) in hist.iter_mut().enumerate() {
            h[((k >> (8 * d)) & 0xff) as usize] += 1;
        }
    }
    let mut k2 = vec![0u64; n];
    let mut v2 = vec![0u32; n];
    for (d, h) in hist.iter().enumerate() {
        if h.contains(&n) {
            continue; // every key has the same digit here
        }
        let mut pos = [0usize; 256];
        let mut acc = 0;
        for (p, &c) in pos.iter_mut().zip(h.iter()) {
            *p = acc;
            acc += c;
        }
        let shift = 8 * d;
        for (&key, &val) in keys.iter().zip(vals.iter()) {
            let b = ((key >> shift) & 0xff) as usize;
            let p = pos[b];
            k2[p] = key;
            v2[p] = val;
            pos[b] = p + 1;
        }
        std::mem::swap(keys, &mut k2);
        std::mem::swap(vals, &mut v2);
    }
}
