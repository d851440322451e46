//! [`FrameContext`]: the DataFusion session and the small tokio runtime that
//! runs it, behind a synchronous API.

use crate::error::{Context, FrameError, Result};
use crate::table::Table;
use datafusion::execution::context::SessionContext;
use datafusion::prelude::SessionConfig;
use std::future::Future;
use std::sync::{Arc, OnceLock};

/// A DataFusion [`SessionContext`] plus the tokio runtime that drives it.
///
/// DataFusion is asynchronous; Deep RC's API is not. A `FrameContext` owns a
/// current-thread runtime (or a small multi-thread one, see
/// [`FrameContext::with_threads`]) and blocks on it, so callers never see
/// `async`. Each thread rank of a distributed program should own its own
/// context (they are cheap: no threads are started for the current-thread
/// flavour).
///
/// ```
/// use deeprc_frame::{FrameContext, Table};
/// use deeprc_frame::arrow::array::{Int64Array, ArrayRef};
/// use std::sync::Arc;
///
/// let ctx = FrameContext::new().unwrap();
/// let t = Table::from_columns(vec![("a", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef)]).unwrap();
/// ctx.register("t", &t).unwrap();
/// let out = ctx.sql("SELECT sum(a) AS s FROM t").unwrap();
/// assert_eq!(out.num_rows(), 1);
/// ```
pub struct FrameContext {
    session: SessionContext,
    runtime: tokio::runtime::Runtime,
    threads: usize,
}

impl std::fmt::Debug for FrameContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameContext")
            .field("session", &self.session.session_id())
            .field("threads", &self.threads)
            .finish()
    }
}

impl FrameContext {
    /// A context on a current-thread runtime, planning one partition per
    /// query (the right choice for one rank per core).
    pub fn new() -> Result<Self> {
        Self::with_threads(1)
    }

    /// A context running DataFusion on `threads` worker threads with
    /// `threads` target partitions (`threads == 1` uses a current-thread
    /// runtime and starts no thread).
    pub fn with_threads(threads: usize) -> Result<Self> {
        let threads = threads.max(1);
        let runtime = if threads == 1 {
            tokio::runtime::Builder::new_current_thread().build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("deeprc-frame-df")
                .build()
        }
        .ctx("starting the tokio runtime of a FrameContext")?;
        let config = SessionConfig::new()
            .with_target_partitions(threads)
            .with_information_schema(false);
        Ok(Self {
            session: SessionContext::new_with_config(config),
            runtime,
            threads,
        })
    }

    /// The DataFusion session (to register tables, UDFs, or build
    /// `DataFrame`s).
    pub fn session(&self) -> &SessionContext {
        &self.session
    }

    /// The number of DataFusion threads (and target partitions).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs a future of DataFusion's to completion on this context's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Registers `table` under `name` (replacing a table of that name);
    /// zero-copy: the batches are shared with DataFusion.
    pub fn register(&self, name: &str, table: &Table) -> Result<()> {
        let _ = self.session.deregister_table(name);
        self.session
            .register_table(name, Arc::new(table.to_mem_table()?))
            .ctx(&format!("registering table {name:?}"))?;
        Ok(())
    }

    /// Removes the table `name`, if registered.
    pub fn deregister(&self, name: &str) -> Result<()> {
        self.session
            .deregister_table(name)
            .ctx(&format!("deregistering table {name:?}"))?;
        Ok(())
    }

    /// Runs a SQL query over the registered tables and collects the result.
    pub fn sql(&self, query: &str) -> Result<Table> {
        self.block_on(async {
            let df = self
                .session
                .sql(query)
                .await
                .ctx(&format!("planning SQL {query:?}"))?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await.ctx(&format!("running SQL {query:?}"))?;
            Table::try_new(schema, batches)
        })
    }

    /// Collects a DataFusion `DataFrame` into a [`Table`].
    pub fn collect(&self, df: datafusion::dataframe::DataFrame) -> Result<Table> {
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = self.block_on(df.collect()).ctx("collecting a DataFrame")?;
        Table::try_new(schema, batches)
    }
}

/// The process-wide session used to plan expressions (filter, with_column);
/// planning an expression needs no runtime.
pub(crate) fn expr_session() -> &'static SessionContext {
    static CTX: OnceLock<SessionContext> = OnceLock::new();
    CTX.get_or_init(SessionContext::new)
}

impl FrameError {
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        FrameError::Internal(msg.into())
    }
}
