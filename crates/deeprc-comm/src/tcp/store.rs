//! Rendezvous stores: where ranks publish and find each other's addresses.
//!
//! `DEEPRC_STORE` names one: `host:port` is a [`TcpStore`] served by rank 0
//! (like torchrun's TCPStore), anything else is a directory shared by all
//! ranks, a [`FileStore`] (e.g. on a parallel file system).

use super::wire::{self, Kind, CONTROL_LIMIT};
use crate::{CommError, Result};
use std::{
    collections::HashMap,
    fmt,
    io::Write,
    net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
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
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    job: String,
}

impl FileStore {
    /// A store in `dir` (created if missing) for the job with `token`.
    pub fn new(dir: &Path, token: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CommError::io(format!("creating store directory {}", dir.display()), e))?;
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

impl Store for FileStore {
    fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let path = self.path(key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let ctx = || format!("writing store key {key} to {}", path.display());
        std::fs::write(&tmp, value).map_err(|e| CommError::io(ctx(), e))?;
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

/// Constant-time comparison of tokens.
pub(crate) fn token_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Default)]
struct Table {
    map: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
}

/// The server side of a [`TcpStore`], run by rank 0. Dropping it stops it.
#[derive(Debug)]
pub struct TcpStoreServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TcpStoreServer {
    /// Serves a store on `addr` for clients that present `token`.
    pub fn start(addr: &str, token: &str) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| CommError::io(format!("binding the rendezvous store on {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CommError::io("reading the store address", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let table = Arc::new(Table::default());
        let token = token.as_bytes().to_vec();
        let stop2 = Arc::clone(&stop);
        thread::Builder::new()
            .name("deeprc-store".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let table = Arc::clone(&table);
                    let token = token.clone();
                    let _ = thread::Builder::new()
                        .name("deeprc-store-conn".into())
                        .spawn(move || serve(conn, &table, &token));
                }
            })
            .map_err(|e| CommError::io("spawning the store thread", e))?;
        Ok(Self { addr, stop })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpStoreServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(mut conn: TcpStream, table: &Table, token: &[u8]) {
    let from = conn
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let authed = match wire::read_header(&mut conn, CONTROL_LIMIT, &from) {
        Ok(Some(h)) if h.kind == Kind::Hello => wire::read_body(&mut conn, h.len, &from)
            .map(|b| token_eq(&b, token))
            .unwrap_or(false),
        _ => false,
    };
    if !authed {
        return;
    }
    let _ = conn.set_read_timeout(None);
    while let Ok(Some(h)) = wire::read_header(&mut conn, CONTROL_LIMIT, &from) {
        let Ok(body) = wire::read_body(&mut conn, h.len, &from) else {
            return;
        };
        let lock = || table.map.lock().unwrap_or_else(PoisonError::into_inner);
        let reply = match h.kind {
            Kind::StoreSet => {
                let klen = body.first().copied().unwrap_or(0) as usize;
                if body.len() < 1 + klen {
                    return;
                }
                let key = String::from_utf8_lossy(&body[1..1 + klen]).into_owned();
                lock().insert(key, body[1 + klen..].to_vec());
                table.changed.notify_all();
                wire::write_frame(&mut conn, Kind::StoreValue, 0, 0, &[])
            }
            Kind::StoreGet => {
                let key = String::from_utf8_lossy(&body).into_owned();
                let deadline = Instant::now() + Duration::from_millis(h.tag);
                let mut map = lock();
                let value = loop {
                    if let Some(v) = map.get(&key) {
                        break Some(v.clone());
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break None;
                    }
                    map = table
                        .changed
                        .wait_timeout(map, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                };
                drop(map);
                match value {
                    Some(v) => wire::write_frame(&mut conn, Kind::StoreValue, 0, 0, &v),
                    None => wire::write_frame(&mut conn, Kind::StoreMissing, 0, 0, &[]),
                }
            }
            _ => return,
        };
        if reply.is_err() {
            return;
        }
    }
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
        wire::write_frame(&mut conn, Kind::Hello, 0, 0, token.as_bytes())
            .map_err(|e| CommError::io(format!("greeting the store at {addr}"), e))?;
        Ok(Self {
            addr: addr.to_string(),
            conn: Mutex::new(conn),
        })
    }

    fn request(
        &self,
        kind: Kind,
        tag: u64,
        body: &[u8],
        wait: Duration,
    ) -> Result<(Kind, Vec<u8>)> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let err = |reason: String| CommError::Store {
            store: self.addr.clone(),
            reason,
        };
        wire::write_frame(&mut *conn, kind, 0, tag, body)
            .and_then(|_| conn.flush())
            .map_err(|e| err(format!("request failed: {e}")))?;
        conn.set_read_timeout(Some(wait + Duration::from_secs(5)))
            .map_err(|e| err(e.to_string()))?;
        let closed = || err("the store closed the connection (wrong token?)".into());
        let h = wire::read_header(&mut *conn, u64::MAX >> 1, &self.addr)
            .map_err(|e| err(format!("no reply ({e}); wrong token?")))?
            .ok_or_else(closed)?;
        let body = wire::read_body(&mut *conn, h.len, &self.addr)
            .map_err(|e| err(format!("truncated reply: {e}")))?;
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
        let bad = TcpStore::connect(&addr, "wrong", Duration::from_secs(5)).unwrap();
        assert!(matches!(
            bad.get("k", Duration::from_millis(50)),
            Err(CommError::Store { .. })
        ));
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
