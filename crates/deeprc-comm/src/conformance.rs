//! The conformance suite every [`Communicator`] backend must pass.
//!
//! [`run_all`] is called on every rank of a communicator (threads,
//! processes, MPI ranks...) and checks each operation against a naive
//! reference computed from the ranks' deterministic inputs. Backend test
//! harnesses call it unchanged.

use crate::{CommError, Communicator, CommunicatorExt, DType, ReduceOp, Result};
use bytes::Bytes;

/// How large the large-message cases are.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Bytes each rank contributes in total to the large all-to-all (split
    /// over the ranks) and to the large broadcast.
    pub large_bytes: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            large_bytes: 1 << 20,
        }
    }
}

fn fail(what: impl Into<String>) -> CommError {
    CommError::InvalidArgument {
        op: "conformance",
        reason: what.into(),
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(fail(what()))
    }
}

/// The deterministic bytes rank `src` sends to `dst` in case `case`.
pub fn pattern(case: u64, src: usize, dst: usize, len: usize) -> Bytes {
    let mut x = case
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(((src as u64) << 32) | dst as u64)
        | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

/// Uneven part lengths, with zero-length parts, for rank `src` to `dst`.
fn uneven_len(src: usize, dst: usize) -> usize {
    if (src + dst) % 3 == 0 {
        0
    } else {
        (src * 7 + dst * 13) % 97 + 1
    }
}

/// One case of the suite.
type Case = fn(&dyn Communicator, Sizes) -> Result<()>;

/// Runs every case; returns the names of the cases that passed.
pub fn run_all(comm: &dyn Communicator, sizes: Sizes) -> Result<Vec<&'static str>> {
    let mut passed = Vec::new();
    let cases: [(&'static str, Case); 12] = [
        ("rank_and_size", rank_and_size),
        ("point_to_point", point_to_point),
        ("barrier", |c, _| c.barrier()),
        ("broadcast", broadcast),
        ("gather", gather),
        ("all_gather", all_gather),
        ("all_to_all_v_uneven_and_empty", all_to_all_uneven),
        ("all_to_all_v_large", all_to_all_large),
        ("all_reduce_every_type_and_op", all_reduce_all),
        ("all_reduce_empty_and_tiny", all_reduce_small),
        ("split", split),
        ("invalid_arguments", invalid_arguments),
    ];
    for (name, case) in cases {
        case(comm, sizes).map_err(|e| fail(format!("case {name} on rank {}: {e}", comm.rank())))?;
        passed.push(name);
    }
    comm.barrier()?;
    Ok(passed)
}

fn rank_and_size(c: &dyn Communicator, _: Sizes) -> Result<()> {
    check(c.rank() < c.size(), || {
        format!("rank {} >= size {}", c.rank(), c.size())
    })?;
    let ranks = c.all_gather_pod(&[c.rank() as u64])?;
    let want: Vec<Vec<u64>> = (0..c.size() as u64).map(|r| vec![r]).collect();
    check(ranks == want, || format!("ranks gathered {ranks:?}"))
}

fn point_to_point(c: &dyn Communicator, _: Sizes) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    if n == 1 {
        return Ok(());
    }
    let next = (r + 1) % n;
    let prev = (r + n - 1) % n;
    // Two messages on the same tag keep their order; another tag is separate.
    c.send(next, 5, pattern(1, r, next, 10))?;
    c.send(next, 5, pattern(2, r, next, 0))?;
    c.send(next, 6, pattern(3, r, next, 1000))?;
    let on6 = c.recv(prev, 6)?;
    let first = c.recv(prev, 5)?;
    let second = c.recv(prev, 5)?;
    check(on6 == pattern(3, prev, r, 1000), || "tag 6 payload".into())?;
    check(first == pattern(1, prev, r, 10), || {
        "first tag-5 payload".into()
    })?;
    check(second.is_empty(), || "empty message".into())
}

fn broadcast(c: &dyn Communicator, s: Sizes) -> Result<()> {
    for root in 0..c.size() {
        let large = if root + 1 == c.size() {
            s.large_bytes
        } else {
            0
        };
        for len in [0, 1, 4096, large] {
            let mine = if c.rank() == root {
                pattern(10, root, 0, len)
            } else {
                Bytes::new()
            };
            let got = c.broadcast(root, mine)?;
            check(got == pattern(10, root, 0, len), || {
                format!("broadcast from {root} of {len} bytes")
            })?;
        }
    }
    Ok(())
}

fn gather(c: &dyn Communicator, _: Sizes) -> Result<()> {
    for root in 0..c.size() {
        let got = c.gather(
            root,
            pattern(20, c.rank(), root, uneven_len(c.rank(), root)),
        )?;
        match got {
            Some(parts) => {
                check(c.rank() == root, || "non-root got data".into())?;
                for (src, p) in parts.iter().enumerate() {
                    check(*p == pattern(20, src, root, uneven_len(src, root)), || {
                        format!("gather to {root}: part of {src}")
                    })?;
                }
            }
            None => check(c.rank() != root, || "root got nothing".into())?,
        }
    }
    Ok(())
}

fn all_gather(c: &dyn Communicator, _: Sizes) -> Result<()> {
    let parts = c.all_gather(pattern(30, c.rank(), 0, uneven_len(c.rank(), 1)))?;
    check(parts.len() == c.size(), || "all_gather count".into())?;
    for (src, p) in parts.iter().enumerate() {
        check(*p == pattern(30, src, 0, uneven_len(src, 1)), || {
            format!("all_gather part of {src}")
        })?;
    }
    Ok(())
}

fn all_to_all_with(
    c: &dyn Communicator,
    case: u64,
    len: impl Fn(usize, usize) -> usize,
) -> Result<()> {
    let r = c.rank();
    let parts = (0..c.size())
        .map(|d| pattern(case, r, d, len(r, d)))
        .collect();
    let got = c.all_to_all_v(parts)?;
    check(got.len() == c.size(), || "all_to_all count".into())?;
    for (src, p) in got.iter().enumerate() {
        check(*p == pattern(case, src, r, len(src, r)), || {
            format!("all_to_all part from {src} ({} bytes)", p.len())
        })?;
    }
    Ok(())
}

fn all_to_all_uneven(c: &dyn Communicator, _: Sizes) -> Result<()> {
    all_to_all_with(c, 40, uneven_len)?;
    all_to_all_with(c, 41, |_, _| 0)?;
    // Only rank 0 sends anything.
    all_to_all_with(c, 42, |s, _| if s == 0 { 3 } else { 0 })
}

fn all_to_all_large(c: &dyn Communicator, s: Sizes) -> Result<()> {
    let per = s.large_bytes / c.size();
    all_to_all_with(c, 50, |src, dst| per + (src + dst) % 7)
}

fn all_reduce_typed<T>(c: &dyn Communicator, f: impl Fn(usize, usize) -> T) -> Result<()>
where
    T: crate::Reducible + PartialEq + std::fmt::Debug,
{
    let n = c.size();
    let len = 37;
    for op in [ReduceOp::Sum, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod] {
        let mut mine: Vec<T> = (0..len).map(|i| f(c.rank(), i)).collect();
        c.all_reduce(&mut mine, op)?;
        let want: Vec<T> = (0..len)
            .map(|i| {
                let mut acc: Vec<u8> = bytemuck::bytes_of(&f(0, i)).to_vec();
                for r in 1..n {
                    crate::reduce::reduce_into(
                        &mut acc,
                        bytemuck::bytes_of(&f(r, i)),
                        T::DTYPE,
                        op,
                    );
                }
                bytemuck::pod_read_unaligned(&acc)
            })
            .collect();
        check(mine == want, || format!("all_reduce {:?} {op:?}", T::DTYPE))?;
    }
    Ok(())
}

fn all_reduce_all(c: &dyn Communicator, _: Sizes) -> Result<()> {
    all_reduce_typed(c, |r, i| (r * 3 + i) as u8)?;
    all_reduce_typed(c, |r, i| (r as i8) - (i as i8 % 5))?;
    all_reduce_typed(c, |r, i| (r * 1000 + i) as u16)?;
    all_reduce_typed(c, |r, i| (i as i16) - (r as i16) * 7)?;
    all_reduce_typed(c, |r, i| (r * 100_000 + i) as u32)?;
    all_reduce_typed(c, |r, i| (i as i32 - 18) * (r as i32 + 1))?;
    all_reduce_typed(c, |r, i| (r as u64) << 40 | i as u64)?;
    all_reduce_typed(c, |r, i| -(r as i64) * 1_000_000_007 + i as i64)?;
    all_reduce_typed(c, |r, i| (r as f32) * 0.5 - i as f32)?;
    all_reduce_typed(c, |r, i| (i as f64 + 0.25) * (r as f64 - 1.5))?;
    // A large float sum, compared on every rank.
    let len = 1 << 16;
    let mut v: Vec<f64> = (0..len).map(|i| (i + c.rank()) as f64).collect();
    c.all_reduce(&mut v, ReduceOp::Sum)?;
    let n = c.size();
    let ok = v
        .iter()
        .enumerate()
        .all(|(i, &x)| x == (0..n).map(|r| (i + r) as f64).sum::<f64>());
    check(ok, || "large f64 sum".into())
}

fn all_reduce_small(c: &dyn Communicator, _: Sizes) -> Result<()> {
    let mut empty: [f32; 0] = [];
    c.all_reduce(&mut empty, ReduceOp::Sum)?;
    let x = c.all_reduce_scalar(c.rank() as i64 + 1, ReduceOp::Max)?;
    check(x == c.size() as i64, || format!("max scalar {x}"))
}

/// Element counts for [`all_reduce_rank_order`] on `n` ranks: empty,
/// shorter than the rank count, not divisible by it, around the 64-byte
/// blocks that all-reduces split buffers into; with `large`, also lengths
/// spanning several 1 MiB pipeline segments per rank (these cost about
/// 20 * n^2 MiB of memory traffic per rank).
pub fn odd_lengths(n: usize, large: bool) -> Vec<usize> {
    let mut v = vec![0, 1, 2, 3, 7, 15, 16, 17, 63, 64, 65, 1000, 4099];
    v.extend([
        n.saturating_sub(1),
        n,
        n + 1,
        2 * n + 1,
        16 * n - 1,
        64 * n + 3,
    ]);
    if large {
        v.push(n * (5 << 18) + 13);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Every dtype with every operator, on buffers of `len` elements whose
/// floats span many magnitudes (so that another association order than
/// rank order gives other bits) and are never NaN.
fn rank_order_inputs(dtype: DType, rank: usize, len: usize, case: u64) -> Vec<u8> {
    let size = dtype.size();
    let mut bytes = pattern(case, rank, 0, len * size).to_vec();
    match dtype {
        DType::F32 => {
            for x in bytemuck::cast_slice_mut::<u8, [u8; 4]>(&mut bytes) {
                let b = u32::from_le_bytes(*x);
                // Sign and mantissa random, exponent in 2^-15..2^15.
                let e = 127 - 15 + (b >> 23 & 0xff) % 31;
                *x = ((b & 0x807f_ffff) | e << 23).to_le_bytes();
            }
        }
        DType::F64 => {
            for x in bytemuck::cast_slice_mut::<u8, [u8; 8]>(&mut bytes) {
                let b = u64::from_le_bytes(*x);
                let e = 1023 - 40 + (b >> 52 & 0x7ff) % 81;
                *x = ((b & 0x800f_ffff_ffff_ffff) | e << 52).to_le_bytes();
            }
        }
        _ => {}
    }
    bytes
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The all-reduce contract of the backends that reduce in rank order
/// (local, tcp, gloo; not MPI or NCCL, whose floating-point association
/// is their library's): for every length of `lengths` (in elements),
/// every dtype and every operator, every rank's result is bitwise the
/// sequential reduction `op(...op(op(x0, x1), x2)..., x(n-1))`, and the
/// same bits on every rank. Lengths over 65,536 elements are checked for
/// a subset: `f32` and `f64` sums and products, `u8` sums and `i32` maxima.
/// Called on every rank; returns the number of cases checked.
pub fn all_reduce_rank_order(c: &dyn Communicator, lengths: &[usize]) -> Result<usize> {
    const DTYPES: [DType; 10] = [
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::U32,
        DType::I32,
        DType::U64,
        DType::I64,
        DType::F32,
        DType::F64,
    ];
    const OPS: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
    let (r, n) = (c.rank(), c.size());
    let mut cases = 0;
    for (li, &len) in lengths.iter().enumerate() {
        let mut sums = Vec::new();
        for (di, &dtype) in DTYPES.iter().enumerate() {
            for (oi, &op) in OPS.iter().enumerate() {
                let subset = matches!(
                    (dtype, op),
                    (DType::F32 | DType::F64, ReduceOp::Sum | ReduceOp::Prod)
                        | (DType::U8, ReduceOp::Sum)
                        | (DType::I32, ReduceOp::Max)
                );
                if len > 1 << 16 && !subset {
                    continue;
                }
                let case = 1000 + (li * 64 + di * 4 + oi) as u64;
                let mut mine = rank_order_inputs(dtype, r, len, case);
                c.all_reduce_raw(&mut mine, dtype, op)?;
                let mut want = rank_order_inputs(dtype, 0, len, case);
                for src in 1..n {
                    crate::reduce::reduce_into(
                        &mut want,
                        &rank_order_inputs(dtype, src, len, case),
                        dtype,
                        op,
                    );
                }
                check(mine == want, || {
                    let at = mine.iter().zip(&want).position(|(a, b)| a != b);
                    format!(
                        "all_reduce {dtype:?} {op:?} of {len} elements on {n} ranks differs \
                         from the sequential rank-order reduction (first at byte {at:?})"
                    )
                })?;
                sums.push(checksum(&mine));
                cases += 1;
            }
        }
        let all = c.all_gather_pod(&sums)?;
        check(all.iter().all(|s| *s == sums), || {
            format!("ranks got different bits for {len} elements")
        })?;
    }
    Ok(cases)
}

fn split(c: &dyn Communicator, s: Sizes) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    // Even / odd, reversed order inside each color.
    let sub = c
        .split(Some((r % 2) as u32), -(r as i64))?
        .ok_or_else(|| fail("split returned None for a color"))?;
    let members: Vec<usize> = (0..n).filter(|x| x % 2 == r % 2).rev().collect();
    check(sub.size() == members.len(), || "sub size".into())?;
    check(members[sub.rank()] == r, || "sub rank order".into())?;
    let sum = sub.all_reduce_scalar(r as u64, ReduceOp::Sum)?;
    check(
        sum == members.iter().map(|&m| m as u64).sum::<u64>(),
        || "sub sum".into(),
    )?;
    run_subset(&*sub, s)?;
    // Rank 0 opts out; the others form one group; a split of a split works.
    let rest = c.split(if r == 0 { None } else { Some(7) }, 0)?;
    check(rest.is_some() == (r != 0), || "opt-out".into())?;
    if let Some(rest) = rest {
        check(rest.size() == n - 1 && rest.rank() == r - 1, || {
            "rest group".into()
        })?;
        let again = rest
            .split(Some(0), 0)?
            .ok_or_else(|| fail("nested split"))?;
        again.barrier()?;
        let total = again.all_reduce_scalar(1u32, ReduceOp::Sum)?;
        check(total as usize == n - 1, || "nested sum".into())?;
    }
    // The parent still works and is not confused by the children.
    c.barrier()
}

/// The collectives again on a sub-communicator.
fn run_subset(c: &dyn Communicator, s: Sizes) -> Result<()> {
    point_to_point(c, s)?;
    c.barrier()?;
    broadcast(c, Sizes { large_bytes: 1000 })?;
    gather(c, s)?;
    all_gather(c, s)?;
    all_to_all_uneven(c, s)
}

fn invalid_arguments(c: &dyn Communicator, _: Sizes) -> Result<()> {
    let n = c.size();
    check(
        matches!(
            c.send(n, 0, Bytes::new()),
            Err(CommError::InvalidRank { .. })
        ),
        || "send to rank size".into(),
    )?;
    check(
        matches!(
            c.all_to_all_v(vec![Bytes::new(); n + 1]),
            Err(CommError::InvalidArgument { .. })
        ),
        || "all_to_all with too many parts".into(),
    )?;
    let mut odd = [0u8; 3];
    check(
        matches!(
            c.all_reduce_raw(&mut odd, DType::F32, ReduceOp::Sum),
            Err(CommError::InvalidArgument { .. })
        ),
        || "all_reduce of a partial element".into(),
    )?;
    // The communicator is still usable after refused calls.
    c.barrier()
}
