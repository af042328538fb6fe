//! Block-scaled fp8 (E4M3 or E5M2) kernels, the work of the fp8 compression codec
//! (`compress::fp8` adapts them to its codec trait): one f32 scale per block of `block`
//! elements, one byte per element — fine-grained scaling as in DeepSeek-V3.
//!
//! Layout of `n` elements: `ceil(n / block)` little-endian f32 scales, then `n` codes.
//! Per block: `amax` = the largest finite |x|; `scale = max(amax / MAX, f32::MIN_POSITIVE)`
//! (`MAX` = 448 for E4M3, 57344 for E5M2); code = fp8(x / scale) rounded to nearest even;
//! decode = fp8 value × scale.
//!
//! Bound (normal range of the format, i.e. |x| ≥ 2^(emin) · scale): |decode − x| ≤
//! 2^-(m+1) |x| with m mantissa bits (2⁻⁴ for E4M3, 2⁻³ for E5M2); below it the error is at
//! most half a subnormal step, 2^(emin−m−1) · scale (2⁻¹⁰·scale, 2⁻¹⁷·scale), plus the two
//! f32 roundings of the scaling (≤ 2⁻²³ |x|).
//!
//! Non-finite values: `amax` ignores them, so the rest of the block keeps its precision; NaN
//! decodes as NaN, ±infinity as ±infinity in E5M2 and as NaN in E4M3 (it has no infinity).
//!
//! Speed: amax is an integer max over the magnitude bits (non-finite values are skipped in
//! a second pass, only for blocks that have them) and the conversions are the
//! branch-free ones of [`super::fast`], so the loops vectorise; on x86-64 with AVX2
//! (detected at run time) they run compiled for AVX2.

use super::fast::{e4m3_round, e4m3_to_f32, e5m2_round, e5m2_to_f32, f32_to_e4m3, f32_to_e5m2};

/// One of the two fp8 formats, as conversions.
trait Format {
    const MAX: f32;
    fn encode(v: f32) -> u8;
    fn decode(c: u8) -> f32;
    /// `decode(encode(v))` for `|v|` up to what rounds to `MAX` (see [`super::fast`]).
    fn round(v: f32) -> f32;
}

struct E4m3;
impl Format for E4m3 {
    const MAX: f32 = super::F8E4M3::MAX;
    #[inline(always)]
    fn encode(v: f32) -> u8 {
        f32_to_e4m3(v)
    }
    #[inline(always)]
    fn decode(c: u8) -> f32 {
        e4m3_to_f32(c)
    }
    #[inline(always)]
    fn round(v: f32) -> f32 {
        e4m3_round(v)
    }
}

struct E5m2;
impl Format for E5m2 {
    const MAX: f32 = super::F8E5M2::MAX;
    #[inline(always)]
    fn encode(v: f32) -> u8 {
        f32_to_e5m2(v)
    }
    #[inline(always)]
    fn decode(c: u8) -> f32 {
        e5m2_to_f32(c)
    }
    #[inline(always)]
    fn round(v: f32) -> f32 {
        e5m2_round(v)
    }
}

/// Block-scaled fp8 in one of the two formats, `block` elements per scale.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockScaled {
    block: usize,
    e5m2: bool,
}

impl BlockScaled {
    /// E4M3 with `block` elements per scale (`block ≥ 1`).
    pub(crate) fn e4m3(block: usize) -> BlockScaled {
        BlockScaled { block, e5m2: false }
    }

    /// E5M2 with `block` elements per scale (`block ≥ 1`).
    pub(crate) fn e5m2(block: usize) -> BlockScaled {
        BlockScaled { block, e5m2: true }
    }

    /// Elements per scale.
    pub(crate) fn block(&self) -> usize {
        self.block
    }

    /// Bytes that `n` elements take encoded: the scales, then one code per element.
    pub(crate) fn encoded_len(&self, n: usize) -> usize {
        n + 4 * n.div_ceil(self.block)
    }

    /// Encodes `src` into `dst` (`dst.len() == self.encoded_len(src.len())`).
    pub(crate) fn encode(&self, src: &[f32], dst: &mut [u8]) {
        self.dispatch(Kernel::Encode, src, &mut [], &[], dst)
    }

    /// Encodes `x` into `dst` and leaves in `x` what the encoding dropped (0 where that is
    /// not finite), in one pass after the amax pass.
    pub(crate) fn encode_feedback(&self, x: &mut [f32], dst: &mut [u8]) {
        self.dispatch(Kernel::EncodeFeedback, &[], x, &[], dst)
    }

    /// [`BlockScaled::encode_feedback`] of `x = src + res`, with `x` built in `res`.
    pub(crate) fn encode_feedback_add(&self, src: &[f32], res: &mut [f32], dst: &mut [u8]) {
        self.dispatch(Kernel::EncodeFeedbackAdd, src, res, &[], dst)
    }

    /// Decodes `src` into `dst` (`src.len() == self.encoded_len(dst.len())`).
    pub(crate) fn decode(&self, src: &[u8], dst: &mut [f32]) {
        self.dispatch(Kernel::Decode, &[], dst, src, &mut [])
    }

    /// `dst += decode(src)`, element by element in f32.
    pub(crate) fn decode_add(&self, src: &[u8], dst: &mut [f32]) {
        self.dispatch(Kernel::DecodeAdd, &[], dst, src, &mut [])
    }
}

/// Reads the little-endian f32 at element `i` of `b` (a block's scale).
#[inline(always)]
pub(crate) fn get_f32(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Writes `v` as the little-endian f32 at element `i` of `b` (a block's scale).
#[inline(always)]
pub(crate) fn put_f32(b: &mut [u8], i: usize, v: f32) {
    b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
}

/// The residual `x - d`, or 0 where it is not finite: the rule of every codec's error
/// feedback, so that a NaN or infinity is not carried into later steps. (Here, below
/// `compress`, so that fp8 needs nothing above it; the codecs use these three helpers too.)
#[inline(always)]
pub(crate) fn residual(x: f32, d: f32) -> f32 {
    let e = x - d;
    if e.is_finite() {
        e
    } else {
        0.0
    }
}

/// The largest finite |x| of `xs` (0 if none), as an integer max over magnitude bits: a
/// plain max reduction (which vectorises) and, only if it met a NaN or infinity, a second
/// pass that skips them.
#[inline(always)]
fn finite_amax(xs: &[f32]) -> f32 {
    let m = xs
        .iter()
        .fold(0u32, |m, x| m.max(x.to_bits() & 0x7fff_ffff));
    let m = if m < 0x7f80_0000 {
        m
    } else {
        xs.iter()
            .map(|x| x.to_bits() & 0x7fff_ffff)
            .filter(|&u| u < 0x7f80_0000)
            .max()
            .unwrap_or(0)
    };
    f32::from_bits(m)
}

#[inline(always)]
fn encode_generic<F: Format>(block: usize, src: &[f32], dst: &mut [u8]) {
    let nb = src.len().div_ceil(block);
    let (scales, codes) = dst.split_at_mut(4 * nb);
    for (i, (xs, cs)) in src.chunks(block).zip(codes.chunks_mut(block)).enumerate() {
        let scale = (finite_amax(xs) / F::MAX).max(f32::MIN_POSITIVE);
        let inv = 1.0 / scale;
        put_f32(scales, i, scale);
        for (x, c) in xs.iter().zip(cs.iter_mut()) {
            *c = F::encode(x * inv);
        }
    }
}

/// Encodes `x` and leaves in it what the encoding dropped (error feedback), in one pass
/// after the amax pass. The dropped part is `x − round(x/scale)·scale` with `F::round`, the
/// decoded code without decoding it: `|x/scale| ≤ MAX` up to the roundings of the scale for
/// every finite `x` (amax covers them), inside `round`'s domain; a non-finite `x` leaves 0
/// either way.
#[inline(always)]
fn encode_feedback_generic<F: Format>(block: usize, x: &mut [f32], dst: &mut [u8]) {
    let nb = x.len().div_ceil(block);
    let (scales, codes) = dst.split_at_mut(4 * nb);
    for (i, (xs, cs)) in x.chunks_mut(block).zip(codes.chunks_mut(block)).enumerate() {
        let scale = (finite_amax(xs) / F::MAX).max(f32::MIN_POSITIVE);
        let inv = 1.0 / scale;
        put_f32(scales, i, scale);
        for (x, c) in xs.iter_mut().zip(cs.iter_mut()) {
            let v = *x * inv;
            *c = F::encode(v);
            *x = residual(*x, F::round(v) * scale);
        }
    }
}

/// [`encode_feedback_generic`] of `x = src + res`, with `x` built block by block in `res`
/// (the block stays in cache between the passes).
#[inline(always)]
fn encode_feedback_add_generic<F: Format>(
    block: usize,
    src: &[f32],
    res: &mut [f32],
    dst: &mut [u8],
) {
    let nb = res.len().div_ceil(block);
    let (scales, codes) = dst.split_at_mut(4 * nb);
    let blocks = src.chunks(block).zip(res.chunks_mut(block));
    for (i, ((ss, xs), cs)) in blocks.zip(codes.chunks_mut(block)).enumerate() {
        for (x, s) in xs.iter_mut().zip(ss) {
            *x += *s;
        }
        let scale = (finite_amax(xs) / F::MAX).max(f32::MIN_POSITIVE);
        let inv = 1.0 / scale;
        put_f32(scales, i, scale);
        for (x, c) in xs.iter_mut().zip(cs.iter_mut()) {
            let v = *x * inv;
            *c = F::encode(v);
            *x = residual(*x, F::round(v) * scale);
        }
    }
}

#[inline(always)]
fn decode_generic<F: Format, const ADD: bool>(block: usize, src: &[u8], dst: &mut [f32]) {
    let nb = dst.len().div_ceil(block);
    let (scales, codes) = src.split_at(4 * nb);
    for (i, (ds, cs)) in dst.chunks_mut(block).zip(codes.chunks(block)).enumerate() {
        let scale = get_f32(scales, i);
        for (d, c) in ds.iter_mut().zip(cs) {
            let v = F::decode(*c) * scale;
            *d = if ADD { *d + v } else { v };
        }
    }
}

/// Which kernel: (format, decode-and-add).
#[derive(Clone, Copy)]
enum Kernel {
    Encode,
    EncodeFeedback,
    EncodeFeedbackAdd,
    Decode,
    DecodeAdd,
}

#[inline(always)]
fn run<F: Format>(k: Kernel, block: usize, f: &[f32], fm: &mut [f32], b: &[u8], bm: &mut [u8]) {
    match k {
        Kernel::Encode => encode_generic::<F>(block, f, bm),
        Kernel::EncodeFeedback => encode_feedback_generic::<F>(block, fm, bm),
        Kernel::EncodeFeedbackAdd => encode_feedback_add_generic::<F>(block, f, fm, bm),
        Kernel::Decode => decode_generic::<F, false>(block, b, fm),
        Kernel::DecodeAdd => decode_generic::<F, true>(block, b, fm),
    }
}

#[inline(always)]
fn run_any(
    e5m2: bool,
    k: Kernel,
    block: usize,
    f: &[f32],
    fm: &mut [f32],
    b: &[u8],
    bm: &mut [u8],
) {
    if e5m2 {
        run::<E5m2>(k, block, f, fm, b, bm)
    } else {
        run::<E4m3>(k, block, f, fm, b, bm)
    }
}

/// [`run_any`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2(
    e5m2: bool,
    k: Kernel,
    block: usize,
    f: &[f32],
    fm: &mut [f32],
    b: &[u8],
    bm: &mut [u8],
) {
    run_any(e5m2, k, block, f, fm, b, bm)
}

impl BlockScaled {
    fn dispatch(&self, k: Kernel, f: &[f32], fm: &mut [f32], b: &[u8], bm: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            return unsafe { run_avx2(self.e5m2, k, self.block, f, fm, b, bm) };
        }
        run_any(self.e5m2, k, self.block, f, fm, b, bm)
    }
}
