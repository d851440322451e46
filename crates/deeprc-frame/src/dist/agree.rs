//! Agreeing on success: a rank that fails a local step (reading its share
//! of a file) tells the others in one all-gather, so that every rank stops
//! at once with an error naming the failing rank and its cause, instead of
//! the others waiting for it in the next collective until the communicator
//! times out or reports a lost peer.
//!
//! ```text
//!  rank r: local step -> Ok | Err(e)
//!          all_gather(empty | encode(e))        (one collective, always)
//!          all empty        -> Ok
//!          own Err(e)       -> Err(e)           (the root cause itself)
//!          else first failing rank f -> Err(FailedOnRank { f, decode(e_f) })
//! ```

use crate::error::{FrameError, Result};
use crate::wire::{put_bytes, WireReader};
use bytes::Bytes;
use deeprc_comm::Communicator;
use std::path::PathBuf;

const MALFORMED: u8 = 1;
const DATA_MISSING: u8 = 2;
const OTHER: u8 = 3;

/// Collective: every rank passes the result of its local step; all get
/// their value back when every rank succeeded. Otherwise a failing rank
/// gets its own error and every other rank a
/// [`FrameError::FailedOnRank`] naming the first failing rank and its error.
pub(crate) fn agree<T>(comm: &dyn Communicator, op: &'static str, local: Result<T>) -> Result<T> {
    if comm.size() == 1 {
        return local;
    }
    let mine = match &local {
        Ok(_) => Bytes::new(),
        // Encoding fails only for a message past 4 GiB: then say less, but
        // never skip the collective.
        Err(e) => Bytes::from(encode_error(op, e).unwrap_or_else(|_| vec![OTHER, 0, 0, 0, 0])),
    };
    let all = comm.all_gather(mine)?;
    let value = local?;
    for (rank, bytes) in all.iter().enumerate() {
        if !bytes.is_empty() {
            return Err(FrameError::FailedOnRank {
                op,
                rank,
                source: Box::new(decode_error(op, rank, bytes)?),
            });
        }
    }
    Ok(value)
}

/// An error as bytes: a tag, then its fields (never empty).
pub(crate) fn encode_error(op: &'static str, e: &FrameError) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    match e {
        FrameError::Malformed {
            file,
            line,
            column,
            reason,
        } => {
            b.push(MALFORMED);
            put_bytes(&mut b, op, path(file).as_bytes())?;
            b.push(u8::from(line.is_some()));
            b.extend_from_slice(&(line.unwrap_or(0) as u64).to_le_bytes());
            put_bytes(&mut b, op, column.as_bytes())?;
            put_bytes(&mut b, op, reason.as_bytes())?;
        }
        FrameError::DataMissing { path: p, expected } => {
            b.push(DATA_MISSING);
            put_bytes(&mut b, op, path(p).as_bytes())?;
            put_bytes(&mut b, op, expected.as_bytes())?;
        }
        other => {
            b.push(OTHER);
            put_bytes(&mut b, op, other.to_string().as_bytes())?;
        }
    }
    Ok(b)
}

/// The error `rank` encoded, every length checked.
pub(crate) fn decode_error(op: &'static str, rank: usize, bytes: &[u8]) -> Result<FrameError> {
    let mut r = WireReader::new(op, "error report", rank, bytes);
    let e = match r.u8("the error kind")? {
        MALFORMED => {
            let file = PathBuf::from(r.string("the file")?);
            let known = r.u8("the line flag")?;
            let line = r.u64("the line")?;
            let line = match known {
                0 => None,
                1 => Some(usize::try_from(line).map_err(|_| r.error(format_args!("line {line}")))?),
                k => return Err(r.error(format_args!("line flag {k}"))),
            };
            FrameError::Malformed {
                file,
                line,
                column: r.string("the column")?,
                reason: r.string("the reason")?,
            }
        }
        DATA_MISSING => FrameError::DataMissing {
            path: PathBuf::from(r.string("the path")?),
            expected: r.string("what is expected")?,
        },
        OTHER => FrameError::Remote(r.string("the message")?),
        k => return Err(r.error(format_args!("unknown error kind {k}"))),
    };
    if !r.is_empty() {
        return Err(r.error("bytes after the error"));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<FrameError> {
        vec![
            FrameError::Malformed {
                file: "/d/a.csv".into(),
                line: Some(12),
                column: "b".into(),
                reason: "bad".into(),
            },
            FrameError::Malformed {
                file: "/d/a.csv".into(),
                line: None,
                column: "?".into(),
                reason: "no line".into(),
            },
            FrameError::DataMissing {
                path: "/d/gone.parquet".into(),
                expected: "a Parquet file".into(),
            },
            FrameError::invalid("read", "something else"),
        ]
    }

    #[test]
    fn errors_cross_ranks_with_their_fields() {
        for e in samples() {
            let back = decode_error("t", 1, &encode_error("t", &e).unwrap()).unwrap();
            assert_eq!(back.to_string(), e.to_string());
            match (&e, &back) {
                (FrameError::Malformed { line: a, .. }, FrameError::Malformed { line: b, .. }) => {
                    assert_eq!(a, b)
                }
                (
                    FrameError::DataMissing { path: a, .. },
                    FrameError::DataMissing { path: b, .. },
                ) => {
                    assert_eq!(a, b)
                }
                (FrameError::InvalidArgument { .. }, FrameError::Remote(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn truncated_or_forged_error_reports_are_typed_errors() {
        for e in samples() {
            let good = encode_error("t", &e).unwrap();
            for cut in 0..good.len() {
                match decode_error("t", 2, &good[..cut]) {
                    Err(FrameError::MalformedPeerData { rank: 2, what, .. }) => {
                        assert_eq!(what, "error report")
                    }
                    other => panic!("cut at {cut} of {e}: {other:?}"),
                }
            }
            let mut longer = good.clone();
            longer.push(0);
            assert!(decode_error("t", 2, &longer).is_err());
            let mut kind = good.clone();
            kind[0] = 99;
            assert!(decode_error("t", 2, &kind).is_err());
        }
        let mut flag = encode_error("t", &samples()[0]).unwrap();
        flag[1 + 4 + "/d/a.csv".len()] = 7;
        let e = decode_error("t", 2, &flag).unwrap_err();
        assert!(e.to_string().contains("line flag 7"), "{e}");
    }

    #[test]
    fn every_rank_gets_the_first_failure() {
        let out = deeprc_comm::local::launch(3, |comm| {
            let me = deeprc_comm::Communicator::rank(&comm);
            let local = if me == 0 {
                Ok(me)
            } else {
                Err(FrameError::Malformed {
                    file: format!("/d/f{me}.csv").into(),
                    line: Some(me),
                    column: "a".into(),
                    reason: "bad".into(),
                })
            };
            Ok::<_, FrameError>(agree(&comm, "read_csv", local).unwrap_err())
        })
        .unwrap();
        match &out[0] {
            FrameError::FailedOnRank { op, rank, source } => {
                assert_eq!((*op, *rank), ("read_csv", 1));
                assert!(matches!(
                    **source,
                    FrameError::Malformed { line: Some(1), .. }
                ));
            }
            other => panic!("{other:?}"),
        }
        // The failing ranks keep their own errors.
        assert!(matches!(
            out[1],
            FrameError::Malformed { line: Some(1), .. }
        ));
        assert!(matches!(
            out[2],
            FrameError::Malformed { line: Some(2), .. }
        ));
        let ok = deeprc_comm::local::launch(2, |comm| agree(&comm, "t", Ok(5))).unwrap();
        assert_eq!(ok, vec![5, 5]);
    }
}
