//! The all-reduce algorithms of the group layer, one per kind of transport.
//!
//! Both split the buffer into `n` parts ([`part`]): part `p` is reduced by
//! rank `p` alone, which folds the `n` ranks' values of each element in rank
//! order (`op(...op(op(x0, x1), x2)..., x(n-1))`, [`reduce_ordered`]), and
//! every other rank gets a copy of those bits. So every rank ends with the
//! same bits, equal to a sequential reduction in rank order, for every
//! length (parts may be empty), dtype and operator, however the work is
//! tiled, segmented or timed.
//!
//! # Threads: a shared-memory reduce ([`Group::all_reduce_shared`])
//! The ranks of a `local` group share an address space. Each rank publishes
//! its buffer to the others (one all-to-all of an `Arc<Share>`); rank `p`
//! then reduces part `p` of all `n` buffers tile by tile, in rank order, and
//! writes the result into part `p` of every buffer in the same pass; a
//! barrier ends the call. Each input byte is read once and each output byte
//! written once: no temporary buffer, no message carries data.
//!
//! Soundness: a published buffer is only touched while its [`Share`] is
//! held ([`Share::acquire`]), and its owner revokes the share before it
//! returns, on every path (success, error, panic), waiting until nobody
//! holds it ([`Published`]); a revoked share cannot be held again. While
//! held, part `p` of a buffer is touched by the thread of rank `p` only
//! (parts are disjoint, and a share only goes to the members of its group,
//! each of which has one rank), and its owner touches its own buffer only
//! as rank `owner`, through the published pointer. The mailbox's and the
//! shares' mutexes order the owner's writes before the readers' reads and
//! the writers' writes before the owner's return. A peer that fails or
//! hangs surfaces as the usual [`CommError::PeerLost`] or
//! [`CommError::Timeout`] of the exchange or of the barrier.
//!
//! # Processes: a pipelined reduce-scatter + all-gather
//! Over messages ([`Group::all_reduce_pipelined`]), part `p` is cut into
//! segments of [`SEGMENT`] bytes. In round `s`, every rank sends segment `s` of every
//! other rank's part to its owner (straight from the caller's buffer, with
//! [`AHEAD`] rounds in flight), the owner reduces its segment `s` in rank
//! order as soon as the `n - 1` contributions are in and sends the result to
//! every rank, and every rank copies the reduced segments of round `s - 1`
//! into place. The transports' receive threads take segments off the
//! network while the caller's thread reduces and copies, so the network,
//! the copies and the reduction overlap. Each rank sends and receives
//! `2 (n - 1) / n` of the buffer, like a ring, in one hop per segment.
//! Every wait is a receive bounded by the timeout, and a lost peer fails it
//! at once, as for every other collective.

use super::{internal, Group, Op};
use crate::{
    mailbox::Payload,
    reduce::{part, reduce_ordered, Operand},
    CommError, DType, ReduceOp, Result,
};
use bytes::Bytes;
use deeprc_core::sync::lock;
use std::{
    ops::Range,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
};

const OP: &str = "all_reduce";

/// Bytes per message of the pipelined all-reduce: large enough that the
/// per-message costs vanish, small enough to keep every stage busy.
const SEGMENT: usize = 1 << 20;

/// Rounds of contributions a rank sends before it waits for the first.
const AHEAD: usize = 2;

/// One rank's buffer, published to the other ranks of a shared-memory
/// all-reduce for the duration of one call.
struct Share {
    /// The publishing rank (in the group) and its all-reduce call number.
    owner: usize,
    seq: u64,
    ptr: *mut u8,
    len: usize,
    dtype: DType,
    op: ReduceOp,
    access: Mutex<Access>,
    idle: Condvar,
}

#[derive(Default)]
struct Access {
    holders: usize,
    revoked: bool,
}

// SAFETY: `ptr` is the only field that is not `Send + Sync`. It is
// dereferenced only through a `Hold`, which exists only between the share's
// creation and its revocation, while the owner's `&mut [u8]` it points into
// is borrowed by the owner's `all_reduce_shared` call; and every holder
// touches a part of the buffer that no other thread touches meanwhile (see
// the module documentation). The other fields are `Send + Sync`.
unsafe impl Send for Share {}
// SAFETY: as for `Send`: shared references only read the plain fields and
// lock `access`; the pointer is dereferenced under the protocol above.
unsafe impl Sync for Share {}

impl Share {
    fn lock(&self) -> MutexGuard<'_, Access> {
        lock(&self.access)
    }

    /// Holds the share, so that its buffer stays valid until the [`Hold`]
    /// is dropped; `None` once its owner has revoked it.
    fn acquire(&self) -> Option<Hold<'_>> {
        let mut a = self.lock();
        if a.revoked {
            return None;
        }
        a.holders += 1;
        Some(Hold(self))
    }

    /// Forbids new holds and waits until the current ones are dropped.
    /// Holders never wait for anything while they hold a share (they only
    /// reduce and copy), so this wait is short.
    fn revoke(&self) {
        let mut a = self.lock();
        a.revoked = true;
        while a.holders > 0 {
            a = self.idle.wait(a).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Permission to touch a share's buffer (see [`Share::acquire`]).
struct Hold<'a>(&'a Share);

impl Hold<'_> {
    /// The bytes `range` of the held buffer.
    ///
    /// # Safety
    /// `range` must lie within the buffer, and no other thread may access
    /// these bytes while the returned slice lives (in the shared-memory
    /// all-reduce: `range` is the caller's part).
    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes_mut(&self, range: Range<usize>) -> &mut [u8] {
        assert!(range.start <= range.end && range.end <= self.0.len);
        // SAFETY: the buffer is valid while held (`Share::revoke` waits for
        // this hold to be dropped, and the returned slice borrows it), the
        // range is in bounds (checked above), and the caller guarantees that
        // nobody else accesses it meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.0.ptr.add(range.start), range.len()) }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut a = self.0.lock();
        a.holders -= 1;
        if a.holders == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// The owner's side of a share: revokes it when dropped, on every way out
/// of the call, unwinding included.
struct Published(Arc<Share>);

impl Drop for Published {
    fn drop(&mut self) {
        self.0.revoke();
    }
}

/// How the pipelined all-reduce cuts a buffer: part `j` of rank `j`, in
/// segments of [`SEGMENT`] bytes.
struct Plan {
    len: usize,
    n: usize,
}

impl Plan {
    fn segments(&self, j: usize) -> usize {
        part(self.len, self.n, j).len().div_ceil(SEGMENT)
    }

    fn segment(&self, j: usize, s: usize) -> Range<usize> {
        let p = part(self.len, self.n, j);
        let start = p.start + s * SEGMENT;
        start..(start + SEGMENT).min(p.end)
    }

    fn rounds(&self) -> usize {
        (0..self.n).map(|j| self.segments(j)).max().unwrap_or(0)
    }
}

fn tag(op: Op, round: usize) -> u64 {
    // Rounds fit the 32 bits of a tag's round: 2^32 segments of 1 MiB.
    internal(op, round as u64 & 0xffff_ffff)
}

fn check_len(peer: usize, got: &Bytes, want: usize) -> Result<()> {
    if got.len() != want {
        return Err(CommError::SizeMismatch {
            op: OP,
            peer,
            expected: want,
            actual: got.len(),
        });
    }
    Ok(())
}

impl Group {
    /// The shared-memory all-reduce of thread ranks (module documentation).
    pub(super) fn all_reduce_shared(
        &self,
        seq: u64,
        data: &mut [u8],
        dtype: DType,
        op: ReduceOp,
    ) -> Result<()> {
        let n = self.members.len();
        let len = data.len();
        let mine = Arc::new(Share {
            owner: self.rank,
            seq,
            ptr: data.as_mut_ptr(),
            len,
            dtype,
            op,
            access: Mutex::default(),
            idle: Condvar::new(),
        });
        // From here on `data` is touched only through the share, and the
        // share is revoked before this function returns or unwinds.
        let published = Published(Arc::clone(&mine));
        let parts = (0..n)
            .map(|_| Payload::Object(Box::new(Arc::clone(&mine))))
            .collect();
        let shares = self
            .exchange(OP, internal(Op::ReduceShare, 0), parts)?
            .into_iter()
            .enumerate()
            .map(|(r, p)| check_share(r, p, &mine))
            .collect::<Result<Vec<_>>>()?;
        let holds = shares
            .iter()
            .map(|s| {
                s.acquire().ok_or_else(|| CommError::PeerLost {
                    op: OP,
                    peer: s.owner,
                    reason: format!("rank {} already left this all_reduce", s.owner),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let range = part(len, n, self.rank);
        let mut operands: Vec<Operand<'_>> = holds
            .iter()
            .map(|h| {
                // SAFETY: `range` is this rank's part, within every buffer
                // (all have length `len`, checked by `check_share`); during
                // this call no other thread touches part `rank` of any
                // buffer of the call (each rank touches its own part only,
                // and the owners touch their buffers only as ranks), and the
                // slices are dropped before the holds.
                let bytes = unsafe { h.bytes_mut(range.clone()) };
                Operand::InOut(bytes)
            })
            .collect();
        reduce_ordered(&mut operands, dtype, op);
        drop(operands);
        drop(holds);
        // Nobody returns before every rank has written its part of every
        // buffer (a rank that fails here still revokes its share first).
        self.dissemination(OP)?;
        drop(published);
        Ok(())
    }

    /// The pipelined all-reduce over messages (module documentation).
    pub(super) fn all_reduce_pipelined(
        &self,
        data: &mut [u8],
        dtype: DType,
        op: ReduceOp,
    ) -> Result<()> {
        let n = self.members.len();
        let me = self.rank;
        let plan = Plan { len: data.len(), n };
        let rounds = plan.rounds();
        // Contributions to segment s of part j, straight from `data`.
        let contribute = |data: &[u8], s: usize| -> Result<()> {
            for j in self.peers() {
                if s < plan.segments(j) {
                    let seg = plan.segment(j, s);
                    self.send_slice_p(OP, j, tag(Op::ReduceScatter, s), &data[seg])?;
                }
            }
            Ok(())
        };
        // Reduced segment s of every other part, into place.
        let collect = |data: &mut [u8], s: usize| -> Result<()> {
            for j in self.peers() {
                if s < plan.segments(j) {
                    let seg = plan.segment(j, s);
                    let got = self.recv_b(OP, j, tag(Op::ReduceGather, s))?;
                    check_len(j, &got, seg.len())?;
                    data[seg].copy_from_slice(&got);
                }
            }
            Ok(())
        };
        for s in 0..AHEAD.min(rounds) {
            contribute(data, s)?;
        }
        let mut got: Vec<Option<Bytes>> = vec![None; n];
        for s in 0..rounds {
            if s + AHEAD < rounds {
                contribute(data, s + AHEAD)?;
            }
            if s < plan.segments(me) {
                let seg = plan.segment(me, s);
                for src in self.peers() {
                    let b = self.recv_b(OP, src, tag(Op::ReduceScatter, s))?;
                    check_len(src, &b, seg.len())?;
                    got[src] = Some(b);
                }
                let mut own = Some(&mut data[seg.clone()]);
                let mut operands: Vec<Operand<'_>> = got
                    .iter()
                    .map(|g| match g {
                        Some(b) => Operand::In(&b[..]),
                        None => Operand::InOut(own.take().expect("one own operand")),
                    })
                    .collect();
                reduce_ordered(&mut operands, dtype, op);
                drop(operands);
                got.iter_mut().for_each(|g| *g = None);
                for dst in self.peers() {
                    self.send_slice_p(OP, dst, tag(Op::ReduceGather, s), &data[seg.clone()])?;
                }
            }
            if s > 0 {
                collect(data, s - 1)?;
            }
        }
        if rounds > 0 {
            collect(data, rounds - 1)?;
        }
        Ok(())
    }
}

/// Checks that rank `r`'s published buffer belongs to the same call as
/// `mine`: same call number, length, type and operator.
fn check_share(r: usize, p: Payload, mine: &Share) -> Result<Arc<Share>> {
    let share = *p
        .into_object(OP)?
        .downcast::<Arc<Share>>()
        .map_err(|_| CommError::invalid(OP, format!("rank {r} sent something else")))?;
    if share.owner != r || share.seq != mine.seq {
        return Err(CommError::invalid(
            OP,
            format!(
                "rank {r} is in all_reduce call {} of this communicator, this rank in call {} \
                 (an earlier call failed?)",
                share.seq, mine.seq
            ),
        ));
    }
    if share.len != mine.len {
        return Err(CommError::SizeMismatch {
            op: OP,
            peer: r,
            expected: mine.len,
            actual: share.len,
        });
    }
    if (share.dtype, share.op) != (mine.dtype, mine.op) {
        return Err(CommError::invalid(
            OP,
            format!(
                "rank {r} reduces {:?} with {:?}, this rank {:?} with {:?}",
                share.dtype, share.op, mine.dtype, mine.op
            ),
        ));
    }
    Ok(share)
}
