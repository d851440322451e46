//! The progress thread of a UCX rank: the only thread that touches its
//! UCP worker. It posts the sends callers queue, receives every message
//! that arrives into the mailbox, watches the endpoints for failures, and
//! sleeps on the worker's event descriptor when there is nothing to do.

use super::{
    ffi::{Endpoint, Iov, Request, Started, UcxStatus, Worker},
    process::{Identity, PROCESS_WATCH},
    Outgoing,
};
use crate::{
    mailbox::{Key, Mailbox, Payload},
    pool::BufferPool,
    CommError, Result,
};
use bytes::Bytes;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        mpsc, Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// The header before every body: the group layer's context and tag.
const HEAD: usize = 16;
/// Rounds without work before the thread sleeps (a few microseconds of
/// spinning keeps the latency of back-to-back messages low).
const SPIN_ROUNDS: u32 = 200;
/// How long closing waits for the last sends to drain.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the progress thread owns.
pub(super) struct State {
    pub(super) rank: usize,
    pub(super) worker: Worker,
    pub(super) peers: Vec<Option<Endpoint>>,
    /// UCX's failure status per peer endpoint (0 while healthy).
    pub(super) failed: Box<[AtomicI32]>,
    /// The processes of peers on this host, reached over shared memory.
    pub(super) watch: Vec<Option<Identity>>,
    pub(super) outgoing: mpsc::Receiver<Outgoing>,
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) pool: Arc<BufferPool>,
    pub(super) closing: Arc<AtomicBool>,
    pub(super) max_frame_bytes: u64,
}

/// A send in flight: its request and what UCX reads (the I/O vector and
/// the buffers it points to).
struct Sending {
    req: Request,
    dst: usize,
    _iov: Box<[Iov; 2]>,
    _head: Box<[u8; HEAD]>,
    _body: Bytes,
}

/// A receive in flight, into `buf`.
struct Receiving {
    req: Request,
    src: usize,
    buf: Vec<u8>,
    /// A message over the size limit, received into a stub to discard it.
    refused: Option<usize>,
}

pub(super) fn spawn(state: State) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("deeprc-ucx-{}", state.rank))
        .spawn(move || state.run())
        .map_err(|e| CommError::io("spawning the UCX progress thread", e))
}

impl State {
    fn run(self) {
        let mut sending: Vec<Sending> = Vec::new();
        let mut receiving: Vec<Receiving> = Vec::new();
        let mut reported = vec![false; self.peers.len()];
        let mut idle = 0u32;
        let mut watched = Instant::now();
        loop {
            let mut busy = false;
            while let Ok(out) = self.outgoing.try_recv() {
                busy = true;
                self.post_send(out, &mut sending);
            }
            while self.worker.progress() > 0 {
                busy = true;
            }
            while let Some((tag, len, msg)) = self.worker.probe() {
                busy = true;
                self.post_recv(tag, len, msg, &mut receiving);
            }
            let before = sending.len() + receiving.len();
            sending.retain(|s| match self.worker.test(&s.req) {
                None => true,
                Some(Ok(())) => false,
                Some(Err(e)) => {
                    self.mailbox
                        .mark_lost(s.dst, format!("sending to rank {} failed: {e}", s.dst));
                    false
                }
            });
            let mut i = 0;
            while i < receiving.len() {
                match self.worker.test(&receiving[i].req) {
                    None => i += 1,
                    Some(outcome) => {
                        let r = receiving.swap_remove(i);
                        self.deliver(r.src, r.buf, r.refused, outcome);
                    }
                }
            }
            busy |= sending.len() + receiving.len() != before;
            self.report_failures(&mut reported);
            if watched.elapsed() >= PROCESS_WATCH {
                watched = Instant::now();
                self.watch_processes(&mut reported);
            }
            if self.closing.load(Ordering::SeqCst) {
                break;
            }
            if busy {
                idle = 0;
            } else if idle < SPIN_ROUNDS {
                idle += 1;
                std::hint::spin_loop();
            } else if !(sending.is_empty() && receiving.is_empty()) {
                // Requests in flight: give the core away (to the peer
                // that must answer, when ranks outnumber cores) and
                // come back at once.
                thread::yield_now();
            } else {
                self.worker.wait(PROCESS_WATCH.as_millis() as i32);
                idle = 0;
            }
        }
        self.close(sending, receiving);
    }

    fn post_send(&self, out: Outgoing, sending: &mut Vec<Sending>) {
        let Some(Some(ep)) = self.peers.get(out.dst) else {
            return;
        };
        if self.mailbox.lost_reason(out.dst).is_some() {
            return;
        }
        let head = Box::new(out.head);
        let mut iov = Box::new([Iov::of(&head[..]), Iov::of(&out.body)]);
        let count = if out.body.is_empty() { 1 } else { 2 };
        // SAFETY: the vector, `head` and `out.body` are heap memory that
        // moves into `sending` with the request (moving a Box or a Bytes
        // does not move what it points to) and stays there, unchanged,
        // until the request completes (or, at close, until it is cancelled
        // and completes).
        match unsafe { self.worker.send(ep, self.rank as u64, &mut iov[..count]) } {
            Ok(Started::Done) => {}
            Ok(Started::Pending(req)) => sending.push(Sending {
                req,
                dst: out.dst,
                _iov: iov,
                _head: head,
                _body: out.body,
            }),
            Err(e) => self
                .mailbox
                .mark_lost(out.dst, format!("sending to rank {} failed: {e}", out.dst)),
        }
    }

    fn post_recv(
        &self,
        tag: u64,
        len: usize,
        msg: super::ffi::Message,
        receiving: &mut Vec<Receiving>,
    ) {
        let src = usize::try_from(tag).unwrap_or(usize::MAX);
        let known = src < self.peers.len() && src != self.rank;
        let too_large = len as u64 > self.max_frame_bytes.saturating_add(HEAD as u64);
        let fits = known && !too_large && len >= HEAD;
        let (mut buf, refused) = match fits.then(|| self.buffer(len)).flatten() {
            Some(buf) => (buf, None),
            None => {
                // Received into a stub (UCX truncates it) and discarded.
                (vec![0u8; HEAD], Some(len))
            }
        };
        // SAFETY: `buf` moves into `receiving` with the request; moving a
        // Vec does not move its heap buffer, which stays allocated and
        // unused until the request completes.
        match unsafe { self.worker.recv(msg, &mut buf) } {
            Ok(Started::Done) => self.deliver(src, buf, refused, Ok(())),
            Ok(Started::Pending(req)) => receiving.push(Receiving {
                req,
                src,
                buf,
                refused,
            }),
            // (A refused message fails here, truncated into its stub.)
            Err(e) => self.deliver(src, buf, refused, Err(e)),
        }
    }

    /// A buffer of `len` bytes, pooled when one fits (its old contents are
    /// overwritten by the receive); `None` when memory runs out.
    fn buffer(&self, len: usize) -> Option<Vec<u8>> {
        let mut v = self.pool.reuse(len);
        if v.capacity() < len {
            v = Vec::new();
            v.try_reserve_exact(len).ok()?;
        }
        v.resize(len, 0);
        Some(v)
    }

    /// Hands a completed receive to the mailbox, or records why not.
    fn deliver(
        &self,
        src: usize,
        buf: Vec<u8>,
        refused: Option<usize>,
        outcome: std::result::Result<(), UcxStatus>,
    ) {
        if src >= self.peers.len() || src == self.rank {
            tracing::warn!(
                rank = self.rank,
                "deeprc-comm ucx: dropped a message claiming to come from rank {src}"
            );
            return;
        }
        if let Some(len) = refused {
            let reason = if len <= self.max_frame_bytes.saturating_add(HEAD as u64) as usize
                && len >= HEAD
            {
                format!("no memory to receive a {len}-byte message from rank {src}")
            } else if len < HEAD {
                format!("rank {src} sent a {len}-byte message, shorter than its header")
            } else {
                format!(
                    "rank {src} sent a {}-byte message, over the {}-byte limit (DEEPRC_MAX_FRAME_BYTES)",
                    len - HEAD,
                    self.max_frame_bytes
                )
            };
            tracing::warn!(rank = self.rank, "deeprc-comm ucx: {reason}");
            self.mailbox.mark_lost(src, reason);
            return;
        }
        if let Err(e) = outcome {
            self.mailbox
                .mark_lost(src, format!("receiving from rank {src} failed: {e}"));
            return;
        }
        let ctx = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        let tag = u64::from_le_bytes(buf[8..HEAD].try_into().expect("8 bytes"));
        let body = self.pool.freeze(buf).slice(HEAD..);
        self.mailbox
            .push(src, Key { ctx, tag }, Payload::Bytes(body));
    }

    fn report_failures(&self, reported: &mut [bool]) {
        for (peer, status) in self.failed.iter().enumerate() {
            let status = status.load(Ordering::Relaxed);
            if status != 0 && !reported[peer] {
                reported[peer] = true;
                self.mailbox.mark_lost(
                    peer,
                    format!("rank {peer}'s endpoint failed: {}", UcxStatus(status)),
                );
            }
        }
    }

    /// Fails the peers on this host whose process has exited.
    fn watch_processes(&self, reported: &mut [bool]) {
        for (peer, who) in self.watch.iter().enumerate() {
            let Some(who) = who else { continue };
            if !reported[peer] && !who.alive() {
                reported[peer] = true;
                self.mailbox.mark_lost(
                    peer,
                    format!("rank {peer} (process {} on this host) exited", who.pid),
                );
            }
        }
    }

    /// Lets the last sends drain (bounded), cancels what is left, closes
    /// the endpoints; the worker is released when `self` drops.
    fn close(mut self, mut sending: Vec<Sending>, mut receiving: Vec<Receiving>) {
        let deadline = Instant::now() + CLOSE_GRACE;
        while let Ok(out) = self.outgoing.try_recv() {
            self.post_send(out, &mut sending);
        }
        while !sending.is_empty() && Instant::now() < deadline {
            self.worker.progress();
            sending.retain(|s| self.worker.test(&s.req).is_none());
        }
        for s in &sending {
            self.worker.cancel(&s.req);
        }
        for r in &receiving {
            self.worker.cancel(&r.req);
        }
        // Cancelled requests complete on the next progress calls; their
        // buffers must live until then.
        let deadline = Instant::now() + CLOSE_GRACE;
        while !(sending.is_empty() && receiving.is_empty()) && Instant::now() < deadline {
            self.worker.progress();
            sending.retain(|s| self.worker.test(&s.req).is_none());
            receiving.retain(|r| self.worker.test(&r.req).is_none());
        }
        let mut closing: Vec<Request> = Vec::new();
        for (peer, ep) in self.peers.drain(..).enumerate() {
            let Some(ep) = ep else { continue };
            let force = self.failed[peer].load(Ordering::Relaxed) != 0;
            if let Ok(Started::Pending(req)) = self.worker.close_ep(ep, force) {
                closing.push(req);
            }
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        while !closing.is_empty() && Instant::now() < deadline {
            self.worker.progress();
            closing.retain(|r| self.worker.test(r).is_none());
        }
        if !(sending.is_empty() && receiving.is_empty() && closing.is_empty()) {
            // UCX still holds buffers or requests: leak them (and the
            // worker) rather than free memory it may still write.
            tracing::warn!(
                rank = self.rank,
                "deeprc-comm ucx: {} requests did not finish closing; leaking them",
                sending.len() + receiving.len() + closing.len()
            );
            std::mem::forget(sending);
            std::mem::forget(receiving);
            std::mem::forget(self.worker);
            std::mem::forget(self.failed);
        }
    }
}
