//! bf16: the top 16 bits of each f32, rounded to nearest even, 2 bytes little-endian.
//!
//! Bound: relative error ≤ 2⁻⁸ for normal |x| (bf16 has f32's exponent range, so nothing
//! overflows except values within half an ulp of f32::MAX, which round to ±infinity, as in
//! every bf16 cast). NaN stays NaN (quieted), ±infinity stays ±infinity. Branch-free, so the
//! loops vectorise.

use super::codec::ChunkCodec;
use crate::error::Result;

/// The bf16 cast codec.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bf16;

/// f32 → bf16 bits, round to nearest even; NaN → quiet NaN.
#[inline(always)]
fn to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    let rounded = (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16;
    let nan = ((u >> 16) | 0x40) as u16;
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        nan
    } else {
        rounded
    }
}

impl ChunkCodec for Bf16 {
    fn encoded_len(&self, n: usize) -> usize {
        2 * n
    }

    fn needs_error_feedback(&self) -> bool {
        false
    }

    fn encode(&self, src: &[f32], dst: &mut [u8]) {
        for (x, b) in src.iter().zip(dst.chunks_exact_mut(2)) {
            b.copy_from_slice(&to_bf16(*x).to_le_bytes());
        }
    }

    fn decode(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
        }
        Ok(())
    }
}
