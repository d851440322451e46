//! # deeprc-frame
//!
//! Distributed Arrow tables with Cylon's operators, in Rust on Arrow and
//! DataFusion, over any [`Communicator`](deeprc_comm::Communicator) of
//! `deeprc-comm`.
//!
//! - [`Table`]: a schema plus Arrow record batches; zero-copy to and from
//!   `RecordBatch`, DataFusion `MemTable` and `DataFrame`.
//! - [`DistTable`]: this rank's partition plus its communicator; the global
//!   table is the union of the partitions.
//! - [`local`]: operators on one partition (project, filter, with_column,
//!   sort, join, group-by, unique, set operations, slices, equality).
//! - [`dist`]: the same operators over all ranks (shuffle, repartition,
//!   gather, broadcast, join, sample sort, group-by with pre-aggregation,
//!   unique, set operations, global slices, equality, scalar reductions).
//! - [`io`]: CSV, Parquet, CAMELS-US and ETTh1 readers, each rank reading
//!   its share; writers one file per rank or gathered.
//! - [`sql`]: DataFusion SQL on every partition, and distributed SQL over
//!   the table as a whole.
//!
//! ```
//! use deeprc_comm::Communicator;
//! use deeprc_frame::{DistTable, Table, Agg};
//! use deeprc_frame::arrow::array::{ArrayRef, Int64Array, Float64Array};
//! use std::sync::Arc;
//!
//! let sums = deeprc_comm::local::launch(3, |comm| {
//!     let r = comm.rank() as i64;
//!     let part = Table::from_columns(vec![
//!         ("k", Arc::new(Int64Array::from(vec![r % 2, 1, 0])) as ArrayRef),
//!         ("v", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef),
//!     ])?;
//!     let t = DistTable::new(part, Arc::new(comm))?;
//!     let g = t.group_by(&["k"], &[Agg::sum("v")])?;
//!     g.gather(0)
//! })
//! .unwrap();
//! let total = sums[0].as_ref().unwrap().sort(&[deeprc_frame::SortKey::asc("k")]).unwrap();
//! assert_eq!(total.column_as::<f64>("v_sum").unwrap(), vec![Some(11.0), Some(7.0)]);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod context;
pub mod dist;
pub mod dist_table;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod ipc;
pub mod limits;
pub mod local;
pub mod sql;
pub mod table;
mod wire;

pub use context::FrameContext;
pub use dist::DistOptions;
pub use dist_table::DistTable;
pub use error::{FrameError, Result};
pub use local::{Agg, AggFunc, JoinAlgorithm, JoinOptions, JoinType, Keep, SortKey, UniqueOptions};
pub use table::{NativeColumn, Table};

/// DataFusion.
pub use datafusion;
/// The Arrow crate this crate uses (DataFusion's).
pub use datafusion::arrow;
/// The Parquet crate this crate uses (DataFusion's).
pub use datafusion::parquet;

/// What most programs need: the table types, the options, and DataFusion's
/// expression builders.
pub mod prelude {
    pub use crate::{
        Agg, AggFunc, DistOptions, DistTable, FrameContext, FrameError, JoinAlgorithm, JoinOptions,
        JoinType, Keep, SortKey, Table, UniqueOptions,
    };
    pub use datafusion::prelude::{col, lit, Expr};
}
