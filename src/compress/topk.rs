//! Top-k sparsification: the `k = ceil(fraction · n)` elements of largest magnitude, sent as
//! values and indices.
//!
//! Layout: `k` little-endian u32 indices (ascending; `u32::MAX` marks an unused slot), then
//! the `k` f32 values. Encoded size is `8k` bytes, fixed by `n` alone.
//!
//! Selection without a full sort (as DGC does): the threshold is estimated from a strided
//! sample of at most [`SAMPLE`] elements (a linear-time selection in the sample, aiming at
//! about 1.5 k candidates); one pass collects the candidates at or above it, and a
//! linear-time selection among them keeps exactly `k`. If the sample's estimate leaves fewer
//! than `k` candidates, the selection runs over all elements. The result is the exact top-k
//! by magnitude (ties go to the lower index): every kept |x| ≥ every dropped |x|.
//!
//! Bound: kept elements are exact; dropped ones decode as 0 (their magnitude is at most the
//! smallest kept one) and go to the error-feedback residual.
//!
//! Non-finite values rank above every finite magnitude (NaN above infinity), so they are
//! always among the sent values rather than silently dropped.

use super::codec::{get_f32, put_f32, residual, ChunkCodec};
use crate::error::{Error, Result};

/// Largest sample the threshold is estimated from.
pub(super) const SAMPLE: usize = 4096;

/// Marks an unused slot (fewer non-zero candidates than `k` cannot happen with exact
/// selection, but decoders accept it).
const EMPTY: u32 = u32::MAX;

/// The top-k codec.
#[derive(Clone, Copy, Debug)]
pub(super) struct TopK {
    fraction: f64,
}

impl TopK {
    /// Keeps `fraction` (0 < fraction ≤ 1) of the elements.
    pub(super) fn new(fraction: f64) -> TopK {
        TopK { fraction }
    }

    /// Elements kept out of `n`: `ceil(fraction · n)`, at least 1 and at most `n`.
    pub(super) fn k(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((self.fraction * n as f64).ceil() as usize).clamp(1, n)
    }
}

/// Sort key: the magnitude bits (a total order: NaN > infinity > finite).
#[inline(always)]
fn key(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// The indices of the exact top-`k` of `src` by magnitude, ascending, and whether `src`
/// may hold a non-finite value (`false` means it holds none).
pub(super) fn select(src: &[f32], k: usize) -> (Vec<u32>, bool) {
    let n = src.len();
    let nonfinite = |c: &[u32]| c.iter().any(|&i| key(src[i as usize]) >= 0x7f80_0000);
    if k >= n {
        let all: Vec<u32> = (0..n as u32).collect();
        let nf = nonfinite(&all);
        return (all, nf);
    }
    let s = n.min(SAMPLE);
    let mut sample: Vec<u32> = (0..s).map(|j| key(src[j * n / s])).collect();
    // Rank in the sample, largest first, of about 1.5 k of n.
    let want = ((k as f64 * 1.5 * s as f64 / n as f64).ceil() as usize).clamp(1, s);
    let (_, &mut thr, _) = sample.select_nth_unstable_by(want - 1, |a, b| b.cmp(a));
    let mut cand: Vec<u32> = Vec::with_capacity(2 * k);
    candidates(src, thr, &mut cand);
    if cand.len() < k {
        cand.clear();
        cand.extend(0..n as u32);
    }
    // Every non-finite element is a candidate unless the threshold is above infinity's key.
    let nf = thr > 0x7f80_0000 || nonfinite(&cand);
    if cand.len() > k {
        // Largest key first, ties to the lower index (so the choice is deterministic): the
        // ascending order of (!key, index) packed in a u64, which keeps the selection
        // inside the candidates' array.
        let mut packed: Vec<u64> = cand
            .iter()
            .map(|&i| (u64::from(!key(src[i as usize])) << 32) | u64::from(i))
            .collect();
        packed.select_nth_unstable(k - 1);
        cand.clear();
        cand.extend(packed[..k].iter().map(|&p| p as u32));
    }
    cand.sort_unstable();
    (cand, nf)
}

/// Appends to `cand` the indices `i` (ascending) with `key(src[i]) >= thr`.
fn candidates(src: &[f32], thr: u32, cand: &mut Vec<u32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU just above.
        return unsafe { candidates_avx2(src, thr, cand) };
    }
    candidates_scalar(src, thr, cand)
}

fn candidates_scalar(src: &[f32], thr: u32, cand: &mut Vec<u32>) {
    cand.extend(
        src.iter()
            .enumerate()
            .filter(|(_, x)| key(**x) >= thr)
            .map(|(i, _)| i as u32),
    );
}

/// [`candidates_scalar`] 8 lanes at a time: a compare and a `movemask` per 8 elements, and
/// a loop over the set bits only (few: about 1.5 k of n).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn candidates_avx2(src: &[f32], thr: u32, cand: &mut Vec<u32>) {
    use std::arch::x86_64::*;
    // Keys are at most 0x7fff_ffff, so a signed compare with thr − 1 is `key >= thr`
    // (thr = 0 gives −1: every key).
    let lim = _mm256_set1_epi32(thr as i32 - 1);
    let absmask = _mm256_set1_epi32(0x7fff_ffff);
    let whole = src.len() / 8 * 8;
    let mut i = 0;
    while i < whole {
        // SAFETY: `i + 8 <= whole <= src.len()`.
        let v = unsafe { _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i) };
        let gt = _mm256_cmpgt_epi32(_mm256_and_si256(v, absmask), lim);
        let mut m = _mm256_movemask_ps(_mm256_castsi256_ps(gt)) as u32;
        while m != 0 {
            cand.push(i as u32 + m.trailing_zeros());
            m &= m - 1;
        }
        i += 8;
    }
    for (j, x) in src.iter().enumerate().skip(whole) {
        if key(*x) >= thr {
            cand.push(j as u32);
        }
    }
}

impl TopK {
    /// Encodes the top-k of `src` into `dst`; returns the kept indices (ascending) and
    /// whether `src` may hold a non-finite value.
    fn encode_selected(&self, src: &[f32], dst: &mut [u8]) -> (Vec<u32>, bool) {
        let k = self.k(src.len());
        let (idx, val) = dst.split_at_mut(4 * k);
        let (sel, nf) = select(src, k);
        for slot in 0..k {
            let (i, v) = match sel.get(slot) {
                Some(&i) => (i, src[i as usize]),
                None => (EMPTY, 0.0),
            };
            idx[4 * slot..4 * slot + 4].copy_from_slice(&i.to_le_bytes());
            put_f32(val, slot, v);
        }
        (sel, nf)
    }
}

impl ChunkCodec for TopK {
    fn encoded_len(&self, n: usize) -> usize {
        8 * self.k(n)
    }

    fn needs_error_feedback(&self) -> bool {
        true
    }

    fn encode(&self, src: &[f32], dst: &mut [u8]) {
        self.encode_selected(src, dst);
    }

    fn encode_feedback(&self, x: &mut [f32], out: &mut [u8], _tmp: &mut [f32]) -> Result<()> {
        // The kept elements decode exactly (residual 0, or 0 for a non-finite one); the
        // dropped ones decode as 0 (residual x, or 0 where x is not finite).
        let (sel, nonfinite) = self.encode_selected(x, out);
        if nonfinite {
            for v in x.iter_mut() {
                *v = residual(*v, 0.0);
            }
        }
        for &i in &sel {
            let v = &mut x[i as usize];
            *v = residual(*v, 0.0 + *v);
        }
        Ok(())
    }

    fn decode(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        dst.fill(0.0);
        self.decode_add(src, dst)
    }

    fn decode_add(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        let (n, k) = (dst.len(), self.k(dst.len()));
        let (idx, val) = src.split_at(4 * k);
        for slot in 0..k {
            let i = u32::from_le_bytes([
                idx[4 * slot],
                idx[4 * slot + 1],
                idx[4 * slot + 2],
                idx[4 * slot + 3],
            ]);
            if i == EMPTY {
                continue;
            }
            let d = dst.get_mut(i as usize).ok_or_else(|| {
                Error::Internal(format!("top-k index {i} out of range for {n} elements"))
            })?;
            *d += get_f32(val, slot);
        }
        Ok(())
    }
}
