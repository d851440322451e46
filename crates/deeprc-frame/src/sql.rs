//! SQL over distributed tables, with DataFusion.
//!
//! Two levels:
//! - [`DistTable::sql_local`]: the query runs on every partition as it is
//!   (right for filters, projections and anything else that works row by
//!   row).
//! - [`sql`]: the query runs over the distributed table as a whole.
//!   DataFusion parses and optimizes it into a logical plan; this module
//!   walks the plan and inserts the exchanges a distributed engine needs,
//!   running every other node with DataFusion on this rank's data:
//!
//! ```text
//!  TableScan, Projection, Filter, SubqueryAlias, UNION ALL -> partition-wise, no exchange
//!  Aggregate with GROUP BY  -> shuffle by the group expressions, aggregate locally
//!  Aggregate without        -> gather to rank 0, aggregate there
//!  equi-Join                -> shuffle both sides by their key expressions, join locally
//!  Sort (ORDER BY)          -> sample sort on the evaluated sort expressions
//!  Sort with fetch (top-k)  -> local top-k, gather to rank 0, top-k there
//!  Limit / OFFSET           -> global slice (rank order is the global order)
//!  anything else            -> gather its inputs to rank 0 and run it there
//! ```
//!
//! A node runs locally by replacing its inputs with in-memory scans that
//! keep the inputs' qualified schemas, then handing the node to
//! DataFusion's physical planner (no second optimization pass).

use crate::context::FrameContext;
use crate::dist::shuffle::{exchange, hash_dest_arrays, send_all_to, split_by_dest};
use crate::dist::{self, DistOptions};
use crate::dist_table::DistTable;
use crate::error::{Context, FrameError, Result};
use crate::local::SortKey;
use crate::table::Table;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::{DFSchemaRef, TableReference};
use datafusion::datasource::{provider_as_source, MemTable};
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::{Expr, LogicalPlan, SortExpr, TableScan};
use datafusion::physical_plan::collect;
use deeprc_comm::Communicator;
use std::cell::Cell;
use std::sync::Arc;

impl DistTable {
    /// Runs `query` on every partition, with this partition registered as
    /// `name`; the results form a distributed table. Each rank passes its
    /// own context.
    pub fn sql_local(&self, ctx: &FrameContext, name: &str, query: &str) -> Result<DistTable> {
        ctx.register(name, self.partition())?;
        let out = ctx.sql(query);
        ctx.deregister(name)?;
        Ok(DistTable::new(out?, Arc::clone(self.comm()))?.with_options(*self.options()))
    }

    /// Runs `query` over the whole distributed table, registered as `name`
    /// (see [`sql`]).
    pub fn sql(&self, ctx: &FrameContext, name: &str, query: &str) -> Result<DistTable> {
        sql(ctx, &[(name, self)], query)
    }
}

/// Runs `query` over distributed tables as a whole: every rank calls it
/// with its own `ctx` and the same tables and query; the result is
/// distributed, with the first table's [`DistOptions`]. See the module
/// documentation for how each plan node runs.
///
/// # Errors
/// DataFusion's planning errors (unknown table or column, ...), the same
/// on every rank; [`FrameError::InvalidArgument`] when no table is given.
pub fn sql(ctx: &FrameContext, tables: &[(&str, &DistTable)], query: &str) -> Result<DistTable> {
    let Some((_, first)) = tables.first() else {
        return Err(FrameError::invalid("sql", "no table given"));
    };
    let comm = Arc::clone(first.comm());
    for (name, t) in tables {
        ctx.register(name, t.partition())?;
    }
    let result = (|| {
        let df = ctx
            .block_on(ctx.session().sql(query))
            .ctx(&format!("planning SQL {query:?}"))?;
        let plan = df
            .into_optimized_plan()
            .ctx(&format!("optimizing SQL {query:?}"))?;
        let ex = Executor {
            ctx,
            comm: comm.as_ref(),
            options: *first.options(),
            counter: Cell::new(0),
        };
        ex.exec(&plan)
    })();
    for (name, _) in tables {
        ctx.deregister(name)?;
    }
    Ok(DistTable::new(result?, comm)?.with_options(*first.options()))
}

struct Executor<'a> {
    ctx: &'a FrameContext,
    comm: &'a dyn Communicator,
    /// The first table's tuning knobs (for the sample sort).
    options: DistOptions,
    counter: Cell<usize>,
}

fn has_subquery(plan: &LogicalPlan) -> bool {
    plan.expressions().iter().any(|e| {
        let mut found = false;
        let _ = e.apply(|x| {
            if matches!(
                x,
                Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
            ) {
                found = true;
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        found
    })
}

/// Nodes that work row by row on each partition.
fn is_partitionwise(plan: &LogicalPlan) -> bool {
    let kind = match plan {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Union(_)
        | LogicalPlan::TableScan(_) => true,
        LogicalPlan::EmptyRelation(e) => !e.produce_one_row,
        _ => false,
    };
    kind && !has_subquery(plan)
}

fn is_local_subtree(plan: &LogicalPlan) -> bool {
    is_partitionwise(plan) && plan.inputs().into_iter().all(is_local_subtree)
}

use datafusion::common::tree_node::TreeNode;

impl Executor<'_> {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn empty_like(&self, plan: &LogicalPlan) -> Table {
        Table::empty(Arc::new(plan.schema().as_arrow().clone()))
    }

    /// This rank's partition of the result of `plan`.
    fn exec(&self, plan: &LogicalPlan) -> Result<Table> {
        if is_local_subtree(plan) {
            return self.run(plan);
        }
        match plan {
            p if is_partitionwise(p) => {
                let inputs = p
                    .inputs()
                    .into_iter()
                    .map(|i| self.exec(i))
                    .collect::<Result<Vec<_>>>()?;
                self.run_node(p, inputs)
            }
            LogicalPlan::Aggregate(agg)
                if !agg
                    .group_expr
                    .iter()
                    .any(|e| matches!(e, Expr::GroupingSet(_))) =>
            {
                let input = self.exec(&agg.input)?;
                if agg.group_expr.is_empty() {
                    let moved = send_all_to(self.comm, &input, 0)?;
                    let out = self.run_node(plan, vec![moved])?;
                    return Ok(if self.rank() == 0 {
                        out
                    } else {
                        self.empty_like(plan)
                    });
                }
                let moved = self.shuffle_by(&input, &agg.group_expr, agg.input.schema())?;
                self.run_node(plan, vec![moved])
            }
            LogicalPlan::Join(join) if !join.on.is_empty() && !has_subquery(plan) => {
                let l = self.exec(&join.left)?;
                let r = self.exec(&join.right)?;
                let (lk, rk): (Vec<Expr>, Vec<Expr>) = join.on.iter().cloned().unzip();
                let l = self.shuffle_by(&l, &lk, join.left.schema())?;
                let r = self.shuffle_by(&r, &rk, join.right.schema())?;
                self.run_node(plan, vec![l, r])
            }
            LogicalPlan::Sort(sort) => {
                let input = self.exec(&sort.input)?;
                if sort.fetch.is_some() {
                    let local = self.run_node(plan, vec![input])?;
                    let moved = send_all_to(self.comm, &local, 0)?;
                    let out = self.run_node(plan, vec![moved])?;
                    return Ok(if self.rank() == 0 {
                        out
                    } else {
                        self.empty_like(plan)
                    });
                }
                self.sort(&input, &sort.expr, sort.input.schema())
            }
            LogicalPlan::Limit(limit) => {
                let skip = limit.get_skip_type().ctx("reading OFFSET")?;
                let fetch = limit.get_fetch_type().ctx("reading LIMIT")?;
                match (skip, fetch) {
                    (SkipType::Literal(s), FetchType::Literal(f)) => {
                        let input = self.exec(&limit.input)?;
                        dist::slice(
                            self.comm,
                            &input,
                            s as u64,
                            f.map_or(u64::MAX, |f| f as u64),
                        )
                    }
                    _ => self.on_root(plan),
                }
            }
            _ => self.on_root(plan),
        }
    }

    /// Gathers the inputs of `plan` to rank 0 and runs it there.
    fn on_root(&self, plan: &LogicalPlan) -> Result<Table> {
        let mut inputs = Vec::new();
        for i in plan.inputs() {
            let t = self.exec(i)?;
            inputs.push(send_all_to(self.comm, &t, 0)?);
        }
        if self.rank() != 0 {
            return Ok(self.empty_like(plan));
        }
        if inputs.is_empty() {
            return self.run(plan);
        }
        self.run_node(plan, inputs)
    }

    /// An in-memory scan of `table` that carries the qualified `schema`.
    fn scan_of(&self, table: Table, schema: &DFSchemaRef) -> Result<LogicalPlan> {
        let arrow = Arc::new(schema.as_arrow().clone());
        let t = table.with_schema(Arc::clone(&arrow))?;
        let mem = MemTable::try_new(arrow, vec![t.into_batches()]).ctx("making a MemTable")?;
        let n = self.counter.get();
        self.counter.set(n + 1);
        Ok(LogicalPlan::TableScan(TableScan {
            table_name: TableReference::bare(format!("__deeprc_input_{n}")),
            source: provider_as_source(Arc::new(mem)),
            projection: None,
            projected_schema: Arc::clone(schema),
            filters: vec![],
            fetch: None,
        }))
    }

    /// Runs one node over the given partitions of its inputs.
    fn run_node(&self, plan: &LogicalPlan, inputs: Vec<Table>) -> Result<Table> {
        let scans = plan
            .inputs()
            .into_iter()
            .zip(inputs)
            .map(|(child, t)| self.scan_of(t, child.schema()))
            .collect::<Result<Vec<_>>>()?;
        let node = plan
            .with_new_exprs(plan.expressions(), scans)
            .ctx("rebuilding a plan node")?;
        self.run(&node)
    }

    /// Runs a plan locally with DataFusion (no further logical optimization).
    fn run(&self, plan: &LogicalPlan) -> Result<Table> {
        let state = self.ctx.session().state();
        let batches = self.ctx.block_on(async {
            let physical = state
                .query_planner()
                .create_physical_plan(plan, &state)
                .await
                .ctx("planning a query")?;
            collect(physical, state.task_ctx())
                .await
                .ctx("running a query")
        })?;
        let logical = Arc::new(plan.schema().as_arrow().clone());
        match batches.first() {
            None => Ok(Table::empty(logical)),
            Some(b) => Table::try_new(b.schema(), batches.clone())?.with_schema(logical),
        }
    }

    fn eval(
        &self,
        table: &Table,
        exprs: &[Expr],
        schema: &DFSchemaRef,
    ) -> Result<(RecordBatch, Vec<ArrayRef>)> {
        let batch = table
            .with_schema(Arc::new(schema.as_arrow().clone()))?
            .to_batch()?;
        let mut cols = Vec::with_capacity(exprs.len());
        for e in exprs {
            let p = self
                .ctx
                .session()
                .create_physical_expr(e.clone(), schema)
                .ctx(&format!("planning {e}"))?;
            cols.push(crate::local::select::eval(&p, &batch)?);
        }
        Ok((batch, cols))
    }

    /// Hash-partitions `table` by the values of `exprs`.
    fn shuffle_by(&self, table: &Table, exprs: &[Expr], schema: &DFSchemaRef) -> Result<Table> {
        let n = self.comm.size();
        if n == 1 {
            return Ok(table.clone());
        }
        let (batch, cols) = self.eval(table, exprs, schema)?;
        let parts = if batch.num_rows() == 0 {
            vec![Vec::new(); n]
        } else {
            let dest = hash_dest_arrays(&cols, batch.num_rows(), n)?;
            split_by_dest(&batch, &dest, n)?
                .into_iter()
                .map(|p| vec![p])
                .collect()
        };
        let got = exchange(self.comm, &batch.schema(), parts)?;
        Table::try_new(batch.schema(), got)
    }

    /// Sample sort by evaluated sort expressions (hidden columns).
    fn sort(&self, table: &Table, exprs: &[SortExpr], schema: &DFSchemaRef) -> Result<Table> {
        let plain: Vec<Expr> = exprs.iter().map(|s| s.expr.clone()).collect();
        let (batch, cols) = self.eval(table, &plain, schema)?;
        let width = batch.num_columns();
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut all = batch.columns().to_vec();
        let mut keys = Vec::new();
        for (i, (c, s)) in cols.into_iter().zip(exprs).enumerate() {
            let name = format!("__deeprc_sort_{i}");
            fields.push(Field::new(&name, c.data_type().clone(), true));
            all.push(c);
            keys.push(SortKey {
                column: name,
                descending: !s.asc,
                nulls_first: s.nulls_first,
            });
        }
        let wide_schema = Arc::new(Schema::new(fields));
        let wide =
            RecordBatch::try_new(Arc::clone(&wide_schema), all).ctx("adding sort columns")?;
        let sorted = dist::sort_with(self.comm, &Table::from_batch(wide), &keys, &self.options)?;
        let keep: Vec<usize> = (0..width).collect();
        let batches = sorted
            .batches()
            .iter()
            .map(|b| b.project(&keep).ctx("dropping sort columns"))
            .collect::<Result<Vec<_>>>()?;
        Table::try_new(batch.schema(), batches)
    }
}
