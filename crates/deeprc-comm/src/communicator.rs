//! The [`Communicator`] trait and its typed extension [`CommunicatorExt`].

use crate::{CommError, Result};
use bytes::Bytes;
use std::{any::Any, fmt, sync::Arc};

/// A message tag for point-to-point operations. Collectives use a separate,
/// internal tag space, so any `u32` is free for users.
pub type Tag = u32;

/// A value of any `Send` type, exchanged between thread ranks without
/// serialization (see [`Communicator::all_to_all_objects`]).
pub type AnyBox = Box<dyn Any + Send>;

/// The communication backends. Every variant exists whatever features were
/// compiled in; a backend that was not compiled in answers
/// [`CommError::NotCompiled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Ranks are threads of one process (feature `local`, default).
    Local,
    /// Ranks are processes connected by TCP (feature `tcp`, default).
    Tcp,
    /// MPI through rsmpi (feature `mpi`).
    Mpi,
    /// Facebook's Gloo library through a C++ shim (feature `gloo`).
    Gloo,
    /// NVIDIA NCCL through cudarc (feature `nccl`).
    Nccl,
    /// UCX (UCP tag matching, feature `ucx`).
    Ucx,
}

impl Backend {
    /// The lower-case name used in configuration (`DEEPRC_BACKEND`).
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Tcp => "tcp",
            Backend::Mpi => "mpi",
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
            Backend::Ucx => "ucx",
        }
    }

    /// Whether this backend was compiled into this build.
    pub fn is_compiled(&self) -> bool {
        match self {
            Backend::Local => cfg!(feature = "local"),
            Backend::Tcp => cfg!(feature = "tcp"),
            Backend::Mpi => cfg!(feature = "mpi"),
            Backend::Gloo => cfg!(feature = "gloo"),
            Backend::Nccl => cfg!(feature = "nccl"),
            Backend::Ucx => cfg!(feature = "ucx"),
        }
    }

    /// The typed error for using a backend that was not compiled in.
    pub fn not_compiled(&self) -> CommError {
        CommError::NotCompiled {
            backend: *self,
            feature: self.name(),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = CommError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "local" | "threads" => Backend::Local,
            "tcp" => Backend::Tcp,
            "mpi" => Backend::Mpi,
            "gloo" => Backend::Gloo,
            "nccl" => Backend::Nccl,
            "ucx" => Backend::Ucx,
            other => {
                return Err(CommError::config(
                    "DEEPRC_BACKEND",
                    format!("unknown backend {other:?} (local, tcp, mpi, gloo, nccl, ucx)"),
                ))
            }
        })
    }
}

/// The operations of [`Communicator`], by name: what a backend reports when
/// it says which operations run where (see
/// [`NcclComm::host_fallback_ops`](crate::nccl::NcclComm::host_fallback_ops)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CommOp {
    /// [`Communicator::send`].
    Send,
    /// [`Communicator::recv`].
    Recv,
    /// [`Communicator::barrier`].
    Barrier,
    /// [`Communicator::broadcast`].
    Broadcast,
    /// [`Communicator::gather`].
    Gather,
    /// [`Communicator::all_gather`].
    AllGather,
    /// [`Communicator::all_to_all_v`].
    AllToAllV,
    /// [`Communicator::all_reduce_raw`] (and the typed all-reduces).
    AllReduce,
    /// [`Communicator::split`].
    Split,
    /// [`Communicator::all_to_all_objects`].
    AllToAllObjects,
}

impl CommOp {
    /// Every operation, in the order of the trait.
    pub const ALL: [CommOp; 10] = [
        CommOp::Send,
        CommOp::Recv,
        CommOp::Barrier,
        CommOp::Broadcast,
        CommOp::Gather,
        CommOp::AllGather,
        CommOp::AllToAllV,
        CommOp::AllReduce,
        CommOp::Split,
        CommOp::AllToAllObjects,
    ];

    /// The method's name, e.g. `"all_to_all_v"`.
    pub fn name(&self) -> &'static str {
        match self {
            CommOp::Send => "send",
            CommOp::Recv => "recv",
            CommOp::Barrier => "barrier",
            CommOp::Broadcast => "broadcast",
            CommOp::Gather => "gather",
            CommOp::AllGather => "all_gather",
            CommOp::AllToAllV => "all_to_all_v",
            CommOp::AllReduce => "all_reduce",
            CommOp::Split => "split",
            CommOp::AllToAllObjects => "all_to_all_objects",
        }
    }
}

impl fmt::Display for CommOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reduction operators of [`Communicator::all_reduce_raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Element-wise sum (wrapping for integers).
    Sum,
    /// Element-wise minimum.
    Min,
    /// Element-wise maximum.
    Max,
    /// Element-wise product (wrapping for integers).
    Prod,
}

/// Element types that collectives can reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum DType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(&self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Plain-old-data element types with a [`DType`]: the types
/// [`CommunicatorExt::all_reduce`] accepts. Sealed.
pub trait Reducible: bytemuck::Pod + sealed::Sealed + Send + Sync {
    /// The runtime element type.
    const DTYPE: DType;
}

macro_rules! reducible {
    ($($t:ty => $d:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Reducible for $t { const DTYPE: DType = DType::$d; }
    )*};
}
reducible!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64);

/// A group of `size` ranks that can talk to each other.
///
/// The trait is object safe and byte-oriented: every backend implements it,
/// and every distributed operator of Deep RC takes a `&dyn Communicator` (or
/// an `Arc<dyn Communicator>`). Typed helpers live in [`CommunicatorExt`].
///
/// All collectives must be called by every rank of the communicator in the
/// same order. Every blocking call returns within the communicator's timeout
/// when a peer dies or hangs ([`CommError::Timeout`], [`CommError::PeerLost`]),
/// on every backend (on MPI through nonblocking MPI calls polled until the
/// deadline; a collective that timed out there leaves its communicator
/// unusable for collectives, see [`crate::mpi`]).
///
/// Payloads are [`Bytes`]: on the local (threads) backend they are handed to
/// the receiving thread without a copy.
///
/// ```
/// use deeprc_comm::{local, Communicator, CommunicatorExt, ReduceOp};
///
/// let sums = local::launch(3, |comm| {
///     let mut v = [comm.rank() as f64, 1.0];
///     comm.all_reduce(&mut v, ReduceOp::Sum)?;
///     Ok::<_, deeprc_comm::CommError>(v)
/// })
/// .unwrap();
/// assert_eq!(sums, vec![[3.0, 3.0]; 3]);
/// ```
pub trait Communicator: Send + Sync + fmt::Debug {
    /// This rank, in `0..size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn size(&self) -> usize;

    /// The backend that carries this communicator.
    fn backend(&self) -> Backend;

    /// Sends `data` to rank `dest` with `tag`. Messages between two ranks
    /// with the same tag arrive in the order they were sent.
    fn send(&self, dest: usize, tag: Tag, data: Bytes) -> Result<()>;

    /// Receives the next message from `source` with `tag`.
    fn recv(&self, source: usize, tag: Tag) -> Result<Bytes>;

    /// Returns when every rank has entered the barrier.
    fn barrier(&self) -> Result<()>;

    /// Sends `data` of rank `root` to every rank; returns it on all ranks.
    /// `data` is ignored on the other ranks.
    fn broadcast(&self, root: usize, data: Bytes) -> Result<Bytes>;

    /// Gathers every rank's `data` on `root`, in rank order. Returns `Some`
    /// on `root` and `None` elsewhere.
    fn gather(&self, root: usize, data: Bytes) -> Result<Option<Vec<Bytes>>>;

    /// Gathers every rank's `data` on every rank, in rank order.
    fn all_gather(&self, data: Bytes) -> Result<Vec<Bytes>>;

    /// The shuffle primitive: `parts[j]` goes to rank `j`; returns what every
    /// rank sent to this one, in rank order. Parts may have any length,
    /// including zero. `parts.len()` must equal `size()`.
    fn all_to_all_v(&self, parts: Vec<Bytes>) -> Result<Vec<Bytes>>;

    /// Reduces `data`, a packed array of `dtype` elements of equal length on
    /// every rank, element-wise with `op`; every rank gets the result in
    /// `data`. Every rank computes the same bits (reduction in rank order).
    fn all_reduce_raw(&self, data: &mut [u8], dtype: DType, op: ReduceOp) -> Result<()>;

    /// Splits the communicator: ranks passing the same `color` form a new
    /// communicator, ordered by `(key, old rank)`. A rank passing `None` takes
    /// part in the split but gets `None` back.
    fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Arc<dyn Communicator>>>;

    /// Whether [`Communicator::all_to_all_objects`] is supported (ranks in
    /// one address space).
    fn supports_objects(&self) -> bool {
        false
    }

    /// Like [`Communicator::all_to_all_v`] for arbitrary `Send` values, moved
    /// between thread ranks without serialization. Backends whose ranks are
    /// processes return [`CommError::InvalidArgument`]: check
    /// [`Communicator::supports_objects`] first and serialize otherwise.
    fn all_to_all_objects(&self, parts: Vec<AnyBox>) -> Result<Vec<AnyBox>> {
        let _ = parts;
        Err(CommError::invalid(
            "all_to_all_objects",
            format!("the {} backend moves bytes only", self.backend()),
        ))
    }
}

/// Typed helpers over any [`Communicator`], including `dyn Communicator`.
pub trait CommunicatorExt: Communicator {
    /// Element-wise all-reduce of a slice of numbers, in place.
    fn all_reduce<T: Reducible>(&self, data: &mut [T], op: ReduceOp) -> Result<()> {
        self.all_reduce_raw(bytemuck::cast_slice_mut(data), T::DTYPE, op)
    }

    /// All-reduce of one number.
    fn all_reduce_scalar<T: Reducible>(&self, value: T, op: ReduceOp) -> Result<T> {
        let mut v = [value];
        self.all_reduce(&mut v, op)?;
        Ok(v[0])
    }

    /// Broadcast of a slice of plain data from `root`.
    fn broadcast_pod<T: bytemuck::Pod>(&self, root: usize, data: &[T]) -> Result<Vec<T>> {
        let payload = if self.rank() == root {
            Bytes::copy_from_slice(bytemuck::cast_slice(data))
        } else {
            Bytes::new()
        };
        pod_vec(&self.broadcast(root, payload)?)
    }

    /// All-gather of a slice of plain data; entry `i` is rank `i`'s slice.
    fn all_gather_pod<T: bytemuck::Pod>(&self, data: &[T]) -> Result<Vec<Vec<T>>> {
        self.all_gather(Bytes::copy_from_slice(bytemuck::cast_slice(data)))?
            .iter()
            .map(|b| pod_vec(b))
            .collect()
    }
}

impl<C: Communicator + ?Sized> CommunicatorExt for C {}

/// Copies bytes into a vector of `T` (the bytes need not be aligned).
pub fn pod_vec<T: bytemuck::Pod>(bytes: &[u8]) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>().max(1);
    if bytes.len() % size != 0 {
        return Err(CommError::invalid(
            "pod_vec",
            format!(
                "{} bytes is not a multiple of the element size {size}",
                bytes.len()
            ),
        ));
    }
    let mut out = vec![T::zeroed(); bytes.len() / size];
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
    Ok(out)
}

/// Checks that `data` holds whole `dtype` elements.
pub(crate) fn check_elements(op: &'static str, data: &[u8], dtype: DType) -> Result<()> {
    if data.len() % dtype.size() != 0 {
        return Err(CommError::invalid(
            op,
            format!(
                "{} bytes is not a whole number of {dtype:?} elements",
                data.len()
            ),
        ));
    }
    Ok(())
}

/// Reduces `other` into `acc` (both packed `dtype` arrays of equal length).
#[cfg(any(feature = "gloo", feature = "nccl"))]
pub(crate) fn reduce_bytes(acc: &mut [u8], other: &[u8], dtype: DType, op: ReduceOp) {
    crate::reduce::reduce_into(acc, other, dtype, op)
}
