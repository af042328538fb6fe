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
        let mut h = [f16::ZERO; STEP];
        for (s, d) in src.chunks(STEP).zip(dst.chunks_mut(2 * STEP)) {
            let h = &mut h[..s.len()];
            h.convert_from_f32_slice(s);
            for (v, b) in h.iter().zip(d.chunks_exact_mut(2)) {
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    fn decode(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        let mut h = [f16::ZERO; STEP];
        for (s, d) in src.chunks(2 * STEP).zip(dst.chunks_mut(STEP)) {
            let h = &mut h[..d.len()];
            for (v, b) in h.iter_mut().zip(s.chunks_exact(2)) {
                *v = f16::from_le_bytes([b[0], b[1]]);
            }
            h.convert_to_f32_slice(d);
        }
        Ok(())
    }
}
