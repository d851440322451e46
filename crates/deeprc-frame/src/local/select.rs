//! Projection, filtering, computed columns, renaming, slicing and
//! concatenation: DataFusion expressions evaluated batch by batch with Arrow
//! kernels (no query planning, no runtime).

use crate::context::expr_session;
use crate::error::{Context, FrameError, Result};
use crate::table::{check_same_columns, column_index, Table};
use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use std::sync::Arc;

/// The columns `columns` of `table`, in that order (zero-copy).
///
/// # Errors
/// [`FrameError::ColumnNotFound`] for a name that is not a column.
pub fn project(table: &Table, columns: &[&str]) -> Result<Table> {
    let idx = columns
        .iter()
        .map(|c| column_index(table.schema(), c))
        .collect::<Result<Vec<_>>>()?;
    let schema = Arc::new(table.schema().project(&idx).ctx("projecting a schema")?);
    let batches = table
        .batches()
        .iter()
        .map(|b| b.project(&idx).ctx("projecting a batch"))
        .collect::<Result<Vec<_>>>()?;
    Table::try_new(schema, batches)
}

/// Plans `expr` against `schema`, checking first that every column it
/// names exists.
pub(crate) fn plan_expr(schema: &SchemaRef, expr: &Expr) -> Result<Arc<dyn PhysicalExpr>> {
    for c in expr.column_refs() {
        column_index(schema, &c.name)?;
    }
    let df_schema =
        DFSchema::try_from(schema.as_ref().clone()).ctx("making a DataFusion schema")?;
    expr_session()
        .create_physical_expr(expr.clone(), &df_schema)
        .ctx(&format!("planning expression {expr}"))
}

/// Parses a SQL expression against `schema`.
pub(crate) fn parse_sql_expr(schema: &SchemaRef, sql: &str) -> Result<Expr> {
    let df_schema =
        DFSchema::try_from(schema.as_ref().clone()).ctx("making a DataFusion schema")?;
    expr_session().parse_sql_expr(sql, &df_schema).map_err(|e| {
        // An unknown column is the most common mistake: name it.
        use datafusion::error::DataFusionError as D;
        let mut root = &e;
        while let D::Diagnostic(_, inner) | D::Context(_, inner) = root {
            root = inner;
        }
        if let D::SchemaError(datafusion::common::SchemaError::FieldNotFound { field, .. }, _) =
            root
        {
            return FrameError::ColumnNotFound {
                column: field.name.clone(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            };
        }
        FrameError::DataFusion {
            context: format!("parsing SQL expression {sql:?}"),
            source: Box::new(e),
        }
    })
}

/// Evaluates a planned expression on a batch into an array.
pub(crate) fn eval(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .ctx("evaluating an expression")
}

/// The rows of `table` where `predicate` is true (null counts as false).
///
/// ```
/// use deeprc_frame::{Table, prelude::*};
/// use deeprc_frame::arrow::array::{ArrayRef, Int64Array};
/// use std::sync::Arc;
/// let t = Table::from_columns(vec![("a", Arc::new(Int64Array::from(vec![1, 5, 9])) as ArrayRef)]).unwrap();
/// assert_eq!(t.filter(&col("a").gt(lit(3i64))).unwrap().num_rows(), 2);
/// assert_eq!(t.filter_sql("a < 3").unwrap().num_rows(), 1);
/// ```
///
/// # Errors
/// [`FrameError::ColumnNotFound`]; [`FrameError::InvalidArgument`] when the
/// predicate is not boolean.
pub fn filter(table: &Table, predicate: &Expr) -> Result<Table> {
    let phys = plan_expr(table.schema(), predicate)?;
    let dt = phys
        .data_type(table.schema())
        .ctx("typing the filter predicate")?;
    if dt != DataType::Boolean {
        return Err(FrameError::invalid(
            "filter",
            format!("predicate {predicate} is {dt}, not boolean"),
        ));
    }
    let mut out = Vec::with_capacity(table.batches().len());
    for b in table.batches() {
        let mask = eval(&phys, b)?;
        out.push(filter_record_batch(b, mask.as_boolean()).ctx("filtering a batch")?);
    }
    Table::try_new(Arc::clone(table.schema()), out)
}

/// [`filter`] with the predicate as SQL text.
pub fn filter_sql(table: &Table, predicate: &str) -> Result<Table> {
    filter(table, &parse_sql_expr(table.schema(), predicate)?)
}

/// Adds column `name` computed by `expr`, or replaces it in place when a
/// column of that name exists.
pub fn with_column(table: &Table, name: &str, expr: &Expr) -> Result<Table> {
    let phys = plan_expr(table.schema(), expr)?;
    let dt = phys.data_type(table.schema()).ctx("typing an expression")?;
    let field = Arc::new(Field::new(name, dt, true));
    let existing = table.schema().index_of(name).ok();
    let mut fields: Vec<_> = table.schema().fields().iter().cloned().collect();
    match existing {
        Some(i) => fields[i] = Arc::clone(&field),
        None => fields.push(Arc::clone(&field)),
    }
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        table.schema().metadata().clone(),
    ));
    let mut out = Vec::with_capacity(table.batches().len());
    for b in table.batches() {
        let v = eval(&phys, b)?;
        let mut cols = b.columns().to_vec();
        match existing {
            Some(i) => cols[i] = v,
            None => cols.push(v),
        }
        out.push(RecordBatch::try_new(Arc::clone(&schema), cols).ctx("adding a column")?);
    }
    Table::try_new(schema, out)
}

/// [`with_column`] with the expression as SQL text (e.g. `"key % 1000"`).
pub fn with_column_sql(table: &Table, name: &str, sql: &str) -> Result<Table> {
    with_column(table, name, &parse_sql_expr(table.schema(), sql)?)
}

/// Renames columns: each `(old, new)` pair renames `old` to `new`.
pub fn rename(table: &Table, pairs: &[(&str, &str)]) -> Result<Table> {
    let mut fields: Vec<Field> = table
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for (old, new) in pairs {
        let i = column_index(table.schema(), old)?;
        fields[i] = fields[i].clone().with_name(*new);
    }
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        table.schema().metadata().clone(),
    ));
    table.with_schema(schema)
}

/// Rows `offset..offset + len` of `table`, clamped to its length (zero-copy).
pub fn slice(table: &Table, offset: usize, len: usize) -> Table {
    let mut out = Vec::new();
    let mut start = offset;
    let mut left = len;
    for b in table.batches() {
        if left == 0 {
            break;
        }
        let n = b.num_rows();
        if start >= n {
            start -= n;
            continue;
        }
        let take = (n - start).min(left);
        out.push(b.slice(start, take));
        left -= take;
        start = 0;
    }
    Table::from_parts(Arc::clone(table.schema()), out)
}

/// The rows of all `tables`, in order (zero-copy). The tables must have the
/// same column names and types.
///
/// # Errors
/// [`FrameError::InvalidArgument`] for no table;
/// [`FrameError::IncompatibleSchemas`] when two tables differ.
pub fn concat(tables: &[Table]) -> Result<Table> {
    let Some(first) = tables.first() else {
        return Err(FrameError::invalid("concat", "no table given"));
    };
    let mut batches = Vec::new();
    for t in tables {
        check_same_columns("concat", first.schema(), t.schema())?;
        batches.extend(t.batches().iter().cloned());
    }
    Table::try_new(Arc::clone(first.schema()), batches)
}
