//! The `ucx` backend: ranks are processes (or threads) that talk over UCX,
//! the library Cylon's fast shuffles run on, through Debian's `libucx-dev`
//! (1.13) and a small C shim (`ucx-shim/shim.c`).
//!
//! - Rendezvous: the same store as the tcp backend (`DEEPRC_STORE`, or
//!   what srun, torchrun or mpirun set, see [`crate::launcher`]); each rank
//!   publishes its UCP worker address there and creates an endpoint to
//!   every other rank. The store's connections are authenticated by the
//!   job token; UCX's own traffic is not (it has no authentication: use it
//!   on a trusted fabric, as MPI over UCX is used).
//! - Point-to-point: UCP tag matching, the tag carrying the sender's rank;
//!   every message is a 16-byte header (context and tag of the
//!   [`Group`] layer) and the body, sent as one I/O vector from the
//!   caller's buffer and received whole into a pooled buffer after a
//!   probe, so a body is never copied on the way in.
//! - Collectives: the same group layer as tcp (dissemination barrier,
//!   pipelined reduce-scatter and all-gather for all-reduce, ...).
//! - Progress: one thread per rank owns the UCP worker (single-thread
//!   mode), posts the sends callers queue, receives every message that
//!   arrives, and sleeps on the worker's event descriptor when idle.
//! - Transports: UCX chooses (shared memory and CMA within a host, tcp or
//!   RDMA between hosts). Each rank publishes its host's identity (host
//!   name and boot id) and its process beside its address, so that
//!   endpoints to peers on other hosts use UCX's peer error handling and
//!   endpoints within the host keep shared memory, which cannot.
//! - Failures: a peer on another host whose endpoint fails (a dead
//!   process, a reset connection), or a peer process on this host that
//!   exits (the progress thread watches it, [`PROCESS_WATCH`]), fails
//!   every pending receive from it ([`CommError::PeerLost`]); one that
//!   hangs fails it after the timeout ([`CommError::Timeout`]); a message
//!   over `max_frame_bytes` is refused before its body is received.
//!
//! `UCX_TLS` and `UCX_NET_DEVICES` choose UCX's transports as usual (for
//! example `UCX_TLS=tcp,self` forces TCP between ranks of one host).
//!
//! ```no_run
//! // In each of N processes started by srun, or with DEEPRC_RANK,
//! // DEEPRC_WORLD_SIZE, DEEPRC_STORE and DEEPRC_TOKEN set:
//! use deeprc_comm::{ucx::UcxComm, CommunicatorExt, ReduceOp};
//! let comm = UcxComm::from_env()?;
//! let total = comm.all_reduce_scalar(1u32, ReduceOp::Sum)?;
//! # Ok::<(), deeprc_comm::CommError>(())
//! ```

mod ffi;
mod process;
mod progress;

pub use process::PROCESS_WATCH;

use crate::{
    group::{Group, Transport},
    mailbox::{Key, Mailbox, Payload},
    pool::{BufferPool, POOL_BYTES},
    tcp::{StoreSpec, TcpStoreServer},
    AnyBox, Backend, CommConfig, CommError, Communicator, DType, ReduceOp, Result, Tag,
};
use bytes::Bytes;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How to create a [`UcxComm`].
#[derive(Debug, Clone)]
pub struct UcxOptions {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// The rendezvous store.
    pub store: StoreSpec,
    /// The job token that the store's connections prove.
    pub token: String,
    /// Whether peers on this host, too, use UCX's peer error handling
    /// (`DEEPRC_UCX_PEER_ERRORS=1`; default off). UCX 1.13's shared memory
    /// transports cannot detect a failed peer, so with it on, ranks of one
    /// host talk over tcp loopback. Off, they use shared memory and the
    /// progress thread watches their processes instead (a peer process
    /// that exits fails receives from it within [`PROCESS_WATCH`]). Peers
    /// on other hosts always use peer error handling.
    pub peer_errors_on_host: bool,
    /// Timeouts and limits.
    pub config: CommConfig,
}

impl UcxOptions {
    /// Options for `rank` of `size` with a store and a token.
    pub fn new(rank: usize, size: usize, store: StoreSpec, token: impl Into<String>) -> Self {
        Self {
            rank,
            size,
            store,
            token: token.into(),
            peer_errors_on_host: false,
            config: CommConfig::default(),
        }
    }

    /// The rank's place from
    /// [`Placement::from_env`](crate::launcher::Placement::from_env) and
    /// the [`CommConfig`] variables.
    pub fn from_env() -> Result<Self> {
        let p = crate::launcher::Placement::from_env()?;
        let mut o = Self::new(p.rank, p.size, StoreSpec::parse(&p.store), p.token)
            .with_config(CommConfig::from_env()?);
        if let Some(on) = crate::config::env_parse::<u8>("DEEPRC_UCX_PEER_ERRORS")? {
            o.peer_errors_on_host = on != 0;
        }
        Ok(o)
    }

    /// Sets [`UcxOptions::peer_errors_on_host`].
    pub fn with_peer_errors_on_host(mut self, on: bool) -> Self {
        self.peer_errors_on_host = on;
        self
    }

    /// Sets the configuration.
    pub fn with_config(mut self, config: CommConfig) -> Self {
        self.config = config;
        self
    }
}

/// The UCX error behind a failed call, as a [`CommError`].
fn ucx_error(what: &str, status: ffi::UcxStatus) -> CommError {
    CommError::Backend {
        backend: Backend::Ucx,
        message: format!("{what}: {status}"),
    }
}

/// A message queued for the progress thread.
struct Outgoing {
    dst: usize,
    head: [u8; 16],
    body: Bytes,
}

/// One rank's end: the mailbox the progress thread fills, and the queue it
/// drains.
struct Endpoint {
    rank: usize,
    size: usize,
    config: CommConfig,
    mailbox: Arc<Mailbox>,
    pool: Arc<BufferPool>,
    /// `Sender` is `Sync`: callers on any thread queue without a lock.
    outgoing: mpsc::Sender<Outgoing>,
    waker: ffi::Waker,
    closing: Arc<AtomicBool>,
    progress: Option<JoinHandle<()>>,
    _store_server: Option<TcpStoreServer>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UcxEndpoint")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        self.waker.signal();
        if let Some(h) = self.progress.take() {
            let _ = h.join();
        }
    }
}

impl Transport for Endpoint {
    fn backend(&self) -> Backend {
        Backend::Ucx
    }

    fn world_rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn supports_objects(&self) -> bool {
        false
    }

    fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    fn send(&self, op: &'static str, dst: usize, key: Key, payload: Payload) -> Result<()> {
        let body = payload.into_bytes(op)?;
        if dst == self.rank {
            self.mailbox.push(dst, key, Payload::Bytes(body));
            return Ok(());
        }
        if let Some(reason) = self.mailbox.lost_reason(dst) {
            return Err(CommError::PeerLost {
                op,
                peer: dst,
                reason,
            });
        }
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&key.ctx.to_le_bytes());
        head[8..].copy_from_slice(&key.tag.to_le_bytes());
        let queued = self.outgoing.send(Outgoing { dst, head, body });
        if queued.is_err() {
            return Err(CommError::PeerLost {
                op,
                peer: dst,
                reason: "the UCX progress thread has stopped".into(),
            });
        }
        self.waker.signal();
        Ok(())
    }

    fn recv(&self, op: &'static str, src: usize, key: Key) -> Result<Payload> {
        self.mailbox.pop(op, src, key, self.config.timeout)
    }
}

/// A communicator whose ranks talk over UCX.
#[derive(Debug)]
pub struct UcxComm {
    group: Group,
    setup: Duration,
}

impl UcxComm {
    /// Creates the communicator from the environment (see
    /// [`UcxOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::connect(UcxOptions::from_env()?)
    }

    /// Creates the communicator: rendezvous through the store, an endpoint
    /// to every peer, and a barrier. Fails after `connect_timeout` when a
    /// rank does not appear.
    pub fn connect(o: UcxOptions) -> Result<Self> {
        let start = Instant::now();
        CommError::check_world(o.rank, o.size)?;
        if o.token.is_empty() {
            return Err(CommError::config("DEEPRC_TOKEN", "the job token is empty"));
        }
        let (store, store_server) = crate::tcp::open_store(&o.store, o.rank, &o.token, &o.config)?;
        let worker =
            ffi::Worker::open().map_err(|e| ucx_error("creating a UCP context and worker", e))?;
        let address = worker
            .address()
            .map_err(|e| ucx_error("reading the worker address", e))?;
        store.set(&format!("ucx/{}", o.rank), &address)?;
        let me = process::Identity::this();
        store.set(&format!("ucx/{}/process", o.rank), me.encode().as_bytes())?;
        let mut watch = Vec::with_capacity(o.size);
        let mut peers = Vec::with_capacity(o.size);
        // Written by UCX (from progress) when an endpoint fails; the boxed
        // slice's heap memory does not move when the box does.
        let failed: Box<[AtomicI32]> = (0..o.size).map(|_| AtomicI32::new(0)).collect();
        for peer in 0..o.size {
            if peer == o.rank {
                peers.push(None);
                watch.push(None);
                continue;
            }
            let remaining = o.config.connect_timeout.saturating_sub(start.elapsed());
            let addr = store.get(&format!("ucx/{peer}"), remaining)?;
            let remaining = o.config.connect_timeout.saturating_sub(start.elapsed());
            let theirs = store.get(&format!("ucx/{peer}/process"), remaining)?;
            let theirs = process::Identity::decode(&String::from_utf8_lossy(&theirs));
            let same_host = theirs.as_ref().is_some_and(|t| t.host == me.host);
            let peer_errors = !same_host || o.peer_errors_on_host;
            // A peer process on this host, reached over shared memory, is
            // watched instead (not one in this very process).
            watch.push(theirs.filter(|t| !peer_errors && t.pid != me.pid));
            let flag = failed[peer].as_ptr();
            // SAFETY: `addr` is what rank `peer` published from
            // Worker::address; `flag` points into `failed`, whose heap
            // slice moves into the progress thread with the endpoints and
            // outlives them there (the endpoints are closed before it is
            // dropped).
            let ep = unsafe { worker.connect(&addr, peer_errors, flag) }
                .map_err(|e| ucx_error(&format!("creating an endpoint to rank {peer}"), e))?;
            peers.push(Some(ep));
        }
        let mailbox = Arc::new(Mailbox::default());
        let pool = BufferPool::new(POOL_BYTES);
        let closing = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let waker = worker.waker();
        let progress = progress::spawn(progress::State {
            rank: o.rank,
            worker,
            peers,
            failed,
            watch,
            outgoing: rx,
            mailbox: Arc::clone(&mailbox),
            pool: Arc::clone(&pool),
            closing: Arc::clone(&closing),
            max_frame_bytes: o.config.max_frame_bytes,
        })?;
        let ep: Arc<dyn Transport> = Arc::new(Endpoint {
            rank: o.rank,
            size: o.size,
            config: o.config.clone(),
            mailbox,
            pool,
            outgoing: tx,
            waker,
            closing,
            progress: Some(progress),
            _store_server: store_server,
        });
        let comm = UcxComm {
            group: Group::world(ep),
            setup: Duration::ZERO,
        };
        // Nobody returns before everybody is connected.
        comm.group.barrier()?;
        Ok(UcxComm {
            setup: start.elapsed(),
            ..comm
        })
    }

    /// How long creating this communicator took.
    pub fn setup_time(&self) -> Duration {
        self.setup
    }
}

crate::delegate_communicator!(UcxComm);
