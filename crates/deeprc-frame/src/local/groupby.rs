//! Group-by with sum, min, max, count, mean, var, std, nunique and quantile.
//!
//! Group ids come from the hash tables of `keys`; each
//! aggregate is one vectorised pass over (group id, value). Hand-written
//! because Arrow has no grouped kernels and DataFusion's accumulators are
//! internal to its `AggregateExec`; `quantile` (exact, linear interpolation
//! as in pandas) has no DataFusion counterpart in this version. The same
//! passes compute the partial states and merges of the distributed
//! group-by (`partial_aggregate`, `merge_partials`).

use crate::error::{Context, FrameError, Result};
use crate::limits::check_rows;
use crate::local::keys::{group_rows, Grouper, KeyEncoder};
use crate::local::sort::{order_codes, SortKey};
use crate::table::{column_index, Table};
use datafusion::arrow::array::{
    make_comparator, new_null_array, Array, ArrayRef, AsArray, Float64Array, Int64Array,
    RecordBatch, RecordBatchOptions, UInt32Array, UInt64Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::{cast, interleave, take, SortOptions};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt64Type,
};
use std::sync::Arc;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggFunc {
    /// Sum of non-null values (Int64 for signed and small unsigned integers,
    /// UInt64 for UInt64, Float64 for floats); null when a group has none.
    Sum,
    /// Smallest non-null value (any ordered type).
    Min,
    /// Largest non-null value (any ordered type).
    Max,
    /// Number of non-null values (Int64).
    Count,
    /// Mean of non-null values (Float64).
    Mean,
    /// Sample variance (n - 1 in the denominator; Float64, null below two values).
    Var,
    /// Sample standard deviation.
    Std,
    /// Number of distinct non-null values (Int64).
    NUnique,
    /// Exact quantile `q` in `[0, 1]` with linear interpolation (Float64).
    Quantile(f64),
}

impl AggFunc {
    /// The function's name as used in default output names.
    pub fn name(&self) -> &'static str {
        match self {
            AggFunc::Sum => "sum",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Count => "count",
            AggFunc::Mean => "mean",
            AggFunc::Var => "var",
            AggFunc::Std => "std",
            AggFunc::NUnique => "nunique",
            AggFunc::Quantile(_) => "quantile",
        }
    }

    /// Whether partial results can be merged (so that the distributed
    /// group-by pre-aggregates before shuffling).
    pub fn is_decomposable(&self) -> bool {
        !matches!(self, AggFunc::NUnique | AggFunc::Quantile(_))
    }
}

/// One aggregate: a function of a column, with an output name.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    /// The input column.
    pub column: String,
    /// The function.
    pub func: AggFunc,
    /// The output name (default `"{column}_{func}"`).
    pub alias: Option<String>,
}

macro_rules! agg_ctor {
    ($($name:ident => $f:expr, $doc:literal;)*) => {$(
        #[doc = $doc]
        pub fn $name(column: impl Into<String>) -> Self {
            Self { column: column.into(), func: $f, alias: None }
        }
    )*};
}

impl Agg {
    /// An aggregate of `column` by `func`.
    pub fn new(column: impl Into<String>, func: AggFunc) -> Self {
        Self {
            column: column.into(),
            func,
            alias: None,
        }
    }

    agg_ctor! {
        sum => AggFunc::Sum, "Sum of `column`.";
        min => AggFunc::Min, "Minimum of `column`.";
        max => AggFunc::Max, "Maximum of `column`.";
        count => AggFunc::Count, "Non-null count of `column`.";
        mean => AggFunc::Mean, "Mean of `column`.";
        var => AggFunc::Var, "Sample variance of `column`.";
        std => AggFunc::Std, "Sample standard deviation of `column`.";
        nunique => AggFunc::NUnique, "Distinct non-null values of `column`.";
        median => AggFunc::Quantile(0.5), "Median of `column` (quantile 0.5).";
    }

    /// Quantile `q` of `column`.
    pub fn quantile(column: impl Into<String>, q: f64) -> Self {
        Self::new(column, AggFunc::Quantile(q))
    }

    /// Names the output column.
    #[must_use]
    pub fn alias(mut self, name: impl Into<String>) -> Self {
        self.alias = Some(name.into());
        self
    }

    /// The output column name.
    pub fn output_name(&self) -> String {
        self.alias
            .clone()
            .unwrap_or_else(|| format!("{}_{}", self.column, self.func.name()))
    }
}

fn is_numeric(dt: &DataType) -> bool {
    dt.is_integer() || dt.is_floating()
}

/// Checks keys and aggregates against `schema`.
pub(crate) fn check_group_by(schema: &Schema, keys: &[&str], aggs: &[Agg]) -> Result<()> {
    for k in keys {
        column_index(schema, k)?;
    }
    for a in aggs {
        let i = column_index(schema, &a.column)?;
        let dt = schema.field(i).data_type();
        let needs_numeric = matches!(
            a.func,
            AggFunc::Sum | AggFunc::Mean | AggFunc::Var | AggFunc::Std | AggFunc::Quantile(_)
        );
        if needs_numeric && !is_numeric(dt) {
            return Err(FrameError::unsupported(
                "group_by",
                format!("{} of column {:?} of type {dt}", a.func.name(), a.column),
            ));
        }
        if let AggFunc::Quantile(q) = a.func {
            if !(0.0..=1.0).contains(&q) {
                return Err(FrameError::invalid(
                    "group_by",
                    format!("quantile {q} of {:?} is outside [0, 1]", a.column),
                ));
            }
        }
    }
    Ok(())
}

/// Groups `table` by `keys` and computes `aggs`. The output has the key
/// columns, then one column per aggregate; groups are in order of first
/// appearance. Null keys form a group. With no keys, the whole table is one
/// group (one output row, even for an empty table).
///
/// ```
/// use deeprc_frame::{Table, Agg};
/// use deeprc_frame::arrow::array::{ArrayRef, Int64Array, Float64Array};
/// use std::sync::Arc;
/// let t = Table::from_columns(vec![
///     ("k", Arc::new(Int64Array::from(vec![1, 2, 1])) as ArrayRef),
///     ("v", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef),
/// ]).unwrap();
/// let g = t.group_by(&["k"], &[Agg::sum("v"), Agg::mean("v").alias("m")]).unwrap();
/// assert_eq!(g.column_as::<f64>("v_sum").unwrap(), vec![Some(4.0), Some(2.0)]);
/// assert_eq!(g.column_as::<f64>("m").unwrap(), vec![Some(2.0), Some(2.0)]);
/// ```
///
/// # Errors
/// [`FrameError::ColumnNotFound`]; [`FrameError::Unsupported`] for a numeric
/// aggregate of a non-numeric column; [`FrameError::TooManyRows`] past
/// [`MAX_ROWS`](crate::limits::MAX_ROWS) rows.
pub fn group_by(table: &Table, keys: &[&str], aggs: &[Agg]) -> Result<Table> {
    check_group_by(table.schema(), keys, aggs)?;
    let g = Groups::of(&needed_columns(table, keys, aggs)?, keys)?;
    let mut fields = g.key_fields();
    let mut cols = g.key_columns()?;
    for a in aggs {
        let out = compute(a.func, &g.chunks(&a.column)?, &g)?;
        fields.push(Field::new(a.output_name(), out.data_type().clone(), true));
        cols.push(out);
    }
    g.finish(fields, cols)
}

/// The key and aggregated columns of `table` (zero-copy projection).
fn needed_columns(table: &Table, keys: &[&str], aggs: &[Agg]) -> Result<Table> {
    let mut cols: Vec<&str> = keys.to_vec();
    for a in aggs {
        if !cols.contains(&a.column.as_str()) {
            cols.push(&a.column);
        }
    }
    crate::local::project(table, &cols)
}

/// Group ids of the rows of a table's batches, computed batch by batch
/// (no concatenation); row numbers are global over the batches.
pub(crate) struct Groups {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// Start row of each batch, plus the total.
    offsets: Vec<usize>,
    gids: Vec<u32>,
    first_row: Vec<u32>,
    key_idx: Vec<usize>,
}

impl Groups {
    pub(crate) fn of(table: &Table, keys: &[&str]) -> Result<Self> {
        let schema = Arc::clone(table.schema());
        let key_idx = keys
            .iter()
            .map(|k| column_index(&schema, k))
            .collect::<Result<Vec<_>>>()?;
        check_rows("group_by", table.num_rows())?;
        let batches: Vec<RecordBatch> = table.non_empty_batches().cloned().collect();
        let mut offsets = vec![0];
        for b in &batches {
            offsets.push(offsets.last().copied().unwrap_or(0) + b.num_rows());
        }
        if key_idx.is_empty() {
            return Ok(Self {
                gids: vec![0; offsets[batches.len()]],
                first_row: vec![0],
                schema,
                batches,
                offsets,
                key_idx,
            });
        }
        let types: Vec<DataType> = key_idx
            .iter()
            .map(|&i| schema.field(i).data_type().clone())
            .collect();
        let enc = KeyEncoder::new(&types)?;
        let mut grouper = Grouper::new(offsets[batches.len()]);
        for (b, &base) in batches.iter().zip(&offsets) {
            let cols: Vec<ArrayRef> = key_idx.iter().map(|&i| Arc::clone(b.column(i))).collect();
            grouper.push(&enc.encode(&cols)?, base as u32);
        }
        let grouping = grouper.finish();
        Ok(Self {
            gids: grouping.gids,
            first_row: grouping.first_row,
            schema,
            batches,
            offsets,
            key_idx,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.first_row.len()
    }

    /// Column `name` of every batch.
    fn chunks(&self, name: &str) -> Result<Chunks<'_>> {
        let i = column_index(&self.schema, name)?;
        Ok(Chunks {
            arrays: self
                .batches
                .iter()
                .map(|b| Arc::clone(b.column(i)))
                .collect(),
            dt: self.schema.field(i).data_type().clone(),
            g: self,
        })
    }

    /// The gids of batch `k`.
    fn gids_of(&self, k: usize) -> &[u32] {
        &self.gids[self.offsets[k]..self.offsets[k + 1]]
    }

    /// (batch, row) of global row `r`.
    fn locate(&self, r: u32) -> (usize, usize) {
        let r = r as usize;
        let k = self.offsets.partition_point(|&o| o <= r) - 1;
        (k, r - self.offsets[k])
    }

    fn key_fields(&self) -> Vec<Field> {
        self.key_idx
            .iter()
            .map(|&i| self.schema.field(i).clone())
            .collect()
    }

    fn key_columns(&self) -> Result<Vec<ArrayRef>> {
        let rows: Vec<Option<u32>> = self.first_row.iter().map(|&r| Some(r)).collect();
        self.key_idx
            .iter()
            .map(|&i| {
                let arrays: Vec<ArrayRef> = self
                    .batches
                    .iter()
                    .map(|b| Arc::clone(b.column(i)))
                    .collect();
                self.gather(&arrays, self.schema.field(i).data_type(), &rows)
            })
            .collect()
    }

    /// Values at global rows (`None` gives a null), from per-batch arrays.
    fn gather(&self, arrays: &[ArrayRef], dt: &DataType, rows: &[Option<u32>]) -> Result<ArrayRef> {
        let null = new_null_array(dt, 1);
        let mut sources: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
        sources.push(null.as_ref());
        let extra = sources.len() - 1;
        let idx: Vec<(usize, usize)> = rows
            .iter()
            .map(|r| r.map_or((extra, 0), |r| self.locate(r)))
            .collect();
        interleave(&sources, &idx).ctx("gathering group values")
    }

    fn finish(&self, fields: Vec<Field>, cols: Vec<ArrayRef>) -> Result<Table> {
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(self.len())),
        )
        .ctx("assembling group-by output")?;
        Ok(Table::from_batch_with_schema(schema, batch))
    }
}

/// One column of a group-by input, batch by batch.
struct Chunks<'a> {
    arrays: Vec<ArrayRef>,
    dt: DataType,
    g: &'a Groups,
}

impl Chunks<'_> {
    /// (array, gids) of every batch.
    fn iter(&self) -> impl Iterator<Item = (&ArrayRef, &[u32])> {
        self.arrays
            .iter()
            .enumerate()
            .map(|(k, a)| (a, self.g.gids_of(k)))
    }

    /// Every batch cast to `dt`.
    fn cast(&self, dt: &DataType) -> Result<Chunks<'_>> {
        Ok(Chunks {
            arrays: self
                .arrays
                .iter()
                .map(|a| cast(a, dt).ctx("casting an aggregated column"))
                .collect::<Result<_>>()?,
            dt: dt.clone(),
            g: self.g,
        })
    }

    /// The whole column as one array (for the aggregates that need it).
    fn concat(&self) -> Result<ArrayRef> {
        if self.arrays.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(&self.dt));
        }
        let parts: Vec<&dyn Array> = self.arrays.iter().map(|a| a.as_ref()).collect();
        datafusion::arrow::compute::concat(&parts).ctx("concatenating a column")
    }
}

fn nulls_where_zero(counts: &[i64]) -> Option<NullBuffer> {
    if counts.iter().all(|&c| c > 0) {
        return None;
    }
    Some(NullBuffer::new(BooleanBuffer::from_iter(
        counts.iter().map(|&c| c > 0),
    )))
}

fn compute(func: AggFunc, col: &Chunks<'_>, g: &Groups) -> Result<ArrayRef> {
    let n = g.len();
    Ok(match func {
        AggFunc::Count => Arc::new(Int64Array::from(counts(col, g))),
        AggFunc::Sum => sum(col, g)?,
        AggFunc::Mean => {
            let (s, c) = sum_f64(col, g)?;
            let v: Vec<f64> = s
                .iter()
                .zip(&c)
                .map(|(s, &c)| s / c.max(1) as f64)
                .collect();
            Arc::new(Float64Array::new(v.into(), nulls_where_zero(&c)))
        }
        AggFunc::Var | AggFunc::Std => {
            let m = moments(col, g)?;
            finish_var(&m, func == AggFunc::Std)
        }
        AggFunc::Min | AggFunc::Max => extreme(col, g, func == AggFunc::Max)?,
        AggFunc::NUnique => nunique(&col.concat()?, g)?,
        AggFunc::Quantile(q) => quantile(&col.concat()?, g, q, n)?,
    })
}

fn counts(col: &Chunks<'_>, g: &Groups) -> Vec<i64> {
    let mut c = vec![0i64; g.len()];
    for (a, gids) in col.iter() {
        match a.logical_nulls() {
            None => {
                for &gid in gids {
                    c[gid as usize] += 1;
                }
            }
            Some(nulls) => {
                for (i, &gid) in gids.iter().enumerate() {
                    c[gid as usize] += nulls.is_valid(i) as i64;
                }
            }
        }
    }
    c
}

fn sum(col: &Chunks<'_>, g: &Groups) -> Result<ArrayRef> {
    let dt = col.dt.clone();
    if dt.is_floating() {
        let (s, c) = sum_f64(col, g)?;
        return Ok(Arc::new(Float64Array::new(s.into(), nulls_where_zero(&c))));
    }
    let c = counts(col, g);
    let nulls = nulls_where_zero(&c);
    if dt == DataType::UInt64 {
        let mut s = vec![0u64; g.len()];
        for (a, gids) in col.iter() {
            let a = a.as_primitive::<UInt64Type>();
            for (i, (&gid, &v)) in gids.iter().zip(a.values().iter()).enumerate() {
                if a.is_valid(i) {
                    s[gid as usize] = s[gid as usize].wrapping_add(v);
                }
            }
        }
        return Ok(Arc::new(UInt64Array::new(s.into(), nulls)));
    }
    let ints = col.cast(&DataType::Int64)?;
    let mut s = vec![0i64; g.len()];
    for (a, gids) in ints.iter() {
        let a = a.as_primitive::<Int64Type>();
        // Nulls hold arbitrary values: mask them.
        match a.nulls() {
            None => {
                for (&gid, &v) in gids.iter().zip(a.values().iter()) {
                    s[gid as usize] = s[gid as usize].wrapping_add(v);
                }
            }
            Some(nb) => {
                for (i, (&gid, &v)) in gids.iter().zip(a.values().iter()).enumerate() {
                    if nb.is_valid(i) {
                        s[gid as usize] = s[gid as usize].wrapping_add(v);
                    }
                }
            }
        }
    }
    Ok(Arc::new(Int64Array::new(s.into(), nulls)))
}

fn sum_f64(col: &Chunks<'_>, g: &Groups) -> Result<(Vec<f64>, Vec<i64>)> {
    let fl = col.cast(&DataType::Float64)?;
    let mut s = vec![0f64; g.len()];
    let mut c = vec![0i64; g.len()];
    for (a, gids) in fl.iter() {
        let a = a.as_primitive::<Float64Type>();
        match a.nulls() {
            None => {
                for (&gid, &v) in gids.iter().zip(a.values().iter()) {
                    s[gid as usize] += v;
                    c[gid as usize] += 1;
                }
            }
            Some(nb) => {
                for (i, (&gid, &v)) in gids.iter().zip(a.values().iter()).enumerate() {
                    if nb.is_valid(i) {
                        s[gid as usize] += v;
                        c[gid as usize] += 1;
                    }
                }
            }
        }
    }
    Ok((s, c))
}

/// Count, mean and sum of squared deviations per group (Welford).
pub(crate) struct Moments {
    n: Vec<i64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

fn moments(col: &Chunks<'_>, g: &Groups) -> Result<Moments> {
    let fl = col.cast(&DataType::Float64)?;
    let k = g.len();
    let mut m = Moments {
        n: vec![0; k],
        mean: vec![0.0; k],
        m2: vec![0.0; k],
    };
    for (a, gids) in fl.iter() {
        let a = a.as_primitive::<Float64Type>();
        for (i, (&gid, &x)) in gids.iter().zip(a.values().iter()).enumerate() {
            if a.is_null(i) {
                continue;
            }
            let gi = gid as usize;
            m.n[gi] += 1;
            let d = x - m.mean[gi];
            m.mean[gi] += d / m.n[gi] as f64;
            m.m2[gi] += d * (x - m.mean[gi]);
        }
    }
    Ok(m)
}

/// Merges partial moments (Chan et al.'s parallel algorithm).
fn merge_moments(n: &Chunks<'_>, mean: &Chunks<'_>, m2: &Chunks<'_>, g: &Groups) -> Moments {
    let k = g.len();
    let mut m = Moments {
        n: vec![0; k],
        mean: vec![0.0; k],
        m2: vec![0.0; k],
    };
    for (b, ((nn, gids), (mm, m22))) in n.iter().zip(mean.arrays.iter().zip(&m2.arrays)).enumerate()
    {
        let _ = b;
        let (nn, mm, m22) = (
            nn.as_primitive::<Int64Type>(),
            mm.as_primitive::<Float64Type>(),
            m22.as_primitive::<Float64Type>(),
        );
        for (i, &gid) in gids.iter().enumerate() {
            let nb = nn.value(i);
            if nb == 0 {
                continue;
            }
            let gi = gid as usize;
            let na = m.n[gi];
            let tot = na + nb;
            let d = mm.value(i) - m.mean[gi];
            m.mean[gi] += d * nb as f64 / tot as f64;
            m.m2[gi] += m22.value(i) + d * d * (na as f64) * (nb as f64) / tot as f64;
            m.n[gi] = tot;
        }
    }
    m
}

fn finish_var(m: &Moments, std: bool) -> ArrayRef {
    let v: Vec<f64> =
        m.n.iter()
            .zip(&m.m2)
            .map(|(&n, &m2)| {
                let var = if n > 1 { m2 / (n - 1) as f64 } else { 0.0 };
                if std {
                    var.sqrt()
                } else {
                    var
                }
            })
            .collect();
    let valid = BooleanBuffer::from_iter(m.n.iter().map(|&n| n > 1));
    Arc::new(Float64Array::new(v.into(), Some(NullBuffer::new(valid))))
}

/// Min or max by arg-min/arg-max, then a gather (keeps the input type).
fn extreme(col: &Chunks<'_>, g: &Groups, max: bool) -> Result<ArrayRef> {
    const NONE: u32 = u32::MAX;
    let k = g.len();
    let mut best = vec![NONE; k];
    let key = SortKey::asc("");
    if crate::local::sort::codes_supported(&col.dt) {
        let mut best_code = vec![0u64; k];
        for (b, (a, gids)) in col.iter().enumerate() {
            let base = g.offsets[b] as u32;
            let codes =
                order_codes(a, &key)?.ok_or_else(|| FrameError::internal("no order codes"))?;
            for (i, (&gid, &c)) in gids.iter().zip(codes.codes.iter()).enumerate() {
                if codes.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                    continue;
                }
                let gi = gid as usize;
                let better = best[gi] == NONE
                    || if max {
                        c > best_code[gi]
                    } else {
                        c < best_code[gi]
                    };
                if better {
                    best[gi] = base + i as u32;
                    best_code[gi] = c;
                }
            }
        }
        let rows: Vec<Option<u32>> = best.iter().map(|&b| (b != NONE).then_some(b)).collect();
        return g.gather(&col.arrays, &col.dt, &rows);
    }
    let whole = col.concat()?;
    let cmp =
        make_comparator(whole.as_ref(), whole.as_ref(), SortOptions::default()).map_err(|_| {
            FrameError::unsupported("group_by", format!("min/max of type {}", whole.data_type()))
        })?;
    for (i, &gid) in g.gids.iter().enumerate() {
        if whole.is_null(i) {
            continue;
        }
        let gi = gid as usize;
        let b = best[gi];
        let better = b == NONE || {
            let o = cmp(i, b as usize);
            if max {
                o.is_gt()
            } else {
                o.is_lt()
            }
        };
        if better {
            best[gi] = i as u32;
        }
    }
    let valid = BooleanBuffer::from_iter(best.iter().map(|&b| b != NONE));
    let values: Vec<u32> = best
        .iter()
        .map(|&b| if b == NONE { 0 } else { b })
        .collect();
    let idx = UInt32Array::new(values.into(), Some(NullBuffer::new(valid)));
    take(whole.as_ref(), &idx, None).ctx("taking min/max")
}

fn nunique(col: &ArrayRef, g: &Groups) -> Result<ArrayRef> {
    let gid_col: ArrayRef = Arc::new(UInt32Array::from(g.gids.clone()));
    let cols = vec![gid_col, Arc::clone(col)];
    let types: Vec<DataType> = cols.iter().map(|c| c.data_type().clone()).collect();
    let rows = KeyEncoder::new(&types)?.encode(&cols)?;
    let pairs = group_rows(&rows);
    let mut c = vec![0i64; g.len()];
    for &r in &pairs.first_row {
        if col.is_valid(r as usize) {
            c[g.gids[r as usize] as usize] += 1;
        }
    }
    Ok(Arc::new(Int64Array::from(c)))
}

fn quantile(col: &ArrayRef, g: &Groups, q: f64, k: usize) -> Result<ArrayRef> {
    let a = cast(col, &DataType::Float64).ctx("casting to Float64")?;
    let a = a.as_primitive::<Float64Type>();
    let mut offsets = vec![0usize; k + 1];
    for (i, &gid) in g.gids.iter().enumerate() {
        if a.is_valid(i) {
            offsets[gid as usize + 1] += 1;
        }
    }
    for i in 0..k {
        offsets[i + 1] += offsets[i];
    }
    let mut fill = offsets.clone();
    let mut vals = vec![0f64; offsets[k]];
    for (i, &gid) in g.gids.iter().enumerate() {
        if a.is_valid(i) {
            let f = &mut fill[gid as usize];
            vals[*f] = a.value(i);
            *f += 1;
        }
    }
    let mut out = vec![0f64; k];
    let mut valid = Vec::with_capacity(k);
    for gi in 0..k {
        let seg = &mut vals[offsets[gi]..offsets[gi + 1]];
        valid.push(!seg.is_empty());
        if seg.is_empty() {
            continue;
        }
        seg.sort_unstable_by(f64::total_cmp);
        let pos = q * (seg.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        out[gi] = seg[lo] + (seg[hi] - seg[lo]) * (pos - lo as f64);
    }
    Ok(Arc::new(Float64Array::new(
        out.into(),
        Some(NullBuffer::new(BooleanBuffer::from_iter(valid))),
    )))
}

// ---- distributed group-by: partial states and their merge ----

/// Name of partial column `j` of aggregate `i`.
fn partial_name(i: usize, j: usize) -> String {
    format!("__deeprc_p{i}_{j}")
}

/// Local pre-aggregation: key columns plus the partial state of every
/// (decomposable) aggregate.
pub(crate) fn partial_aggregate(table: &Table, keys: &[&str], aggs: &[Agg]) -> Result<Table> {
    let g = Groups::of(&needed_columns(table, keys, aggs)?, keys)?;
    let mut fields = g.key_fields();
    let mut cols = g.key_columns()?;
    let mut push = |name: String, a: ArrayRef| {
        fields.push(Field::new(name, a.data_type().clone(), true));
        cols.push(a);
    };
    for (i, a) in aggs.iter().enumerate() {
        let col = &g.chunks(&a.column)?;
        match a.func {
            AggFunc::Sum | AggFunc::Min | AggFunc::Max | AggFunc::Count => {
                push(partial_name(i, 0), compute(a.func, col, &g)?)
            }
            AggFunc::Mean => {
                let (s, c) = sum_f64(col, &g)?;
                push(partial_name(i, 0), Arc::new(Float64Array::from(s)));
                push(partial_name(i, 1), Arc::new(Int64Array::from(c)));
            }
            AggFunc::Var | AggFunc::Std => {
                let m = moments(col, &g)?;
                push(partial_name(i, 0), Arc::new(Int64Array::from(m.n)));
                push(partial_name(i, 1), Arc::new(Float64Array::from(m.mean)));
                push(partial_name(i, 2), Arc::new(Float64Array::from(m.m2)));
            }
            AggFunc::NUnique | AggFunc::Quantile(_) => {
                return Err(FrameError::internal(
                    "partial state of a non-decomposable aggregate",
                ))
            }
        }
    }
    g.finish(fields, cols)
}

/// Merges partial states (after the shuffle) into the final aggregates.
pub(crate) fn merge_partials(table: &Table, keys: &[&str], aggs: &[Agg]) -> Result<Table> {
    let g = Groups::of(table, keys)?;
    let mut fields = g.key_fields();
    let mut cols = g.key_columns()?;
    let p = |i: usize, j: usize| g.chunks(&partial_name(i, j));
    for (i, a) in aggs.iter().enumerate() {
        let out: ArrayRef = match a.func {
            AggFunc::Sum => compute(AggFunc::Sum, &p(i, 0)?, &g)?,
            AggFunc::Min | AggFunc::Max => compute(a.func, &p(i, 0)?, &g)?,
            AggFunc::Count => {
                let s = compute(AggFunc::Sum, &p(i, 0)?, &g)?;
                // A group exists only where some rank had rows: never null.
                let s = s.as_primitive::<Int64Type>();
                Arc::new(Int64Array::from(s.values().to_vec()))
            }
            AggFunc::Mean => {
                let (s, _) = sum_f64(&p(i, 0)?, &g)?;
                let c = compute(AggFunc::Sum, &p(i, 1)?, &g)?;
                let c = c.as_primitive::<Int64Type>().values().to_vec();
                let v: Vec<f64> = s
                    .iter()
                    .zip(&c)
                    .map(|(s, &c)| s / c.max(1) as f64)
                    .collect();
                Arc::new(Float64Array::new(v.into(), nulls_where_zero(&c)))
            }
            AggFunc::Var | AggFunc::Std => {
                let m = merge_moments(&p(i, 0)?, &p(i, 1)?, &p(i, 2)?, &g);
                finish_var(&m, a.func == AggFunc::Std)
            }
            AggFunc::NUnique | AggFunc::Quantile(_) => {
                return Err(FrameError::internal(
                    "merge of a non-decomposable aggregate",
                ))
            }
        };
        fields.push(Field::new(a.output_name(), out.data_type().clone(), true));
        cols.push(out);
    }
    g.finish(fields, cols)
}
