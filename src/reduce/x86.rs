//! x86-64 specialisations, chosen at run time: the portable kernels recompiled for AVX2
//! (8-wide f32), and F16C conversions for IEEE half.

use std::arch::x86_64::{
    __m128i, _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps, _mm_loadu_si128,
    _mm_storeu_si128, _MM_FROUND_TO_NEAREST_INT,
};

use half::f16;

use super::kernels::Widen;
use crate::types::{DataType, ReduceOp};

/// Proof that the CPU has AVX, AVX2 and F16C: only [`Avx2F16c::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2F16c(());

impl Avx2F16c {
    /// The token, if the CPU running us has AVX, AVX2 and F16C.
    #[inline]
    pub(super) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("avx")
            && is_x86_feature_detected!("f16c"))
        .then_some(Avx2F16c(()))
    }

    /// [`super::reduce`] compiled for AVX2.
    #[inline]
    pub(super) fn reduce(self, dtype: DataType, op: ReduceOp, dst: &mut [u8], src: &[u8]) {
        // SAFETY: `self` exists only if `detect` found AVX, AVX2 and F16C on this CPU.
        unsafe { reduce_avx2(self, dtype, op, dst, src) }
    }

    /// [`super::reduce3`] compiled for AVX2.
    #[inline]
    pub(super) fn reduce3(self, dtype: DataType, op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
        // SAFETY: as in `reduce`.
        unsafe { reduce3_avx2(self, dtype, op, dst, a, b) }
    }

    /// [`super::divide`] compiled for AVX2.
    #[inline]
    pub(super) fn divide(self, dtype: DataType, dst: &mut [u8], n: usize) {
        // SAFETY: as in `reduce`.
        unsafe { divide_avx2(self, dtype, dst, n) }
    }
}

/// # Safety
/// The CPU must support AVX, AVX2 and F16C.
#[target_feature(enable = "avx,avx2,f16c")]
unsafe fn reduce_avx2(t: Avx2F16c, dtype: DataType, op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    super::reduce_with(&t, dtype, op, dst, src)
}

/// # Safety
/// The CPU must support AVX, AVX2 and F16C.
#[target_feature(enable = "avx,avx2,f16c")]
unsafe fn reduce3_avx2(
    t: Avx2F16c,
    dtype: DataType,
    op: ReduceOp,
    dst: &mut [u8],
    a: &[u8],
    b: &[u8],
) {
    super::reduce3_with(&t, dtype, op, dst, a, b)
}

/// # Safety
/// The CPU must support AVX, AVX2 and F16C.
#[target_feature(enable = "avx,avx2,f16c")]
unsafe fn divide_avx2(t: Avx2F16c, dtype: DataType, dst: &mut [u8], n: usize) {
    super::divide_with(&t, dtype, dst, n)
}

/// IEEE half through F16C, 8 elements per instruction (the same instructions `half` uses for
/// one element on this CPU, so results match the scalar path).
impl Widen for Avx2F16c {
    const SIZE: usize = 2;
    #[inline(always)]
    fn decode(&self, bytes: &[u8], out: &mut [f32]) {
        // SAFETY: `self` proves F16C and AVX are present.
        unsafe { decode_f16c(bytes, out) }
    }
    #[inline(always)]
    fn encode(&self, vals: &[f32], bytes: &mut [u8]) {
        // SAFETY: as in `decode`.
        unsafe { encode_f16c(vals, bytes) }
    }
}

/// # Safety
/// The CPU must support AVX and F16C.
#[target_feature(enable = "avx,f16c")]
unsafe fn decode_f16c(bytes: &[u8], out: &mut [f32]) {
    let mut outs = out.chunks_exact_mut(8);
    let mut ins = bytes.chunks_exact(16);
    for (o, b) in (&mut outs).zip(&mut ins) {
        // SAFETY: `b` is 16 readable bytes and `o` 8 writable f32s; both accesses are the
        // unaligned forms; the features are the caller's promise.
        unsafe {
            let h = _mm_loadu_si128(b.as_ptr().cast::<__m128i>());
            _mm256_storeu_ps(o.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for (o, b) in outs
        .into_remainder()
        .iter_mut()
        .zip(ins.remainder().chunks_exact(2))
    {
        *o = f16::from_ne_bytes([b[0], b[1]]).to_f32();
    }
}

/// # Safety
/// The CPU must support AVX and F16C.
#[target_feature(enable = "avx,f16c")]
unsafe fn encode_f16c(vals: &[f32], bytes: &mut [u8]) {
    let mut ins = vals.chunks_exact(8);
    let mut outs = bytes.chunks_exact_mut(16);
    for (v, o) in (&mut ins).zip(&mut outs) {
        // SAFETY: `v` is 8 readable f32s and `o` 16 writable bytes; unaligned forms; the
        // features are the caller's promise.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(v.as_ptr()));
            _mm_storeu_si128(o.as_mut_ptr().cast::<__m128i>(), h);
        }
    }
    for (v, o) in ins
        .remainder()
        .iter()
        .zip(outs.into_remainder().chunks_exact_mut(2))
    {
        o.copy_from_slice(&f16::from_f32(*v).to_ne_bytes());
    }
}
