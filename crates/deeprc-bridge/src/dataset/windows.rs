//! Time-series windows: `input_len` rows of features in, the next
//! `horizon` rows of targets out.
//!
//! ```text
//!  series A rows:  0 1 2 3 4 5 6 7 8 | gap | 9 10 11 12 ...   series B ...
//!  window (L=3, H=2, stride 2):
//!    [0 1 2 | 3 4]   inputs rows 0..3, targets rows 3..5
//!        [2 3 4 | 5 6]
//!            [4 5 6 | 7 8]          no window crosses the gap or a series
//! ```
//!
//! Build time: the feature and target columns are normalised (with the
//! statistics of the training rows) into two row-major frames, `[rows, F]`
//! and `[rows, T]`, shared by the three splits. A window is then one
//! contiguous `memcpy` of `input_len * F` values and one of `horizon * T`
//! values, and a batch of consecutive windows of one series is a strided
//! view of the frames (no copy at all).

use super::store::{agree, impl_dataset, Balance, Base, Store};
use super::{PartKind, PartSpec, SampleLayout, Splits};
use crate::dtype::{with_element, DType};
use crate::error::{BridgeError, Result};
use crate::layout::{ArrowView, Column, NullPolicy};
use crate::mem::prefetch;
use crate::normalize::{Normalize, Scaler};
use crate::source::DataSource;
use crate::split::Split;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::Buffer;
use arrow::datatypes::{self as adt, DataType, TimeUnit};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// The interval between consecutive rows of a series; any other difference
/// is a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeStep {
    /// A duration, converted to the time column's unit (seconds,
    /// milliseconds, ... for timestamps; days for `Date32`).
    Duration(Duration),
    /// A number in the time column's own unit (for integer columns).
    Raw(i64),
}

impl From<Duration> for TimeStep {
    fn from(d: Duration) -> Self {
        TimeStep::Duration(d)
    }
}

impl From<i64> for TimeStep {
    fn from(v: i64) -> Self {
        TimeStep::Raw(v)
    }
}

impl TimeStep {
    /// One hour.
    pub const HOUR: TimeStep = TimeStep::Duration(Duration::from_secs(3600));
    /// One day.
    pub const DAY: TimeStep = TimeStep::Duration(Duration::from_secs(86_400));

    fn in_unit(self, column: &str, dt: &DataType) -> Result<i64> {
        let bad = |why: String| {
            BridgeError::invalid("TimeStep", format!("time column {column:?} ({dt}): {why}"))
        };
        let d = match self {
            TimeStep::Raw(v) => {
                return if v > 0 {
                    Ok(v)
                } else {
                    Err(bad(format!("step {v} is not positive")))
                }
            }
            TimeStep::Duration(d) => d,
        };
        let v: i128 = match dt {
            DataType::Timestamp(TimeUnit::Second, _) => i128::from(d.as_secs()),
            DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Date64 => {
                d.as_millis() as i128
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => d.as_micros() as i128,
            DataType::Timestamp(TimeUnit::Nanosecond, _) => d.as_nanos() as i128,
            DataType::Date32 => {
                if d.as_secs() % 86_400 != 0 || d.subsec_nanos() != 0 {
                    return Err(bad(format!("{d:?} is not a whole number of days")));
                }
                i128::from(d.as_secs() / 86_400)
            }
            _ => return Err(bad("an integer time column needs TimeStep::Raw".into())),
        };
        i64::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| bad(format!("step {d:?} is zero or too large")))
    }
}

/// The values of a time column as `i64` in its own unit.
pub(crate) fn time_values(source: &DataSource, column: &str) -> Result<Vec<i64>> {
    let idx = source
        .schema
        .index_of(column)
        .map_err(|_| BridgeError::ColumnNotFound {
            column: column.to_string(),
            available: source
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        })?;
    let dt = source.schema.field(idx).data_type().clone();
    let mut out = Vec::with_capacity(source.num_rows());
    for b in &source.batches {
        let a = b.column(idx);
        if a.null_count() > 0 {
            return Err(BridgeError::NullsInColumn {
                column: column.to_string(),
                count: a.null_count(),
            });
        }
        match &dt {
            DataType::Timestamp(TimeUnit::Second, _) => {
                out.extend(a.as_primitive::<adt::TimestampSecondType>().values())
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                out.extend(a.as_primitive::<adt::TimestampMillisecondType>().values())
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                out.extend(a.as_primitive::<adt::TimestampMicrosecondType>().values())
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                out.extend(a.as_primitive::<adt::TimestampNanosecondType>().values())
            }
            DataType::Date32 => out.extend(
                a.as_primitive::<adt::Date32Type>()
                    .values()
                    .iter()
                    .map(|&v| i64::from(v)),
            ),
            DataType::Date64 => out.extend(a.as_primitive::<adt::Date64Type>().values()),
            DataType::Int64 => out.extend(a.as_primitive::<adt::Int64Type>().values()),
            DataType::Int32 => out.extend(
                a.as_primitive::<adt::Int32Type>()
                    .values()
                    .iter()
                    .map(|&v| i64::from(v)),
            ),
            DataType::UInt32 => out.extend(
                a.as_primitive::<adt::UInt32Type>()
                    .values()
                    .iter()
                    .map(|&v| i64::from(v)),
            ),
            _ => {
                return Err(BridgeError::BadTimeColumn {
                    column: column.to_string(),
                    dtype: dt,
                })
            }
        }
    }
    Ok(out)
}

/// What a [`WindowDataset`] is made of. Build it with [`WindowSpec::build`].
///
/// ```
/// use deeprc_bridge::{WindowSpec, Dataset};
/// use deeprc_frame::arrow::array::{ArrayRef, Float32Array, StringArray};
/// use deeprc_frame::Table;
/// use std::sync::Arc;
///
/// let t = Table::from_columns(vec![
///     ("basin", Arc::new(StringArray::from(vec!["a", "a", "a", "a", "b", "b", "b"])) as ArrayRef),
///     ("q", Arc::new(Float32Array::from(vec![1., 2., 3., 4., 10., 20., 30.])) as ArrayRef),
/// ])?;
/// let splits = WindowSpec::new(2, 1, &["q"], &["q"]).series("basin").build(&t)?;
/// // a: windows at rows 0 and 1; b: one window at row 4.
/// assert_eq!(splits.train.len(), 3);
/// assert_eq!(splits.train.layout().inputs.shape, vec![2, 1]);
/// # Ok::<(), deeprc_bridge::BridgeError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    /// Rows of inputs per window.
    pub input_len: usize,
    /// Rows of targets per window (after the inputs).
    pub horizon: usize,
    /// Rows between the starts of consecutive windows (default 1).
    pub stride: usize,
    /// Feature columns (inputs).
    pub features: Vec<String>,
    /// Target columns.
    pub targets: Vec<String>,
    /// The series-id column; without one, all rows are one series.
    pub series: Option<String>,
    /// The time column and its step: a different difference between
    /// consecutive rows of a series is a gap.
    pub time: Option<(String, TimeStep)>,
    /// Element type of inputs and targets: `f32` (default) or `f64`.
    pub dtype: DType,
    /// Nulls in feature and target columns.
    pub nulls: NullPolicy,
    /// Scaling of features and targets.
    pub normalize: Normalize,
    /// Train / validation / test, per series.
    pub split: Split,
    /// Balancing between ranks.
    pub balance: Balance,
    /// Leave out series too short for one window, instead of failing with
    /// [`BridgeError::WindowTooLong`].
    pub skip_short_series: bool,
}

impl WindowSpec {
    /// Windows of `input_len` rows of `features` followed by `horizon` rows
    /// of `targets`, stride 1, `f32`, no normalisation, no split.
    pub fn new(input_len: usize, horizon: usize, features: &[&str], targets: &[&str]) -> Self {
        WindowSpec {
            input_len,
            horizon,
            stride: 1,
            features: features.iter().map(|s| s.to_string()).collect(),
            targets: targets.iter().map(|s| s.to_string()).collect(),
            series: None,
            time: None,
            dtype: DType::F32,
            nulls: NullPolicy::Error,
            normalize: Normalize::None,
            split: Split::None,
            balance: Balance::Move,
            skip_short_series: false,
        }
    }

    /// The stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// The series-id column.
    pub fn series(mut self, column: &str) -> Self {
        self.series = Some(column.to_string());
        self
    }

    /// The time column and its step.
    pub fn time(mut self, column: &str, step: impl Into<TimeStep>) -> Self {
        self.time = Some((column.to_string(), step.into()));
        self
    }

    /// The element type (`f32` or `f64`).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The null policy.
    pub fn nulls(mut self, policy: NullPolicy) -> Self {
        self.nulls = policy;
        self
    }

    /// The normalisation.
    pub fn normalize(mut self, n: Normalize) -> Self {
        self.normalize = n;
        self
    }

    /// The split.
    pub fn split(mut self, s: Split) -> Self {
        self.split = s;
        self
    }

    /// The balancing between ranks.
    pub fn balance(mut self, b: Balance) -> Self {
        self.balance = b;
        self
    }

    /// Leave out series shorter than one window.
    pub fn skip_short_series(mut self, yes: bool) -> Self {
        self.skip_short_series = yes;
        self
    }

    /// Rows one window needs.
    pub fn window_rows(&self) -> usize {
        self.input_len + self.horizon
    }

    /// Builds the datasets of the three splits. Collective on a
    /// partitioned source. Each series must be whole on one rank (use
    /// `DistTable::shuffle(&[series])` first), sorted by time.
    ///
    /// # Errors
    /// [`BridgeError::ColumnNotFound`], [`BridgeError::NotNumeric`],
    /// [`BridgeError::NullsInColumn`], [`BridgeError::WindowTooLong`]
    /// naming the series, [`BridgeError::NotSorted`],
    /// [`BridgeError::BadTimeColumn`], [`BridgeError::EmptyPartition`],
    /// [`BridgeError::PeerFailed`] on the ranks whose peer failed.
    pub fn build(&self, source: impl Into<DataSource>) -> Result<Splits<WindowDataset>> {
        let source: DataSource = source.into();
        let rcomm = source.reducing_comm();
        let p = agree(rcomm, self.prepare(&source))?;
        let mut fit_cols: Vec<&Column> = p.features.iter().collect();
        fit_cols.extend(p.targets.iter());
        let scaler = Scaler::fit(self.normalize, &fit_cols, &p.train_rows, rcomm)?;
        let fill = match self.nulls {
            NullPolicy::Fill(v) => Some(v),
            _ => None,
        };
        let n = source.num_rows();
        let f: usize = p.features.iter().map(|c| c.width).sum();
        let t: usize = p.targets.iter().map(|c| c.width).sum();
        let frame_of = |cols: &[Column], width: usize| -> Buffer {
            with_element!(self.dtype, T, {
                let mut v = vec![T::default(); n * width];
                let mut off = 0;
                for c in cols {
                    c.gather_range::<T>(0..n, &mut v, width, off, scaler.affine(&c.name), fill);
                    off += c.width;
                }
                Buffer::from_vec(v)
            })
        };
        let frame = Arc::new(Frame {
            x: frame_of(&p.features, f),
            y: frame_of(&p.targets, t),
            f,
            t,
            dtype: self.dtype,
            input_len: self.input_len,
            horizon: self.horizon,
            stride: self.stride,
            names: p.names,
            times: p.times,
        });
        let layout = SampleLayout {
            inputs: PartSpec {
                shape: vec![self.input_len, f],
                dtype: self.dtype,
                columns: self.features.clone(),
            },
            targets: PartSpec {
                shape: vec![self.horizon, t],
                dtype: self.dtype,
                columns: self.targets.clone(),
            },
        };
        let bases = p.windows.into_iter().map(|(starts, series)| WindowsBase {
            frame: Arc::clone(&frame),
            starts,
            series,
        });
        Store::build_splits(bases, &layout, &source, self.balance, scaler, |store| {
            WindowDataset { store }
        })
    }

    /// Local checks, series, gaps and windows (no collectives).
    fn prepare(&self, source: &DataSource) -> Result<Prepared> {
        if self.input_len == 0 || self.horizon == 0 || self.stride == 0 {
            return Err(BridgeError::invalid(
                "WindowSpec",
                format!(
                    "input_len {}, horizon {} and stride {} must be positive",
                    self.input_len, self.horizon, self.stride
                ),
            ));
        }
        if self.features.is_empty() || self.targets.is_empty() {
            return Err(BridgeError::invalid(
                "WindowSpec",
                "needs at least one feature and one target column",
            ));
        }
        if !self.dtype.is_float() {
            return Err(BridgeError::invalid(
                "WindowSpec::dtype",
                format!("{} (windows are f32 or f64)", self.dtype),
            ));
        }
        self.split.validate()?;
        if self.split.needs_time() && self.time.is_none() {
            return Err(BridgeError::invalid(
                "WindowSpec",
                "Split::Time needs a time column (WindowSpec::time)",
            ));
        }
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
        let (times, step) = match &self.time {
            Some((col, step)) => {
                let dt = source
                    .schema
                    .field_with_name(col)
                    .map(|f| f.data_type().clone())
                    .map_err(|_| BridgeError::ColumnNotFound {
                        column: col.clone(),
                        available: source
                            .schema
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect(),
                    })?;
                let v = time_values(source, col)?;
                (Some(v), Some(step.in_unit(col, &dt)?))
            }
            None => (None, None),
        };
        let (runs, names) = series_runs(source, self.series.as_deref())?;
        let with_nulls: Vec<&Column> = if self.nulls == NullPolicy::Skip {
            features
                .iter()
                .chain(&targets)
                .filter(|c| c.null_count() > 0)
                .collect()
        } else {
            Vec::new()
        };
        let need = self.window_rows();
        let (l, h, s) = (self.input_len, self.horizon, self.stride);
        let mut windows: [(Vec<u64>, Vec<u32>); 3] = Default::default();
        let mut train_rows = Vec::new();
        let mut names_kept = Vec::new();
        for (run, name) in runs.iter().zip(&names) {
            if let Some(t) = &times {
                for i in run.start + 1..run.end {
                    if t[i] <= t[i - 1] {
                        return Err(BridgeError::NotSorted {
                            series: name.to_string(),
                            row: i,
                            prev: t[i - 1],
                            next: t[i],
                        });
                    }
                }
            }
            // Gap-free runs of valid rows.
            let mut segments: Vec<Range<usize>> = Vec::new();
            let mut open: Option<usize> = None;
            for i in run.clone() {
                let valid = with_nulls.iter().all(|c| c.is_valid(i));
                let gap = match (&times, step, open) {
                    (Some(t), Some(step), Some(_)) => t[i] - t[i - 1] != step,
                    _ => false,
                };
                if !valid || gap {
                    if let Some(a) = open.take() {
                        segments.push(a..i);
                    }
                }
                if valid && open.is_none() {
                    open = Some(i);
                }
            }
            if let Some(a) = open {
                segments.push(a..run.end);
            }
            let longest = segments.iter().map(|r| r.len()).max().unwrap_or(0);
            if longest < need {
                if self.skip_short_series {
                    continue;
                }
                return Err(BridgeError::WindowTooLong {
                    series: name.to_string(),
                    len: longest,
                    need,
                });
            }
            let series_idx = names_kept.len() as u32;
            names_kept.push(Arc::clone(name));
            let run_times = times.as_ref().map(|t| &t[run.clone()]);
            let b = self
                .split
                .borders(run.len(), run_times)
                .map(|x| run.start + x);
            for seg in &segments {
                let (lo, hi) = (seg.start.max(b[0]), seg.end.min(b[1]));
                if lo < hi {
                    train_rows.push(lo..hi);
                }
                let mut st = seg.start;
                while st + need <= seg.end {
                    let (ts, te) = (st + l, st + l + h);
                    if let Some(k) = (0..3).find(|&k| b[k] <= ts && te <= b[k + 1]) {
                        windows[k].0.push(st as u64);
                        windows[k].1.push(series_idx);
                    }
                    st += s;
                }
            }
        }
        Ok(Prepared {
            features,
            targets,
            train_rows,
            windows,
            names: names_kept,
            times,
        })
    }
}

/// Row ranges of series and their names.
type Runs = (Vec<Range<usize>>, Vec<Arc<str>>);

/// Runs of rows with the same series id (the whole partition without a
/// series column), and their names.
fn series_runs(source: &DataSource, column: Option<&str>) -> Result<Runs> {
    let n = source.num_rows();
    let Some(column) = column else {
        let runs: Vec<Range<usize>> = std::iter::once(0..n).filter(|r| !r.is_empty()).collect();
        let names = runs.iter().map(|_| Arc::from("<all rows>")).collect();
        return Ok((runs, names));
    };
    let idx = source
        .schema
        .index_of(column)
        .map_err(|_| BridgeError::ColumnNotFound {
            column: column.to_string(),
            available: source
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        })?;
    if n == 0 {
        return Ok((vec![], vec![]));
    }
    let chunks: Vec<&dyn Array> = source
        .batches
        .iter()
        .map(|b| b.column(idx).as_ref())
        .collect();
    let col: ArrayRef = arrow::compute::concat(&chunks)?;
    if col.null_count() > 0 {
        return Err(BridgeError::NullsInColumn {
            column: column.to_string(),
            count: col.null_count(),
        });
    }
    let ranges = arrow::compute::kernels::partition::partition(&[Arc::clone(&col)])?.ranges();
    let fmt = arrow::util::display::ArrayFormatter::try_new(col.as_ref(), &Default::default())?;
    let names = ranges
        .iter()
        .map(|r| Arc::from(fmt.value(r.start).to_string().as_str()))
        .collect();
    Ok((ranges, names))
}

struct Prepared {
    features: Vec<Column>,
    targets: Vec<Column>,
    train_rows: Vec<Range<usize>>,
    windows: [(Vec<u64>, Vec<u32>); 3],
    names: Vec<Arc<str>>,
    times: Option<Vec<i64>>,
}

/// The normalised frames shared by the three splits.
#[derive(Debug)]
struct Frame {
    /// `[rows, f]` inputs, row-major.
    x: Buffer,
    /// `[rows, t]` targets, row-major.
    y: Buffer,
    f: usize,
    t: usize,
    dtype: DType,
    input_len: usize,
    horizon: usize,
    stride: usize,
    names: Vec<Arc<str>>,
    times: Option<Vec<i64>>,
}

/// One split's windows: first input row and series of each.
struct WindowsBase {
    frame: Arc<Frame>,
    starts: Vec<u64>,
    series: Vec<u32>,
}

impl Base for WindowsBase {
    fn base_len(&self) -> usize {
        self.starts.len()
    }

    fn fill_base(
        &self,
        items: &[(usize, u32)],
        inputs: Option<&mut [u8]>,
        targets: Option<&mut [u8]>,
    ) {
        let fr = &*self.frame;
        let sz = fr.dtype.size();
        let (xb, yb) = (fr.input_len * fr.f * sz, fr.horizon * fr.t * sz);
        let (x, y) = (fr.x.as_slice(), fr.y.as_slice());
        // Windows start at random places of the frames: start the cache
        // misses of the windows a few ahead while copying this one.
        const AHEAD: usize = 4;
        let x_at = |b: u32| self.starts[b as usize] as usize * fr.f * sz;
        let y_at = |b: u32| (self.starts[b as usize] as usize + fr.input_len) * fr.t * sz;
        if let Some(out) = inputs {
            for (i, &(pos, b)) in items.iter().enumerate() {
                if let Some(&(_, next)) = items.get(i + AHEAD) {
                    let p = x.as_ptr().wrapping_add(x_at(next));
                    prefetch(p);
                    prefetch(p.wrapping_add(64));
                }
                let src = x_at(b);
                out[pos * xb..(pos + 1) * xb].copy_from_slice(&x[src..src + xb]);
            }
        }
        if let Some(out) = targets {
            for (i, &(pos, b)) in items.iter().enumerate() {
                if let Some(&(_, next)) = items.get(i + AHEAD) {
                    let p = y.as_ptr().wrapping_add(y_at(next));
                    prefetch(p);
                    prefetch(p.wrapping_add(64));
                }
                let src = y_at(b);
                out[pos * yb..(pos + 1) * yb].copy_from_slice(&y[src..src + yb]);
            }
        }
    }

    fn view_base(&self, bases: &[u32], part: PartKind) -> std::result::Result<ArrowView, String> {
        let fr = &*self.frame;
        let starts: Vec<u64> = bases.iter().map(|&b| self.starts[b as usize]).collect();
        let s0 = *starts.first().ok_or("empty batch")? as usize;
        if starts.windows(2).any(|w| w[1] != w[0] + fr.stride as u64) {
            return Err(format!(
                "the windows of the batch are not consecutive windows of one series (stride {}): shuffled, or crossing a gap or series",
                fr.stride
            ));
        }
        let n = starts.len();
        let (buffer, first_row, rows, width) = match part {
            PartKind::Inputs => (&fr.x, s0, fr.input_len, fr.f),
            PartKind::Targets => (&fr.y, s0 + fr.input_len, fr.horizon, fr.t),
        };
        Ok(ArrowView {
            buffer: buffer.clone(),
            byte_offset: first_row * width * fr.dtype.size(),
            dtype: fr.dtype,
            shape: vec![n, rows, width],
            strides: vec![fr.stride * width, width, 1],
        })
    }

    fn meta_base(&self, b: u32) -> (Option<Arc<str>>, Option<i64>, Option<usize>) {
        let fr = &*self.frame;
        let s = self.starts[b as usize] as usize;
        let name = Arc::clone(&fr.names[self.series[b as usize] as usize]);
        (
            Some(name),
            fr.times.as_ref().map(|t| t[s + fr.input_len]),
            Some(s),
        )
    }
}

/// A dataset of time-series windows. See [`WindowSpec`].
pub struct WindowDataset {
    store: Store<WindowsBase>,
}

impl std::fmt::Debug for WindowDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowDataset")
            .field("len", &self.store.len())
            .field("layout", &self.store.layout)
            .field("shard", &self.store.info)
            .finish()
    }
}

impl_dataset!(WindowDataset);
