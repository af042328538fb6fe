//! Local steps: copies, reductions, scalings and premul-sum's multiplications inside one
//! rank's memory.

use super::{CallCtx, Mem};
use crate::error::{Error, Result};
use crate::reduce;
use crate::schedule::Step;

/// Runs a local copy, reduction or scaling.
///
/// # Safety
/// As for [`super::execute`].
pub(super) unsafe fn run(st: &Step, mem: Mem, cx: &CallCtx<'_>) -> Result<()> {
    let es = mem.esize;
    match *st {
        Step::Copy { src, dst } => {
            let (s, d) = (mem.ptr(src), mem.ptr(dst));
            if s != d {
                // SAFETY: both regions are valid for `len` elements; `copy` allows overlap.
                unsafe { std::ptr::copy(s, d, dst.len * es) };
            }
        }
        Step::Reduce { dst, a, b } => {
            let n = dst.len * es;
            let (d, pa, pb) = (mem.ptr(dst), mem.ptr(a), mem.ptr(b));
            // SAFETY: all three regions are valid for `n` bytes; each operand is either the
            // destination itself or disjoint from it (checked in `Prepared::new`).
            unsafe {
                if d == pa {
                    reduce::reduce(
                        cx.dtype,
                        cx.op,
                        std::slice::from_raw_parts_mut(d, n),
                        std::slice::from_raw_parts(pb, n),
                    );
                } else if d == pb {
                    let mut tmp = vec![0u8; n];
                    reduce::reduce3(
                        cx.dtype,
                        cx.op,
                        &mut tmp,
                        std::slice::from_raw_parts(pa, n),
                        std::slice::from_raw_parts(pb, n),
                    );
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), d, n);
                } else {
                    reduce::reduce3(
                        cx.dtype,
                        cx.op,
                        std::slice::from_raw_parts_mut(d, n),
                        std::slice::from_raw_parts(pa, n),
                        std::slice::from_raw_parts(pb, n),
                    );
                }
            }
        }
        Step::Scale { dst, divisor } => {
            // SAFETY: `dst` is valid for its elements and only this step accesses it now
            // (contract and dependency graph).
            let d = unsafe { std::slice::from_raw_parts_mut(mem.ptr(dst), dst.len * es) };
            reduce::divide(cx.dtype, d, divisor);
        }
        Step::PreMul { src, dst } => {
            let n = dst.len * es;
            // SAFETY: `src` (the input) and `dst` (scratch) are valid for `n` bytes and lie in
            // different buffers; the dependency graph gives this step exclusive access to
            // `dst` and keeps writers of memory aliasing `src` until it has run.
            let (s, d) = unsafe {
                (
                    std::slice::from_raw_parts(mem.ptr(src), n),
                    std::slice::from_raw_parts_mut(mem.ptr(dst), n),
                )
            };
            reduce::premultiply(cx.dtype, d, s, cx.premul);
        }
        _ => return Err(Error::Internal(format!("{st} is not a local step"))),
    }
    Ok(())
}
