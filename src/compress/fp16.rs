//! fp16: each f32 cast to IEEE half (round to nearest even), 2 bytes little-endian.
//!
//! Bound: relative error ≤ 2⁻¹¹ for |x| in the normal range [2⁻¹⁴, 65504]; absolute error
//! ≤ 2⁻²⁵ below it. |x| that rounds above 65504 becomes ±infinity (never a wrong finite
//! number); NaN stays NaN, ±infinity stays ±infinity. Conversions use F16C when the CPU has
//! it (through `half`'s slice conversions).

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::codec::ChunkCodec;
use crate::error::Result;

/// Elements converted per stack block.
const STEP: usize = 512;

/// The fp16 cast codec.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fp16;

impl ChunkCodec for Fp16 {
    fn encoded_len(&self, n: usize) -> usize {
        2 * n
    }

    fn needs_error_feedback(&self) -> bool {
        false
    }

    fn encode(&self, src: &[f32], dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if has_f16c() {
            // SAFETY: AVX and F16C were detected on this CPU.
            return unsafe { x86::encode(src, dst) };
        }
        encode_scalar(src, dst)
    }

    fn decode(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        if has_f16c() {
            // SAFETY: AVX and F16C were detected on this CPU.
            unsafe { x86::decode::<false>(src, dst) };
            return Ok(());
        }
        decode_scalar::<false>(src, dst);
        Ok(())
    }

    fn decode_add(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        if has_f16c() {
            // SAFETY: AVX and F16C were detected on this CPU.
            unsafe { x86::decode::<true>(src, dst) };
            return Ok(());
        }
        decode_scalar::<true>(src, dst);
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c")
}

fn encode_scalar(src: &[f32], dst: &mut [u8]) {
    let mut h = [f16::ZERO; STEP];
    for (s, d) in src.chunks(STEP).zip(dst.chunks_mut(2 * STEP)) {
        let h = &mut h[..s.len()];
        h.convert_from_f32_slice(s);
        for (v, b) in h.iter().zip(d.chunks_exact_mut(2)) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }
}

fn decode_scalar<const ADD: bool>(src: &[u8], dst: &mut [f32]) {
    let mut h = [f16::ZERO; STEP];
    let mut f = [0f32; STEP];
    for (s, d) in src.chunks(2 * STEP).zip(dst.chunks_mut(STEP)) {
        let (h, f) = (&mut h[..d.len()], &mut f[..d.len()]);
        for (v, b) in h.iter_mut().zip(s.chunks_exact(2)) {
            *v = f16::from_le_bytes([b[0], b[1]]);
        }
        h.convert_to_f32_slice(f);
        for (d, f) in d.iter_mut().zip(f.iter()) {
            *d = if ADD { *d + *f } else { *f };
        }
    }
}

/// F16C conversions straight between f32 and the little-endian bytes, 8 lanes at a time
/// (the same rounding, to nearest even, and NaN handling as `half`'s, which uses F16C too).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX and F16C; `dst.len() >= 2 * src.len()`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn encode(src: &[f32], dst: &mut [u8]) {
        assert!(dst.len() >= 2 * src.len());
        let whole = src.len() / 8 * 8;
        let mut i = 0;
        while i < whole {
            // SAFETY: `i + 8 <= src.len()` and `2 (i + 8) <= dst.len()`.
            unsafe {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(
                    src.as_ptr().add(i),
                ));
                _mm_storeu_si128(dst.as_mut_ptr().add(2 * i) as *mut __m128i, h);
            }
            i += 8;
        }
        super::encode_scalar(&src[whole..], &mut dst[2 * whole..]);
    }

    /// `dst = decode(src)` (or `dst += decode(src)` with `ADD`).
    ///
    /// # Safety
    /// The CPU must support AVX and F16C; `src.len() >= 2 * dst.len()`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn decode<const ADD: bool>(src: &[u8], dst: &mut [f32]) {
        assert!(src.len() >= 2 * dst.len());
        let whole = dst.len() / 8 * 8;
        let mut i = 0;
        while i < whole {
            // SAFETY: `i + 8 <= dst.len()` and `2 (i + 8) <= src.len()`.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
                let mut v = _mm256_cvtph_ps(h);
                let d = dst.as_mut_ptr().add(i);
                if ADD {
                    v = _mm256_add_ps(_mm256_loadu_ps(d), v);
                }
                _mm256_storeu_ps(d, v);
            }
            i += 8;
        }
        super::decode_scalar::<ADD>(&src[2 * whole..], &mut dst[whole..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F16C and the scalar conversions give the same bits (rounding, overflow to infinity,
    /// subnormals, NaN), whole vectors and tails.
    #[test]
    fn fast_paths_match_scalar() {
        let mut x: Vec<f32> = (0..3001)
            .map(|i| (i as f32 * 0.731).sin() * 2f32.powi((i % 40) - 28))
            .collect();
        x[7] = f32::NAN;
        x[8] = f32::INFINITY;
        x[9] = 70000.0;
        x[10] = -0.0;
        x[11] = 65519.0;
        let (mut fast, mut slow) = (vec![0u8; 2 * x.len()], vec![0u8; 2 * x.len()]);
        Fp16.encode(&x, &mut fast);
        encode_scalar(&x, &mut slow);
        assert_eq!(fast, slow);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (mut d_fast, mut d_slow) = (x.clone(), x.clone());
        Fp16.decode_add(&fast, &mut d_fast).unwrap();
        decode_scalar::<true>(&fast, &mut d_slow);
        assert_eq!(bits(&d_fast), bits(&d_slow));
        Fp16.decode(&fast, &mut d_fast).unwrap();
        decode_scalar::<false>(&fast, &mut d_slow);
        assert_eq!(bits(&d_fast), bits(&d_slow));
    }
}
