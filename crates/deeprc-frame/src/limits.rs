//! The row limit of the operators.
//!
//! Row numbers, group ids and join pairs are `u32` (half the memory of
//! `usize`, and what Arrow's `take` indices are), with `u32::MAX` kept for
//! "no row". So one partition, one batch and one join output hold at most
//! [`MAX_ROWS`] rows: the operators check the counts before they compute
//! and fail with [`FrameError::TooManyRows`] instead of wrapping ids around.
//! A larger table is spread over more ranks.

use crate::error::{FrameError, Result};

/// The most rows one partition (or batch, or local join output) may have:
/// `u32::MAX` = 4,294,967,295.
pub const MAX_ROWS: usize = u32::MAX as usize;

#[cfg(test)]
thread_local! {
    /// A lower limit for the tests of this thread (see [`with_max_rows`]).
    static TEST_LIMIT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The limit in force: [`MAX_ROWS`] (lowered in tests by [`with_max_rows`]).
#[inline]
pub(crate) fn max_rows() -> usize {
    #[cfg(test)]
    if let Some(limit) = TEST_LIMIT.with(std::cell::Cell::get) {
        return limit;
    }
    MAX_ROWS
}

/// Runs `f` with the row limit lowered to `limit` on this thread only; the
/// old limit comes back when `f` returns or panics, so nothing leaks into
/// other tests.
#[cfg(test)]
pub(crate) fn with_max_rows<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            TEST_LIMIT.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(TEST_LIMIT.with(|l| l.replace(Some(limit))));
    f()
}

fn too_many(op: &'static str, rows: Option<usize>, limit: usize) -> FrameError {
    FrameError::TooManyRows {
        op,
        // `None`: the count overflowed usize.
        rows: rows.map_or(u64::MAX, |r| r as u64),
        limit: limit as u64,
    }
}

/// Fails when `op` would handle `rows` rows in one piece.
#[inline]
pub(crate) fn check_rows(op: &'static str, rows: usize) -> Result<()> {
    let limit = max_rows();
    if rows > limit {
        return Err(too_many(op, Some(rows), limit));
    }
    Ok(())
}

/// Fails when an output of `have` rows cannot take `more`.
#[inline]
pub(crate) fn check_more_rows(op: &'static str, have: usize, more: usize) -> Result<()> {
    let limit = max_rows();
    match have.checked_add(more) {
        Some(total) if total <= limit => Ok(()),
        total => Err(too_many(op, total, limit)),
    }
}

/// Fails when an output of `have` rows cannot take every pair of `left`
/// rows and `right` rows (a group of equal keys of a join).
#[inline]
pub(crate) fn check_more_pairs(
    op: &'static str,
    have: usize,
    left: usize,
    right: usize,
) -> Result<()> {
    match left.checked_mul(right) {
        Some(pairs) => check_more_rows(op, have, pairs),
        None => Err(too_many(op, None, max_rows())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist_table::DistTable;
    use crate::local::{Agg, JoinAlgorithm, JoinOptions, JoinType, SortKey, UniqueOptions};
    use crate::table::Table;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use std::sync::Arc;

    fn limit_of(e: &FrameError) -> (&'static str, u64, u64) {
        match e {
            FrameError::TooManyRows { op, rows, limit } => (*op, *rows, *limit),
            other => panic!("expected TooManyRows, got {other:?}"),
        }
    }

    /// The checks on counts no test could allocate.
    #[test]
    fn huge_counts_are_refused_without_overflow() {
        assert_eq!(MAX_ROWS, 4_294_967_295);
        check_rows("join", MAX_ROWS).unwrap();
        let e = check_rows("join", MAX_ROWS + 1).unwrap_err();
        assert_eq!(limit_of(&e), ("join", 4_294_967_296, 4_294_967_295));
        assert!(e.to_string().contains("4294967296"), "{e}");
        check_more_rows("join", MAX_ROWS - 10, 10).unwrap();
        limit_of(&check_more_rows("join", MAX_ROWS - 10, 11).unwrap_err());
        limit_of(&check_more_rows("join", usize::MAX, usize::MAX).unwrap_err());
        // 70,000 left rows x 70,000 right matches: 4.9e9 pairs.
        check_more_pairs("join", 0, 65_535, 65_537).unwrap();
        let e = check_more_pairs("join", 0, 70_000, 70_000).unwrap_err();
        assert_eq!(limit_of(&e).1, 4_900_000_000);
        let e = check_more_pairs("join", 5, usize::MAX, 2).unwrap_err();
        assert_eq!(limit_of(&e).1, u64::MAX);
        // The test limit is per thread and restored.
        with_max_rows(3, || assert_eq!(max_rows(), 3));
        assert_eq!(max_rows(), MAX_ROWS);
        std::thread::spawn(|| with_max_rows(7, || assert_eq!(max_rows(), 7)))
            .join()
            .unwrap();
        assert_eq!(max_rows(), MAX_ROWS);
    }

    fn ints(name: &str, v: Vec<i64>) -> Table {
        Table::from_columns(vec![(name, Arc::new(Int64Array::from(v)) as ArrayRef)]).unwrap()
    }

    /// Every operator that numbers rows with `u32` calls the checks: with the
    /// limit lowered to 5, 6 rows (or 6 pairs) are refused, 5 are not.
    #[test]
    fn operators_refuse_more_rows_than_the_limit() {
        let five = ints("k", vec![1, 1, 2, 3, 4]);
        let six = ints("k", vec![1, 1, 2, 3, 4, 5]);
        with_max_rows(5, || {
            // Inputs.
            let o = JoinOptions::on(&["k"]);
            assert_eq!(limit_of(&five.join(&six, &o).unwrap_err()).0, "join");
            assert_eq!(limit_of(&six.join(&five, &o).unwrap_err()).0, "join");
            assert_eq!(
                limit_of(&six.group_by(&["k"], &[Agg::count("k")]).unwrap_err()).0,
                "group_by"
            );
            assert_eq!(
                limit_of(&six.unique(&UniqueOptions::default()).unwrap_err()).0,
                "unique"
            );
            assert_eq!(
                limit_of(&six.sort(&[SortKey::asc("k")]).unwrap_err()).0,
                "sort"
            );
            assert_eq!(limit_of(&five.intersect(&six).unwrap_err()).0, "intersect");
            assert_eq!(limit_of(&five.union(&six).unwrap_err()).0, "union");
            // Five rows pass.
            five.group_by(&["k"], &[Agg::count("k")]).unwrap();
            five.sort(&[SortKey::asc("k")]).unwrap();
            five.unique(&UniqueOptions::default()).unwrap();
            // Outputs: keys 1,1 on both sides make 4 pairs, plus 3 more rows.
            let l = ints("k", vec![1, 1, 2, 3, 4]);
            let r = ints("k", vec![1, 1, 2]);
            for algorithm in [JoinAlgorithm::Hash, JoinAlgorithm::SortMerge] {
                let o = JoinOptions::on(&["k"]).algorithm(algorithm);
                let inner = l.join(&r, &o).unwrap();
                assert_eq!(inner.num_rows(), 5, "{algorithm:?}");
                for how in [JoinType::Left, JoinType::FullOuter] {
                    let e = l.join(&r, &o.clone().how(how)).unwrap_err();
                    assert_eq!(limit_of(&e), ("join", 6, 5), "{algorithm:?} {how:?}");
                }
                let e = r.join(&l, &o.clone().how(JoinType::Right)).unwrap_err();
                assert_eq!(limit_of(&e).0, "join", "{algorithm:?}");
                r.join(&l, &o.clone().how(JoinType::LeftSemi)).unwrap();
            }
            // Many batches: the partition counts, not the batch.
            let batches = Table::concat(&[five.clone(), ints("k", vec![9])]).unwrap();
            assert_eq!(
                limit_of(&batches.group_by(&["k"], &[]).unwrap_err()).0,
                "group_by"
            );
        });
        // The distributed operators: the shuffle moves batches of any size
        // (it switches to 64-bit indices past the limit), and the local
        // operator on the rank that receives the rows checks them. Three
        // rows per rank, all of key 1: six rows meet on one rank.
        let s: StringArray = (0..3).map(|i| Some(format!("s{i}"))).collect();
        let t = Table::from_columns(vec![
            ("k", Arc::new(Int64Array::from(vec![1, 1, 1])) as ArrayRef),
            ("s", Arc::new(s) as ArrayRef),
        ])
        .unwrap();
        let out = deeprc_comm::local::launch(2, |comm| {
            with_max_rows(5, || -> Result<Vec<Option<&'static str>>> {
                let d = DistTable::new(t.clone(), Arc::new(comm))?;
                let ops = [
                    d.join(&d, &JoinOptions::on(&["k"])).map(|_| ()),
                    d.group_by(&["k"], &[Agg::nunique("s")]).map(|_| ()),
                    d.shuffle(&["k"]).map(|_| ()),
                ];
                Ok(ops
                    .into_iter()
                    .map(|r| r.err().map(|e| limit_of(&e).0))
                    .collect())
            })
        })
        .unwrap();
        let failed: Vec<_> = out.iter().filter(|o| o[0].is_some()).collect();
        assert_eq!(failed.len(), 1, "{out:?}");
        assert_eq!(failed[0], &vec![Some("join"), Some("group_by"), None]);
    }
}
