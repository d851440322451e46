//! Unique rows (drop duplicates), on all columns or a subset.

use crate::error::{Context, Result};
use crate::limits::check_rows;
use crate::local::keys::{group_rows, KeyEncoder};
use crate::table::{column_index, Table};
use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::DataType;
use std::sync::Arc;

/// Which row of a set of duplicates to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Keep {
    /// The first occurrence.
    #[default]
    First,
    /// The last occurrence.
    Last,
}

/// Options of [`unique`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UniqueOptions {
    /// The columns that define a duplicate (all columns when `None`).
    pub subset: Option<Vec<String>>,
    /// Which duplicate to keep.
    pub keep: Keep,
}

impl UniqueOptions {
    /// Duplicates by `columns`.
    pub fn subset(columns: &[&str]) -> Self {
        Self {
            subset: Some(columns.iter().map(|s| s.to_string()).collect()),
            keep: Keep::First,
        }
    }

    /// Keeps the last occurrence.
    #[must_use]
    pub fn keep_last(mut self) -> Self {
        self.keep = Keep::Last;
        self
    }
}

/// The key column positions of `options` in `table`.
pub(crate) fn subset_indices(table: &Table, options: &UniqueOptions) -> Result<Vec<usize>> {
    match &options.subset {
        None => Ok((0..table.num_columns()).collect()),
        Some(cols) => cols
            .iter()
            .map(|c| column_index(table.schema(), c))
            .collect(),
    }
}

/// `table` without duplicate rows (rows equal on the subset; nulls equal
/// each other), in order of the kept occurrences.
///
/// # Errors
/// [`crate::FrameError::ColumnNotFound`] for a subset column that is not in
/// the table; [`crate::FrameError::TooManyRows`] past
/// [`MAX_ROWS`](crate::limits::MAX_ROWS) rows.
pub fn unique(table: &Table, options: &UniqueOptions) -> Result<Table> {
    let idx = subset_indices(table, options)?;
    check_rows("unique", table.num_rows())?;
    if table.num_rows() == 0 || idx.is_empty() {
        return Ok(if idx.is_empty() {
            table.head(1)
        } else {
            table.clone()
        });
    }
    let batch = table.to_batch()?;
    let cols: Vec<ArrayRef> = idx.iter().map(|&i| Arc::clone(batch.column(i))).collect();
    let types: Vec<DataType> = cols.iter().map(|c| c.data_type().clone()).collect();
    let rows = KeyEncoder::new(&types)?.encode(&cols)?;
    let g = group_rows(&rows);
    let keep: Vec<u32> = match options.keep {
        Keep::First => g.first_row.clone(),
        Keep::Last => {
            let mut last = vec![0u32; g.num_groups()];
            for (i, &gid) in g.gids.iter().enumerate() {
                last[gid as usize] = i as u32;
            }
            last.sort_unstable();
            last
        }
    };
    if keep.len() == batch.num_rows() {
        return Ok(Table::from_batch_with_schema(
            Arc::clone(table.schema()),
            batch,
        ));
    }
    let out = take_record_batch(&batch, &UInt32Array::from(keep)).ctx("taking unique rows")?;
    Ok(Table::from_batch_with_schema(
        Arc::clone(table.schema()),
        out,
    ))
}
