//! Row samples: feature columns in, target columns out.

use super::store::{agree, impl_dataset, Balance, Base, Store};
use super::{PartKind, PartSpec, SampleLayout, Splits};
use crate::dtype::{with_element, DType};
use crate::error::{BridgeError, Result};
use crate::layout::{Affine, ArrowView, Column, NullPolicy};
use crate::normalize::{Normalize, Scaler};
use crate::source::DataSource;
use crate::split::Split;
use std::sync::Arc;

/// What a [`RowDataset`] is made of. Build it with [`RowSpec::build`].
///
/// ```
/// use deeprc_bridge::{RowSpec, Normalize, Split, Dataset};
/// use deeprc_frame::arrow::array::{ArrayRef, Float64Array, Int64Array};
/// use deeprc_frame::Table;
/// use std::sync::Arc;
///
/// let t = Table::from_columns(vec![
///     ("x", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])) as ArrayRef),
///     ("label", Arc::new(Int64Array::from(vec![0, 1, 0, 1])) as ArrayRef),
/// ])?;
/// let splits = RowSpec::new(&["x"], &["label"])
///     .normalize(Normalize::ZScore)
///     .split(Split::Fraction { train: 0.5, val: 0.5 })
///     .build(&t)?;
/// assert_eq!(splits.train.len(), 2);
/// assert_eq!(splits.val.as_ref().unwrap().len(), 2);
/// assert_eq!(splits.scaler.get("x")?.shift, 1.5);
/// # Ok::<(), deeprc_bridge::BridgeError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpec {
    /// Feature columns (numeric, or fixed-size lists of numbers).
    pub features: Vec<String>,
    /// Target columns.
    pub targets: Vec<String>,
    /// Element type of the inputs (default `f32`).
    pub input_dtype: DType,
    /// Element type of the targets (default `f32`).
    pub target_dtype: DType,
    /// Nulls in feature and target columns.
    pub nulls: NullPolicy,
    /// Scaling of the features.
    pub normalize: Normalize,
    /// Whether the targets are scaled too (regression) or not
    /// (classification labels; the default).
    pub normalize_targets: bool,
    /// Train / validation / test.
    pub split: Split,
    /// The time column a [`Split::Time`] reads.
    pub time: Option<String>,
    /// Balancing between ranks.
    pub balance: Balance,
}

impl RowSpec {
    /// Features and targets by name, `f32`, no normalisation, no split.
    pub fn new(features: &[&str], targets: &[&str]) -> Self {
        RowSpec {
            features: features.iter().map(|s| s.to_string()).collect(),
            targets: targets.iter().map(|s| s.to_string()).collect(),
            input_dtype: DType::F32,
            target_dtype: DType::F32,
            nulls: NullPolicy::Error,
            normalize: Normalize::None,
            normalize_targets: false,
            split: Split::None,
            time: None,
            balance: Balance::Move,
        }
    }

    /// Element types of inputs and targets.
    pub fn dtypes(mut self, inputs: DType, targets: DType) -> Self {
        self.input_dtype = inputs;
        self.target_dtype = targets;
        self
    }

    /// The null policy.
    pub fn nulls(mut self, policy: NullPolicy) -> Self {
        self.nulls = policy;
        self
    }

    /// The normalisation of the features.
    pub fn normalize(mut self, n: Normalize) -> Self {
        self.normalize = n;
        self
    }

    /// Normalise the targets too.
    pub fn normalize_targets(mut self, yes: bool) -> Self {
        self.normalize_targets = yes;
        self
    }

    /// The split.
    pub fn split(mut self, s: Split) -> Self {
        self.split = s;
        self
    }

    /// The time column (for [`Split::Time`]).
    pub fn time(mut self, column: &str) -> Self {
        self.time = Some(column.to_string());
        self
    }

    /// The balancing between ranks.
    pub fn balance(mut self, b: Balance) -> Self {
        self.balance = b;
        self
    }

    /// Builds the datasets of the three splits. Collective on a
    /// partitioned source (every rank must call it).
    ///
    /// # Errors
    /// [`BridgeError::ColumnNotFound`], [`BridgeError::NotNumeric`],
    /// [`BridgeError::NullsInColumn`] (with [`NullPolicy::Error`]),
    /// [`BridgeError::EmptyPartition`], [`BridgeError::PeerFailed`] on the
    /// ranks whose peer failed.
    pub fn build(&self, source: impl Into<DataSource>) -> Result<Splits<RowDataset>> {
        let source: DataSource = source.into();
        let rcomm = source.reducing_comm();
        let prepared = agree(rcomm, self.prepare(&source))?;
        let Prepared {
            features,
            targets,
            members,
            train_runs,
            times,
        } = prepared;
        let mut fit_cols: Vec<&Column> = features.iter().collect();
        if self.normalize_targets {
            fit_cols.extend(targets.iter());
        }
        let scaler = Scaler::fit(self.normalize, &fit_cols, &train_runs, rcomm)?;
        let columns = Arc::new(RowColumns {
            x_affine: features.iter().map(|c| scaler.affine(&c.name)).collect(),
            y_affine: targets
                .iter()
                .map(|c| {
                    if self.normalize_targets {
                        scaler.affine(&c.name)
                    } else {
                        None
                    }
                })
                .collect(),
            features,
            targets,
            fill: match self.nulls {
                NullPolicy::Fill(v) => Some(v),
                _ => None,
            },
            times,
            x_dtype: self.input_dtype,
            y_dtype: self.target_dtype,
        });
        let width = |cols: &[Column]| cols.iter().map(|c| c.width).sum::<usize>();
        let layout = SampleLayout {
            inputs: PartSpec {
                shape: vec![width(&columns.features)],
                dtype: self.input_dtype,
                columns: self.features.clone(),
            },
            targets: PartSpec {
                shape: vec![width(&columns.targets)],
                dtype: self.target_dtype,
                columns: self.targets.clone(),
            },
        };
        let bases = members.into_iter().map(|rows| RowsBase {
            cols: Arc::clone(&columns),
            rows,
        });
        Store::build_splits(bases, &layout, &source, self.balance, scaler, |store| {
            RowDataset { store }
        })
    }

    /// Local checks and the split of the rows (no collectives).
    fn prepare(&self, source: &DataSource) -> Result<Prepared> {
        if self.features.is_empty() || self.targets.is_empty() {
            return Err(BridgeError::invalid(
                "RowSpec",
                "needs at least one feature and one target column",
            ));
        }
        self.split.validate()?;
        let resolve = |names: &[String]| -> Result<Vec<Column>> {
            names
                .iter()
                .map(|n| Column::resolve(&source.schema, &source.batches, n))
                .collect()
        };
        let features = resolve(&self.features)?;
        let targets = resolve(&self.targets)?;
        if self.nulls == NullPolicy::Error {
            for c in features.iter().chain(&targets) {
                let count = c.null_count();
                if count > 0 {
                    return Err(BridgeError::NullsInColumn {
                        column: c.name.clone(),
                        count,
                    });
                }
            }
        }
        let n = source.num_rows();
        let times = match (&self.time, self.split.needs_time()) {
            (Some(col), _) => Some(super::windows::time_values(source, col)?),
            (None, true) => {
                return Err(BridgeError::invalid(
                    "RowSpec",
                    "Split::Time needs a time column (RowSpec::time)",
                ))
            }
            (None, false) => None,
        };
        let mut members: [Vec<u32>; 3] = Default::default();
        let with_nulls: Vec<&Column> = features
            .iter()
            .chain(&targets)
            .filter(|c| c.null_count() > 0)
            .collect();
        for i in 0..n {
            if self.nulls == NullPolicy::Skip && with_nulls.iter().any(|c| !c.is_valid(i)) {
                continue;
            }
            if let Some(k) = self.split.of_row(i, n, times.as_ref().map(|t| t[i])) {
                let idx = u32::try_from(i).map_err(|_| {
                    BridgeError::invalid("RowSpec", "more than 2^32 rows on a rank")
                })?;
                members[k as usize].push(idx);
            }
        }
        let mut train_runs: Vec<std::ops::Range<usize>> = Vec::new();
        for &r in &members[0] {
            let r = r as usize;
            match train_runs.last_mut() {
                Some(last) if last.end == r => last.end += 1,
                _ => train_runs.push(r..r + 1),
            }
        }
        Ok(Prepared {
            features,
            targets,
            members,
            train_runs,
            times,
        })
    }
}

struct Prepared {
    features: Vec<Column>,
    targets: Vec<Column>,
    members: [Vec<u32>; 3],
    train_runs: Vec<std::ops::Range<usize>>,
    times: Option<Vec<i64>>,
}

/// The columns shared by the three splits.
#[derive(Debug)]
struct RowColumns {
    features: Vec<Column>,
    targets: Vec<Column>,
    x_affine: Vec<Option<Affine>>,
    y_affine: Vec<Option<Affine>>,
    fill: Option<f64>,
    times: Option<Vec<i64>>,
    x_dtype: DType,
    y_dtype: DType,
}

/// One split's rows.
struct RowsBase {
    cols: Arc<RowColumns>,
    rows: Vec<u32>,
}

fn gather_part(
    cols: &[Column],
    affine: &[Option<Affine>],
    fill: Option<f64>,
    dtype: DType,
    rows: &[usize],
    positions: &[usize],
    out: &mut [u8],
) {
    let width: usize = cols.iter().map(|c| c.width).sum();
    with_element!(dtype, T, {
        let out: &mut [T] = bytemuck::cast_slice_mut(out);
        let contiguous = positions.iter().enumerate().all(|(i, &p)| p == i);
        if contiguous {
            let mut off = 0;
            for (c, a) in cols.iter().zip(affine) {
                c.gather::<T>(rows, out, width, off, *a, fill);
                off += c.width;
            }
        } else {
            // Scattered positions (some samples of the batch were imported):
            // gather into a scratch buffer, then place each row.
            let mut tmp = vec![T::default(); rows.len() * width];
            let mut off = 0;
            for (c, a) in cols.iter().zip(affine) {
                c.gather::<T>(rows, &mut tmp, width, off, *a, fill);
                off += c.width;
            }
            for (i, &p) in positions.iter().enumerate() {
                out[p * width..(p + 1) * width].copy_from_slice(&tmp[i * width..(i + 1) * width]);
            }
        }
    })
}

impl Base for RowsBase {
    fn base_len(&self) -> usize {
        self.rows.len()
    }

    fn fill_base(
        &self,
        items: &[(usize, u32)],
        inputs: Option<&mut [u8]>,
        targets: Option<&mut [u8]>,
    ) {
        let rows: Vec<usize> = items
            .iter()
            .map(|&(_, b)| self.rows[b as usize] as usize)
            .collect();
        let positions: Vec<usize> = items.iter().map(|&(p, _)| p).collect();
        let c = &self.cols;
        if let Some(out) = inputs {
            gather_part(
                &c.features,
                &c.x_affine,
                c.fill,
                c.x_dtype,
                &rows,
                &positions,
                out,
            );
        }
        if let Some(out) = targets {
            gather_part(
                &c.targets,
                &c.y_affine,
                c.fill,
                c.y_dtype,
                &rows,
                &positions,
                out,
            );
        }
    }

    fn view_base(&self, bases: &[u32], part: PartKind) -> std::result::Result<ArrowView, String> {
        let (cols, affine, dtype) = match part {
            PartKind::Inputs => (&self.cols.features, &self.cols.x_affine, self.cols.x_dtype),
            PartKind::Targets => (&self.cols.targets, &self.cols.y_affine, self.cols.y_dtype),
        };
        if cols.len() != 1 {
            return Err(format!(
                "{} columns are interleaved into rows (only one column can be viewed)",
                cols.len()
            ));
        }
        if affine[0].is_some() {
            return Err(format!("column {:?} is normalised", cols[0].name));
        }
        let rows: Vec<u32> = bases.iter().map(|&b| self.rows[b as usize]).collect();
        if rows.windows(2).any(|w| w[1] != w[0] + 1) {
            return Err(
                "the rows of the batch are not consecutive (shuffled, or rows left out)".into(),
            );
        }
        let first = *rows.first().ok_or("empty batch")? as usize;
        cols[0].view(first, rows.len(), dtype, true)
    }

    fn meta_base(&self, b: u32) -> (Option<Arc<str>>, Option<i64>, Option<usize>) {
        let row = self.rows[b as usize] as usize;
        (None, self.cols.times.as_ref().map(|t| t[row]), Some(row))
    }
}

/// A dataset of rows. See [`RowSpec`].
pub struct RowDataset {
    store: Store<RowsBase>,
}

impl std::fmt::Debug for RowDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowDataset")
            .field("len", &self.store.len())
            .field("layout", &self.store.layout)
            .field("shard", &self.store.info)
            .finish()
    }
}

impl_dataset!(RowDataset);
