//! A single-producer / single-consumer byte ring over raw memory.
//!
//! The ring is a [`RingHeader`] (two monotonically increasing byte positions on separate cache
//! lines, and a closed flag) plus a data area whose size is a power of two. The same code runs
//! over heap memory (the in-process `mem` transport) and over a shared-memory mapping (the shm
//! transport): only who owns the memory differs.
//!
//! Protocol: the writer copies bytes into `[tail, head + cap)` and then publishes them with a
//! release store of `tail`; the reader sees them with an acquire load of `tail`, reads
//! `[head, tail)` in place and releases the space with a release store of `head`. Each side
//! caches the other side's counter and refreshes it only when it looks out of room/data, so
//! the shared cache lines bounce only when needed.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::copy::Stores;

/// The shared control block of one ring. `#[repr(C)]` so it can live in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RingHeader {
    /// Bytes consumed so far (written by the reader).
    head: CachePadded<AtomicU64>,
    /// Bytes produced so far (written by the writer).
    tail: CachePadded<AtomicU64>,
    /// Set by either side to say the stream is over.
    closed: CachePadded<AtomicBool>,
    /// Single-copy announcements the reader has copied and acknowledged (see
    /// `link::SingleCopy`), written by the reader.
    single_copy_acks: CachePadded<AtomicU64>,
}

impl RingHeader {
    /// Marks the ring closed; the other side sees it after draining what was written.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether either side closed the ring.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Single-copy announcements acknowledged by the reader so far.
    pub fn single_copy_acks(&self) -> u64 {
        self.single_copy_acks.load(Ordering::Acquire)
    }

    /// The reader acknowledges one more single-copy announcement.
    pub fn add_single_copy_ack(&self) {
        self.single_copy_acks.fetch_add(1, Ordering::AcqRel);
    }
}

/// Raw view of one ring: header, data area and whatever keeps the memory alive.
#[derive(Clone)]
struct RawRing {
    header: *const RingHeader,
    data: *mut u8,
    mask: u64,
    _owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the pointers refer to memory kept alive by `_owner`; all shared state in the header
// is atomic, and the data area is only touched under the SPSC protocol (the writer writes
// only free bytes, the reader reads only published bytes), so moving a half to another
// thread cannot create a data race.
unsafe impl Send for RawRing {}

impl RawRing {
    fn header(&self) -> &RingHeader {
        // SAFETY: `header` points to a live, initialised RingHeader for as long as `_owner`
        // lives (constructor contract), and RingHeader is only accessed through atomics.
        unsafe { &*self.header }
    }

    fn cap(&self) -> u64 {
        self.mask + 1
    }
}

/// The producing half of a ring.
pub struct RingWriter {
    raw: RawRing,
    tail: u64,
    cached_head: u64,
}

/// The consuming half of a ring.
pub struct RingReader {
    raw: RawRing,
    head: u64,
    cached_tail: u64,
}

/// Builds the two halves of a ring over memory owned by `owner`.
///
/// # Safety
/// 1. `header` points to an initialised `RingHeader` and `data` to `cap` writable bytes, both
///    valid for as long as `owner` lives.
/// 2. `cap` is a power of two.
/// 3. In the whole system at most one `RingWriter` and one `RingReader` use this memory at a
///    time (for shared memory: one process holds each half).
pub unsafe fn ring_from_raw(
    header: *const RingHeader,
    data: *mut u8,
    cap: usize,
    owner: Arc<dyn Any + Send + Sync>,
) -> (RingWriter, RingReader) {
    assert!(
        cap.is_power_of_two(),
        "ring capacity must be a power of two"
    );
    let raw = RawRing {
        header,
        data,
        mask: cap as u64 - 1,
        _owner: owner,
    };
    let h = raw.header();
    let head = h.head.load(Ordering::Acquire);
    let tail = h.tail.load(Ordering::Acquire);
    (
        RingWriter {
            raw: raw.clone(),
            tail,
            cached_head: head,
        },
        RingReader {
            raw,
            head,
            cached_tail: tail,
        },
    )
}

/// Heap memory for one ring, used by the in-process transport.
struct HeapRing {
    header: RingHeader,
    data: Box<[std::cell::UnsafeCell<u8>]>,
}

// SAFETY: the data cells are only accessed under the SPSC protocol described in the module
// docs (disjoint byte ranges, published with release/acquire), never concurrently.
unsafe impl Sync for HeapRing {}

/// A ring of `cap` bytes (rounded up to a power of two) on the heap.
pub fn heap_ring(cap: usize) -> (RingWriter, RingReader) {
    let cap = cap.max(64).next_power_of_two();
    let mem = Arc::new(HeapRing {
        header: RingHeader::default(),
        data: (0..cap).map(|_| std::cell::UnsafeCell::new(0u8)).collect(),
    });
    let header: *const RingHeader = &mem.header;
    let data = std::cell::UnsafeCell::raw_get(mem.data.as_ptr());
    // SAFETY: header and `cap` data bytes live inside `mem`, which the halves keep alive; cap
    // is a power of two; the two halves returned are the only users of this memory.
    unsafe { ring_from_raw(header, data, cap, mem) }
}

impl RingWriter {
    /// Bytes the ring holds when full.
    pub fn capacity(&self) -> usize {
        self.raw.cap() as usize
    }

    /// Copies as much of `buf` as fits; returns the byte count (0 when full or closed).
    pub fn write(&mut self, buf: &[u8]) -> usize {
        // SAFETY: a null tee is never written.
        unsafe { self.write_impl(buf, std::ptr::null_mut(), Stores::Cached) }
    }

    /// [`RingWriter::write`] that also copies the bytes it accepts to the front of `tee`
    /// (same length as `buf`) with `stores`, reading `buf` once (see [`crate::copy`]).
    ///
    /// # Panics
    /// If `tee` and `buf` differ in length.
    pub fn write_tee(&mut self, buf: &[u8], tee: &mut [u8], stores: Stores) -> usize {
        assert_eq!(buf.len(), tee.len(), "tee must match the written bytes");
        // SAFETY: `tee` is a live, exclusive slice of `buf.len()` bytes, so it overlaps
        // neither `buf` (a shared borrow) nor the ring's data area (only the reader's `peek`
        // slices point there, and an exclusive `tee` cannot alias those).
        unsafe { self.write_impl(buf, tee.as_mut_ptr(), stores) }
    }

    /// # Safety
    /// `tee` is null or valid for writes of `buf.len()` bytes and overlaps neither `buf`
    /// nor the ring.
    unsafe fn write_impl(&mut self, buf: &[u8], tee: *mut u8, stores: Stores) -> usize {
        let cap = self.raw.cap();
        // The counters may live in memory another process writes: never trust their
        // difference to be in range (wrapping, clamped), so a corrupt peer cannot make us panic
        // or write outside the ring.
        let used = |head: u64| self.tail.wrapping_sub(head).min(cap);
        if used(self.cached_head) + buf.len() as u64 > cap {
            self.cached_head = self.raw.header().head.load(Ordering::Acquire);
        }
        let free = cap - used(self.cached_head);
        let n = (free as usize).min(buf.len());
        if n == 0 {
            return 0;
        }
        let start = (self.tail & self.raw.mask) as usize;
        let first = n.min(cap as usize - start);
        // SAFETY: [tail, tail + n) lies within the free part of the ring (n <= free), so the
        // reader does not read these bytes until `tail` is published below; `start + first`
        // <= cap and `n - first` <= start, so both copies stay inside the data area; `tee`
        // per this function's contract.
        unsafe {
            let (src, ring) = (buf.as_ptr(), self.raw.data);
            if tee.is_null() {
                std::ptr::copy_nonoverlapping(src, ring.add(start), first);
                std::ptr::copy_nonoverlapping(src.add(first), ring, n - first);
            } else {
                crate::copy::tee(src, ring.add(start), tee, first, stores);
                crate::copy::tee(src.add(first), ring, tee.add(first), n - first, stores);
            }
        }
        self.tail += n as u64;
        self.raw.header().tail.store(self.tail, Ordering::Release);
        n
    }

    /// Whether the reader has consumed everything written so far.
    pub fn is_drained(&self) -> bool {
        self.raw.header().head.load(Ordering::Acquire) == self.tail
    }

    /// The shared header (closed flag).
    pub fn header(&self) -> &RingHeader {
        self.raw.header()
    }
}

impl RingReader {
    /// Number of published bytes not yet consumed (refreshes the writer's counter).
    pub fn available(&mut self) -> usize {
        self.cached_tail = self.raw.header().tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head).min(self.raw.cap()) as usize
    }

    /// The contiguous published bytes from the read position up to the wrap point.
    pub fn peek(&mut self) -> &[u8] {
        if self.cached_tail == self.head {
            self.cached_tail = self.raw.header().tail.load(Ordering::Acquire);
        }
        // Clamped as in `write`: a corrupt writer cannot make us read outside the ring.
        let avail = self.cached_tail.wrapping_sub(self.head).min(self.raw.cap());
        let start = (self.head & self.raw.mask) as usize;
        let n = (avail as usize).min(self.raw.cap() as usize - start);
        // SAFETY: [head, head + n) was published by the writer (acquire load of tail above)
        // and is not overwritten until we publish a larger `head` in `consume`, which needs
        // `&mut self` and so ends this borrow first; start + n <= cap.
        unsafe { std::slice::from_raw_parts(self.raw.data.add(start), n) }
    }

    /// Releases the first `n` bytes of the last `peek`.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n as u64 <= self.raw.cap());
        self.head += n as u64;
        self.raw.header().head.store(self.head, Ordering::Release);
    }

    /// The shared header (closed flag).
    pub fn header(&self) -> &RingHeader {
        self.raw.header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_preserves_order() {
        let (mut w, mut r) = heap_ring(64);
        let mut next_in = 0u8;
        let mut next_out = 0u8;
        for round in 0..200 {
            let chunk: Vec<u8> = (0..(round % 50 + 1))
                .map(|_| {
                    next_in = next_in.wrapping_add(1);
                    next_in
                })
                .collect();
            let mut off = 0;
            while off < chunk.len() {
                off += w.write(&chunk[off..]);
                loop {
                    let s = r.peek();
                    if s.is_empty() {
                        break;
                    }
                    for &b in s {
                        next_out = next_out.wrapping_add(1);
                        assert_eq!(b, next_out);
                    }
                    let n = s.len();
                    r.consume(n);
                }
            }
        }
        assert_eq!(next_in, next_out);
        assert!(w.is_drained());
    }

    #[test]
    fn tee_writes_what_the_ring_takes_across_the_wrap() {
        for stores in [Stores::Cached, Stores::Streaming] {
            let (mut w, mut r) = heap_ring(256);
            assert_eq!(w.write(&[0u8; 200]), 200);
            let n = r.peek().len();
            r.consume(n);
            // 300 bytes offered: 256 fit, wrapping at 56.
            let buf: Vec<u8> = (0..300u32).map(|i| (i * 13 + 1) as u8).collect();
            let mut tee = vec![0u8; 300];
            assert_eq!(w.write_tee(&buf, &mut tee, stores), 256);
            assert_eq!(&tee[..256], &buf[..256]);
            assert!(tee[256..].iter().all(|&b| b == 0));
            let mut got = r.peek().to_vec();
            r.consume(got.len());
            got.extend_from_slice(r.peek());
            assert_eq!(got, &buf[..256]);
        }
    }

    #[test]
    fn full_ring_refuses_more() {
        let (mut w, mut r) = heap_ring(64);
        assert_eq!(w.write(&[1u8; 100]), 64);
        assert_eq!(w.write(&[1u8; 1]), 0);
        assert_eq!(r.peek().len(), 64);
        r.consume(10);
        assert_eq!(w.write(&[2u8; 20]), 10);
    }

    #[test]
    fn corrupt_counters_do_not_panic() {
        let (mut w, mut r) = heap_ring(64);
        // A peer scribbling over the shared counters (head beyond tail).
        w.header().head.store(1 << 40, Ordering::Release);
        let _ = w.write(&[1u8; 10]);
        w.header().tail.store(3, Ordering::Release);
        r.header().head.store(u64::MAX, Ordering::Release);
        let n = r.peek().len();
        assert!(n <= 64);
        assert!(r.available() <= 64);
    }

    #[test]
    fn threads_stream_a_megabyte() {
        let (mut w, mut r) = heap_ring(256);
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + 3) as u8).collect();
        let expect = data.clone();
        let h = std::thread::spawn(move || {
            let mut off = 0;
            while off < data.len() {
                off += w.write(&data[off..]);
                std::hint::spin_loop();
            }
        });
        let mut got = Vec::with_capacity(expect.len());
        while got.len() < expect.len() {
            let s = r.peek();
            got.extend_from_slice(s);
            let n = s.len();
            r.consume(n);
        }
        h.join().unwrap();
        assert_eq!(got, expect);
    }
}
