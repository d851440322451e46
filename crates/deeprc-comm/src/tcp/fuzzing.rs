//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden, and
//! free to change with the decoders they reach).
//!
//! Each takes the bytes a peer could send and runs the decoder that reads
//! them, as the tcp backend does, over an in-memory connection whose reads
//! come from the input (in pieces of the sizes the input's first byte
//! chooses, so that short reads are exercised) and whose writes go nowhere.

use super::{
    auth::{self, Claim, Purpose},
    store,
    wire::{self, Kind, AUTH_LIMIT, CONTROL_LIMIT, HEADER_LEN},
};
use std::io::{self, Read, Write};

/// The job token of the fuzzed handshakes.
const TOKEN: &[u8] = b"fuzz-token-0123456789";

/// An in-memory connection: reads from the input, at most `chunk` bytes
/// at a time; writes are counted and dropped.
#[derive(Debug)]
pub struct Stream<'a> {
    input: &'a [u8],
    chunk: usize,
    written: usize,
}

impl<'a> Stream<'a> {
    /// A connection that delivers `input` in reads as large as asked.
    pub fn new(input: &'a [u8]) -> Self {
        Self::chunked(input, usize::MAX)
    }

    /// A connection that delivers `input` at most `chunk` bytes per read.
    pub fn chunked(input: &'a [u8], chunk: usize) -> Self {
        Self {
            input,
            chunk: chunk.max(1),
            written: 0,
        }
    }
}

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Splits the fuzz input into a selector byte and the connection's bytes.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, data),
    }
}

/// The read size chosen by the selector's low bits: 1, 3, 29 bytes or
/// everything at once.
fn chunk(sel: u8) -> usize {
    [1, 3, HEADER_LEN, usize::MAX][usize::from(sel & 3)]
}

/// The frames of a rank's connection after its handshake, read as a
/// receive thread reads them: header (magic, version, kind, limit), body
/// into a reused buffer, then the dispatch on the kind. A header that
/// decodes re-encodes to the same 29 bytes.
pub fn frames(data: &[u8]) {
    let (sel, bytes) = split(data);
    let limit = [AUTH_LIMIT, CONTROL_LIMIT, 1 << 20, u64::MAX][usize::from(sel >> 2 & 3)];
    let mut conn = Stream::chunked(bytes, chunk(sel));
    let mut buf = Vec::new();
    let mut at = 0usize;
    loop {
        let h = match wire::read_header(&mut conn, limit, "fuzz") {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        assert!(h.len <= limit, "a header over the limit was accepted");
        let raw = &bytes[at..at + HEADER_LEN];
        assert_eq!(&wire::encode_header(&h)[..], raw, "header round trip");
        let body = match wire::read_body_into(&mut conn, h.len, "fuzz", std::mem::take(&mut buf)) {
            Ok(b) => b,
            Err(_) => return,
        };
        assert_eq!(body.len() as u64, h.len);
        at += HEADER_LEN + body.len();
        match h.kind {
            Kind::Data => buf = body,
            Kind::Abort => {
                let _ = String::from_utf8_lossy(&body);
                return;
            }
            _ => return,
        }
    }
}

/// The listener's side of the handshake (hello, challenge, proof) against
/// the input as the dialer's bytes.
pub fn auth_server(data: &[u8]) {
    let (sel, bytes) = split(data);
    let purpose = if sel & 4 == 0 {
        Purpose::Mesh
    } else {
        Purpose::Store
    };
    let mut conn = Stream::chunked(bytes, chunk(sel));
    if let Ok(v) = auth::server(&mut conn, TOKEN, purpose, 1, "fuzz") {
        // Only a dialer that knows the token gets here (never the fuzzer).
        let _ = v.accept(&mut conn, TOKEN, "fuzz");
    }
}

/// The dialer's side of the handshake (challenge, ack) against the input
/// as the listener's bytes.
pub fn auth_client(data: &[u8]) {
    let (sel, bytes) = split(data);
    let purpose = if sel & 4 == 0 {
        Purpose::Mesh
    } else {
        Purpose::Store
    };
    let claim = Claim {
        rank: 2,
        size: 4,
        target: 1,
    };
    let mut conn = Stream::chunked(bytes, chunk(sel));
    let _ = auth::client(&mut conn, TOKEN, purpose, claim, "fuzz");
}

/// The store server's request loop against the input as an authenticated
/// client's bytes (`StoreGet` does not wait for missing keys).
pub fn store_requests(data: &[u8]) {
    store::fuzz_requests(data);
}

fn frame(kind: Kind, ctx: u64, tag: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    wire::write_frame(&mut v, kind, ctx, tag, body).expect("writing to a vector");
    v
}

/// Inputs to start the target `target` from (its first byte included):
/// well-formed frames and handshake messages, so the fuzzer starts past
/// the magic and the lengths.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let with = |sel: u8, parts: &[Vec<u8>]| {
        let mut v = vec![sel];
        parts.iter().for_each(|p| v.extend_from_slice(p));
        v
    };
    let hello: Vec<u8> = [1u8]
        .into_iter()
        .chain(2u64.to_le_bytes())
        .chain(4u64.to_le_bytes())
        .chain(1u64.to_le_bytes())
        .chain([7u8; 32])
        .collect();
    let challenge: Vec<u8> = [1u8]
        .into_iter()
        .chain(1u64.to_le_bytes())
        .chain([9u8; 32])
        .collect();
    match target {
        "tcp_frames" => (0..16u8)
            .map(|sel| {
                with(
                    sel,
                    &[
                        frame(Kind::Data, 1, 2, b"payload"),
                        frame(Kind::Data, 1, 3, &[0u8; 100]),
                        frame(Kind::Abort, 0, 0, b"rank 1 left"),
                    ],
                )
            })
            .collect(),
        "tcp_auth_server" => [0u8, 4, 1, 7]
            .into_iter()
            .map(|sel| {
                with(
                    sel,
                    &[
                        frame(Kind::Hello, 0, 0, &hello),
                        frame(Kind::Proof, 0, 0, &[3u8; 32]),
                    ],
                )
            })
            .collect(),
        "tcp_auth_client" => [0u8, 4, 1, 7]
            .into_iter()
            .map(|sel| {
                with(
                    sel,
                    &[
                        frame(Kind::Challenge, 0, 0, &challenge),
                        frame(Kind::Ack, 0, 0, &[3u8; 32]),
                    ],
                )
            })
            .collect(),
        "store_requests" => {
            let mut set = vec![5u8];
            set.extend_from_slice(b"addr/0127.0.0.1:1234");
            vec![
                [
                    frame(Kind::StoreSet, 0, 0, &set),
                    frame(Kind::StoreGet, 0, 10, b"addr/0"),
                    frame(Kind::StoreGet, 0, 0, b"missing"),
                ]
                .concat(),
                frame(Kind::StoreGet, 0, u64::MAX, b"k"),
            ]
        }
        _ => Vec::new(),
    }
}
