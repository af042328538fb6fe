//! Byte copies for links that copy through memory: plain, streaming (non-temporal) and
//! "tee" (one read of the source, two destinations).
//!
//! Why: a large copy-only collective on one host is bound by memory traffic, not by the
//! copies' count. An ordinary store first reads the destination line into the cache (read
//! for ownership), so a copy of S bytes moves 3·S through the memory system; a streaming
//! store writes the line without reading it (2·S) and leaves the cache to the small ring
//! that the two ranks hand data through. And a rank that both keeps its own chunk and sends
//! it (all-gather, broadcast's root) reads that chunk once for both with [`tee`]. On a
//! 2-vCPU VM this halved all-gather's copy time against a `memcpy` of the own chunk plus a
//! cross-memory read of the peer's; compare on a machine with
//! `FERROCOLL_STREAMING_MIN_BYTES=0` and `=1G` under
//! `ferrocoll-probe all_gather -b 64M -e 64M`. Streaming stores are wrong for data read
//! again soon (it has to come back from memory), so the caller decides per copy with
//! [`Stores`].

/// How a copy stores into its destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stores {
    /// Ordinary stores: the destination stays in cache, for data that is read again soon.
    #[default]
    Cached,
    /// Non-temporal stores that bypass the cache, for large outputs that nothing in this
    /// call reads again. The copy ends with a store fence, so the bytes are visible to
    /// whoever later synchronises with the copying thread.
    Streaming,
}

/// Copies `src` into `dst` (equal lengths) with the given kind of stores.
///
/// # Panics
/// If the lengths differ (a caller bug, like `copy_from_slice`).
pub fn copy(dst: &mut [u8], src: &[u8], stores: Stores) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of different lengths"
    );
    match stores {
        Stores::Cached => dst.copy_from_slice(src),
        // SAFETY: `dst` and `src` are valid for `len` bytes and cannot overlap (a `&mut`
        // and a `&` slice); there is no second cached destination.
        Stores::Streaming => unsafe {
            imp::tee(
                src.as_ptr(),
                dst.as_mut_ptr(),
                std::ptr::null_mut(),
                src.len(),
            )
        },
    }
}

/// Copies `len` bytes from `src` to `cached` with ordinary stores and to `tee` with `stores`,
/// reading `src` once.
///
/// # Safety
/// `src` must be valid for reads and `cached` and `tee` for writes of `len` bytes, and none
/// of the three ranges may overlap.
pub unsafe fn tee(src: *const u8, cached: *mut u8, tee: *mut u8, len: usize, stores: Stores) {
    match stores {
        // SAFETY: the caller's contract; the ranges do not overlap.
        Stores::Cached => unsafe {
            std::ptr::copy_nonoverlapping(src, cached, len);
            std::ptr::copy_nonoverlapping(src, tee, len);
        },
        // SAFETY: the caller's contract.
        Stores::Streaming => unsafe { imp::tee(src, tee, cached, len) },
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_storeu_si256, _mm256_stream_si256,
        _mm_loadu_si128, _mm_sfence, _mm_storeu_si128, _mm_stream_si128,
    };

    /// Copies `len` bytes from `src` to `stream` with non-temporal stores and, when `cached`
    /// is not null, to `cached` with ordinary stores, reading `src` once.
    ///
    /// 32-byte (AVX2) stores where the CPU has them, else 16-byte (SSE2, part of x86_64).
    /// The wider ones are not about the core's speed: the copy is bound by the memory
    /// system, and half as many stores keep more of it busy (all-gather's copies measured
    /// faster pair by pair with 32-byte stores than with 16-byte ones).
    ///
    /// # Safety
    /// `src` valid for reads, `stream` (and `cached` unless null) valid for writes of `len`
    /// bytes; no overlaps.
    pub(super) unsafe fn tee(src: *const u8, stream: *mut u8, cached: *mut u8, len: usize) {
        // Head: plain copies up to the first 64-byte boundary of the streamed destination,
        // so every streaming store is aligned and whole cache lines are written at once.
        let head = stream.align_offset(64).min(len);
        let body = (len - head) / 64 * 64;
        // SAFETY: (whole block) every offset stays below `len`, which the caller guarantees
        // is valid for each pointer; `stream + head` is 64-byte aligned, as the streaming
        // stores of both bodies need; the AVX2 body runs only where the CPU has AVX2.
        unsafe {
            plain(src, stream, cached, head);
            let c = if cached.is_null() {
                cached
            } else {
                cached.add(head)
            };
            if std::arch::is_x86_feature_detected!("avx2") {
                body_avx2(src.add(head), stream.add(head), c, body);
            } else {
                body_sse2(src.add(head), stream.add(head), c, body);
            }
            let done = head + body;
            plain(
                src.add(done),
                stream.add(done),
                if cached.is_null() {
                    cached
                } else {
                    cached.add(done)
                },
                len - done,
            );
            // Non-temporal stores are weakly ordered: fence them before any later store
            // (a ring's published tail, a job's completion flag) that tells another thread
            // to read them.
            _mm_sfence();
        }
    }

    /// The body of [`tee`] with 16-byte stores: `n` a multiple of 64, `d` 64-byte aligned.
    ///
    /// # Safety
    /// As for [`tee`], for `n` bytes from each pointer.
    pub(super) unsafe fn body_sse2(s: *const u8, d: *mut u8, cached: *mut u8, n: usize) {
        let mut i = 0;
        // SAFETY: the caller's contract; `d + i` is 16-byte aligned.
        unsafe {
            while i < n {
                let v: [__m128i; 4] = [
                    _mm_loadu_si128(s.add(i).cast()),
                    _mm_loadu_si128(s.add(i + 16).cast()),
                    _mm_loadu_si128(s.add(i + 32).cast()),
                    _mm_loadu_si128(s.add(i + 48).cast()),
                ];
                for (k, x) in v.iter().enumerate() {
                    _mm_stream_si128(d.add(i + 16 * k).cast(), *x);
                }
                if !cached.is_null() {
                    for (k, x) in v.iter().enumerate() {
                        _mm_storeu_si128(cached.add(i + 16 * k).cast(), *x);
                    }
                }
                i += 64;
            }
        }
    }

    /// The body of [`tee`] with 32-byte stores: `n` a multiple of 64, `d` 64-byte aligned.
    ///
    /// # Safety
    /// As for [`tee`], for `n` bytes from each pointer; the CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn body_avx2(s: *const u8, d: *mut u8, cached: *mut u8, n: usize) {
        let mut i = 0;
        // SAFETY: the caller's contract; `d + i` is 32-byte aligned.
        unsafe {
            while i < n {
                let a: __m256i = _mm256_loadu_si256(s.add(i).cast());
                let b: __m256i = _mm256_loadu_si256(s.add(i + 32).cast());
                _mm256_stream_si256(d.add(i).cast(), a);
                _mm256_stream_si256(d.add(i + 32).cast(), b);
                if !cached.is_null() {
                    _mm256_storeu_si256(cached.add(i).cast(), a);
                    _mm256_storeu_si256(cached.add(i + 32).cast(), b);
                }
                i += 64;
            }
        }
    }

    /// # Safety
    /// As for [`tee`], for `n` bytes.
    unsafe fn plain(src: *const u8, a: *mut u8, b: *mut u8, n: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(src, a, n);
            if !b.is_null() {
                std::ptr::copy_nonoverlapping(src, b, n);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    /// Portable fallback: two ordinary copies (no streaming stores without intrinsics).
    ///
    /// # Safety
    /// As for the x86_64 version.
    pub(super) unsafe fn tee(src: *const u8, stream: *mut u8, cached: *mut u8, len: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(src, stream, len);
            if !cached.is_null() {
                std::ptr::copy_nonoverlapping(src, cached, len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn streaming_copy_matches_at_every_alignment_and_length() {
        let src = pattern(1024, 7);
        for len in [0, 1, 15, 16, 63, 64, 65, 127, 128, 200, 511, 700] {
            for s_off in [0, 1, 8, 33] {
                for d_off in [0, 3, 16, 60] {
                    let mut dst = vec![0xAAu8; 1024];
                    copy(
                        &mut dst[d_off..d_off + len],
                        &src[s_off..s_off + len],
                        Stores::Streaming,
                    );
                    assert_eq!(&dst[d_off..d_off + len], &src[s_off..s_off + len]);
                    // Nothing outside the destination was touched.
                    assert!(dst[..d_off].iter().all(|&b| b == 0xAA));
                    assert!(dst[d_off + len..].iter().all(|&b| b == 0xAA));
                }
            }
        }
    }

    #[test]
    fn tee_fills_both_destinations_and_nothing_else() {
        let src = pattern(2048, 3);
        for stores in [Stores::Cached, Stores::Streaming] {
            for len in [0, 1, 64, 100, 1000, 1500] {
                for (a_off, b_off) in [(0, 0), (5, 17), (64, 1), (31, 48)] {
                    let mut a = vec![0x55u8; 2048];
                    let mut b = vec![0x66u8; 2048];
                    // SAFETY: three distinct vectors, each with room for `len` bytes past
                    // its offset.
                    unsafe {
                        tee(
                            src[9..].as_ptr(),
                            a[a_off..].as_mut_ptr(),
                            b[b_off..].as_mut_ptr(),
                            len,
                            stores,
                        )
                    };
                    assert_eq!(&a[a_off..a_off + len], &src[9..9 + len], "{stores:?} {len}");
                    assert_eq!(&b[b_off..b_off + len], &src[9..9 + len], "{stores:?} {len}");
                    assert!(a[..a_off]
                        .iter()
                        .chain(&a[a_off + len..])
                        .all(|&x| x == 0x55));
                    assert!(b[..b_off]
                        .iter()
                        .chain(&b[b_off + len..])
                        .all(|&x| x == 0x66));
                }
            }
        }
    }

    /// Both bodies of the x86_64 copy, whichever one `tee` picks on this CPU.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_store_widths_copy_every_byte_to_both_destinations() {
        type Body = unsafe fn(*const u8, *mut u8, *mut u8, usize);
        let src = pattern(4096 + 7, 11);
        let mut bodies: Vec<(&str, Body)> = vec![("sse2", imp::body_sse2)];
        if std::arch::is_x86_feature_detected!("avx2") {
            bodies.push(("avx2", imp::body_avx2));
        }
        for (name, body) in bodies {
            for n in [0usize, 64, 128, 192, 4096] {
                for with_cached in [false, true] {
                    let mut out = vec![0xAAu8; 4096 + 128];
                    let at = out.as_ptr().align_offset(64);
                    let o = &mut out[at..at + 4096 + 64];
                    let mut cached = vec![0x55u8; 4096 + 3];
                    let d = o.as_mut_ptr();
                    let c = if with_cached {
                        cached[3..].as_mut_ptr()
                    } else {
                        std::ptr::null_mut()
                    };
                    // SAFETY: `d` is 64-byte aligned with 4096 + 64 bytes behind it,
                    // `c` is null or has 4096 bytes behind it, `src[7..]` has 4096; the
                    // AVX2 body runs only where the CPU has AVX2 (pushed above only then).
                    unsafe {
                        body(src[7..].as_ptr(), d, c, n);
                        std::arch::x86_64::_mm_sfence();
                    }
                    assert_eq!(&o[..n], &src[7..7 + n], "{name} {n}");
                    assert!(o[n..].iter().all(|&b| b == 0xAA), "{name} {n}: wrote past");
                    if with_cached {
                        assert_eq!(&cached[3..3 + n], &src[7..7 + n], "{name} {n} cached");
                        assert!(cached[..3]
                            .iter()
                            .chain(&cached[3 + n..])
                            .all(|&b| b == 0x55));
                    } else {
                        assert!(cached.iter().all(|&b| b == 0x55));
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "different lengths")]
    fn copy_rejects_unequal_lengths() {
        copy(&mut [0u8; 3], &[1u8; 4], Stores::Streaming);
    }
}
