//! Element-wise reduction kernels over packed byte buffers.

use crate::{DType, ReduceOp};

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

fn reduce_typed<T: Element>(acc: &mut [u8], other: &[u8], op: ReduceOp) {
    match (
        bytemuck::try_cast_slice_mut::<u8, T>(acc),
        bytemuck::try_cast_slice::<u8, T>(other),
    ) {
        (Ok(a), Ok(b)) => {
            // Separate loops per op so that each one vectorizes.
            macro_rules! run {
                ($op:expr) => {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x = T::combine(*x, *y, $op);
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
                let r = T::combine(
                    bytemuck::pod_read_unaligned(x),
                    bytemuck::pod_read_unaligned(y),
                    op,
                );
                x.copy_from_slice(bytemuck::bytes_of(&r));
            }
        }
    }
}

/// `acc[i] = op(acc[i], other[i])` over packed `dtype` elements.
pub(crate) fn reduce_into(acc: &mut [u8], other: &[u8], dtype: DType, op: ReduceOp) {
    debug_assert_eq!(acc.len(), other.len());
    match dtype {
        DType::U8 => reduce_typed::<u8>(acc, other, op),
        DType::I8 => reduce_typed::<i8>(acc, other, op),
        DType::U16 => reduce_typed::<u16>(acc, other, op),
        DType::I16 => reduce_typed::<i16>(acc, other, op),
        DType::U32 => reduce_typed::<u32>(acc, other, op),
        DType::I32 => reduce_typed::<i32>(acc, other, op),
        DType::U64 => reduce_typed::<u64>(acc, other, op),
        DType::I64 => reduce_typed::<i64>(acc, other, op),
        DType::F32 => reduce_typed::<f32>(acc, other, op),
        DType::F64 => reduce_typed::<f64>(acc, other, op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
