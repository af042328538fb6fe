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
        #[cfg(target_arch = "x86_64")]
        if self.block % 8 == 0 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above; `dst` has the encoded length
            // of `src` (the trait's contract).
            return unsafe { x86::encode_avx2::<false>(self.block, src, &mut [], dst) };
        }
        self.encode_scalar(src, dst)
    }

    fn encode_feedback(&self, x: &mut [f32], out: &mut [u8], _tmp: &mut [f32]) -> Result<()> {
        self.encode(x, out);
        self.feedback_scalar(x, out);
        Ok(())
    }

    fn encode_feedback_add(&self, src: &[f32], res: &mut [f32], out: &mut [u8]) -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        if self.block % 8 == 0 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above; `res` has the length of
            // `src` and `out` their encoded length (the trait's contract).
            unsafe { x86::encode_avx2::<true>(self.block, src, res, out) };
            return Ok(());
        }
        for (r, s) in res.iter_mut().zip(src) {
            *r += *s;
        }
        self.encode_scalar(res, out);
        self.feedback_scalar(res, out);
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
    fn encode_scalar(&self, src: &[f32], dst: &mut [u8]) {
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

    /// Replaces `x` (just encoded into `out`) by what the encoding dropped.
    fn feedback_scalar(&self, x: &mut [f32], out: &[u8]) {
        // Each element decodes as its block's scale with its own sign bit.
        for (i, xs) in x.chunks_mut(self.block).enumerate() {
            let scale = get_f32(out, i).to_bits();
            for x in xs.iter_mut() {
                let d = f32::from_bits(scale | (x.to_bits() & 0x8000_0000));
                *x = residual(*x, d);
            }
        }
    }

    fn apply<const ADD: bool>(&self, src: &[u8], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.block % 8 == 0 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            return unsafe { self.apply_avx2::<ADD>(src, dst) };
        }
        self.apply_any::<ADD>(src, dst)
    }

    /// [`OneBit::apply_any`] with AVX2 intrinsics.
    ///
    /// # Safety
    /// The CPU must support AVX2, and `block % 8 == 0`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2<const ADD: bool>(&self, src: &[u8], dst: &mut [f32]) {
        // SAFETY: AVX2 is supported (this function's contract) and `block % 8 == 0` (the
        // caller's check).
        unsafe { x86::decode_avx2::<ADD>(self.block, src, dst) }
    }

    #[inline(always)]
    fn apply_any<const ADD: bool>(&self, src: &[u8], dst: &mut [f32]) {
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

/// The AVX2 encoder.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::codec::put_f32;

    /// Encodes `x` (`x = src + res` with `EF`, built in `res`, else `x = src`) into `dst`
    /// and, with `EF`, leaves in `res` what the encoding dropped. Bit-identical to the
    /// scalar path: the same 8 partial sums per block, summed in the same order; the sign
    /// bits come from `movemask`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `block % 8 == 0`; with `EF`, `res.len() == src.len()`;
    /// `dst.len() == 4 * ceil(n / block) + ceil(n / 8)`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn encode_avx2<const EF: bool>(
        block: usize,
        src: &[f32],
        res: &mut [f32],
        dst: &mut [u8],
    ) {
        let n = src.len();
        let nb = n.div_ceil(block);
        let (scales, bits) = dst.split_at_mut(4 * nb);
        assert!(bits.len() >= n.div_ceil(8) && (!EF || res.len() == n));
        let absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let signmask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
        let expmask = _mm256_set1_epi32(0x7f80_0000);
        for i in 0..nb {
            let a = i * block;
            let len = block.min(n - a);
            let whole = len / 8 * 8;
            // SAFETY: `a + len <= n` = the length of `src` (and of `res` with EF), so every
            // load and store of 8 lanes at `a + k` with `k + 8 <= whole <= len` is in bounds.
            let (xp, acc) = unsafe {
                let xp: *const f32 = if EF {
                    let (s, r) = (src.as_ptr().add(a), res.as_mut_ptr().add(a));
                    let mut k = 0;
                    while k < whole {
                        let x = _mm256_add_ps(_mm256_loadu_ps(r.add(k)), _mm256_loadu_ps(s.add(k)));
                        _mm256_storeu_ps(r.add(k), x);
                        k += 8;
                    }
                    for k in whole..len {
                        *r.add(k) += *s.add(k);
                    }
                    r
                } else {
                    src.as_ptr().add(a)
                };
                let mut acc = _mm256_setzero_ps();
                let mut k = 0;
                while k < whole {
                    acc = _mm256_add_ps(acc, _mm256_and_ps(_mm256_loadu_ps(xp.add(k)), absmask));
                    k += 8;
                }
                (xp, acc)
            };
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            let mut sum = lanes.iter().sum::<f32>();
            // SAFETY: `whole..len` is inside the block (see above).
            let tail: f32 = (whole..len).map(|k| unsafe { (*xp.add(k)).abs() }).sum();
            sum += tail;
            let scale = sum / len as f32;
            put_f32(scales, i, scale);
            let vscale = _mm256_set1_ps(scale);
            let byte0 = a / 8;
            let mut k = 0;
            while k < whole {
                // SAFETY: in bounds as above; `byte0 + k / 8 < ceil(n / 8) <= bits.len()`.
                unsafe {
                    let x = _mm256_loadu_ps(xp.add(k));
                    *bits.get_unchecked_mut(byte0 + k / 8) = _mm256_movemask_ps(x) as u8;
                    if EF {
                        let d = _mm256_or_ps(vscale, _mm256_and_ps(x, signmask));
                        let e = _mm256_sub_ps(x, d);
                        let inf = _mm256_cmpeq_epi32(
                            _mm256_and_si256(_mm256_castps_si256(e), expmask),
                            expmask,
                        );
                        let e = _mm256_andnot_ps(_mm256_castsi256_ps(inf), e);
                        _mm256_storeu_ps(xp.add(k) as *mut f32, e);
                    }
                }
                k += 8;
            }
            if whole < len {
                let mut b = 0u8;
                for (j, k) in (whole..len).enumerate() {
                    // SAFETY: `k < len`, inside the block.
                    let x = unsafe { *xp.add(k) };
                    b |= ((x.to_bits() >> 31) as u8) << j;
                    if EF {
                        let d = f32::from_bits(scale.to_bits() | (x.to_bits() & 0x8000_0000));
                        // SAFETY: as above; with EF, `xp` points into `res`.
                        unsafe { *(xp.add(k) as *mut f32) = super::residual(x, d) };
                    }
                }
                bits[byte0 + whole / 8] = b;
            }
        }
    }

    /// `dst = decode(src)` (or `dst += decode(src)` with `ADD`): per 8 elements, one sign
    /// byte broadcast and tested against the lane masks, ±scale built by `or`. The same
    /// bits as the scalar decoder.
    ///
    /// # Safety
    /// The CPU must support AVX2; `block % 8 == 0`; `src.len() == encoded_len(dst.len())`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn decode_avx2<const ADD: bool>(block: usize, src: &[u8], dst: &mut [f32]) {
        let n = dst.len();
        let nb = n.div_ceil(block);
        let (scales, bits) = src.split_at(4 * nb);
        assert!(bits.len() >= n.div_ceil(8));
        let masks = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let signmask = _mm256_set1_epi32(i32::MIN);
        for i in 0..nb {
            let a = i * block;
            let len = block.min(n - a);
            let whole = len / 8 * 8;
            let scale = super::get_f32(scales, i);
            let vscale = _mm256_castps_si256(_mm256_set1_ps(scale));
            let byte0 = a / 8;
            let mut k = 0;
            while k < whole {
                // SAFETY: `a + k + 8 <= a + len <= n` = `dst.len()`, and
                // `byte0 + k / 8 < ceil(n / 8) <= bits.len()`.
                unsafe {
                    let b = _mm256_set1_epi32(i32::from(*bits.get_unchecked(byte0 + k / 8)));
                    let set = _mm256_cmpeq_epi32(_mm256_and_si256(b, masks), masks);
                    let mut v = _mm256_castsi256_ps(_mm256_or_si256(
                        vscale,
                        _mm256_and_si256(set, signmask),
                    ));
                    let d = dst.as_mut_ptr().add(a + k);
                    if ADD {
                        v = _mm256_add_ps(_mm256_loadu_ps(d), v);
                    }
                    _mm256_storeu_ps(d, v);
                }
                k += 8;
            }
            for k in whole..len {
                let sign = u32::from((bits[byte0 + k / 8] >> (k % 8)) & 1);
                let v = f32::from_bits(scale.to_bits() | (sign << 31));
                let d = &mut dst[a + k];
                *d = if ADD { *d + v } else { v };
            }
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values over several octaves, with the sign of `-0.0`, a NaN and an infinity mixed in.
    fn data(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| match i % 97 {
                5 => -0.0,
                13 if i > 500 => f32::NAN,
                41 if i > 900 => f32::NEG_INFINITY,
                _ => ((i as f32 * 0.37).sin()) * 2f32.powi((i % 11) as i32 - 5),
            })
            .collect()
    }

    /// The dispatched (AVX2 where the CPU has it) encoder, error feedback and decoders give
    /// the same bits as the scalar ones, for whole and partial blocks and bytes.
    #[test]
    fn fast_paths_match_scalar() {
        for (block, n) in [(128, 4096), (128, 1000), (8, 77), (64, 3), (24, 200)] {
            let c = OneBit::new(block);
            let x = data(n);
            let prev: Vec<f32> = data(n + 7)[7..].iter().map(|v| v * 0.5).collect();
            let e = c.encoded_len(n);
            let (mut fast, mut slow) = (vec![0u8; e], vec![0u8; e]);
            c.encode(&x, &mut fast);
            c.encode_scalar(&x, &mut slow);
            assert_eq!(fast, slow, "encode, block {block}, n {n}");

            let mut res_fast = prev.clone();
            c.encode_feedback_add(&x, &mut res_fast, &mut fast).unwrap();
            let mut res_slow: Vec<f32> = x.iter().zip(&prev).map(|(s, r)| s + r).collect();
            c.encode_scalar(&res_slow, &mut slow);
            c.feedback_scalar(&mut res_slow, &slow);
            assert_eq!(
                fast, slow,
                "encode_feedback_add bytes, block {block}, n {n}"
            );
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&res_fast),
                bits(&res_slow),
                "residual, block {block}, n {n}"
            );

            let (mut d_fast, mut d_slow) = (prev.clone(), prev.clone());
            c.decode_add(&fast, &mut d_fast).unwrap();
            c.apply_any::<true>(&fast, &mut d_slow);
            assert_eq!(
                bits(&d_fast),
                bits(&d_slow),
                "decode_add, block {block}, n {n}"
            );
            c.decode(&fast, &mut d_fast).unwrap();
            c.apply_any::<false>(&fast, &mut d_slow);
            assert_eq!(bits(&d_fast), bits(&d_slow), "decode, block {block}, n {n}");
        }
    }
}
