//! Reduction kernels: `dst = dst ⊕ src` and `dst = a ⊕ b` for every data type and operator,
//! on byte slices (the executor reduces straight out of link buffers, which need not be
//! aligned for the element type).
//!
//! [`scalar`] is the element-by-element reference, kept as the test oracle.

pub mod scalar;

use crate::types::{DataType, ReduceOp};
use scalar::Arith;

use half::{bf16, f16};

use crate::fp8::{F8E4M3, F8E5M2};

macro_rules! dispatch {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DataType::I8 => $f::<i8>($($arg),*),
            DataType::U8 => $f::<u8>($($arg),*),
            DataType::I32 => $f::<i32>($($arg),*),
            DataType::U32 => $f::<u32>($($arg),*),
            DataType::I64 => $f::<i64>($($arg),*),
            DataType::U64 => $f::<u64>($($arg),*),
            DataType::F16 => $f::<f16>($($arg),*),
            DataType::F32 => $f::<f32>($($arg),*),
            DataType::F64 => $f::<f64>($($arg),*),
            DataType::BF16 => $f::<bf16>($($arg),*),
            DataType::F8E4M3 => $f::<F8E4M3>($($arg),*),
            DataType::F8E5M2 => $f::<F8E5M2>($($arg),*),
        }
    };
}

/// `dst[i] = dst[i] ⊕ src[i]`. `op` is applied as its per-step form (`Avg` reduces as `Sum`).
/// Both slices hold the same whole number of elements.
pub fn reduce(dtype: DataType, op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    debug_assert_eq!(dst.len() % dtype.size(), 0);
    dispatch!(dtype, reduce_t, op.step_op(), dst, src)
}

/// `dst[i] = a[i] ⊕ b[i]` (see [`reduce`]).
pub fn reduce3(dtype: DataType, op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    debug_assert!(dst.len() == a.len() && a.len() == b.len());
    dispatch!(dtype, reduce3_t, op.step_op(), dst, a, b)
}

/// `dst[i] = dst[i] / n`, the final step of `Avg`.
pub fn divide(dtype: DataType, dst: &mut [u8], n: usize) {
    dispatch!(dtype, divide_t, dst, n)
}

fn reduce_t<T: Arith>(op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    let n = T::SIZE;
    for (d, s) in dst.chunks_exact_mut(n).zip(src.chunks_exact(n)) {
        T::combine(op, T::load(d), T::load(s)).store(d);
    }
}

fn reduce3_t<T: Arith>(op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    let n = T::SIZE;
    for ((d, x), y) in dst
        .chunks_exact_mut(n)
        .zip(a.chunks_exact(n))
        .zip(b.chunks_exact(n))
    {
        T::combine(op, T::load(x), T::load(y)).store(d);
    }
}

fn divide_t<T: Arith>(dst: &mut [u8], n: usize) {
    for d in dst.chunks_exact_mut(T::SIZE) {
        T::load(d).div_count(n).store(d);
    }
}
