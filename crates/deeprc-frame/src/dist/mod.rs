//! Distributed operators: free functions over this rank's partition and a
//! [`Communicator`](deeprc_comm::Communicator); [`crate::DistTable`] wraps
//! them as methods.
//!
//! Every keyed operator goes through [`shuffle::shuffle`]; sort is a sample
//! sort; group-by pre-aggregates; scalar reductions use all-reduce. All
//! ranks must call the same operators in the same order (they are
//! collectives).

pub(crate) mod agree;
pub mod gather;
pub mod groupby;
pub mod join;
pub mod reduce;
pub mod setops;
pub mod shuffle;
pub mod sort;

pub use gather::{all_gather, broadcast, gather, repartition, slice};
pub use groupby::group_by;
pub use join::{join, join_with};
pub use setops::{equals, equals_unordered, intersect, subtract, union, unique};
pub use shuffle::{exchange, shuffle};
pub use sort::{sort, sort_with};

/// Tuning knobs of the distributed operators, carried by each operation
/// (and by a [`DistTable`](crate::DistTable), whose results inherit them):
/// results do not depend on them, but every rank must pass the same values,
/// which the operators check.
///
/// ```
/// use deeprc_frame::dist::DistOptions;
/// let o = DistOptions::default().bucket_rows(4096);
/// assert_eq!(o.bucket_rows, 4096);
/// assert_eq!(DistOptions::default().bucket_rows, 65536);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DistOptions {
    /// The target number of rows of one bucket of the bucketed join and
    /// sort (default 65536: a bucket's hash table and columns stay in
    /// cache). Rows are split into at most 1024 buckets per rank.
    pub bucket_rows: usize,
}

impl Default for DistOptions {
    fn default() -> Self {
        Self {
            bucket_rows: 1 << 16,
        }
    }
}

impl DistOptions {
    /// Sets [`DistOptions::bucket_rows`] (at least 1).
    #[must_use]
    pub fn bucket_rows(mut self, rows: usize) -> Self {
        self.bucket_rows = rows.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::with_max_rows;
    use crate::local::{JoinOptions, SortKey};
    use crate::{DistTable, FrameError, Table};
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use std::sync::Arc;

    fn keys(n: i64) -> Table {
        let v: Vec<i64> = (0..n).rev().collect();
        Table::from_columns(vec![("k", Arc::new(Int64Array::from(v)) as ArrayRef)]).unwrap()
    }

    /// The bucket size is the operation's own: with the row limit lowered to
    /// 80, a 100-row partition joins and sorts in buckets of 8 rows but not
    /// as one bucket.
    #[test]
    fn bucket_rows_is_carried_by_the_operation() {
        for ranks in [1, 2] {
            let out = deeprc_comm::local::launch(ranks, |comm| {
                with_max_rows(80, || -> crate::Result<_> {
                    let t = DistTable::new(keys(100), Arc::new(comm))?;
                    let small = t
                        .clone()
                        .with_options(DistOptions::default().bucket_rows(8));
                    let o = JoinOptions::on(&["k"]);
                    let whole = t.join(&t, &o).err();
                    let bucketed = small.join(&small, &o)?;
                    // Results inherit the options.
                    assert_eq!(bucketed.options().bucket_rows, 8);
                    let sorted = small.sort(&[SortKey::asc("k")])?;
                    let sorted_whole = t.sort(&[SortKey::asc("k")]).err();
                    Ok((whole, sorted_whole, bucketed.num_rows()?, sorted.gather(0)?))
                })
            })
            .unwrap();
            for (r, (whole, sorted_whole, rows, sorted)) in out.into_iter().enumerate() {
                let n = ranks as u64;
                assert_eq!(rows, 100 * n * n, "{ranks} ranks");
                if ranks == 1 {
                    assert!(matches!(whole, Some(FrameError::TooManyRows { .. })));
                    assert!(matches!(sorted_whole, Some(FrameError::TooManyRows { .. })));
                }
                if r == 0 {
                    let k = sorted.unwrap().column_as::<i64>("k").unwrap();
                    assert!(k.windows(2).all(|w| w[0] <= w[1]));
                    assert_eq!(k.len(), 100 * ranks);
                }
            }
        }
    }

    /// Ranks passing different bucket sizes fail alike instead of sending
    /// rows to the wrong ranks.
    #[test]
    fn ranks_that_disagree_on_bucket_rows_all_fail() {
        let out = deeprc_comm::local::launch(3, |comm| {
            let rank = deeprc_comm::Communicator::rank(&comm);
            let mut t = DistTable::new(keys(40), Arc::new(comm))?;
            if rank == 1 {
                t = t.with_options(DistOptions::default().bucket_rows(8));
            }
            Ok::<_, FrameError>((
                t.join(&t, &JoinOptions::on(&["k"])).unwrap_err(),
                t.sort(&[SortKey::asc("k")]).unwrap_err(),
            ))
        })
        .unwrap();
        for (join, sort) in out {
            for (e, op) in [(join, "join"), (sort, "sort")] {
                let msg = e.to_string();
                assert!(
                    matches!(e, FrameError::InvalidArgument { op: o, .. } if o == op),
                    "{msg}"
                );
                assert!(
                    msg.contains("bucket_rows") && msg.contains("rank 1: 8"),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn buckets_per_rank_is_bounded() {
        assert_eq!(shuffle::buckets_per_rank(0, 16), 1);
        assert_eq!(shuffle::buckets_per_rank(100, 16), 8);
        assert_eq!(shuffle::buckets_per_rank(u64::MAX, 1), 1024);
        assert_eq!(shuffle::buckets_per_rank(100, 0), 128);
    }
}
