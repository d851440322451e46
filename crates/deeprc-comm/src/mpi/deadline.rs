//! Deadlines: every blocking operation of the mpi backend is a nonblocking
//! MPI call (`MPI_Ibarrier`, `MPI_Iallreduce`, `MPI_Ibcast`,
//! `MPI_Igatherv`, `MPI_Iallgather[v]`, `MPI_Ialltoall[v]`, or
//! `MPI_Improbe` for receives) polled with `MPI_Test` until the
//! communicator's timeout; past it the call fails with
//! [`CommError::Timeout`] naming the operation.
//!
//! MPI cannot cancel a collective. When one times out, its request and
//! every buffer it reads or writes are leaked (MPI may still complete it
//! when the missing rank arrives, and then writes into them), and the
//! communicator refuses every later collective ([`CommError::PeerLost`]):
//! the ranks no longer agree on the order of the collectives. Receives that
//! time out leave nothing behind (nothing was posted), so point-to-point
//! messages keep working.

use super::MpiComm;
use crate::{CommError, Result};
use ::mpi::ffi;
use deeprc_core::sync::lock;
use std::{
    os::raw::{c_int, c_void},
    time::{Duration, Instant},
};

/// The `peer` of a collective's [`CommError::Timeout`] and
/// [`CommError::PeerLost`]: MPI does not say which rank is missing.
pub const UNKNOWN_PEER: usize = usize::MAX;

/// Backs empty buffers with a real address: the dangling pointer of an
/// empty slice is `0x1`, which OpenMPI reads as `MPI_IN_PLACE`. MPI never
/// writes to a buffer of zero elements.
static NOTHING: [u64; 1] = [0];

/// A pointer MPI may read `len` bytes from: `p`, or a static one when the
/// buffer is empty.
pub(super) fn send_ptr(p: *const u8, len: usize) -> *const c_void {
    if len == 0 {
        NOTHING.as_ptr().cast()
    } else {
        p.cast()
    }
}

/// A pointer MPI may write `v.len()` bytes (or elements) to; an empty
/// vector gets a real allocation first.
pub(super) fn recv_ptr<T>(v: &mut Vec<T>) -> *mut c_void {
    if v.capacity() == 0 {
        v.reserve(1);
    }
    v.as_mut_ptr().cast()
}

/// Waits between polls: spins (yielding the core) for the first
/// milliseconds, as MPI's own blocking calls do, then sleeps a little
/// between polls so that a long wait does not burn a core.
pub(super) struct Poll {
    start: Instant,
    until: Option<Instant>,
    nap: Duration,
}

/// How long a wait spins before it starts to sleep between polls.
const SPIN: Duration = Duration::from_millis(20);

impl Poll {
    pub(super) fn new(timeout: Duration) -> Self {
        let start = Instant::now();
        Self {
            start,
            until: start.checked_add(timeout),
            nap: Duration::from_micros(5),
        }
    }

    /// Whether the deadline has passed.
    pub(super) fn expired(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() >= u)
    }

    /// How long this wait has lasted.
    pub(super) fn waited(&self) -> Duration {
        self.start.elapsed()
    }

    pub(super) fn snooze(&mut self) {
        if self.start.elapsed() < SPIN {
            std::thread::yield_now();
        } else {
            std::thread::sleep(self.nap);
            self.nap = (self.nap * 2).min(Duration::from_micros(200));
        }
    }
}

impl MpiComm {
    /// Fails if an earlier collective on this communicator timed out.
    pub(super) fn check_usable(&self, op: &'static str) -> Result<()> {
        let broken = lock(&self.inner.broken);
        match broken.as_ref() {
            None => Ok(()),
            Some(why) => Err(CommError::PeerLost {
                op,
                peer: UNKNOWN_PEER,
                reason: format!(
                    "{why}; MPI cannot cancel a collective, so this communicator runs no more \
                     collectives (abort the job with MpiComm::abort, or go on with another \
                     communicator)"
                ),
            }),
        }
    }

    /// Posts a nonblocking MPI call: `start` gets the request to fill in
    /// and returns MPI's error code.
    pub(super) fn start(
        &self,
        op: &'static str,
        what: &str,
        start: impl FnOnce(*mut ffi::MPI_Request) -> c_int,
    ) -> Result<ffi::MPI_Request> {
        // SAFETY: reading a constant of the MPI library.
        let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
        let _e = self.inner.rt.enter(op)?;
        super::p2p::check_rc(start(&mut req), what)?;
        Ok(req)
    }

    /// Waits until the collective `req` completes, at most the timeout.
    /// `keep` owns every buffer (data, counts, displacements) the call
    /// reads or writes and is handed back on completion. On a timeout the
    /// request and `keep` are leaked (MPI may still use the buffers), the
    /// communicator is marked unusable for collectives, and the call fails
    /// with [`CommError::Timeout`].
    pub(super) fn wait<K>(
        &self,
        op: &'static str,
        mut req: ffi::MPI_Request,
        keep: K,
    ) -> Result<K> {
        let mut poll = Poll::new(self.timeout);
        loop {
            let mut done: c_int = 0;
            let tested = match self.inner.rt.enter(op) {
                Ok(_e) => {
                    // SAFETY: `req` is the live request of a call whose
                    // buffers `keep` owns; MPI_Test writes `done` and, once
                    // the call completed, frees the request and sets `req`
                    // to MPI_REQUEST_NULL. The status is not wanted.
                    let rc =
                        unsafe { ffi::MPI_Test(&mut req, &mut done, ffi::RSMPI_STATUS_IGNORE) };
                    super::p2p::check_rc(rc, "MPI_Test")
                }
                Err(e) => Err(e),
            };
            if let Err(e) = tested {
                self.give_up(format!("{op} failed: {e}"), keep);
                return Err(e);
            }
            if done != 0 {
                return Ok(keep);
            }
            if poll.expired() {
                let after = poll.waited();
                self.give_up(
                    format!("an earlier {op} timed out after {after:?} on this communicator"),
                    keep,
                );
                return Err(CommError::Timeout {
                    op,
                    peer: UNKNOWN_PEER,
                    after,
                });
            }
            poll.snooze();
        }
    }

    /// Leaks what a collective that never completed may still use, and
    /// marks the communicator unusable for collectives.
    fn give_up<K>(&self, why: String, keep: K) {
        std::mem::forget(keep);
        let mut broken = lock(&self.inner.broken);
        broken.get_or_insert(why);
    }

    /// A `MPI_Ibarrier` within the timeout.
    pub(super) fn ibarrier(&self, op: &'static str) -> Result<()> {
        self.check_usable(op)?;
        let comm = self.raw();
        // SAFETY: MPI_Ibarrier reads no buffer; `req` is written by MPI.
        let req = self.start(op, "MPI_Ibarrier", |req| unsafe {
            ffi::MPI_Ibarrier(comm, req)
        })?;
        self.wait(op, req, ())
    }
}
