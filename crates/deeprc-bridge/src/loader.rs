//! The loader: worker threads fill reusable batch buffers ahead of the
//! consumer, in order, through a bounded prefetch window.
//!
//! ```text
//!            epoch plan (sampler): batch 0, 1, 2, ...
//!                 |         |         |
//!   worker 0 ---> fill  -->  \        |          consumer (training loop)
//!   worker 1 ---------> fill --> results[k] --> next() yields batch k, k+1, ...
//!                 ^                               |
//!                 |  buffer pool (page-aligned,   | batch dropped (or its
//!                 +---- pinned when CUDA is) <----+ tensors freed): buffer back
//! ```
//!
//! A worker builds batch `k` only when `k < consumed + prefetch`, so at most
//! `prefetch` batches wait, and batches come out in plan order whatever the
//! number of workers (the order depends only on the sampler's seed and
//! epoch). A batch's buffer returns to the pool when the batch is dropped,
//! or, for tensors made from it, when the framework frees the last tensor
//! that views it.

use crate::dataset::{Dataset, PartKind};
use crate::dtype::{DType, TensorElement};
use crate::error::{BridgeError, Result};
use crate::layout::{contiguous_strides, span_elements, ArrowView, ZeroCopy};
use crate::mem::{cuda_status, AlignedBuf, PinStatus};
use crate::sampler::{EpochPlan, Sampler, SamplerOptions};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Whether staging buffers are page-locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinPolicy {
    /// Page-lock when a CUDA device is present, ordinary page-aligned
    /// memory otherwise ([`Loader::pin_status`] says which and why).
    #[default]
    Auto,
    /// Never page-lock.
    Never,
    /// Page-lock or fail with [`BridgeError::PinUnavailable`].
    Require,
}

/// The loader's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Worker threads (0: batches are built in the consumer's thread).
    pub workers: usize,
    /// Batches built ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Views of Arrow memory instead of copies.
    pub zero_copy: ZeroCopy,
    /// Page-locking of the staging buffers.
    pub pin: PinPolicy,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            workers: 2,
            prefetch: 4,
            zero_copy: ZeroCopy::Prefer,
            pin: PinPolicy::Auto,
        }
    }
}

/// The full shapes (batch dimension first) and types of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLayout {
    /// Samples in the batch.
    pub n: usize,
    /// Shape of the inputs.
    pub inputs: Vec<usize>,
    /// Type of the inputs.
    pub input_dtype: DType,
    /// Shape of the targets.
    pub targets: Vec<usize>,
    /// Type of the targets.
    pub target_dtype: DType,
}

impl BatchLayout {
    /// Bytes of the inputs.
    pub fn input_bytes(&self) -> usize {
        self.inputs.iter().product::<usize>() * self.input_dtype.size()
    }

    /// Bytes of the targets.
    pub fn target_bytes(&self) -> usize {
        self.targets.iter().product::<usize>() * self.target_dtype.size()
    }
}

/// Memory that holds one batch's copied parts, reused across batches.
pub trait BatchMemory: Send + Sync + 'static {
    /// Adapts to `layout`; `false` when it cannot hold it (the pool then
    /// looks for, or allocates, another).
    fn prepare(&mut self, layout: &BatchLayout) -> bool;
    /// The inputs' and targets' bytes, writable.
    fn parts_mut(&mut self) -> (&mut [u8], &mut [u8]);
    /// One part's bytes.
    fn part(&self, part: PartKind) -> &[u8];
}

/// Makes [`BatchMemory`].
pub trait MemoryPool: Send + Sync + 'static {
    /// The memory it makes.
    type Memory: BatchMemory;
    /// Allocates memory for `layout`.
    fn allocate(&self, layout: &BatchLayout) -> Result<Self::Memory>;
    /// Whether batches from this pool may view Arrow memory instead.
    fn supports_views(&self) -> bool {
        true
    }
    /// What the memory is, in words.
    fn describe(&self) -> String;
}

/// Page-aligned host memory: inputs at offset 0, targets at the next
/// 64-byte boundary.
#[derive(Debug)]
pub struct HostMemory {
    buf: AlignedBuf,
    x: Range<usize>,
    y: Range<usize>,
}

impl HostMemory {
    /// The underlying buffer.
    pub fn buffer(&self) -> &AlignedBuf {
        &self.buf
    }
}

fn align64(n: usize) -> usize {
    n.div_ceil(64) * 64
}

impl BatchMemory for HostMemory {
    fn prepare(&mut self, layout: &BatchLayout) -> bool {
        let (xb, yb) = (layout.input_bytes(), layout.target_bytes());
        let y0 = align64(xb);
        if y0 + yb > self.buf.len() {
            return false;
        }
        self.x = 0..xb;
        self.y = y0..y0 + yb;
        true
    }

    fn parts_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let (x, y) = (self.x.clone(), self.y.clone());
        let (a, b) = self.buf.as_mut_slice().split_at_mut(y.start);
        (&mut a[x], &mut b[..y.len()])
    }

    fn part(&self, part: PartKind) -> &[u8] {
        let r = match part {
            PartKind::Inputs => self.x.clone(),
            PartKind::Targets => self.y.clone(),
        };
        &self.buf.as_slice()[r]
    }
}

/// Makes [`HostMemory`], page-locked according to a [`PinPolicy`].
#[derive(Debug)]
pub struct HostPool {
    pin: PinPolicy,
    status: Mutex<Option<PinStatus>>,
}

impl HostPool {
    /// A pool with this pinning policy.
    pub fn new(pin: PinPolicy) -> Self {
        HostPool {
            pin,
            status: Mutex::new(None),
        }
    }

    /// Whether the buffers are page-locked, and why not.
    pub fn pin_status(&self) -> PinStatus {
        if let Some(s) = lock(&self.status).clone() {
            return s;
        }
        match self.pin {
            PinPolicy::Never => PinStatus::Unpinned {
                reason: "pinning not asked for (PinPolicy::Never)".into(),
            },
            _ => match cuda_status() {
                PinStatus::Pinned => PinStatus::Unpinned {
                    reason: "no buffer allocated yet (a CUDA device is present)".into(),
                },
                s => s,
            },
        }
    }
}

impl MemoryPool for HostPool {
    type Memory = HostMemory;

    fn allocate(&self, layout: &BatchLayout) -> Result<HostMemory> {
        let bytes = align64(layout.input_bytes()) + layout.target_bytes();
        let buf = match self.pin {
            PinPolicy::Never => AlignedBuf::new(bytes)?,
            PinPolicy::Auto | PinPolicy::Require => {
                let (buf, status) = AlignedBuf::new_pinned(bytes)?;
                if self.pin == PinPolicy::Require {
                    if let PinStatus::Unpinned { reason } = &status {
                        return Err(BridgeError::PinUnavailable {
                            reason: reason.clone(),
                        });
                    }
                }
                *lock(&self.status) = Some(status);
                buf
            }
        };
        let mut m = HostMemory {
            buf,
            x: 0..0,
            y: 0..0,
        };
        if !m.prepare(layout) {
            return Err(BridgeError::Internal("new host buffer too small".into()));
        }
        Ok(m)
    }

    fn describe(&self) -> String {
        format!("host staging buffers: {}", self.pin_status())
    }
}

use deeprc_core::sync::lock;

/// Free buffers of a pool.
pub(crate) struct Pool<P: MemoryPool> {
    factory: P,
    free: Mutex<Vec<P::Memory>>,
    allocated: AtomicUsize,
}

trait Recycle<M>: Send + Sync {
    fn recycle(&self, m: M);
}

impl<P: MemoryPool> Recycle<P::Memory> for Pool<P> {
    fn recycle(&self, m: P::Memory) {
        lock(&self.free).push(m);
    }
}

impl<P: MemoryPool> Pool<P> {
    fn acquire(self: &Arc<Self>, layout: &BatchLayout) -> Result<Lease<P::Memory>> {
        let found = {
            let mut free = lock(&self.free);
            let pos = free.iter_mut().position(|m| m.prepare(layout));
            pos.map(|i| free.swap_remove(i))
        };
        let mem = match found {
            Some(m) => m,
            None => {
                self.allocated.fetch_add(1, Ordering::Relaxed);
                self.factory.allocate(layout)?
            }
        };
        Ok(Lease {
            mem: Some(mem),
            home: Arc::clone(self) as Arc<dyn Recycle<P::Memory>>,
        })
    }
}

/// Memory lent to one batch; goes back to its pool on drop.
pub(crate) struct Lease<M: 'static> {
    mem: Option<M>,
    home: Arc<dyn Recycle<M>>,
}

impl<M> Lease<M> {
    pub(crate) fn get(&self) -> &M {
        self.mem.as_ref().expect("lease holds memory until dropped")
    }
}

impl<M> Drop for Lease<M> {
    fn drop(&mut self) {
        if let Some(m) = self.mem.take() {
            self.home.recycle(m);
        }
    }
}

/// Where a batch part's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum PartSource {
    /// In the batch's leased memory.
    Staged,
    /// In Arrow memory.
    View(ArrowView),
}

/// Shape, type and place of one batch part.
#[derive(Debug, Clone)]
pub(crate) struct PartData {
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) dtype: DType,
    pub(crate) source: PartSource,
}

/// A batch of samples: inputs and targets as (shape, dtype, bytes), either
/// copied into a reusable staging buffer or viewing Arrow memory. Neutral:
/// `deeprc_bridge::tch` and `deeprc_bridge::tensorflow` turn it into
/// tensors.
pub struct Batch<M: BatchMemory = HostMemory> {
    pub(crate) index: usize,
    pub(crate) samples: Vec<u32>,
    pub(crate) valid: usize,
    pub(crate) parts: [PartData; 2],
    pub(crate) lease: Option<Lease<M>>,
}

impl<M: BatchMemory> std::fmt::Debug for Batch<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("index", &self.index)
            .field("len", &self.samples.len())
            .field("valid", &self.valid)
            .field("inputs", &self.parts[0].shape)
            .field("targets", &self.parts[1].shape)
            .finish()
    }
}

/// A borrowed batch part: it cannot outlive its batch (whose buffer may be
/// reused as soon as the batch is dropped).
///
/// ```compile_fail,E0515
/// use deeprc_bridge::{Batch, PartRef};
/// fn escape(batch: Batch) -> PartRef<'static> {
///     batch.inputs() // the batch is dropped here: its memory goes back to the pool
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PartRef<'a> {
    bytes: &'a [u8],
    shape: &'a [usize],
    strides: &'a [usize],
    dtype: DType,
    zero_copy: bool,
}

impl<'a> PartRef<'a> {
    /// The shape (batch dimension first).
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// Strides in elements.
    pub fn strides(&self) -> &'a [usize] {
        self.strides
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of the elements (the tensor's size).
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// The bytes from the first to one past the last element.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The first element.
    pub fn as_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }

    /// `true` when the part views Arrow memory (no copy was made).
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// `true` for row-major contiguous data.
    pub fn is_contiguous(&self) -> bool {
        self.shape.contains(&0) || contiguous_strides(self.shape) == self.strides
    }

    /// The elements, typed.
    ///
    /// # Errors
    /// [`BridgeError::DTypeMismatch`]; [`BridgeError::InvalidArgument`] for
    /// a strided view (use [`PartRef::to_vec`]).
    pub fn as_slice<T: TensorElement>(&self) -> Result<&'a [T]> {
        self.check::<T>()?;
        if !self.is_contiguous() {
            return Err(BridgeError::invalid(
                "PartRef::as_slice",
                "the part is a strided view; use to_vec",
            ));
        }
        bytemuck::try_cast_slice(self.bytes)
            .map_err(|e| BridgeError::Internal(format!("cast: {e:?}")))
    }

    /// The elements in row-major order (a copy; follows strides).
    pub fn to_vec<T: TensorElement>(&self) -> Result<Vec<T>> {
        self.check::<T>()?;
        if self.is_contiguous() {
            return Ok(bytemuck::pod_collect_to_vec(self.bytes));
        }
        let elems: &[T] = bytemuck::try_cast_slice(self.bytes)
            .map_err(|e| BridgeError::Internal(format!("cast: {e:?}")))?;
        let mut out = Vec::with_capacity(self.numel());
        let mut idx = vec![0usize; self.shape.len()];
        for _ in 0..self.numel() {
            let off: usize = idx.iter().zip(self.strides).map(|(i, s)| i * s).sum();
            out.push(elems[off]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }

    fn check<T: TensorElement>(&self) -> Result<()> {
        if T::DTYPE != self.dtype {
            return Err(BridgeError::DTypeMismatch {
                what: "batch part".into(),
                expected: T::DTYPE,
                actual: self.dtype,
            });
        }
        Ok(())
    }
}

impl<M: BatchMemory> Batch<M> {
    /// The batch's number in its epoch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// `true` for a batch without samples (never yielded by a loader).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The first `valid()` samples are distinct; the rest are padding
    /// repeats ([`ShardPolicy::Pad`](crate::ShardPolicy::Pad)), to leave
    /// out of metrics.
    pub fn valid(&self) -> usize {
        self.valid
    }

    /// The local sample indices (see [`Dataset::meta`]).
    pub fn samples(&self) -> &[u32] {
        &self.samples
    }

    /// The inputs.
    pub fn inputs(&self) -> PartRef<'_> {
        self.part(PartKind::Inputs)
    }

    /// The targets.
    pub fn targets(&self) -> PartRef<'_> {
        self.part(PartKind::Targets)
    }

    /// One part.
    pub fn part(&self, kind: PartKind) -> PartRef<'_> {
        let p = &self.parts[kind as usize];
        let (bytes, zero_copy) = match &p.source {
            PartSource::View(v) => (v.span_bytes(), true),
            PartSource::Staged => {
                let mem = self.lease.as_ref().expect("a staged part has memory").get();
                (mem.part(kind), false)
            }
        };
        PartRef {
            bytes,
            shape: &p.shape,
            strides: &p.strides,
            dtype: p.dtype,
            zero_copy,
        }
    }

    /// The staging memory (when a part was copied).
    pub fn memory(&self) -> Option<&M> {
        self.lease.as_ref().map(Lease::get)
    }

    /// Bytes of both tensors.
    pub fn nbytes(&self) -> usize {
        self.inputs().nbytes() + self.targets().nbytes()
    }
}

/// What tensors made from a batch keep alive: its staging buffer (back to
/// the pool when the owner drops) and its Arrow views.
#[allow(dead_code)]
pub(crate) struct BatchOwner<M: 'static> {
    lease: Option<Lease<M>>,
    views: Vec<ArrowView>,
}

/// A batch taken apart for a tensor framework: the owner, and per part its
/// first element with shape, strides and type.
#[allow(dead_code)]
pub(crate) struct Detached<M: 'static> {
    pub(crate) owner: Arc<BatchOwner<M>>,
    pub(crate) parts: [(*const u8, PartData); 2],
    pub(crate) index: usize,
    pub(crate) valid: usize,
    pub(crate) samples: Vec<u32>,
}

impl<M: BatchMemory> Batch<M> {
    /// Moves the batch's memory into a shared owner.
    #[allow(dead_code)]
    pub(crate) fn detach(mut self) -> Detached<M> {
        let ptrs = [self.inputs().as_ptr(), self.targets().as_ptr()];
        let views = self
            .parts
            .iter()
            .filter_map(|p| match &p.source {
                PartSource::View(v) => Some(v.clone()),
                PartSource::Staged => None,
            })
            .collect();
        let [px, py] = self.parts.clone();
        Detached {
            owner: Arc::new(BatchOwner {
                lease: self.lease.take(),
                views,
            }),
            parts: [(ptrs[0], px), (ptrs[1], py)],
            index: self.index,
            valid: self.valid,
            samples: std::mem::take(&mut self.samples),
        }
    }
}

/// A dataset, or a shared one: what [`Loader::new`] accepts.
pub trait IntoShared {
    /// The dataset type.
    type Dataset: Dataset;
    /// The shared dataset.
    fn into_shared(self) -> Arc<Self::Dataset>;
}

impl<D: Dataset> IntoShared for D {
    type Dataset = D;
    fn into_shared(self) -> Arc<D> {
        Arc::new(self)
    }
}

impl<D: Dataset> IntoShared for Arc<D> {
    type Dataset = D;
    fn into_shared(self) -> Arc<D> {
        self
    }
}

/// Loads a dataset's batches, epoch after epoch.
///
/// ```
/// use deeprc_bridge::{Loader, LoaderOptions, RowSpec, SamplerOptions};
/// use deeprc_frame::arrow::array::{ArrayRef, Float32Array};
/// use deeprc_frame::Table;
/// use std::sync::Arc;
///
/// let t = Table::from_columns(vec![
///     ("x", Arc::new(Float32Array::from((0..10).map(|i| i as f32).collect::<Vec<_>>())) as ArrayRef),
///     ("y", Arc::new(Float32Array::from(vec![0.5; 10])) as ArrayRef),
/// ])?;
/// let ds = RowSpec::new(&["x"], &["y"]).build(&t)?.train;
/// let loader = Loader::new(ds, SamplerOptions::sequential(4), LoaderOptions::default())?;
/// let mut seen = 0;
/// for batch in loader.epoch(0) {
///     let batch = batch?;
///     assert!(batch.inputs().is_zero_copy()); // one column, in order: a view
///     seen += batch.len();
/// }
/// assert_eq!(seen, 10);
/// # Ok::<(), deeprc_bridge::BridgeError>(())
/// ```
pub struct Loader<D: Dataset, P: MemoryPool = HostPool> {
    dataset: Arc<D>,
    sampler: Sampler,
    options: LoaderOptions,
    pool: Arc<Pool<P>>,
}

impl<D: Dataset> Loader<D, HostPool> {
    /// A loader with page-aligned host staging buffers.
    ///
    /// # Errors
    /// As [`Sampler::new`]; [`BridgeError::InvalidArgument`] for bad options.
    pub fn new(
        dataset: impl IntoShared<Dataset = D>,
        sampler: SamplerOptions,
        options: LoaderOptions,
    ) -> Result<Self> {
        let pool = HostPool::new(options.pin);
        Self::with_pool(dataset, sampler, options, pool)
    }

    /// Whether the staging buffers are page-locked, and why not.
    pub fn pin_status(&self) -> PinStatus {
        self.pool.factory.pin_status()
    }
}

impl<D: Dataset, P: MemoryPool> Loader<D, P> {
    /// A loader whose batches are copied into memory from `pool` (e.g. the
    /// TensorFlow tensors of `deeprc_bridge::tensorflow::TfPool`).
    pub fn with_pool(
        dataset: impl IntoShared<Dataset = D>,
        sampler: SamplerOptions,
        options: LoaderOptions,
        pool: P,
    ) -> Result<Self> {
        if options.prefetch == 0 {
            return Err(BridgeError::invalid(
                "LoaderOptions::prefetch",
                "must be at least 1",
            ));
        }
        if options.zero_copy == ZeroCopy::Require && !pool.supports_views() {
            return Err(BridgeError::ZeroCopyUnavailable {
                part: "inputs",
                reason: format!(
                    "the loader's memory cannot view Arrow data ({})",
                    pool.describe()
                ),
            });
        }
        let dataset = dataset.into_shared();
        let sampler = Sampler::new(dataset.shard_info().clone(), sampler)?;
        Ok(Loader {
            dataset,
            sampler,
            options,
            pool: Arc::new(Pool {
                factory: pool,
                free: Mutex::new(Vec::new()),
                allocated: AtomicUsize::new(0),
            }),
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<D> {
        &self.dataset
    }

    /// The sampler.
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The options.
    pub fn options(&self) -> &LoaderOptions {
        &self.options
    }

    /// Batches per epoch (the same on every rank).
    pub fn batches_per_epoch(&self) -> usize {
        self.sampler.batches_per_epoch()
    }

    /// Staging buffers allocated so far (buffers are reused: this stays at
    /// about `prefetch + workers + 1` plus the batches the consumer holds).
    pub fn buffers_allocated(&self) -> usize {
        self.pool.allocated.load(Ordering::Relaxed)
    }

    /// The memory pool's description (pinning included).
    pub fn describe_memory(&self) -> String {
        self.pool.factory.describe()
    }

    /// The memory pool.
    pub fn pool(&self) -> &P {
        &self.pool.factory
    }

    /// The batches of `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> Epoch<D, P> {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on (the earlier ones are
    /// neither loaded nor returned): where a run resumed from a checkpoint
    /// taken mid-epoch goes on. The batches are those [`Loader::epoch`]
    /// would return from its `first`-th on, since an epoch's order depends
    /// only on the seed and the epoch number.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> Epoch<D, P> {
        let plan = self.sampler.epoch(epoch);
        let first = first.min(plan.batches);
        let shared = Arc::new(Shared {
            dataset: Arc::clone(&self.dataset),
            pool: Arc::clone(&self.pool),
            options: self.options,
            batches: plan.batches,
            plan,
            next_job: AtomicUsize::new(first),
            state: Mutex::new(State {
                consumed: first,
                results: BTreeMap::new(),
                cancelled: false,
            }),
            ready: Condvar::new(),
            space: Condvar::new(),
        });
        let workers = (0..self.options.workers.min(shared.batches - first))
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("deeprc-loader-{i}"))
                    .spawn(move || s.work())
                    .expect("spawning a loader worker thread")
            })
            .collect();
        Epoch {
            shared,
            workers,
            next: first,
        }
    }
}

struct State<M: BatchMemory> {
    consumed: usize,
    results: BTreeMap<usize, Result<Batch<M>>>,
    cancelled: bool,
}

struct Shared<D: Dataset, P: MemoryPool> {
    dataset: Arc<D>,
    pool: Arc<Pool<P>>,
    options: LoaderOptions,
    plan: EpochPlan,
    batches: usize,
    next_job: AtomicUsize,
    state: Mutex<State<P::Memory>>,
    ready: Condvar,
    space: Condvar,
}

impl<D: Dataset, P: MemoryPool> Shared<D, P> {
    fn work(&self) {
        loop {
            let k = self.next_job.fetch_add(1, Ordering::Relaxed);
            if k >= self.batches {
                return;
            }
            {
                let mut st = lock(&self.state);
                while k >= st.consumed + self.options.prefetch && !st.cancelled {
                    st = self.space.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.cancelled {
                    return;
                }
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.build(k)))
                .unwrap_or_else(|p| {
                    let message = deeprc_core::sync::panic_message(&*p);
                    Err(BridgeError::WorkerPanicked { batch: k, message })
                });
            lock(&self.state).results.insert(k, result);
            self.ready.notify_all();
        }
    }

    fn build(&self, k: usize) -> Result<Batch<P::Memory>> {
        let range = self.plan.batch_range(k);
        let samples: Vec<u32> = self.plan.samples[range.clone()].to_vec();
        let n = samples.len();
        let valid = self.plan.valid.saturating_sub(range.start).min(n);
        let layout = self.dataset.layout();
        let shape =
            |s: &[usize]| -> Vec<usize> { std::iter::once(n).chain(s.iter().copied()).collect() };
        let blayout = BatchLayout {
            n,
            inputs: shape(&layout.inputs.shape),
            input_dtype: layout.inputs.dtype,
            targets: shape(&layout.targets.shape),
            target_dtype: layout.targets.dtype,
        };
        let mut views: [Option<ArrowView>; 2] = [None, None];
        for (i, kind) in [PartKind::Inputs, PartKind::Targets]
            .into_iter()
            .enumerate()
        {
            views[i] = match self.options.zero_copy {
                ZeroCopy::Never => None,
                ZeroCopy::Prefer if !self.pool.factory.supports_views() => None,
                ZeroCopy::Prefer => self.dataset.view(&samples, kind).ok(),
                ZeroCopy::Require => Some(self.dataset.view(&samples, kind).map_err(|reason| {
                    BridgeError::ZeroCopyUnavailable {
                        part: kind.name(),
                        reason,
                    }
                })?),
            };
        }
        let lease = if views.iter().any(Option::is_none) {
            let mut lease = self.pool.acquire(&blayout)?;
            let mem = lease.mem.as_mut().expect("fresh lease");
            let (x, y) = mem.parts_mut();
            self.dataset.fill(
                &samples,
                views[0].is_none().then_some(x),
                views[1].is_none().then_some(y),
            )?;
            Some(lease)
        } else {
            None
        };
        let part = |view: Option<ArrowView>, shape: Vec<usize>, dtype: DType| match view {
            Some(v) => PartData {
                shape: v.shape.clone(),
                strides: v.strides.clone(),
                dtype: v.dtype,
                source: PartSource::View(v),
            },
            None => PartData {
                strides: contiguous_strides(&shape),
                shape,
                dtype,
                source: PartSource::Staged,
            },
        };
        let [vx, vy] = views;
        let parts = [
            part(vx, blayout.inputs.clone(), blayout.input_dtype),
            part(vy, blayout.targets.clone(), blayout.target_dtype),
        ];
        debug_assert!(parts
            .iter()
            .all(|p| !matches!(p.source, PartSource::View(_))
                || span_elements(&p.shape, &p.strides) > 0));
        Ok(Batch {
            index: k,
            samples,
            valid,
            parts,
            lease,
        })
    }
}

/// The batches of one epoch, in order. Dropping it stops the workers.
pub struct Epoch<D: Dataset, P: MemoryPool = HostPool> {
    shared: Arc<Shared<D, P>>,
    workers: Vec<JoinHandle<()>>,
    next: usize,
}

impl<D: Dataset, P: MemoryPool> Epoch<D, P> {
    /// Batches in the epoch.
    pub fn batches(&self) -> usize {
        self.shared.batches
    }

    /// The epoch's plan (sample order, padding).
    pub fn plan(&self) -> &EpochPlan {
        &self.shared.plan
    }
}

impl<D: Dataset, P: MemoryPool> Iterator for Epoch<D, P> {
    type Item = Result<Batch<P::Memory>>;

    fn next(&mut self) -> Option<Self::Item> {
        let k = self.next;
        if k >= self.shared.batches {
            return None;
        }
        self.next += 1;
        if self.workers.is_empty() {
            return Some(self.shared.build(k));
        }
        let mut st = lock(&self.shared.state);
        let result = loop {
            if let Some(r) = st.results.remove(&k) {
                break r;
            }
            st = self
                .shared
                .ready
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        };
        st.consumed = k + 1;
        drop(st);
        self.shared.space.notify_all();
        if result.is_err() {
            // Stop after an error: the rest of the epoch is not loaded.
            self.next = self.shared.batches;
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.shared.batches - self.next;
        (left, Some(left))
    }
}

impl<D: Dataset, P: MemoryPool> ExactSizeIterator for Epoch<D, P> {}

impl<D: Dataset, P: MemoryPool> Drop for Epoch<D, P> {
    fn drop(&mut self) {
        lock(&self.shared.state).cancelled = true;
        self.shared.space.notify_all();
        self.shared
            .next_job
            .store(usize::MAX / 2, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
