//! The frame format on a Deep RC TCP connection.
//!
//! ```text
//! +-------+------+----------+----------+----------+----------------+
//! | magic | kind | ctx: u64 | tag: u64 | len: u64 | body (len B)   |
//! | DRC2  |  u8  |    LE    |    LE    |    LE    |                |
//! +-------+------+----------+----------+----------+----------------+
//! ```
//!
//! Every frame carries the protocol version: the last byte of the magic
//! (`'0' + PROTOCOL_VERSION`). A frame of another version (`DRC1`, the
//! plaintext-token protocol, or a newer one) is a
//! [`CommError::VersionMismatch`], anything else that does not start with
//! `DRC` a [`CommError::MalformedFrame`].
//!
//! The length is checked against the receiver's limit before any memory is
//! allocated for the body.

use crate::{CommError, Result};
use std::io::{self, IoSlice, Read, Write};

/// The version of the wire protocol: 1 sent the job token in clear, 2
/// authenticates both ends by challenge-response (see `auth.rs`).
pub(crate) const PROTOCOL_VERSION: u8 = 2;
pub(crate) const MAGIC: [u8; 4] = [b'D', b'R', b'C', b'0' + PROTOCOL_VERSION];
pub(crate) const HEADER_LEN: usize = 29;
/// The largest store-control body accepted (a key and its value).
pub(crate) const CONTROL_LIMIT: u64 = 64 << 10;
/// The largest handshake body accepted.
pub(crate) const AUTH_LIMIT: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Data = 0,
    Hello = 1,
    Ack = 2,
    Abort = 3,
    StoreSet = 4,
    StoreGet = 5,
    StoreValue = 6,
    StoreMissing = 7,
    Challenge = 8,
    Proof = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Data,
            1 => Kind::Hello,
            2 => Kind::Ack,
            3 => Kind::Abort,
            4 => Kind::StoreSet,
            5 => Kind::StoreGet,
            6 => Kind::StoreValue,
            7 => Kind::StoreMissing,
            8 => Kind::Challenge,
            9 => Kind::Proof,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) kind: Kind,
    pub(crate) ctx: u64,
    pub(crate) tag: u64,
    pub(crate) len: u64,
}

pub(crate) fn encode_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[..4].copy_from_slice(&MAGIC);
    b[4] = h.kind as u8;
    b[5..13].copy_from_slice(&h.ctx.to_le_bytes());
    b[13..21].copy_from_slice(&h.tag.to_le_bytes());
    b[21..29].copy_from_slice(&h.len.to_le_bytes());
    b
}

/// Writes one frame: header and body in one write (a vectored one for large
/// bodies, which are not copied), so that the header never travels alone.
pub(crate) fn write_frame(
    w: &mut impl Write,
    kind: Kind,
    ctx: u64,
    tag: u64,
    body: &[u8],
) -> io::Result<()> {
    let header = encode_header(&Header {
        kind,
        ctx,
        tag,
        len: body.len() as u64,
    });
    if body.len() <= 16 << 10 {
        let mut buf = Vec::with_capacity(HEADER_LEN + body.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(body);
        w.write_all(&buf)
    } else {
        write_all_vectored(w, &mut [IoSlice::new(&header), IoSlice::new(body)])
    }
}

/// `Write::write_all_vectored`, which is not stable yet.
fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write the whole frame",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a header and checks magic, kind and `len <= limit`.
/// `Ok(None)` means the connection was closed cleanly before a frame.
pub(crate) fn read_header(r: &mut impl Read, limit: u64, from: &str) -> Result<Option<Header>> {
    let mut b = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match r.read(&mut b[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => {
                return Err(CommError::MalformedFrame {
                    from: from.to_string(),
                    reason: format!(
                        "connection closed inside a header ({filled} of {HEADER_LEN} bytes)"
                    ),
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CommError::io(format!("reading a frame from {from}"), e)),
        }
    }
    if b[..3] == MAGIC[..3] && b[3] != MAGIC[3] {
        return Err(CommError::VersionMismatch {
            from: from.to_string(),
            ours: PROTOCOL_VERSION,
            theirs: b[3].wrapping_sub(b'0'),
        });
    }
    if b[..4] != MAGIC {
        return Err(CommError::MalformedFrame {
            from: from.to_string(),
            reason: format!("bad magic {:02x?}", &b[..4]),
        });
    }
    let kind = Kind::from_u8(b[4]).ok_or_else(|| CommError::MalformedFrame {
        from: from.to_string(),
        reason: format!("unknown frame kind {}", b[4]),
    })?;
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let h = Header {
        kind,
        ctx: u64_at(5),
        tag: u64_at(13),
        len: u64_at(21),
    };
    if h.len > limit {
        return Err(CommError::FrameTooLarge {
            len: h.len,
            limit,
            from: from.to_string(),
        });
    }
    Ok(Some(h))
}

/// Reads a body of `len` bytes.
pub(crate) fn read_body(r: &mut impl Read, len: u64, from: &str) -> Result<Vec<u8>> {
    read_body_into(r, len, from, Vec::new())
}

/// Bytes of a fresh buffer made ready (zeroed) ahead of the data: a peer
/// that announces a large frame and sends less never makes this rank commit
/// much more memory than it sent.
const FILL_AHEAD: usize = 4 << 20;

/// [`read_body`] into `v`, reusing its capacity and its initialized bytes
/// (a pooled buffer is not zeroed again). Reads go straight to the socket
/// with as much room as the rest of the body: few large reads, not the
/// doubling small reads of `read_to_end`.
pub(crate) fn read_body_into(
    r: &mut impl Read,
    len: u64,
    from: &str,
    mut v: Vec<u8>,
) -> Result<Vec<u8>> {
    let too_large = |e: String| {
        CommError::io(
            format!("allocating {len} bytes for a frame from {from}"),
            io::Error::new(io::ErrorKind::OutOfMemory, e),
        )
    };
    let len = usize::try_from(len).map_err(|e| too_large(e.to_string()))?;
    if v.capacity() < len {
        v.clear();
        v.try_reserve_exact(len)
            .map_err(|e| too_large(e.to_string()))?;
    }
    v.truncate(len);
    let mut got = 0;
    while got < len {
        let ready = (got + FILL_AHEAD).min(len);
        if v.len() < ready {
            v.resize(ready, 0);
        }
        match r.read(&mut v[got..]) {
            Ok(0) => {
                return Err(CommError::MalformedFrame {
                    from: from.to_string(),
                    reason: format!("connection closed after {got} of {len} body bytes"),
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(CommError::io(
                    format!("reading a frame body from {from}"),
                    e,
                ))
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most 7000 bytes per call.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(7000);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            self.write(first)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn round_trip_and_limits() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Data, 7, 9, b"hello").unwrap();
        // A large body goes through the vectored path, even in pieces.
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut pieces = Trickle(Vec::new());
        write_frame(&mut pieces, Kind::Data, 1, 2, &big).unwrap();
        let mut r = &pieces.0[..];
        let h = read_header(&mut r, 1 << 20, "t").unwrap().unwrap();
        assert_eq!(read_body(&mut r, h.len, "t").unwrap(), big);
        // Into a used buffer, longer or shorter than the body.
        for old in [
            vec![7u8; 200_000],
            vec![7u8; 10],
            Vec::with_capacity(150_000),
        ] {
            let mut r = &pieces.0[..];
            let h = read_header(&mut r, 1 << 20, "t").unwrap().unwrap();
            assert_eq!(read_body_into(&mut r, h.len, "t", old).unwrap(), big);
        }
        let mut r = &buf[..];
        let h = read_header(&mut r, 100, "t").unwrap().unwrap();
        assert_eq!((h.kind, h.ctx, h.tag, h.len), (Kind::Data, 7, 9, 5));
        assert_eq!(read_body(&mut r, h.len, "t").unwrap(), b"hello");
        assert!(read_header(&mut r, 100, "t").unwrap().is_none());

        let mut r = &buf[..];
        assert!(matches!(
            read_header(&mut r, 4, "t"),
            Err(CommError::FrameTooLarge {
                len: 5,
                limit: 4,
                ..
            })
        ));
        // The plaintext-token protocol (DRC1) and newer ones: a typed error.
        for v in [b'1', b'3'] {
            let mut other = buf.clone();
            other[3] = v;
            assert!(matches!(
                read_header(&mut &other[..], 100, "t"),
                Err(CommError::VersionMismatch { ours: 2, theirs, .. }) if theirs == v - b'0'
            ));
        }
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(matches!(
            read_header(&mut &bad[..], 100, "t"),
            Err(CommError::MalformedFrame { .. })
        ));
        assert!(matches!(
            read_body(&mut &b"abc"[..], 5, "t"),
            Err(CommError::MalformedFrame { .. })
        ));
    }
}
