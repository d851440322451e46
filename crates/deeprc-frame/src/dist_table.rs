//! [`DistTable`]: this rank's partition plus its communicator.

use crate::dist::{self, DistOptions};
use crate::error::{FrameError, Result};
use crate::ipc;
use crate::local::{Agg, JoinOptions, SortKey, UniqueOptions};
use crate::table::{first_difference, Table};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::logical_expr::Expr;
use datafusion::scalar::ScalarValue;
use deeprc_comm::Communicator;
use std::sync::Arc;

/// A distributed table: this rank's partition and the communicator of the
/// ranks that hold the others. The global table is the union of the
/// partitions, in rank order.
///
/// Every method is a collective: all ranks call it in the same order. The
/// partitions always share one schema (checked by [`DistTable::new`]), so an
/// error about a column or a type happens on every rank alike.
///
/// A table carries the [`DistOptions`] of the operators that use them (set
/// with [`DistTable::with_options`]); tables computed from it inherit them.
#[derive(Debug, Clone)]
pub struct DistTable {
    part: Table,
    comm: Arc<dyn Communicator>,
    options: DistOptions,
}

impl DistTable {
    /// A distributed table of `part` on this rank. Collective: checks that
    /// every rank's schema has the same column names and types, and makes
    /// a column nullable everywhere when it is nullable somewhere.
    ///
    /// # Errors
    /// [`FrameError::SchemaMismatch`] on every rank, naming the first
    /// differing column and the ranks that differ from rank 0.
    pub fn new(part: Table, comm: Arc<dyn Communicator>) -> Result<Self> {
        let schemas: Vec<SchemaRef> = if comm.size() == 1 {
            vec![Arc::clone(part.schema())]
        } else {
            comm.all_gather(ipc::encode_schema(part.schema())?)?
                .into_iter()
                .enumerate()
                .map(|(r, b)| ipc::decode_schema_from(b, "DistTable::new", r))
                .collect::<Result<_>>()?
        };
        let base = &schemas[0];
        let mut ranks = Vec::new();
        let mut first: Option<(String, String)> = None;
        for (r, s) in schemas.iter().enumerate().skip(1) {
            if let Some(d) = first_difference(base, s) {
                ranks.push(r);
                first.get_or_insert(d);
            }
        }
        if let Some((column, detail)) = first {
            return Err(FrameError::SchemaMismatch {
                column,
                ranks,
                detail,
            });
        }
        // Unify nullability (and take rank 0's metadata).
        let fields: Vec<Field> = base
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let nullable = schemas.iter().any(|s| s.field(i).is_nullable());
                f.as_ref().clone().with_nullable(nullable)
            })
            .collect();
        let unified = Arc::new(Schema::new_with_metadata(fields, base.metadata().clone()));
        let part = if unified.as_ref() == part.schema().as_ref() {
            part
        } else {
            Table::try_new(unified, part.into_batches())?
        };
        Ok(Self {
            part,
            comm,
            options: DistOptions::default(),
        })
    }

    /// This table with the operators' tuning knobs `options` (every rank
    /// must set the same; the operators that use them check). Results of
    /// operations on the table inherit them.
    ///
    /// ```
    /// use deeprc_frame::dist::DistOptions;
    /// use deeprc_frame::{DistTable, JoinOptions, Table};
    /// use deeprc_frame::arrow::array::{ArrayRef, Int64Array};
    /// use std::sync::Arc;
    ///
    /// let rows = deeprc_comm::local::launch(2, |comm| {
    ///     let part = Table::from_columns(vec![
    ///         ("k", Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>())) as ArrayRef),
    ///     ])?;
    ///     let t = DistTable::new(part, Arc::new(comm))?
    ///         .with_options(DistOptions::default().bucket_rows(16));
    ///     t.join(&t, &JoinOptions::on(&["k"]))?.num_rows()
    /// })
    /// .unwrap();
    /// assert_eq!(rows, vec![400, 400]);
    /// ```
    #[must_use]
    pub fn with_options(mut self, options: DistOptions) -> Self {
        self.options = options;
        self
    }

    /// The operators' tuning knobs.
    pub fn options(&self) -> &DistOptions {
        &self.options
    }

    /// Wraps an operator's result (its schema is the same on every rank by
    /// construction).
    pub(crate) fn wrap(&self, part: Table) -> DistTable {
        DistTable {
            part,
            comm: Arc::clone(&self.comm),
            options: self.options,
        }
    }

    /// Distributes `table`, given on `root` (other ranks pass `None`),
    /// evenly over the ranks, keeping the order of rows.
    pub fn scatter(table: Option<Table>, root: usize, comm: Arc<dyn Communicator>) -> Result<Self> {
        let schema_bytes = match (&table, comm.rank() == root) {
            (Some(t), true) => ipc::encode_schema(t.schema())?,
            (None, true) => {
                return Err(FrameError::invalid(
                    "scatter",
                    "the root rank must pass a table",
                ))
            }
            _ => bytes::Bytes::new(),
        };
        let schema = ipc::decode_schema_from(comm.broadcast(root, schema_bytes)?, "scatter", root)?;
        let part = match table {
            Some(t) if comm.rank() == root => t,
            _ => Table::empty(schema),
        };
        let d = DistTable {
            part,
            comm: Arc::clone(&comm),
            options: DistOptions::default(),
        };
        d.repartition(None)
    }

    /// This rank's partition.
    pub fn partition(&self) -> &Table {
        &self.part
    }

    /// This rank's partition, by value.
    pub fn into_partition(self) -> Table {
        self.part
    }

    /// The communicator.
    pub fn comm(&self) -> &Arc<dyn Communicator> {
        &self.comm
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.comm.size()
    }

    /// The schema (the same on every rank).
    pub fn schema(&self) -> &SchemaRef {
        self.part.schema()
    }

    /// The column names.
    pub fn column_names(&self) -> Vec<String> {
        self.part.column_names()
    }

    /// The rows of this rank's partition.
    pub fn local_rows(&self) -> usize {
        self.part.num_rows()
    }

    /// The global number of rows (collective).
    pub fn num_rows(&self) -> Result<u64> {
        dist::gather::num_rows(self.comm.as_ref(), &self.part)
    }

    /// The number of rows of every rank (collective).
    pub fn row_counts(&self) -> Result<Vec<u64>> {
        dist::gather::row_counts(self.comm.as_ref(), &self.part)
    }

    // ---- partition-wise operators (no communication) ----

    /// Projection on every partition.
    pub fn project(&self, columns: &[&str]) -> Result<DistTable> {
        Ok(self.wrap(self.part.project(columns)?))
    }

    /// Filter on every partition.
    pub fn filter(&self, predicate: &Expr) -> Result<DistTable> {
        Ok(self.wrap(self.part.filter(predicate)?))
    }

    /// Filter by SQL predicate on every partition.
    pub fn filter_sql(&self, predicate: &str) -> Result<DistTable> {
        Ok(self.wrap(self.part.filter_sql(predicate)?))
    }

    /// Computed column on every partition.
    pub fn with_column(&self, name: &str, expr: &Expr) -> Result<DistTable> {
        Ok(self.wrap(self.part.with_column(name, expr)?))
    }

    /// Computed column (SQL expression) on every partition.
    pub fn with_column_sql(&self, name: &str, sql: &str) -> Result<DistTable> {
        Ok(self.wrap(self.part.with_column_sql(name, sql)?))
    }

    /// Renames columns on every partition.
    pub fn rename(&self, pairs: &[(&str, &str)]) -> Result<DistTable> {
        Ok(self.wrap(self.part.rename(pairs)?))
    }

    /// Applies a local function to every partition (it must produce the
    /// same schema on every rank; checked).
    pub fn map_partitions(&self, f: impl FnOnce(&Table) -> Result<Table>) -> Result<DistTable> {
        Ok(DistTable::new(f(&self.part)?, Arc::clone(&self.comm))?.with_options(self.options))
    }

    // ---- data movement ----

    /// Hash-partitions by `keys` (see [`dist::shuffle::shuffle`]).
    pub fn shuffle(&self, keys: &[&str]) -> Result<DistTable> {
        Ok(self.wrap(dist::shuffle(self.comm.as_ref(), &self.part, keys)?))
    }

    /// Moves rows so that rank `r` holds `counts[r]` rows (even when `None`),
    /// keeping the global order.
    pub fn repartition(&self, counts: Option<&[u64]>) -> Result<DistTable> {
        Ok(self.wrap(dist::repartition(self.comm.as_ref(), &self.part, counts)?))
    }

    /// The whole table on `root` (`None` elsewhere).
    pub fn gather(&self, root: usize) -> Result<Option<Table>> {
        dist::gather(self.comm.as_ref(), &self.part, root)
    }

    /// The whole table on every rank.
    pub fn all_gather(&self) -> Result<Table> {
        dist::all_gather(self.comm.as_ref(), &self.part)
    }

    /// `root`'s partition on every rank.
    pub fn broadcast(&self, root: usize) -> Result<Table> {
        dist::broadcast(self.comm.as_ref(), &self.part, root)
    }

    // ---- distributed operators ----

    /// Distributed join (shuffle both sides, join locally), bucketed as
    /// this table's [`DistOptions`] say.
    pub fn join(&self, right: &DistTable, options: &JoinOptions) -> Result<DistTable> {
        Ok(self.wrap(dist::join_with(
            self.comm.as_ref(),
            &self.part,
            &right.part,
            options,
            &self.options,
        )?))
    }

    /// Distributed sample sort: partitions sorted, rank `r`'s keys `<=` rank
    /// `r + 1`'s; bucketed as this table's [`DistOptions`] say.
    pub fn sort(&self, keys: &[SortKey]) -> Result<DistTable> {
        Ok(self.wrap(dist::sort_with(
            self.comm.as_ref(),
            &self.part,
            keys,
            &self.options,
        )?))
    }

    /// Distributed group-by.
    pub fn group_by(&self, keys: &[&str], aggs: &[Agg]) -> Result<DistTable> {
        Ok(self.wrap(dist::group_by(self.comm.as_ref(), &self.part, keys, aggs)?))
    }

    /// Distributed unique.
    pub fn unique(&self, options: &UniqueOptions) -> Result<DistTable> {
        Ok(self.wrap(dist::unique(self.comm.as_ref(), &self.part, options)?))
    }

    /// Distributed union (distinct).
    pub fn union(&self, other: &DistTable) -> Result<DistTable> {
        Ok(self.wrap(dist::union(self.comm.as_ref(), &self.part, &other.part)?))
    }

    /// Distributed intersection (distinct).
    pub fn intersect(&self, other: &DistTable) -> Result<DistTable> {
        Ok(self.wrap(dist::intersect(
            self.comm.as_ref(),
            &self.part,
            &other.part,
        )?))
    }

    /// Distributed difference (distinct).
    pub fn subtract(&self, other: &DistTable) -> Result<DistTable> {
        Ok(self.wrap(dist::subtract(self.comm.as_ref(), &self.part, &other.part)?))
    }

    /// Global rows `offset..offset + len`, left where they are.
    pub fn slice(&self, offset: u64, len: u64) -> Result<DistTable> {
        Ok(self.wrap(dist::slice(self.comm.as_ref(), &self.part, offset, len)?))
    }

    /// The first `n` global rows.
    pub fn head(&self, n: u64) -> Result<DistTable> {
        self.slice(0, n)
    }

    /// The last `n` global rows.
    pub fn tail(&self, n: u64) -> Result<DistTable> {
        let total = self.num_rows()?;
        self.slice(total.saturating_sub(n), n)
    }

    /// Same rows in the same global order (the result is the same on every rank).
    pub fn equals(&self, other: &DistTable) -> Result<bool> {
        dist::equals(self.comm.as_ref(), &self.part, &other.part)
    }

    /// Same multiset of rows.
    pub fn equals_unordered(&self, other: &DistTable) -> Result<bool> {
        dist::equals_unordered(self.comm.as_ref(), &self.part, &other.part)
    }

    // ---- scalar reductions (all-reduce) ----

    /// Non-null values of `column` (all rows for `None`).
    pub fn count(&self, column: Option<&str>) -> Result<u64> {
        dist::reduce::count(self.comm.as_ref(), &self.part, column)
    }

    /// Sum of `column`.
    pub fn sum(&self, column: &str) -> Result<ScalarValue> {
        dist::reduce::sum(self.comm.as_ref(), &self.part, column)
    }

    /// Minimum of `column`.
    pub fn min(&self, column: &str) -> Result<ScalarValue> {
        dist::reduce::extreme(self.comm.as_ref(), &self.part, column, false)
    }

    /// Maximum of `column`.
    pub fn max(&self, column: &str) -> Result<ScalarValue> {
        dist::reduce::extreme(self.comm.as_ref(), &self.part, column, true)
    }

    /// Mean of `column`.
    pub fn mean(&self, column: &str) -> Result<Option<f64>> {
        dist::reduce::mean(self.comm.as_ref(), &self.part, column)
    }

    /// Sample variance of `column`.
    pub fn var(&self, column: &str) -> Result<Option<f64>> {
        dist::reduce::var(self.comm.as_ref(), &self.part, column)
    }
}
