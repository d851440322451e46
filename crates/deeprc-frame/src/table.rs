//! [`Table`]: a schema plus Arrow record batches.

use crate::context::FrameContext;
use crate::error::{Context, FrameError, Result};
use crate::local::{self, Agg, JoinOptions, SortKey, UniqueOptions};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use std::sync::Arc;

/// A table: a schema plus zero or more Arrow [`RecordBatch`]es of that schema.
///
/// Conversions to and from `RecordBatch`es, DataFusion `MemTable`s and
/// `DataFrame`s share the column buffers (no copy). Operators come in two
/// forms: free functions in [`crate::local`] and the methods below.
///
/// ```
/// use deeprc_frame::{Table, SortKey};
/// use deeprc_frame::arrow::array::{ArrayRef, Int64Array, Float64Array};
/// use std::sync::Arc;
///
/// let t = Table::from_columns(vec![
///     ("k", Arc::new(Int64Array::from(vec![3, 1, 2])) as ArrayRef),
///     ("v", Arc::new(Float64Array::from(vec![0.3, 0.1, 0.2])) as ArrayRef),
/// ]).unwrap();
/// let sorted = t.sort(&[SortKey::asc("k")]).unwrap();
/// assert_eq!(sorted.column_as::<i64>("k").unwrap(), vec![Some(1), Some(2), Some(3)]);
/// ```
#[derive(Debug, Clone)]
pub struct Table {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl Table {
    /// A table of `batches`, which must have `schema`'s column names and
    /// types (nullability and metadata may differ: the batches are re-labelled
    /// with `schema`, without copying).
    pub fn try_new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            if Arc::ptr_eq(&b.schema(), &schema) {
                out.push(b);
                continue;
            }
            check_same_columns("Table::try_new", &schema, &b.schema())?;
            if b.schema().as_ref() == schema.as_ref() {
                out.push(b);
            } else {
                let relabelled = RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    b.columns().to_vec(),
                    &datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(b.num_rows())),
                )
                .ctx("relabelling a batch with the table's schema")?;
                out.push(relabelled);
            }
        }
        Ok(Self {
            schema,
            batches: out,
        })
    }

    /// The same columns under `schema`, which may rename them (types must
    /// match by position; no copy).
    ///
    /// # Errors
    /// [`FrameError::IncompatibleSchemas`] when the number or types of columns differ.
    pub fn with_schema(&self, schema: SchemaRef) -> Result<Table> {
        let (a, b) = (self.schema.fields(), schema.fields());
        if a.len() != b.len() {
            return Err(FrameError::IncompatibleSchemas {
                op: "Table::with_schema",
                column: String::new(),
                detail: format!("{} columns vs {}", a.len(), b.len()),
            });
        }
        for (x, y) in a.iter().zip(b.iter()) {
            if x.data_type() != y.data_type() {
                return Err(FrameError::IncompatibleSchemas {
                    op: "Table::with_schema",
                    column: x.name().clone(),
                    detail: format!("type {} vs {}", x.data_type(), y.data_type()),
                });
            }
        }
        let batches = self
            .batches
            .iter()
            .map(|b| {
                RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    b.columns().to_vec(),
                    &datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(b.num_rows())),
                )
                .ctx("relabelling a batch")
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Table { schema, batches })
    }

    /// An empty table of `schema`.
    pub fn empty(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: Vec::new(),
        }
    }

    /// A table of one batch (zero-copy).
    pub fn from_batch(batch: RecordBatch) -> Self {
        Self {
            schema: batch.schema(),
            batches: vec![batch],
        }
    }

    /// A table of several batches; the schema is the first batch's.
    pub fn from_batches(batches: Vec<RecordBatch>) -> Result<Self> {
        let Some(first) = batches.first() else {
            return Err(FrameError::invalid(
                "Table::from_batches",
                "no batch given (use Table::empty for an empty table)",
            ));
        };
        Self::try_new(first.schema(), batches)
    }

    /// A table of named columns of equal length (all nullable).
    pub fn from_columns(columns: Vec<(&str, ArrayRef)>) -> Result<Self> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect())
            .ctx("building a table from columns")?;
        Ok(Self::from_batch(batch))
    }

    /// The schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The batches.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// The batches, by value.
    pub fn into_batches(self) -> Vec<RecordBatch> {
        self.batches
    }

    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The number of columns.
    pub fn num_columns(&self) -> usize {
        self.schema.fields().len()
    }

    /// `true` when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.num_rows() == 0
    }

    /// The column names, in order.
    pub fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The position of column `name`, or [`FrameError::ColumnNotFound`].
    pub fn column_index(&self, name: &str) -> Result<usize> {
        column_index(&self.schema, name)
    }

    /// Column `name` as one array (concatenated when there are several
    /// batches; zero-copy when there is one).
    pub fn column(&self, name: &str) -> Result<ArrayRef> {
        let i = self.column_index(name)?;
        match self.batches.len() {
            0 => Ok(datafusion::arrow::array::new_empty_array(
                self.schema.field(i).data_type(),
            )),
            1 => Ok(Arc::clone(self.batches[0].column(i))),
            _ => {
                let parts: Vec<&dyn datafusion::arrow::array::Array> =
                    self.batches.iter().map(|b| b.column(i).as_ref()).collect();
                datafusion::arrow::compute::concat(&parts).ctx("concatenating a column")
            }
        }
    }

    /// Column `name` as a vector of optional native values (for tests and
    /// small results): the column is cast to `T`'s Arrow type first.
    pub fn column_as<T: NativeColumn>(&self, name: &str) -> Result<Vec<Option<T>>> {
        T::from_array(&self.column(name)?)
    }

    /// The table as one batch: zero-copy when it has one batch, a
    /// concatenation otherwise.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        match self.batches.len() {
            1 => Ok(self.batches[0].clone()),
            _ => concat_batches(&self.schema, &self.batches).ctx("concatenating batches"),
        }
    }

    /// The same table with at most one batch.
    pub fn compact(&self) -> Result<Table> {
        if self.batches.len() <= 1 {
            return Ok(self.clone());
        }
        Ok(Table::from_batch_with_schema(
            Arc::clone(&self.schema),
            self.to_batch()?,
        ))
    }

    /// A table of batches that already carry `schema` (slices of a table's
    /// own batches): no check.
    pub(crate) fn from_parts(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self { schema, batches }
    }

    pub(crate) fn from_batch_with_schema(schema: SchemaRef, batch: RecordBatch) -> Self {
        Self {
            schema,
            batches: vec![batch],
        }
    }

    /// The batches without empty ones.
    pub(crate) fn non_empty_batches(&self) -> impl Iterator<Item = &RecordBatch> {
        self.batches.iter().filter(|b| b.num_rows() > 0)
    }

    /// A DataFusion `MemTable` sharing this table's batches.
    pub fn to_mem_table(&self) -> Result<MemTable> {
        MemTable::try_new(Arc::clone(&self.schema), vec![self.batches.clone()])
            .ctx("making a MemTable")
    }

    /// A DataFusion `DataFrame` over this table (zero-copy).
    pub fn to_dataframe(&self, ctx: &FrameContext) -> Result<datafusion::dataframe::DataFrame> {
        ctx.session()
            .read_table(Arc::new(self.to_mem_table()?))
            .ctx("making a DataFrame")
    }

    /// Runs a DataFusion `DataFrame` and collects it into a table.
    pub fn from_dataframe(
        ctx: &FrameContext,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<Table> {
        ctx.collect(df)
    }

    /// The table formatted as a text grid (for printing small tables).
    pub fn pretty(&self) -> Result<String> {
        Ok(
            datafusion::arrow::util::pretty::pretty_format_batches(&self.batches)
                .ctx("formatting a table")?
                .to_string(),
        )
    }

    // ---- local operators (see `crate::local`) ----

    /// The columns `columns`, in that order (zero-copy).
    pub fn project(&self, columns: &[&str]) -> Result<Table> {
        local::project(self, columns)
    }

    /// The rows where the DataFusion expression `predicate` is true.
    pub fn filter(&self, predicate: &Expr) -> Result<Table> {
        local::filter(self, predicate)
    }

    /// The rows where the SQL expression `predicate` (e.g. `"a > 3 AND b IS NOT NULL"`) is true.
    pub fn filter_sql(&self, predicate: &str) -> Result<Table> {
        local::filter_sql(self, predicate)
    }

    /// Adds (or replaces) column `name` computed by `expr`.
    pub fn with_column(&self, name: &str, expr: &Expr) -> Result<Table> {
        local::with_column(self, name, expr)
    }

    /// Adds (or replaces) column `name` computed by the SQL expression `sql`.
    pub fn with_column_sql(&self, name: &str, sql: &str) -> Result<Table> {
        local::with_column_sql(self, name, sql)
    }

    /// Renames columns (`(old, new)` pairs).
    pub fn rename(&self, pairs: &[(&str, &str)]) -> Result<Table> {
        local::rename(self, pairs)
    }

    /// Rows `offset..offset + len` (clamped to the table).
    pub fn slice(&self, offset: usize, len: usize) -> Table {
        local::slice(self, offset, len)
    }

    /// The first `n` rows.
    pub fn head(&self, n: usize) -> Table {
        local::slice(self, 0, n)
    }

    /// The last `n` rows.
    pub fn tail(&self, n: usize) -> Table {
        let rows = self.num_rows();
        local::slice(self, rows.saturating_sub(n), n)
    }

    /// Sorts by `keys`.
    pub fn sort(&self, keys: &[SortKey]) -> Result<Table> {
        local::sort(self, keys)
    }

    /// Joins with `right`.
    pub fn join(&self, right: &Table, options: &JoinOptions) -> Result<Table> {
        local::join(self, right, options)
    }

    /// Groups by `keys` and aggregates.
    pub fn group_by(&self, keys: &[&str], aggs: &[Agg]) -> Result<Table> {
        local::group_by(self, keys, aggs)
    }

    /// Drops duplicate rows.
    pub fn unique(&self, options: &UniqueOptions) -> Result<Table> {
        local::unique(self, options)
    }

    /// Distinct rows of `self` and `other`.
    pub fn union(&self, other: &Table) -> Result<Table> {
        local::union(self, other)
    }

    /// Distinct rows of `self` that are also in `other`.
    pub fn intersect(&self, other: &Table) -> Result<Table> {
        local::intersect(self, other)
    }

    /// Distinct rows of `self` that are not in `other`.
    pub fn subtract(&self, other: &Table) -> Result<Table> {
        local::subtract(self, other)
    }

    /// `true` when both tables have the same columns and the same rows in
    /// the same order.
    pub fn equals(&self, other: &Table) -> Result<bool> {
        local::equals(self, other)
    }

    /// `true` when both tables have the same columns and the same multiset
    /// of rows, in any order.
    pub fn equals_unordered(&self, other: &Table) -> Result<bool> {
        local::equals_unordered(self, other)
    }

    /// The rows of all `tables`, in order (zero-copy).
    pub fn concat(tables: &[Table]) -> Result<Table> {
        local::concat(tables)
    }
}

impl From<RecordBatch> for Table {
    fn from(batch: RecordBatch) -> Self {
        Table::from_batch(batch)
    }
}

impl TryFrom<Table> for RecordBatch {
    type Error = FrameError;

    fn try_from(t: Table) -> Result<Self> {
        t.to_batch()
    }
}

/// The position of `name` in `schema`, or [`FrameError::ColumnNotFound`].
pub(crate) fn column_index(schema: &Schema, name: &str) -> Result<usize> {
    schema
        .index_of(name)
        .map_err(|_| FrameError::ColumnNotFound {
            column: name.to_string(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })
}

/// Checks that two schemas have the same column names and types.
pub(crate) fn check_same_columns(op: &'static str, a: &Schema, b: &Schema) -> Result<()> {
    if let Some((column, detail)) = first_difference(a, b) {
        return Err(FrameError::IncompatibleSchemas { op, column, detail });
    }
    Ok(())
}

/// The first column where two schemas differ in name or type.
pub(crate) fn first_difference(a: &Schema, b: &Schema) -> Option<(String, String)> {
    let (fa, fb) = (a.fields(), b.fields());
    for i in 0..fa.len().max(fb.len()) {
        match (fa.get(i), fb.get(i)) {
            (Some(x), Some(y)) => {
                if x.name() != y.name() {
                    return Some((
                        x.name().clone(),
                        format!("column {i} is named {:?} vs {:?}", x.name(), y.name()),
                    ));
                }
                if x.data_type() != y.data_type() {
                    return Some((
                        x.name().clone(),
                        format!("type {} vs {}", x.data_type(), y.data_type()),
                    ));
                }
            }
            (Some(x), None) => return Some((x.name().clone(), "missing on the other side".into())),
            (None, Some(y)) => return Some((y.name().clone(), "missing on this side".into())),
            (None, None) => unreachable!(),
        }
    }
    None
}

/// Native element types that [`Table::column_as`] can extract.
pub trait NativeColumn: Sized {
    /// Converts an array (cast first) to optional values.
    fn from_array(array: &ArrayRef) -> Result<Vec<Option<Self>>>;
}

macro_rules! native_column {
    ($($t:ty => $arrow:ty),*) => {$(
        impl NativeColumn for $t {
            fn from_array(array: &ArrayRef) -> Result<Vec<Option<Self>>> {
                use datafusion::arrow::array::AsArray;
                use datafusion::arrow::datatypes::ArrowPrimitiveType;
                let cast = datafusion::arrow::compute::cast(array, &<$arrow>::DATA_TYPE)
                    .ctx("casting a column")?;
                Ok(cast.as_primitive::<$arrow>().iter().collect())
            }
        }
    )*};
}
native_column!(
    i64 => datafusion::arrow::datatypes::Int64Type,
    i32 => datafusion::arrow::datatypes::Int32Type,
    u64 => datafusion::arrow::datatypes::UInt64Type,
    u32 => datafusion::arrow::datatypes::UInt32Type,
    f64 => datafusion::arrow::datatypes::Float64Type,
    f32 => datafusion::arrow::datatypes::Float32Type
);

impl NativeColumn for String {
    fn from_array(array: &ArrayRef) -> Result<Vec<Option<Self>>> {
        use datafusion::arrow::array::AsArray;
        let cast =
            datafusion::arrow::compute::cast(array, &datafusion::arrow::datatypes::DataType::Utf8)
                .ctx("casting a column to text")?;
        Ok(cast
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect())
    }
}

impl NativeColumn for bool {
    fn from_array(array: &ArrayRef) -> Result<Vec<Option<Self>>> {
        use datafusion::arrow::array::AsArray;
        let cast = datafusion::arrow::compute::cast(
            array,
            &datafusion::arrow::datatypes::DataType::Boolean,
        )
        .ctx("casting a column to bool")?;
        Ok(cast.as_boolean().iter().collect())
    }
}
