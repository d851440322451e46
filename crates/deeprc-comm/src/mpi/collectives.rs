//! Collectives over MPI's own, in their nonblocking forms waited for at
//! most the communicator's timeout (see `deadline.rs`): every
//! variable-size collective first exchanges the sizes, then moves the bytes
//! with the `v` variant (`MPI_Igatherv`, `MPI_Iallgatherv`,
//! `MPI_Ialltoallv`).
//!
//! Every buffer, count and displacement array handed to MPI is owned by the
//! wait of its call (not borrowed from the caller), so a call that times
//! out can leak them while MPI may still use them. `all_reduce_raw`
//! therefore reduces a copy of the caller's bytes and copies the result
//! back.
//!
//! MPI counts and displacements are `int`s: whenever the bytes one rank
//! would send or receive in one call exceed the communicator's chunk size
//! ([`MpiComm::chunk_bytes`], at most `i32::MAX`), the collective runs in
//! rounds, each moving at most `chunk / size` bytes per pair of ranks. Every
//! rank decides the same way because every rank knows the sizes that decide
//! (an all-gather of the sizes, or one small all-reduce for all-to-all).

use super::{
    backend_err,
    deadline::{recv_ptr, send_ptr},
    Inner, MpiComm,
};
use crate::{communicator::check_elements, CommError, DType, ReduceOp, Result};
use ::mpi::{
    collective::SystemOperation,
    datatype::{DatatypeRef, Equivalence},
    ffi,
    topology::{Color, Rank},
    traits::{AsRaw, Communicator as _},
    Count,
};
use bytes::Bytes;
use std::sync::Arc;

fn bytes_type() -> ffi::MPI_Datatype {
    u8::equivalent_datatype().as_raw()
}

fn u64_type() -> ffi::MPI_Datatype {
    u64::equivalent_datatype().as_raw()
}

fn count(len: usize) -> Result<Count> {
    Count::try_from(len).map_err(|_| backend_err(format!("internal: an MPI count of {len}")))
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

    /// Every rank's `mine` (the same number of values on every rank),
    /// concatenated in rank order (`MPI_Iallgather`).
    fn all_gather_u64s(&self, op: &'static str, mine: &[u64]) -> Result<Vec<u64>> {
        let send = mine.to_vec();
        let mut all = vec![0u64; mine.len() * self.size_()];
        let k = count(mine.len())?;
        let (sp, rp, comm) = (
            send_ptr(send.as_ptr().cast(), send.len()),
            recv_ptr(&mut all),
            self.raw(),
        );
        // SAFETY: `send` holds `k` u64s and `all` `k * size`; both are
        // owned by the wait below (leaked if it times out), so they outlive
        // the call.
        let req = self.start(op, "MPI_Iallgather", |req| unsafe {
            ffi::MPI_Iallgather(sp, k, u64_type(), rp, k, u64_type(), comm, req)
        })?;
        let (_send, all) = self.wait(op, req, (send, all))?;
        Ok(all)
    }

    /// Element-wise maximum of `values` over the ranks (`MPI_Iallreduce`).
    fn all_max_u64<const N: usize>(&self, op: &'static str, values: [u64; N]) -> Result<[u64; N]> {
        let send = values.to_vec();
        let mut out = vec![0u64; N];
        let k = count(N)?;
        let (sp, rp, comm) = (
            send_ptr(send.as_ptr().cast(), N),
            recv_ptr(&mut out),
            self.raw(),
        );
        let max = SystemOperation::max().as_raw();
        // SAFETY: both vectors hold `N` u64s and are owned by the wait
        // below (leaked if it times out).
        let req = self.start(op, "MPI_Iallreduce", |req| unsafe {
            ffi::MPI_Iallreduce(sp, rp, k, u64_type(), max, comm, req)
        })?;
        let (_send, out) = self.wait(op, req, (send, out))?;
        let mut r = [0u64; N];
        r.copy_from_slice(&out);
        Ok(r)
    }

    /// `value` of rank `root` on every rank (`MPI_Ibcast`).
    fn broadcast_u64(&self, op: &'static str, root: Rank, value: u64) -> Result<u64> {
        let mut buf = vec![value];
        let (bp, comm) = (recv_ptr(&mut buf), self.raw());
        // SAFETY: `buf` holds one u64 and is owned by the wait below.
        let req = self.start(op, "MPI_Ibcast", |req| unsafe {
            ffi::MPI_Ibcast(bp, 1, u64_type(), root, comm, req)
        })?;
        Ok(self.wait(op, req, buf)?[0])
    }

    pub(super) fn barrier_(&self) -> Result<()> {
        self.reap_sends();
        self.ibarrier("barrier")
    }

    pub(super) fn broadcast_(&self, root: usize, data: Bytes) -> Result<Bytes> {
        const OP: &str = "broadcast";
        self.check_usable(OP)?;
        self.reap_sends();
        let root_c = self.check_root(root)?;
        let me = self.rank_();
        let len = self.broadcast_u64(OP, root_c, if me == root { data.len() as u64 } else { 0 })?;
        let len = to_usize(len)?;
        let (chunk, comm) = (self.chunk, self.raw());
        if me == root {
            let mut at = 0;
            while at < len {
                let end = (at + chunk).min(len);
                let n = count(end - at)?;
                // SAFETY: `at < len == data.len()`, so the pointer is inside
                // `data`.
                let p = unsafe { data.as_ptr().add(at) };
                // SAFETY: on the root MPI_Ibcast only reads the buffer: `n`
                // bytes of `data` at `at`; the wait below owns a handle to
                // `data`'s bytes (leaked if it times out).
                let req = self.start(OP, "MPI_Ibcast", |req| unsafe {
                    ffi::MPI_Ibcast(p.cast_mut().cast(), n, bytes_type(), root_c, comm, req)
                })?;
                self.wait(OP, req, data.clone())?;
                at = end;
            }
            return Ok(data);
        }
        let mut out = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let end = (at + chunk).min(len);
            let n = count(end - at)?;
            // SAFETY: `at < len == out.len()`: inside `out`.
            let p = unsafe { out.as_mut_ptr().add(at) };
            // SAFETY: MPI writes `n` bytes at `p`, inside `out`, which the
            // wait below owns (leaked if it times out).
            let req = self.start(OP, "MPI_Ibcast", |req| unsafe {
                ffi::MPI_Ibcast(p.cast(), n, bytes_type(), root_c, comm, req)
            })?;
            out = self.wait(OP, req, out)?;
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
            .all_gather_u64s(op, &[len as u64])?
            .into_iter()
            .map(to_usize)
            .collect::<Result<Vec<_>>>()?;
        if let Some(r) = skip {
            counts[r] = 0;
        }
        Ok(counts)
    }

    /// One `MPI_Igatherv` (`root` given) or `MPI_Iallgatherv` (`None`):
    /// `send` from every rank, `pieces[i]` bytes of rank `i` into `recv` in
    /// rank order (on the root, or everywhere). Returns `recv`.
    fn gatherv(
        &self,
        op: &'static str,
        root: Option<Rank>,
        send: Bytes,
        mut recv: Vec<u8>,
        pieces: &[usize],
    ) -> Result<Vec<u8>> {
        let n = self.size_();
        let counts = counts_c(pieces)?;
        let displs = counts_c(&offsets(pieces)?[..n])?;
        let scount = count(send.len())?;
        let sp = send_ptr(send.as_ptr(), send.len());
        let (rp, cp, dp, comm) = (
            recv_ptr(&mut recv),
            counts.as_ptr(),
            displs.as_ptr(),
            self.raw(),
        );
        let req = match root {
            // SAFETY: `send` holds `scount` bytes; on the root `recv` holds
            // the sum of `counts` bytes at `displs`; elsewhere the receive
            // arguments are not used. The wait below owns all four buffers
            // (leaked if it times out).
            Some(root) => self.start(op, "MPI_Igatherv", |req| unsafe {
                ffi::MPI_Igatherv(
                    sp,
                    scount,
                    bytes_type(),
                    rp,
                    cp,
                    dp,
                    bytes_type(),
                    root,
                    comm,
                    req,
                )
            })?,
            // SAFETY: as above, with `recv` the size of the sum of `counts`
            // on every rank.
            None => self.start(op, "MPI_Iallgatherv", |req| unsafe {
                ffi::MPI_Iallgatherv(
                    sp,
                    scount,
                    bytes_type(),
                    rp,
                    cp,
                    dp,
                    bytes_type(),
                    comm,
                    req,
                )
            })?,
        };
        let (_send, recv, _counts, _displs) = self.wait(op, req, (send, recv, counts, displs))?;
        Ok(recv)
    }

    pub(super) fn gather_(&self, root: usize, data: Bytes) -> Result<Option<Vec<Bytes>>> {
        const OP: &str = "gather";
        self.check_usable(OP)?;
        self.reap_sends();
        let root_c = self.check_root(root)?;
        let (me, n) = (self.rank_(), self.size_());
        let counts = self.gathered_counts(OP, data.len(), Some(root))?;
        let offs = offsets(&counts)?;
        let total = offs[n];
        let mine = if me == root {
            Bytes::new()
        } else {
            data.clone()
        };
        let mut out = if me == root {
            vec![0u8; total]
        } else {
            Vec::new()
        };
        if total <= self.chunk {
            if total > 0 {
                out = self.gatherv(OP, Some(root_c), mine, out, &counts)?;
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
                let part = mine.slice(piece(mine.len(), k, per));
                round = self.gatherv(OP, Some(root_c), part, round, &pieces)?;
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
        const OP: &str = "all_gather";
        self.check_usable(OP)?;
        self.reap_sends();
        let (me, n) = (self.rank_(), self.size_());
        let counts = self.gathered_counts(OP, data.len(), None)?;
        let offs = offsets(&counts)?;
        let total = offs[n];
        let mut out = vec![0u8; total];
        if total <= self.chunk {
            if total > 0 {
                out = self.gatherv(OP, None, data.clone(), out, &counts)?;
            }
        } else {
            let per = (self.chunk / n).max(1);
            let rounds = counts.iter().max().copied().unwrap_or(0).div_ceil(per);
            let mut round = Vec::new();
            for k in 0..rounds {
                let pieces: Vec<usize> = counts.iter().map(|&c| piece(c, k, per).len()).collect();
                let poffs = offsets(&pieces)?;
                round.resize(poffs[n], 0);
                let part = data.slice(piece(data.len(), k, per));
                round = self.gatherv(OP, None, part, round, &pieces)?;
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

    /// One `MPI_Ialltoallv`: `spieces[j]` bytes of `sbuf` (in rank order)
    /// to rank `j`, `rpieces[i]` bytes from rank `i` into `rbuf`. Returns
    /// both buffers for reuse.
    fn alltoallv(
        &self,
        op: &'static str,
        sbuf: Vec<u8>,
        spieces: &[usize],
        mut rbuf: Vec<u8>,
        rpieces: &[usize],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let n = self.size_();
        let (sc, rc) = (counts_c(spieces)?, counts_c(rpieces)?);
        let sd = counts_c(&offsets(spieces)?[..n])?;
        let rd = counts_c(&offsets(rpieces)?[..n])?;
        let sp = send_ptr(sbuf.as_ptr(), sbuf.len());
        let rp = recv_ptr(&mut rbuf);
        let (scp, sdp, rcp, rdp) = (sc.as_ptr(), sd.as_ptr(), rc.as_ptr(), rd.as_ptr());
        let comm = self.raw();
        // SAFETY: `sbuf` holds the sum of `sc` bytes at `sd`, `rbuf` the sum
        // of `rc` at `rd`; the wait below owns all six buffers (leaked if it
        // times out).
        let req = self.start(op, "MPI_Ialltoallv", |req| unsafe {
            ffi::MPI_Ialltoallv(
                sp,
                scp,
                sdp,
                bytes_type(),
                rp,
                rcp,
                rdp,
                bytes_type(),
                comm,
                req,
            )
        })?;
        let (sbuf, rbuf, ..) = self.wait(op, req, (sbuf, rbuf, sc, sd, rc, rd))?;
        Ok((sbuf, rbuf))
    }

    pub(super) fn all_to_all_v_(&self, mut parts: Vec<Bytes>) -> Result<Vec<Bytes>> {
        const OP: &str = "all_to_all_v";
        self.check_usable(OP)?;
        self.reap_sends();
        let (me, n) = (self.rank_(), self.size_());
        if parts.len() != n {
            return Err(CommError::InvalidArgument {
                op: OP,
                reason: format!("{} parts for a communicator of {n} ranks", parts.len()),
            });
        }
        // This rank's own part never goes through MPI.
        let send: Vec<usize> = (0..n)
            .map(|j| if j == me { 0 } else { parts[j].len() })
            .collect();
        let send_u64: Vec<u64> = send.iter().map(|&x| x as u64).collect();
        let mut recv_u64 = vec![0u64; n];
        let (sp, rp, comm) = (
            send_ptr(send_u64.as_ptr().cast(), n),
            recv_ptr(&mut recv_u64),
            self.raw(),
        );
        // SAFETY: both vectors hold one u64 per rank and are owned by the
        // wait below (leaked if it times out).
        let req = self.start(OP, "MPI_Ialltoall", |req| unsafe {
            ffi::MPI_Ialltoall(sp, 1, u64_type(), rp, 1, u64_type(), comm, req)
        })?;
        let (_, recv_u64) = self.wait(OP, req, (send_u64, recv_u64))?;
        let recv = recv_u64
            .into_iter()
            .map(to_usize)
            .collect::<Result<Vec<_>>>()?;
        let soffs = offsets(&send)?;
        let roffs = offsets(&recv)?;
        let max_part = send.iter().chain(&recv).copied().max().unwrap_or(0);
        let [g_part, g_total] =
            self.all_max_u64(OP, [max_part as u64, soffs[n].max(roffs[n]) as u64])?;
        let mut out = vec![0u8; roffs[n]];
        if g_total == 0 {
            // Nothing to move anywhere (every rank knows it).
        } else if g_total <= self.chunk as u64 {
            let mut sbuf = Vec::with_capacity(soffs[n]);
            for (j, p) in parts.iter().enumerate() {
                if j != me {
                    sbuf.extend_from_slice(p);
                }
            }
            out = self.alltoallv(OP, sbuf, &send, out, &recv)?.1;
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
                (sbuf, rbuf) = self.alltoallv(OP, sbuf, &spieces, rbuf, &rpieces)?;
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
        const OP: &str = "all_reduce";
        self.check_usable(OP)?;
        self.reap_sends();
        check_elements(OP, data, dtype)?;
        let len = data.len() as u64;
        // One small all-reduce checks that every rank brought the same length.
        let [max, neg_min] = self.all_max_u64(OP, [len, u64::MAX - len])?;
        if max != u64::MAX - neg_min {
            let lens = self.all_gather_u64s(OP, &[len])?;
            let peer = lens.iter().position(|&l| l != len).unwrap_or(0);
            return Err(CommError::SizeMismatch {
                op: OP,
                peer,
                expected: data.len(),
                actual: lens[peer] as usize,
            });
        }
        let esize = dtype.size();
        let step = (self.chunk / esize).max(1) * esize;
        let (dt, mop, comm) = (datatype(dtype).as_raw(), operation(op).as_raw(), self.raw());
        let cap = data.len().min(step);
        let (mut send, mut recv) = (Vec::with_capacity(cap), Vec::with_capacity(cap));
        for part in data.chunks_mut(step) {
            send.clear();
            send.extend_from_slice(part);
            recv.clear();
            recv.resize(part.len(), 0u8);
            let n = count(part.len() / esize)?;
            let (sp, rp) = (send_ptr(send.as_ptr(), send.len()), recv_ptr(&mut recv));
            // SAFETY: both buffers hold `n` elements of `dt` (`part.len()`
            // bytes; MPI does not need them aligned) and are owned by the
            // wait below (leaked if it times out): the caller's `data` is
            // never handed to MPI.
            let req = self.start(OP, "MPI_Iallreduce", |req| unsafe {
                ffi::MPI_Iallreduce(sp, rp, n, dt, mop, comm, req)
            })?;
            (send, recv) = self.wait(OP, req, (send, recv))?;
            part.copy_from_slice(&recv);
        }
        Ok(())
    }

    pub(super) fn split_(&self, color: Option<u32>, key: i64) -> Result<Option<MpiComm>> {
        const OP: &str = "split";
        self.check_usable(OP)?;
        self.reap_sends();
        let me = self.rank_();
        // Every rank learns every (color, key): the MPI color and key are
        // then dense ints computed the same way everywhere, so any u32 color
        // and any i64 key work. Once this all-gather is done every rank has
        // reached the split, so the blocking MPI_Comm_split below waits for
        // nobody that is not already there.
        let mine = [color.map_or(u64::MAX, u64::from), key as u64];
        let all = self.all_gather_u64s(OP, &mine)?;
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
                    timeout: self.timeout,
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
        let empty: Vec<u8> = Vec::new();
        assert_ne!(send_ptr(empty.as_ptr(), 0) as usize, 1);
        let mut empty: Vec<u8> = Vec::new();
        assert_ne!(recv_ptr(&mut empty) as usize, 1);
    }
}
