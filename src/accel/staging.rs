//! Host memory of the composed communicator: scratch buffers on CPU hosts, the f32 view of
//! staging buffers, and the average's division.

use std::ffi::c_void;

use crate::DataType;

fn host_layout(bytes: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(bytes.max(1), 64).expect("a valid layout")
}

pub(super) fn alloc_host(bytes: usize) -> *mut c_void {
    // SAFETY: a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(host_layout(bytes)) };
    if p.is_null() {
        std::alloc::handle_alloc_error(host_layout(bytes));
    }
    p as *mut c_void
}

/// # Safety
/// `p` came from [`alloc_host`] with `bytes`.
pub(super) unsafe fn dealloc_host(p: *mut c_void, bytes: usize) {
    // SAFETY: the caller's contract.
    unsafe { std::alloc::dealloc(p as *mut u8, host_layout(bytes)) }
}

/// The f32 view of a staging buffer (whose length is a multiple of 4).
pub(super) fn as_f32(b: &mut [u8]) -> &mut [f32] {
    // SAFETY: f32 has no invalid bit patterns; the staging buffers are `Vec<u8>` whose
    // allocation the global allocator aligns to at least 8 bytes for these sizes, and
    // `align_to_mut` checks it.
    let (pre, mid, post) = unsafe { b.align_to_mut::<f32>() };
    assert!(pre.is_empty() && post.is_empty(), "misaligned f32 staging");
    mid
}

/// Divides every element of `b` (of type `dt`) by `n`, in place, rounding once in the
/// element's type (integers truncate, as NCCL's average does).
pub(super) fn scale(b: &mut [u8], dt: DataType, n: usize) {
    use half::{bf16, f16};
    let es = dt.size();
    for x in b.chunks_exact_mut(es) {
        match dt {
            DataType::F32 => {
                let v = f32::from_le_bytes(x.try_into().unwrap()) / n as f32;
                x.copy_from_slice(&v.to_le_bytes());
            }
            DataType::F64 => {
                let v = f64::from_le_bytes(x.try_into().unwrap()) / n as f64;
                x.copy_from_slice(&v.to_le_bytes());
            }
            DataType::F16 => {
                let v = f16::from_le_bytes(x.try_into().unwrap()).to_f32() / n as f32;
                x.copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
            DataType::BF16 => {
                let v = bf16::from_le_bytes(x.try_into().unwrap()).to_f32() / n as f32;
                x.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
            }
            DataType::I32 => {
                let v = i32::from_le_bytes(x.try_into().unwrap()) / n as i32;
                x.copy_from_slice(&v.to_le_bytes());
            }
            DataType::I64 => {
                let v = i64::from_le_bytes(x.try_into().unwrap()) / n as i64;
                x.copy_from_slice(&v.to_le_bytes());
            }
            // The other types have no average in ferrocoll's own path either.
            _ => {}
        }
    }
}
