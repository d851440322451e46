//! The `tcp` backend: ranks are processes on one or many hosts, connected
//! by a full mesh of TCP connections.
//!
//! Rendezvous follows torchrun: every rank reads `DEEPRC_RANK`,
//! `DEEPRC_WORLD_SIZE`, `DEEPRC_STORE` (a `host:port` served by rank 0, or a
//! shared directory) and `DEEPRC_TOKEN` (a per-job secret), publishes its
//! listening address in the store and connects to every lower rank.
//!
//! Security and robustness:
//! - listeners bind loopback unless `DEEPRC_BIND` says otherwise (the
//!   rendezvous store binds the address `DEEPRC_STORE` names);
//! - both ends of every connection, rank to rank and rank to store, prove
//!   that they know the job token by challenge-response (HMAC-SHA256 over
//!   both sides' fresh nonces, see docs/comm.md "Authentication"), within
//!   the connect timeout; the token never crosses the wire. A peer that
//!   fails, speaks another protocol version ([`CommError::VersionMismatch`])
//!   or claims a rank that does not fit is refused before one payload byte
//!   moves, logged (`tracing::warn!` with its address, and
//!   [`TcpComm::refusals`]), and the communicator stays usable;
//! - a frame longer than `max_frame_bytes` (256 bytes during the handshake)
//!   is refused before any allocation ([`CommError::FrameTooLarge`]);
//! - a store directory is created owner-only, and one that others may
//!   write to is refused ([`CommError::InsecureStore`]);
//! - a peer that closes its connection fails every pending receive from it
//!   at once ([`CommError::PeerLost`]); one that hangs fails it after the
//!   timeout ([`CommError::Timeout`]).
//!
//! All-reduce is pipelined: every rank owns a part of the buffer, and 1 MiB
//! segments of the parts flow to their owners, are reduced there in rank
//! order and flow back while the next segments are on the wire; segments
//! are written to the sockets straight from the caller's buffer.
//!
//! ```no_run
//! // Started as N processes with DEEPRC_RANK, DEEPRC_WORLD_SIZE,
//! // DEEPRC_STORE and DEEPRC_TOKEN set (e.g. by deeprc-pilot).
//! use deeprc_comm::{tcp::TcpComm, CommunicatorExt, ReduceOp};
//! let comm = TcpComm::from_env()?;
//! let total = comm.all_reduce_scalar(1u32, ReduceOp::Sum)?;
//! # Ok::<(), deeprc_comm::CommError>(())
//! ```

mod auth;
#[doc(hidden)]
pub mod fuzzing;
mod store;
mod wire;

#[cfg(feature = "gloo")]
pub(crate) use store::job_hash;
pub use store::{FileStore, Store, StoreSpec, TcpStore, TcpStoreServer};

use crate::{
    config::env_parse,
    group::{Group, Transport},
    mailbox::{Key, Mailbox, Payload},
    pool::{BufferPool, POOL_BYTES},
    AnyBox, Backend, CommConfig, CommError, Communicator, DType, ReduceOp, Result, Tag,
};
use auth::{Claim, Purpose};
use bytes::Bytes;
use deeprc_core::sync::lock;
use std::{
    net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};
use wire::Kind;

/// How to create a [`TcpComm`].
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// The rendezvous store.
    pub store: StoreSpec,
    /// The per-job secret both ends of every connection prove they know
    /// (it is never sent).
    pub token: String,
    /// The address to listen on (default loopback).
    pub bind: IpAddr,
    /// The host name or address peers should connect to (default: `bind`).
    pub advertise: Option<String>,
    /// Timeouts and limits.
    pub config: CommConfig,
}

impl TcpOptions {
    /// Options for `rank` of `size` with a store and a token; loopback.
    pub fn new(rank: usize, size: usize, store: StoreSpec, token: impl Into<String>) -> Self {
        Self {
            rank,
            size,
            store,
            token: token.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise: None,
            config: CommConfig::default(),
        }
    }

    /// Options from the environment: the rank's place from
    /// [`Placement::from_env`](crate::launcher::Placement::from_env)
    /// (`DEEPRC_*`, or what srun, torchrun or mpirun set), and optionally
    /// `DEEPRC_BIND`, `DEEPRC_ADVERTISE` and the [`CommConfig`] variables.
    /// Without `DEEPRC_BIND` a rank listens on, and advertises, the address
    /// of the interface that routes to the store (loopback for a loopback
    /// store or a store folder).
    pub fn from_env() -> Result<Self> {
        let p = crate::launcher::Placement::from_env()?;
        let mut o = Self::new(p.rank, p.size, StoreSpec::parse(&p.store), p.token);
        o.bind = match env_parse("DEEPRC_BIND")? {
            Some(b) => b,
            None => crate::launcher::route_to(&p.store)?,
        };
        o.advertise = env_parse("DEEPRC_ADVERTISE")?;
        o.config = CommConfig::from_env()?;
        Ok(o)
    }

    /// Sets the configuration.
    pub fn with_config(mut self, config: CommConfig) -> Self {
        self.config = config;
        self
    }
}

/// What the listener of a rank knows.
#[derive(Debug)]
struct Listener {
    rank: usize,
    size: usize,
    token: Vec<u8>,
    addr: SocketAddr,
    complete: AtomicBool,
    closing: AtomicBool,
    connected: Mutex<Vec<bool>>,
    refusals: Mutex<Vec<String>>,
}

impl Listener {
    /// Records, logs and closes a refused connection (recorded first:
    /// whoever sees it closed finds the refusal listed).
    fn refuse(&self, conn: &TcpStream, from: &str, e: &CommError) {
        lock(&self.refusals).push(format!("{from}: {e}"));
        tracing::warn!(
            peer_addr = %from,
            rank = self.rank,
            "deeprc-comm tcp: refused a connection from {from}: {e}"
        );
        let _ = conn.shutdown(Shutdown::Both);
    }

    /// Authenticates a dialer (challenge-response, see `auth.rs`), checks
    /// its claim and accepts it; returns its rank. Nothing but the
    /// handshake is read from or written to a dialer that fails.
    fn handshake(&self, conn: &mut TcpStream, from: &str, timeout: Duration) -> Result<usize> {
        let verified = {
            let mut bounded = auth::Bounded::new(conn, timeout);
            auth::server(
                &mut bounded,
                &self.token,
                Purpose::Mesh,
                self.rank as u64,
                from,
            )?
        };
        let Claim { rank, size, target } = verified.claim;
        let fits = size == self.size as u64
            && target == self.rank as u64
            && rank > self.rank as u64
            && rank < self.size as u64;
        if !fits {
            return Err(CommError::Auth {
                addr: from.to_string(),
                reason: format!(
                    "hello from rank {rank} of {size} for rank {target} does not fit rank {} of {}",
                    self.rank, self.size
                ),
            });
        }
        let peer = rank as usize;
        if self.complete.load(Ordering::SeqCst) {
            return Err(CommError::Auth {
                addr: from.to_string(),
                reason: "the group is already complete".into(),
            });
        }
        {
            let mut connected = lock(&self.connected);
            if std::mem::replace(&mut connected[peer], true) {
                return Err(CommError::Auth {
                    addr: from.to_string(),
                    reason: format!("rank {peer} is already connected"),
                });
            }
        }
        let accepted = verified.accept(&mut auth::Bounded::new(conn, timeout), &self.token, from);
        if let Err(e) = accepted {
            lock(&self.connected)[peer] = false;
            return Err(e);
        }
        Ok(peer)
    }
}

/// A connection to one peer.
#[derive(Debug)]
struct Peer {
    writer: Mutex<TcpStream>,
}

/// One process's end of the mesh.
#[derive(Debug)]
struct Endpoint {
    rank: usize,
    size: usize,
    config: CommConfig,
    peers: Vec<Option<Peer>>,
    mailbox: Arc<Mailbox>,
    pool: Arc<BufferPool>,
    listener: Arc<Listener>,
    _store_server: Option<TcpStoreServer>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.listener.closing.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.listener.addr, Duration::from_millis(100));
        // Leaving after a peer was lost: say which, so that the ranks that
        // see this one leave name the root cause (the rank killed in the
        // middle of an all-to-all), not the ranks it took down with it.
        let farewell = self
            .mailbox
            .first_lost()
            .map(|(r, why)| format!("rank {} left after rank {r} was lost: {why}", self.rank));
        for (i, p) in self.peers.iter().enumerate() {
            let Some(p) = p else { continue };
            let mut w = lock(&p.writer);
            if let Some(text) = &farewell {
                if self.mailbox.lost_reason(i).is_none() {
                    // Best effort, and never a long wait in a destructor.
                    let _ = w.set_write_timeout(Some(Duration::from_millis(200)));
                    let _ = wire::write_frame(&mut *w, Kind::Abort, 0, 0, text.as_bytes());
                }
            }
            let _ = w.shutdown(Shutdown::Write);
        }
    }
}

impl Endpoint {
    /// Writes one data frame to peer `dst` (not this rank).
    fn write(&self, op: &'static str, dst: usize, key: Key, data: &[u8]) -> Result<()> {
        if let Some(reason) = self.mailbox.lost_reason(dst) {
            return Err(CommError::PeerLost {
                op,
                peer: dst,
                reason,
            });
        }
        let peer = self.peers[dst].as_ref().expect("mesh is complete");
        let mut w = lock(&peer.writer);
        wire::write_frame(&mut *w, Kind::Data, key.ctx, key.tag, data).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                CommError::Timeout {
                    op,
                    peer: dst,
                    after: self.config.timeout,
                }
            } else {
                CommError::PeerLost {
                    op,
                    peer: dst,
                    reason: format!("send failed: {e}"),
                }
            }
        })
    }
}

impl Transport for Endpoint {
    fn backend(&self) -> Backend {
        Backend::Tcp
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
        let data = payload.into_bytes(op)?;
        if dst == self.rank {
            self.mailbox.push(dst, key, Payload::Bytes(data));
            return Ok(());
        }
        self.write(op, dst, key, &data)
    }

    /// Writes borrowed bytes to the socket: no copy into a [`Bytes`].
    fn send_slice(&self, op: &'static str, dst: usize, key: Key, data: &[u8]) -> Result<()> {
        if dst == self.rank {
            let copy = self.pool.copy(data);
            self.mailbox.push(dst, key, Payload::Bytes(copy));
            return Ok(());
        }
        self.write(op, dst, key, data)
    }

    fn recv(&self, op: &'static str, src: usize, key: Key) -> Result<Payload> {
        self.mailbox.pop(op, src, key, self.config.timeout)
    }
}

/// A communicator whose ranks are processes connected over TCP.
#[derive(Debug)]
pub struct TcpComm {
    group: Group,
    listener: Arc<Listener>,
    setup: Duration,
}

impl TcpComm {
    /// Creates the communicator from the `DEEPRC_*` environment variables.
    pub fn from_env() -> Result<Self> {
        Self::connect(TcpOptions::from_env()?)
    }

    /// Creates the communicator: rendezvous, then a full mesh. Returns when
    /// every rank is connected, or fails after `connect_timeout`.
    pub fn connect(o: TcpOptions) -> Result<Self> {
        let start = Instant::now();
        CommError::check_world(o.rank, o.size)?;
        if o.token.is_empty() {
            return Err(CommError::config("DEEPRC_TOKEN", "the job token is empty"));
        }
        let (store, store_server) = open_store(&o.store, o.rank, &o.token, &o.config)?;

        let tcp = TcpListener::bind((o.bind, 0))
            .map_err(|e| CommError::io(format!("binding a listener on {}", o.bind), e))?;
        let addr = tcp
            .local_addr()
            .map_err(|e| CommError::io("reading the listener address", e))?;
        let host = match &o.advertise {
            Some(h) => h.clone(),
            None if o.bind.is_unspecified() => {
                return Err(CommError::config(
                    "DEEPRC_ADVERTISE",
                    "must be set when DEEPRC_BIND is a wildcard address",
                ))
            }
            None => o.bind.to_string(),
        };
        let advertised = if host.contains(':') {
            format!("[{host}]:{}", addr.port())
        } else {
            format!("{host}:{}", addr.port())
        };
        let listener = Arc::new(Listener {
            rank: o.rank,
            size: o.size,
            token: o.token.as_bytes().to_vec(),
            addr,
            complete: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            connected: Mutex::new(vec![false; o.size]),
            refusals: Mutex::new(Vec::new()),
        });
        let (accepted_tx, accepted_rx) = mpsc::channel();
        spawn_acceptor(
            tcp,
            Arc::clone(&listener),
            accepted_tx,
            o.config.connect_timeout,
        )?;
        store.set(&format!("addr/{}", o.rank), advertised.as_bytes())?;

        let mut streams: Vec<Option<TcpStream>> = (0..o.size).map(|_| None).collect();
        for (peer, slot) in streams.iter_mut().enumerate().take(o.rank) {
            let remaining = o.config.connect_timeout.saturating_sub(start.elapsed());
            let a = store.get(&format!("addr/{peer}"), remaining)?;
            let a = String::from_utf8_lossy(&a).into_owned();
            *slot = Some(dial(&a, peer, &o, start)?);
        }
        let expected = o.size - 1 - o.rank;
        for _ in 0..expected {
            let remaining = o.config.connect_timeout.saturating_sub(start.elapsed());
            match accepted_rx.recv_timeout(remaining) {
                Ok((peer, s)) => streams[peer] = Some(s),
                Err(_) => {
                    let missing: Vec<usize> = (o.rank + 1..o.size)
                        .filter(|&r| streams[r].is_none())
                        .collect();
                    return Err(CommError::Timeout {
                        op: "tcp connect",
                        peer: missing[0],
                        after: o.config.connect_timeout,
                    });
                }
            }
        }
        listener.complete.store(true, Ordering::SeqCst);

        let mailbox = Arc::new(Mailbox::default());
        let pool = BufferPool::new(POOL_BYTES);
        let mut peers = Vec::with_capacity(o.size);
        for (peer, s) in streams.into_iter().enumerate() {
            let Some(s) = s else {
                peers.push(None);
                continue;
            };
            let ctx = |e| CommError::io(format!("configuring the connection to rank {peer}"), e);
            s.set_nodelay(true).map_err(ctx)?;
            s.set_read_timeout(None).map_err(ctx)?;
            s.set_write_timeout(Some(o.config.timeout)).map_err(ctx)?;
            let reader = s.try_clone().map_err(ctx)?;
            spawn_reader(
                reader,
                peer,
                Arc::clone(&mailbox),
                Arc::clone(&pool),
                o.config.max_frame_bytes,
            )?;
            peers.push(Some(Peer {
                writer: Mutex::new(s),
            }));
        }
        let ep: Arc<dyn Transport> = Arc::new(Endpoint {
            rank: o.rank,
            size: o.size,
            config: o.config.clone(),
            peers,
            mailbox,
            pool,
            listener: Arc::clone(&listener),
            _store_server: store_server,
        });
        let comm = TcpComm {
            group: Group::world(ep),
            listener,
            setup: Duration::ZERO,
        };
        // Nobody returns before everybody is connected.
        comm.group.barrier()?;
        Ok(TcpComm {
            setup: start.elapsed(),
            ..comm
        })
    }

    /// Connections this rank refused, with the reason, e.g.
    /// `127.0.0.1:40112: connection refused: wrong job token`.
    pub fn refusals(&self) -> Vec<String> {
        lock(&self.listener.refusals).clone()
    }

    /// The address this rank listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listener.addr
    }

    /// How long creating this communicator took.
    pub fn setup_time(&self) -> Duration {
        self.setup
    }
}

/// The rendezvous store of a job: rank 0 serves a tcp store, which every
/// rank then connects to; a folder store needs no server.
pub(crate) fn open_store(
    spec: &StoreSpec,
    rank: usize,
    token: &str,
    config: &CommConfig,
) -> Result<(Box<dyn Store>, Option<TcpStoreServer>)> {
    Ok(match spec {
        StoreSpec::Dir(d) => (Box::new(FileStore::new(d, token)?), None),
        StoreSpec::Tcp(addr) => {
            let server = if rank == 0 {
                Some(TcpStoreServer::start(addr, token)?)
            } else {
                None
            };
            let store = TcpStore::connect(addr, token, config.connect_timeout)?;
            (Box::new(store), server)
        }
    })
}

/// Connects to a lower rank and says hello; retries until the deadline.
fn dial(addr: &str, peer: usize, o: &TcpOptions, start: Instant) -> Result<TcpStream> {
    let mut pause = Duration::from_millis(1);
    loop {
        let remaining = o.config.connect_timeout.saturating_sub(start.elapsed());
        let attempt = addr
            .to_socket_addrs()
            .map_err(|e| CommError::io(format!("resolving rank {peer}'s address {addr}"), e))?
            .find_map(|a| {
                TcpStream::connect_timeout(&a, remaining.max(Duration::from_millis(1))).ok()
            });
        if let Some(mut s) = attempt {
            let _ = s.set_nodelay(true);
            let remaining = o.config.connect_timeout.saturating_sub(start.elapsed());
            let claim = Claim {
                rank: o.rank as u64,
                size: o.size as u64,
                target: peer as u64,
            };
            let mut bounded = auth::Bounded::new(&mut s, remaining);
            auth::client(&mut bounded, o.token.as_bytes(), Purpose::Mesh, claim, addr)?;
            return Ok(s);
        }
        if start.elapsed() >= o.config.connect_timeout {
            return Err(CommError::Timeout {
                op: "tcp connect",
                peer,
                after: o.config.connect_timeout,
            });
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn spawn_acceptor(
    tcp: TcpListener,
    listener: Arc<Listener>,
    accepted: mpsc::Sender<(usize, TcpStream)>,
    handshake_timeout: Duration,
) -> Result<()> {
    thread::Builder::new()
        .name(format!("deeprc-accept-{}", listener.rank))
        .spawn(move || {
            for conn in tcp.incoming() {
                if listener.closing.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let listener = Arc::clone(&listener);
                let accepted = accepted.clone();
                let _ = thread::Builder::new()
                    .name("deeprc-handshake".into())
                    .spawn(move || {
                        let from = conn
                            .peer_addr()
                            .map_or_else(|_| "?".into(), |a| a.to_string());
                        match listener.handshake(&mut conn, &from, handshake_timeout) {
                            Ok(peer) => {
                                let _ = accepted.send((peer, conn));
                            }
                            Err(e) => listener.refuse(&conn, &from, &e),
                        }
                    });
            }
        })
        .map_err(|e| CommError::io("spawning the accept thread", e))?;
    Ok(())
}

fn spawn_reader(
    mut conn: TcpStream,
    peer: usize,
    mailbox: Arc<Mailbox>,
    pool: Arc<BufferPool>,
    limit: u64,
) -> Result<()> {
    let from = format!("rank {peer}");
    thread::Builder::new()
        .name(format!("deeprc-recv-{peer}"))
        .spawn(move || {
            let reason = loop {
                let h = match wire::read_header(&mut conn, limit, &from) {
                    Ok(Some(h)) => h,
                    Ok(None) => break format!("rank {peer} closed its connection"),
                    Err(e) => break e.to_string(),
                };
                let body =
                    match wire::read_body_into(&mut conn, h.len, &from, pool.reuse(h.len as usize))
                    {
                        Ok(b) => b,
                        Err(e) => break e.to_string(),
                    };
                match h.kind {
                    Kind::Data => mailbox.push(
                        peer,
                        Key {
                            ctx: h.ctx,
                            tag: h.tag,
                        },
                        Payload::Bytes(pool.freeze(body)),
                    ),
                    Kind::Abort => {
                        break format!("rank {peer} aborted: {}", String::from_utf8_lossy(&body))
                    }
                    other => break format!("unexpected {other:?} frame from rank {peer}"),
                }
            };
            let _ = conn.shutdown(Shutdown::Both);
            mailbox.mark_lost(peer, reason);
        })
        .map_err(|e| CommError::io("spawning a receive thread", e))?;
    Ok(())
}

crate::delegate_communicator!(TcpComm);
