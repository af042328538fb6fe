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

use super::codec::{put_f32, residual, ChunkCodec};
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
    if k >= n {
        return all(src);
    }
    let thr = threshold(n, k, |i| src[i]);
    let mut cand: Vec<u32> = Vec::with_capacity(2 * k);
    candidates(src, thr, &mut cand);
    finish(src, k, thr, cand)
}

/// Every index of `src`, and whether it holds a non-finite value.
fn all(src: &[f32]) -> (Vec<u32>, bool) {
    let nf = src.iter().any(|x| key(*x) >= 0x7f80_0000);
    ((0..src.len() as u32).collect(), nf)
}

/// The estimated threshold key for the top `k < n` of the `n` values `x(i)`: in a strided
/// sample of at most [`SAMPLE`], the key ranked (largest first) at about 1.5 k of n.
fn threshold(n: usize, k: usize, x: impl Fn(usize) -> f32) -> u32 {
    let s = n.min(SAMPLE);
    let mut sample: Vec<u32> = (0..s).map(|j| key(x(j * n / s))).collect();
    let want = ((k as f64 * 1.5 * s as f64 / n as f64).ceil() as usize).clamp(1, s);
    let (_, &mut thr, _) = sample.select_nth_unstable_by(want - 1, |a, b| b.cmp(a));
    thr
}

/// The exact top-`k < n` of `src` from `cand`, the indices of the keys ≥ `thr`
/// (ascending), as [`select`] returns it.
fn finish(src: &[f32], k: usize, thr: u32, mut cand: Vec<u32>) -> (Vec<u32>, bool) {
    if cand.len() < k {
        // The sample overestimated the threshold: select among all elements.
        cand.clear();
        cand.extend(0..src.len() as u32);
    }
    // Every non-finite element is a candidate unless the threshold is above infinity's key.
    let nf = thr > 0x7f80_0000 || cand.iter().any(|&i| key(src[i as usize]) >= 0x7f80_0000);
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

/// `res[i] = src[i] + res[i]` for every `i`, appending to `cand` the indices (ascending)
/// whose new key is ≥ `thr`: the error-feedback sum and the candidate scan in one pass.
fn add_candidates(src: &[f32], res: &mut [f32], thr: u32, cand: &mut Vec<u32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU just above.
        return unsafe { add_candidates_avx2(src, res, thr, cand) };
    }
    for (r, s) in res.iter_mut().zip(src) {
        *r += *s;
    }
    candidates_scalar(res, thr, cand)
}

/// [`add_candidates`], 8 lanes at a time (as [`candidates_avx2`]).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_candidates_avx2(src: &[f32], res: &mut [f32], thr: u32, cand: &mut Vec<u32>) {
    use std::arch::x86_64::*;
    let n = src.len().min(res.len());
    let lim = _mm256_set1_epi32(thr as i32 - 1);
    let absmask = _mm256_set1_epi32(0x7fff_ffff);
    let whole = n / 8 * 8;
    let mut i = 0;
    while i < whole {
        // SAFETY: `i + 8 <= whole <= n`, the length of both slices.
        let x = unsafe {
            let r = res.as_mut_ptr().add(i);
            let x = _mm256_add_ps(_mm256_loadu_ps(r), _mm256_loadu_ps(src.as_ptr().add(i)));
            _mm256_storeu_ps(r, x);
            _mm256_castps_si256(x)
        };
        let gt = _mm256_cmpgt_epi32(_mm256_and_si256(x, absmask), lim);
        let mut m = _mm256_movemask_ps(_mm256_castsi256_ps(gt)) as u32;
        while m != 0 {
            cand.push(i as u32 + m.trailing_zeros());
            m &= m - 1;
        }
        i += 8;
    }
    for j in whole..n {
        res[j] += src[j];
        if key(res[j]) >= thr {
            cand.push(j as u32);
        }
    }
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
        let (sel, nf) = select(src, self.k(src.len()));
        self.write(src, &sel, dst);
        (sel, nf)
    }

    /// Writes the indices `sel` and their values in `src` into `dst`.
    fn write(&self, src: &[f32], sel: &[u32], dst: &mut [u8]) {
        let k = self.k(src.len());
        let (idx, val) = dst.split_at_mut(4 * k);
        for slot in 0..k {
            let (i, v) = match sel.get(slot) {
                Some(&i) => (i, src[i as usize]),
                None => (EMPTY, 0.0),
            };
            idx[4 * slot..4 * slot + 4].copy_from_slice(&i.to_le_bytes());
            put_f32(val, slot, v);
        }
    }

    /// Replaces `x`, just encoded with the kept indices `sel`, by what the encoding dropped:
    /// the kept elements decode exactly (residual 0, or 0 for a non-finite one), the dropped
    /// ones decode as 0 (residual x, or 0 where x is not finite; `nonfinite` false says
    /// there is none).
    fn feedback(x: &mut [f32], sel: &[u32], nonfinite: bool) {
        if nonfinite {
            for v in x.iter_mut() {
                *v = residual(*v, 0.0);
            }
        }
        for &i in sel {
            let v = &mut x[i as usize];
            *v = residual(*v, 0.0 + *v);
        }
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
        let (sel, nonfinite) = self.encode_selected(x, out);
        TopK::feedback(x, &sel, nonfinite);
        Ok(())
    }

    fn encode_feedback_add(&self, src: &[f32], res: &mut [f32], out: &mut [u8]) -> Result<()> {
        let (n, k) = (res.len(), self.k(res.len()));
        let (sel, nonfinite) = if k >= n {
            for (r, s) in res.iter_mut().zip(src) {
                *r += *s;
            }
            all(res)
        } else {
            // The threshold from a sample of the sums, then the sums and the candidate scan
            // in one pass.
            let thr = threshold(n, k, |i| src[i] + res[i]);
            let mut cand = Vec::with_capacity(2 * k);
            add_candidates(src, res, thr, &mut cand);
            finish(res, k, thr, cand)
        };
        self.write(res, &sel, out);
        TopK::feedback(res, &sel, nonfinite);
        Ok(())
    }

    fn decode(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        dst.fill(0.0);
        self.decode_add(src, dst)
    }

    fn decode_add(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        let (n, k) = (dst.len(), self.k(dst.len()));
        let (idx, val) = src.split_at(4 * k);
        // The payload comes from a peer: its indices are checked before any is used.
        let used = used_slots(idx, n)?;
        // Paired 4-byte chunks rather than `get_f32(val, slot)`: its indexing keeps bounds
        // checks in this loop, which made decoding 12% slower (criterion, two
        // alternating pairs: 214 → 243 µs and 209 → 244 µs).
        for (i, v) in idx[..4 * used].chunks_exact(4).zip(val.chunks_exact(4)) {
            dst[word(i) as usize] += f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        }
        Ok(())
    }
}

/// The little-endian u32 at the front of `b` (a 4-byte chunk).
fn word(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// How many slots of the index area `idx` are used, when it is what an encoder writes for a
/// chunk of `n` elements: indices strictly ascending and below `n`, the unused slots
/// ([`EMPTY`]) last. Anything else (a repeated index would add its element twice) is
/// [`Error::CorruptPayload`], naming the first bad slot and what is wrong with it.
fn used_slots(idx: &[u8], n: usize) -> Result<usize> {
    let words = idx.chunks_exact(4).map(word);
    let used = words
        .clone()
        .position(|i| i == EMPTY)
        .unwrap_or(idx.len() / 4);
    // One branch-free pass for the common, valid case; the explanation only on failure.
    let (mut ok, mut prev) = (true, -1i64);
    for i in words.clone().take(used) {
        ok &= i64::from(i) > prev;
        prev = i64::from(i);
    }
    ok &= prev < n as i64;
    if ok && words.skip(used).all(|i| i == EMPTY) {
        return Ok(used);
    }
    let mut next = 0usize;
    for (slot, i) in idx.chunks_exact(4).map(word).enumerate() {
        if i == EMPTY {
            continue;
        }
        let why = if slot > used {
            "follows an unused slot"
        } else if i as usize >= n {
            "is out of range"
        } else if (i as usize) < next {
            "is not above the one before it"
        } else {
            next = i as usize + 1;
            continue;
        };
        return Err(Error::CorruptPayload {
            peer: None,
            detail: format!("top-k index {i} in slot {slot} {why} (a chunk of {n} elements)"),
        });
    }
    Err(Error::Internal(
        "top-k: an index area refused without a bad slot".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indices an encoder cannot write are refused before anything is added: repeated
    /// (the element would be added twice), descending, out of range, or used after an
    /// unused slot. Unused slots at the end are fine.
    #[test]
    fn decode_refuses_indices_no_encoder_writes() {
        let c = TopK::new(0.25); // k = 3 of 11
        let payload = |idx: [u32; 3]| {
            let mut b: Vec<u8> = idx.iter().flat_map(|i| i.to_le_bytes()).collect();
            b.extend([1.5f32, 2.5, 4.0].iter().flat_map(|v| v.to_le_bytes()));
            b
        };
        let mut out = vec![10f32; 11];
        c.decode_add(&payload([1, 4, EMPTY]), &mut out).unwrap();
        assert_eq!((out[1], out[4], out[0]), (11.5, 12.5, 10.0));
        for (idx, why) in [
            ([0, 0, 0], "not above"),
            ([5, 2, 7], "not above"),
            ([1, 11, EMPTY], "out of range"),
            ([1, EMPTY, 3], "follows an unused slot"),
        ] {
            let mut out = vec![10f32; 11];
            let e = c.decode_add(&payload(idx), &mut out).unwrap_err();
            assert!(e.to_string().contains(why), "{idx:?}: {e}");
            assert!(
                matches!(e, Error::CorruptPayload { peer: None, .. }),
                "{idx:?}: {e:?}"
            );
            assert_eq!(e.kind(), crate::ErrorKind::Remote);
            let named = e.sent_by(3).to_string();
            assert!(
                named.starts_with("corrupt payload from rank 3: "),
                "{named}"
            );
            assert!(out.iter().all(|&v| v == 10.0), "{idx:?} changed the output");
        }
    }

    /// The vectorised candidate scans agree with the scalar one, and the fused
    /// error-feedback encoder gives the same bytes and residual as sum-then-encode.
    #[test]
    fn fast_paths_match_scalar() {
        let n = 10_003;
        let mut x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.61).sin() * 1e-3).collect();
        x[17] = f32::NAN;
        x[4000] = f32::INFINITY;
        let prev: Vec<f32> = (0..n).map(|i| (i as f32 * 0.13).cos() * 1e-3).collect();
        for thr in [0, key(5e-4), key(1.0), 0x7f80_0000, 0x7fff_ffff] {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            candidates(&x, thr, &mut fast);
            candidates_scalar(&x, thr, &mut slow);
            assert_eq!(fast, slow, "threshold {thr:#x}");
        }
        for fraction in [0.01, 0.3, 1.0] {
            let c = TopK::new(fraction);
            let e = c.encoded_len(n);
            let (mut fast, mut slow) = (vec![0u8; e], vec![0u8; e]);
            let mut res_fast = prev.clone();
            c.encode_feedback_add(&x, &mut res_fast, &mut fast).unwrap();
            let mut res_slow: Vec<f32> = x.iter().zip(&prev).map(|(s, r)| s + r).collect();
            c.encode_feedback(&mut res_slow, &mut slow, &mut [])
                .unwrap();
            assert_eq!(fast, slow, "fraction {fraction}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&res_fast), bits(&res_slow), "fraction {fraction}");
            assert!(res_fast.iter().all(|v| v.is_finite()));
        }
    }
}
