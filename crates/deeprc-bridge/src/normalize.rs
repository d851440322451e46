//! Normalisation fitted on the training split, applied to every split,
//! inverted for predictions.
//!
//! Statistics are global: on a partitioned source each rank sums its own
//! training rows and the sums are all-reduced, so every rank applies the
//! same shift and scale (two all-reduces: counts, sums, minima and maxima,
//! then squared deviations from the global mean, which is numerically
//! better than one pass of sums of squares).

use crate::error::{BridgeError, Result};
use crate::layout::{Affine, Column};
use deeprc_comm::{Communicator, CommunicatorExt, ReduceOp};
use std::ops::Range;

/// How features and targets are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalize {
    /// Values as they are.
    #[default]
    None,
    /// `(x - mean) / std` (population standard deviation, as scikit-learn's
    /// `StandardScaler`); a constant column keeps scale 1.
    ZScore,
    /// `(x - min) / (max - min)`; a constant column keeps scale 1.
    MinMax,
}

/// The shift and scale of one column: `normalised = (x - shift) / scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnScale {
    /// The column.
    pub name: String,
    /// Subtracted first.
    pub shift: f64,
    /// Divided by next (never 0).
    pub scale: f64,
}

/// Fitted statistics of the feature and target columns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scaler {
    method: Normalize,
    columns: Vec<ColumnScale>,
}

impl Scaler {
    /// The identity scaler over `names`.
    pub fn identity(names: &[String]) -> Self {
        Scaler {
            method: Normalize::None,
            columns: names
                .iter()
                .map(|n| ColumnScale {
                    name: n.clone(),
                    shift: 0.0,
                    scale: 1.0,
                })
                .collect(),
        }
    }

    /// The method.
    pub fn method(&self) -> Normalize {
        self.method
    }

    /// Every fitted column.
    pub fn columns(&self) -> &[ColumnScale] {
        &self.columns
    }

    /// The statistics of `column`.
    ///
    /// # Errors
    /// [`BridgeError::ColumnNotFound`] when the scaler has no such column.
    pub fn get(&self, column: &str) -> Result<&ColumnScale> {
        self.columns
            .iter()
            .find(|c| c.name == column)
            .ok_or_else(|| BridgeError::ColumnNotFound {
                column: column.to_string(),
                available: self.columns.iter().map(|c| c.name.clone()).collect(),
            })
    }

    /// Normalises one value of `column`.
    pub fn transform(&self, column: &str, x: f64) -> Result<f64> {
        let c = self.get(column)?;
        Ok((x - c.shift) / c.scale)
    }

    /// Inverts the normalisation of one value of `column`.
    pub fn inverse(&self, column: &str, y: f64) -> Result<f64> {
        let c = self.get(column)?;
        Ok(y * c.scale + c.shift)
    }

    /// Inverts the normalisation of row-major data whose last dimension is
    /// `columns` (e.g. predictions `[batch, horizon, targets]` with the
    /// target names), in place.
    ///
    /// # Errors
    /// [`BridgeError::ColumnNotFound`]; [`BridgeError::InvalidArgument`]
    /// when the length is not a multiple of `columns.len()`.
    pub fn inverse_rows(&self, columns: &[&str], data: &mut [f32]) -> Result<()> {
        let stats = columns
            .iter()
            .map(|c| self.get(c).map(|s| (s.shift, s.scale)))
            .collect::<Result<Vec<_>>>()?;
        if stats.is_empty() || data.len() % stats.len() != 0 {
            return Err(BridgeError::invalid(
                "Scaler::inverse_rows",
                format!(
                    "{} values are not rows of {} columns",
                    data.len(),
                    stats.len()
                ),
            ));
        }
        for row in data.chunks_exact_mut(stats.len()) {
            for (v, &(shift, scale)) in row.iter_mut().zip(&stats) {
                *v = (f64::from(*v) * scale + shift) as f32;
            }
        }
        Ok(())
    }

    pub(crate) fn affine(&self, column: &str) -> Option<Affine> {
        if self.method == Normalize::None {
            return None;
        }
        self.get(column).ok().map(|c| Affine {
            shift: c.shift,
            inv_scale: 1.0 / c.scale,
        })
    }

    /// Fits `method` on the rows `ranges` of `columns` (nulls left out),
    /// over all ranks of `comm` when given. Collective when `comm` is.
    pub(crate) fn fit(
        method: Normalize,
        columns: &[&Column],
        ranges: &[Range<usize>],
        comm: Option<&dyn Communicator>,
    ) -> Result<Scaler> {
        let mut names: Vec<&Column> = Vec::new();
        for c in columns {
            if !names.iter().any(|n| n.name == c.name) {
                names.push(c);
            }
        }
        if method == Normalize::None {
            let n: Vec<String> = names.iter().map(|c| c.name.clone()).collect();
            return Ok(Scaler::identity(&n));
        }
        let k = names.len();
        // [count, sum] per column; then min and max.
        let mut sums = vec![0f64; 2 * k];
        let mut mins = vec![f64::INFINITY; k];
        let mut maxs = vec![f64::NEG_INFINITY; k];
        for (i, c) in names.iter().enumerate() {
            for r in ranges {
                c.for_each_valid(r.clone(), |v| {
                    sums[2 * i] += 1.0;
                    sums[2 * i + 1] += v;
                    mins[i] = mins[i].min(v);
                    maxs[i] = maxs[i].max(v);
                });
            }
        }
        if let Some(comm) = comm {
            comm.all_reduce(&mut sums, ReduceOp::Sum)?;
            comm.all_reduce(&mut mins, ReduceOp::Min)?;
            comm.all_reduce(&mut maxs, ReduceOp::Max)?;
        }
        let means: Vec<f64> = (0..k)
            .map(|i| {
                if sums[2 * i] > 0.0 {
                    sums[2 * i + 1] / sums[2 * i]
                } else {
                    0.0
                }
            })
            .collect();
        let mut scales = vec![1f64; k];
        let mut shifts = vec![0f64; k];
        match method {
            Normalize::ZScore => {
                let mut ssd = vec![0f64; k];
                for (i, c) in names.iter().enumerate() {
                    for r in ranges {
                        c.for_each_valid(r.clone(), |v| ssd[i] += (v - means[i]) * (v - means[i]));
                    }
                }
                if let Some(comm) = comm {
                    comm.all_reduce(&mut ssd, ReduceOp::Sum)?;
                }
                for i in 0..k {
                    shifts[i] = means[i];
                    let std = if sums[2 * i] > 0.0 {
                        (ssd[i] / sums[2 * i]).sqrt()
                    } else {
                        0.0
                    };
                    scales[i] = if std > 0.0 && std.is_finite() {
                        std
                    } else {
                        1.0
                    };
                }
            }
            Normalize::MinMax => {
                for i in 0..k {
                    if sums[2 * i] > 0.0 {
                        shifts[i] = mins[i];
                        let range = maxs[i] - mins[i];
                        scales[i] = if range > 0.0 && range.is_finite() {
                            range
                        } else {
                            1.0
                        };
                    }
                }
            }
            Normalize::None => unreachable!(),
        }
        Ok(Scaler {
            method,
            columns: names
                .iter()
                .enumerate()
                .map(|(i, c)| ColumnScale {
                    name: c.name.clone(),
                    shift: shifts[i],
                    scale: scales[i],
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn column(vals: Vec<Option<f64>>) -> Column {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Float64Array::from(vals))],
        )
        .unwrap();
        Column::resolve(&schema, &[b], "x").unwrap()
    }

    #[test]
    fn zscore_on_the_train_rows_only() {
        let c = column(vec![Some(1.0), Some(3.0), None, Some(100.0)]);
        let s = Scaler::fit(
            Normalize::ZScore,
            &[&c],
            std::slice::from_ref(&(0..3)),
            None,
        )
        .unwrap();
        let cs = s.get("x").unwrap();
        assert_eq!((cs.shift, cs.scale), (2.0, 1.0));
        assert_eq!(s.transform("x", 5.0).unwrap(), 3.0);
        assert_eq!(s.inverse("x", 3.0).unwrap(), 5.0);
        let mut rows = [3.0f32, 0.0];
        s.inverse_rows(&["x"], &mut rows).unwrap();
        assert_eq!(rows, [5.0, 2.0]);
        assert!(matches!(
            s.get("y"),
            Err(BridgeError::ColumnNotFound { .. })
        ));
    }

    #[test]
    fn global_statistics_over_ranks() {
        let parts = [vec![Some(1.0), Some(2.0)], vec![Some(3.0)], vec![]];
        let out = deeprc_comm::local::launch(3, |comm| {
            let c = column(parts[comm.rank()].clone());
            let n = c.len();
            let s = Scaler::fit(
                Normalize::ZScore,
                &[&c],
                std::slice::from_ref(&(0..n)),
                Some(&comm),
            )?;
            let m = Scaler::fit(
                Normalize::MinMax,
                &[&c],
                std::slice::from_ref(&(0..n)),
                Some(&comm),
            )?;
            Ok::<_, BridgeError>((s.get("x")?.clone(), m.get("x")?.clone()))
        })
        .unwrap();
        for (z, m) in out {
            assert_eq!(z.shift, 2.0);
            assert!((z.scale - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
            assert_eq!((m.shift, m.scale), (1.0, 2.0));
        }
    }
}
