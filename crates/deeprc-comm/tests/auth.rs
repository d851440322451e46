//! Mutual authentication of the tcp backend, byte by byte: the rank mesh
//! and the rendezvous store refuse every connection that does not prove it
//! knows the job token (the old plaintext hello, a wrong token, garbage, a
//! truncated or stalled handshake, a forged length) before one payload byte
//! moves, log it with the peer's address, and keep serving legitimate
//! peers; a rank or store client refuses a listener that does not prove it
//! knows the token; the token never crosses the wire.
//!
//! The handshake is written out here a second time, from the description
//! in docs/comm.md, so that the tests check the documented protocol and not
//! only the crate against itself.

#![cfg(feature = "tcp")]

mod common;

use deeprc_comm::{
    tcp::{FileStore, Store, StoreSpec, TcpComm, TcpOptions, TcpStore, TcpStoreServer},
    CommConfig, CommError, CommunicatorExt, ReduceOp,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{Mutex, OnceLock},
    thread,
    time::Duration,
};

// ------------------------------------------------------------ the protocol

const HELLO: u8 = 1;
const ACK: u8 = 2;
const DATA: u8 = 0;
const STORE_SET: u8 = 4;
const STORE_GET: u8 = 5;
const CHALLENGE: u8 = 8;
const PROOF: u8 = 9;
const MESH: u8 = 1;
const STORE: u8 = 2;
const HEADER: usize = 29;

/// A frame of protocol version `v` (`b'2'` today, `b'1'` the plaintext one).
fn frame_v(v: u8, kind: u8, ctx: u64, tag: u64, body: &[u8]) -> Vec<u8> {
    let mut f = vec![b'D', b'R', b'C', v, kind];
    f.extend_from_slice(&ctx.to_le_bytes());
    f.extend_from_slice(&tag.to_le_bytes());
    f.extend_from_slice(&(body.len() as u64).to_le_bytes());
    f.extend_from_slice(body);
    f
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    frame_v(b'2', kind, 0, 0, body)
}

/// A header announcing `len` bytes that never come.
fn forged_header(kind: u8, len: u64) -> Vec<u8> {
    let mut f = frame(kind, &[]);
    f[21..29].copy_from_slice(&len.to_le_bytes());
    f
}

fn hello(purpose: u8, rank: u64, size: u64, target: u64) -> Vec<u8> {
    let mut h = vec![purpose];
    for x in [rank, size, target] {
        h.extend_from_slice(&x.to_le_bytes());
    }
    h.extend_from_slice(&rand::random::<[u8; 32]>());
    h
}

fn challenge(purpose: u8, rank: u64) -> Vec<u8> {
    let mut c = vec![purpose];
    c.extend_from_slice(&rank.to_le_bytes());
    c.extend_from_slice(&rand::random::<[u8; 32]>());
    c
}

fn mac(token: &[u8], hello: &[u8], challenge: &[u8], role: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(token).unwrap();
    for part in [&b"deeprc-comm/tcp-auth"[..], &[2], hello, challenge, role] {
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

/// Reads one frame: `None` at a clean end of the connection.
fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; HEADER];
    s.read_exact(&mut h).ok()?;
    let len = u64::from_le_bytes(h[21..29].try_into().unwrap());
    assert!(len < 1 << 20, "a frame of {len} bytes");
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).ok()?;
    Some((h[4], body))
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Everything the other side sends until it closes the connection.
fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` (then, with `close`, ends the write side) and returns all
/// the listener sent back before closing the connection.
fn hostile(addr: &str, bytes: &[u8], close: bool) -> Vec<u8> {
    let mut s = connect(addr);
    let _ = s.write_all(bytes);
    if close {
        let _ = s.shutdown(Shutdown::Write);
    }
    until_closed(&mut s)
}

/// A raw client that speaks the protocol with `token`: sends its hello,
/// reads the challenge, sends its proof and then `after` (all without
/// waiting for an ack). Returns the challenge's body and all the listener
/// sent after it.
fn raw_client(addr: &str, token: &[u8], h: &[u8], after: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut s = connect(addr);
    s.write_all(&frame(HELLO, h)).unwrap();
    let (kind, c) = read_frame(&mut s).expect("a challenge");
    assert_eq!(kind, CHALLENGE);
    let mut out = frame(PROOF, &mac(token, h, &c, b"client"));
    out.extend_from_slice(after);
    let _ = s.write_all(&out);
    (c, until_closed(&mut s))
}

/// Accepts one connection and answers as a listener that does not know
/// the token: a challenge, then an ack with a made-up MAC. Returns every
/// byte the dialer sent.
fn fake_listener(purpose: u8) -> (String, thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut seen = Vec::new();
        let mut raw = |s: &mut TcpStream| {
            let f = read_frame(s)?;
            seen.extend_from_slice(&frame(f.0, &f.1));
            Some(f)
        };
        if raw(&mut s).is_some_and(|f| f.0 == HELLO) {
            s.write_all(&frame(CHALLENGE, &challenge(purpose, 0)))
                .unwrap();
            if raw(&mut s).is_some_and(|f| f.0 == PROOF) {
                let _ = s.write_all(&frame(ACK, &[7u8; 32]));
                // Whatever the dialer sends now would be payload.
                while raw(&mut s).is_some() {}
            }
        }
        seen
    });
    (addr, h)
}

/// Accepts one connection and answers its hello with a frame of protocol
/// version 3.
fn future_listener() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = read_frame(&mut s);
        let _ = s.write_all(&frame_v(b'3', CHALLENGE, 0, 0, &challenge(STORE, 0)));
        let _ = until_closed(&mut s);
    });
    addr
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ------------------------------------------------------------ log capture

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records every `tracing` event as `LEVEL field=value ...`.
struct Capture;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={v:?} ", f.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut f = Fields(format!("{} ", e.metadata().level()));
        e.record(&mut f);
        LOG.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| tracing::subscriber::set_global_default(Capture).unwrap());
}

/// The warnings logged about connections from `addr`.
fn warnings_about(addr: &str) -> Vec<String> {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("WARN") && l.contains(&format!("peer_addr={addr}")))
        .cloned()
        .collect()
}

// ------------------------------------------------------------ the mesh

fn config() -> CommConfig {
    CommConfig::default()
        .with_connect_timeout(Duration::from_secs(60))
        .with_timeout(Duration::from_secs(20))
}

#[test]
fn tcp_rank_refuses_hostile_handshakes_and_keeps_serving() {
    capture_logs();
    let dir = common::temp_dir("auth-mesh");
    let token = "mesh-token-0123456789";
    let opts = |r| TcpOptions::new(r, 2, StoreSpec::Dir(dir.clone()), token).with_config(config());
    let o0 = opts(0);
    let rank0 = thread::spawn(move || {
        let c = TcpComm::connect(o0)?;
        let sum = c.all_reduce_scalar(1u32, ReduceOp::Sum)?;
        Ok::<_, CommError>((sum, c.refusals()))
    });
    let addr = String::from_utf8(
        FileStore::new(&dir, token)
            .unwrap()
            .get("addr/0", Duration::from_secs(30))
            .unwrap(),
    )
    .unwrap();
    let t = token.as_bytes();
    let mut expected = Vec::new();

    // The plaintext hello of protocol 1, with the right token.
    let legacy = frame_v(b'1', HELLO, 1, 2, t);
    assert_eq!(
        hostile(&addr, &legacy, false),
        b"",
        "no byte for a plaintext hello"
    );
    expected.push("protocol version 1");
    // Protocol 2 with a wrong token, a payload frame right after its proof:
    // the listener sent its challenge and nothing else (no ack, no MAC).
    let data = frame_v(b'2', DATA, 0, 0, b"payload");
    let (_, after) = raw_client(&addr, b"guessed-token", &hello(MESH, 1, 2, 0), &data);
    assert_eq!(after, b"", "a wrong token got bytes after the challenge");
    expected.push("wrong job token");
    // A payload frame where the proof belongs.
    let mut s = connect(&addr);
    s.write_all(&frame(HELLO, &hello(MESH, 1, 2, 0))).unwrap();
    assert_eq!(read_frame(&mut s).unwrap().0, CHALLENGE);
    s.write_all(&data).unwrap();
    assert_eq!(until_closed(&mut s), b"");
    expected.push("Data frame where a Proof belongs");
    // Garbage.
    let http = b"GET / HTTP/1.1\r\nHost: deeprc.invalid\r\n\r\n";
    assert_eq!(hostile(&addr, http, false), b"");
    expected.push("bad magic");
    // A truncated hello, then the end of the connection.
    let h = frame(HELLO, &hello(MESH, 1, 2, 0));
    assert_eq!(hostile(&addr, &h[..10], true), b"");
    expected.push("closed inside a header");
    let cut_body = &h[..HEADER + 20];
    assert_eq!(hostile(&addr, cut_body, true), b"");
    expected.push("after 20 of 57 body bytes");
    // A forged length prefix: 1 TiB announced, refused before allocation.
    assert_eq!(hostile(&addr, &forged_header(HELLO, 1 << 40), false), b"");
    expected.push("frame of 1099511627776 bytes");
    // A stalled handshake stays open while the real rank 1 joins.
    let mut stalled = connect(&addr);
    stalled.write_all(&h[..5]).unwrap();

    let rank1 = TcpComm::connect(opts(1)).unwrap();
    assert_eq!(rank1.all_reduce_scalar(2u32, ReduceOp::Sum).unwrap(), 3);
    let (sum, refusals) = rank0.join().unwrap().unwrap();
    assert_eq!(sum, 3);
    assert_eq!(refusals.len(), expected.len(), "{refusals:#?}");
    for (r, want) in refusals.iter().zip(&expected) {
        assert!(r.starts_with("127.0.0.1:"), "no address: {r}");
        assert!(r.contains(want), "expected {want:?} in {r}");
    }
    // Each refusal was logged as a warning naming the address.
    for r in &refusals {
        let from = r.split(": ").next().unwrap();
        assert_eq!(warnings_about(from).len(), 1, "{from}: {:#?}", LOG.lock());
    }
    drop(stalled);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tcp_rank_refuses_a_listener_that_does_not_know_the_token() {
    let dir = common::temp_dir("auth-dialer");
    let token = "dialer-token-0123456789";
    let (fake, seen) = fake_listener(MESH);
    FileStore::new(&dir, token)
        .unwrap()
        .set("addr/0", fake.as_bytes())
        .unwrap();
    let o = TcpOptions::new(1, 2, StoreSpec::Dir(dir.clone()), token).with_config(
        CommConfig::default()
            .with_connect_timeout(Duration::from_secs(20))
            .with_timeout(Duration::from_secs(2)),
    );
    let err = TcpComm::connect(o).unwrap_err();
    assert!(
        matches!(&err, CommError::Auth { reason, .. } if reason.contains("did not prove")),
        "{err}"
    );
    let seen = seen.join().unwrap();
    assert!(
        !contains(&seen, token.as_bytes()),
        "the token crossed the wire"
    );
    // A hello and a proof, nothing after them.
    assert_eq!(seen.len(), (HEADER + 57) + (HEADER + 32), "{seen:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tcp_rank_refuses_a_peer_with_another_token() {
    let dir = common::temp_dir("auth-two-tokens");
    let o = |r, t: &str| {
        TcpOptions::new(r, 2, StoreSpec::Dir(dir.clone()), t).with_config(
            CommConfig::default()
                .with_connect_timeout(Duration::from_secs(3))
                .with_timeout(Duration::from_secs(2)),
        )
    };
    // Both write the same store directory, under different job names: rank
    // 1 finds rank 0 only if the store names both jobs alike, so point it
    // there by hand.
    let o0 = o(0, "token-a");
    let rank0 = thread::spawn(move || TcpComm::connect(o0));
    let a = FileStore::new(&dir, "token-a").unwrap();
    let addr = a.get("addr/0", Duration::from_secs(30)).unwrap();
    FileStore::new(&dir, "token-b")
        .unwrap()
        .set("addr/0", &addr)
        .unwrap();
    let err = TcpComm::connect(o(1, "token-b")).unwrap_err();
    assert!(
        matches!(&err, CommError::Auth { reason, .. } if reason.contains("refused this side's proof")),
        "{err}"
    );
    let err0 = rank0.join().unwrap().unwrap_err();
    assert!(matches!(err0, CommError::Timeout { .. }), "{err0}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_authenticated_peer_cannot_force_a_huge_allocation() {
    // A client with the token, then a data frame announcing 1 TiB: the
    // frame limit fails the rank's connection, nothing is allocated.
    let dir = common::temp_dir("auth-forged-len");
    let token = "forged-len-token";
    let o0 = TcpOptions::new(0, 2, StoreSpec::Dir(dir.clone()), token).with_config(config());
    let rank0 = thread::spawn(move || TcpComm::connect(o0));
    let addr = String::from_utf8(
        FileStore::new(&dir, token)
            .unwrap()
            .get("addr/0", Duration::from_secs(30))
            .unwrap(),
    )
    .unwrap();
    let mut s = connect(&addr);
    let h = hello(MESH, 1, 2, 0);
    s.write_all(&frame(HELLO, &h)).unwrap();
    let (_, c) = read_frame(&mut s).unwrap();
    s.write_all(&frame(PROOF, &mac(token.as_bytes(), &h, &c, b"client")))
        .unwrap();
    let (kind, m) = read_frame(&mut s).unwrap();
    assert_eq!(kind, ACK);
    assert_eq!(
        m,
        mac(token.as_bytes(), &h, &c, b"server"),
        "the listener's MAC"
    );
    s.write_all(&forged_header(DATA, 1 << 40)).unwrap();
    let err = rank0.join().unwrap().unwrap_err();
    assert!(
        matches!(&err, CommError::PeerLost { reason, .. }
            if reason.contains("frame of 1099511627776 bytes") && reason.contains("exceeds the limit")),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_version_mismatch_is_a_typed_error() {
    let addr = future_listener();
    let err = TcpStore::connect(&addr, "tok", Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(
            err,
            CommError::VersionMismatch {
                ours: 2,
                theirs: 3,
                ..
            }
        ),
        "{err}"
    );
}

// ------------------------------------------------------------ the store

#[test]
fn tcp_store_refuses_hostile_clients_and_keeps_serving() {
    capture_logs();
    let token = "store-token-0123456789";
    let secret = b"the-address-of-rank-0";
    let server = TcpStoreServer::start("127.0.0.1:0", token).unwrap();
    let addr = server.addr().to_string();
    let a = TcpStore::connect(&addr, token, Duration::from_secs(10)).unwrap();
    a.set("k", secret).unwrap();
    let get = |v| frame_v(v, STORE_GET, 0, 1000, b"k");
    let mut expected = Vec::new();

    // The plaintext hello of protocol 1 with the right token, then a get.
    let mut legacy = frame_v(b'1', HELLO, 0, 0, token.as_bytes());
    legacy.extend_from_slice(&get(b'1'));
    assert_eq!(hostile(&addr, &legacy, false), b"");
    expected.push("protocol version 1");
    // A wrong token, a get right after the proof.
    let (_, after) = raw_client(&addr, b"guess", &hello(STORE, 0, 0, 0), &get(b'2'));
    assert_eq!(after, b"", "a wrong token got bytes after the challenge");
    expected.push("wrong job token");
    // A get where the proof belongs.
    let mut s = connect(&addr);
    s.write_all(&frame(HELLO, &hello(STORE, 0, 0, 0))).unwrap();
    assert_eq!(read_frame(&mut s).unwrap().0, CHALLENGE);
    s.write_all(&get(b'2')).unwrap();
    assert_eq!(until_closed(&mut s), b"");
    expected.push("StoreGet frame where a Proof belongs");
    // A rank's hello on the store's port.
    let (_, after) = {
        let mut s = connect(&addr);
        s.write_all(&frame(HELLO, &hello(MESH, 1, 2, 0))).unwrap();
        ((), until_closed(&mut s))
    };
    assert_eq!(after, b"");
    expected.push("purpose 1 on a store client port");
    // Garbage, a truncated hello, a forged length.
    assert_eq!(
        hostile(&addr, b"\x00\x01garbage-garbage-garbage-garbage", false),
        b""
    );
    expected.push("bad magic");
    let h = frame(HELLO, &hello(STORE, 0, 0, 0));
    assert_eq!(hostile(&addr, &h[..HEADER + 3], true), b"");
    expected.push("after 3 of 57 body bytes");
    assert_eq!(
        hostile(&addr, &forged_header(STORE_SET, 1 << 40), false),
        b""
    );
    expected.push("exceeds the limit");
    // The crate's own client with a wrong token.
    let bad = TcpStore::connect(&addr, "wrong", Duration::from_secs(10));
    assert!(matches!(bad, Err(CommError::Auth { .. })), "{bad:?}");
    expected.push("wrong job token");
    // A stalled one stays open while a legitimate client is served.
    let mut stalled = connect(&addr);
    stalled.write_all(&h[..7]).unwrap();

    let b = TcpStore::connect(&addr, token, Duration::from_secs(10)).unwrap();
    assert_eq!(b.get("k", Duration::from_secs(5)).unwrap(), secret);
    a.set("k2", b"v2").unwrap();
    assert_eq!(b.get("k2", Duration::from_secs(5)).unwrap(), b"v2");

    let refusals = server.refusals();
    assert_eq!(refusals.len(), expected.len(), "{refusals:#?}");
    for (r, want) in refusals.iter().zip(&expected) {
        assert!(r.starts_with("127.0.0.1:"), "no address: {r}");
        assert!(r.contains(want), "expected {want:?} in {r}");
        let from = r.split(": ").next().unwrap();
        assert_eq!(warnings_about(from).len(), 1, "{from}: {:#?}", LOG.lock());
    }
    drop(stalled);
    // Neither the token nor a stored value is ever logged.
    let log = LOG.lock().unwrap();
    assert!(!log
        .iter()
        .any(|l| l.contains(token) || l.contains("the-address")));
}

#[test]
fn tcp_store_client_refuses_a_server_that_does_not_know_the_token() {
    let token = "store-client-token-0123456789";
    let (fake, seen) = fake_listener(STORE);
    let err = TcpStore::connect(&fake, token, Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(&err, CommError::Auth { reason, .. } if reason.contains("did not prove")),
        "{err}"
    );
    let seen = seen.join().unwrap();
    assert!(
        !contains(&seen, token.as_bytes()),
        "the token crossed the wire"
    );
    assert_eq!(
        seen.len(),
        (HEADER + 57) + (HEADER + 32),
        "no request after the proof"
    );
}

#[test]
fn tcp_store_client_refuses_a_forged_reply_length() {
    // A server that knows the token answers a get with a header of 1 TiB.
    let token = "forged-reply-token";
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let (_, h) = read_frame(&mut s).unwrap();
        let c = challenge(STORE, 0);
        s.write_all(&frame(CHALLENGE, &c)).unwrap();
        let (_, proof) = read_frame(&mut s).unwrap();
        assert_eq!(proof, mac(token.as_bytes(), &h, &c, b"client"));
        s.write_all(&frame(ACK, &mac(token.as_bytes(), &h, &c, b"server")))
            .unwrap();
        let (kind, _) = read_frame(&mut s).unwrap();
        assert_eq!(kind, STORE_GET);
        s.write_all(&forged_header(6, 1 << 40)).unwrap();
        until_closed(&mut s)
    });
    let client = TcpStore::connect(&addr, token, Duration::from_secs(10)).unwrap();
    let err = client.get("k", Duration::from_secs(1)).unwrap_err();
    assert!(
        matches!(err, CommError::FrameTooLarge { len, limit, .. } if len == 1 << 40 && limit == 64 << 10),
        "{err}"
    );
    drop(client);
    server.join().unwrap();
}
