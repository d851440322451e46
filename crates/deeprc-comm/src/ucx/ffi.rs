//! The C shim over UCP (`ucx-shim/shim.c`), declared by hand: a dozen
//! functions with plain C types, and safe wrappers that turn its return
//! codes into [`Started`] and [`UcxStatus`].

use std::ffi::{c_char, c_int, c_long, c_uint, c_void, CStr};

/// The shim's handle of a UCP context and worker.
#[repr(C)]
pub(super) struct Ducx {
    _private: [u8; 0],
}

extern "C" {
    fn ducx_status_string(status: c_int) -> *const c_char;
    fn ducx_open(out: *mut *mut Ducx) -> c_int;
    fn ducx_address(d: *mut Ducx, buf: *mut c_void, cap: usize) -> c_long;
    fn ducx_connect(
        d: *mut Ducx,
        addr: *const c_void,
        peer_errors: c_int,
        failed: *mut c_int,
        ep: *mut *mut c_void,
    ) -> c_int;
    fn ducx_send(
        d: *mut Ducx,
        ep: *mut c_void,
        tag: u64,
        iov: *mut Iov,
        count: usize,
        req: *mut *mut c_void,
    ) -> c_int;
    fn ducx_probe(d: *mut Ducx, tag: *mut u64, len: *mut usize, msg: *mut *mut c_void) -> c_int;
    fn ducx_recv(
        d: *mut Ducx,
        msg: *mut c_void,
        buf: *mut c_void,
        len: usize,
        req: *mut *mut c_void,
    ) -> c_int;
    fn ducx_test(req: *mut c_void) -> c_int;
    fn ducx_cancel(d: *mut Ducx, req: *mut c_void);
    fn ducx_progress(d: *mut Ducx) -> c_uint;
    fn ducx_wait(d: *mut Ducx, timeout_ms: c_int) -> c_int;
    fn ducx_signal(d: *mut Ducx) -> c_int;
    fn ducx_close_ep(d: *mut Ducx, ep: *mut c_void, force: c_int, req: *mut *mut c_void) -> c_int;
    fn ducx_close(d: *mut Ducx);
}

/// One buffer of a message sent as an I/O vector (UCX's `ucp_dt_iov_t`).
#[repr(C)]
#[derive(Debug)]
pub(super) struct Iov {
    pub(super) buffer: *const c_void,
    pub(super) length: usize,
}

impl Iov {
    pub(super) fn of(b: &[u8]) -> Self {
        Self {
            buffer: b.as_ptr().cast(),
            length: b.len(),
        }
    }
}

/// A UCX error status (a negative `ucs_status_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UcxStatus(pub(super) c_int);

impl std::fmt::Display for UcxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: ucs_status_string returns a static NUL-terminated string
        // for every status, known or not.
        let s = unsafe { CStr::from_ptr(ducx_status_string(self.0)) };
        write!(f, "{} (UCX status {})", s.to_string_lossy(), self.0)
    }
}

/// An operation's outcome: done at once, or a request to poll.
pub(super) enum Started {
    Done,
    Pending(Request),
}

/// A UCX request in flight; [`Worker::test`] frees it once complete.
#[derive(Debug)]
pub(super) struct Request(*mut c_void);

fn started(rc: c_int, req: *mut c_void) -> Result<Started, UcxStatus> {
    match rc {
        0 => Ok(Started::Done),
        1 => Ok(Started::Pending(Request(req))),
        e => Err(UcxStatus(e)),
    }
}

/// A rank's UCP context and worker. Every method but [`Waker::signal`]
/// must be called from one thread at a time (the worker is in UCX's
/// single-thread mode): the thread that creates it, then its progress
/// thread, to which it is moved.
#[derive(Debug)]
pub(super) struct Worker {
    d: *mut Ducx,
}

// SAFETY: the worker is used by one thread at a time: the creating thread
// until it moves the worker into the progress thread, then only that one
// (see the type's documentation); UCX's single-thread mode allows a worker
// to change threads between calls.
unsafe impl Send for Worker {}

/// Wakes a worker's progress thread from any thread.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waker(*mut Ducx);

// SAFETY: ucp_worker_signal is safe from any thread (UCX documents it for
// every thread mode), and the worker outlives every Waker: the endpoint
// that holds the Waker joins the progress thread, which closes the worker,
// only in its destructor.
unsafe impl Send for Waker {}
// SAFETY: as for Send: signalling is the only operation and it is
// thread-safe.
unsafe impl Sync for Waker {}

impl Waker {
    pub(super) fn signal(&self) {
        // SAFETY: see the Send impl: the worker is alive and signalling is
        // thread-safe.
        unsafe {
            ducx_signal(self.0);
        }
    }
}

impl Worker {
    pub(super) fn open() -> Result<Self, UcxStatus> {
        let mut d = std::ptr::null_mut();
        // SAFETY: `d` is a valid out-pointer; on success it holds a handle
        // that only ducx_close releases (in Drop).
        match unsafe { ducx_open(&mut d) } {
            0 => Ok(Self { d }),
            e => Err(UcxStatus(e)),
        }
    }

    pub(super) fn waker(&self) -> Waker {
        Waker(self.d)
    }

    /// The worker's address, to publish for peers.
    pub(super) fn address(&self) -> Result<Vec<u8>, UcxStatus> {
        let mut buf = vec![0u8; 64 << 10];
        // SAFETY: the buffer is writable for its length, which is passed.
        let n = unsafe { ducx_address(self.d, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(UcxStatus(n as c_int));
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// An endpoint to the worker whose address is `addr`. With
    /// `peer_errors` UCX detects a failed peer and writes the failure into
    /// `failed` from [`Worker::progress`] (only transports that can, such
    /// as tcp and RDMA, are used then: not shared memory).
    ///
    /// # Safety
    /// `addr` must be a worker address published by [`Worker::address`]
    /// (UCX parses it without a length), and `failed` must stay valid and
    /// unmoved until the endpoint is closed.
    pub(super) unsafe fn connect(
        &self,
        addr: &[u8],
        peer_errors: bool,
        failed: *mut c_int,
    ) -> Result<Endpoint, UcxStatus> {
        let mut ep = std::ptr::null_mut();
        let peer_errors = c_int::from(peer_errors);
        // SAFETY: the caller guarantees `addr` and `failed`; `ep` is a
        // valid out-pointer.
        match unsafe { ducx_connect(self.d, addr.as_ptr().cast(), peer_errors, failed, &mut ep) } {
            0 => Ok(Endpoint(ep)),
            e => Err(UcxStatus(e)),
        }
    }

    /// Sends the buffers `iov` describes as one message tagged `tag`.
    ///
    /// # Safety
    /// `iov` and the buffers it points to must stay valid, unmoved and
    /// unchanged until the send completes: at once ([`Started::Done`]) or
    /// when [`Worker::test`] says so (UCX reads the vector itself, not
    /// only the buffers, while the send is in flight).
    pub(super) unsafe fn send(
        &self,
        ep: &Endpoint,
        tag: u64,
        iov: &mut [Iov],
    ) -> Result<Started, UcxStatus> {
        let mut req = std::ptr::null_mut();
        // SAFETY: the caller keeps the vector and its buffers alive until
        // completion.
        let rc = unsafe { ducx_send(self.d, ep.0, tag, iov.as_mut_ptr(), iov.len(), &mut req) };
        started(rc, req)
    }

    /// The next arrived message: its tag, length and handle.
    pub(super) fn probe(&self) -> Option<(u64, usize, Message)> {
        let (mut tag, mut len, mut msg) = (0u64, 0usize, std::ptr::null_mut());
        // SAFETY: valid out-pointers.
        let found = unsafe { ducx_probe(self.d, &mut tag, &mut len, &mut msg) };
        (found == 1).then_some((tag, len, Message(msg)))
    }

    /// Receives a probed message into `buf`.
    ///
    /// # Safety
    /// `buf` must stay valid and unmoved until the receive completes.
    pub(super) unsafe fn recv(&self, msg: Message, buf: &mut [u8]) -> Result<Started, UcxStatus> {
        let mut req = std::ptr::null_mut();
        // SAFETY: `msg` came from probe and is consumed here; the caller
        // keeps `buf` alive until completion.
        let rc = unsafe { ducx_recv(self.d, msg.0, buf.as_mut_ptr().cast(), buf.len(), &mut req) };
        started(rc, req)
    }

    /// `None` while `req` is in flight; its outcome once complete (the
    /// request is freed then).
    pub(super) fn test(&self, req: &Request) -> Option<Result<(), UcxStatus>> {
        // SAFETY: the request is live: it was returned pending and is
        // tested until complete, then dropped by the caller.
        match unsafe { ducx_test(req.0) } {
            1 => None,
            0 => Some(Ok(())),
            e => Some(Err(UcxStatus(e))),
        }
    }

    /// Asks UCX to cancel `req`; it completes (with an error) later.
    pub(super) fn cancel(&self, req: &Request) {
        // SAFETY: the request is live (see `test`).
        unsafe { ducx_cancel(self.d, req.0) }
    }

    /// Makes progress; the number of events handled.
    pub(super) fn progress(&self) -> u32 {
        // SAFETY: the handle is live.
        unsafe { ducx_progress(self.d) }
    }

    /// Sleeps until an event, a [`Waker::signal`] or the timeout.
    pub(super) fn wait(&self, timeout_ms: i32) {
        // SAFETY: the handle is live.
        unsafe {
            ducx_wait(self.d, timeout_ms);
        }
    }

    /// Starts closing `ep` (flushing its sends unless `force`).
    pub(super) fn close_ep(&self, ep: Endpoint, force: bool) -> Result<Started, UcxStatus> {
        let mut req = std::ptr::null_mut();
        // SAFETY: `ep` is live and consumed here.
        let rc = unsafe { ducx_close_ep(self.d, ep.0, c_int::from(force), &mut req) };
        started(rc, req)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: the handle is live and released only here.
        unsafe { ducx_close(self.d) }
    }
}

/// An endpoint to one peer.
#[derive(Debug)]
pub(super) struct Endpoint(*mut c_void);

// SAFETY: endpoints move with their worker into its progress thread and
// are used only there (see Worker).
unsafe impl Send for Endpoint {}

/// A probed message, to receive.
#[derive(Debug)]
pub(super) struct Message(*mut c_void);
