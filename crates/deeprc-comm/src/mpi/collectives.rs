//! Collectives over MPI's own: every variable-size collective first
//! exchanges the sizes, then moves the bytes with the `v` variant
//! (`MPI_Gatherv`, `MPI_Allgatherv`, `MPI_Alltoallv`).
//!
//! MPI counts and displacements are `int`s: whenever the bytes one rank
//! would send or receive in one call exceed the communicator's chunk size
//! ([`MpiComm::chunk_bytes`], at most `i32::MAX`), the collective runs in
//! rounds, each moving at most `chunk / size` bytes per pair of ranks. Every
//! rank decides the same way because every rank knows the sizes that decide
//! (an all-gather of the sizes, or one small all-reduce for all-to-all).

use super::{backend_err, Inner, MpiComm};
use crate::{communicator::check_elements, CommError, DType, ReduceOp, Result};
use ::mpi::{
    collective::SystemOperation,
    datatype::{DatatypeRef, DynBuffer, DynBufferMut, Equivalence, Partition, PartitionMut},
    ffi,
    topology::{Color, Rank},
    traits::{AsRaw, Communicator as _, CommunicatorCollectives, Root},
    Count,
};
use bytes::Bytes;
use std::{os::raw::c_void, sync::Arc};

/// Backs empty buffers with a real address: the dangling pointer of an
/// empty slice of bytes is `0x1`, which OpenMPI reads as `MPI_IN_PLACE`.
static NOTHING: [u8; 1] = [0];

fn send_buf(s: &[u8]) -> &[u8] {
    if s.is_empty() {
        &NOTHING[..0]
    } else {
        s
    }
}

/// Like [`send_buf`] for receive buffers, backed by `spare` when empty.
fn recv_buf<'a>(s: &'a mut [u8], spare: &'a mut [u8; 1]) -> &'a mut [u8] {
    if s.is_empty() {
        &mut spare[..0]
    } else {
        s
    }
}

/// Prefix sums: part `i` lies at `offs[i]..offs[i + 1]`.
fn offsets(counts: &[usize]) -> Result<Vec<usize>> {
    let mut offs = Vec::with_capacity(counts.len() + 1);
    let mut at = 0usize;
    offs.push(0);
    for &c in counts {
        at = at
            .checked_add(c)
            .ok_or_else(|| backend_err("the parts of a collective overflow usize"))?;
        offs.push(at);
    }
    Ok(offs)
}

/// Counts or displacements as MPI `int`s (callers keep them within the chunk).
fn counts_c(v: &[usize]) -> Result<Vec<Count>> {
    v.iter()
        .map(|&x| {
            Count::try_from(x).map_err(|_| backend_err(format!("internal: an MPI count of {x}")))
        })
        .collect()
}

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| backend_err(format!("a size of {v} bytes does not fit usize")))
}

/// One buffer cut into the parts at `offs`, without copying.
fn split_parts(buf: Vec<u8>, offs: &[usize]) -> Vec<Bytes> {
    let b = Bytes::from(buf);
    offs.windows(2).map(|w| b.slice(w[0]..w[1])).collect()
}

/// Round `k`'s piece of a part of `len` bytes, `per` bytes a round.
fn piece(len: usize, k: usize, per: usize) -> std::ops::Range<usize> {
    let start = k.saturating_mul(per).min(len);
    start..(start + per).min(len)
}

fn datatype(d: DType) -> DatatypeRef<'static> {
    match d {
        DType::U8 => u8::equivalent_datatype(),
        DType::I8 => i8::equivalent_datatype(),
        DType::U16 => u16::equivalent_datatype(),
        DType::I16 => i16::equivalent_datatype(),
        DType::U32 => u32::equivalent_datatype(),
        DType::I32 => i32::equivalent_datatype(),
        DType::U64 => u64::equivalent_datatype(),
        DType::I64 => i64::equivalent_datatype(),
        DType::F32 => f32::equivalent_datatype(),
        DType::F64 => f64::equivalent_datatype(),
    }
}

fn operation(op: ReduceOp) -> SystemOperation {
    match op {
        ReduceOp::Sum => SystemOperation::sum(),
        ReduceOp::Min => SystemOperation::min(),
        ReduceOp::Max => SystemOperation::max(),
        ReduceOp::Prod => SystemOperation::product(),
    }
}

impl MpiComm {
    fn check_root(&self, root: usize) -> Result<Rank> {
        let size = self.size_();
        if root >= size {
            return Err(CommError::InvalidRank { rank: root, size });
        }
        Ok(root as Rank)
    }

    /// Every rank's `value`, in rank order.
    fn all_gather_u64(&self, op: &'static str, value: u64) -> Result<Vec<u64>> {
        let mut all = vec![0u64; self.size_()];
        let _e = self.inner.rt.enter(op)?;
        self.inner.comm.all_gather_into(&value, &mut all[..]);
        Ok(all)
    }

    /// Element-wise maximum of `values` over the ranks.
    fn all_max_u64<const N: usize>(&self, op: &'static str, values: [u64; N]) -> Result<[u64; N]> {
        let mut out = [0u64; N];
        let _e = self.inner.rt.enter(op)?;
        self.inner
            .comm
            .all_reduce_into(&values[..], &mut out[..], SystemOperation::max());
        Ok(out)
    }

    pub(super) fn barrier_(&self) -> Result<()> {
        self.reap_sends();
        let _e = self.inner.rt.enter("barrier")?;
        self.inner.comm.barrier();
        Ok(())
    }

    pub(super) fn broadcast_(&self, root: usize, data: Bytes) -> Result<Bytes> {
        self.reap_sends();
        let root_c = self.check_root(root)?;
        let me = self.rank_();
        let mut len = [if me == root { data.len() as u64 } else { 0 }];
        {
            let _e = self.inner.rt.enter("broadcast")?;
            self.inner
                .comm
                .process_at_rank(root_c)
                .broadcast_into(&mut len[..]);
        }
        let len = to_usize(len[0])?;
        let chunk = self.chunk;
        if me == root {
            let mut at = 0;
            while at < len {
                let end = (at + chunk).min(len);
                let _e = self.inner.rt.enter("broadcast")?;
                // SAFETY: on the root MPI_Bcast only reads the buffer: `end -
                // at` (at most `chunk`, an int) bytes of `data` at `at`.
                let rc = unsafe {
                    ffi::MPI_Bcast(
                        data.as_ptr().add(at).cast_mut().cast::<c_void>(),
                        (end - at) as Count,
                        u8::equivalent_datatype().as_raw(),
                        root_c,
                        self.inner.comm.as_raw(),
                    )
                };
                super::p2p::check_rc(rc, "MPI_Bcast")?;
                at = end;
            }
            return Ok(data);
        }
        let mut out = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let end = (at + chunk).min(len);
            let _e = self.inner.rt.enter("broadcast")?;
            self.inner
                .comm
                .process_at_rank(root_c)
                .broadcast_into(&mut out[at..end]);
            at = end;
        }
        Ok(out.into())
    }

    /// The sizes of a gather: every rank's length (the root's counted as 0
    /// when `skip` names it: the root keeps its own part).
    fn gathered_counts(
        &self,
        op: &'static str,
        len: usize,
        skip: Option<usize>,
    ) -> Result<Vec<usize>> {
        let mut counts = self
            .all_gather_u64(op, len as u64)?
            .into_iter()
            .map(to_usize)
            .collect::<Result<Vec<_>>>()?;
        if let Some(r) = skip {
            counts[r] = 0;
        }
        Ok(counts)
    }

    pub(super) fn gather_(&self, root: usize, data: Bytes) -> Result<Option<Vec<Bytes>>> {
        self.reap_sends();
        let root_c = self.check_root(root)?;
        let (me, n) = (self.rank_(), self.size_());
        let counts = self.gathered_counts("gather", data.len(), Some(root))?;
        let offs = offsets(&counts)?;
        let total = offs[n];
        let mine: &[u8] = if me == root { &[] } else { &data };
        let mut out = if me == root {
            vec![0u8; total]
        } else {
            Vec::new()
        };
        let gatherv = |send: &[u8], recv: &mut [u8], pieces: &[usize]| -> Result<()> {
            let (send, mut spare) = (send_buf(send), [0u8; 1]);
            let _e = self.inner.rt.enter("gather")?;
            let process = self.inner.comm.process_at_rank(root_c);
            if me == root {
                let c = counts_c(pieces)?;
                let d = counts_c(&offsets(pieces)?[..n])?;
                let recv = recv_buf(recv, &mut spare);
                process
                    .gather_varcount_into_root(send, &mut PartitionMut::new(recv, &c[..], &d[..]));
            } else {
                process.gather_varcount_into(send);
            }
            Ok(())
        };
        if total <= self.chunk {
            if total > 0 {
                gatherv(mine, &mut out, &counts)?;
            }
        } else {
            let per = (self.chunk / n).max(1);
            let rounds = counts.iter().max().copied().unwrap_or(0).div_ceil(per);
            let mut round = Vec::new();
            for k in 0..rounds {
                let pieces: Vec<usize> = counts.iter().map(|&c| piece(c, k, per).len()).collect();
                let poffs = offsets(&pieces)?;
                if me == root {
                    round.resize(poffs[n], 0);
                }
                gatherv(&mine[piece(mine.len(), k, per)], &mut round, &pieces)?;
                if me == root {
                    for i in 0..n {
                        let dst = offs[i] + piece(counts[i], k, per).start;
                        out[dst..dst + pieces[i]].copy_from_slice(&round[poffs[i]..poffs[i + 1]]);
                    }
                }
            }
        }
        if me != root {
            return Ok(None);
        }
        let mut parts = split_parts(out, &offs);
        parts[root] = data;
        Ok(Some(parts))
    }

    pub(super) fn all_gather_(&self, data: Bytes) -> Result<Vec<Bytes>> {
        self.reap_sends();
        let (me, n) = (self.rank_(), self.size_());
        let counts = self.gathered_counts("all_gather", data.len(), None)?;
        let offs = offsets(&counts)?;
        let total = offs[n];
        let mut out = vec![0u8; total];
        let allgatherv = |send: &[u8], recv: &mut [u8], pieces: &[usize]| -> Result<()> {
            let c = counts_c(pieces)?;
            let d = counts_c(&offsets(pieces)?[..n])?;
            let (send, mut spare) = (send_buf(send), [0u8; 1]);
            let recv = recv_buf(recv, &mut spare);
            let _e = self.inner.rt.enter("all_gather")?;
            self.inner
                .comm
                .all_gather_varcount_into(send, &mut PartitionMut::new(recv, &c[..], &d[..]));
            Ok(())
        };
        if total <= self.chunk {
            if total > 0 {
                allgatherv(&data, &mut out, &counts)?;
            }
        } else {
            let per = (self.chunk / n).max(1);
            let rounds = counts.iter().max().copied().unwrap_or(0).div_ceil(per);
            let mut round = Vec::new();
            for k in 0..rounds {
                let pieces: Vec<usize> = counts.iter().map(|&c| piece(c, k, per).len()).collect();
                let poffs = offsets(&pieces)?;
                round.resize(poffs[n], 0);
                allgatherv(&data[piece(data.len(), k, per)], &mut round, &pieces)?;
                for i in 0..n {
                    let dst = offs[i] + piece(counts[i], k, per).start;
                    out[dst..dst + pieces[i]].copy_from_slice(&round[poffs[i]..poffs[i + 1]]);
                }
            }
        }
        let mut parts = split_parts(out, &offs);
        // This rank's own part is the caller's bytes (same content, no copy).
        parts[me] = data;
        Ok(parts)
    }

    pub(super) fn all_to_all_v_(&self, mut parts: Vec<Bytes>) -> Result<Vec<Bytes>> {
        self.reap_sends();
        let (me, n) = (self.rank_(), self.size_());
        if parts.len() != n {
            return Err(CommError::InvalidArgument {
                op: "all_to_all_v",
                reason: format!("{} parts for a communicator of {n} ranks", parts.len()),
            });
        }
        // This rank's own part never goes through MPI.
        let send: Vec<usize> = (0..n)
            .map(|j| if j == me { 0 } else { parts[j].len() })
            .collect();
        let send_u64: Vec<u64> = send.iter().map(|&x| x as u64).collect();
        let mut recv_u64 = vec![0u64; n];
        {
            let _e = self.inner.rt.enter("all_to_all_v")?;
            self.inner
                .comm
                .all_to_all_into(&send_u64[..], &mut recv_u64[..]);
        }
        let recv = recv_u64
            .into_iter()
            .map(to_usize)
            .collect::<Result<Vec<_>>>()?;
        let soffs = offsets(&send)?;
        let roffs = offsets(&recv)?;
        let max_part = send.iter().chain(&recv).copied().max().unwrap_or(0);
        let [g_part, g_total] = self.all_max_u64(
            "all_to_all_v",
            [max_part as u64, soffs[n].max(roffs[n]) as u64],
        )?;
        let mut out = vec![0u8; roffs[n]];
        let alltoallv =
            |spieces: &[usize], sbuf: &[u8], rpieces: &[usize], rbuf: &mut [u8]| -> Result<()> {
                let (sc, rc) = (counts_c(spieces)?, counts_c(rpieces)?);
                let sd = counts_c(&offsets(spieces)?[..n])?;
                let rd = counts_c(&offsets(rpieces)?[..n])?;
                let (sbuf, mut spare) = (send_buf(sbuf), [0u8; 1]);
                let rbuf = recv_buf(rbuf, &mut spare);
                let _e = self.inner.rt.enter("all_to_all_v")?;
                self.inner.comm.all_to_all_varcount_into(
                    &Partition::new(sbuf, &sc[..], &sd[..]),
                    &mut PartitionMut::new(rbuf, &rc[..], &rd[..]),
                );
                Ok(())
            };
        if g_total == 0 {
            // Nothing to move anywhere (every rank knows it).
        } else if g_total <= self.chunk as u64 {
            let mut sbuf = Vec::with_capacity(soffs[n]);
            for (j, p) in parts.iter().enumerate() {
                if j != me {
                    sbuf.extend_from_slice(p);
                }
            }
            alltoallv(&send, &sbuf, &recv, &mut out)?;
        } else {
            let per = (self.chunk / n).max(1);
            let rounds = to_usize(g_part)?.div_ceil(per);
            let (mut sbuf, mut rbuf) = (Vec::new(), Vec::new());
            for k in 0..rounds {
                let spieces: Vec<usize> = send.iter().map(|&c| piece(c, k, per).len()).collect();
                let rpieces: Vec<usize> = recv.iter().map(|&c| piece(c, k, per).len()).collect();
                sbuf.clear();
                for (j, p) in parts.iter().enumerate() {
                    if j != me {
                        sbuf.extend_from_slice(&p[piece(send[j], k, per)]);
                    }
                }
                let rp = offsets(&rpieces)?;
                rbuf.resize(rp[n], 0);
                alltoallv(&spieces, &sbuf, &rpieces, &mut rbuf)?;
                for i in 0..n {
                    let dst = roffs[i] + piece(recv[i], k, per).start;
                    out[dst..dst + rpieces[i]].copy_from_slice(&rbuf[rp[i]..rp[i + 1]]);
                }
            }
        }
        let mut got = split_parts(out, &roffs);
        got[me] = std::mem::take(&mut parts[me]);
        Ok(got)
    }

    pub(super) fn all_reduce_(&self, data: &mut [u8], dtype: DType, op: ReduceOp) -> Result<()> {
        self.reap_sends();
        check_elements("all_reduce", data, dtype)?;
        let len = data.len() as u64;
        // One small all-reduce checks that every rank brought the same length.
        let [max, neg_min] = self.all_max_u64("all_reduce", [len, u64::MAX - len])?;
        if max != u64::MAX - neg_min {
            let lens = self.all_gather_u64("all_reduce", len)?;
            let peer = lens.iter().position(|&l| l != len).unwrap_or(0);
            return Err(CommError::SizeMismatch {
                op: "all_reduce",
                peer,
                expected: data.len(),
                actual: lens[peer] as usize,
            });
        }
        let esize = dtype.size();
        let step = (self.chunk / esize).max(1) * esize;
        let dt = datatype(dtype);
        let mut send = Vec::with_capacity(data.len().min(step));
        for part in data.chunks_mut(step) {
            send.clear();
            send.extend_from_slice(part);
            let count = (part.len() / esize) as Count;
            // SAFETY: both buffers hold `count` elements of `dt` (`part.len()`
            // bytes; MPI does not need them aligned); `send` is only read and
            // `part` only written by MPI_Allreduce, and both outlive the call.
            let (sb, mut rb) = unsafe {
                (
                    DynBuffer::from_raw(send.as_ptr(), count, dt),
                    DynBufferMut::from_raw(part.as_mut_ptr(), count, dt),
                )
            };
            let _e = self.inner.rt.enter("all_reduce")?;
            self.inner.comm.all_reduce_into(&sb, &mut rb, operation(op));
        }
        Ok(())
    }

    pub(super) fn split_(&self, color: Option<u32>, key: i64) -> Result<Option<MpiComm>> {
        self.reap_sends();
        let (me, n) = (self.rank_(), self.size_());
        // Every rank learns every (color, key): the MPI color and key are
        // then dense ints computed the same way everywhere, so any u32 color
        // and any i64 key work.
        let mine = [color.map_or(u64::MAX, u64::from), key as u64];
        let mut all = vec![0u64; 2 * n];
        {
            let _e = self.inner.rt.enter("split")?;
            self.inner.comm.all_gather_into(&mine[..], &mut all[..]);
        }
        let entries: Vec<(u64, i64)> = all.chunks(2).map(|c| (c[0], c[1] as i64)).collect();
        let plan = color.map(|c| {
            let c = u64::from(c);
            let mut colors: Vec<u64> = entries
                .iter()
                .map(|e| e.0)
                .filter(|&x| x != u64::MAX)
                .collect();
            colors.sort_unstable();
            colors.dedup();
            let dense = colors.binary_search(&c).unwrap_or(0);
            let mut members: Vec<(i64, usize)> = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.0 == c)
                .map(|(r, e)| (e.1, r))
                .collect();
            members.sort_unstable();
            let pos = members.iter().position(|&(_, r)| r == me).unwrap_or(0);
            (dense, pos, members.len())
        });
        let new = {
            let _e = self.inner.rt.enter("split")?;
            match plan {
                Some((dense, pos, _)) => self
                    .inner
                    .comm
                    .split_by_color_with_key(Color::with_value(dense as Rank), pos as Rank),
                None => self.inner.comm.split_by_color(Color::undefined()),
            }
        };
        match (plan, new) {
            (None, None) => Ok(None),
            (Some((_, pos, size)), Some(comm)) => {
                let inner = Inner::new(comm, self.inner.rt)?;
                if inner.rank != pos || inner.size != size {
                    return Err(backend_err(format!(
                        "MPI_Comm_split gave rank {} of {}, expected rank {pos} of {size}",
                        inner.rank, inner.size
                    )));
                }
                Ok(Some(MpiComm {
                    inner: Arc::new(inner),
                    chunk: self.chunk,
                }))
            }
            (Some(_), None) => Err(backend_err(
                "MPI_Comm_split returned MPI_COMM_NULL for a color",
            )),
            (None, Some(_)) => Err(backend_err(
                "MPI_Comm_split returned a communicator for MPI_UNDEFINED",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_cover_every_byte_once() {
        let per = 7;
        for len in [0usize, 1, 6, 7, 8, 49, 50] {
            let rounds = len.div_ceil(per);
            let mut next = 0;
            for k in 0..rounds + 2 {
                let p = piece(len, k, per);
                assert!(p.len() <= per);
                if p.is_empty() {
                    assert!(k >= rounds);
                    continue;
                }
                assert_eq!(p.start, next);
                next = p.end;
            }
            assert_eq!(next, len);
        }
    }

    #[test]
    fn offsets_and_parts() {
        let offs = offsets(&[3, 0, 2]).unwrap();
        assert_eq!(offs, vec![0, 3, 3, 5]);
        let parts = split_parts(b"abcde".to_vec(), &offs);
        assert_eq!(parts, vec![&b"abc"[..], &b""[..], &b"de"[..]]);
        assert!(offsets(&[usize::MAX, 1]).is_err());
        assert!(counts_c(&[i32::MAX as usize + 1]).is_err());
    }

    #[test]
    fn empty_buffers_have_a_real_address() {
        // 0x1 is OpenMPI's MPI_IN_PLACE.
        assert_ne!(send_buf(&[]).as_ptr() as usize, 1);
        let mut spare = [0u8; 1];
        assert_ne!(recv_buf(&mut [], &mut spare).as_ptr() as usize, 1);
    }
}
