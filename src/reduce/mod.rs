//! Reduction kernels: `dst = dst ⊕ src` and `dst = a ⊕ b` for every data type and operator,
//! on byte slices (the executor reduces straight out of link buffers, which need not be
//! aligned for the element type).
//!
//! [`scalar`] is the element-by-element reference, kept as the test oracle; the kernels here
//! are bit-identical to it (NaN *payloads* aside: which input NaN's payload a `NaN ⊕ NaN`
//! returns follows the operand order the compiler picks, in either path).
//!
//! How they are fast:
//! - integers, f32 and f64 are combined straight out of the (unaligned) bytes by loops that
//!   LLVM vectorises — unaligned vector loads cost nothing extra on current x86 or Arm;
//! - bf16, f16 and fp8 are widened to f32, combined, and rounded back once, with branch-free
//!   conversions that vectorise (fused per element for bf16 and fp8; a block at a time through
//!   F16C instructions or `half`'s conversions for f16);
//! - on x86-64 with AVX2 (detected at run time) the same code runs compiled for AVX2.

/// Calls the generic `$f::<T>` matching a [`DataType`] (used by [`scalar`]).
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

mod fp8lane;
mod kernels;
pub mod scalar;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::types::{DataType, ReduceOp};
use fp8lane::{E4m3, E5m2};
use kernels::{
    lane2, lane3, lane_div, native2, native3, native_div, widened2, widened3, widened_div, Bf16,
    HalfF16, Widen,
};

/// `dst[i] = dst[i] ⊕ src[i]`. `op` is applied as its per-step form (`Avg` reduces as `Sum`).
/// Both slices hold the same whole number of elements.
pub fn reduce(dtype: DataType, op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    debug_assert_eq!(dst.len() % dtype.size(), 0);
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = x86::Avx2F16c::detect() {
        return t.reduce(dtype, op, dst, src);
    }
    reduce_with(&HalfF16, dtype, op, dst, src)
}

/// `dst[i] = a[i] ⊕ b[i]` (see [`reduce`]).
pub fn reduce3(dtype: DataType, op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    debug_assert!(dst.len() == a.len() && a.len() == b.len());
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = x86::Avx2F16c::detect() {
        return t.reduce3(dtype, op, dst, a, b);
    }
    reduce3_with(&HalfF16, dtype, op, dst, a, b)
}

/// `dst[i] = src[i] × s`, the pre-step of a premul-sum (the element-by-element
/// [`scalar::premultiply`]: one multiplication per element, not on any hot path).
pub fn premultiply(dtype: DataType, dst: &mut [u8], src: &[u8], s: f64) {
    debug_assert_eq!(dst.len(), src.len());
    scalar::premultiply(dtype, dst, src, s)
}

/// `dst[i] = dst[i] / n`, the final step of `Avg`.
pub fn divide(dtype: DataType, dst: &mut [u8], n: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = x86::Avx2F16c::detect() {
        return t.divide(dtype, dst, n);
    }
    divide_with(&HalfF16, dtype, dst, n)
}

/// [`reduce`] with `h` converting f16; inlined into each instruction-set variant.
#[inline(always)]
fn reduce_with<H: Widen>(h: &H, dtype: DataType, op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    let op = op.step_op();
    match dtype {
        DataType::I8 => native2::<i8>(op, dst, src),
        DataType::U8 => native2::<u8>(op, dst, src),
        DataType::I32 => native2::<i32>(op, dst, src),
        DataType::U32 => native2::<u32>(op, dst, src),
        DataType::I64 => native2::<i64>(op, dst, src),
        DataType::U64 => native2::<u64>(op, dst, src),
        DataType::F32 => native2::<f32>(op, dst, src),
        DataType::F64 => native2::<f64>(op, dst, src),
        DataType::F16 => widened2(h, op, dst, src),
        DataType::BF16 => lane2::<Bf16>(op, dst, src),
        DataType::F8E4M3 => lane2::<E4m3>(op, dst, src),
        DataType::F8E5M2 => lane2::<E5m2>(op, dst, src),
    }
}

/// [`reduce3`] with `h` converting f16.
#[inline(always)]
fn reduce3_with<H: Widen>(
    h: &H,
    dtype: DataType,
    op: ReduceOp,
    dst: &mut [u8],
    a: &[u8],
    b: &[u8],
) {
    let op = op.step_op();
    match dtype {
        DataType::I8 => native3::<i8>(op, dst, a, b),
        DataType::U8 => native3::<u8>(op, dst, a, b),
        DataType::I32 => native3::<i32>(op, dst, a, b),
        DataType::U32 => native3::<u32>(op, dst, a, b),
        DataType::I64 => native3::<i64>(op, dst, a, b),
        DataType::U64 => native3::<u64>(op, dst, a, b),
        DataType::F32 => native3::<f32>(op, dst, a, b),
        DataType::F64 => native3::<f64>(op, dst, a, b),
        DataType::F16 => widened3(h, op, dst, a, b),
        DataType::BF16 => lane3::<Bf16>(op, dst, a, b),
        DataType::F8E4M3 => lane3::<E4m3>(op, dst, a, b),
        DataType::F8E5M2 => lane3::<E5m2>(op, dst, a, b),
    }
}

/// [`divide`] with `h` converting f16.
#[inline(always)]
fn divide_with<H: Widen>(h: &H, dtype: DataType, dst: &mut [u8], n: usize) {
    match dtype {
        DataType::I8 => native_div::<i8>(dst, n),
        DataType::U8 => native_div::<u8>(dst, n),
        DataType::I32 => native_div::<i32>(dst, n),
        DataType::U32 => native_div::<u32>(dst, n),
        DataType::I64 => native_div::<i64>(dst, n),
        DataType::U64 => native_div::<u64>(dst, n),
        DataType::F32 => native_div::<f32>(dst, n),
        DataType::F64 => native_div::<f64>(dst, n),
        DataType::F16 => widened_div(h, dst, n),
        DataType::BF16 => lane_div::<Bf16>(dst, n),
        DataType::F8E4M3 => lane_div::<E4m3>(dst, n),
        DataType::F8E5M2 => lane_div::<E5m2>(dst, n),
    }
}
