//! # deeprc-bridge
//!
//! The Data Bridge: a preprocessed Arrow table (a [`Table`](deeprc_frame::Table)
//! or this rank's partition of a [`DistTable`](deeprc_frame::DistTable)) goes
//! in; batches of features and targets come out on every rank, ready for
//! PyTorch (through `tch`) or TensorFlow (through `tensorflow`), without the
//! copies and the Python interpreter a `DataLoader` pays for.
//!
//! ```text
//!  Table / DistTable --(RowSpec | WindowSpec)--> Splits { train, val, test, scaler }
//!        |                  normalise (global stats), split, balance ranks
//!        v
//!  Loader (Sampler: shuffle per epoch with a seed, shard over ranks)
//!        |  worker threads, bounded prefetch, reused page-aligned buffers
//!        v
//!  Batch (shape, dtype, bytes) --> tch::Tensor / tensorflow::Tensor
//!          zero-copy view of Arrow memory where the layout allows,
//!          otherwise exactly one copy
//! ```
//!
//! ```
//! use deeprc_bridge::{Loader, LoaderOptions, Normalize, SamplerOptions, Split, WindowSpec};
//! use deeprc_frame::arrow::array::{ArrayRef, Float32Array};
//! use deeprc_frame::Table;
//! use std::sync::Arc;
//!
//! let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
//! let t = Table::from_columns(vec![("load", Arc::new(Float32Array::from(v)) as ArrayRef)])?;
//! let splits = WindowSpec::new(8, 2, &["load"], &["load"])
//!     .normalize(Normalize::ZScore)
//!     .split(Split::Fraction { train: 0.7, val: 0.3 })
//!     .build(&t)?;
//! let loader = Loader::new(splits.train, SamplerOptions::shuffled(16, 42), LoaderOptions::default())?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(&batch.inputs().shape()[1..], &[8, 1]);
//!     assert_eq!(&batch.targets().shape()[1..], &[2, 1]);
//! }
//! # Ok::<(), deeprc_bridge::BridgeError>(())
//! ```
//!
//! # Feature flags
//!
//! - `tch`: [`tch`] turns batches into `tch::Tensor`s (libtorch
//!   2.13 of PyPI's torch wheel, through `$LIBTORCH`; `scripts/setup-ml.sh`),
//!   and `train` trains tch models data-parallel over any communicator
//!   (gradients all-reduced in buckets, checkpoints with the loader's
//!   position). `train` exists only with the feature: its API is made of
//!   tch types.
//! - `tensorflow`: [`tensorflow`] fills reusable
//!   `tensorflow::Tensor`s and trains SavedModels (the C library of PyPI's
//!   tensorflow-cpu 2.13.1; `scripts/setup-ml.sh` writes the link override).
//!
//! Without a feature its module still exists and its entry points return
//! [`BridgeError::NotCompiled`], so code that names them compiles everywhere.
//!
//! # The zero-copy contract
//!
//! A tensor never outlives the memory it views: a tch tensor made from a
//! batch owns (through libtorch's own reference count and deleter) the
//! staging buffer or the Arrow buffer it views; the buffer goes back to the
//! loader's pool only when libtorch frees the last tensor or view of it.
//! Tensors over Arrow memory must not be written in place (Arrow buffers are
//! immutable and shared; as with `torch.from_numpy` over a read-only array);
//! use [`ZeroCopy::Never`] when a model writes into its inputs.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod dataset;
pub mod dtype;
pub mod error;
pub mod layout;
pub mod loader;
pub mod mem;
pub mod normalize;
pub mod sampler;
pub mod source;
pub mod split;
mod tf_export;

#[cfg(feature = "tch")]
pub mod tch;
#[cfg(not(feature = "tch"))]
#[path = "unavailable/tch.rs"]
pub mod tch;

#[cfg(feature = "tch")]
pub mod train;

#[cfg(feature = "tensorflow")]
pub mod tensorflow;
#[cfg(not(feature = "tensorflow"))]
#[path = "unavailable/tensorflow.rs"]
pub mod tensorflow;

pub use dataset::{
    Balance, Dataset, PartKind, PartSpec, RowDataset, RowSpec, SampleLayout, SampleMeta, Splits,
    TimeStep, WindowDataset, WindowSpec,
};
pub use dtype::{DType, TensorElement};
pub use error::{BridgeError, Result};
pub use layout::{NullPolicy, ZeroCopy};
pub use loader::{
    Batch, BatchLayout, BatchMemory, Epoch, HostMemory, HostPool, IntoShared, Loader,
    LoaderOptions, MemoryPool, PartRef, PinPolicy,
};
pub use mem::{AlignedBuf, PinStatus};
pub use normalize::{ColumnScale, Normalize, Scaler};
pub use sampler::{EpochPlan, Sampler, SamplerOptions, ShardInfo, ShardPolicy};
pub use source::{DataSource, Sharding};
pub use split::{Split, SplitKind};

/// The Arrow crate this crate uses (deeprc-frame's, DataFusion's).
pub use arrow;
