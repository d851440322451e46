//! Operators on one partition: free functions over [`Table`](crate::Table)s,
//! each with an `XxxOptions: Default` where it has options.
//!
//! | operator | module | built on |
//! |---|---|---|
//! | project, filter, with_column, rename, slice, concat | [`select`] | DataFusion physical expressions, Arrow `filter` |
//! | sort | [`mod@sort`] | Arrow `lexsort_to_indices`; own radix sort for one numeric key |
//! | join (6 types, hash and sort-merge) | [`mod@join`] | own hash table / merge, Arrow `take` |
//! | group-by (9 aggregates) | [`groupby`] | own hash table and accumulators, Arrow `take`/`cast` |
//! | unique | [`mod@unique`] | own hash table, Arrow `take` |
//! | union, intersect, subtract, equals | [`setops`] | own hash table, Arrow row format |

pub mod groupby;
pub mod join;
pub(crate) mod keys;
pub mod select;
pub mod setops;
pub mod sort;
pub mod unique;

pub use groupby::{group_by, Agg, AggFunc};
pub use join::{join, JoinAlgorithm, JoinOptions, JoinType};
pub use select::{
    concat, filter, filter_sql, project, rename, slice, with_column, with_column_sql,
};
pub use setops::{equals, equals_unordered, intersect, subtract, union};
pub use sort::{sort, SortKey};
pub use unique::{unique, Keep, UniqueOptions};
