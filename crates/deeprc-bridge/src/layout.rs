//! Column layouts: which Arrow columns can feed a tensor, how they are
//! copied, and when they can be viewed without a copy.
//!
//! ```text
//!  Arrow column (chunked: one array per record batch)        tensor
//!  +-----------------+-----------------+--------+
//!  | chunk 0 values  | chunk 1 values  |  ...   |   zero-copy: a run of rows
//!  +-----------------+-----------------+--------+   inside ONE chunk, no nulls,
//!        ^ rows a..a+n ---------------------------> same dtype: [n] or [n, k]
//!                                                   (fixed-size list of k)
//!  several columns, shuffled rows, nulls, casts,    one copy into the staging
//!  normalisation -----------------------------------> buffer, row-major [n, F]
//! ```
//!
//! [`ZeroCopy`] says what to do when a view is not possible.

use crate::dtype::{DType, Native, TensorElement};
use crate::error::{BridgeError, Result};
use crate::mem::prefetch;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{self as adt, DataType, SchemaRef};
use std::sync::Arc;

/// What to do when a batch part could be handed to a tensor without a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// A view or an error ([`BridgeError::ZeroCopyUnavailable`]) naming
    /// why not.
    Require,
    /// A view where the layout allows, one copy into the staging buffer
    /// otherwise.
    #[default]
    Prefer,
    /// Always one copy into the staging buffer.
    Never,
}

/// What to do with nulls in a feature or target column.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum NullPolicy {
    /// Fail with [`BridgeError::NullsInColumn`] naming the column.
    #[default]
    Error,
    /// Replace a null with this value (in the column's units, before
    /// normalisation); nulls do not count in the statistics.
    Fill(f64),
    /// Leave out rows with a null: a row sample is dropped; in a time
    /// series the row is a gap that no window crosses.
    Skip,
}

/// A read-only view of Arrow memory: the buffer it lives in (kept alive by
/// the view), where it starts, its shape and strides in elements.
#[derive(Debug, Clone)]
pub struct ArrowView {
    pub(crate) buffer: Buffer,
    pub(crate) byte_offset: usize,
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
}

impl ArrowView {
    /// The first element.
    pub fn as_ptr(&self) -> *const u8 {
        self.buffer.as_slice()[self.byte_offset..].as_ptr()
    }

    /// The bytes from the first element to one past the last one.
    pub(crate) fn span_bytes(&self) -> &[u8] {
        let span = span_elements(&self.shape, &self.strides);
        &self.buffer.as_slice()[self.byte_offset..self.byte_offset + span * self.dtype.size()]
    }
}

/// Elements from the first to one past the last of a strided layout.
pub(crate) fn span_elements(shape: &[usize], strides: &[usize]) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    1 + shape
        .iter()
        .zip(strides)
        .map(|(&n, &s)| (n - 1) * s)
        .sum::<usize>()
}

/// Row-major strides (in elements) of a shape.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The element type a column of this Arrow type holds, if numeric.
fn native_kind(dt: &DataType) -> Option<()> {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Boolean => Some(()),
        _ => None,
    }
}

/// The `DType` an Arrow primitive type is viewed as without conversion.
fn view_dtype(dt: &DataType) -> Option<DType> {
    Some(match dt {
        DataType::Int8 => DType::I8,
        DataType::Int16 => DType::I16,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::UInt8 => DType::U8,
        DataType::Float32 => DType::F32,
        DataType::Float64 => DType::F64,
        _ => return None,
    })
}

/// Calls `$body` with `$vals: &[N]` for a primitive array `$arr`
/// (`$bool` for booleans, which have no slice).
macro_rules! with_values {
    ($arr:expr, $vals:ident => $body:expr, $b:ident => $bool:expr) => {{
        let a: &dyn Array = $arr;
        match a.data_type() {
            DataType::Int8 => {
                let $vals = a.as_primitive::<adt::Int8Type>().values().as_ref();
                $body
            }
            DataType::Int16 => {
                let $vals = a.as_primitive::<adt::Int16Type>().values().as_ref();
                $body
            }
            DataType::Int32 => {
                let $vals = a.as_primitive::<adt::Int32Type>().values().as_ref();
                $body
            }
            DataType::Int64 => {
                let $vals = a.as_primitive::<adt::Int64Type>().values().as_ref();
                $body
            }
            DataType::UInt8 => {
                let $vals = a.as_primitive::<adt::UInt8Type>().values().as_ref();
                $body
            }
            DataType::UInt16 => {
                let $vals = a.as_primitive::<adt::UInt16Type>().values().as_ref();
                $body
            }
            DataType::UInt32 => {
                let $vals = a.as_primitive::<adt::UInt32Type>().values().as_ref();
                $body
            }
            DataType::UInt64 => {
                let $vals = a.as_primitive::<adt::UInt64Type>().values().as_ref();
                $body
            }
            DataType::Float32 => {
                let $vals = a.as_primitive::<adt::Float32Type>().values().as_ref();
                $body
            }
            DataType::Float64 => {
                let $vals = a.as_primitive::<adt::Float64Type>().values().as_ref();
                $body
            }
            DataType::Boolean => {
                let $b = a.as_boolean();
                $bool
            }
            other => unreachable!("checked numeric, got {other}"),
        }
    }};
}

/// Calls `$body` with `$chunks: Vec<&[N]>`, the values of every chunk of
/// a numeric column (`$bool` with `Vec<&BooleanArray>` for booleans): the
/// type is dispatched once per call, not per row.
macro_rules! with_chunks {
    ($col:expr, $chunks:ident => $body:expr, $b:ident => $bool:expr) => {{
        macro_rules! typed {
            ($t:ty) => {{
                let $chunks: Vec<&[<$t as arrow::datatypes::ArrowPrimitiveType>::Native]> = $col
                    .values
                    .iter()
                    .map(|a| a.as_primitive::<$t>().values().as_ref())
                    .collect();
                $body
            }};
        }
        match &$col.value_type {
            DataType::Int8 => typed!(adt::Int8Type),
            DataType::Int16 => typed!(adt::Int16Type),
            DataType::Int32 => typed!(adt::Int32Type),
            DataType::Int64 => typed!(adt::Int64Type),
            DataType::UInt8 => typed!(adt::UInt8Type),
            DataType::UInt16 => typed!(adt::UInt16Type),
            DataType::UInt32 => typed!(adt::UInt32Type),
            DataType::UInt64 => typed!(adt::UInt64Type),
            DataType::Float32 => typed!(adt::Float32Type),
            DataType::Float64 => typed!(adt::Float64Type),
            DataType::Boolean => {
                let $b: Vec<&BooleanArray> = $col.values.iter().map(|a| a.as_boolean()).collect();
                $bool
            }
            other => unreachable!("checked numeric, got {other}"),
        }
    }};
}

/// Where and how a column's values are written.
#[derive(Debug, Clone, Copy)]
struct Kernel {
    w: usize,
    stride: usize,
    col_offset: usize,
    affine: Option<Affine>,
    fill: f64,
}

impl Kernel {
    #[inline]
    fn conv<T: TensorElement>(&self, v: f64) -> T {
        match self.affine {
            Some(a) => T::from_f64((v - a.shift) * a.inv_scale),
            None => T::from_f64(v),
        }
    }

    /// A contiguous run `src` (`n * w` values) of rows starting at chunk
    /// row `start`.
    #[inline]
    fn run<N: Native, T: TensorElement>(
        &self,
        src: &[N],
        nulls: Option<&arrow::buffer::NullBuffer>,
        start: usize,
        out: &mut [T],
    ) {
        let (w, off) = (self.w, self.col_offset);
        let rows = out.chunks_mut(self.stride);
        match (nulls, self.affine) {
            (None, None) if w == 1 => {
                for (row, v) in rows.zip(src) {
                    row[off] = v.convert();
                }
            }
            (None, Some(a)) if w == 1 => {
                for (row, v) in rows.zip(src) {
                    row[off] = T::from_f64((v.as_f64() - a.shift) * a.inv_scale);
                }
            }
            _ => {
                for (j, (row, vals)) in rows.zip(src.chunks_exact(w)).enumerate() {
                    let dst = &mut row[off..off + w];
                    if nulls.is_some_and(|nb| nb.is_null(start + j)) {
                        dst.fill(self.conv(self.fill));
                    } else if self.affine.is_none() {
                        for (d, v) in dst.iter_mut().zip(vals) {
                            *d = v.convert();
                        }
                    } else {
                        for (d, v) in dst.iter_mut().zip(vals) {
                            *d = self.conv(v.as_f64());
                        }
                    }
                }
            }
        }
    }

    /// Rows at `locs` (chunk, row in chunk) of `chunks`.
    #[inline]
    fn scatter<N: Native, T: TensorElement>(
        &self,
        chunks: &[&[N]],
        nulls: &[Option<arrow::buffer::NullBuffer>],
        locs: &[(usize, usize)],
        out: &mut [T],
    ) {
        let (w, off) = (self.w, self.col_offset);
        let any_nulls = nulls.iter().any(Option::is_some);
        const AHEAD: usize = 8;
        for (j, (row, &(c, o))) in out.chunks_mut(self.stride).zip(locs).enumerate() {
            if let Some(&(nc, no)) = locs.get(j + AHEAD) {
                prefetch(chunks[nc].as_ptr().wrapping_add(no * w));
            }
            let dst = &mut row[off..off + w];
            if any_nulls && nulls[c].as_ref().is_some_and(|nb| nb.is_null(o)) {
                dst.fill(self.conv(self.fill));
                continue;
            }
            let src = &chunks[c][o * w..(o + 1) * w];
            match self.affine {
                None => {
                    for (d, v) in dst.iter_mut().zip(src) {
                        *d = v.convert();
                    }
                }
                Some(a) => {
                    for (d, v) in dst.iter_mut().zip(src) {
                        *d = T::from_f64((v.as_f64() - a.shift) * a.inv_scale);
                    }
                }
            }
        }
    }
}

/// Normalisation applied while copying: `(x - shift) * inv_scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Affine {
    pub(crate) shift: f64,
    pub(crate) inv_scale: f64,
}

/// A numeric column of a local partition: one array per record batch.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// The value arrays per chunk (the child arrays of a fixed-size list).
    values: Vec<ArrayRef>,
    /// Row validity per chunk (`None`: no nulls in that chunk).
    nulls: Vec<Option<arrow::buffer::NullBuffer>>,
    /// Prefix sums of chunk lengths (rows), `len = chunks + 1`.
    offsets: Vec<usize>,
    /// Values per row: 1, or the size of the fixed-size list.
    pub(crate) width: usize,
    pub(crate) is_list: bool,
    /// The Arrow type of the values.
    pub(crate) value_type: DataType,
}

impl Column {
    /// Resolves a numeric column of `batches`.
    ///
    /// # Errors
    /// [`BridgeError::ColumnNotFound`], [`BridgeError::NotNumeric`].
    pub(crate) fn resolve(schema: &SchemaRef, batches: &[RecordBatch], name: &str) -> Result<Self> {
        let idx = schema
            .index_of(name)
            .map_err(|_| BridgeError::ColumnNotFound {
                column: name.to_string(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            })?;
        let dt = schema.field(idx).data_type().clone();
        let not_numeric = || BridgeError::NotNumeric {
            column: name.to_string(),
            dtype: dt.clone(),
        };
        let (width, is_list, value_type) = match &dt {
            DataType::FixedSizeList(child, k) if native_kind(child.data_type()).is_some() => (
                usize::try_from(*k).map_err(|_| not_numeric())?,
                true,
                child.data_type().clone(),
            ),
            t if native_kind(t).is_some() => (1, false, t.clone()),
            _ => return Err(not_numeric()),
        };
        let mut values = Vec::with_capacity(batches.len());
        let mut nulls = Vec::with_capacity(batches.len());
        let mut offsets = Vec::with_capacity(batches.len() + 1);
        offsets.push(0);
        for b in batches {
            let col = b.column(idx);
            if is_list {
                let l: &FixedSizeListArray = col.as_fixed_size_list();
                // Rows are null when the list is null or any of its values is.
                let mut row_nulls = l.nulls().cloned();
                let child = l.values();
                if child.null_count() > 0 {
                    let cn = child.logical_nulls().expect("nulls counted");
                    let valid: BooleanArray = (0..l.len())
                        .map(|r| {
                            let o = r * width;
                            Some(
                                (o..o + width).all(|i| cn.is_valid(i))
                                    && row_nulls.as_ref().is_none_or(|n| n.is_valid(r)),
                            )
                        })
                        .collect();
                    row_nulls = Some(arrow::buffer::NullBuffer::from(valid.values().clone()));
                }
                values.push(child.slice(0, l.len() * width));
                nulls.push(row_nulls.filter(|n| n.null_count() > 0));
            } else {
                values.push(Arc::clone(col));
                nulls.push(col.logical_nulls().filter(|n| n.null_count() > 0));
            }
            offsets.push(offsets.last().copied().unwrap_or(0) + col.len());
        }
        Ok(Column {
            name: name.to_string(),
            values,
            nulls,
            offsets,
            width,
            is_list,
            value_type,
        })
    }

    /// Rows in the partition.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }

    /// Null rows in the partition.
    pub(crate) fn null_count(&self) -> usize {
        self.nulls.iter().flatten().map(|n| n.null_count()).sum()
    }

    /// The chunk holding `row`, and the row's offset in it.
    #[inline]
    pub(crate) fn locate(&self, row: usize) -> (usize, usize) {
        let c = self.offsets.partition_point(|&o| o <= row) - 1;
        (c, row - self.offsets[c])
    }

    /// Whether `row` is valid (not null).
    #[inline]
    pub(crate) fn is_valid(&self, row: usize) -> bool {
        let (c, o) = self.locate(row);
        self.nulls[c].as_ref().is_none_or(|n| n.is_valid(o))
    }

    /// Calls `f(row, value)` for every value of the rows `range` that is not
    /// null (`width` values per row).
    pub(crate) fn for_each_valid(&self, range: std::ops::Range<usize>, mut f: impl FnMut(f64)) {
        let w = self.width;
        for c in 0..self.values.len() {
            let (lo, hi) = (
                self.offsets[c].max(range.start),
                self.offsets[c + 1].min(range.end),
            );
            if lo >= hi {
                continue;
            }
            let (a, b) = (lo - self.offsets[c], hi - self.offsets[c]);
            let nulls = self.nulls[c].as_ref();
            with_values!(self.values[c].as_ref(), vals => {
                for r in a..b {
                    if nulls.is_none_or(|n| n.is_valid(r)) {
                        for v in &vals[r * w..(r + 1) * w] {
                            f(v.as_f64());
                        }
                    }
                }
            }, bools => {
                for r in a..b {
                    if nulls.is_none_or(|n| n.is_valid(r)) {
                        for i in r * w..(r + 1) * w {
                            f(bools.value(i).as_f64());
                        }
                    }
                }
            })
        }
    }

    /// Copies rows into `out`: row `rows[j]`'s `width` values go to
    /// `out[j * stride + col_offset ..][..width]`, converted to `T`, with
    /// `affine` applied and nulls replaced by `fill` (rows must be valid
    /// when `fill` is `None`).
    pub(crate) fn gather<T: TensorElement>(
        &self,
        rows: &[usize],
        out: &mut [T],
        stride: usize,
        col_offset: usize,
        affine: Option<Affine>,
        fill: Option<f64>,
    ) {
        // Fast path: one contiguous run inside one chunk.
        if let (Some(&first), Some(&last)) = (rows.first(), rows.last()) {
            let (c, a) = self.locate(first);
            if last < self.offsets[c + 1] && rows.windows(2).all(|p| p[1] == p[0] + 1) {
                self.gather_run(c, a, rows.len(), out, stride, col_offset, affine, fill);
                return;
            }
        }
        let locs: Vec<(usize, usize)> = rows.iter().map(|&r| self.locate(r)).collect();
        let k = Kernel {
            w: self.width,
            stride,
            col_offset,
            affine,
            fill: fill.unwrap_or(f64::NAN),
        };
        let nulls = &self.nulls;
        with_chunks!(self, chunks => k.scatter(&chunks, nulls, &locs, out), bools => {
            for (j, &(c, o)) in locs.iter().enumerate() {
                let valid = nulls[c].as_ref().is_none_or(|n| n.is_valid(o));
                for i in 0..k.w {
                    let v = if valid { bools[c].value(o * k.w + i).as_f64() } else { k.fill };
                    out[j * stride + col_offset + i] = k.conv(v);
                }
            }
        })
    }

    /// Copies the rows `range` like [`Column::gather`] (row `range.start + j`
    /// to `out[j * stride + col_offset ..]`), chunk by chunk.
    pub(crate) fn gather_range<T: TensorElement>(
        &self,
        range: std::ops::Range<usize>,
        out: &mut [T],
        stride: usize,
        col_offset: usize,
        affine: Option<Affine>,
        fill: Option<f64>,
    ) {
        for c in 0..self.values.len() {
            let (lo, hi) = (
                self.offsets[c].max(range.start),
                self.offsets[c + 1].min(range.end),
            );
            if lo < hi {
                let dst = &mut out[(lo - range.start) * stride..];
                self.gather_run(
                    c,
                    lo - self.offsets[c],
                    hi - lo,
                    dst,
                    stride,
                    col_offset,
                    affine,
                    fill,
                );
            }
        }
    }

    /// Rows `start..start + n` of chunk `c` into `out` (row j at `j * stride`).
    #[allow(clippy::too_many_arguments)]
    fn gather_run<T: TensorElement>(
        &self,
        c: usize,
        start: usize,
        n: usize,
        out: &mut [T],
        stride: usize,
        col_offset: usize,
        affine: Option<Affine>,
        fill: Option<f64>,
    ) {
        let k = Kernel {
            w: self.width,
            stride,
            col_offset,
            affine,
            fill: fill.unwrap_or(f64::NAN),
        };
        let nulls = self.nulls[c].as_ref();
        with_values!(self.values[c].as_ref(), vals => {
            k.run(&vals[start * k.w..(start + n) * k.w], nulls, start, out)
        }, bools => {
            for j in 0..n {
                let valid = nulls.is_none_or(|nb| nb.is_valid(start + j));
                for i in 0..k.w {
                    let v = if valid { bools.value((start + j) * k.w + i).as_f64() } else { k.fill };
                    out[j * stride + col_offset + i] = k.conv(v);
                }
            }
        })
    }

    /// A zero-copy view of rows `start..start + n` as a `[n]` or
    /// `[n, width]` tensor of `dtype`, or why not.
    pub(crate) fn view(
        &self,
        start: usize,
        n: usize,
        dtype: DType,
        shape_2d: bool,
    ) -> std::result::Result<ArrowView, String> {
        if n == 0 {
            return Err("empty batch".into());
        }
        let (c, a) = self.locate(start);
        if start + n > self.offsets[c + 1] {
            return Err(format!(
                "rows {start}..{} span two record batches of column {:?}",
                start + n,
                self.name
            ));
        }
        let Some(vt) = view_dtype(&self.value_type) else {
            return Err(format!(
                "column {:?} is {} (no tensor element type)",
                self.name, self.value_type
            ));
        };
        if vt != dtype {
            return Err(format!(
                "column {:?} is {}, the batch asks for {dtype}",
                self.name, self.value_type
            ));
        }
        if let Some(nb) = &self.nulls[c] {
            let nulls = (a..a + n).filter(|&r| nb.is_null(r)).count();
            if nulls > 0 {
                return Err(format!(
                    "column {:?} has {nulls} null(s) in these rows",
                    self.name
                ));
            }
        }
        let data = self.values[c].to_data();
        let buffer = data.buffers()[0].clone();
        let size = dtype.size();
        let byte_offset = (data.offset() + a * self.width) * size;
        if (buffer.as_ptr() as usize + byte_offset) % size != 0 {
            return Err(format!(
                "column {:?} is not aligned to {size} bytes",
                self.name
            ));
        }
        let (shape, strides) = if shape_2d || self.is_list {
            (vec![n, self.width], vec![self.width, 1])
        } else {
            (vec![n], vec![1])
        };
        Ok(ArrowView {
            buffer,
            byte_offset,
            dtype,
            shape,
            strides,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn batches() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float32, true),
            Field::new("b", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let b1 = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Float32Array::from(vec![Some(1.0), Some(2.0), None])),
                Arc::new(Int64Array::from(vec![10, 20, 30])),
                Arc::new(StringArray::from(vec!["x", "y", "z"])),
            ],
        )
        .unwrap();
        let b2 = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Float32Array::from(vec![Some(4.0), Some(5.0)])),
                Arc::new(Int64Array::from(vec![40, 50])),
                Arc::new(StringArray::from(vec!["u", "v"])),
            ],
        )
        .unwrap();
        (schema, vec![b1, b2])
    }

    #[test]
    fn resolve_checks_names_and_types() {
        let (s, b) = batches();
        assert!(
            matches!(Column::resolve(&s, &b, "zz"), Err(BridgeError::ColumnNotFound { column, .. }) if column == "zz")
        );
        assert!(
            matches!(Column::resolve(&s, &b, "s"), Err(BridgeError::NotNumeric { column, .. }) if column == "s")
        );
        let a = Column::resolve(&s, &b, "a").unwrap();
        assert_eq!((a.len(), a.null_count()), (5, 1));
        assert_eq!(a.locate(3), (1, 0));
        assert!(!a.is_valid(2));
    }

    #[test]
    fn gather_converts_fills_and_normalises() {
        let (s, b) = batches();
        let a = Column::resolve(&s, &b, "a").unwrap();
        let bcol = Column::resolve(&s, &b, "b").unwrap();
        let mut out = vec![0f32; 8];
        a.gather(&[4, 2, 0, 1], &mut out, 2, 0, None, Some(-1.0));
        bcol.gather(
            &[4, 2, 0, 1],
            &mut out,
            2,
            1,
            Some(Affine {
                shift: 10.0,
                inv_scale: 0.1,
            }),
            None,
        );
        assert_eq!(out, vec![5.0, 4.0, -1.0, 2.0, 1.0, 0.0, 2.0, 1.0]);
    }

    #[test]
    fn views_share_memory_and_say_why_not() {
        let (s, b) = batches();
        let bcol = Column::resolve(&s, &b, "b").unwrap();
        let v = bcol.view(3, 2, DType::I64, false).unwrap();
        let arr = b[1].column(1).as_primitive::<adt::Int64Type>();
        assert_eq!(v.as_ptr(), arr.values().as_ptr().cast::<u8>());
        assert!(bcol
            .view(2, 2, DType::I64, false)
            .unwrap_err()
            .contains("span two record batches"));
        assert!(bcol
            .view(0, 2, DType::F32, false)
            .unwrap_err()
            .contains("asks for f32"));
        let a = Column::resolve(&s, &b, "a").unwrap();
        assert!(a
            .view(1, 2, DType::F32, false)
            .unwrap_err()
            .contains("null"));
        assert_eq!(contiguous_strides(&[4, 3, 2]), vec![6, 2, 1]);
        assert_eq!(span_elements(&[2, 3], &[5, 1]), 8);
    }
}
