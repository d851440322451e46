//! Rendezvous stores: where ranks publish and find each other's addresses.
//!
//! `DEEPRC_STORE` names one: `host:port` is a [`TcpStore`] served by rank 0
//! (like torchrun's TCPStore), anything else is a directory shared by all
//! ranks, a [`FileStore`] (e.g. on a parallel file system).

use super::{
    auth::{self, Claim, Purpose},
    wire::{self, Kind, CONTROL_LIMIT},
};
use crate::{CommError, Result};
use deeprc_core::sync::lock;
use std::{
    collections::HashMap,
    fmt,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex, PoisonError,
    },
    thread,
    time::{Duration, Instant},
};

/// A key-value store for rendezvous. Values are set once per key.
pub trait Store: Send + Sync + fmt::Debug {
    /// Publishes `value` under `key`.
    fn set(&self, key: &str, value: &[u8]) -> Result<()>;
    /// Waits at most `timeout` for `key` and returns its value.
    fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>>;
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// A TCP store served by rank 0 at this address.
    Tcp(String),
    /// A directory shared by all ranks.
    Dir(PathBuf),
}

impl StoreSpec {
    /// `host:port` is TCP, anything else a directory.
    pub fn parse(s: &str) -> StoreSpec {
        let looks_tcp = !s.contains('/')
            && s.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if looks_tcp {
            StoreSpec::Tcp(s.to_string())
        } else {
            StoreSpec::Dir(PathBuf::from(s))
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Tcp(a) => write!(f, "tcp://{a}"),
            StoreSpec::Dir(d) => write!(f, "{}", d.display()),
        }
    }
}

/// A store in a shared directory: one file per key, written atomically,
/// named after the job (a hash of its token) so jobs do not mix.
///
/// The directory is created owner-only (`0700`) and every file `0600`; an
/// existing directory that the group or others may write to, or that
/// another user owns, is refused ([`CommError::InsecureStore`]): anyone who
/// can write there could plant the address a rank dials.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    job: String,
}

impl FileStore {
    /// A store in `dir` (created owner-only if missing) for the job with
    /// `token`. Fails with [`CommError::InsecureStore`] if `dir` exists and
    /// group or others may write to it, or another user owns it.
    pub fn new(dir: &Path, token: &str) -> Result<Self> {
        create_private_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            job: format!("{:016x}", job_hash(token)),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        let safe: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.dir.join(format!("deeprc-{}-{safe}", self.job))
    }
}

/// Creates `dir` (and missing parents) as `0700`, or checks that an
/// existing one is safe: a directory of this user that nobody else may
/// write to.
#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let shown = || dir.display().to_string();
    let insecure = |reason: String| CommError::InsecureStore {
        path: shown(),
        reason,
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| CommError::io(format!("creating store directory {}", shown()), e))?;
        }
        Err(e) => {
            return Err(CommError::io(
                format!("reading store directory {}", shown()),
                e,
            ))
        }
        Ok(_) => {}
    }
    // Follows a symbolic link on purpose: the directory it names is checked.
    let meta = std::fs::metadata(dir)
        .map_err(|e| CommError::io(format!("reading store directory {}", shown()), e))?;
    if !meta.is_dir() {
        return Err(insecure("not a directory".into()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(insecure(format!(
            "mode {mode:04o} lets the group or others write to it; use a directory of \
             mode 0700 (or 0755), or a path that does not exist yet"
        )));
    }
    let me = effective_uid();
    if meta.uid() != me {
        return Err(insecure(format!(
            "owned by uid {}, not by this process's uid {me}",
            meta.uid()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CommError::io(format!("creating store directory {}", dir.display()), e))
}

#[cfg(unix)]
fn effective_uid() -> u32 {
    extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory
    // of ours (uid_t is a u32 on every unix Rust supports).
    unsafe { geteuid() }
}

/// Writes `value` to a new file `tmp`, owner-only (`0600`), failing if
/// `tmp` exists (so a planted file or link is never written through).
fn write_private(tmp: &Path, value: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(tmp)?;
    f.write_all(value)?;
    f.sync_all()
}

impl Store for FileStore {
    fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let path = self.path(key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let ctx = || format!("writing store key {key} to {}", path.display());
        // A leftover of an earlier attempt of this process (same pid).
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, value).map_err(|e| CommError::io(ctx(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| CommError::io(ctx(), e))
    }

    fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let path = self.path(key);
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(100);
        loop {
            match std::fs::read(&path) {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CommError::io(format!("reading {}", path.display()), e)),
            }
            if Instant::now() >= deadline {
                return Err(CommError::Store {
                    store: self.dir.display().to_string(),
                    reason: format!("key {key:?} did not appear within {timeout:?}"),
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// 64-bit FNV-1a of the token: names a job without revealing its token.
pub(crate) fn job_hash(token: &str) -> u64 {
    token.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug, Default)]
struct Table {
    map: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
}

/// How long a store client may take for its handshake.
const STORE_HANDSHAKE: Duration = Duration::from_secs(10);

/// The server side of a [`TcpStore`], run by rank 0. Dropping it stops it.
///
/// Every client must pass the challenge-response handshake (it proves it
/// knows the job token, and the server proves it back) before the server
/// reads one request; clients that fail are closed, logged with
/// `tracing::warn!` and listed in [`TcpStoreServer::refusals`].
#[derive(Debug)]
pub struct TcpStoreServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    refusals: Arc<Mutex<Vec<String>>>,
}

impl TcpStoreServer {
    /// Serves a store on `addr` (the configured address, as given) for
    /// clients that know `token`.
    pub fn start(addr: &str, token: &str) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| CommError::io(format!("binding the rendezvous store on {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CommError::io("reading the store address", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let table = Arc::new(Table::default());
        let token: Arc<[u8]> = token.as_bytes().into();
        let (stop2, refusals2) = (Arc::clone(&stop), Arc::clone(&refusals));
        thread::Builder::new()
            .name("deeprc-store".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let table = Arc::clone(&table);
                    let token = Arc::clone(&token);
                    let refusals = Arc::clone(&refusals2);
                    let _ = thread::Builder::new()
                        .name("deeprc-store-conn".into())
                        .spawn(move || serve(conn, &table, &token, &refusals));
                }
            })
            .map_err(|e| CommError::io("spawning the store thread", e))?;
        Ok(Self {
            addr,
            stop,
            refusals,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections this server refused, with the address and the reason,
    /// e.g. `127.0.0.1:40112: connection from 127.0.0.1:40112 refused: wrong
    /// job token (its proof does not verify)`.
    pub fn refusals(&self) -> Vec<String> {
        lock(&self.refusals).clone()
    }
}

impl Drop for TcpStoreServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(mut conn: TcpStream, table: &Table, token: &[u8], refusals: &Mutex<Vec<String>>) {
    let from = conn
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let authed = {
        let mut bounded = auth::Bounded::new(&mut conn, STORE_HANDSHAKE);
        auth::server(&mut bounded, token, Purpose::Store, 0, &from)
            .and_then(|v| v.accept(&mut bounded, token, &from))
    };
    if let Err(e) = authed {
        // Recorded before the connection closes: whoever sees it closed
        // finds the refusal listed.
        lock(refusals).push(format!("{from}: {e}"));
        tracing::warn!(
            peer_addr = %from,
            "deeprc-comm tcp store: refused a connection from {from}: {e}"
        );
        let _ = conn.shutdown(Shutdown::Both);
        return;
    }
    if conn.set_read_timeout(None).is_err() || conn.set_write_timeout(None).is_err() {
        return;
    }
    serve_requests(&mut conn, table, &from, Duration::MAX);
}

/// Serves the requests of one authenticated client until it closes the
/// connection or sends something that is not a request; a `StoreGet` waits
/// at most `max_wait` for its key.
fn serve_requests<S: Read + Write>(conn: &mut S, table: &Table, from: &str, max_wait: Duration) {
    while let Ok(Some(h)) = wire::read_header(conn, CONTROL_LIMIT, from) {
        let Ok(body) = wire::read_body(conn, h.len, from) else {
            return;
        };
        let lock = || lock(&table.map);
        let reply = match h.kind {
            Kind::StoreSet => {
                let klen = body.first().copied().unwrap_or(0) as usize;
                if body.len() < 1 + klen {
                    return;
                }
                let key = String::from_utf8_lossy(&body[1..1 + klen]).into_owned();
                lock().insert(key, body[1 + klen..].to_vec());
                table.changed.notify_all();
                wire::write_frame(conn, Kind::StoreValue, 0, 0, &[])
            }
            Kind::StoreGet => {
                let key = String::from_utf8_lossy(&body).into_owned();
                let wait = Duration::from_millis(h.tag).min(max_wait);
                let deadline = Instant::now().checked_add(wait);
                let mut map = lock();
                let value = loop {
                    if let Some(v) = map.get(&key) {
                        break Some(v.clone());
                    }
                    // No deadline: a wait too long for an `Instant`.
                    let Some(deadline) = deadline else {
                        map = table
                            .changed
                            .wait(map)
                            .unwrap_or_else(PoisonError::into_inner);
                        continue;
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break None;
                    }
                    map = table
                        .changed
                        .wait_timeout(map, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                };
                drop(map);
                match value {
                    Some(v) => wire::write_frame(conn, Kind::StoreValue, 0, 0, &v),
                    None => wire::write_frame(conn, Kind::StoreMissing, 0, 0, &[]),
                }
            }
            _ => return,
        };
        if reply.is_err() {
            return;
        }
    }
}

/// The store protocol on `input` as an authenticated client's bytes
/// (replies go nowhere, a `StoreGet` does not wait): the fuzz target's entry.
pub(crate) fn fuzz_requests(input: &[u8]) {
    let table = Table::default();
    let mut conn = super::fuzzing::Stream::new(input);
    serve_requests(&mut conn, &table, "fuzz", Duration::ZERO);
}

/// The client of a TCP store. Connecting retries until the timeout, so
/// ranks may start before rank 0's server is up.
#[derive(Debug)]
pub struct TcpStore {
    addr: String,
    conn: Mutex<TcpStream>,
}

impl TcpStore {
    /// Connects to the store at `addr` with `token`, retrying for `timeout`.
    pub fn connect(addr: &str, token: &str, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        let mut conn = loop {
            let attempt = addr
                .to_socket_addrs()
                .map_err(|e| CommError::io(format!("resolving store address {addr}"), e))?
                .find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok());
            if let Some(c) = attempt {
                break c;
            }
            if Instant::now() >= deadline {
                return Err(CommError::Store {
                    store: addr.to_string(),
                    reason: format!("no store answered within {timeout:?}"),
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        let _ = conn.set_nodelay(true);
        let claim = Claim {
            rank: 0,
            size: 0,
            target: 0,
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        auth::client(
            &mut auth::Bounded::new(&mut conn, left),
            token.as_bytes(),
            Purpose::Store,
            claim,
            addr,
        )?;
        conn.set_write_timeout(None)
            .map_err(|e| CommError::io(format!("configuring the store connection {addr}"), e))?;
        Ok(Self {
            addr: addr.to_string(),
            conn: Mutex::new(conn),
        })
    }

    /// One request and its reply. A reply longer than the server may send
    /// ([`CONTROL_LIMIT`]) is a [`CommError::FrameTooLarge`], refused before
    /// any allocation.
    fn request(
        &self,
        kind: Kind,
        tag: u64,
        body: &[u8],
        wait: Duration,
    ) -> Result<(Kind, Vec<u8>)> {
        let mut conn = lock(&self.conn);
        let err = |reason: String| CommError::Store {
            store: self.addr.clone(),
            reason,
        };
        wire::write_frame(&mut *conn, kind, 0, tag, body)
            .and_then(|_| conn.flush())
            .map_err(|e| err(format!("request failed: {e}")))?;
        conn.set_read_timeout(Some(wait.saturating_add(Duration::from_secs(5))))
            .map_err(|e| err(e.to_string()))?;
        let h = wire::read_header(&mut *conn, CONTROL_LIMIT, &self.addr)?
            .ok_or_else(|| err("the store closed the connection".into()))?;
        let body = wire::read_body(&mut *conn, h.len, &self.addr)?;
        Ok((h.kind, body))
    }
}

impl Store for TcpStore {
    fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let kb = key.as_bytes();
        if kb.len() > 255 {
            return Err(CommError::invalid("store set", "key longer than 255 bytes"));
        }
        let mut body = Vec::with_capacity(1 + kb.len() + value.len());
        body.push(kb.len() as u8);
        body.extend_from_slice(kb);
        body.extend_from_slice(value);
        self.request(Kind::StoreSet, 0, &body, Duration::from_secs(5))
            .map(|_| ())
    }

    fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        match self.request(
            Kind::StoreGet,
            timeout.as_millis() as u64,
            key.as_bytes(),
            timeout,
        )? {
            (Kind::StoreValue, v) => Ok(v),
            _ => Err(CommError::Store {
                store: self.addr.clone(),
                reason: format!("key {key:?} did not appear within {timeout:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        assert_eq!(
            StoreSpec::parse("127.0.0.1:29500"),
            StoreSpec::Tcp("127.0.0.1:29500".into())
        );
        assert_eq!(
            StoreSpec::parse("node01:80"),
            StoreSpec::Tcp("node01:80".into())
        );
        assert_eq!(StoreSpec::parse("/tmp/x"), StoreSpec::Dir("/tmp/x".into()));
        assert_eq!(StoreSpec::parse("rdv"), StoreSpec::Dir("rdv".into()));
    }

    #[test]
    fn tcp_store_set_get_and_wrong_token() {
        let server = TcpStoreServer::start("127.0.0.1:0", "tok").unwrap();
        let addr = server.addr().to_string();
        let a = TcpStore::connect(&addr, "tok", Duration::from_secs(5)).unwrap();
        let b = TcpStore::connect(&addr, "tok", Duration::from_secs(5)).unwrap();
        let waiter = thread::spawn(move || b.get("k", Duration::from_secs(5)).unwrap());
        a.set("k", b"v").unwrap();
        assert_eq!(waiter.join().unwrap(), b"v");
        assert!(a.get("missing", Duration::from_millis(50)).is_err());
        // A wrong token fails the handshake: connecting is refused.
        let bad = TcpStore::connect(&addr, "wrong", Duration::from_secs(5));
        assert!(matches!(bad, Err(CommError::Auth { .. })), "{bad:?}");
        assert_eq!(a.get("k", Duration::from_secs(1)).unwrap(), b"v");
        let refusals = server.refusals();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(refusals[0].contains("wrong job token"), "{refusals:?}");
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[cfg(unix)]
    #[test]
    fn file_store_is_owner_only() {
        let base = std::env::temp_dir().join(format!("deeprc-fs-mode-{}", std::process::id()));
        let dir = base.join("a/b");
        let s = FileStore::new(&dir, "tok").unwrap();
        s.set("addr/0", b"127.0.0.1:1").unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.join("a")), 0o700, "created parents too");
        assert_eq!(mode(&s.path("addr/0")), 0o600);
        // Setting a key again replaces the file, still owner-only.
        s.set("addr/0", b"127.0.0.1:2").unwrap();
        assert_eq!(mode(&s.path("addr/0")), 0o600);
        assert_eq!(s.get("addr/0", Duration::ZERO).unwrap(), b"127.0.0.1:2");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn file_store_refuses_a_directory_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("deeprc-fs-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for m in [0o775, 0o757, 0o777, 0o1777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
            let r = FileStore::new(&dir, "tok");
            assert!(
                matches!(&r, Err(CommError::InsecureStore { reason, .. }) if reason.contains("write")),
                "mode {m:o}: {r:?}"
            );
        }
        // Readable by others but writable only by its owner: fine.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        FileStore::new(&dir, "tok").unwrap();
        // A file where the directory should be.
        let file = dir.join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            FileStore::new(&file, "tok"),
            Err(CommError::InsecureStore { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn file_store_set_get() {
        let dir = std::env::temp_dir().join(format!("deeprc-fs-{}", std::process::id()));
        let s = FileStore::new(&dir, "tok").unwrap();
        s.set("addr/1", b"x").unwrap();
        assert_eq!(s.get("addr/1", Duration::from_secs(1)).unwrap(), b"x");
        assert!(s.get("addr/2", Duration::from_millis(20)).is_err());
        let other_job = FileStore::new(&dir, "other").unwrap();
        assert!(other_job.get("addr/1", Duration::from_millis(20)).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
