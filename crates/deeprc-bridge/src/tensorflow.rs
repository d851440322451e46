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
//!
//! Two kinds of SavedModel train from Rust: [`SavedModelTrainer`] runs a
//! whole optimiser step inside TensorFlow (`train(x, y)`), and
//! [`HydroGradientModel`] (the hydrology LSTM of
//! `python/export_hydro.py`) hands its gradients out as one flat vector and
//! takes the averaged vector back, so that data-parallel ranks all-reduce
//! them over their own communicator between the two calls.

#![allow(unsafe_code)]

use crate::dataset::{Dataset, PartKind};
use crate::dtype::{DType, TensorElement};
use crate::error::{BridgeError, Result};
use crate::loader::{
    Batch, BatchLayout, BatchMemory, BatchOwner, IntoShared, Loader, LoaderOptions, MemoryPool,
};
use crate::sampler::SamplerOptions;
pub use crate::tf_export::{
    default_hydro_model_dir, default_model_dir, hydro_export_script, HydroExport, HydroModelConfig,
};
use std::ffi::c_void;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tensorflow::{
    DataType, FetchToken, Graph, Operation, SavedModelBundle, SessionOptions, SessionRunArgs,
    Status, Tensor, TensorType,
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

// ---------------------------------------------------------------------------
// The hydrology LSTM: a SavedModel that hands its gradients out flat, so that
// Rust averages them over its own communicator, and takes them back.

/// The role of one dimension in a signature's tensor shape.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dim {
    /// The batch (dynamic: `None` in the signature).
    Batch,
    /// The model's `seq_len`.
    SeqLen,
    /// Its `dyn_features`.
    Dyn,
    /// Its `static_features`.
    Static,
    /// Its parameter count `P`.
    Params,
    /// Exactly one.
    One,
}

/// An input or output a signature must have.
struct TensorSpec {
    name: &'static str,
    dtype: DataType,
    shape: &'static [Dim],
}

/// A signature of the hydrology LSTM SavedModel: its inputs, its outputs.
struct SigSpec {
    name: &'static str,
    inputs: &'static [TensorSpec],
    outputs: &'static [TensorSpec],
}

const fn ts(name: &'static str, dtype: DataType, shape: &'static [Dim]) -> TensorSpec {
    TensorSpec { name, dtype, shape }
}

const TF_F32: DataType = DataType::Float;
const TF_I64: DataType = DataType::Int64;
const TF_BOOL: DataType = DataType::Bool;
const X_DYN: TensorSpec = ts("x_dyn", TF_F32, &[Dim::Batch, Dim::SeqLen, Dim::Dyn]);
const X_STATIC: TensorSpec = ts("x_static", TF_F32, &[Dim::Batch, Dim::Static]);
const Y: TensorSpec = ts("y", TF_F32, &[Dim::Batch, Dim::One]);
const LOSS: TensorSpec = ts("loss", TF_F32, &[]);
const GRADS: TensorSpec = ts("grads", TF_F32, &[Dim::Params]);

/// Every signature [`HydroGradientModel`] needs, in the order they are
/// checked; indices below refer to this table.
const HYDRO_SIGNATURES: [SigSpec; 9] = [
    SigSpec {
        name: "gradients",
        inputs: &[X_DYN, X_STATIC, Y],
        outputs: &[LOSS, GRADS],
    },
    SigSpec {
        name: "nse_gradients",
        inputs: &[
            X_DYN,
            X_STATIC,
            Y,
            ts("q_std", TF_F32, &[Dim::Batch, Dim::One]),
        ],
        outputs: &[LOSS, GRADS],
    },
    SigSpec {
        name: "apply_gradients",
        inputs: &[GRADS],
        outputs: &[ts("step", TF_I64, &[])],
    },
    SigSpec {
        name: "predict",
        inputs: &[X_DYN, X_STATIC],
        outputs: &[Y],
    },
    SigSpec {
        name: "get_weights",
        inputs: &[],
        outputs: &[ts("weights", TF_F32, &[Dim::Params])],
    },
    SigSpec {
        name: "set_weights",
        inputs: &[ts("weights", TF_F32, &[Dim::Params])],
        outputs: &[ts("ok", TF_BOOL, &[])],
    },
    SigSpec {
        name: "set_learning_rate",
        inputs: &[ts("lr", TF_F32, &[])],
        outputs: &[ts("lr", TF_F32, &[])],
    },
    SigSpec {
        name: "num_params",
        inputs: &[],
        outputs: &[ts("n", TF_I64, &[])],
    },
    SigSpec {
        name: "config",
        inputs: &[],
        outputs: &[
            ts("seq_len", TF_I64, &[]),
            ts("dyn_features", TF_I64, &[]),
            ts("static_features", TF_I64, &[]),
            ts("hidden", TF_I64, &[]),
            ts("dropout", TF_F32, &[]),
            ts("learning_rate", TF_F32, &[]),
            ts("clip_norm", TF_F32, &[]),
            ts("forget_bias", TF_F32, &[]),
        ],
    },
];
const SIG_GRADIENTS: usize = 0;
const SIG_NSE_GRADIENTS: usize = 1;
const SIG_APPLY: usize = 2;
const SIG_PREDICT: usize = 3;
const SIG_GET_WEIGHTS: usize = 4;
const SIG_SET_WEIGHTS: usize = 5;
const SIG_SET_LR: usize = 6;
const SIG_NUM_PARAMS: usize = 7;
const SIG_CONFIG: usize = 8;

/// A loaded signature: its feeds and fetches in the order of its
/// [`SigSpec`], with the shapes the SavedModel declares.
#[derive(Debug)]
struct BoundSig {
    inputs: Vec<(Operation, i32)>,
    outputs: Vec<(Operation, i32)>,
    /// Declared shapes, inputs then outputs (`None`: unknown dimension).
    shapes: Vec<Option<Vec<Option<i64>>>>,
}

fn mismatch(
    dir: &Path,
    sig: &str,
    tensor: Option<&str>,
    problem: impl Into<String>,
) -> BridgeError {
    BridgeError::SignatureMismatch {
        dir: dir.to_path_buf(),
        signature: sig.to_string(),
        tensor: tensor.map(str::to_string),
        problem: problem.into(),
    }
}

fn bind(dir: &Path, bundle: &SavedModelBundle, graph: &Graph, spec: &SigSpec) -> Result<BoundSig> {
    let sig = bundle
        .meta_graph_def()
        .get_signature(spec.name)
        .map_err(|_| {
            let mut have: Vec<&str> = bundle
                .meta_graph_def()
                .signatures()
                .keys()
                .map(String::as_str)
                .collect();
            have.sort_unstable();
            mismatch(
                dir,
                spec.name,
                None,
                format!(
                    "missing (the model has: {}; crates/deeprc-bridge/python/export_hydro.py writes every one)",
                    have.join(", ")
                ),
            )
        })?;
    let mut shapes = Vec::new();
    let mut bind_side = |specs: &[TensorSpec], input: bool| -> Result<Vec<(Operation, i32)>> {
        let side = if input { "input" } else { "output" };
        let table = if input { sig.inputs() } else { sig.outputs() };
        let mut out = Vec::with_capacity(specs.len());
        for t in specs {
            let info = table.get(t.name).ok_or_else(|| {
                let mut have: Vec<&str> = table.keys().map(String::as_str).collect();
                have.sort_unstable();
                mismatch(
                    dir,
                    spec.name,
                    Some(t.name),
                    format!("no such {side} (it has: {})", have.join(", ")),
                )
            })?;
            if info.dtype() != t.dtype {
                return Err(mismatch(
                    dir,
                    spec.name,
                    Some(t.name),
                    format!("{side} is {:?}, expected {:?}", info.dtype(), t.dtype),
                ));
            }
            let shape: Option<Vec<Option<i64>>> = info.shape().clone().into();
            if let Some(s) = &shape {
                if s.len() != t.shape.len() {
                    return Err(mismatch(
                        dir,
                        spec.name,
                        Some(t.name),
                        format!(
                            "{side} has rank {} ({s:?}), expected {} ({:?})",
                            s.len(),
                            t.shape.len(),
                            t.shape
                        ),
                    ));
                }
            }
            shapes.push(shape);
            let op = graph
                .operation_by_name_required(&info.name().name)
                .map_err(|e| mismatch(dir, spec.name, Some(t.name), e.to_string()))?;
            out.push((op, info.name().index));
        }
        Ok(out)
    };
    let inputs = bind_side(spec.inputs, true)?;
    let outputs = bind_side(spec.outputs, false)?;
    Ok(BoundSig {
        inputs,
        outputs,
        shapes,
    })
}

/// The hydrology LSTM of Kratzert et al. (2019) as a TensorFlow SavedModel
/// (written by `export_hydro.py`), trained data-parallel from Rust: each
/// rank takes the gradients of its shard out of TensorFlow as one flat
/// vector, the ranks average them over their own communicator (an
/// all-reduce), and every rank gives the same average back to its model's
/// Adam optimizer, so the replicas stay identical.
///
/// ```text
///   x_dyn [B, T, F_dyn], x_static [B, F_static], y [B, 1]
///      --gradients--> (loss, grads [P]) --all-reduce (mean)--> apply_gradients
///   predict(x_dyn, x_static) -> y [B]         weights() / set_weights([P])
/// ```
///
/// Inputs are row-major `f32` slices; the batch `B` is read from `x_dyn`'s
/// length and every other input must agree with it. Shapes are checked
/// before TensorFlow runs. The flat parameter order is the exporter's:
/// `lstm/weight_ih [I, 4H] | lstm/weight_hh [H, 4H] | lstm/bias [4H] |
/// head/weight [H, 1] | head/bias [1]` (gates `f, i, o, g`), the same as
/// `deeprc_models::hydro::HydroLstm`'s, so weights move between the two.
///
/// The mean of the gradients of equal shards is the gradient of their
/// union; with unequal shards weight each by its batch size.
#[derive(Debug)]
pub struct HydroGradientModel {
    dir: PathBuf,
    bundle: SavedModelBundle,
    sigs: Vec<BoundSig>,
    config: HydroModelConfig,
}

fn scalar<T: TensorType + Copy>(t: &Tensor<T>, what: &str) -> Result<T> {
    t.first()
        .copied()
        .ok_or_else(|| framework(format!("{what}: empty output tensor")))
}

fn tensor(shape: &[usize], data: &[f32]) -> Tensor<f32> {
    let mut t = Tensor::<f32>::new(&dims(shape));
    t.copy_from_slice(data);
    t
}

/// A serialized `ConfigProto` with `intra_op_parallelism_threads` (field
/// 2) and `inter_op_parallelism_threads` (field 5), both varint `int32`s;
/// a zero count is left out (TensorFlow's default).
fn thread_config(intra_op: usize, inter_op: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (field, n) in [(2u8, intra_op), (5u8, inter_op)] {
        if n == 0 {
            continue;
        }
        if n > i32::MAX as usize {
            return Err(BridgeError::invalid(
                "HydroGradientModel::load_with_threads",
                format!("{n} threads do not fit TensorFlow's int32"),
            ));
        }
        out.push(field << 3);
        let mut v = n as u64;
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    Ok(out)
}

fn check_finite(what: &'static str, name: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(BridgeError::invalid(
            what,
            format!("{name}[{i}] is {} (not finite)", v[i]),
        )),
    }
}

impl HydroGradientModel {
    /// Loads the SavedModel in `dir` (tag `serve`) and checks that it has
    /// every signature of `export_hydro.py`, with the expected inputs,
    /// outputs, types and shapes.
    ///
    /// # Errors
    /// [`BridgeError::SignatureMismatch`] naming the missing or different
    /// signature (and tensor); [`BridgeError::Framework`] when `dir` holds
    /// no SavedModel or TensorFlow cannot load it.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with_threads(dir, 0, 0)
    }

    /// [`load`](Self::load) with TensorFlow's thread pools sized:
    /// `intra_op` threads inside one op (a matrix product), `inter_op`
    /// threads running independent ops; 0 leaves TensorFlow's default
    /// (the number of cores, or `$TF_NUM_INTRAOP_THREADS` /
    /// `$TF_NUM_INTEROP_THREADS`). Keras' `tf.config.threading` sets the
    /// same two numbers.
    ///
    /// TensorFlow may share its pools between the sessions of a process
    /// (the first session sizes them), so give every model of a process
    /// the same counts.
    ///
    /// # Errors
    /// As [`load`](Self::load); [`BridgeError::InvalidArgument`] for a
    /// count above `i32::MAX`.
    pub fn load_with_threads(
        dir: impl AsRef<Path>,
        intra_op: usize,
        inter_op: usize,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.join("saved_model.pb").exists() {
            return Err(framework(format!(
                "no SavedModel in {} (scripts/setup-ml.sh exports the paper's with crates/deeprc-bridge/python/export_hydro.py; HydroExport::export writes others)",
                dir.display()
            )));
        }
        let mut options = SessionOptions::new();
        options.set_config(&thread_config(intra_op, inter_op)?)?;
        let mut graph = Graph::new();
        let bundle = SavedModelBundle::load(&options, ["serve"], &mut graph, dir)
            .map_err(|e| framework(format!("loading {}: {e}", dir.display())))?;
        let sigs = HYDRO_SIGNATURES
            .iter()
            .map(|s| bind(dir, &bundle, &graph, s))
            .collect::<Result<Vec<_>>>()?;
        let mut m = HydroGradientModel {
            dir: dir.to_path_buf(),
            bundle,
            sigs,
            config: HydroModelConfig {
                seq_len: 0,
                dyn_features: 0,
                static_features: 0,
                hidden: 0,
                dropout: 0.0,
                learning_rate: 0.0,
                clip_norm: 0.0,
                forget_bias: 0.0,
                num_params: 0,
            },
        };
        m.config = m.read_config()?;
        m.check_shapes()?;
        Ok(m)
    }

    /// Runs signature `i` with `feeds` (in its spec's input order) and
    /// requests all its outputs.
    fn run<'l>(
        &self,
        i: usize,
        feeds: &[&'l Tensor<f32>],
    ) -> Result<(SessionRunArgs<'l>, Vec<FetchToken>)> {
        let sig = &self.sigs[i];
        let mut args = SessionRunArgs::new();
        for ((op, idx), t) in sig.inputs.iter().zip(feeds) {
            args.add_feed(op, *idx, *t);
        }
        let tokens = sig
            .outputs
            .iter()
            .map(|(op, idx)| args.request_fetch(op, *idx))
            .collect();
        self.bundle.session.run(&mut args).map_err(|e| {
            framework(format!(
                "{} signature {:?}: {e}",
                self.dir.display(),
                HYDRO_SIGNATURES[i].name
            ))
        })?;
        Ok((args, tokens))
    }

    fn read_config(&self) -> Result<HydroModelConfig> {
        let (mut a, t) = self.run(SIG_NUM_PARAMS, &[])?;
        let n = scalar(&a.fetch::<i64>(t[0])?, "num_params")?;
        let (mut a, t) = self.run(SIG_CONFIG, &[])?;
        let mut ints = [0usize; 4];
        for (k, v) in ints.iter_mut().enumerate() {
            let x = scalar(
                &a.fetch::<i64>(t[k])?,
                HYDRO_SIGNATURES[SIG_CONFIG].outputs[k].name,
            )?;
            *v = usize::try_from(x).map_err(|_| {
                mismatch(
                    &self.dir,
                    "config",
                    Some(HYDRO_SIGNATURES[SIG_CONFIG].outputs[k].name),
                    format!("negative value {x}"),
                )
            })?;
        }
        let mut floats = [0f32; 4];
        for (k, v) in floats.iter_mut().enumerate() {
            *v = scalar(&a.fetch::<f32>(t[4 + k])?, "config")?;
        }
        let cfg = HydroModelConfig {
            seq_len: ints[0],
            dyn_features: ints[1],
            static_features: ints[2],
            hidden: ints[3],
            dropout: floats[0],
            learning_rate: floats[1],
            clip_norm: floats[2],
            forget_bias: floats[3],
            num_params: usize::try_from(n).unwrap_or(0),
        };
        let want = HydroModelConfig::params_for(cfg.dyn_features, cfg.static_features, cfg.hidden);
        if cfg.num_params != want {
            return Err(mismatch(
                &self.dir,
                "num_params",
                Some("n"),
                format!(
                    "{n} parameters, but an LSTM of {} + {} inputs and {} cells with a linear head has {want}",
                    cfg.dyn_features, cfg.static_features, cfg.hidden
                ),
            ));
        }
        if cfg.seq_len == 0 || cfg.dyn_features == 0 || cfg.hidden == 0 {
            return Err(mismatch(
                &self.dir,
                "config",
                None,
                format!("zero sizes: {cfg:?}"),
            ));
        }
        Ok(cfg)
    }

    /// Every declared shape against the sizes `config` reported.
    fn check_shapes(&self) -> Result<()> {
        let c = &self.config;
        for (spec, sig) in HYDRO_SIGNATURES.iter().zip(&self.sigs) {
            let tensors = spec.inputs.iter().chain(spec.outputs);
            for (t, shape) in tensors.zip(&sig.shapes) {
                let Some(shape) = shape else { continue };
                for (k, (d, got)) in t.shape.iter().zip(shape).enumerate() {
                    let want = match d {
                        Dim::Batch => None,
                        Dim::SeqLen => Some(c.seq_len),
                        Dim::Dyn => Some(c.dyn_features),
                        Dim::Static => Some(c.static_features),
                        Dim::Params => Some(c.num_params),
                        Dim::One => Some(1),
                    };
                    let ok = match (want, got) {
                        (None, _) => true,
                        (Some(w), Some(g)) => *g == w as i64,
                        (Some(_), None) => false,
                    };
                    if !ok {
                        return Err(mismatch(
                            &self.dir,
                            spec.name,
                            Some(t.name),
                            format!(
                                "dimension {k} is {got:?}, but the model's config says {} ({d:?}; shape {shape:?})",
                                want.unwrap_or(0)
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The SavedModel's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &HydroModelConfig {
        &self.config
    }

    /// `P`: the length of the flat gradient and weight vectors.
    pub fn num_params(&self) -> usize {
        self.config.num_params
    }

    /// The batch size of `x_dyn` (row-major `[B, T, F_dyn]`), checking
    /// `x_static` (`[B, F_static]`) and the per-sample vectors (`[B]` or
    /// `[B, 1]`) against it.
    fn batch(
        &self,
        what: &'static str,
        x_dyn: &[f32],
        x_static: &[f32],
        per_sample: &[(&str, &[f32])],
    ) -> Result<usize> {
        let c = &self.config;
        let step = c.seq_len * c.dyn_features;
        if x_dyn.is_empty() || x_dyn.len() % step != 0 {
            return Err(BridgeError::invalid(
                what,
                format!(
                    "x_dyn has {} values, not a positive multiple of seq_len x dyn_features = {} x {} (row-major [B, {}, {}])",
                    x_dyn.len(),
                    c.seq_len,
                    c.dyn_features,
                    c.seq_len,
                    c.dyn_features
                ),
            ));
        }
        let b = x_dyn.len() / step;
        if x_static.len() != b * c.static_features {
            return Err(BridgeError::invalid(
                what,
                format!(
                    "x_static has {} values; x_dyn is a batch of {b}, which needs [{b}, {}] = {}",
                    x_static.len(),
                    c.static_features,
                    b * c.static_features
                ),
            ));
        }
        for (name, v) in per_sample {
            if v.len() != b {
                return Err(BridgeError::invalid(
                    what,
                    format!(
                        "{name} has {} values; x_dyn is a batch of {b}, which needs [{b}, 1]",
                        v.len()
                    ),
                ));
            }
        }
        Ok(b)
    }

    fn check_params(&self, what: &'static str, name: &str, v: &[f32]) -> Result<()> {
        if v.len() != self.config.num_params {
            return Err(BridgeError::invalid(
                what,
                format!(
                    "{name} has {} values, the model {} parameters",
                    v.len(),
                    self.config.num_params
                ),
            ));
        }
        Ok(())
    }

    fn inputs(&self, b: usize, x_dyn: &[f32], x_static: &[f32]) -> (Tensor<f32>, Tensor<f32>) {
        let c = &self.config;
        (
            tensor(&[b, c.seq_len, c.dyn_features], x_dyn),
            tensor(&[b, c.static_features], x_static),
        )
    }

    fn grads_of(&self, i: usize, feeds: &[&Tensor<f32>], grads: &mut [f32]) -> Result<f32> {
        let (mut a, t) = self.run(i, feeds)?;
        let loss = scalar(&a.fetch::<f32>(t[0])?, "loss")?;
        let g = a.fetch::<f32>(t[1])?;
        if g.len() != grads.len() {
            return Err(BridgeError::Internal(format!(
                "{} returned {} gradients for {} parameters",
                HYDRO_SIGNATURES[i].name,
                g.len(),
                grads.len()
            )));
        }
        grads.copy_from_slice(&g);
        Ok(loss)
    }

    /// The mean squared error of a batch and its gradient with respect to
    /// every parameter (flat, `P` values), with dropout on, written into
    /// `grads`; no step is taken.
    ///
    /// `x_dyn` is row-major `[B, seq_len, dyn_features]`, `x_static`
    /// `[B, static_features]`, `y` `[B]` (one target per sample).
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] for inputs of the wrong sizes or a
    /// `grads` of another length than `P`; [`BridgeError::Framework`] if
    /// TensorFlow fails.
    pub fn gradients_into(
        &self,
        x_dyn: &[f32],
        x_static: &[f32],
        y: &[f32],
        grads: &mut [f32],
    ) -> Result<f32> {
        const WHAT: &str = "HydroGradientModel::gradients";
        let b = self.batch(WHAT, x_dyn, x_static, &[("y", y)])?;
        self.check_params(WHAT, "the gradient buffer", grads)?;
        let (xd, xs) = self.inputs(b, x_dyn, x_static);
        let yt = tensor(&[b, 1], y);
        self.grads_of(SIG_GRADIENTS, &[&xd, &xs, &yt], grads)
    }

    /// [`gradients_into`](Self::gradients_into) into a new vector: the loss
    /// and the `P` gradients.
    ///
    /// # Errors
    /// As [`gradients_into`](Self::gradients_into).
    pub fn gradients(&self, x_dyn: &[f32], x_static: &[f32], y: &[f32]) -> Result<(f32, Vec<f32>)> {
        let mut g = vec![0.0; self.num_params()];
        let loss = self.gradients_into(x_dyn, x_static, y, &mut g)?;
        Ok((loss, g))
    }

    /// As [`gradients_into`](Self::gradients_into) with the NSE* loss of
    /// Kratzert et al. (2019): `mean((y_hat - y)^2 / (q_std + 0.1)^2)`,
    /// `q_std` (`[B]`) the standard deviation of the discharge of each
    /// sample's basin over the training period.
    ///
    /// # Errors
    /// As [`gradients_into`](Self::gradients_into).
    pub fn nse_gradients_into(
        &self,
        x_dyn: &[f32],
        x_static: &[f32],
        y: &[f32],
        q_std: &[f32],
        grads: &mut [f32],
    ) -> Result<f32> {
        const WHAT: &str = "HydroGradientModel::nse_gradients";
        let b = self.batch(WHAT, x_dyn, x_static, &[("y", y), ("q_std", q_std)])?;
        self.check_params(WHAT, "the gradient buffer", grads)?;
        let (xd, xs) = self.inputs(b, x_dyn, x_static);
        let yt = tensor(&[b, 1], y);
        let qt = tensor(&[b, 1], q_std);
        self.grads_of(SIG_NSE_GRADIENTS, &[&xd, &xs, &yt, &qt], grads)
    }

    /// [`nse_gradients_into`](Self::nse_gradients_into) into a new vector.
    ///
    /// # Errors
    /// As [`gradients_into`](Self::gradients_into).
    pub fn nse_gradients(
        &self,
        x_dyn: &[f32],
        x_static: &[f32],
        y: &[f32],
        q_std: &[f32],
    ) -> Result<(f32, Vec<f32>)> {
        let mut g = vec![0.0; self.num_params()];
        let loss = self.nse_gradients_into(x_dyn, x_static, y, q_std, &mut g)?;
        Ok((loss, g))
    }

    /// One optimiser step with the given (averaged) gradients: TensorFlow
    /// clips them to the model's global norm (`config().clip_norm`) and
    /// applies them with its Adam optimizer. Returns the optimizer's step
    /// count after the step.
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] when `grads` does not have `P`
    /// values or one is not finite (nothing is applied);
    /// [`BridgeError::Framework`] if TensorFlow fails.
    pub fn apply_gradients(&mut self, grads: &[f32]) -> Result<u64> {
        const WHAT: &str = "HydroGradientModel::apply_gradients";
        self.check_params(WHAT, "grads", grads)?;
        check_finite(WHAT, "grads", grads)?;
        let g = tensor(&[grads.len()], grads);
        let (mut a, t) = self.run(SIG_APPLY, &[&g])?;
        let step = scalar(&a.fetch::<i64>(t[0])?, "step")?;
        Ok(step.max(0) as u64)
    }

    /// The model's output (`B` values, one per sample) with dropout off.
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] for inputs of the wrong sizes;
    /// [`BridgeError::Framework`] if TensorFlow fails.
    pub fn predict(&self, x_dyn: &[f32], x_static: &[f32]) -> Result<Vec<f32>> {
        let b = self.batch("HydroGradientModel::predict", x_dyn, x_static, &[])?;
        let (xd, xs) = self.inputs(b, x_dyn, x_static);
        let (mut a, t) = self.run(SIG_PREDICT, &[&xd, &xs])?;
        Ok(a.fetch::<f32>(t[0])?.to_vec())
    }

    /// All parameters, flat (`P` values, in the documented order): what
    /// rank 0 broadcasts and a checkpoint stores.
    ///
    /// # Errors
    /// [`BridgeError::Framework`] if TensorFlow fails.
    pub fn weights(&self) -> Result<Vec<f32>> {
        let (mut a, t) = self.run(SIG_GET_WEIGHTS, &[])?;
        let w = a.fetch::<f32>(t[0])?;
        if w.len() != self.num_params() {
            return Err(BridgeError::Internal(format!(
                "get_weights returned {} values for {} parameters",
                w.len(),
                self.num_params()
            )));
        }
        Ok(w.to_vec())
    }

    /// Sets all parameters from a flat vector (as [`weights`](Self::weights)
    /// returns). The optimizer's state (Adam moments, step) is kept.
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] when `weights` does not have `P`
    /// values or one is not finite; [`BridgeError::Framework`] if
    /// TensorFlow fails.
    pub fn set_weights(&mut self, weights: &[f32]) -> Result<()> {
        const WHAT: &str = "HydroGradientModel::set_weights";
        self.check_params(WHAT, "weights", weights)?;
        check_finite(WHAT, "weights", weights)?;
        let w = tensor(&[weights.len()], weights);
        let (mut a, t) = self.run(SIG_SET_WEIGHTS, &[&w])?;
        if !scalar(&a.fetch::<bool>(t[0])?, "ok")? {
            return Err(framework("set_weights returned ok = false"));
        }
        Ok(())
    }

    /// Sets the Adam learning rate (Kratzert et al. lower it from 1e-3 to
    /// 5e-4 at epoch 11 and to 1e-4 at epoch 21).
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] unless `lr` is finite and positive;
    /// [`BridgeError::Framework`] if TensorFlow fails.
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(BridgeError::invalid(
                "HydroGradientModel::set_learning_rate",
                format!("learning rate {lr} is not positive"),
            ));
        }
        let mut t = Tensor::<f32>::new(&[]);
        t[0] = lr;
        let (mut a, tok) = self.run(SIG_SET_LR, &[&t])?;
        self.config.learning_rate = scalar(&a.fetch::<f32>(tok[0])?, "lr")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::thread_config;

    #[test]
    fn thread_counts_are_encoded_as_a_config_proto() {
        assert!(
            thread_config(0, 0).unwrap().is_empty(),
            "defaults: no fields"
        );
        // field 2 (intra-op) and field 5 (inter-op), varint wire type
        assert_eq!(thread_config(2, 1).unwrap(), [0x10, 2, 0x28, 1]);
        assert_eq!(thread_config(0, 4).unwrap(), [0x28, 4]);
        // 300 = 0b10_0101100: two varint bytes, low group first
        assert_eq!(thread_config(300, 0).unwrap(), [0x10, 0xac, 0x02]);
        assert!(thread_config(1 << 31, 1).is_err());
    }
}
