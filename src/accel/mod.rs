//! Accelerator memory through the vendors' libraries, loaded at run time with libloading:
//! nothing here is linked, so a build and a machine without them are unaffected, and a
//! missing or unusable library is a [`crate::error::VendorError`] naming it and the
//! variable that points to it.
//!
//! - [`nccl`]: NCCL (`libnccl.so.2`, `FERROCOLL_NCCL_LIBRARY`), version-checked at load, its
//!   enums mapped in one table, its errors carrying NCCL's own message.
//! - [`cudart`]: the CUDA runtime (`FERROCOLL_CUDART_LIBRARY`) for the streams and copies of
//!   the staging path, and the query that tells device memory from host memory.
//!
//! Device buffers are raw device pointers and streams raw `cudaStream_t`/`aclrtStream`
//! handles, as the vendors' C APIs take them.

pub mod cudart;
mod loader;
pub mod nccl;

use std::ffi::c_void;

/// A vendor's stream handle (`cudaStream_t`, `aclrtStream`); null is the default stream.
pub type RawStream = *mut c_void;

/// Where a buffer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Host memory.
    Host,
    /// Memory of CUDA device `n`.
    Cuda(u32),
    /// Memory of Ascend NPU `n`.
    Npu(u32),
}
