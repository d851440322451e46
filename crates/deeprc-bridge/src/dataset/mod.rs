//! Datasets: what one sample is, and where its values come from.
//!
//! - [`RowDataset`] ([`RowSpec`]): one row is one sample; inputs are the
//!   feature columns `[F]`, targets the target columns `[T]`.
//! - [`WindowDataset`] ([`WindowSpec`]): a window of a time series is one
//!   sample; inputs `[input_len, F]`, targets `[horizon, T]`, grouped by a
//!   series column so that no window crosses two series or a gap in time.
//!
//! A spec's `build` fits the normalisation on the training split (globally,
//! through the communicator), makes the three splits, and, on a partitioned
//! source, balances the samples between the ranks once ([`Balance`]). It
//! returns [`Splits`]: the datasets and the fitted [`Scaler`].

mod rows;
mod store;
mod windows;

pub use rows::{RowDataset, RowSpec};
pub use store::Balance;
pub use windows::{TimeStep, WindowDataset, WindowSpec};

use crate::dtype::DType;
use crate::error::{BridgeError, Result};
use crate::layout::ArrowView;
use crate::normalize::Scaler;
use crate::sampler::ShardInfo;
use std::sync::Arc;

/// The shape and type of one part (inputs or targets) of one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    /// Shape of one sample (a batch prepends the batch size).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// The columns along the last dimension.
    pub columns: Vec<String>,
}

impl PartSpec {
    /// Elements of one sample.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of one sample.
    pub fn bytes(&self) -> usize {
        self.elements() * self.dtype.size()
    }
}

/// Inputs and targets of one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleLayout {
    /// Inputs (features).
    pub inputs: PartSpec,
    /// Targets (labels).
    pub targets: PartSpec,
}

/// Which part of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartKind {
    /// The features.
    Inputs,
    /// The labels.
    Targets,
}

impl PartKind {
    /// `"inputs"` or `"targets"`.
    pub fn name(self) -> &'static str {
        match self {
            PartKind::Inputs => "inputs",
            PartKind::Targets => "targets",
        }
    }
}

/// Where a sample came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleMeta {
    /// Global id: unique over all ranks, stable for a source and a spec.
    pub id: u64,
    /// The series (windows with a series column).
    pub series: Option<Arc<str>>,
    /// Time of the row (rows) or of the first target row (windows), when
    /// the spec has a time column.
    pub time: Option<i64>,
    /// The local row on this rank (the first input row of a window); `None`
    /// for a sample that moved here from another rank.
    pub row: Option<usize>,
}

mod sealed {
    pub trait Sealed {}
}

/// A dataset the [`Loader`](crate::Loader) can load: [`RowDataset`] or
/// [`WindowDataset`]. Sealed.
pub trait Dataset: sealed::Sealed + Send + Sync + 'static {
    /// Samples on this rank.
    fn len(&self) -> usize;

    /// `true` when this rank has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape and type of a sample.
    fn layout(&self) -> &SampleLayout;

    /// How the samples are spread over the ranks.
    fn shard_info(&self) -> &ShardInfo;

    /// Where local sample `index` came from.
    fn meta(&self, index: u32) -> SampleMeta;

    /// Writes the samples into row-major `[n, ...]` buffers (one copy).
    #[doc(hidden)]
    fn fill(
        &self,
        samples: &[u32],
        inputs: Option<&mut [u8]>,
        targets: Option<&mut [u8]>,
    ) -> Result<()>;

    /// A view of the samples' part in Arrow memory, or why not.
    #[doc(hidden)]
    fn view(&self, samples: &[u32], part: PartKind) -> std::result::Result<ArrowView, String>;
}

/// The training, validation and test datasets of one spec, and the scaler
/// fitted on the training rows.
#[derive(Debug)]
pub struct Splits<D> {
    /// Training samples.
    pub train: D,
    /// Validation samples (`None` when the split has none on any rank).
    pub val: Option<D>,
    /// Test samples (`None` when the split has none on any rank).
    pub test: Option<D>,
    /// Statistics of the feature and target columns.
    pub scaler: Scaler,
}

impl<D> Splits<D> {
    /// Assembles the splits from the datasets built in `SplitKind::ALL`
    /// order (train, validation, test).
    pub(crate) fn from_ordered(parts: Vec<Option<D>>, scaler: Scaler) -> Result<Self> {
        let mut it = parts.into_iter();
        let train = it
            .next()
            .flatten()
            .ok_or_else(|| BridgeError::Internal("train split missing".into()))?;
        Ok(Splits {
            train,
            val: it.next().flatten(),
            test: it.next().flatten(),
            scaler,
        })
    }
}
