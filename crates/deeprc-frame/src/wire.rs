//! The small hand-rolled messages ranks send each other besides Arrow IPC
//! streams (sort samples, error reports), written little-endian with `u32`
//! length prefixes and read back with every length checked.
//!
//! ```text
//!  bytes := item*        item := u8 | u32 | u64 | len:u32 payload[len]
//! ```
//!
//! Peer data is untrusted: a truncated, corrupt or forged message becomes a
//! [`FrameError::MalformedPeerData`] naming the operation, the message, the
//! sending rank and the byte offset, never a panic or a silently shorter
//! result.

use crate::error::{FrameError, Result};

/// Appends `payload` with its `u32` length.
///
/// # Errors
/// [`FrameError::InvalidArgument`] when `payload` is longer than `u32::MAX`.
pub(crate) fn put_bytes(buf: &mut Vec<u8>, op: &'static str, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        FrameError::invalid(
            op,
            format!(
                "a message item of {} bytes does not fit a u32 length",
                payload.len()
            ),
        )
    })?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(())
}

/// Reads one message from one rank; every read checks the bytes left.
pub(crate) struct WireReader<'a> {
    op: &'static str,
    what: &'static str,
    rank: usize,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> WireReader<'a> {
    /// A reader of message `what` that `rank` sent to operation `op`.
    pub(crate) fn new(op: &'static str, what: &'static str, rank: usize, buf: &'a [u8]) -> Self {
        Self {
            op,
            what,
            rank,
            buf,
            pos: 0,
        }
    }

    /// `true` when every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The error for this message: `reason`, at the current offset.
    pub(crate) fn error(&self, reason: impl std::fmt::Display) -> FrameError {
        FrameError::MalformedPeerData {
            op: self.op,
            what: self.what,
            rank: self.rank,
            reason: format!("{reason} (at byte {} of {})", self.pos, self.buf.len()),
        }
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(self.error(format_args!(
                "{field} needs {n} bytes but {left} are left (truncated or forged)"
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    /// One byte.
    pub(crate) fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A little-endian `u32`.
    pub(crate) fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u64`.
    pub(crate) fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A `u32`-length-prefixed byte string.
    pub(crate) fn bytes(&mut self, field: &str) -> Result<&'a [u8]> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    /// A `u32`-length-prefixed UTF-8 string.
    pub(crate) fn string(&mut self, field: &str) -> Result<String> {
        let start = self.pos;
        let b = self.bytes(field)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => {
                self.pos = start;
                Err(self.error(format_args!("{field} is not UTF-8: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let mut buf = vec![7u8];
        buf.extend_from_slice(&9u32.to_le_bytes());
        buf.extend_from_slice(&u64::MAX.to_le_bytes());
        put_bytes(&mut buf, "t", b"abc").unwrap();
        put_bytes(&mut buf, "t", "héllo".as_bytes()).unwrap();
        let mut r = WireReader::new("t", "test message", 3, &buf);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u32("b").unwrap(), 9);
        assert_eq!(r.u64("c").unwrap(), u64::MAX);
        assert_eq!(r.bytes("d").unwrap(), b"abc");
        assert_eq!(r.string("e").unwrap(), "héllo");
        assert!(r.is_empty());
    }

    #[test]
    fn every_truncation_and_forged_length_is_a_typed_error() {
        let mut good = Vec::new();
        good.extend_from_slice(&5u64.to_le_bytes());
        put_bytes(&mut good, "t", b"payload").unwrap();
        let read = |b: &[u8]| -> Result<()> {
            let mut r = WireReader::new("t", "test message", 2, b);
            r.u64("count")?;
            r.string("text")?;
            Ok(())
        };
        read(&good).unwrap();
        for cut in 0..good.len() {
            match read(&good[..cut]) {
                Err(FrameError::MalformedPeerData { op, what, rank, .. }) => {
                    assert_eq!((op, what, rank), ("t", "test message", 2))
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        for forged in [8u32, 100, u32::MAX] {
            let mut b = good.clone();
            b[8..12].copy_from_slice(&forged.to_le_bytes());
            let e = read(&b).unwrap_err();
            assert!(e.to_string().contains("text needs"), "{e}");
        }
        let mut bad_utf8 = good.clone();
        let end = bad_utf8.len();
        bad_utf8[end - 1] = 0xff;
        let e = read(&bad_utf8).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }
}
