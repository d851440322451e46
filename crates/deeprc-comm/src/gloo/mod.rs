//! The `gloo` backend: Facebook's Gloo collectives library (Debian's
//! `libgloo-dev`) through a small C++ shim built with `cxx`.
//!
//! Rendezvous works exactly as for [`tcp`](crate::tcp): every rank reads
//! `DEEPRC_RANK`, `DEEPRC_WORLD_SIZE`, `DEEPRC_STORE` (a `host:port` served
//! by rank 0, or a shared directory) and `DEEPRC_TOKEN`; Gloo's
//! `rendezvous::Context` then builds a full mesh over Gloo's TCP transport,
//! bound to loopback unless `DEEPRC_BIND` (or `DEEPRC_ADVERTISE`) names
//! another address. Store keys live under `deeprc-gloo/<job>/`, where
//! `<job>` is a hash of the token, so they never meet tcp's keys or another
//! job's. Ranks may also be threads of one process sharing a [`HashStore`].
//!
//! How each operation maps onto Gloo:
//! - barrier, broadcast, all-gather (`allgatherv`), all-to-all (`alltoallv`)
//!   are Gloo's algorithms; lengths travel first through Gloo's fixed-size
//!   `broadcast` / `allgather` / `alltoall`, so ranks never disagree on a
//!   buffer size;
//! - gather is Gloo's direct gather with a byte count per rank;
//! - all-reduce of integers is Gloo's ring `allreduce` (wrapping arithmetic);
//!   all-reduce of floats is a reduce-scatter through `alltoallv`, reduced
//!   locally in rank order, then `allgatherv`: every rank gets the same bits,
//!   equal to a reduction in rank order (a ring would sum in a different
//!   order on each chunk);
//! - send / recv use Gloo's unbound buffers: a 16-byte header (tag, length)
//!   then the payload; a receiver thread per communicator takes every
//!   incoming message into a mailbox, so a send never waits for the
//!   receiver to call `recv`;
//! - split gathers `(color, key)` over the parent, then connects a new Gloo
//!   context through a `PrefixStore` whose prefix is unique per (parent,
//!   split sequence number, color), sharing the parent's transport device.
//!
//! # Security: Gloo's own connections are not authenticated
//!
//! Only the rendezvous is authenticated: a TCP store (`host:port`) admits
//! clients that prove the job token, and a directory store is owner-only.
//! The mesh Gloo then builds between the ranks is Gloo's own TCP transport,
//! which Deep RC cannot reach into: it accepts any connection to its ports
//! and reads what arrives as payload. Anyone who can reach those ports (the
//! addresses are in the store) can inject or read collective data. That is
//! why Gloo is opt-in twice: the `gloo` cargo feature, then choosing it
//! (`GlooComm::connect`, or `DEEPRC_BACKEND=gloo`); the first communicator
//! of a process says so once with `tracing::warn!`. Use it only on a
//! private network (the default binds to loopback); use `tcp` elsewhere, whose
//! every connection is authenticated both ways.
//!
//! Failures: Gloo's exceptions arrive as errors, never as aborts. Gloo
//! reports a timeout as [`CommError::Timeout`], a closed or reset connection
//! as [`CommError::PeerLost`]; in a collective Gloo does not say which peer
//! failed, and those errors name [`UNKNOWN_PEER`]. A timed-out or failed
//! collective closes the whole Gloo context (Gloo's design): the
//! communicator must then be dropped.
//!
//! ```no_run
//! // Started as N processes with DEEPRC_RANK, DEEPRC_WORLD_SIZE,
//! // DEEPRC_STORE and DEEPRC_TOKEN set (e.g. by deeprc-pilot).
//! use deeprc_comm::{gloo::GlooComm, CommunicatorExt, ReduceOp};
//! let comm = GlooComm::from_env()?;
//! let total = comm.all_reduce_scalar(1u32, ReduceOp::Sum)?;
//! # Ok::<(), deeprc_comm::CommError>(())
//! ```

mod ffi;

use crate::{
    communicator::{check_elements, reduce_bytes},
    config::env_parse,
    mailbox::{Key, Mailbox, Payload},
    tcp::{FileStore, Store, StoreSpec, TcpStore, TcpStoreServer},
    Backend, CommConfig, CommError, Communicator, DType, ReduceOp, Result, Tag,
};
use bytes::Bytes;
use ffi::{bridge, StoreBridge};
use std::{
    fmt,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// The rank named by [`CommError::Timeout`] and [`CommError::PeerLost`] when
/// Gloo does not say which peer failed (collectives).
pub const UNKNOWN_PEER: usize = usize::MAX;

/// An in-process rendezvous store (Gloo's `HashStore`) for ranks that are
/// threads of one process. Clones share the store.
#[derive(Clone)]
pub struct HashStore(Arc<StoreHandle>);

impl HashStore {
    /// A new, empty store.
    pub fn new() -> Self {
        HashStore(Arc::new(StoreHandle(bridge::hash_store())))
    }
}

impl Default for HashStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HashStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashStore")
    }
}

/// Where ranks of a [`GlooComm`] meet.
#[derive(Debug, Clone)]
pub enum GlooStore {
    /// The same stores as the tcp backend (`DEEPRC_STORE`): a TCP store
    /// served by rank 0, or a shared directory.
    Spec(StoreSpec),
    /// An in-process store, for ranks that are threads.
    InProcess(HashStore),
}

impl From<StoreSpec> for GlooStore {
    fn from(s: StoreSpec) -> Self {
        GlooStore::Spec(s)
    }
}

impl From<HashStore> for GlooStore {
    fn from(s: HashStore) -> Self {
        GlooStore::InProcess(s)
    }
}

/// How to create a [`GlooComm`].
#[derive(Debug, Clone)]
pub struct GlooOptions {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// The rendezvous store.
    pub store: GlooStore,
    /// The per-job secret: authenticates the TCP store and namespaces keys.
    pub token: String,
    /// The address or host name Gloo's device binds to and advertises to
    /// peers (default `127.0.0.1`).
    pub hostname: String,
    /// Timeouts: `timeout` for every operation, `connect_timeout` for the
    /// rendezvous; `max_frame_bytes` bounds incoming messages.
    pub config: CommConfig,
}

impl GlooOptions {
    /// Options for `rank` of `size` with a store and a token; loopback.
    pub fn new(
        rank: usize,
        size: usize,
        store: impl Into<GlooStore>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            rank,
            size,
            store: store.into(),
            token: token.into(),
            hostname: "127.0.0.1".into(),
            config: CommConfig::default(),
        }
    }

    /// The rank's place from
    /// [`Placement::from_env`](crate::launcher::Placement::from_env)
    /// (`DEEPRC_*`, or what srun, torchrun or mpirun set), and optionally
    /// `DEEPRC_BIND` (an address to bind), `DEEPRC_ADVERTISE` (a host name,
    /// required when `DEEPRC_BIND` is a wildcard) and the [`CommConfig`]
    /// variables. Without either, a rank advertises the address of the
    /// interface that routes to the store.
    pub fn from_env() -> Result<Self> {
        let p = crate::launcher::Placement::from_env()?;
        let mut o = Self::new(p.rank, p.size, StoreSpec::parse(&p.store), p.token);
        let bind: Option<IpAddr> = env_parse("DEEPRC_BIND")?;
        let advertise: Option<String> = env_parse("DEEPRC_ADVERTISE")?;
        match (bind, advertise) {
            (Some(b), _) if !b.is_unspecified() => o.hostname = b.to_string(),
            (_, Some(host)) => o.hostname = host,
            (Some(_), None) => {
                return Err(CommError::config(
                    "DEEPRC_ADVERTISE",
                    "must be set when DEEPRC_BIND is a wildcard address",
                ))
            }
            (None, None) => o.hostname = crate::launcher::route_to(&p.store)?.to_string(),
        }
        o.config = CommConfig::from_env()?;
        Ok(o)
    }

    /// Sets the configuration.
    pub fn with_config(mut self, config: CommConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the address or host name to bind and advertise.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }
}

/// A C++ store, owned by Rust.
struct StoreHandle(cxx::UniquePtr<bridge::GStore>);

/// What a rank's communicator and all its splits share.
struct Shared {
    job: u64,
    config: CommConfig,
    store: Arc<StoreHandle>,
    store_errors: Arc<Mutex<Option<CommError>>>,
    device: cxx::UniquePtr<bridge::GDevice>,
    _server: Option<TcpStoreServer>,
}

/// One Gloo context and the state around it.
struct Inner {
    ctx: cxx::UniquePtr<bridge::GCtx>,
    rank: usize,
    size: usize,
    timeout: Duration,
    max_frame_bytes: u64,
    collective: Mutex<()>,
    sending: Mutex<()>,
    mailbox: Mailbox,
}

/// A communicator over Gloo: Gloo's collectives on a TCP full mesh.
pub struct GlooComm {
    inner: Arc<Inner>,
    shared: Arc<Shared>,
    prefix: String,
    splits: AtomicU64,
    receiver: Option<JoinHandle<()>>,
    setup: Duration,
}

impl fmt::Debug for GlooComm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlooComm")
            .field("rank", &self.inner.rank)
            .field("size", &self.inner.size)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

use crate::tcp::job_hash;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

use deeprc_core::sync::lock;

fn u64s(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn le_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Cuts one received buffer into per-rank parts without copying.
fn cut(buf: Vec<u8>, lens: &[u64]) -> Vec<Bytes> {
    let all = Bytes::from(buf);
    let mut at = 0;
    lens.iter()
        .map(|&l| {
            let part = all.slice(at..at + l as usize);
            at += l as usize;
            part
        })
        .collect()
}

fn dtype_code(d: DType) -> u8 {
    match d {
        DType::U8 => 0,
        DType::I8 => 1,
        DType::U16 => 2,
        DType::I16 => 3,
        DType::U32 => 4,
        DType::I32 => 5,
        DType::U64 => 6,
        DType::I64 => 7,
        DType::F32 => 8,
        DType::F64 => 9,
    }
}

fn op_code(op: ReduceOp) -> u8 {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Min => 1,
        ReduceOp::Max => 2,
        ReduceOp::Prod => 3,
    }
}

impl Inner {
    /// Turns a Gloo exception into a typed error.
    fn error(&self, op: &'static str, peer: Option<usize>, e: cxx::Exception) -> CommError {
        let message = e.what().to_string();
        let lower = message.to_ascii_lowercase();
        let peer = peer.unwrap_or(UNKNOWN_PEER);
        if [
            "closed by peer",
            "socket closed",
            "connection reset",
            "read error",
            "write error",
        ]
        .iter()
        .any(|p| lower.contains(p))
        {
            CommError::PeerLost {
                op,
                peer,
                reason: message,
            }
        } else if lower.contains("timed out") || lower.contains("timeout") {
            CommError::Timeout {
                op,
                peer,
                after: self.timeout,
            }
        } else {
            CommError::Backend {
                backend: Backend::Gloo,
                message,
            }
        }
    }

    fn check_rank(&self, r: usize) -> Result<i32> {
        if r < self.size {
            Ok(r as i32)
        } else {
            Err(CommError::InvalidRank {
                rank: r,
                size: self.size,
            })
        }
    }

    fn check_len(&self, from: usize, len: u64) -> Result<()> {
        if len > self.max_frame_bytes {
            return Err(CommError::FrameTooLarge {
                len,
                limit: self.max_frame_bytes,
                from: format!("gloo rank {from}"),
            });
        }
        Ok(())
    }

    /// All-gather of one fixed-size record per rank (Gloo's allgather).
    fn allgather_fixed(&self, op: &'static str, mine: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; mine.len() * self.size];
        self.ctx
            .allgather(mine, &mut out)
            .map_err(|e| self.error(op, None, e))?;
        Ok(out)
    }

    /// The receiver thread: takes every incoming message into the mailbox
    /// until the communicator is dropped.
    fn receive_loop(&self) {
        let mut refused = vec![false; self.size];
        let fail_all = |reason: String| {
            for r in (0..self.size).filter(|&r| r != self.rank) {
                self.mailbox.mark_lost(r, reason.clone());
            }
        };
        loop {
            let h = match self.ctx.p2p_wait_header() {
                Ok(h) if h.aborted => return,
                Ok(h) => h,
                Err(e) => return fail_all(format!("gloo receiver stopped: {}", e.what())),
            };
            let Ok(src) = usize::try_from(h.src) else {
                continue;
            };
            if src >= self.size || refused[src] {
                // A refused peer's payloads can no longer be matched.
                continue;
            }
            if let Err(e) = self.check_len(src, h.len) {
                refused[src] = true;
                self.mailbox.mark_lost(src, e.to_string());
                continue;
            }
            let mut data = vec![0u8; h.len as usize];
            if !data.is_empty() {
                match self
                    .ctx
                    .p2p_recv_data(src as i32, &mut data, millis(self.timeout))
                {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        return fail_all(format!(
                            "gloo receiver stopped in a message from rank {src}: {}",
                            e.what()
                        ))
                    }
                }
            }
            let key = Key { ctx: 0, tag: h.tag };
            self.mailbox
                .push(src, key, Payload::Bytes(Bytes::from(data)));
        }
    }
}

/// The text of the warning [`GlooComm::connect`] logs once per process.
pub const UNAUTHENTICATED_WARNING: &str =
    "deeprc-comm gloo: Gloo's own connections between ranks are \
     NOT authenticated (only the rendezvous store is): anyone who can reach the ranks' ports can \
     inject or read collective data. Use gloo only on a private network, or the tcp backend, whose \
     connections are authenticated.";

/// Logs [`UNAUTHENTICATED_WARNING`] the first time a process creates a
/// Gloo communicator.
fn warn_unauthenticated(hostname: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::warn!(hostname, "{UNAUTHENTICATED_WARNING}"));
}

impl GlooComm {
    /// Creates the communicator from the `DEEPRC_*` environment variables
    /// (see [`GlooOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::connect(GlooOptions::from_env()?)
    }

    /// Creates the communicator: rendezvous through the store, Gloo's full
    /// mesh, then a barrier. Fails after `connect_timeout` if a rank is
    /// missing.
    ///
    /// Gloo's own connections are not authenticated (see the module docs):
    /// the first call of a process logs a warning saying so.
    pub fn connect(o: GlooOptions) -> Result<Self> {
        let start = Instant::now();
        warn_unauthenticated(&o.hostname);
        CommError::check_world(o.rank, o.size)?;
        if i32::try_from(o.size).is_err() {
            return Err(CommError::invalid("gloo connect", "more than 2^31 ranks"));
        }
        if o.token.is_empty() {
            return Err(CommError::config("DEEPRC_TOKEN", "the job token is empty"));
        }
        let store_errors = Arc::new(Mutex::new(None));
        let (store, server) = match &o.store {
            GlooStore::InProcess(h) => (Arc::clone(&h.0), None),
            GlooStore::Spec(spec) => {
                let (rust_store, server): (Arc<dyn Store>, _) = match spec {
                    StoreSpec::Dir(d) => (Arc::new(FileStore::new(d, &o.token)?), None),
                    StoreSpec::Tcp(addr) => {
                        let server = if o.rank == 0 {
                            Some(TcpStoreServer::start(addr, &o.token)?)
                        } else {
                            None
                        };
                        let client = TcpStore::connect(addr, &o.token, o.config.connect_timeout)?;
                        (Arc::new(client), server)
                    }
                };
                let bridge = Box::new(StoreBridge {
                    store: rust_store,
                    last_error: Arc::clone(&store_errors),
                });
                let handle = bridge::bridge_store(bridge, millis(o.config.connect_timeout));
                (Arc::new(StoreHandle(handle)), server)
            }
        };
        let device = bridge::tcp_device(&o.hostname).map_err(|e| CommError::Backend {
            backend: Backend::Gloo,
            message: format!("creating a TCP device on {:?}: {}", o.hostname, e.what()),
        })?;
        let shared = Arc::new(Shared {
            job: job_hash(&o.token),
            config: o.config.clone(),
            store,
            store_errors,
            device,
            _server: server,
        });
        let mut comm = Self::attach(shared, "w".into(), o.rank, o.size)?;
        comm.setup = start.elapsed();
        Ok(comm)
    }

    /// Connects a context for `rank` of `size` under `prefix`.
    fn attach(shared: Arc<Shared>, prefix: String, rank: usize, size: usize) -> Result<Self> {
        let start = Instant::now();
        let full = format!("deeprc-gloo/{:016x}/{prefix}", shared.job);
        let cfg = &shared.config;
        let ctx = bridge::connect(
            &shared.store.0,
            &full,
            &shared.device,
            rank as i32,
            size as i32,
            millis(cfg.connect_timeout),
            millis(cfg.timeout),
        )
        .map_err(|e| {
            let kept = lock(&shared.store_errors).take();
            kept.unwrap_or_else(|| {
                let message = e.what().to_string();
                if message.to_ascii_lowercase().contains("timeout") {
                    CommError::Timeout {
                        op: "gloo connect",
                        peer: UNKNOWN_PEER,
                        after: cfg.connect_timeout,
                    }
                } else {
                    CommError::Backend {
                        backend: Backend::Gloo,
                        message,
                    }
                }
            })
        })?;
        let inner = Arc::new(Inner {
            ctx,
            rank,
            size,
            timeout: cfg.timeout,
            max_frame_bytes: cfg.max_frame_bytes,
            collective: Mutex::new(()),
            sending: Mutex::new(()),
            mailbox: Mailbox::default(),
        });
        let receiver = if size > 1 {
            let inner2 = Arc::clone(&inner);
            let handle = thread::Builder::new()
                .name(format!("deeprc-gloo-recv-{rank}"))
                .spawn(move || inner2.receive_loop())
                .map_err(|e| CommError::io("spawning the gloo receiver", e))?;
            Some(handle)
        } else {
            None
        };
        let comm = GlooComm {
            inner,
            shared,
            prefix,
            splits: AtomicU64::new(0),
            receiver,
            setup: Duration::ZERO,
        };
        // Nobody returns before everybody is connected.
        let mut comm = comm;
        comm.barrier()?;
        comm.setup = start.elapsed();
        Ok(comm)
    }

    /// How long creating this communicator took.
    pub fn setup_time(&self) -> Duration {
        self.setup
    }

    /// The store prefix of this communicator's context: `w` for the world,
    /// then `.<split sequence number>-<color>` per split (replaced by a hash
    /// of it, `h<16 hex digits>`, once longer than 96 bytes).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn child_prefix(&self, seq: u64, color: u32) -> String {
        let p = format!("{}.{seq}-{color}", self.prefix);
        if p.len() <= 96 {
            p
        } else {
            // Deeply nested splits: keep store keys short.
            format!("h{:016x}", job_hash(&p))
        }
    }

    /// Floats: reduce-scatter (alltoallv), rank-order reduction, allgatherv.
    fn all_reduce_rank_order(&self, data: &mut [u8], dtype: DType, op: ReduceOp) -> Result<()> {
        let inner = &self.inner;
        let n = inner.size;
        let esize = dtype.size();
        let elems = data.len() / esize;
        let bound = |i: usize| elems * i / n * esize;
        let counts: Vec<u64> = (0..n).map(|j| (bound(j + 1) - bound(j)) as u64).collect();
        let mine = counts[inner.rank] as usize;
        let mut parts = vec![0u8; mine * n];
        inner
            .ctx
            .alltoallv(data, &counts, &mut parts, &vec![mine as u64; n])
            .map_err(|e| inner.error("all_reduce", None, e))?;
        let (acc, rest) = parts.split_at_mut(mine);
        for part in rest.chunks_exact(mine.max(1)) {
            reduce_bytes(acc, part, dtype, op);
        }
        inner
            .ctx
            .allgatherv(acc, data, &counts)
            .map_err(|e| inner.error("all_reduce", None, e))
    }
}

impl Drop for GlooComm {
    fn drop(&mut self) {
        self.inner.ctx.p2p_abort();
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
    }
}

impl Communicator for GlooComm {
    fn rank(&self) -> usize {
        self.inner.rank
    }

    fn size(&self) -> usize {
        self.inner.size
    }

    fn backend(&self) -> Backend {
        Backend::Gloo
    }

    fn send(&self, dest: usize, tag: Tag, data: Bytes) -> Result<()> {
        let inner = &self.inner;
        let dst = inner.check_rank(dest)?;
        let key = Key {
            ctx: 0,
            tag: u64::from(tag),
        };
        if dest == inner.rank {
            inner.mailbox.push(dest, key, Payload::Bytes(data));
            return Ok(());
        }
        let header = le_bytes(&[u64::from(tag), data.len() as u64]);
        let _g = lock(&inner.sending);
        inner
            .ctx
            .p2p_send(dst, &header, &data, millis(inner.timeout))
            .map_err(|e| inner.error("send", Some(dest), e))
    }

    fn recv(&self, source: usize, tag: Tag) -> Result<Bytes> {
        let inner = &self.inner;
        inner.check_rank(source)?;
        let key = Key {
            ctx: 0,
            tag: u64::from(tag),
        };
        inner
            .mailbox
            .pop("recv", source, key, inner.timeout)?
            .into_bytes("recv")
    }

    fn barrier(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.size == 1 {
            return Ok(());
        }
        let _g = lock(&inner.collective);
        inner
            .ctx
            .barrier()
            .map_err(|e| inner.error("barrier", None, e))
    }

    fn broadcast(&self, root: usize, data: Bytes) -> Result<Bytes> {
        let inner = &self.inner;
        let root_i = inner.check_rank(root)?;
        if inner.size == 1 {
            return Ok(data);
        }
        let is_root = inner.rank == root;
        let _g = lock(&inner.collective);
        let mut len = (if is_root { data.len() as u64 } else { 0 }).to_le_bytes();
        inner
            .ctx
            .broadcast_recv(root_i, &mut len)
            .map_err(|e| inner.error("broadcast", None, e))?;
        let len = u64::from_le_bytes(len);
        if len == 0 {
            return Ok(Bytes::new());
        }
        if is_root {
            inner
                .ctx
                .broadcast_root(root_i, &data)
                .map_err(|e| inner.error("broadcast", None, e))?;
            return Ok(data);
        }
        inner.check_len(root, len)?;
        let mut out = vec![0u8; len as usize];
        inner
            .ctx
            .broadcast_recv(root_i, &mut out)
            .map_err(|e| inner.error("broadcast", None, e))?;
        Ok(Bytes::from(out))
    }

    fn gather(&self, root: usize, data: Bytes) -> Result<Option<Vec<Bytes>>> {
        let inner = &self.inner;
        let root_i = inner.check_rank(root)?;
        if inner.size == 1 {
            return Ok(Some(vec![data]));
        }
        let is_root = inner.rank == root;
        let _g = lock(&inner.collective);
        let mine = (data.len() as u64).to_le_bytes();
        let mut lens = vec![0u8; if is_root { 8 * inner.size } else { 0 }];
        inner
            .ctx
            .gather(root_i, &mine, &mut lens)
            .map_err(|e| inner.error("gather", None, e))?;
        let lens = u64s(&lens);
        for (r, &l) in lens.iter().enumerate() {
            inner.check_len(r, l)?;
        }
        let mut out = vec![0u8; lens.iter().sum::<u64>() as usize];
        inner
            .ctx
            .gatherv(root_i, &data, &mut out, &lens)
            .map_err(|e| inner.error("gather", None, e))?;
        Ok(is_root.then(|| cut(out, &lens)))
    }

    fn all_gather(&self, data: Bytes) -> Result<Vec<Bytes>> {
        let inner = &self.inner;
        if inner.size == 1 {
            return Ok(vec![data]);
        }
        let _g = lock(&inner.collective);
        let lens = u64s(&inner.allgather_fixed("all_gather", &(data.len() as u64).to_le_bytes())?);
        for (r, &l) in lens.iter().enumerate() {
            inner.check_len(r, l)?;
        }
        let mut out = vec![0u8; lens.iter().sum::<u64>() as usize];
        inner
            .ctx
            .allgatherv(&data, &mut out, &lens)
            .map_err(|e| inner.error("all_gather", None, e))?;
        Ok(cut(out, &lens))
    }

    fn all_to_all_v(&self, parts: Vec<Bytes>) -> Result<Vec<Bytes>> {
        let inner = &self.inner;
        if parts.len() != inner.size {
            return Err(CommError::invalid(
                "all_to_all_v",
                format!("{} parts for {} ranks", parts.len(), inner.size),
            ));
        }
        if inner.size == 1 {
            return Ok(parts);
        }
        let _g = lock(&inner.collective);
        let send_lens: Vec<u64> = parts.iter().map(|p| p.len() as u64).collect();
        let mut recv_lens = vec![0u8; 8 * inner.size];
        inner
            .ctx
            .alltoall(&le_bytes(&send_lens), &mut recv_lens)
            .map_err(|e| inner.error("all_to_all_v", None, e))?;
        let recv_lens = u64s(&recv_lens);
        for (r, &l) in recv_lens.iter().enumerate() {
            inner.check_len(r, l)?;
        }
        let input: Vec<u8> = parts.concat();
        drop(parts);
        let mut out = vec![0u8; recv_lens.iter().sum::<u64>() as usize];
        inner
            .ctx
            .alltoallv(&input, &send_lens, &mut out, &recv_lens)
            .map_err(|e| inner.error("all_to_all_v", None, e))?;
        Ok(cut(out, &recv_lens))
    }

    fn all_reduce_raw(&self, data: &mut [u8], dtype: DType, op: ReduceOp) -> Result<()> {
        check_elements("all_reduce", data, dtype)?;
        let inner = &self.inner;
        if inner.size == 1 {
            return Ok(());
        }
        let _g = lock(&inner.collective);
        // Agree on length, type and operator first: Gloo cannot survive
        // ranks that disagree on a buffer size.
        let mine = [
            data.len() as u64,
            u64::from(dtype_code(dtype)),
            u64::from(op_code(op)),
        ];
        let all = u64s(&inner.allgather_fixed("all_reduce", &le_bytes(&mine))?);
        for (r, rec) in all.chunks_exact(3).enumerate() {
            if rec[0] != mine[0] {
                return Err(CommError::SizeMismatch {
                    op: "all_reduce",
                    peer: r,
                    expected: data.len(),
                    actual: rec[0] as usize,
                });
            }
            if rec[1..] != mine[1..] {
                return Err(CommError::invalid(
                    "all_reduce",
                    format!("rank {r} reduces another element type or operator"),
                ));
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        match dtype {
            DType::F32 | DType::F64 => self.all_reduce_rank_order(data, dtype, op),
            _ => inner
                .ctx
                .allreduce_int(data, dtype_code(dtype), op_code(op))
                .map_err(|e| inner.error("all_reduce", None, e)),
        }
    }

    fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Arc<dyn Communicator>>> {
        let inner = &self.inner;
        let seq = self.splits.fetch_add(1, Ordering::SeqCst);
        let mine: [i64; 2] = [color.map_or(-1, i64::from), key];
        let mine_bytes: Vec<u8> = mine.iter().flat_map(|x| x.to_le_bytes()).collect();
        let all = if inner.size == 1 {
            mine_bytes
        } else {
            let _g = lock(&inner.collective);
            inner.allgather_fixed("split", &mine_bytes)?
        };
        let Some(color) = color else {
            return Ok(None);
        };
        let mut chosen: Vec<(i64, usize)> = all
            .chunks_exact(16)
            .enumerate()
            .filter_map(|(r, rec)| {
                let c = i64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
                let k = i64::from_le_bytes(rec[8..].try_into().expect("8 bytes"));
                (c == i64::from(color)).then_some((k, r))
            })
            .collect();
        chosen.sort_unstable();
        let rank = chosen
            .iter()
            .position(|&(_, r)| r == inner.rank)
            .expect("this rank chose the color");
        let prefix = self.child_prefix(seq, color);
        let child = GlooComm::attach(Arc::clone(&self.shared), prefix, rank, chosen.len())?;
        Ok(Some(Arc::new(child)))
    }
}
