//! The frames between the agent and its worker processes, over a Unix
//! socket: `[u32 length][u8 kind][payload]`, little-endian, hand-encoded
//! (a null task is a few dozen bytes each way).
//!
//! Every frame is length-checked (against the pilot's message limit) and
//! decoded field by field, to its last byte: a frame that is too short or
//! too long is an error. A worker's `Hello` carries [`PROTOCOL_VERSION`],
//! and the agent refuses a worker that speaks another version (a worker
//! executable built from another deeprc-pilot) with a message saying so.
//!
//! | version | change |
//! |---|---|
//! | 1 | (no version field) |
//! | 2 | `Hello` ends with the version; `Done` ends with the rank's resource usage |

use crate::{
    usage::{CpuTimes, RankUsage, RssScope},
    GpuShare,
};
use std::io::{self, Read, Write};

pub(crate) const HELLO: u8 = 1;
pub(crate) const RUN: u8 = 2;
pub(crate) const EXIT: u8 = 3;
pub(crate) const DONE: u8 = 4;

/// The version of these frames (see the module docs).
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// The largest frame accepted by default (arguments and results included):
/// 1 GiB. A pilot sets its own with
/// [`PilotDescription::max_message_bytes`](crate::PilotDescription::max_message_bytes).
pub(crate) const DEFAULT_MAX_FRAME: u64 = 1 << 30;

/// The smallest frame limit a pilot may set (the fixed fields of the
/// largest frames fit many times over).
pub(crate) const MIN_MAX_FRAME: u64 = 4096;

/// The bytes of a `Done` frame besides its payload: the length and kind,
/// the fixed fields and the payload's length.
pub(crate) const DONE_OVERHEAD: u64 = 4 + 1 + 8 + 4 + 4 + 8 + 8 + 8 + 1 + 4 + USAGE_BYTES;

/// The encoded size of a rank's resource usage in a `Done` frame.
const USAGE_BYTES: u64 = 1 + 8 + 8 + 8 + 1;

/// Builds one frame.
pub(crate) struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    pub(crate) fn new(kind: u8) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        Self { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn f64(&mut self, v: f64) -> &mut Self {
        self.u64(v.to_bits())
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }

    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// The frame's length on the wire so far, its length prefix included.
    pub(crate) fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// The finished frame.
    pub(crate) fn finish(&mut self) -> &[u8] {
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        &self.buf
    }
}

/// Reads the fields of one frame.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated frame")
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(short)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn f64(&mut self) -> io::Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub(crate) fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub(crate) fn str(&mut self) -> io::Result<&'a str> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "invalid UTF-8 in frame"))
    }

    /// Fails unless every byte of the frame was read.
    pub(crate) fn end(&self) -> io::Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} unexpected bytes at the end of a frame",
                    self.buf.len() - self.pos
                ),
            ))
        }
    }
}

/// How far ahead of the bytes received a frame's buffer is allocated.
const FILL_AHEAD: usize = 4 << 20;

/// Reads one frame of at most `max` bytes (its length prefix included)
/// into `buf` and returns its kind; `Ok(None)` at a clean end of stream.
pub(crate) fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>, max: u64) -> io::Result<Option<u8>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len as u64 + 4 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {} bytes refused (limit {max})", len as u64 + 4),
        ));
    }
    // Filled as the bytes arrive, at most FILL_AHEAD ahead of them: a peer
    // that announces a large frame and sends less never makes this side
    // allocate much more than it sent (the fuzzer's 5-byte frame claiming
    // 4 GiB used to allocate 4 GiB before reading a byte of it).
    buf.clear();
    while buf.len() < len {
        let want = (len - buf.len()).min(FILL_AHEAD);
        let start = buf.len();
        buf.resize(start + want, 0);
        r.read_exact(&mut buf[start..])?;
    }
    let kind = buf[0];
    buf.drain(..1);
    Ok(Some(kind))
}

/// How a worker should build a multi-rank task's communicator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CommSpec {
    /// One rank: made on first use.
    None,
    /// `tcp` with a file store in `store` and this job token.
    Tcp {
        store: String,
        token: String,
        timeout_ms: u64,
        connect_timeout_ms: u64,
        max_frame_bytes: u64,
    },
}

/// One rank of a function task, sent to a worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunMsg<'a> {
    pub(crate) task: u64,
    pub(crate) attempt: u32,
    pub(crate) rank: u32,
    pub(crate) size: u32,
    pub(crate) node: u32,
    pub(crate) func: &'a str,
    pub(crate) args: &'a [u8],
    pub(crate) cpus: Vec<usize>,
    pub(crate) gpus: Vec<GpuShare>,
    pub(crate) sandbox: &'a str,
    pub(crate) comm: CommSpec,
}

impl RunMsg<'_> {
    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.task)
            .u32(self.attempt)
            .u32(self.rank)
            .u32(self.size)
            .u32(self.node)
            .str(self.func)
            .bytes(self.args)
            .u32(self.cpus.len() as u32);
        for &c in &self.cpus {
            e.u32(c as u32);
        }
        e.u32(self.gpus.len() as u32);
        for g in &self.gpus {
            e.u32(g.gpu as u32).u32(g.device as u32).f64(g.fraction);
        }
        e.str(self.sandbox);
        match &self.comm {
            CommSpec::None => {
                e.u8(0);
            }
            CommSpec::Tcp {
                store,
                token,
                timeout_ms,
                connect_timeout_ms,
                max_frame_bytes,
            } => {
                e.u8(1)
                    .str(store)
                    .str(token)
                    .u64(*timeout_ms)
                    .u64(*connect_timeout_ms)
                    .u64(*max_frame_bytes);
            }
        }
    }

    pub(crate) fn decode<'b>(d: &mut Dec<'b>) -> io::Result<RunMsg<'b>> {
        let task = d.u64()?;
        let attempt = d.u32()?;
        let rank = d.u32()?;
        let size = d.u32()?;
        let node = d.u32()?;
        let func = d.str()?;
        let args = d.bytes()?;
        let n = d.u32()? as usize;
        let mut cpus = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            cpus.push(d.u32()? as usize);
        }
        let n = d.u32()? as usize;
        let mut gpus = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            gpus.push(GpuShare {
                gpu: d.u32()? as usize,
                device: d.u32()? as usize,
                fraction: d.f64()?,
            });
        }
        let sandbox = d.str()?;
        let comm = match d.u8()? {
            0 => CommSpec::None,
            _ => CommSpec::Tcp {
                store: d.str()?.to_string(),
                token: d.str()?.to_string(),
                timeout_ms: d.u64()?,
                connect_timeout_ms: d.u64()?,
                max_frame_bytes: d.u64()?,
            },
        };
        d.end()?;
        Ok(RunMsg {
            task,
            attempt,
            rank,
            size,
            node,
            func,
            args,
            cpus,
            gpus,
            sandbox,
            comm,
        })
    }
}

/// How a rank ended, as a worker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok = 0,
    Error = 1,
    Panic = 2,
    Comm = 3,
    /// The result did not fit a frame: the payload is its size (u64).
    TooLarge = 4,
}

/// A rank's result, sent back by a worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DoneMsg {
    pub(crate) task: u64,
    pub(crate) attempt: u32,
    pub(crate) rank: u32,
    pub(crate) exec_start: u64,
    pub(crate) exec_end: u64,
    pub(crate) comm_ns: u64,
    pub(crate) status: Status,
    pub(crate) payload: Vec<u8>,
    /// What the rank used, as the worker measured it.
    pub(crate) usage: Option<RankUsage>,
}

impl DoneMsg {
    /// This message made to fit a frame of `max` bytes: a result too large
    /// becomes a [`Status::TooLarge`] report of its size; an error message
    /// too large is cut.
    pub(crate) fn fit(mut self, max: u64) -> DoneMsg {
        let size = self.payload.len() as u64;
        if DONE_OVERHEAD.saturating_add(size) <= max {
            return self;
        }
        if self.status == Status::Ok {
            self.status = Status::TooLarge;
            self.payload = size.to_le_bytes().to_vec();
        } else {
            const CUT: &[u8] = b" ... (cut to fit the message limit)";
            let keep = max.saturating_sub(DONE_OVERHEAD + CUT.len() as u64) as usize;
            self.payload.truncate(keep);
            self.payload.extend_from_slice(CUT);
        }
        self
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.task)
            .u32(self.attempt)
            .u32(self.rank)
            .u64(self.exec_start)
            .u64(self.exec_end)
            .u64(self.comm_ns)
            .u8(self.status as u8)
            .bytes(&self.payload);
        match &self.usage {
            None => {
                e.u8(0).u64(0).u64(0).u64(0).u8(0);
            }
            Some(u) => {
                e.u8(1)
                    .u64(u.cpu.user_ns)
                    .u64(u.cpu.sys_ns)
                    .u64(u.max_rss_kib)
                    .u8(match u.rss_scope {
                        RssScope::Task => 0,
                        RssScope::Process => 1,
                        RssScope::AtMost => 2,
                    });
            }
        }
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> io::Result<DoneMsg> {
        let msg = DoneMsg {
            task: d.u64()?,
            attempt: d.u32()?,
            rank: d.u32()?,
            exec_start: d.u64()?,
            exec_end: d.u64()?,
            comm_ns: d.u64()?,
            status: match d.u8()? {
                0 => Status::Ok,
                1 => Status::Error,
                2 => Status::Panic,
                4 => Status::TooLarge,
                _ => Status::Comm,
            },
            payload: d.bytes()?.to_vec(),
            usage: {
                let some = d.u8()?;
                let (user_ns, sys_ns, max_rss_kib, scope) = (d.u64()?, d.u64()?, d.u64()?, d.u8()?);
                (some == 1).then_some(RankUsage {
                    cpu: CpuTimes { user_ns, sys_ns },
                    max_rss_kib,
                    rss_scope: match scope {
                        1 => RssScope::Process,
                        2 => RssScope::AtMost,
                        _ => RssScope::Task,
                    },
                    thread: None,
                })
            },
        };
        d.end()?;
        Ok(msg)
    }
}

/// Writes a finished frame.
pub(crate) fn write_frame(w: &mut impl Write, e: &mut Enc) -> io::Result<()> {
    w.write_all(e.finish())
}

/// A `Run` of a multi-rank task with a GPU share and a tcp communicator:
/// the tests' message and a fuzzing seed.
pub(crate) fn sample_run() -> RunMsg<'static> {
    RunMsg {
        task: 7,
        attempt: 1,
        rank: 2,
        size: 4,
        node: 0,
        func: "allreduce",
        args: b"[1,2]",
        cpus: vec![0, 3],
        gpus: vec![crate::GpuShare {
            gpu: 0,
            device: 1,
            fraction: 0.25,
        }],
        sandbox: "/tmp/x",
        comm: CommSpec::Tcp {
            store: "/tmp/s".into(),
            token: "t".into(),
            timeout_ms: 1,
            connect_timeout_ms: 2,
            max_frame_bytes: 3,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_and_done_round_trip() {
        let run = sample_run();
        let mut e = Enc::new(RUN);
        run.encode(&mut e);
        let mut r = std::io::Cursor::new(e.finish().to_vec());
        let mut buf = Vec::new();
        assert_eq!(
            read_frame(&mut r, &mut buf, DEFAULT_MAX_FRAME).unwrap(),
            Some(RUN)
        );
        assert_eq!(RunMsg::decode(&mut Dec::new(&buf)).unwrap(), run);
        assert_eq!(
            read_frame(&mut r, &mut buf, DEFAULT_MAX_FRAME).unwrap(),
            None
        );

        let done = DoneMsg {
            task: 7,
            attempt: 1,
            rank: 2,
            exec_start: 10,
            exec_end: 20,
            comm_ns: 5,
            status: Status::Panic,
            payload: b"boom".to_vec(),
            usage: Some(RankUsage {
                cpu: CpuTimes {
                    user_ns: 3,
                    sys_ns: 4,
                },
                max_rss_kib: 5,
                rss_scope: RssScope::Task,
                thread: None,
            }),
        };
        let mut e = Enc::new(DONE);
        done.encode(&mut e);
        let mut r = std::io::Cursor::new(e.finish().to_vec());
        assert_eq!(
            read_frame(&mut r, &mut buf, DEFAULT_MAX_FRAME).unwrap(),
            Some(DONE)
        );
        assert_eq!(DoneMsg::decode(&mut Dec::new(&buf)).unwrap(), done);
        // Truncated input is an error, not a panic; so are extra bytes.
        assert!(DoneMsg::decode(&mut Dec::new(&buf[..5])).is_err());
        assert!(DoneMsg::decode(&mut Dec::new(&buf[..buf.len() - 1])).is_err());
        let mut longer = buf.clone();
        longer.push(0);
        assert!(DoneMsg::decode(&mut Dec::new(&longer)).is_err());
        // The fixed part of a `Done` frame is what DONE_OVERHEAD says.
        let empty = DoneMsg {
            payload: Vec::new(),
            ..done
        };
        let mut e = Enc::new(DONE);
        empty.encode(&mut e);
        assert_eq!(e.len(), DONE_OVERHEAD);
    }

    /// Found by the `pilot_wire` fuzz target (out of memory): a length
    /// prefix of nearly 4 GiB followed by a few bytes allocated the whole
    /// frame before reading it. Now the buffer grows with what arrives,
    /// and the short frame is an error.
    #[test]
    fn a_frame_announcing_gigabytes_allocates_what_arrives() {
        let mut input = (u32::MAX - 8).to_le_bytes().to_vec();
        input.extend_from_slice(&[RUN, 1, 2, 3]);
        let mut buf = Vec::new();
        let r = read_frame(&mut &input[..], &mut buf, u64::from(u32::MAX));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(buf.capacity() <= 2 * FILL_AHEAD, "{}", buf.capacity());
        // Frames larger than the fill-ahead still read whole.
        let body = vec![7u8; 3 * FILL_AHEAD + 5];
        let mut e = Enc::new(DONE);
        e.buf.extend_from_slice(&body);
        let mut r = std::io::Cursor::new(e.finish().to_vec());
        assert_eq!(
            read_frame(&mut r, &mut buf, u64::from(u32::MAX)).unwrap(),
            Some(DONE)
        );
        assert_eq!(buf, body);
    }
}
