//! Collectives built on point-to-point messages of a [`Transport`], shared
//! by the backends that move messages themselves (local threads, tcp).
//!
//! A [`Group`] is an ordered list of world ranks plus a context id that
//! keeps its messages apart from every other group on the same transport, so
//! `split` costs one all-gather and no new connections.
//!
//! All-reduce has one algorithm per kind of transport (see [`all_reduce`]):
//! a shared-memory reduce when the ranks share an address space, a
//! pipelined reduce-scatter + all-gather over messages otherwise.

mod all_reduce;

use crate::{
    communicator::check_elements,
    mailbox::{Key, Payload},
    pool::BufferPool,
    AnyBox, Backend, CommError, Communicator, DType, ReduceOp, Result, Tag,
};
use bytes::Bytes;
use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

/// Moves messages between the world ranks of one job.
pub(crate) trait Transport: Send + Sync + fmt::Debug {
    fn backend(&self) -> Backend;
    fn world_rank(&self) -> usize;
    fn world_size(&self) -> usize;
    fn supports_objects(&self) -> bool;
    /// Whether the ranks share one address space, so that a rank may read
    /// and write another rank's buffers (threads of one process).
    fn shares_memory(&self) -> bool {
        false
    }
    /// Reusable buffers for collectives' temporaries.
    fn pool(&self) -> &Arc<BufferPool>;
    /// Queues `payload` for world rank `dst`; never waits for the receiver
    /// to call `recv` (it may wait for buffer space, bounded by the timeout).
    fn send(&self, op: &'static str, dst: usize, key: Key, payload: Payload) -> Result<()>;
    /// [`Transport::send`] of borrowed bytes: a transport that writes them
    /// out before returning (tcp) saves the copy into a [`Bytes`].
    fn send_slice(&self, op: &'static str, dst: usize, key: Key, data: &[u8]) -> Result<()> {
        let payload = Payload::Bytes(self.pool().copy(data));
        self.send(op, dst, key, payload)
    }
    /// The next message from world rank `src` with `key`.
    fn recv(&self, op: &'static str, src: usize, key: Key) -> Result<Payload>;
}

/// Internal tags: bit 63 set, operation code in bits 32..40, round below.
#[derive(Clone, Copy)]
#[repr(u64)]
enum Op {
    Barrier = 1,
    Broadcast = 2,
    Gather = 3,
    AllGather = 4,
    AllToAll = 5,
    Split = 6,
    Objects = 7,
    /// Shared-memory all-reduce: the buffers' publication.
    ReduceShare = 8,
    /// Pipelined all-reduce: a rank's contribution to a segment.
    ReduceScatter = 9,
    /// Pipelined all-reduce: a reduced segment from its owner.
    ReduceGather = 10,
}

fn internal(op: Op, round: u64) -> u64 {
    (1 << 63) | ((op as u64) << 32) | round
}

/// A communicator over a subset of a transport's world ranks.
pub(crate) struct Group {
    transport: Arc<dyn Transport>,
    ctx: u64,
    members: Arc<[usize]>,
    rank: usize,
    splits: AtomicU64,
    /// All-reduce calls so far (checks that the ranks are in step).
    reduces: AtomicU64,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("backend", &self.transport.backend())
            .field("rank", &self.rank)
            .field("size", &self.members.len())
            .field("ctx", &self.ctx)
            .finish()
    }
}

/// splitmix64: spreads context ids of sub-communicators.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The context id of the sub-communicator made by split number `seq` of
/// the group with context `parent`, for `color`. The inputs are chained
/// through the mixer one after another (never combined by a symmetric
/// operation such as XOR, under which split 0 with colour 1 and split 2
/// with colour 0 of one parent collided), so distinct (parent, seq,
/// colour) give distinct ids up to a 64-bit hash collision.
fn child_context(parent: u64, seq: u64, color: u32) -> u64 {
    mix(mix(mix(parent) ^ seq) ^ u64::from(color))
}

impl Group {
    /// The group of all world ranks.
    pub(crate) fn world(transport: Arc<dyn Transport>) -> Self {
        let members: Arc<[usize]> = (0..transport.world_size()).collect();
        Self {
            rank: transport.world_rank(),
            transport,
            ctx: 0,
            members,
            splits: AtomicU64::new(0),
            reduces: AtomicU64::new(0),
        }
    }

    fn check_rank(&self, r: usize) -> Result<usize> {
        self.members.get(r).copied().ok_or(CommError::InvalidRank {
            rank: r,
            size: self.members.len(),
        })
    }

    fn key(&self, tag: u64) -> Key {
        Key { ctx: self.ctx, tag }
    }

    fn send_p(&self, op: &'static str, dst: usize, tag: u64, p: Payload) -> Result<()> {
        let world = self.check_rank(dst)?;
        self.transport.send(op, world, self.key(tag), p)
    }

    fn send_slice_p(&self, op: &'static str, dst: usize, tag: u64, data: &[u8]) -> Result<()> {
        let world = self.check_rank(dst)?;
        self.transport.send_slice(op, world, self.key(tag), data)
    }

    fn recv_p(&self, op: &'static str, src: usize, tag: u64) -> Result<Payload> {
        let world = self.check_rank(src)?;
        self.transport
            .recv(op, world, self.key(tag))
            .map_err(|e| self.to_group_rank(e))
    }

    /// Errors from the transport name world ranks; report group ranks.
    fn to_group_rank(&self, e: CommError) -> CommError {
        let local = |w: usize| self.members.iter().position(|&m| m == w).unwrap_or(w);
        match e {
            CommError::Timeout { op, peer, after } => CommError::Timeout {
                op,
                peer: local(peer),
                after,
            },
            CommError::PeerLost { op, peer, reason } => CommError::PeerLost {
                op,
                peer: local(peer),
                reason,
            },
            other => other,
        }
    }

    fn recv_b(&self, op: &'static str, src: usize, tag: u64) -> Result<Bytes> {
        self.recv_p(op, src, tag)?.into_bytes(op)
    }

    /// Peers in the order `rank+1, rank+2, ...` (spreads load in all-to-all).
    fn peers(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.members.len();
        (1..n).map(move |d| (self.rank + d) % n)
    }

    /// A dissemination barrier (ceil(log2 n) rounds) whose errors name `op`.
    /// When it returns, every rank has entered it: everything each rank did
    /// before entering happens before everything every rank does after.
    fn dissemination(&self, op: &'static str) -> Result<()> {
        let n = self.members.len();
        let mut dist = 1;
        let mut round = 0;
        while dist < n {
            let tag = internal(Op::Barrier, round);
            self.send_p(
                op,
                (self.rank + dist) % n,
                tag,
                Payload::Bytes(Bytes::new()),
            )?;
            self.recv_b(op, (self.rank + n - dist) % n, tag)?;
            dist *= 2;
            round += 1;
        }
        Ok(())
    }

    fn exchange(&self, op: &'static str, tag: u64, parts: Vec<Payload>) -> Result<Vec<Payload>> {
        let n = self.members.len();
        if parts.len() != n {
            return Err(CommError::invalid(
                op,
                format!("{} parts given for a communicator of size {n}", parts.len()),
            ));
        }
        let mut slots: Vec<Option<Payload>> = parts.into_iter().map(Some).collect();
        let own = slots[self.rank].take();
        for dst in self.peers() {
            let p = slots[dst].take().expect("each part is sent once");
            self.send_p(op, dst, tag, p)?;
        }
        slots[self.rank] = own;
        for src in self.peers() {
            slots[src] = Some(self.recv_p(op, src, tag)?);
        }
        Ok(slots
            .into_iter()
            .map(|s| s.expect("every slot filled"))
            .collect())
    }
}

impl Communicator for Group {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.members.len()
    }

    fn backend(&self) -> Backend {
        self.transport.backend()
    }

    fn send(&self, dest: usize, tag: Tag, data: Bytes) -> Result<()> {
        self.send_p("send", dest, u64::from(tag), Payload::Bytes(data))
    }

    fn recv(&self, source: usize, tag: Tag) -> Result<Bytes> {
        self.recv_b("recv", source, u64::from(tag))
    }

    /// Dissemination barrier: ceil(log2 n) rounds.
    fn barrier(&self) -> Result<()> {
        self.dissemination("barrier")
    }

    /// Binomial tree rooted at `root`.
    fn broadcast(&self, root: usize, data: Bytes) -> Result<Bytes> {
        let n = self.members.len();
        self.check_rank(root)?;
        let vrank = (self.rank + n - root) % n;
        let tag = internal(Op::Broadcast, 0);
        let mut data = data;
        let mut mask = 1;
        while mask < n {
            if vrank & mask != 0 {
                let src = (vrank - mask + root) % n;
                data = self.recv_b("broadcast", src, tag)?;
                break;
            }
            mask <<= 1;
        }
        mask >>= 1;
        while mask > 0 {
            if vrank + mask < n {
                let dst = (vrank + mask + root) % n;
                self.send_p("broadcast", dst, tag, Payload::Bytes(data.clone()))?;
            }
            mask >>= 1;
        }
        Ok(data)
    }

    fn gather(&self, root: usize, data: Bytes) -> Result<Option<Vec<Bytes>>> {
        self.check_rank(root)?;
        let tag = internal(Op::Gather, 0);
        if self.rank != root {
            self.send_p("gather", root, tag, Payload::Bytes(data))?;
            return Ok(None);
        }
        let mut out = Vec::with_capacity(self.members.len());
        for src in 0..self.members.len() {
            if src == root {
                out.push(data.clone());
            } else {
                out.push(self.recv_b("gather", src, tag)?);
            }
        }
        Ok(Some(out))
    }

    fn all_gather(&self, data: Bytes) -> Result<Vec<Bytes>> {
        let parts = (0..self.members.len())
            .map(|_| Payload::Bytes(data.clone()))
            .collect();
        self.exchange("all_gather", internal(Op::AllGather, 0), parts)?
            .into_iter()
            .map(|p| p.into_bytes("all_gather"))
            .collect()
    }

    fn all_to_all_v(&self, parts: Vec<Bytes>) -> Result<Vec<Bytes>> {
        let parts = parts.into_iter().map(Payload::Bytes).collect();
        self.exchange("all_to_all_v", internal(Op::AllToAll, 0), parts)?
            .into_iter()
            .map(|p| p.into_bytes("all_to_all_v"))
            .collect()
    }

    /// Every rank gets the same bits: each element is reduced in rank
    /// order on one rank and copied to the others (see [`all_reduce`]).
    fn all_reduce_raw(&self, data: &mut [u8], dtype: DType, op: ReduceOp) -> Result<()> {
        check_elements("all_reduce", data, dtype)?;
        if self.members.len() == 1 {
            return Ok(());
        }
        let seq = self.reduces.fetch_add(1, Ordering::Relaxed);
        if self.transport.shares_memory() {
            self.all_reduce_shared(seq, data, dtype, op)
        } else {
            self.all_reduce_pipelined(data, dtype, op)
        }
    }

    fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Arc<dyn Communicator>>> {
        let seq = self.splits.fetch_add(1, Ordering::SeqCst);
        let mine: [i64; 2] = [color.map_or(-1, i64::from), key];
        let tag = internal(Op::Split, seq);
        let parts = (0..self.members.len())
            .map(|_| Payload::Bytes(Bytes::copy_from_slice(bytemuck::cast_slice(&mine))))
            .collect();
        let all = self.exchange("split", tag, parts)?;
        let Some(color) = color else {
            return Ok(None);
        };
        let mut chosen: Vec<(i64, usize)> = Vec::new();
        for (r, p) in all.into_iter().enumerate() {
            let b = p.into_bytes("split")?;
            let v: Vec<i64> = crate::communicator::pod_vec(&b)?;
            if v.len() != 2 {
                return Err(CommError::MalformedFrame {
                    from: format!("rank {r}"),
                    reason: "split record is not two i64".into(),
                });
            }
            if v[0] == i64::from(color) {
                chosen.push((v[1], r));
            }
        }
        chosen.sort_unstable();
        let members: Arc<[usize]> = chosen.iter().map(|&(_, r)| self.members[r]).collect();
        let rank = chosen
            .iter()
            .position(|&(_, r)| r == self.rank)
            .expect("this rank chose the color");
        let ctx = child_context(self.ctx, seq, color);
        Ok(Some(Arc::new(Group {
            transport: Arc::clone(&self.transport),
            ctx,
            members,
            rank,
            splits: AtomicU64::new(0),
            reduces: AtomicU64::new(0),
        })))
    }

    fn supports_objects(&self) -> bool {
        self.transport.supports_objects()
    }

    fn all_to_all_objects(&self, parts: Vec<AnyBox>) -> Result<Vec<AnyBox>> {
        if !self.transport.supports_objects() {
            return Err(CommError::invalid(
                "all_to_all_objects",
                format!("the {} backend moves bytes only", self.backend()),
            ));
        }
        let parts = parts.into_iter().map(Payload::Object).collect();
        self.exchange("all_to_all_objects", internal(Op::Objects, 0), parts)?
            .into_iter()
            .map(|p| p.into_object("all_to_all_objects"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::child_context;
    use crate::{local, CommError, Communicator};
    use bytes::Bytes;
    use std::collections::HashSet;

    #[test]
    fn child_contexts_differ_for_every_split_and_colour() {
        let mut seen = HashSet::new();
        for parent in [0u64, 1, 0xdead_beef] {
            for seq in 0..64 {
                for color in 0..64 {
                    assert!(
                        seen.insert(child_context(parent, seq, color)),
                        "collision at parent {parent}, split {seq}, colour {color}"
                    );
                }
            }
        }
    }

    /// The case a review found: split 0 with colour 1 and split 2 with
    /// colour 0 of one parent had the same context id, so a message sent on
    /// one was received on the other.
    #[test]
    fn messages_on_two_sub_communicators_never_cross() {
        let got = local::launch(2, |comm| {
            let first = comm.split(Some(1), 0)?.expect("colour 1");
            let _second = comm.split(Some(5), 0)?.expect("colour 5");
            let third = comm.split(Some(0), 0)?.expect("colour 0");
            if comm.rank() == 0 {
                first.send(1, 7, Bytes::from_static(b"A"))?;
                third.send(1, 7, Bytes::from_static(b"C"))?;
                Ok::<_, CommError>(Vec::new())
            } else {
                // The third first: it must get "C", not the "A" of the first.
                let c = third.recv(0, 7)?;
                let a = first.recv(0, 7)?;
                Ok(vec![c, a])
            }
        })
        .unwrap();
        assert_eq!(
            got[1],
            vec![Bytes::from_static(b"C"), Bytes::from_static(b"A")]
        );
    }
}
