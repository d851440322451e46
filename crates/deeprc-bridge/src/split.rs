//! Train / validation / test splits, by fraction, by row counts or by time.
//!
//! For windows a split is taken in each series separately (chronologically:
//! the first rows train, then validation, then test); a window belongs to
//! the split that holds all of its target rows, and its inputs may look back
//! into the split before (as the Informer and NeuralForecast splits of ETTh1
//! do). For rows, a split is taken over each rank's rows in order, or by the
//! time column.

use crate::error::{BridgeError, Result};

/// How rows are divided into training, validation and test.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Split {
    /// Everything trains; no validation or test set.
    #[default]
    None,
    /// The first `train` fraction of the rows trains, the next `val`
    /// validates, the rest tests.
    Fraction {
        /// Fraction of rows for training.
        train: f64,
        /// Fraction of rows for validation.
        val: f64,
    },
    /// Row counts: `train` rows, then `val`, then `test`; rows after them
    /// are left out (ETTh1's usual 8640 / 2880 / 2880).
    Rows {
        /// Training rows.
        train: usize,
        /// Validation rows.
        val: usize,
        /// Test rows.
        test: usize,
    },
    /// By the time column: before `val_start` trains, from `test_start` on
    /// tests, validation between (in the time column's units, e.g. seconds
    /// for `Timestamp(Second)`, days for `Date32`).
    Time {
        /// First time of validation.
        val_start: i64,
        /// First time of test.
        test_start: i64,
    },
}

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SplitKind {
    /// Training.
    Train,
    /// Validation.
    Val,
    /// Test.
    Test,
}

impl SplitKind {
    /// All three, in order.
    pub const ALL: [SplitKind; 3] = [SplitKind::Train, SplitKind::Val, SplitKind::Test];

    /// `"train"`, `"val"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            SplitKind::Train => "train",
            SplitKind::Val => "val",
            SplitKind::Test => "test",
        }
    }
}

impl Split {
    /// Checks the parameters.
    pub(crate) fn validate(&self) -> Result<()> {
        match *self {
            Split::Fraction { train, val }
                if !(train >= 0.0 && val >= 0.0 && train + val <= 1.0 + 1e-12) =>
            {
                return Err(BridgeError::invalid(
                    "Split::Fraction",
                    format!("train {train} and val {val} must be >= 0 and sum to at most 1"),
                ));
            }
            Split::Time {
                val_start,
                test_start,
            } if val_start > test_start => {
                return Err(BridgeError::invalid(
                    "Split::Time",
                    format!("val_start {val_start} is after test_start {test_start}"),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the split needs a time column.
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Split::Time { .. })
    }

    /// Borders `[b0, b1, b2, b3]` (relative rows) of train `b0..b1`,
    /// validation `b1..b2` and test `b2..b3` in a run of `n` rows sorted by
    /// `times` (needed for [`Split::Time`]).
    pub(crate) fn borders(&self, n: usize, times: Option<&[i64]>) -> [usize; 4] {
        match *self {
            Split::None => [0, n, n, n],
            Split::Fraction { train, val } => {
                let a = ((n as f64) * train).floor() as usize;
                let b = ((n as f64) * (train + val)).floor() as usize;
                [0, a.min(n), b.min(n), n]
            }
            Split::Rows { train, val, test } => {
                let a = train.min(n);
                let b = (train + val).min(n);
                let c = (train + val + test).min(n);
                [0, a, b, c]
            }
            Split::Time {
                val_start,
                test_start,
            } => {
                let t = times.expect("time split has times");
                let a = t.partition_point(|&x| x < val_start);
                let b = t.partition_point(|&x| x < test_start);
                [0, a, b, n]
            }
        }
    }

    /// The split of one row at position `i` of `n` (rows datasets), or
    /// `None` when the row is left out.
    pub(crate) fn of_row(&self, i: usize, n: usize, time: Option<i64>) -> Option<SplitKind> {
        match *self {
            Split::Time {
                val_start,
                test_start,
            } => {
                let t = time.expect("time split has times");
                Some(if t < val_start {
                    SplitKind::Train
                } else if t < test_start {
                    SplitKind::Val
                } else {
                    SplitKind::Test
                })
            }
            _ => {
                let [_, a, b, c] = self.borders(n, None);
                if i < a {
                    Some(SplitKind::Train)
                } else if i < b {
                    Some(SplitKind::Val)
                } else if i < c {
                    Some(SplitKind::Test)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borders() {
        assert_eq!(Split::None.borders(10, None), [0, 10, 10, 10]);
        assert_eq!(
            Split::Fraction {
                train: 0.7,
                val: 0.2
            }
            .borders(10, None),
            [0, 7, 9, 10]
        );
        assert_eq!(
            Split::Rows {
                train: 4,
                val: 2,
                test: 2
            }
            .borders(10, None),
            [0, 4, 6, 8]
        );
        let t = [1, 2, 3, 5, 8];
        assert_eq!(
            Split::Time {
                val_start: 3,
                test_start: 6
            }
            .borders(5, Some(&t)),
            [0, 2, 4, 5]
        );
        assert_eq!(
            Split::Rows {
                train: 4,
                val: 2,
                test: 2
            }
            .of_row(9, 10, None),
            None
        );
        assert_eq!(
            Split::Time {
                val_start: 3,
                test_start: 6
            }
            .of_row(0, 1, Some(7)),
            Some(SplitKind::Test)
        );
        assert!(Split::Fraction {
            train: 0.9,
            val: 0.2
        }
        .validate()
        .is_err());
    }
}
