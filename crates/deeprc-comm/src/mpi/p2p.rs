//! Point-to-point messages over MPI.
//!
//! Sends never wait for the receiver: every message is posted with
//! `MPI_Isend` and its [`Bytes`] are kept alive until MPI reports the send
//! complete (checked on later sends and when the communicator is dropped),
//! so a rank may send to a peer that has not yet called `recv`, like on the
//! other backends.
//!
//! Wire format, on the MPI tag equal to the user tag (tags below
//! `MPI_TAG_UB - 1`):
//! - `[0, payload...]`: a small message, whole;
//! - `[1, 0 x 7, len: u64, chunk: u64]`: a large message whose `len` bytes
//!   follow as `ceil(len / chunk)` raw messages on the same tag.
//!
//! User tags that MPI cannot carry (`>= MPI_TAG_UB - 1`; MPI guarantees only
//! 32767, OpenMPI's UCX layer about 8 million) travel on the reserved tag
//! `MPI_TAG_UB` with the full tag in the header: `[2, 0 x 3, tag: u32,
//! payload...]` and `[3, 0 x 3, tag: u32, len: u64, chunk: u64]` followed by
//! the raw chunks. The receiver keeps the messages of other escaped tags
//! that it meets on the way in a per-source stash, in arrival order.
//!
//! The header and the chunks of one message are posted under one lock, and
//! receivers of one (source, MPI tag) are serialised, so the chunks of a
//! message are never taken by another receive.

use super::{backend_err, deadline::Poll, MpiComm};
use crate::{CommError, Result, Tag};
use ::mpi::{
    datatype::Equivalence,
    ffi,
    point_to_point::{Message, Status},
    topology::Rank,
    traits::{AsRaw, Communicator as _, Source},
};
use bytes::Bytes;
use std::{
    collections::{HashMap, VecDeque},
    os::raw::{c_int, c_void},
    sync::{Arc, Mutex},
};

/// Messages shorter than this are sent whole, copied behind a one-byte
/// header; longer ones as a header plus chunks taken from the `Bytes`
/// without a copy.
const INLINE_MAX: usize = 32 << 10;

const KIND_INLINE: u8 = 0;
const KIND_LARGE: u8 = 1;
const KIND_ESC_INLINE: u8 = 2;
const KIND_ESC_LARGE: u8 = 3;
static NOTHING: [u8; 1] = [0];
const LARGE_HEADER: usize = 24;
const ESC_INLINE_HEADER: usize = 8;

use deeprc_core::sync::lock;

/// Posted sends whose buffers MPI may still read.
#[derive(Debug, Default)]
pub(super) struct PendingSends {
    requests: Vec<ffi::MPI_Request>,
    buffers: Vec<Bytes>,
}

// SAFETY: `MPI_Request` is a handle (an int in MPICH, a pointer to a
// library-owned object in OpenMPI) that MPI lets any thread pass to it; the
// handles are only used under the `Mutex` that owns this struct, and MPI
// calls are serialised by the runtime lock where the threading level needs it.
unsafe impl Send for PendingSends {}

impl PendingSends {
    /// Forgets the sends MPI has completed.
    fn reap(&mut self) -> Result<()> {
        if self.requests.is_empty() {
            return Ok(());
        }
        let n = self.requests.len();
        let mut outcount: c_int = 0;
        let mut indices: Vec<c_int> = vec![0; n];
        // SAFETY: `requests` holds `n` live send requests owned by this
        // struct; MPI writes at most `n` indices and sets completed requests
        // to MPI_REQUEST_NULL; statuses are ignored.
        let rc = unsafe {
            ffi::MPI_Testsome(
                c_int::try_from(n).unwrap_or(c_int::MAX),
                self.requests.as_mut_ptr(),
                &mut outcount,
                indices.as_mut_ptr(),
                ffi::RSMPI_STATUSES_IGNORE,
            )
        };
        check_rc(rc, "MPI_Testsome")?;
        if outcount > 0 {
            // SAFETY: reading a constant of the MPI library.
            let null = unsafe { ffi::RSMPI_REQUEST_NULL };
            let mut i = 0;
            while i < self.requests.len() {
                if self.requests[i] == null {
                    self.requests.swap_remove(i);
                    self.buffers.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// At drop: completed sends are forgotten; sends still in flight are
    /// released to MPI (`MPI_Request_free`), which completes them in the
    /// background, and their buffers are leaked so they stay valid.
    pub(super) fn release(&mut self, finalized: bool) {
        if !finalized {
            let _ = self.reap();
        }
        for (mut req, buf) in self.requests.drain(..).zip(self.buffers.drain(..)) {
            if !finalized {
                // SAFETY: `req` is a live request of this struct; after
                // MPI_Request_free MPI finishes the send on its own, reading
                // `buf`, which is leaked below so it is never freed.
                unsafe { ffi::MPI_Request_free(&mut req) };
            }
            std::mem::forget(buf);
        }
    }
}

/// Where a receive waits: the MPI tag and, for escaped tags, the user tag.
#[derive(Debug, Default)]
pub(super) struct Receivers {
    /// One lock per (source, MPI tag) in use.
    locks: Mutex<HashMap<(usize, c_int), StashLock>>,
}

/// Serialises the receives of one (source, MPI tag); holds the stash.
type StashLock = Arc<Mutex<Stash>>;

/// Escaped messages that arrived for other user tags, per user tag.
#[derive(Debug, Default)]
struct Stash(HashMap<Tag, VecDeque<Bytes>>);

pub(super) fn check_rc(rc: c_int, what: &str) -> Result<()> {
    if rc == ffi::MPI_SUCCESS as c_int {
        Ok(())
    } else {
        Err(backend_err(format!(
            "{what} failed with MPI error code {rc}"
        )))
    }
}

fn as_rank(r: usize) -> Rank {
    // Ranks come from a communicator whose size is a c_int.
    Rank::try_from(r).unwrap_or(Rank::MAX)
}

impl MpiComm {
    /// The largest MPI tag used directly for user tags (exclusive).
    fn direct_tags(&self) -> u64 {
        (self.inner.rt.tag_ub as u64).saturating_sub(1)
    }

    fn escape_tag(&self) -> c_int {
        self.inner.rt.tag_ub
    }

    /// Posts one send of `buf` (at most `chunk` bytes) and keeps `buf` until
    /// MPI is done with it. Called with the pending-sends lock held.
    fn post(&self, pending: &mut PendingSends, dest: usize, tag: c_int, buf: Bytes) -> Result<()> {
        let count = c_int::try_from(buf.len())
            .map_err(|_| backend_err(format!("internal: a part of {} bytes", buf.len())))?;
        // SAFETY: reading a constant of the MPI library.
        let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
        let _e = self.inner.rt.enter("send")?;
        let ptr = if buf.is_empty() {
            // Not the dangling 0x1 of an empty slice (OpenMPI's MPI_IN_PLACE).
            NOTHING.as_ptr()
        } else {
            buf.as_ptr()
        };
        // SAFETY: `buf` stays alive in `pending` until MPI reports the send
        // complete (or forever, see `release`); `count` bytes are readable at
        // `ptr`; the communicator is alive for the duration of `self`.
        let rc = unsafe {
            ffi::MPI_Isend(
                ptr.cast::<c_void>(),
                count,
                <u8 as Equivalence>::equivalent_datatype().as_raw(),
                as_rank(dest),
                tag,
                self.inner.comm.as_raw(),
                &mut req,
            )
        };
        check_rc(rc, "MPI_Isend")?;
        pending.requests.push(req);
        pending.buffers.push(buf);
        Ok(())
    }

    pub(super) fn send_bytes(&self, dest: usize, tag: Tag, data: Bytes) -> Result<()> {
        let size = self.size_();
        if dest >= size {
            return Err(CommError::InvalidRank { rank: dest, size });
        }
        let inline_max = INLINE_MAX.min(self.chunk);
        let escaped = u64::from(tag) >= self.direct_tags();
        let mut pending = lock(&self.inner.sends);
        {
            let _e = self.inner.rt.enter("send")?;
            pending.reap()?;
        }
        let (mpi_tag, header_len) = if escaped {
            (self.escape_tag(), ESC_INLINE_HEADER)
        } else {
            (tag as c_int, 1)
        };
        if data.len() < inline_max {
            let mut msg = Vec::with_capacity(header_len + data.len());
            if escaped {
                msg.extend_from_slice(&[KIND_ESC_INLINE, 0, 0, 0]);
                msg.extend_from_slice(&tag.to_le_bytes());
            } else {
                msg.push(KIND_INLINE);
            }
            msg.extend_from_slice(&data);
            return self.post(&mut pending, dest, mpi_tag, msg.into());
        }
        let chunk = self.chunk;
        let mut header = Vec::with_capacity(LARGE_HEADER);
        if escaped {
            header.extend_from_slice(&[KIND_ESC_LARGE, 0, 0, 0]);
            header.extend_from_slice(&tag.to_le_bytes());
        } else {
            header.extend_from_slice(&[KIND_LARGE, 0, 0, 0, 0, 0, 0, 0]);
        }
        header.extend_from_slice(&(data.len() as u64).to_le_bytes());
        header.extend_from_slice(&(chunk as u64).to_le_bytes());
        self.post(&mut pending, dest, mpi_tag, header.into())?;
        let mut at = 0;
        while at < data.len() {
            let end = (at + chunk).min(data.len());
            self.post(&mut pending, dest, mpi_tag, data.slice(at..end))?;
            at = end;
        }
        Ok(())
    }

    /// Takes a message from `src` on MPI tag `tag` out of MPI's matching
    /// if one is there (`MPI_Improbe`); `None` otherwise.
    fn try_probe(&self, src: usize, tag: c_int) -> Result<Option<(Message, Status)>> {
        let process = self.inner.comm.process_at_rank(as_rank(src));
        let _e = self.inner.rt.enter("recv")?;
        Ok(process.immediate_matched_probe_with_tag(tag))
    }

    /// Waits for a message from `src` on MPI tag `tag` by polling
    /// [`MpiComm::try_probe`] until `poll`'s deadline, then fails with
    /// [`CommError::Timeout`]. Nothing is posted, so a timeout leaves
    /// nothing behind.
    fn probe(&self, src: usize, tag: c_int, poll: &mut Poll) -> Result<(Message, Status)> {
        loop {
            if let Some(m) = self.try_probe(src, tag)? {
                return Ok(m);
            }
            if poll.expired() {
                return Err(recv_timeout(src, poll));
            }
            poll.snooze();
        }
    }

    /// Enters MPI to receive a matched message; if MPI may not be entered,
    /// the message is forgotten (rsmpi panics on dropping it unreceived).
    fn enter_matched(&self, msg: Message) -> Result<(super::runtime::Entered, Message)> {
        match self.inner.rt.enter("recv") {
            Ok(e) => Ok((e, msg)),
            Err(e) => {
                std::mem::forget(msg);
                Err(e)
            }
        }
    }

    /// Receives a probed message whole.
    fn take(&self, msg: Message, status: Status) -> Result<Vec<u8>> {
        let (_e, msg) = self.enter_matched(msg)?;
        let count = status.count(<u8 as Equivalence>::equivalent_datatype());
        let mut buf = vec![0u8; usize::try_from(count).unwrap_or(0)];
        msg.matched_receive_into(&mut buf[..]);
        if count < 0 {
            return Err(backend_err(format!(
                "MPI reported a message of {count} bytes"
            )));
        }
        Ok(buf)
    }

    /// Receives the `len` bytes of a large message that follow its header
    /// on (`src`, `tag`), in chunks of `chunk` bytes.
    fn take_chunks(
        &self,
        src: usize,
        tag: c_int,
        len: u64,
        chunk: u64,
        poll: &mut Poll,
    ) -> Result<Bytes> {
        let len = usize::try_from(len)
            .map_err(|_| backend_err(format!("a message of {len} bytes does not fit in memory")))?;
        let chunk = usize::try_from(chunk).unwrap_or(usize::MAX);
        if chunk == 0 || chunk > c_int::MAX as usize {
            return Err(backend_err(format!(
                "malformed message header: chunk of {chunk} bytes"
            )));
        }
        let mut out = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let end = (at + chunk).min(len);
            let (msg, status) = self.probe(src, tag, poll)?;
            let count = status.count(<u8 as Equivalence>::equivalent_datatype());
            if usize::try_from(count).ok() != Some(end - at) {
                // Receive it anyway so the message is not left matched.
                drop(self.take(msg, status)?);
                return Err(backend_err(format!(
                    "large message from rank {src}: chunk of {count} bytes, expected {}",
                    end - at
                )));
            }
            let (_e, msg) = self.enter_matched(msg)?;
            msg.matched_receive_into(&mut out[at..end]);
            at = end;
        }
        Ok(out.into())
    }

    /// Forgets completed sends, if no other thread is sending (called
    /// before receives and collectives, so that the buffers of finished
    /// sends are not kept until the next send).
    pub(super) fn reap_sends(&self) {
        if let Ok(mut pending) = self.inner.sends.try_lock() {
            if !pending.requests.is_empty() {
                if let Ok(_e) = self.inner.rt.enter("reap") {
                    let _ = pending.reap();
                }
            }
        }
    }

    fn receivers_lock(&self, src: usize, tag: c_int) -> Arc<Mutex<Stash>> {
        let mut map = lock(&self.inner.receivers.locks);
        Arc::clone(map.entry((src, tag)).or_default())
    }

    /// Drops the lock entry of (`src`, `tag`) when no receive uses it and it
    /// holds no stashed messages.
    fn receivers_release(&self, src: usize, tag: c_int, entry: Arc<Mutex<Stash>>) {
        let mut map = lock(&self.inner.receivers.locks);
        // Clones are only made under `map`'s lock: 2 means this one and the map's.
        if Arc::strong_count(&entry) == 2 && lock(&entry).0.values().all(VecDeque::is_empty) {
            map.remove(&(src, tag));
        }
    }

    pub(super) fn recv_bytes(&self, src: usize, tag: Tag) -> Result<Bytes> {
        let size = self.size_();
        if src >= size {
            return Err(CommError::InvalidRank { rank: src, size });
        }
        self.reap_sends();
        if u64::from(tag) >= self.direct_tags() {
            return self.recv_escaped(src, tag);
        }
        let mpi_tag = tag as c_int;
        let entry = self.receivers_lock(src, mpi_tag);
        let out = {
            let _one_receiver = lock(&entry);
            self.recv_direct(src, mpi_tag)
        };
        self.receivers_release(src, mpi_tag, entry);
        out
    }

    fn recv_direct(&self, src: usize, tag: c_int) -> Result<Bytes> {
        let mut poll = Poll::new(self.timeout);
        let (msg, status) = self.probe(src, tag, &mut poll)?;
        let first = self.take(msg, status)?;
        match first.first() {
            Some(&KIND_INLINE) => Ok(Bytes::from(first).slice(1..)),
            Some(&KIND_LARGE) if first.len() == LARGE_HEADER => {
                let (len, chunk) = large_header(&first[8..]);
                self.take_chunks(src, tag, len, chunk, &mut poll)
            }
            _ => Err(malformed(src, tag, &first)),
        }
    }

    /// Receives a message with a tag MPI cannot carry: polls the escape tag
    /// and stashes the messages of other tags it meets.
    fn recv_escaped(&self, src: usize, tag: Tag) -> Result<Bytes> {
        let esc = self.escape_tag();
        let entry = self.receivers_lock(src, esc);
        let mut poll = Poll::new(self.timeout);
        let out = loop {
            {
                let mut stash = lock(&entry);
                if let Some(m) = stash.0.get_mut(&tag).and_then(VecDeque::pop_front) {
                    break Ok(m);
                }
                match self.try_probe(src, esc) {
                    Err(e) => break Err(e),
                    Ok(None) => {}
                    Ok(Some((msg, status))) => match self.take_escaped(src, msg, status, &mut poll)
                    {
                        Err(e) => break Err(e),
                        Ok((t, m)) if t == tag => break Ok(m),
                        Ok((t, m)) => {
                            stash.0.entry(t).or_default().push_back(m);
                            continue;
                        }
                    },
                }
            }
            if poll.expired() {
                break Err(recv_timeout(src, &poll));
            }
            poll.snooze();
        };
        self.receivers_release(src, esc, entry);
        out
    }

    fn take_escaped(
        &self,
        src: usize,
        msg: Message,
        status: Status,
        poll: &mut Poll,
    ) -> Result<(Tag, Bytes)> {
        let esc = self.escape_tag();
        let first = self.take(msg, status)?;
        if first.len() < ESC_INLINE_HEADER {
            return Err(malformed(src, esc, &first));
        }
        let tag = Tag::from_le_bytes([first[4], first[5], first[6], first[7]]);
        match first[0] {
            KIND_ESC_INLINE => Ok((tag, Bytes::from(first).slice(ESC_INLINE_HEADER..))),
            KIND_ESC_LARGE if first.len() == LARGE_HEADER => {
                let (len, chunk) = large_header(&first[8..]);
                Ok((tag, self.take_chunks(src, esc, len, chunk, poll)?))
            }
            _ => Err(malformed(src, esc, &first)),
        }
    }
}

fn recv_timeout(src: usize, poll: &Poll) -> CommError {
    CommError::Timeout {
        op: "recv",
        peer: src,
        after: poll.waited(),
    }
}

fn large_header(b: &[u8]) -> (u64, u64) {
    let mut len = [0u8; 8];
    let mut chunk = [0u8; 8];
    len.copy_from_slice(&b[..8]);
    chunk.copy_from_slice(&b[8..16]);
    (u64::from_le_bytes(len), u64::from_le_bytes(chunk))
}

fn malformed(src: usize, tag: c_int, msg: &[u8]) -> CommError {
    backend_err(format!(
        "malformed message from rank {src} on MPI tag {tag} ({} bytes, kind {:?}): was it sent \
         by something other than deeprc-comm on this communicator?",
        msg.len(),
        msg.first()
    ))
}
