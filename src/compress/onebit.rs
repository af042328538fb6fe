//! 1-bit sign compression with one scale per block (as in 1-bit SGD / 1-bit Adam).
//!
//! Layout of `n` elements: `ceil(n / block)` little-endian f32 scales, then `ceil(n / 8)`
//! bytes of sign bits (element `i` is bit `i % 8` of byte `i / 8`; 1 = sign bit set).
//! Per block: `scale` = mean |x| over the block; decode = ±scale by the sign bit.
//!
//! Bound: the sign of every element is kept (−0.0 counts as negative) and the L1 norm of
//! every block is kept: Σ|decode| = Σ|x| up to f32 rounding of the mean. The element error
//! is large (|decode − x| ≤ max(|x|, scale)), which is why the codec needs error feedback.
//!
//! Non-finite values: one NaN or infinity in a block makes its scale non-finite, so the whole
//! block decodes as NaN or ±infinity — never as ordinary numbers.

use super::codec::{get_f32, put_f32, residual, ChunkCodec};
use crate::error::Result;

/// The 1-bit codec.
#[derive(Clone, Copy, Debug)]
pub(super) struct OneBit {
    block: usize,
}

impl OneBit {
    /// `block` elements per scale (`block ≥ 1`).
    pub(super) fn new(block: usize) -> OneBit {
        OneBit { block }
    }
}

impl ChunkCodec for OneBit {
    fn encoded_len(&self, n: usize) -> usize {
        4 * n.div_ceil(self.block) + n.div_ceil(8)
    }

    fn needs_error_feedback(&self) -> bool {
        true
    }

    fn align(&self) -> usize {
        // Whole blocks and whole sign bytes.
        let (a, b) = (self.block, 8);
        a / gcd(a, b) * b
    }

    fn encode(&self, src: &[f32], dst: &mut [u8]) {
        let nb = src.len().div_ceil(self.block);
        let (scales, bits) = dst.split_at_mut(4 * nb);
        for (i, xs) in src.chunks(self.block).enumerate() {
            put_f32(scales, i, abs_sum(xs) / xs.len() as f32);
        }
        let mut whole = src.chunks_exact(8);
        for (xs, b) in whole.by_ref().zip(bits.iter_mut()) {
            *b = sign_byte(xs);
        }
        let rest = whole.remainder();
        if !rest.is_empty() {
            bits[src.len() / 8] = sign_byte(rest);
        }
    }

    fn encode_feedback(&self, x: &mut [f32], out: &mut [u8], _tmp: &mut [f32]) -> Result<()> {
        self.encode(x, out);
        // Each element decodes as its block's scale with its own sign bit.
        for (i, xs) in x.chunks_mut(self.block).enumerate() {
            let scale = get_f32(out, i).to_bits();
            for x in xs.iter_mut() {
                let d = f32::from_bits(scale | (x.to_bits() & 0x8000_0000));
                *x = residual(*x, d);
            }
        }
        Ok(())
    }

    fn decode(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        self.apply::<false>(src, dst);
        Ok(())
    }

    fn decode_add(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        self.apply::<true>(src, dst);
        Ok(())
    }
}

impl OneBit {
    fn apply<const ADD: bool>(&self, src: &[u8], dst: &mut [f32]) {
        let nb = dst.len().div_ceil(self.block);
        let (scales, bits) = src.split_at(4 * nb);
        if self.block % 8 == 0 {
            // Whole sign bytes per block: 8 elements per byte, no per-element index math.
            for (i, ds) in dst.chunks_mut(self.block).enumerate() {
                let scale = get_f32(scales, i).to_bits();
                let base = i * self.block / 8;
                let mut whole = ds.chunks_exact_mut(8);
                let mut k = base;
                for d8 in whole.by_ref() {
                    put_signs::<ADD>(d8, bits[k], scale);
                    k += 1;
                }
                let rest = whole.into_remainder();
                if !rest.is_empty() {
                    put_signs::<ADD>(rest, bits[k], scale);
                }
            }
            return;
        }
        for (i, ds) in dst.chunks_mut(self.block).enumerate() {
            let scale = get_f32(scales, i).to_bits();
            let base = i * self.block;
            for (j, d) in ds.iter_mut().enumerate() {
                let k = base + j;
                let sign = ((bits[k / 8] >> (k % 8)) & 1) as u32;
                let v = f32::from_bits(scale | (sign << 31));
                *d = if ADD { *d + v } else { v };
            }
        }
    }
}

/// Σ|x| with 8 partial sums (so it vectorises; the order is fixed, so it is deterministic).
#[inline]
fn abs_sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut whole = xs.chunks_exact(8);
    for c in whole.by_ref() {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x.abs();
        }
    }
    let tail: f32 = whole.remainder().iter().map(|x| x.abs()).sum();
    acc.iter().sum::<f32>() + tail
}

/// The sign bits of up to 8 elements, element `j` in bit `j`.
#[inline]
fn sign_byte(xs: &[f32]) -> u8 {
    xs.iter()
        .enumerate()
        .fold(0u8, |acc, (j, x)| acc | (((x.to_bits() >> 31) as u8) << j))
}

/// Writes (or adds) ±scale to (up to) 8 elements from the sign bits of `b` (a mask test per lane,
/// which vectorises without variable shifts).
#[inline(always)]
fn put_signs<const ADD: bool>(d8: &mut [f32], b: u8, scale: u32) {
    const MASK: [u32; 8] = [1, 2, 4, 8, 16, 32, 64, 128];
    let b = b as u32;
    for (d, m) in d8.iter_mut().zip(MASK) {
        let sign = if b & m != 0 { 0x8000_0000 } else { 0 };
        let v = f32::from_bits(scale | sign);
        *d = if ADD { *d + v } else { v };
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
