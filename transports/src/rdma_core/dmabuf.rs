//! Page-aligned heap memory that a fabric may write into behind Rust's back.

use std::alloc::{alloc_zeroed, dealloc, Layout};

use super::regcache::PAGE;

/// A zeroed, page-aligned allocation, accessed only through raw pointers (peers' RDMA
/// writes change it without Rust knowing, so no `&mut [u8]` to it is kept).
pub(crate) struct DmaBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a plain heap allocation owned by this value; access is synchronised by its owner
// (the core's mutex) and by the fabric's completions.
unsafe impl Send for DmaBuf {}

impl DmaBuf {
    /// `len` bytes (rounded up to whole pages, at least one).
    pub(crate) fn new(len: usize) -> DmaBuf {
        let len = len.max(1).next_multiple_of(PAGE);
        let layout = Layout::from_size_align(len, PAGE).expect("page-aligned layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        DmaBuf { ptr, len }
    }

    /// Its first byte.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Its length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Byte `off`'s address (`off <= len`).
    pub(crate) fn at(&self, off: usize) -> *mut u8 {
        assert!(
            off <= self.len,
            "offset {off} past a {}-byte buffer",
            self.len
        );
        // SAFETY: in bounds (checked above) of one allocation.
        unsafe { self.ptr.add(off) }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len, PAGE).expect("page-aligned layout");
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr, layout) };
    }
}
