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

use super::codec::{get_f32, put_f32, ChunkCodec};
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

/// The indices of the exact top-`k` of `src` by magnitude, ascending.
pub(super) fn select(src: &[f32], k: usize) -> Vec<u32> {
    let n = src.len();
    if k >= n {
        return (0..n as u32).collect();
    }
    let s = n.min(SAMPLE);
    let mut sample: Vec<u32> = (0..s).map(|j| key(src[j * n / s])).collect();
    // Rank in the sample, largest first, of about 1.5 k of n.
    let want = ((k as f64 * 1.5 * s as f64 / n as f64).ceil() as usize).clamp(1, s);
    let (_, &mut thr, _) = sample.select_nth_unstable_by(want - 1, |a, b| b.cmp(a));
    let mut cand: Vec<u32> = Vec::with_capacity(2 * k);
    cand.extend(
        src.iter()
            .enumerate()
            .filter(|(_, x)| key(**x) >= thr)
            .map(|(i, _)| i as u32),
    );
    if cand.len() < k {
        cand.clear();
        cand.extend(0..n as u32);
    }
    if cand.len() > k {
        // Largest key first; ties to the lower index, so the choice is deterministic.
        cand.select_nth_unstable_by(k - 1, |&a, &b| {
            key(src[b as usize])
                .cmp(&key(src[a as usize]))
                .then(a.cmp(&b))
        });
        cand.truncate(k);
    }
    cand.sort_unstable();
    cand
}

impl ChunkCodec for TopK {
    fn encoded_len(&self, n: usize) -> usize {
        8 * self.k(n)
    }

    fn needs_error_feedback(&self) -> bool {
        true
    }

    fn encode(&self, src: &[f32], dst: &mut [u8]) {
        let k = self.k(src.len());
        let (idx, val) = dst.split_at_mut(4 * k);
        let sel = select(src, k);
        for slot in 0..k {
            let (i, v) = match sel.get(slot) {
                Some(&i) => (i, src[i as usize]),
                None => (EMPTY, 0.0),
            };
            idx[4 * slot..4 * slot + 4].copy_from_slice(&i.to_le_bytes());
            put_f32(val, slot, v);
        }
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
