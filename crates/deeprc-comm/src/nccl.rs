//! The `nccl` backend: one rank per GPU, collectives through NVIDIA NCCL
//! (feature `nccl`).
//!
//! NCCL is loaded at run time through [`cudarc`] (dynamic loading): the
//! crate compiles without CUDA, and on a machine without an NVIDIA driver,
//! a GPU or `libnccl`, [`probe`] and [`NcclComm::from_host`] fail with
//! [`CommError::Unavailable`] naming what is missing; they never panic.
//!
//! cudarc looks for `libnccl.so` (not `libnccl.so.2`, the name PyPI's
//! `nvidia-nccl-cu12` wheel ships): put a `libnccl.so` symlink in a directory
//! of `LD_LIBRARY_PATH`.
//!
//! # Creating a communicator
//!
//! [`NcclComm::from_host`] is collective over a *host* communicator (local,
//! tcp, mpi...): rank 0 creates the `ncclUniqueId` and broadcasts it over the
//! host communicator, then every rank opens its CUDA device and joins the
//! NCCL communicator. Before NCCL is touched, the ranks exchange whether
//! their device opened, so that one rank without a GPU makes *every* rank
//! fail with [`CommError::Unavailable`] instead of leaving the others
//! waiting in NCCL.
//!
//! # Device buffers
//!
//! The point of NCCL: [`NcclComm::all_reduce_device`],
//! [`NcclComm::all_gather_device`] and [`NcclComm::broadcast_device`] work
//! on cudarc device buffers ([`CudaSlice`](cudarc::driver::CudaSlice),
//! [`CudaViewMut`](cudarc::driver::CudaViewMut)) of the types NCCL supports
//! ([`NcclElement`]: `u8 i8 u32 i32 u64 i64 f32 f64`), without a copy
//! through host memory.
//!
//! # Host bytes ([`Communicator`])
//!
//! [`NcclComm`] also implements [`Communicator`], so every Deep RC operator
//! runs on it:
//! - `all_reduce_raw`, `broadcast` and `all_gather` go through NCCL by
//!   *staging*: the host bytes are copied into a fresh device buffer, NCCL
//!   runs, and the result is copied back (one host-to-device and one
//!   device-to-host copy per call, plus an unaligned-to-aligned host copy
//!   for reductions). Lengths are exchanged first over the host
//!   communicator (a few bytes), so that uneven all-gathers, unknown
//!   broadcast lengths and mismatched all-reduce lengths work or fail with a
//!   typed error instead of corrupting NCCL's state.
//! - 16-bit integers, which NCCL lacks, are widened to 32 bits for the
//!   reduction (wrapping results are the same).
//! - Float sums and products are *not* reduced by NCCL: NCCL's reduction
//!   order depends on its ring/tree, while [`Communicator::all_reduce_raw`]
//!   promises rank order. They go through an NCCL all-gather and are reduced
//!   on the host in rank order, so the bits equal every other backend's.
//!   Use [`NcclComm::all_reduce_device`] for fast float reductions.
//! - `send`/`recv`, `barrier`, `gather`, `all_to_all_v` and `split` are a
//!   **host fallback**: they are delegated to the host communicator (NCCL
//!   point-to-point works on device buffers of equal, known sizes; these
//!   operations move host bytes of sizes the receiver does not know), even
//!   though [`Communicator::backend`] says `Nccl`. `split` returns a
//!   sub-communicator *of the host communicator*; make an NCCL one from it
//!   with [`NcclComm::from_host`].
//!
//! What runs where is also a value, so that callers can check instead of
//! reading this page: [`NcclComm::host_fallback_ops`],
//! [`NcclComm::nccl_ops`], [`NcclComm::route`] (an [`NcclRoute`]) and
//! [`NcclComm::backend_name`] (`nccl+tcp`, `nccl+mpi`...).
//!
//! | operation | route |
//! |---|---|
//! | `broadcast`, `all_gather` | NCCL (staged through device memory) |
//! | `all_reduce` | NCCL; float sums and products: NCCL all-gather, host reduction |
//! | `send`, `recv`, `barrier`, `gather`, `all_to_all_v`, `split` | host fallback |
//! | `all_to_all_objects` | unsupported (ranks are processes or GPUs) |
//!
//! # Timeouts
//!
//! Every NCCL operation is enqueued on the communicator's stream and waited
//! for by polling, at most [`NcclOptions::timeout`]. A peer that dies
//! leaves the NCCL kernels waiting forever: after the timeout the NCCL
//! communicator is aborted (`ncclCommAbort`) and the call fails with
//! [`CommError::Timeout`]; every later NCCL operation on this communicator
//! fails with [`CommError::Backend`]. Creation waits at most
//! [`NcclOptions::connect_timeout`] for `ncclCommInitRank`; a rank whose
//! initialisation is stuck leaves a helper thread behind.
//!
//! NCCL does not say which peer failed: the `peer` of such a
//! [`CommError::Timeout`] is this rank's ring neighbour, `(rank + 1) % size`.
//!
//! Operations enqueued before a peer died but never completed are not
//! retried; a host communicator failure (timeout, lost peer) surfaces as
//! that communicator's own error.
//!
//! ```no_run
//! use deeprc_comm::{local, nccl::NcclComm, Communicator, CommunicatorExt, ReduceOp};
//! use std::sync::Arc;
//!
//! // One rank per GPU; here one rank on GPU 0.
//! let out = local::launch(1, |host| {
//!     let comm = NcclComm::from_host(Arc::new(host), 0)?;
//!     let mut grad = comm.stream().clone_htod(&[1.0f32, 2.0, 3.0][..]).unwrap();
//!     comm.all_reduce_device(&mut grad, ReduceOp::Sum)?;
//!     comm.all_reduce_scalar(1u32, ReduceOp::Sum) // host bytes, staged
//! })
//! .unwrap();
//! assert_eq!(out, vec![1]);
//! ```

use crate::{
    communicator::{check_elements, reduce_bytes},
    Backend, CommError, CommOp, Communicator, DType, ReduceOp, Result, Tag,
};
use bytes::Bytes;
use cudarc::{
    driver::{CudaContext, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, DriverError},
    nccl::{Comm, Id, NcclType},
};
use deeprc_core::sync::lock;
use std::{
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{mpsc, Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

/// The version of cudarc this backend is built with, so that callers can
/// name its types (`CudaSlice`, `CudaStream`...) without a version clash.
pub use cudarc;

pub use crate::nccl_types::{DeviceInfo, NcclOptions, NcclRoute, NcclVersion};

mod sealed {
    pub trait Sealed {}
}

/// Element types of the device collectives: the plain types NCCL reduces
/// natively (`u8 i8 u32 i32 u64 i64 f32 f64`). Sealed.
pub trait NcclElement:
    NcclType + DeviceRepr + bytemuck::Pod + Send + Sync + sealed::Sealed
{
}

macro_rules! nccl_element {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl NcclElement for $t {}
    )*};
}
nccl_element!(u8, i8, u32, i32, u64, i64, f32, f64);

fn unavailable(reason: impl Into<String>) -> CommError {
    CommError::Unavailable {
        backend: Backend::Nccl,
        reason: reason.into(),
    }
}

fn backend_err(message: impl Into<String>) -> CommError {
    CommError::Backend {
        backend: Backend::Nccl,
        message: message.into(),
    }
}

use deeprc_core::sync::panic_message;

/// Runs `f`, turning a panic inside cudarc (a library or symbol that cannot
/// be loaded) into a message.
fn catch<R>(f: impl FnOnce() -> R) -> std::result::Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

/// A CUDA driver call: errors and panics become [`CommError::Backend`].
fn cuda<R>(what: &str, f: impl FnOnce() -> std::result::Result<R, DriverError>) -> Result<R> {
    match catch(f) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(backend_err(format!("{what}: CUDA error {e}"))),
        Err(p) => Err(backend_err(format!("{what}: cudarc panicked: {p}"))),
    }
}

/// What cudarc's NCCL calls return.
type NcclResult =
    std::result::Result<cudarc::nccl::result::NcclStatus, cudarc::nccl::result::NcclError>;

fn nccl_error_text(e: &cudarc::nccl::result::NcclError) -> String {
    format!("{:?}", e.0)
}

// ---------------------------------------------------------------------------
// Probing
// ---------------------------------------------------------------------------

fn probe_uncached() -> std::result::Result<DeviceInfo, String> {
    // SAFETY: `is_culib_present` dlopens the candidate names of libcuda and
    // closes them again; loading a shared library runs its initialisers,
    // which is what every use of the library does anyway.
    let has_cuda = catch(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false);
    // SAFETY: as above, for libnccl.
    let has_nccl = catch(|| unsafe { cudarc::nccl::sys::is_culib_present() }).unwrap_or(false);
    let mut missing = Vec::new();
    if !has_cuda {
        // Say which NCCL was found, when one was: proof that it loads.
        let found = if has_nccl {
            match catch(cudarc::nccl::result::get_nccl_version) {
                Ok(Ok(code)) => format!(
                    " (NCCL {} was found)",
                    NcclVersion::from_code(u32::try_from(code).unwrap_or(0))
                ),
                _ => String::new(),
            }
        } else {
            String::new()
        };
        missing.push(format!(
            "the CUDA driver library (libcuda.so / libcuda.so.1) was not found: \
             no NVIDIA driver is installed or it is not on the library path{found}"
        ));
    }
    if !has_nccl {
        missing.push(
            "the NCCL library (libnccl.so) was not found on the library path \
             (PyPI's nvidia-nccl-cu12 ships libnccl.so.2: add a libnccl.so symlink \
             to a directory of LD_LIBRARY_PATH)"
                .to_string(),
        );
    }
    if !missing.is_empty() {
        return Err(missing.join("; "));
    }
    let device_count = match catch(CudaContext::device_count) {
        Ok(Ok(n)) => usize::try_from(n).unwrap_or(0),
        Ok(Err(e)) => return Err(format!("cuInit / cuDeviceGetCount failed: {e}")),
        Err(p) => return Err(format!("the CUDA driver library cannot be used: {p}")),
    };
    if device_count == 0 {
        return Err("no CUDA device is visible (check CUDA_VISIBLE_DEVICES)".to_string());
    }
    let mut version: std::ffi::c_int = 0;
    // SAFETY: `version` is a valid, writable `c_int` for the duration of the
    // call; the driver library was found above.
    let rc = catch(|| unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) });
    match rc {
        Ok(cudarc::driver::sys::CUresult::CUDA_SUCCESS) => {}
        Ok(e) => return Err(format!("cuDriverGetVersion failed: {e:?}")),
        Err(p) => return Err(format!("the CUDA driver library cannot be used: {p}")),
    }
    let nccl_version = match catch(cudarc::nccl::result::get_nccl_version) {
        Ok(Ok(code)) => NcclVersion::from_code(u32::try_from(code).unwrap_or(0)),
        Ok(Err(e)) => return Err(format!("ncclGetVersion failed: {}", nccl_error_text(&e))),
        Err(p) => return Err(format!("the NCCL library cannot be used: {p}")),
    };
    Ok(DeviceInfo {
        device_count,
        cuda_driver_version: version,
        nccl_version,
    })
}

/// Checks that this process can run NCCL: the CUDA driver library, at least
/// one visible device and the NCCL library. The first call loads the
/// libraries; the answer is cached for the life of the process.
///
/// Fails with [`CommError::Unavailable`] naming what is missing; never
/// panics.
pub fn probe() -> Result<DeviceInfo> {
    static PROBE: OnceLock<std::result::Result<DeviceInfo, String>> = OnceLock::new();
    PROBE
        .get_or_init(probe_uncached)
        .clone()
        .map_err(unavailable)
}

/// Whether [`probe`] succeeds: NCCL and at least one GPU can be used here.
pub fn is_available() -> bool {
    probe().is_ok()
}

// ---------------------------------------------------------------------------
// The communicator
// ---------------------------------------------------------------------------

/// cudarc's NCCL communicator, made `Send`.
#[derive(Debug)]
struct CommCell(Comm);

// SAFETY: an NCCL communicator (`ncclComm_t`) may be used from any thread,
// one thread at a time (NCCL's documented thread-safety rule); `NcclComm`
// keeps it behind a `Mutex`, and the init thread hands it over through a
// channel without using it again.
unsafe impl Send for CommCell {}

/// Drops (and so aborts, `ncclCommAbort`) a communicator, swallowing a
/// panic of cudarc's `Drop` when the abort itself fails.
fn abort_comm(cell: Option<CommCell>) {
    if let Some(cell) = cell {
        let _ = catch(move || drop(cell));
    }
}

/// A communicator of GPU ranks: NCCL for the collectives, a host
/// communicator for the rest. See the [module documentation](self).
pub struct NcclComm {
    host: Arc<dyn Communicator>,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// `None` once the communicator was aborted after a failure.
    comm: Mutex<Option<CommCell>>,
    device: usize,
    options: NcclOptions,
}

impl fmt::Debug for NcclComm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NcclComm")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("device", &self.device)
            .field("backend", &self.backend_name())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        let cell = self
            .comm
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        abort_comm(cell);
    }
}

/// Every rank's `Ok`/`Err(reason)`, exchanged over the host communicator.
fn exchange_status(
    host: &dyn Communicator,
    mine: &std::result::Result<(), String>,
) -> Result<Vec<Option<String>>> {
    let payload = match mine {
        Ok(()) => Bytes::from_static(&[0]),
        Err(reason) => {
            let mut v = vec![1u8];
            v.extend_from_slice(reason.as_bytes());
            Bytes::from(v)
        }
    };
    Ok(host
        .all_gather(payload)?
        .into_iter()
        .map(|b| match b.first() {
            Some(0) => None,
            Some(_) => Some(String::from_utf8_lossy(&b[1..]).into_owned()),
            None => Some("sent an empty status".to_string()),
        })
        .collect())
}

/// One message naming every rank that failed, or `None` when none did.
fn failures(statuses: &[Option<String>]) -> Option<String> {
    let failed: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter_map(|(r, s)| s.as_ref().map(|s| format!("rank {r}: {s}")))
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

/// Opens `device` and a stream on it, after [`probe`].
fn open_device(device: usize) -> std::result::Result<(Arc<CudaContext>, Arc<CudaStream>), String> {
    let info = probe().map_err(|e| match e {
        CommError::Unavailable { reason, .. } => reason,
        other => other.to_string(),
    })?;
    if device >= info.device_count {
        return Err(format!(
            "CUDA device {device} was asked for but only {} device(s) are visible",
            info.device_count
        ));
    }
    let opened = catch(|| -> std::result::Result<_, DriverError> {
        let ctx = CudaContext::new(device)?;
        let stream = ctx.new_stream()?;
        Ok((ctx, stream))
    });
    match opened {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(format!("cannot open CUDA device {device}: {e}")),
        Err(p) => Err(format!("cannot open CUDA device {device}: {p}")),
    }
}

const ID_LEN: usize = 128;

impl NcclComm {
    /// Creates the NCCL communicator of the ranks of `host`, this rank on
    /// CUDA device `device`, with [`NcclOptions::from_env`]. Collective:
    /// every rank of `host` must call it. See [`NcclComm::from_host_with`].
    pub fn from_host(host: Arc<dyn Communicator>, device: usize) -> Result<NcclComm> {
        let options = NcclOptions::from_env()?;
        Self::from_host_with(host, device, options)
    }

    /// Creates the NCCL communicator of the ranks of `host`, this rank on
    /// CUDA device `device` (an ordinal among the visible devices; one rank
    /// per device). Collective: every rank of `host` must call it.
    ///
    /// Rank `r` of the result is rank `r` of `host`.
    ///
    /// # Errors
    /// - [`CommError::Unavailable`] on *every* rank when any rank lacks the
    ///   CUDA driver, NCCL, or its device; the reason names each failing
    ///   rank and what it misses.
    /// - [`CommError::Backend`] when NCCL fails (for instance two ranks on
    ///   one device), [`CommError::Timeout`] when `ncclCommInitRank` takes
    ///   longer than [`NcclOptions::connect_timeout`]: on every rank.
    /// - The host communicator's errors.
    pub fn from_host_with(
        host: Arc<dyn Communicator>,
        device: usize,
        options: NcclOptions,
    ) -> Result<NcclComm> {
        let (rank, size) = (host.rank(), host.size());

        // 1. Every rank opens its device; all ranks learn who could not.
        let opened = open_device(device);
        let status = opened.as_ref().map(|_| ()).map_err(Clone::clone);
        let statuses = exchange_status(&*host, &status)?;
        if let Some(msg) = failures(&statuses) {
            return Err(unavailable(msg));
        }
        let (ctx, stream) = opened.map_err(unavailable)?;

        // 2. Rank 0 creates the unique id and broadcasts it.
        let mut payload = vec![0u8; 1 + ID_LEN];
        if rank == 0 {
            match catch(Id::new) {
                Ok(Ok(id)) => {
                    for (dst, &c) in payload[1..].iter_mut().zip(id.internal().iter()) {
                        *dst = c as u8;
                    }
                }
                Ok(Err(e)) => {
                    payload =
                        failure_payload(&format!("ncclGetUniqueId failed: {}", nccl_error_text(&e)))
                }
                Err(p) => payload = failure_payload(&format!("ncclGetUniqueId panicked: {p}")),
            }
        }
        let got = host.broadcast(0, Bytes::from(payload))?;
        if got.first() != Some(&0) || got.len() != 1 + ID_LEN {
            return Err(backend_err(format!(
                "rank 0 could not create the NCCL unique id: {}",
                String::from_utf8_lossy(got.get(1..).unwrap_or_default())
            )));
        }
        let mut internal = [0 as std::ffi::c_char; ID_LEN];
        for (dst, &b) in internal.iter_mut().zip(got[1..].iter()) {
            *dst = b as std::ffi::c_char;
        }
        let id = Id::uninit(internal);

        // 3. ncclCommInitRank on a helper thread, so a stuck initialisation
        //    becomes a timeout; then all ranks learn who failed.
        let (tx, rx) = mpsc::channel();
        let init_stream = Arc::clone(&stream);
        let spawned = std::thread::Builder::new()
            .name(format!("deeprc-nccl-init-{rank}"))
            .spawn(move || {
                let r = catch(|| -> std::result::Result<CommCell, String> {
                    init_stream
                        .context()
                        .bind_to_thread()
                        .map_err(|e| format!("cannot bind the CUDA context: {e}"))?;
                    Comm::from_rank(init_stream, rank, size, id)
                        .map(CommCell)
                        .map_err(|e| format!("ncclCommInitRank failed: {}", nccl_error_text(&e)))
                })
                .unwrap_or_else(|p| Err(format!("ncclCommInitRank panicked: {p}")));
                // When nobody waits any more, the communicator is dropped
                // (aborted) here.
                if let Err(mpsc::SendError(Ok(cell))) = tx.send(r) {
                    abort_comm(Some(cell));
                }
            });
        let mut timed_out = false;
        let init: std::result::Result<CommCell, String> = match spawned {
            Err(e) => Err(format!("cannot start the NCCL init thread: {e}")),
            Ok(_) => match rx.recv_timeout(options.connect_timeout) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    Err(format!(
                        "ncclCommInitRank did not finish within {:?}",
                        options.connect_timeout
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Err("the NCCL init thread ended without an answer".to_string())
                }
            },
        };
        let status = init.as_ref().map(|_| ()).map_err(Clone::clone);
        let statuses = exchange_status(&*host, &status)?;
        if let Some(msg) = failures(&statuses) {
            if let Ok(cell) = init {
                abort_comm(Some(cell));
            }
            return Err(if timed_out {
                CommError::Timeout {
                    op: "NcclComm::from_host",
                    peer: (rank + 1) % size,
                    after: options.connect_timeout,
                }
            } else {
                backend_err(format!("creating the NCCL communicator failed: {msg}"))
            });
        }
        let cell = init.map_err(backend_err)?;
        Ok(NcclComm {
            host,
            ctx,
            stream,
            comm: Mutex::new(Some(cell)),
            device,
            options,
        })
    }

    /// The host communicator this one was created from.
    pub fn host(&self) -> &Arc<dyn Communicator> {
        &self.host
    }

    /// The CUDA device ordinal of this rank.
    pub fn device(&self) -> usize {
        self.device
    }

    /// The CUDA context of this rank's device.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream NCCL runs on. Buffers may live on other streams of the
    /// same device (cudarc orders the streams with events); allocating them
    /// on this one avoids the cross-stream waits.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The settings of this communicator.
    pub fn options(&self) -> &NcclOptions {
        &self.options
    }

    /// The operations of this communicator's [`Communicator`]
    /// implementation that do **not** run on NCCL: they are delegated to
    /// the host communicator ([`NcclRoute::Host`]) even though
    /// [`Communicator::backend`] says [`Backend::Nccl`]. They are `send`,
    /// `recv`, `barrier`, `gather`, `all_to_all_v` and `split`.
    pub fn host_fallback_ops() -> &'static [CommOp] {
        &crate::nccl_types::HOST_FALLBACK_OPS
    }

    /// The operations that go through NCCL: `broadcast`, `all_gather` and
    /// `all_reduce` (see [`NcclComm::all_reduce_route`] for float sums).
    pub fn nccl_ops() -> &'static [CommOp] {
        &crate::nccl_types::NCCL_OPS
    }

    /// Where `op` runs on this backend.
    pub fn route(op: CommOp) -> NcclRoute {
        crate::nccl_types::route(op)
    }

    /// Where an all-reduce of `dtype` with `op` runs: float sums and
    /// products are all-gathered by NCCL and reduced on the host.
    pub fn all_reduce_route(dtype: DType, op: ReduceOp) -> NcclRoute {
        crate::nccl_types::all_reduce_route(dtype, op)
    }

    /// The backend with its host fallback, e.g. `nccl+tcp`:
    /// [`Communicator::backend`] says only [`Backend::Nccl`], while the
    /// operations of [`NcclComm::host_fallback_ops`] run on the host
    /// backend named after the `+`.
    pub fn backend_name(&self) -> String {
        crate::nccl_types::backend_label(self.host.backend())
    }

    /// Whether an earlier failure (timeout, NCCL error) aborted the NCCL
    /// communicator; then every NCCL operation fails.
    pub fn is_aborted(&self) -> bool {
        lock(&self.comm).is_none()
    }

    /// Enqueues one NCCL operation with `enqueue` and waits until the
    /// stream has run it, at most `options.timeout`; aborts the NCCL
    /// communicator on a timeout or an error.
    fn run_nccl(&self, op: &'static str, enqueue: impl FnOnce(&Comm) -> NcclResult) -> Result<()> {
        let mut guard = lock(&self.comm);
        let Some(cell) = guard.as_ref() else {
            return Err(backend_err(format!(
                "{op}: the NCCL communicator was aborted after an earlier failure; create a new one"
            )));
        };
        cuda(op, || self.ctx.bind_to_thread())?;
        let enqueued = match catch(|| enqueue(&cell.0)) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{op}: NCCL error {}", nccl_error_text(&e))),
            Err(p) => Err(format!("{op}: cudarc panicked: {p}")),
        };
        if let Err(msg) = enqueued {
            abort_comm(guard.take());
            return Err(backend_err(msg));
        }
        let event = match cuda(op, || self.stream.record_event(None)) {
            Ok(ev) => ev,
            Err(e) => {
                abort_comm(guard.take());
                return Err(e);
            }
        };
        let start = Instant::now();
        let mut nap = Duration::from_micros(20);
        loop {
            match catch(|| event.try_is_complete()) {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    abort_comm(guard.take());
                    return Err(backend_err(format!("{op}: CUDA error {e}")));
                }
                Err(p) => {
                    abort_comm(guard.take());
                    return Err(backend_err(format!("{op}: cudarc panicked: {p}")));
                }
            }
            let waited = start.elapsed();
            if waited >= self.options.timeout {
                abort_comm(guard.take());
                return Err(CommError::Timeout {
                    op,
                    peer: (self.rank() + 1) % self.size(),
                    after: waited,
                });
            }
            if waited < Duration::from_micros(200) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(1));
            }
        }
    }

    /// Makes every rank agree before a collective: each rank contributes
    /// its own argument check and element count; a rank whose check failed
    /// gets its own error, the others [`CommError::InvalidArgument`]; ranks
    /// with different counts get [`CommError::SizeMismatch`] (in bytes).
    /// Returns the counts of every rank.
    fn agree(
        &self,
        op: &'static str,
        local: Result<u64>,
        elem_size: usize,
        must_match: bool,
    ) -> Result<Vec<u64>> {
        let mut msg = [0u8; 9];
        match &local {
            Ok(n) => msg[1..].copy_from_slice(&n.to_le_bytes()),
            Err(_) => msg[0] = 1,
        }
        let all = self.host.all_gather(Bytes::copy_from_slice(&msg))?;
        let mine = local?;
        let mut counts = Vec::with_capacity(all.len());
        for (peer, b) in all.iter().enumerate() {
            if b.len() != 9 {
                return Err(CommError::SizeMismatch {
                    op,
                    peer,
                    expected: 9,
                    actual: b.len(),
                });
            }
            if b[0] != 0 {
                return Err(CommError::invalid(
                    op,
                    format!("rank {peer} passed an invalid argument"),
                ));
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[1..]);
            counts.push(u64::from_le_bytes(n));
        }
        if must_match {
            if let Some((peer, &n)) = counts.iter().enumerate().find(|(_, &n)| n != mine) {
                return Err(CommError::SizeMismatch {
                    op,
                    peer,
                    expected: mine as usize * elem_size,
                    actual: n as usize * elem_size,
                });
            }
        }
        Ok(counts)
    }

    fn check_device<T>(
        &self,
        op: &'static str,
        buf: &impl cudarc::driver::DeviceSlice<T>,
    ) -> Result<()> {
        let ordinal = buf.stream().context().ordinal();
        if ordinal != self.device {
            return Err(CommError::invalid(
                op,
                format!(
                    "the buffer is on CUDA device {ordinal}, this rank's NCCL communicator on device {}",
                    self.device
                ),
            ));
        }
        Ok(())
    }

    /// Element-wise all-reduce of a device buffer, in place, with NCCL.
    /// Every rank passes a buffer of the same length on this rank's device.
    /// Returns when the result is in `buf`.
    ///
    /// The reduction order is NCCL's (ring or tree): float results may
    /// differ in the last bits from a reduction in rank order, but are the
    /// same on every rank.
    pub fn all_reduce_device<T, B>(&self, buf: &mut B, op: ReduceOp) -> Result<()>
    where
        T: NcclElement,
        B: DevicePtrMut<T>,
    {
        const OP: &str = "all_reduce_device";
        let local = self.check_device(OP, &*buf).map(|_| buf.len() as u64);
        if self.options.check_counts {
            self.agree(OP, local, std::mem::size_of::<T>(), true)?;
        } else {
            local?;
        }
        if buf.len() == 0 {
            return Ok(());
        }
        let op = nccl_op(op);
        self.run_nccl(OP, |c| c.all_reduce_in_place(buf, &op))
    }

    /// All-gather of device buffers: `recv` (length `send.len() * size()`)
    /// receives rank `r`'s `send` at offset `r * send.len()`. Every rank
    /// passes `send` buffers of the same length. Returns when the result is
    /// in `recv`.
    pub fn all_gather_device<T, S, R>(&self, send: &S, recv: &mut R) -> Result<()>
    where
        T: NcclElement,
        S: DevicePtr<T>,
        R: DevicePtrMut<T>,
    {
        const OP: &str = "all_gather_device";
        let local = self
            .check_device(OP, send)
            .and_then(|_| self.check_device(OP, &*recv))
            .and_then(|_| {
                let want = send.len() * self.size();
                if recv.len() == want {
                    Ok(send.len() as u64)
                } else {
                    Err(CommError::invalid(
                        OP,
                        format!(
                            "recv holds {} elements, {} ranks x {} elements need {want}",
                            recv.len(),
                            self.size(),
                            send.len()
                        ),
                    ))
                }
            });
        if self.options.check_counts {
            self.agree(OP, local, std::mem::size_of::<T>(), true)?;
        } else {
            local?;
        }
        if send.len() == 0 {
            return Ok(());
        }
        self.run_nccl(OP, |c| c.all_gather(send, recv))
    }

    /// Broadcast of rank `root`'s device buffer into `buf` on every rank, in
    /// place. Every rank passes a buffer of the same length. Returns when
    /// the data is in `buf`.
    pub fn broadcast_device<T, B>(&self, root: usize, buf: &mut B) -> Result<()>
    where
        T: NcclElement,
        B: DevicePtrMut<T>,
    {
        const OP: &str = "broadcast_device";
        self.check_rank(root)?;
        let local = self.check_device(OP, &*buf).map(|_| buf.len() as u64);
        if self.options.check_counts {
            self.agree(OP, local, std::mem::size_of::<T>(), true)?;
        } else {
            local?;
        }
        if buf.len() == 0 {
            return Ok(());
        }
        let root = root as i32;
        self.run_nccl(OP, |c| c.broadcast_in_place(buf, root))
    }

    fn check_rank(&self, rank: usize) -> Result<()> {
        if rank >= self.size() {
            return Err(CommError::InvalidRank {
                rank,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// Host bytes -> device -> NCCL all-reduce -> host, for one element type.
    fn staged_reduce<T: NcclElement>(&self, host: &mut [T], op: ReduceOp) -> Result<()> {
        const OP: &str = "all_reduce";
        let mut dev = cuda("all_reduce: copy to the device", || {
            self.stream.clone_htod(&*host)
        })?;
        let nop = nccl_op(op);
        self.run_nccl(OP, |c| c.all_reduce_in_place(&mut dev, &nop))?;
        cuda("all_reduce: copy to the host", || {
            self.stream.memcpy_dtoh(&dev, host)?;
            self.stream.synchronize()
        })
    }

    /// [`Self::staged_reduce`] on packed, possibly unaligned bytes.
    fn staged_reduce_bytes<T: NcclElement>(&self, data: &mut [u8], op: ReduceOp) -> Result<()> {
        match bytemuck::try_cast_slice_mut::<u8, T>(data) {
            Ok(typed) => self.staged_reduce(typed, op),
            Err(_) => {
                let mut typed: Vec<T> = crate::pod_vec(data)?;
                self.staged_reduce(&mut typed, op)?;
                data.copy_from_slice(bytemuck::cast_slice(&typed));
                Ok(())
            }
        }
    }

    /// 16-bit integers widened to `W` for NCCL and narrowed back.
    fn staged_reduce_widened<N, W>(
        &self,
        data: &mut [u8],
        op: ReduceOp,
        widen: fn(N) -> W,
        narrow: fn(W) -> N,
    ) -> Result<()>
    where
        N: bytemuck::Pod,
        W: NcclElement,
    {
        let narrow_vals: Vec<N> = crate::pod_vec(data)?;
        let mut wide: Vec<W> = narrow_vals.into_iter().map(widen).collect();
        self.staged_reduce(&mut wide, op)?;
        let back: Vec<N> = wide.into_iter().map(narrow).collect();
        data.copy_from_slice(bytemuck::cast_slice(&back));
        Ok(())
    }

    /// The padded NCCL all-gather of host bytes: every rank contributes
    /// `max` bytes (its data, zero-padded); returns the `size * max` bytes.
    fn staged_all_gather(&self, data: &[u8], max: usize) -> Result<Vec<u8>> {
        let mut padded = vec![0u8; max];
        padded[..data.len()].copy_from_slice(data);
        let send = cuda("all_gather: copy to the device", || {
            self.stream.clone_htod(&padded)
        })?;
        let mut recv = cuda("all_gather: device allocation", || {
            self.stream.alloc_zeros::<u8>(max * self.size())
        })?;
        self.run_nccl("all_gather", |c| c.all_gather(&send, &mut recv))?;
        cuda("all_gather: copy to the host", || {
            let v = self.stream.clone_dtoh(&recv)?;
            self.stream.synchronize()?;
            Ok(v)
        })
    }
}

fn failure_payload(reason: &str) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend_from_slice(reason.as_bytes());
    v
}

fn nccl_op(op: ReduceOp) -> cudarc::nccl::ReduceOp {
    match op {
        ReduceOp::Sum => cudarc::nccl::ReduceOp::Sum,
        ReduceOp::Min => cudarc::nccl::ReduceOp::Min,
        ReduceOp::Max => cudarc::nccl::ReduceOp::Max,
        ReduceOp::Prod => cudarc::nccl::ReduceOp::Prod,
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.host.rank()
    }

    fn size(&self) -> usize {
        self.host.size()
    }

    /// [`Backend::Nccl`] for every operation; which ones really run on
    /// NCCL: [`NcclComm::route`], [`NcclComm::backend_name`].
    fn backend(&self) -> Backend {
        Backend::Nccl
    }

    /// Host fallback ([`NcclRoute::Host`]): delegated to the host
    /// communicator, NCCL is not involved.
    fn send(&self, dest: usize, tag: Tag, data: Bytes) -> Result<()> {
        self.host.send(dest, tag, data)
    }

    /// Host fallback ([`NcclRoute::Host`]): delegated to the host
    /// communicator, NCCL is not involved.
    fn recv(&self, source: usize, tag: Tag) -> Result<Bytes> {
        self.host.recv(source, tag)
    }

    /// Host fallback ([`NcclRoute::Host`]): delegated to the host
    /// communicator, NCCL is not involved.
    fn barrier(&self) -> Result<()> {
        self.host.barrier()
    }

    /// The length goes over the host communicator, the bytes through an
    /// NCCL broadcast staged in device memory (non-root ranks: one
    /// device-to-host copy; the root: one host-to-device copy and its own
    /// `data` back).
    fn broadcast(&self, root: usize, data: Bytes) -> Result<Bytes> {
        self.check_rank(root)?;
        let len_msg = if self.rank() == root {
            Bytes::copy_from_slice(&(data.len() as u64).to_le_bytes())
        } else {
            Bytes::new()
        };
        let got = self.host.broadcast(root, len_msg)?;
        let len = match <[u8; 8]>::try_from(&got[..]) {
            Ok(b) => u64::from_le_bytes(b) as usize,
            Err(_) => {
                return Err(CommError::SizeMismatch {
                    op: "broadcast",
                    peer: root,
                    expected: 8,
                    actual: got.len(),
                })
            }
        };
        if len == 0 {
            return Ok(Bytes::new());
        }
        let mut dev = if self.rank() == root {
            cuda("broadcast: copy to the device", || {
                self.stream.clone_htod(&data[..])
            })?
        } else {
            cuda("broadcast: device allocation", || {
                self.stream.alloc_zeros::<u8>(len)
            })?
        };
        let r = root as i32;
        self.run_nccl("broadcast", |c| c.broadcast_in_place(&mut dev, r))?;
        if self.rank() == root {
            return Ok(data);
        }
        let host = cuda("broadcast: copy to the host", || {
            let v = self.stream.clone_dtoh(&dev)?;
            self.stream.synchronize()?;
            Ok(v)
        })?;
        Ok(Bytes::from(host))
    }

    /// Host fallback ([`NcclRoute::Host`]): delegated to the host
    /// communicator, NCCL is not involved.
    fn gather(&self, root: usize, data: Bytes) -> Result<Option<Vec<Bytes>>> {
        self.host.gather(root, data)
    }

    /// The lengths go over the host communicator; the bytes through one
    /// NCCL all-gather of buffers padded to the longest contribution
    /// (one host-to-device and one device-to-host copy of `size * longest`
    /// bytes).
    fn all_gather(&self, data: Bytes) -> Result<Vec<Bytes>> {
        let lens = self.agree("all_gather", Ok(data.len() as u64), 1, false)?;
        let max = lens.iter().copied().max().unwrap_or(0) as usize;
        if max == 0 {
            return Ok(vec![Bytes::new(); self.size()]);
        }
        let all = Bytes::from(self.staged_all_gather(&data, max)?);
        Ok(lens
            .iter()
            .enumerate()
            .map(|(r, &n)| all.slice(r * max..r * max + n as usize))
            .collect())
    }

    /// Host fallback ([`NcclRoute::Host`]): delegated to the host
    /// communicator, NCCL is not involved.
    fn all_to_all_v(&self, parts: Vec<Bytes>) -> Result<Vec<Bytes>> {
        self.host.all_to_all_v(parts)
    }

    /// Through NCCL, staged in device memory (a host-to-device and a
    /// device-to-host copy; an extra host copy when `data` is not aligned
    /// for `dtype`). Lengths are checked over the host communicator first.
    /// 16-bit integers are widened to 32 bits; float sums and products are
    /// all-gathered with NCCL and reduced on the host in rank order, so
    /// that the result has the same bits as on every other backend.
    fn all_reduce_raw(&self, data: &mut [u8], dtype: DType, op: ReduceOp) -> Result<()> {
        const OP: &str = "all_reduce";
        let local = check_elements(OP, data, dtype).map(|_| data.len() as u64);
        self.agree(OP, local, 1, true)?;
        if data.is_empty() {
            return Ok(());
        }
        match (dtype, op) {
            (DType::F32 | DType::F64, ReduceOp::Sum | ReduceOp::Prod) => {
                let n = data.len();
                let all = self.staged_all_gather(data, n)?;
                let mut acc = all[..n].to_vec();
                for r in 1..self.size() {
                    reduce_bytes(&mut acc, &all[r * n..(r + 1) * n], dtype, op);
                }
                data.copy_from_slice(&acc);
                Ok(())
            }
            (DType::U8, _) => self.staged_reduce_bytes::<u8>(data, op),
            (DType::I8, _) => self.staged_reduce_bytes::<i8>(data, op),
            (DType::U16, _) => {
                self.staged_reduce_widened::<u16, u32>(data, op, u32::from, |w| w as u16)
            }
            (DType::I16, _) => {
                self.staged_reduce_widened::<i16, i32>(data, op, i32::from, |w| w as i16)
            }
            (DType::U32, _) => self.staged_reduce_bytes::<u32>(data, op),
            (DType::I32, _) => self.staged_reduce_bytes::<i32>(data, op),
            (DType::U64, _) => self.staged_reduce_bytes::<u64>(data, op),
            (DType::I64, _) => self.staged_reduce_bytes::<i64>(data, op),
            (DType::F32, _) => self.staged_reduce_bytes::<f32>(data, op),
            (DType::F64, _) => self.staged_reduce_bytes::<f64>(data, op),
        }
    }

    /// Host fallback ([`NcclRoute::Host`]): delegated to the host
    /// communicator; the result is a sub-communicator of the host backend,
    /// not an NCCL one (make one with [`NcclComm::from_host`]).
    fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Arc<dyn Communicator>>> {
        self.host.split(color, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cudarc panics when a library it needs cannot be loaded; the guard
    /// turns that into a typed error. Without libcuda this calls straight
    /// into the panicking loader.
    #[test]
    fn a_missing_library_is_an_error_not_a_panic() {
        // SAFETY: only dlopens and closes the libcuda candidates.
        let has_cuda = unsafe { cudarc::driver::sys::is_culib_present() };
        let r = cuda("device count", CudaContext::device_count);
        if has_cuda {
            // With a driver, the call answers (a count or a CUDA error).
            if let Err(e) = r {
                assert!(matches!(e, CommError::Backend { .. }), "{e:?}");
            }
        } else {
            match r {
                Err(CommError::Backend { backend, message }) => {
                    assert_eq!(backend, Backend::Nccl);
                    assert!(message.contains("panicked"), "{message}");
                }
                other => panic!("expected a Backend error, got {other:?}"),
            }
        }
    }

    #[test]
    fn failures_name_every_failing_rank() {
        assert_eq!(failures(&[None, None]), None);
        let msg = failures(&[None, Some("no GPU".into()), Some("no NCCL".into())]).unwrap();
        assert_eq!(msg, "rank 1: no GPU; rank 2: no NCCL");
    }
}
