//! Batches as TensorFlow tensors, and SavedModels trained from Rust
//! (feature `tensorflow`).
//!
//! The `tensorflow` crate's [`Tensor`] always owns memory TensorFlow
//! allocated, so through it one copy is the floor: [`TfPool`] makes the
//! loader's reusable batch memory *be* a pair of TensorFlow tensors, and the
//! loader's workers copy samples straight into them (exactly one copy from
//! the Arrow columns or window frames; the tensors are reused for the next
//! batches once a batch is dropped).
//!
//! True zero copy needs the C API: [`TfTensorView`] is a `TF_Tensor` made
//! with `TF_NewTensor` over a batch's own (page-aligned) memory, whose
//! deallocator releases that memory; it can be fed to `TF_SessionRun`
//! through `tensorflow-sys` (the `tensorflow` crate's `Session` only takes
//! its own `Tensor`).

#![allow(unsafe_code)]

use crate::dataset::{Dataset, PartKind};
use crate::dtype::{DType, TensorElement};
use crate::error::{BridgeError, Result};
use crate::loader::{
    Batch, BatchLayout, BatchMemory, BatchOwner, IntoShared, Loader, LoaderOptions, MemoryPool,
};
use crate::sampler::SamplerOptions;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tensorflow::{
    Graph, Operation, SavedModelBundle, SessionOptions, SessionRunArgs, Status, Tensor, TensorType,
};
use tensorflow_sys as tf_sys;

pub use ::tensorflow as tensorflow_crate;

fn framework(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::Framework {
        framework: "tensorflow",
        message: e.to_string(),
    }
}

impl From<Status> for BridgeError {
    fn from(s: Status) -> Self {
        framework(s)
    }
}

/// An element type both of batches and of TensorFlow tensors.
pub trait TfElement: TensorElement + TensorType {}
impl<T: TensorElement + TensorType> TfElement for T {}

/// Batch memory made of two TensorFlow tensors (inputs `X`, targets `Y`).
#[derive(Debug)]
pub struct TfMemory<X: TfElement, Y: TfElement> {
    x: Tensor<X>,
    y: Tensor<Y>,
}

// SAFETY: `X` and `Y` are `TensorElement`s (sealed: u8, i8, i16, i32, i64,
// f32, f64), whose TensorFlow storage (`TensorDataCRepr`) is Send + Sync; a
// `Tensor` is owned data, mutated only through `&mut`.
unsafe impl<X: TfElement, Y: TfElement> Send for TfMemory<X, Y> {}
// SAFETY: as above; `&TfMemory` only reads.
unsafe impl<X: TfElement, Y: TfElement> Sync for TfMemory<X, Y> {}

fn dims(shape: &[usize]) -> Vec<u64> {
    shape.iter().map(|&d| d as u64).collect()
}

impl<X: TfElement, Y: TfElement> BatchMemory for TfMemory<X, Y> {
    fn prepare(&mut self, layout: &BatchLayout) -> bool {
        self.x.dims() == dims(&layout.inputs).as_slice()
            && self.y.dims() == dims(&layout.targets).as_slice()
    }

    fn parts_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        (
            bytemuck::cast_slice_mut(&mut self.x[..]),
            bytemuck::cast_slice_mut(&mut self.y[..]),
        )
    }

    fn part(&self, part: PartKind) -> &[u8] {
        match part {
            PartKind::Inputs => bytemuck::cast_slice(&self.x[..]),
            PartKind::Targets => bytemuck::cast_slice(&self.y[..]),
        }
    }
}

/// Makes [`TfMemory`]: the loader copies each batch straight into
/// TensorFlow tensors, which are reused.
#[derive(Debug)]
pub struct TfPool<X, Y> {
    _types: PhantomData<fn() -> (X, Y)>,
}

impl<X, Y> Default for TfPool<X, Y> {
    fn default() -> Self {
        TfPool {
            _types: PhantomData,
        }
    }
}

impl<X: TfElement, Y: TfElement> TfPool<X, Y> {
    /// A pool of `X` input and `Y` target tensors.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<X: TfElement, Y: TfElement> MemoryPool for TfPool<X, Y> {
    type Memory = TfMemory<X, Y>;

    fn allocate(&self, layout: &BatchLayout) -> Result<Self::Memory> {
        for (what, want, have) in [
            ("inputs", X::DTYPE, layout.input_dtype),
            ("targets", Y::DTYPE, layout.target_dtype),
        ] {
            if want != have {
                return Err(BridgeError::DTypeMismatch {
                    what: format!("TensorFlow {what} tensor"),
                    expected: want,
                    actual: have,
                });
            }
        }
        Ok(TfMemory {
            x: Tensor::new(&dims(&layout.inputs)),
            y: Tensor::new(&dims(&layout.targets)),
        })
    }

    fn supports_views(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        "TensorFlow-allocated tensors (one copy per batch, reused across batches)".into()
    }
}

/// A loader whose batches are TensorFlow tensors (`X` inputs, `Y`
/// targets, matching the dataset's element types).
///
/// # Errors
/// As [`Loader::with_pool`]; [`BridgeError::DTypeMismatch`] when `X` or `Y`
/// is not the dataset's element type.
pub fn loader<D: Dataset, X: TfElement, Y: TfElement>(
    dataset: impl IntoShared<Dataset = D>,
    sampler: SamplerOptions,
    options: LoaderOptions,
) -> Result<Loader<D, TfPool<X, Y>>> {
    let dataset: Arc<D> = dataset.into_shared();
    let l = dataset.layout();
    if l.inputs.dtype != X::DTYPE || l.targets.dtype != Y::DTYPE {
        return Err(BridgeError::DTypeMismatch {
            what: "TensorFlow loader (inputs, targets)".into(),
            expected: if l.inputs.dtype != X::DTYPE {
                X::DTYPE
            } else {
                Y::DTYPE
            },
            actual: if l.inputs.dtype != X::DTYPE {
                l.inputs.dtype
            } else {
                l.targets.dtype
            },
        });
    }
    Loader::with_pool(dataset, sampler, options, TfPool::new())
}

impl<X: TfElement, Y: TfElement> Batch<TfMemory<X, Y>> {
    /// The inputs tensor.
    pub fn tf_inputs(&self) -> &Tensor<X> {
        &self
            .memory()
            .expect("TensorFlow batches are always copied")
            .x
    }

    /// The targets tensor.
    pub fn tf_targets(&self) -> &Tensor<Y> {
        &self
            .memory()
            .expect("TensorFlow batches are always copied")
            .y
    }
}

/// A `TF_Tensor` over a batch's own memory (no copy), which it keeps alive
/// until TensorFlow releases the tensor. For `tensorflow-sys` users
/// (`TF_SessionRun`).
pub struct TfTensorView {
    raw: *mut tf_sys::TF_Tensor,
    dims: Vec<i64>,
    dtype: DType,
}

// SAFETY: a TF_Tensor is reference counted and immutable here; TensorFlow
// allows using and deleting it from any thread, and the memory it views is
// owned by a `BatchOwner`, which is Send + Sync.
unsafe impl Send for TfTensorView {}

impl std::fmt::Debug for TfTensorView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TfTensorView")
            .field("dims", &self.dims)
            .field("dtype", &self.dtype)
            .field("data", &self.data_ptr())
            .finish()
    }
}

impl TfTensorView {
    /// The tensor's data as TensorFlow sees it.
    pub fn data_ptr(&self) -> *const u8 {
        // SAFETY: `raw` is a live tensor owned by `self`.
        unsafe { tf_sys::TF_TensorData(self.raw) as *const u8 }
    }

    /// The tensor's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: TensorFlow's data pointer and byte size describe the
        // buffer the tensor holds (here: the batch memory its deallocator
        // keeps alive), unchanged while `self` lives; nothing writes it.
        unsafe {
            let n = tf_sys::TF_TensorByteSize(self.raw);
            if n == 0 {
                return &[];
            }
            std::slice::from_raw_parts(tf_sys::TF_TensorData(self.raw) as *const u8, n)
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The raw tensor, for `tensorflow-sys` calls; it stays owned by `self`.
    pub fn as_raw(&self) -> *mut tf_sys::TF_Tensor {
        self.raw
    }
}

impl Drop for TfTensorView {
    fn drop(&mut self) {
        // SAFETY: `raw` came from TF_NewTensor and is deleted once.
        unsafe { tf_sys::TF_DeleteTensor(self.raw) };
    }
}

unsafe extern "C" fn release_owner<M: BatchMemory>(
    _data: *mut c_void,
    _len: usize,
    arg: *mut c_void,
) {
    // SAFETY: `arg` came from `Arc::into_raw` in `zero_copy_views`, and
    // TensorFlow calls the deallocator exactly once.
    drop(unsafe { Arc::from_raw(arg as *const BatchOwner<M>) });
}

fn tf_dtype(d: DType) -> tf_sys::TF_DataType {
    use tf_sys::TF_DataType as T;
    match d {
        DType::U8 => T::TF_UINT8,
        DType::I8 => T::TF_INT8,
        DType::I16 => T::TF_INT16,
        DType::I32 => T::TF_INT32,
        DType::I64 => T::TF_INT64,
        DType::F32 => T::TF_FLOAT,
        DType::F64 => T::TF_DOUBLE,
    }
}

impl<M: BatchMemory> Batch<M> {
    /// The inputs and targets as `TF_Tensor`s over the batch's own memory
    /// (no copy; the tensors keep the memory alive). TensorFlow tensors are
    /// dense: a strided view (sequential windows) is refused.
    ///
    /// # Errors
    /// [`BridgeError::ZeroCopyUnavailable`] for a strided part, or when
    /// TensorFlow copied the data instead of using it in place (memory not
    /// 64-byte aligned).
    pub fn to_tf_views(self) -> Result<(TfTensorView, TfTensorView)> {
        let d = self.detach();
        let mut out = Vec::with_capacity(2);
        for (kind, (ptr, p)) in [PartKind::Inputs, PartKind::Targets]
            .into_iter()
            .zip(&d.parts)
        {
            let contiguous = p.strides == crate::layout::contiguous_strides(&p.shape);
            if !contiguous {
                return Err(BridgeError::ZeroCopyUnavailable {
                    part: kind.name(),
                    reason:
                        "a strided view (TensorFlow tensors are dense); load with ZeroCopy::Never"
                            .into(),
                });
            }
            let dims: Vec<i64> = p.shape.iter().map(|&s| s as i64).collect();
            let len = p.shape.iter().product::<usize>() * p.dtype.size();
            let arg = Arc::into_raw(Arc::clone(&d.owner)) as *mut c_void;
            // SAFETY: `ptr..ptr+len` is memory owned by `d.owner`, which
            // the deallocator keeps alive (one Arc reference passed as
            // `arg`, reclaimed by `release_owner`); dims outlive the call.
            let raw = unsafe {
                tf_sys::TF_NewTensor(
                    tf_dtype(p.dtype),
                    dims.as_ptr(),
                    dims.len() as std::ffi::c_int,
                    *ptr as *mut c_void,
                    len,
                    Some(release_owner::<M>),
                    arg,
                )
            };
            if raw.is_null() {
                return Err(framework("TF_NewTensor returned NULL"));
            }
            let view = TfTensorView {
                raw,
                dims,
                dtype: p.dtype,
            };
            if view.data_ptr() != *ptr && len > 0 {
                return Err(BridgeError::ZeroCopyUnavailable {
                    part: kind.name(),
                    reason: format!(
                        "TensorFlow copied the data ({:p} is not 64-byte aligned)",
                        *ptr
                    ),
                });
            }
            out.push(view);
        }
        let y = out.pop().expect("two views");
        let x = out.pop().expect("two views");
        Ok((x, y))
    }
}

/// The SavedModel exported by `crates/deeprc-bridge/python/export_model.py`
/// (`$DEEPRC_TF_MODEL`, or `$DEEPRC_VENV/models/bridge_mlp`, the venv
/// defaulting to `<workspace>/.venv`).
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("DEEPRC_TF_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let venv = std::env::var_os("DEEPRC_VENV")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
            venv.join("models/bridge_mlp")
        })
}

/// One signature's feeds and fetch.
#[derive(Debug)]
struct Signature {
    inputs: Vec<(Operation, i32)>,
    output: (Operation, i32),
}

fn signature(
    bundle: &SavedModelBundle,
    graph: &Graph,
    name: &str,
    inputs: &[&str],
    output: &str,
) -> Result<Signature> {
    let sig = bundle
        .meta_graph_def()
        .get_signature(name)
        .map_err(|e| framework(format!("signature {name:?}: {e}")))?;
    let op = |info: &tensorflow::TensorInfo| -> Result<(Operation, i32)> {
        Ok((
            graph.operation_by_name_required(&info.name().name)?,
            info.name().index,
        ))
    };
    Ok(Signature {
        inputs: inputs
            .iter()
            .map(|i| {
                op(sig
                    .get_input(i)
                    .map_err(|e| framework(format!("signature {name:?} input {i:?}: {e}")))?)
            })
            .collect::<Result<_>>()?,
        output: op(sig
            .get_output(output)
            .map_err(|e| framework(format!("signature {name:?} output {output:?}: {e}")))?)?,
    })
}

/// A SavedModel with `train(x, y) -> loss`, `loss(x, y) -> loss` and
/// `predict(x) -> y` signatures (as `export_model.py` writes), trained from
/// Rust: each `train_step` runs one optimiser step inside TensorFlow.
#[derive(Debug)]
pub struct SavedModelTrainer {
    bundle: SavedModelBundle,
    train: Signature,
    loss: Signature,
    predict: Signature,
}

impl SavedModelTrainer {
    /// Loads the SavedModel in `dir` (tag `serve`).
    ///
    /// # Errors
    /// [`BridgeError::Framework`] naming the directory when it cannot be
    /// loaded or lacks a signature.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.join("saved_model.pb").exists() {
            return Err(framework(format!(
                "no SavedModel in {} (scripts/setup-ml.sh exports it with crates/deeprc-bridge/python/export_model.py)",
                dir.display()
            )));
        }
        let mut graph = Graph::new();
        let bundle = SavedModelBundle::load(&SessionOptions::new(), ["serve"], &mut graph, dir)
            .map_err(|e| framework(format!("loading {}: {e}", dir.display())))?;
        Ok(SavedModelTrainer {
            train: signature(&bundle, &graph, "train", &["x", "y"], "loss")?,
            loss: signature(&bundle, &graph, "loss", &["x", "y"], "loss")?,
            predict: signature(&bundle, &graph, "predict", &["x"], "y")?,
            bundle,
        })
    }

    fn run_scalar(&self, sig: &Signature, x: &Tensor<f32>, y: &Tensor<f32>) -> Result<f32> {
        let mut args = SessionRunArgs::new();
        args.add_feed(&sig.inputs[0].0, sig.inputs[0].1, x);
        args.add_feed(&sig.inputs[1].0, sig.inputs[1].1, y);
        let tok = args.request_fetch(&sig.output.0, sig.output.1);
        self.bundle.session.run(&mut args)?;
        let loss: Tensor<f32> = args.fetch(tok)?;
        loss.first()
            .copied()
            .ok_or_else(|| framework("empty loss tensor"))
    }

    /// One optimiser step on a batch; the loss before the step.
    pub fn train_step(&mut self, x: &Tensor<f32>, y: &Tensor<f32>) -> Result<f32> {
        self.run_scalar(&self.train, x, y)
    }

    /// The loss on a batch, without a step.
    pub fn loss(&self, x: &Tensor<f32>, y: &Tensor<f32>) -> Result<f32> {
        self.run_scalar(&self.loss, x, y)
    }

    /// The model's output for a batch.
    pub fn predict(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.predict.inputs[0].0, self.predict.inputs[0].1, x);
        let tok = args.request_fetch(&self.predict.output.0, self.predict.output.1);
        self.bundle.session.run(&mut args)?;
        Ok(args.fetch(tok)?)
    }
}
