//! Joins: inner, left, right, full outer, semi and anti, on one or several
//! key columns, by hashing or by sorting and merging.
//!
//! Hand-written over `keys` because DataFusion's join
//! operators are streaming `ExecutionPlan`s (planning, an async runtime,
//! qualified names instead of suffixes). Both algorithms compute pairs of row
//! indices, and Arrow's `take` builds the output columns:
//!
//! ```text
//!  left keys --probe--> JoinIndex(right keys: key -> rows) --> (l_idx, r_idx)
//!  take(left cols, l_idx) ++ take(right cols, r_idx)   (null index = no match)
//! ```
//!
//! SQL semantics: null keys never match; unmatched rows of the outer side
//! get nulls. Clashing column names get the suffixes.

use crate::error::{Context, FrameError, Result};
use crate::limits::{check_more_pairs, check_more_rows, check_rows};
use crate::local::keys::{JoinIndex, KeyEncoder, KeyRows};
use crate::table::{column_index, Table};
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use std::cmp::Ordering;
use std::sync::Arc;

/// The kind of join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JoinType {
    /// Matching pairs only.
    #[default]
    Inner,
    /// Every left row; nulls where no right row matches.
    Left,
    /// Every right row; nulls where no left row matches.
    Right,
    /// Every row of both sides.
    FullOuter,
    /// Left rows with at least one match (left columns only).
    LeftSemi,
    /// Left rows without a match (left columns only).
    LeftAnti,
}

impl JoinType {
    fn keeps_unmatched_left(self) -> bool {
        matches!(self, JoinType::Left | JoinType::FullOuter)
    }

    fn keeps_unmatched_right(self) -> bool {
        matches!(self, JoinType::Right | JoinType::FullOuter)
    }

    /// Whether the output has only the left columns.
    pub fn left_only(self) -> bool {
        matches!(self, JoinType::LeftSemi | JoinType::LeftAnti)
    }
}

/// The join algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JoinAlgorithm {
    /// Hash the right keys, probe with the left ones; output in left order.
    #[default]
    Hash,
    /// Sort both sides by key and merge; output in key order.
    SortMerge,
}

/// How to join: type, algorithm, key columns and suffixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOptions {
    /// The kind of join.
    pub how: JoinType,
    /// The algorithm.
    pub algorithm: JoinAlgorithm,
    /// Key columns of the left table.
    pub left_on: Vec<String>,
    /// Key columns of the right table, paired with `left_on`.
    pub right_on: Vec<String>,
    /// Suffixes appended to column names present on both sides.
    pub suffixes: (String, String),
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            how: JoinType::Inner,
            algorithm: JoinAlgorithm::Hash,
            left_on: Vec::new(),
            right_on: Vec::new(),
            suffixes: ("_x".into(), "_y".into()),
        }
    }
}

impl JoinOptions {
    /// An inner hash join on key columns of the same names on both sides.
    pub fn on(keys: &[&str]) -> Self {
        Self::on_columns(keys, keys)
    }

    /// An inner hash join on `left_on[i] = right_on[i]`.
    pub fn on_columns(left_on: &[&str], right_on: &[&str]) -> Self {
        Self {
            left_on: left_on.iter().map(|s| s.to_string()).collect(),
            right_on: right_on.iter().map(|s| s.to_string()).collect(),
            ..Self::default()
        }
    }

    /// Sets the join type.
    #[must_use]
    pub fn how(mut self, how: JoinType) -> Self {
        self.how = how;
        self
    }

    /// Sets the algorithm.
    #[must_use]
    pub fn algorithm(mut self, algorithm: JoinAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Sets the suffixes for clashing names.
    #[must_use]
    pub fn suffixes(mut self, left: &str, right: &str) -> Self {
        self.suffixes = (left.into(), right.into());
        self
    }
}

/// Checked key positions of both sides.
pub(crate) struct JoinKeys {
    pub(crate) left: Vec<usize>,
    pub(crate) right: Vec<usize>,
}

/// Checks the key columns: they exist, pair up, and have equal types.
pub(crate) fn check_join_keys(left: &Schema, right: &Schema, o: &JoinOptions) -> Result<JoinKeys> {
    if o.left_on.is_empty() {
        return Err(FrameError::invalid("join", "no key column given"));
    }
    if o.left_on.len() != o.right_on.len() {
        return Err(FrameError::invalid(
            "join",
            format!(
                "{} left key columns but {} right key columns",
                o.left_on.len(),
                o.right_on.len()
            ),
        ));
    }
    let l = o
        .left_on
        .iter()
        .map(|c| column_index(left, c))
        .collect::<Result<Vec<_>>>()?;
    let r = o
        .right_on
        .iter()
        .map(|c| column_index(right, c))
        .collect::<Result<Vec<_>>>()?;
    for (&a, &b) in l.iter().zip(&r) {
        let (fa, fb) = (left.field(a), right.field(b));
        if fa.data_type() != fb.data_type() {
            return Err(FrameError::KeyTypeMismatch {
                left: fa.name().clone(),
                left_type: fa.data_type().clone(),
                right: fb.name().clone(),
                right_type: fb.data_type().clone(),
            });
        }
    }
    Ok(JoinKeys { left: l, right: r })
}

/// The output schema of a join.
pub(crate) fn join_schema(left: &Schema, right: &Schema, o: &JoinOptions) -> SchemaRef {
    let nullable_left = o.how.keeps_unmatched_right();
    let nullable_right = o.how.keeps_unmatched_left();
    let mut fields: Vec<Field> = Vec::new();
    let clash = |name: &str, other: &Schema| other.field_with_name(name).is_ok();
    for f in left.fields() {
        let mut nf = f.as_ref().clone();
        if !o.how.left_only() && clash(f.name(), right) {
            nf = nf.with_name(format!("{}{}", f.name(), o.suffixes.0));
        }
        if nullable_left {
            nf = nf.with_nullable(true);
        }
        fields.push(nf);
    }
    if !o.how.left_only() {
        for f in right.fields() {
            let mut nf = f.as_ref().clone();
            if clash(f.name(), left) {
                nf = nf.with_name(format!("{}{}", f.name(), o.suffixes.1));
            }
            if nullable_right {
                nf = nf.with_nullable(true);
            }
            fields.push(nf);
        }
    }
    Arc::new(Schema::new(fields))
}

/// Joins `left` and `right` as `options` says.
///
/// ```
/// use deeprc_frame::{Table, JoinOptions, JoinType};
/// use deeprc_frame::arrow::array::{ArrayRef, Int64Array};
/// use std::sync::Arc;
/// let l = Table::from_columns(vec![("k", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef)]).unwrap();
/// let r = Table::from_columns(vec![("k", Arc::new(Int64Array::from(vec![2, 3, 3])) as ArrayRef)]).unwrap();
/// let j = l.join(&r, &JoinOptions::on(&["k"]).how(JoinType::Left)).unwrap();
/// assert_eq!(j.column_names(), vec!["k_x", "k_y"]);
/// assert_eq!(j.num_rows(), 4);
/// ```
///
/// # Errors
/// [`FrameError::ColumnNotFound`], [`FrameError::KeyTypeMismatch`],
/// [`FrameError::InvalidArgument`] (no keys, unpaired keys);
/// [`FrameError::TooManyRows`] when a side, or the output, has more than
/// [`MAX_ROWS`](crate::limits::MAX_ROWS) rows (checked before the output
/// grows past it).
pub fn join(left: &Table, right: &Table, options: &JoinOptions) -> Result<Table> {
    let keys = check_join_keys(left.schema(), right.schema(), options)?;
    check_rows("join", left.num_rows())?;
    check_rows("join", right.num_rows())?;
    let schema = join_schema(left.schema(), right.schema(), options);
    let lb = left.to_batch()?;
    let rb = right.to_batch()?;
    let (lk, rk) = encode_both(&lb, &rb, &keys)?;
    let pairs = match options.algorithm {
        JoinAlgorithm::Hash => hash_join_pairs(&lk, &rk, options.how)?,
        JoinAlgorithm::SortMerge => merge_join_pairs(&lk, &rk, options.how)?,
    };
    let out = materialize(&lb, &rb, &pairs, options.how, &schema)?;
    Ok(Table::from_batch_with_schema(schema, out))
}

pub(crate) fn encode_both(
    lb: &RecordBatch,
    rb: &RecordBatch,
    keys: &JoinKeys,
) -> Result<(KeyRows, KeyRows)> {
    let types: Vec<_> = keys
        .left
        .iter()
        .map(|&i| lb.schema().field(i).data_type().clone())
        .collect();
    let enc = KeyEncoder::new(&types)?;
    let lcols: Vec<ArrayRef> = keys
        .left
        .iter()
        .map(|&i| Arc::clone(lb.column(i)))
        .collect();
    let rcols: Vec<ArrayRef> = keys
        .right
        .iter()
        .map(|&i| Arc::clone(rb.column(i)))
        .collect();
    Ok((enc.encode(&lcols)?, enc.encode(&rcols)?))
}

/// Row index pairs of a join; `NONE` stands for "no row" (nulls). Both
/// sides have at most `MAX_ROWS` rows, so `NONE` is never a row, and the
/// pair generators stop with `TooManyRows` before the output passes the
/// limit.
pub(crate) struct Pairs {
    pub(crate) left: Vec<u32>,
    pub(crate) right: Vec<u32>,
}

const NONE: u32 = u32::MAX;

pub(crate) fn hash_join_pairs(lk: &KeyRows, rk: &KeyRows, how: JoinType) -> Result<Pairs> {
    let index = JoinIndex::build(rk);
    let nl = lk.len();
    let mut left = Vec::with_capacity(nl);
    let mut right = Vec::with_capacity(if how.left_only() { 0 } else { nl });
    let mut matched = if how.keeps_unmatched_right() {
        vec![false; rk.len()]
    } else {
        Vec::new()
    };
    for i in 0..nl {
        let m = index.matches(lk, i);
        match how {
            JoinType::LeftSemi => {
                if !m.is_empty() {
                    left.push(i as u32);
                }
            }
            JoinType::LeftAnti => {
                if m.is_empty() {
                    left.push(i as u32);
                }
            }
            _ => {
                if m.is_empty() {
                    if how.keeps_unmatched_left() {
                        check_more_rows("join", left.len(), 1)?;
                        left.push(i as u32);
                        right.push(NONE);
                    }
                } else {
                    check_more_rows("join", left.len(), m.len())?;
                    for &j in m {
                        left.push(i as u32);
                        right.push(j);
                    }
                    if !matched.is_empty() {
                        for &j in m {
                            matched[j as usize] = true;
                        }
                    }
                }
            }
        }
    }
    if how.keeps_unmatched_right() {
        let unmatched = matched.iter().filter(|&&m| !m).count();
        check_more_rows("join", left.len(), unmatched)?;
        for (j, &m) in matched.iter().enumerate() {
            if !m {
                left.push(NONE);
                right.push(j as u32);
            }
        }
    }
    Ok(Pairs { left, right })
}

fn cmp_rows(a: &KeyRows, i: usize, b: &KeyRows, j: usize) -> Ordering {
    match (a, b) {
        (KeyRows::Int { values: x, .. }, KeyRows::Int { values: y, .. }) => x[i].cmp(&y[j]),
        (KeyRows::Rows { rows: x, .. }, KeyRows::Rows { rows: y, .. }) => {
            x.row(i).as_ref().cmp(y.row(j).as_ref())
        }
        _ => Ordering::Equal,
    }
}

/// Non-null rows sorted by key (stable), and the null-key rows.
fn sorted_rows(k: &KeyRows) -> (Vec<u32>, Vec<u32>) {
    let (mut valid, nulls): (Vec<u32>, Vec<u32>) =
        (0..k.len() as u32).partition(|&i| !k.is_null(i as usize));
    valid.sort_by(|&a, &b| cmp_rows(k, a as usize, k, b as usize));
    (valid, nulls)
}

pub(crate) fn merge_join_pairs(lk: &KeyRows, rk: &KeyRows, how: JoinType) -> Result<Pairs> {
    let (ls, lnull) = sorted_rows(lk);
    let (rs, rnull) = sorted_rows(rk);
    let mut left = Vec::new();
    let mut right = Vec::new();
    let (mut a, mut b) = (0, 0);
    let emit_left_unmatched = |left: &mut Vec<u32>, right: &mut Vec<u32>, i: u32| {
        match how {
            JoinType::LeftAnti => left.push(i),
            JoinType::Left | JoinType::FullOuter => {
                check_more_rows("join", left.len(), 1)?;
                left.push(i);
                right.push(NONE);
            }
            _ => {}
        }
        Ok::<(), FrameError>(())
    };
    let emit_right_unmatched = |left: &mut Vec<u32>, right: &mut Vec<u32>, j: u32| {
        if how.keeps_unmatched_right() {
            check_more_rows("join", left.len(), 1)?;
            left.push(NONE);
            right.push(j);
        }
        Ok::<(), FrameError>(())
    };
    while a < ls.len() && b < rs.len() {
        match cmp_rows(lk, ls[a] as usize, rk, rs[b] as usize) {
            Ordering::Less => {
                emit_left_unmatched(&mut left, &mut right, ls[a])?;
                a += 1;
            }
            Ordering::Greater => {
                emit_right_unmatched(&mut left, &mut right, rs[b])?;
                b += 1;
            }
            Ordering::Equal => {
                let mut a_end = a + 1;
                while a_end < ls.len()
                    && cmp_rows(lk, ls[a] as usize, lk, ls[a_end] as usize) == Ordering::Equal
                {
                    a_end += 1;
                }
                let mut b_end = b + 1;
                while b_end < rs.len()
                    && cmp_rows(rk, rs[b] as usize, rk, rs[b_end] as usize) == Ordering::Equal
                {
                    b_end += 1;
                }
                if !how.left_only() {
                    check_more_pairs("join", left.len(), a_end - a, b_end - b)?;
                }
                for &i in &ls[a..a_end] {
                    match how {
                        JoinType::LeftSemi => left.push(i),
                        JoinType::LeftAnti => {}
                        _ => {
                            for &j in &rs[b..b_end] {
                                left.push(i);
                                right.push(j);
                            }
                        }
                    }
                }
                a = a_end;
                b = b_end;
            }
        }
    }
    for &i in ls[a..].iter().chain(&lnull) {
        emit_left_unmatched(&mut left, &mut right, i)?;
    }
    for &j in rs[b..].iter().chain(&rnull) {
        emit_right_unmatched(&mut left, &mut right, j)?;
    }
    Ok(Pairs { left, right })
}

/// An index array for `take`: `NONE` becomes null.
fn index_array(idx: Vec<u32>) -> UInt32Array {
    let has_none = idx.contains(&NONE);
    if !has_none {
        return UInt32Array::from(idx);
    }
    let valid = BooleanBuffer::from_iter(idx.iter().map(|&i| i != NONE));
    let values: Vec<u32> = idx
        .into_iter()
        .map(|i| if i == NONE { 0 } else { i })
        .collect();
    UInt32Array::new(values.into(), Some(NullBuffer::new(valid)))
}

fn is_identity(idx: &[u32], n: usize) -> bool {
    idx.len() == n && idx.iter().enumerate().all(|(i, &j)| i as u32 == j)
}

pub(crate) fn materialize(
    lb: &RecordBatch,
    rb: &RecordBatch,
    pairs: &Pairs,
    how: JoinType,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let rows = pairs.left.len();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let take_all = |b: &RecordBatch, idx: &[u32], cols: &mut Vec<ArrayRef>| -> Result<()> {
        if is_identity(idx, b.num_rows()) {
            cols.extend(b.columns().iter().cloned());
            return Ok(());
        }
        let ia = index_array(idx.to_vec());
        for c in b.columns() {
            cols.push(take(c.as_ref(), &ia, None).ctx("building join output")?);
        }
        Ok(())
    };
    take_all(lb, &pairs.left, &mut cols)?;
    if !how.left_only() {
        take_all(rb, &pairs.right, &mut cols)?;
    }
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        cols,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .ctx("assembling join output")
}
