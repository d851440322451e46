//! The `mpi` backend: ranks are MPI processes, through rsmpi (OpenMPI or
//! MPICH).
//!
//! [`MpiComm::world`] initialises MPI once per process (asking for
//! `MPI_THREAD_MULTIPLE`) and returns the world communicator;
//! [`MpiComm::from_communicator`] wraps a communicator that a host program
//! which initialised MPI itself hands in (like Cylon's `MPIConfig(comm)`).
//! Every operation maps to MPI's own, in its nonblocking form so that it
//! can be given up at the deadline: point-to-point messages to `MPI_Isend`
//! / `MPI_Improbe` + `MPI_Mrecv`, the collectives to `MPI_Ibarrier`,
//! `MPI_Ibcast`, `MPI_Igatherv`, `MPI_Iallgatherv`, `MPI_Ialltoallv` and
//! `MPI_Iallreduce` (after exchanging the sizes), `split` to an
//! all-gather and `MPI_Comm_split`.
//!
//! ```no_run
//! // Started by `mpirun -np 4 ./program`.
//! use deeprc_comm::{mpi::MpiComm, Communicator, CommunicatorExt, ReduceOp};
//!
//! let comm = MpiComm::world()?;
//! let total = comm.all_reduce_scalar(comm.rank() as u64, ReduceOp::Sum)?;
//! assert_eq!(total, (0..comm.size() as u64).sum::<u64>());
//! # Ok::<(), deeprc_comm::CommError>(())
//! ```
//!
//! # Building
//! rsmpi finds MPI through the `mpicc` wrapper (or `MPICC`, or pkg-config).
//! On Debian with both OpenMPI and MPICH installed, plain `mpicc` is
//! OpenMPI's; `MPICC=mpicc.mpich` builds against MPICH, whose binaries must
//! then be started with `mpiexec.mpich`. `libclang` is needed (bindgen).
//!
//! # Failures and time bounds
//! Every blocking call returns within the communicator's timeout
//! ([`MpiComm::timeout`]: `DEEPRC_TIMEOUT_MS`, 30 s by default, or
//! [`MpiComm::with_timeout`]), like on the other backends. The collectives
//! are posted as nonblocking MPI calls and polled with `MPI_Test`;
//! receives poll `MPI_Improbe`. Past the deadline the call fails with
//! [`CommError::Timeout`] naming the operation (`peer` is the source rank
//! of a receive, [`UNKNOWN_PEER`] for a collective: MPI does not say which
//! rank is missing). Sends never wait (`MPI_Isend`).
//!
//! MPI cannot cancel a collective: after one timed out, its request and
//! buffers are leaked (MPI may still complete it if the missing rank turns
//! up late), and every later collective on that communicator fails at once
//! with [`CommError::PeerLost`] (the ranks no longer agree on the order of
//! the collectives); point-to-point messages keep working. A rank that
//! gives up should end the job with [`MpiComm::abort`]: a rank that just
//! exits waits in `MPI_Finalize` for the others. `MPI_Comm_split` and
//! `MPI_Comm_dup` have no nonblocking form used here: `split` and
//! [`MpiComm::duplicate`] first meet every rank in a bounded collective,
//! then call them. Initialising MPI ([`MpiComm::world`]) is bounded by the
//! launcher only.
//!
//! When a rank dies (crashes, is killed, or exits without `MPI_Finalize`),
//! OpenMPI's `mpirun` and MPICH's `mpiexec` (Hydra) abort the whole job and
//! kill every other rank, usually long before the timeout. MPI errors go to
//! MPI's default handler `MPI_ERRORS_ARE_FATAL`, which aborts the job too.
//!
//! If Deep RC initialised MPI, `MPI_Finalize` runs when the process exits
//! (an `atexit` handler): OpenMPI counts a rank that exits without it as
//! failed. If the host program initialised MPI, finalising is its job.
//!
//! # Threads
//! With `MPI_THREAD_MULTIPLE` (OpenMPI and MPICH provide it) any thread may
//! use any communicator at any time. If the library provides less, every MPI
//! call of Deep RC is serialised by one process-wide lock and blocking
//! receives poll, releasing the lock between polls; below
//! `MPI_THREAD_SERIALIZED` calls are refused ([`CommError::InvalidArgument`])
//! on any thread but the one that initialised MPI.
//!
//! # Messages
//! Sends never wait for the receiver: they are posted with `MPI_Isend` and
//! their [`Bytes`] are kept until MPI has sent them. Any `u32` tag works:
//! tags below `MPI_TAG_UB - 1` are MPI tags, the others travel on the
//! reserved tag `MPI_TAG_UB` with the full tag in a small header.
//! Collectives use MPI's collective operations, which never mix with
//! point-to-point traffic.
//!
//! MPI counts are `int`s. No single MPI call here moves more than
//! [`MpiComm::chunk_bytes`] bytes (1 GiB by default, at most `i32::MAX`):
//! larger messages are sent in chunks and larger collectives run in rounds,
//! so any size that fits in memory works (rounds copy through two temporary
//! buffers of at most `chunk_bytes`).
//!
//! # Reductions
//! `all_reduce_raw` maps every [`DType`] to its MPI datatype and every
//! [`ReduceOp`] to the predefined operation (`MPI_SUM`, `MPI_MIN`,
//! `MPI_MAX`, `MPI_PROD`). Integer results, and `Min` / `Max`, are exact and
//! equal to the other backends'. MPI may associate a floating-point sum or
//! product in another order than rank order, so those can differ from the
//! local and tcp backends in the last bits (not when every partial result
//! is exact, as with sums of small integers), and `Min` / `Max` of NaN
//! follow the C comparison of the MPI library.

mod collectives;
mod deadline;
mod p2p;
mod runtime;

pub use deadline::UNKNOWN_PEER;

use crate::{AnyBox, Backend, CommConfig, CommError, Communicator, DType, ReduceOp, Result, Tag};
use ::mpi::{
    topology::SimpleCommunicator,
    traits::{AsRaw, Communicator as _},
    Threading,
};
use bytes::Bytes;
use deeprc_core::sync::lock;
use std::{
    fmt,
    mem::ManuallyDrop,
    os::raw::c_int,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

/// The default [`MpiComm::chunk_bytes`]: 1 GiB.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 30;

fn backend_err(message: impl Into<String>) -> CommError {
    CommError::Backend {
        backend: Backend::Mpi,
        message: message.into(),
    }
}

/// One MPI communicator and what its operations share.
struct Inner {
    comm: ManuallyDrop<SimpleCommunicator>,
    rank: usize,
    size: usize,
    rt: &'static runtime::Runtime,
    sends: Mutex<p2p::PendingSends>,
    receivers: p2p::Receivers,
    /// Why collectives are refused: an earlier one timed out or failed.
    broken: Mutex<Option<String>>,
}

// SAFETY: the MPI communicator handle is an identifier that MPI lets any
// thread use. With MPI_THREAD_MULTIPLE MPI itself is thread safe; below it,
// every MPI call made through this struct first takes the process-wide lock
// of `runtime::Runtime::enter` (and refuses other threads below
// MPI_THREAD_SERIALIZED), so MPI is never entered concurrently. The other
// fields are Send + Sync on their own.
unsafe impl Send for Inner {}
// SAFETY: as for Send: shared use only calls MPI under the rules above.
unsafe impl Sync for Inner {}

impl Inner {
    fn new(comm: SimpleCommunicator, rt: &'static runtime::Runtime) -> Result<Self> {
        let (rank, size) = {
            let _e = rt.enter("communicator")?;
            (comm.rank(), comm.size())
        };
        Ok(Self {
            comm: ManuallyDrop::new(comm),
            rank: usize::try_from(rank).map_err(|_| backend_err(format!("MPI rank {rank}")))?,
            size: usize::try_from(size).map_err(|_| backend_err(format!("MPI size {size}")))?,
            rt,
            sends: Mutex::default(),
            receivers: p2p::Receivers::default(),
            broken: Mutex::new(None),
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let finalized = ::mpi::is_finalized();
        let mut sends = lock(&self.sends);
        let entered = if finalized {
            None
        } else {
            self.rt.enter("drop").ok()
        };
        // Without the right to call MPI (finalised, or a thread MPI refuses),
        // the handle and the buffers of pending sends are leaked; so is a
        // communicator with a collective that never completed.
        let broken = self
            .broken
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let can_call = entered.is_some() && !broken;
        sends.release(!can_call);
        // SAFETY: `comm` is not used after this point.
        let comm = unsafe { ManuallyDrop::take(&mut self.comm) };
        if can_call {
            drop(comm); // MPI_Comm_free for user communicators
        } else {
            std::mem::forget(comm);
        }
    }
}

/// A communicator whose ranks are MPI processes.
///
/// Cheap to share: wrap it in an `Arc` (the trait objects that
/// [`Communicator::split`] returns already are).
pub struct MpiComm {
    inner: Arc<Inner>,
    chunk: usize,
    timeout: Duration,
}

impl fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.inner.rank)
            .field("size", &self.inner.size)
            .field("threading", &self.inner.rt.threading)
            .field("chunk_bytes", &self.chunk)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The world communicator of this process, shared by every `world()` call.
static WORLD: Mutex<Option<Arc<Inner>>> = Mutex::new(None);

impl MpiComm {
    /// The world communicator: every rank started by `mpirun` / `mpiexec` /
    /// `srun` (a program started without a launcher is a singleton of size
    /// 1).
    ///
    /// The first call initialises MPI (asking for `MPI_THREAD_MULTIPLE`,
    /// accepting what the library provides: see [`MpiComm::threading`]) and
    /// duplicates `MPI_COMM_WORLD`, so Deep RC's messages never mix with the
    /// host program's own use of `MPI_COMM_WORLD`; every rank must make this
    /// first call. Later calls are local and return another handle to the
    /// same communicator (use [`MpiComm::duplicate`] for an independent
    /// one). If the host program initialised MPI itself, it is used as it is
    /// and the host stays responsible for finalising it; otherwise
    /// `MPI_Finalize` runs when the process exits. Fails once MPI has been
    /// finalised.
    ///
    /// ```no_run
    /// use deeprc_comm::{mpi::MpiComm, Communicator};
    /// let comm = MpiComm::world()?;
    /// println!("rank {} of {}", comm.rank(), comm.size());
    /// # Ok::<(), deeprc_comm::CommError>(())
    /// ```
    pub fn world() -> Result<MpiComm> {
        let timeout = CommConfig::from_env()?.timeout;
        let mut world = lock(&WORLD);
        if let Some(inner) = world.as_ref() {
            runtime::check_alive("MpiComm::world")?;
            return Ok(MpiComm {
                inner: Arc::clone(inner),
                chunk: DEFAULT_CHUNK_BYTES,
                timeout,
            });
        }
        let rt = runtime::init()?;
        let dup = {
            let _e = rt.enter("MpiComm::world")?;
            SimpleCommunicator::world().duplicate()
        };
        let inner = Arc::new(Inner::new(dup, rt)?);
        *world = Some(Arc::clone(&inner));
        Ok(MpiComm {
            inner,
            chunk: DEFAULT_CHUNK_BYTES,
            timeout,
        })
    }

    /// Wraps a communicator of a host program that initialised MPI itself
    /// (as Cylon's `MPIConfig(comm)` does): `MPI_Init` / `MPI_Init_thread`
    /// must have been called (for instance with
    /// `mpi::initialize_with_threading`, keeping the `Universe` alive while
    /// Deep RC is in use), and the host finalises MPI. Fails with
    /// [`CommError::Backend`] if MPI is not initialised or already
    /// finalised.
    ///
    /// Collective over `comm`: every one of its ranks must call it. The
    /// communicator is duplicated (`MPI_Comm_dup`), so Deep RC's traffic
    /// never mixes with the host's; `comm` itself is released.
    ///
    /// ```no_run
    /// use deeprc_comm::{mpi::MpiComm, Communicator};
    /// use mpi::traits::Communicator as _;
    ///
    /// let (universe, _threading) =
    ///     mpi::initialize_with_threading(mpi::Threading::Multiple).unwrap();
    /// let world = universe.world();
    /// // Even and odd ranks get their own Deep RC communicator.
    /// let half = world
    ///     .split_by_color(mpi::topology::Color::with_value(world.rank() % 2))
    ///     .unwrap();
    /// let comm = MpiComm::from_communicator(half)?;
    /// comm.barrier()?;
    /// # Ok::<(), deeprc_comm::CommError>(())
    /// ```
    pub fn from_communicator(comm: SimpleCommunicator) -> Result<MpiComm> {
        let timeout = CommConfig::from_env()?.timeout;
        let rt = runtime::attach("MpiComm::from_communicator")?;
        let dup = {
            let _e = rt.enter("MpiComm::from_communicator")?;
            let dup = comm.duplicate();
            drop(comm);
            dup
        };
        Ok(MpiComm {
            inner: Arc::new(Inner::new(dup, rt)?),
            chunk: DEFAULT_CHUNK_BYTES,
            timeout,
        })
    }

    /// An independent communicator over the same ranks (`MPI_Comm_dup`):
    /// its messages never mix with this one's. Collective: every rank must
    /// call it. The ranks first meet in a barrier bounded by the timeout,
    /// then call `MPI_Comm_dup`. The copy has this handle's timeout and
    /// chunk size.
    pub fn duplicate(&self) -> Result<MpiComm> {
        self.ibarrier("duplicate")?;
        let dup = {
            let _e = self.inner.rt.enter("duplicate")?;
            self.inner.comm.duplicate()
        };
        Ok(MpiComm {
            inner: Arc::new(Inner::new(dup, self.inner.rt)?),
            chunk: self.chunk,
            timeout: self.timeout,
        })
    }

    /// How long any blocking operation of this handle waits before it
    /// fails with [`CommError::Timeout`] (default: [`CommConfig::from_env`]'s
    /// `timeout`, `DEEPRC_TIMEOUT_MS`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets [`MpiComm::timeout`]. Communicators made by `split` and
    /// [`MpiComm::duplicate`] inherit it.
    pub fn with_timeout(mut self, timeout: Duration) -> MpiComm {
        self.timeout = timeout;
        self
    }

    /// The threading level MPI provides in this process.
    pub fn threading(&self) -> Threading {
        self.inner.rt.threading
    }

    /// Whether Deep RC initialised MPI in this process (and finalises it at
    /// exit), rather than the host program.
    pub fn owns_mpi(&self) -> bool {
        self.inner.rt.owns_mpi
    }

    /// The largest number of bytes one MPI call moves for this handle
    /// (per message chunk, per collective call or round).
    pub fn chunk_bytes(&self) -> usize {
        self.chunk
    }

    /// Sets [`MpiComm::chunk_bytes`] (default [`DEFAULT_CHUNK_BYTES`]):
    /// between 1 and `i32::MAX`. Every rank must use the same value for the
    /// collectives (point-to-point messages carry theirs). Sub-communicators
    /// made by `split` inherit it.
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Result<MpiComm> {
        if bytes == 0 || bytes > c_int::MAX as usize {
            return Err(CommError::InvalidArgument {
                op: "MpiComm::with_chunk_bytes",
                reason: format!("{bytes} bytes is not between 1 and {}", c_int::MAX),
            });
        }
        self.chunk = bytes;
        Ok(self)
    }

    /// Aborts every rank of the job (`MPI_Abort`) with `code`: the way for a
    /// rank that cannot go on to make sure its peers do not wait for it.
    pub fn abort(&self, code: i32) -> ! {
        // No lock: aborting must work even while another thread is inside MPI.
        // SAFETY: MPI_Abort only reads the communicator handle; it does not
        // return.
        unsafe { ::mpi::ffi::MPI_Abort(self.inner.comm.as_raw(), code) };
        std::process::abort()
    }

    fn raw(&self) -> ::mpi::ffi::MPI_Comm {
        self.inner.comm.as_raw()
    }

    fn rank_(&self) -> usize {
        self.inner.rank
    }

    fn size_(&self) -> usize {
        self.inner.size
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.inner.rank
    }

    fn size(&self) -> usize {
        self.inner.size
    }

    fn backend(&self) -> Backend {
        Backend::Mpi
    }

    fn send(&self, dest: usize, tag: Tag, data: Bytes) -> Result<()> {
        self.send_bytes(dest, tag, data)
    }

    fn recv(&self, source: usize, tag: Tag) -> Result<Bytes> {
        self.recv_bytes(source, tag)
    }

    fn barrier(&self) -> Result<()> {
        self.barrier_()
    }

    fn broadcast(&self, root: usize, data: Bytes) -> Result<Bytes> {
        self.broadcast_(root, data)
    }

    fn gather(&self, root: usize, data: Bytes) -> Result<Option<Vec<Bytes>>> {
        self.gather_(root, data)
    }

    fn all_gather(&self, data: Bytes) -> Result<Vec<Bytes>> {
        self.all_gather_(data)
    }

    fn all_to_all_v(&self, parts: Vec<Bytes>) -> Result<Vec<Bytes>> {
        self.all_to_all_v_(parts)
    }

    fn all_reduce_raw(&self, data: &mut [u8], dtype: DType, op: ReduceOp) -> Result<()> {
        self.all_reduce_(data, dtype, op)
    }

    fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Arc<dyn Communicator>>> {
        Ok(self
            .split_(color, key)?
            .map(|c| Arc::new(c) as Arc<dyn Communicator>))
    }

    fn all_to_all_objects(&self, parts: Vec<AnyBox>) -> Result<Vec<AnyBox>> {
        let _ = parts;
        Err(CommError::InvalidArgument {
            op: "all_to_all_objects",
            reason: "the mpi backend moves bytes only (ranks are processes)".into(),
        })
    }
}
