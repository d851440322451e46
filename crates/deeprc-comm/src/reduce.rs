//! Element-wise reduction kernels over packed byte buffers, and the
//! partition of a buffer that the all-reduce algorithms share.
//!
//! # Determinism
//! Every all-reduce of the backends built on these kernels (local threads,
//! tcp) folds the ranks' values of each element in rank order,
//! `op(...op(op(x0, x1), x2)..., x(n-1))`, exactly once, on one rank (the
//! owner of the element's part, see [`part`]), and every other rank copies
//! that result. So every rank gets the same bits, and the bits equal a
//! sequential reduction in rank order, whatever the number of parts, the
//! tiling or the timing: floating-point results are deterministic.

use crate::{DType, ReduceOp};
use std::ops::Range;

trait Element: bytemuck::Pod {
    fn combine(a: Self, b: Self, op: ReduceOp) -> Self;
}

macro_rules! int_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            #[inline(always)]
            fn combine(a: Self, b: Self, op: ReduceOp) -> Self {
                match op {
                    ReduceOp::Sum => a.wrapping_add(b),
                    ReduceOp::Prod => a.wrapping_mul(b),
                    ReduceOp::Min => a.min(b),
                    ReduceOp::Max => a.max(b),
                }
            }
        }
    )*};
}
int_element!(u8, i8, u16, i16, u32, i32, u64, i64);

macro_rules! float_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            #[inline(always)]
            fn combine(a: Self, b: Self, op: ReduceOp) -> Self {
                match op {
                    ReduceOp::Sum => a + b,
                    ReduceOp::Prod => a * b,
                    ReduceOp::Min => a.min(b),
                    ReduceOp::Max => a.max(b),
                }
            }
        }
    )*};
}
float_element!(f32, f64);

/// `acc[i] = op(acc[i], other[i])`, or `op(other[i], acc[i])` when `REV`.
fn reduce_typed<T: Element, const REV: bool>(acc: &mut [u8], other: &[u8], op: ReduceOp) {
    #[inline(always)]
    fn ordered<T: Element, const REV: bool>(x: T, y: T, op: ReduceOp) -> T {
        if REV {
            T::combine(y, x, op)
        } else {
            T::combine(x, y, op)
        }
    }
    match (
        bytemuck::try_cast_slice_mut::<u8, T>(acc),
        bytemuck::try_cast_slice::<u8, T>(other),
    ) {
        (Ok(a), Ok(b)) => {
            // Separate loops per op so that each one vectorizes.
            macro_rules! run {
                ($op:expr) => {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x = ordered::<T, REV>(*x, *y, $op);
                    }
                };
            }
            match op {
                ReduceOp::Sum => run!(ReduceOp::Sum),
                ReduceOp::Prod => run!(ReduceOp::Prod),
                ReduceOp::Min => run!(ReduceOp::Min),
                ReduceOp::Max => run!(ReduceOp::Max),
            }
        }
        _ => {
            // Unaligned buffers: element by element through copies.
            let size = std::mem::size_of::<T>();
            for (x, y) in acc.chunks_exact_mut(size).zip(other.chunks_exact(size)) {
                let r = ordered::<T, REV>(
                    bytemuck::pod_read_unaligned(x),
                    bytemuck::pod_read_unaligned(y),
                    op,
                );
                x.copy_from_slice(bytemuck::bytes_of(&r));
            }
        }
    }
}

fn reduce_dispatch<const REV: bool>(acc: &mut [u8], other: &[u8], dtype: DType, op: ReduceOp) {
    debug_assert_eq!(acc.len(), other.len());
    match dtype {
        DType::U8 => reduce_typed::<u8, REV>(acc, other, op),
        DType::I8 => reduce_typed::<i8, REV>(acc, other, op),
        DType::U16 => reduce_typed::<u16, REV>(acc, other, op),
        DType::I16 => reduce_typed::<i16, REV>(acc, other, op),
        DType::U32 => reduce_typed::<u32, REV>(acc, other, op),
        DType::I32 => reduce_typed::<i32, REV>(acc, other, op),
        DType::U64 => reduce_typed::<u64, REV>(acc, other, op),
        DType::I64 => reduce_typed::<i64, REV>(acc, other, op),
        DType::F32 => reduce_typed::<f32, REV>(acc, other, op),
        DType::F64 => reduce_typed::<f64, REV>(acc, other, op),
    }
}

/// `acc[i] = op(acc[i], other[i])` over packed `dtype` elements.
pub(crate) fn reduce_into(acc: &mut [u8], other: &[u8], dtype: DType, op: ReduceOp) {
    reduce_dispatch::<false>(acc, other, dtype, op)
}

/// `acc[i] = op(other[i], acc[i])`: `other` is the left operand, so that a
/// fold can continue in the storage of a later operand.
fn reduce_into_rev(acc: &mut [u8], other: &[u8], dtype: DType, op: ReduceOp) {
    reduce_dispatch::<true>(acc, other, dtype, op)
}

/// Parts of a buffer are made of whole blocks of this many bytes: a cache
/// line (threads writing neighbouring parts never share one), and a multiple
/// of every element size.
pub(crate) const PART_ALIGN: usize = 64;

/// The byte range of part `i` of `n` of a `len`-byte buffer: part `i` is the
/// share of rank `i` in a reduce-scatter. Parts are whole 64-byte blocks
/// (the last part ends at `len`), as equal as blocks allow; some are empty
/// when the buffer has fewer blocks than there are parts. Every rank
/// computes the same parts from the same `len` and `n`.
pub(crate) fn part(len: usize, n: usize, i: usize) -> Range<usize> {
    debug_assert!(i < n);
    let blocks = len.div_ceil(PART_ALIGN) as u128;
    let at = |i: usize| ((blocks * i as u128 / n as u128) as usize * PART_ALIGN).min(len);
    at(i)..at(i + 1)
}

/// Bytes reduced per step of [`reduce_ordered`]: the accumulator and the
/// operands' tiles stay in the L1/L2 cache between reading the operands and
/// writing the result.
const TILE: usize = 16 << 10;

/// An operand of [`reduce_ordered`].
pub(crate) enum Operand<'a> {
    /// Read only.
    In(&'a [u8]),
    /// Read, then overwritten with the result.
    InOut(&'a mut [u8]),
}

impl Operand<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Operand::In(b) => b,
            Operand::InOut(b) => b,
        }
    }
}

/// Folds `operands` (packed `dtype` arrays of equal length) element-wise in
/// slice order, `op(...op(op(o0, o1), o2)..., o(k-1))`, and writes the
/// result into every [`Operand::InOut`].
///
/// One pass over memory, tile by tile, and no copy that can be avoided: the
/// accumulator of a tile is the first output operand's tile as soon as the
/// fold reaches it (its old value is consumed by that step, `o = op(acc,
/// o)`), a cache-resident scratch tile before that; each operand is read
/// once and each output written once. The order of the fold never depends
/// on the tiling or on where the accumulator lives, so the result is the
/// bits of the sequential reduction.
///
/// # Panics
/// If `operands` is empty or their lengths differ.
pub(crate) fn reduce_ordered(operands: &mut [Operand<'_>], dtype: DType, op: ReduceOp) {
    let len = operands
        .first()
        .expect("reduce_ordered needs an operand")
        .bytes()
        .len();
    assert!(
        operands.iter().all(|o| o.bytes().len() == len),
        "reduce_ordered: operands of different lengths"
    );
    // u64s, so that the scratch accumulator is aligned for every type.
    let mut scratch = [0u64; TILE / 8];
    let scratch: &mut [u8] = bytemuck::cast_slice_mut(&mut scratch);
    let mut start = 0;
    while start < len {
        let tile = start..(start + TILE).min(len);
        start = tile.end;
        // Where the partial result of this tile lives: `None` while it is
        // still operand 0's value (never copied), `Some(None)` in scratch,
        // `Some(Some(i))` in operand i's tile.
        let mut acc: Option<Option<usize>> = None;
        if let Operand::InOut(_) = operands[0] {
            acc = Some(Some(0));
        }
        for i in 1..operands.len() {
            let (before, after) = operands.split_at_mut(i);
            let cur = &mut after[0];
            match (acc, cur) {
                // The first output reached: it becomes the accumulator.
                (None | Some(None), Operand::InOut(b)) => {
                    let left = match acc {
                        None => &before[0].bytes()[tile.clone()],
                        _ => &scratch[..tile.len()],
                    };
                    reduce_into_rev(&mut b[tile.clone()], left, dtype, op);
                    acc = Some(Some(i));
                }
                (None, Operand::In(b)) => {
                    let s = &mut scratch[..tile.len()];
                    s.copy_from_slice(&before[0].bytes()[tile.clone()]);
                    reduce_into(s, &b[tile.clone()], dtype, op);
                    acc = Some(None);
                }
                (Some(None), Operand::In(b)) => {
                    reduce_into(&mut scratch[..tile.len()], &b[tile.clone()], dtype, op);
                }
                (Some(Some(a)), cur) => {
                    let Operand::InOut(accb) = &mut before[a] else {
                        unreachable!("the accumulator is an output")
                    };
                    reduce_into(
                        &mut accb[tile.clone()],
                        &cur.bytes()[tile.clone()],
                        dtype,
                        op,
                    );
                }
            }
        }
        // Copy the result into the other outputs (if there are outputs).
        if let Some(Some(a)) = acc {
            let (before, rest) = operands.split_at_mut(a);
            let (held, after) = rest.split_first_mut().expect("a < len");
            let result = &held.bytes()[tile.clone()];
            for o in before.iter_mut().chain(after.iter_mut()) {
                if let Operand::InOut(b) = o {
                    b[tile.clone()].copy_from_slice(result);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_buffer_in_whole_blocks() {
        for n in 1..9 {
            for len in [0, 1, 8, 63, 64, 65, 200, 4096, 100_003 * 8] {
                let mut at = 0;
                for i in 0..n {
                    let p = part(len, n, i);
                    assert_eq!(p.start, at, "len {len}, n {n}, part {i}");
                    assert!(p.start % PART_ALIGN == 0 || p.is_empty());
                    assert!(p.end % PART_ALIGN == 0 || p.end == len);
                    at = p.end;
                }
                assert_eq!(at, len);
                // As equal as blocks allow.
                let sizes: Vec<usize> = (0..n).map(|i| part(len, n, i).len()).collect();
                let max = sizes.iter().max().unwrap();
                let min = sizes.iter().min().unwrap();
                assert!(max - min <= PART_ALIGN, "{sizes:?}");
            }
        }
    }

    #[test]
    fn ordered_fold_equals_the_sequential_one_across_tiles() {
        // Floats of very different magnitudes: the sum depends on the order.
        let len = TILE / 4 * 3 + 5;
        let vals = |r: usize| -> Vec<f32> {
            (0..len)
                .map(|i| {
                    let e = (r as i32 * 3 + i as i32) % 9 - 4;
                    ((i * 31 + r * 17) % 101) as f32 * 10f32.powi(e)
                })
                .collect()
        };
        let ins: Vec<Vec<f32>> = (0..5).map(vals).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (op, f) in [
            (ReduceOp::Sum, (|a, b| a + b) as fn(f32, f32) -> f32),
            (ReduceOp::Min, f32::min),
            (ReduceOp::Prod, |a, b| a * b),
        ] {
            let want: Vec<f32> = (0..len)
                .map(|i| ins.iter().skip(1).fold(ins[0][i], |a, v| f(a, v[i])))
                .collect();
            for outputs in [&[0, 3][..], &[3], &[1], &[1, 2, 4], &[0, 1, 2, 3, 4], &[]] {
                let mut bufs = ins.clone();
                let mut ops: Vec<Operand<'_>> = bufs
                    .iter_mut()
                    .enumerate()
                    .map(|(r, b)| {
                        if outputs.contains(&r) {
                            Operand::InOut(bytemuck::cast_slice_mut(b))
                        } else {
                            Operand::In(bytemuck::cast_slice(b))
                        }
                    })
                    .collect();
                reduce_ordered(&mut ops, DType::F32, op);
                drop(ops);
                for (r, b) in bufs.iter().enumerate() {
                    if outputs.contains(&r) {
                        assert_eq!(bits(b), bits(&want), "{op:?}, outputs {outputs:?}");
                    } else {
                        assert_eq!(bits(b), bits(&ins[r]), "inputs are not written");
                    }
                }
            }
        }
    }

    #[test]
    fn reduces_each_op() {
        let mut a: Vec<u8> = bytemuck::cast_slice(&[1i32, -5, 7]).to_vec();
        let b: Vec<u8> = bytemuck::cast_slice(&[2i32, 3, -7]).to_vec();
        for (op, want) in [
            (ReduceOp::Sum, [3, -2, 0]),
            (ReduceOp::Min, [1, -5, -7]),
            (ReduceOp::Max, [2, 3, 7]),
            (ReduceOp::Prod, [2, -15, -49]),
        ] {
            let mut acc = a.clone();
            reduce_into(&mut acc, &b, DType::I32, op);
            assert_eq!(bytemuck::cast_slice::<u8, i32>(&acc), &want);
        }
        // Unaligned path gives the same answer.
        let mut buf = [0u8; 13];
        buf[1..13].copy_from_slice(&a);
        reduce_into(&mut buf[1..13], &b, DType::I32, ReduceOp::Sum);
        reduce_into(&mut a, &b, DType::I32, ReduceOp::Sum);
        assert_eq!(&buf[1..13], &a[..]);
    }
}
