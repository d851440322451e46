//! Process-wide MPI state: initialisation, the threading level, the lock
//! that serialises MPI calls below `MPI_THREAD_MULTIPLE`, and finalisation
//! at process exit.

use super::backend_err;
use crate::{CommError, Result};
use ::mpi::{
    environment::{self, Threading, Universe},
    ffi,
};
use deeprc_core::sync::lock;
use std::{
    os::raw::{c_int, c_void},
    sync::{Mutex, MutexGuard, OnceLock},
};

/// What every communicator of this process shares.
#[derive(Debug)]
pub(super) struct Runtime {
    /// The threading level MPI provides.
    pub(super) threading: Threading,
    /// `MPI_TAG_UB`: the largest tag this MPI library accepts.
    pub(super) tag_ub: c_int,
    /// Whether Deep RC initialised MPI (and finalises it at exit).
    pub(super) owns_mpi: bool,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The universe, when Deep RC initialised MPI; taken (and so finalised) at
/// process exit.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);

/// Serialises MPI calls when MPI provides less than `MPI_THREAD_MULTIPLE`.
static SERIAL: Mutex<()> = Mutex::new(());

/// Initialises MPI if nobody has (asking for `MPI_THREAD_MULTIPLE` and
/// accepting what the library provides), or attaches to the MPI that the
/// host program initialised.
pub(super) fn init() -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        check_alive("MpiComm::world")?;
        return Ok(rt);
    }
    let mut universe = lock(&UNIVERSE);
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let (threading, owns_mpi) = match ::mpi::initialize_with_threading(Threading::Multiple) {
        Some((u, level)) => {
            *universe = Some(u);
            register_finalizer()?;
            (level, true)
        }
        // Initialised before: by the host program, or finalised already.
        None => {
            check_alive("MpiComm::world")?;
            (environment::threading_support(), false)
        }
    };
    drop(universe);
    Ok(RUNTIME.get_or_init(|| Runtime {
        threading,
        tag_ub: query_tag_ub(),
        owns_mpi,
    }))
}

/// The runtime of an MPI that must already be initialised (by the host
/// program or by an earlier [`init`]).
pub(super) fn attach(op: &'static str) -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        check_alive(op)?;
        return Ok(rt);
    }
    if !environment::is_initialized() {
        return Err(backend_err(format!(
            "{op}: MPI is not initialised; the host program must initialise it first \
             (mpi::initialize_with_threading) or use MpiComm::world()"
        )));
    }
    check_alive(op)?;
    Ok(RUNTIME.get_or_init(|| Runtime {
        threading: environment::threading_support(),
        tag_ub: query_tag_ub(),
        owns_mpi: false,
    }))
}

/// Fails once MPI has been finalised.
pub(super) fn check_alive(op: &'static str) -> Result<()> {
    if environment::is_finalized() {
        return Err(backend_err(format!(
            "{op}: MPI has been finalised in this process (it cannot be initialised again)"
        )));
    }
    Ok(())
}

fn query_tag_ub() -> c_int {
    let mut value: *mut c_int = std::ptr::null_mut();
    let mut flag: c_int = 0;
    // SAFETY: MPI is initialised; MPI_TAG_UB is a predefined attribute of
    // MPI_COMM_WORLD whose value is a pointer to an int owned by the library,
    // written into `value` when `flag` is set.
    let ub = unsafe {
        ffi::MPI_Comm_get_attr(
            ffi::RSMPI_COMM_WORLD,
            ffi::MPI_TAG_UB as c_int,
            (&mut value as *mut *mut c_int).cast::<c_void>(),
            &mut flag,
        );
        if flag != 0 && !value.is_null() {
            *value
        } else {
            0
        }
    };
    // The standard guarantees at least 32767.
    ub.max(32767)
}

extern "C" {
    fn atexit(callback: extern "C" fn()) -> c_int;
}

/// Calls `MPI_Finalize` when the process exits: OpenMPI's `mpirun` treats
/// a rank that exits without finalising as failed.
extern "C" fn finalize_at_exit() {
    // try_lock: never block the exit of the process on a lock another
    // thread holds; finalising is skipped then.
    let Ok(_serial) = SERIAL.try_lock() else {
        return;
    };
    let universe = match UNIVERSE.try_lock() {
        Ok(mut u) => u.take(),
        Err(_) => None,
    };
    // Dropping the universe calls MPI_Finalize.
    drop(universe);
}

fn register_finalizer() -> Result<()> {
    // SAFETY: `atexit` is the C library's; the callback is a plain
    // `extern "C" fn` that lives for the whole program and does not unwind
    // (it only takes locks without blocking and drops the universe).
    let rc = unsafe { atexit(finalize_at_exit) };
    if rc != 0 {
        return Err(backend_err(
            "could not register MPI_Finalize to run at process exit (atexit failed)",
        ));
    }
    Ok(())
}

/// Held for the duration of MPI calls: the process-wide lock when MPI
/// provides less than `MPI_THREAD_MULTIPLE`, nothing otherwise.
pub(super) struct Entered {
    _serial: Option<MutexGuard<'static, ()>>,
}

impl Runtime {
    /// Enters MPI from the calling thread: checks that MPI is still alive
    /// and that this thread may call it, and serialises the call when the
    /// threading level requires it.
    pub(super) fn enter(&self, op: &'static str) -> Result<Entered> {
        check_alive(op)?;
        if self.threading == Threading::Multiple {
            return Ok(Entered { _serial: None });
        }
        if self.threading < Threading::Serialized && !is_thread_main() {
            return Err(CommError::InvalidArgument {
                op,
                reason: format!(
                    "MPI provides only the threading level {:?}: call it from the thread \
                     that initialised MPI",
                    self.threading
                ),
            });
        }
        Ok(Entered {
            _serial: Some(lock(&SERIAL)),
        })
    }
}

fn is_thread_main() -> bool {
    let mut flag: c_int = 0;
    // SAFETY: MPI is initialised (checked by the caller); the call only
    // writes `flag`.
    unsafe { ffi::MPI_Is_thread_main(&mut flag) };
    flag != 0
}
