//! Set operations (union, intersect, subtract with set semantics: the
//! results have no duplicates, nulls equal each other) and table equality.

use crate::error::{Context, Result};
use crate::limits::{check_more_rows, check_rows};
use crate::local::keys::{row_converter, KeyEncoder, KeySet};
use crate::local::unique::{unique, UniqueOptions};
use crate::table::{check_same_columns, first_difference, Table};
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::SortField;
use std::sync::Arc;

/// Distinct rows that are in `a` or in `b`.
///
/// # Errors
/// [`crate::FrameError::IncompatibleSchemas`] when the columns differ;
/// [`crate::FrameError::TooManyRows`] when `a` and `b` together have more
/// than [`MAX_ROWS`](crate::limits::MAX_ROWS) rows (as for the other set
/// operations and each side).
pub fn union(a: &Table, b: &Table) -> Result<Table> {
    check_same_columns("union", a.schema(), b.schema())?;
    check_more_rows("union", a.num_rows(), b.num_rows())?;
    let both = crate::local::concat(&[a.clone(), b.clone()])?;
    unique(&both, &UniqueOptions::default())
}

/// Distinct rows of `a` that are also in `b`.
pub fn intersect(a: &Table, b: &Table) -> Result<Table> {
    membership("intersect", a, b, true)
}

/// Distinct rows of `a` that are not in `b`.
pub fn subtract(a: &Table, b: &Table) -> Result<Table> {
    membership("subtract", a, b, false)
}

fn membership(op: &'static str, a: &Table, b: &Table, keep_present: bool) -> Result<Table> {
    check_same_columns(op, a.schema(), b.schema())?;
    check_rows(op, a.num_rows())?;
    check_rows(op, b.num_rows())?;
    let a = unique(a, &UniqueOptions::default())?;
    if a.num_rows() == 0 {
        return Ok(a);
    }
    let ab = a.to_batch()?;
    let bb = b.to_batch()?;
    let types: Vec<DataType> = ab.columns().iter().map(|c| c.data_type().clone()).collect();
    let enc = KeyEncoder::new(&types)?;
    let ka = enc.encode(ab.columns())?;
    let kb = enc.encode(bb.columns())?;
    let set = KeySet::build(&kb);
    let mask: BooleanArray = (0..ab.num_rows())
        .map(|i| Some(set.contains(&ka, i) == keep_present))
        .collect();
    let out = filter_record_batch(&ab, &mask).ctx("filtering rows")?;
    Ok(Table::from_batch_with_schema(Arc::clone(a.schema()), out))
}

/// `true` when `a` and `b` have the same column names and types and the
/// same rows in the same order (batch boundaries do not matter).
pub fn equals(a: &Table, b: &Table) -> Result<bool> {
    if first_difference(a.schema(), b.schema()).is_some() || a.num_rows() != b.num_rows() {
        return Ok(false);
    }
    for name in a.column_names() {
        let (x, y) = (a.column(&name)?, b.column(&name)?);
        if x.to_data() != y.to_data() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `true` when `a` and `b` have the same column names and types and the
/// same multiset of rows.
pub fn equals_unordered(a: &Table, b: &Table) -> Result<bool> {
    if first_difference(a.schema(), b.schema()).is_some() || a.num_rows() != b.num_rows() {
        return Ok(false);
    }
    if a.num_rows() == 0 {
        return Ok(true);
    }
    let (ra, rb) = (sorted_rows(a)?, sorted_rows(b)?);
    Ok(ra == rb)
}

/// All rows of `t`, row-encoded and sorted.
fn sorted_rows(t: &Table) -> Result<Vec<Vec<u8>>> {
    let batch = t.to_batch()?;
    let fields = batch
        .columns()
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let types: Vec<&DataType> = batch.columns().iter().map(|c| c.data_type()).collect();
    let conv = row_converter("set operation", &types, fields)?;
    let cols: Vec<ArrayRef> = batch.columns().to_vec();
    let rows = conv.convert_columns(&cols).ctx("encoding rows")?;
    let mut v: Vec<Vec<u8>> = (0..rows.num_rows())
        .map(|i| rows.row(i).as_ref().to_vec())
        .collect();
    v.sort_unstable();
    Ok(v)
}
