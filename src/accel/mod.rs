//! Accelerator memory through the vendors' libraries, loaded at run time with libloading:
//! nothing here is linked, so a build and a machine without them are unaffected, and a
//! missing or unusable library is a [`crate::error::VendorError`] naming it and the
//! variable that points to it.
//!
//! - [`nccl`]: NCCL (`libnccl.so.2`, `FERROCOLL_NCCL_LIBRARY`), version-checked at load, its
//!   enums mapped in one table, its errors carrying NCCL's own message.
//! - [`cudart`]: the CUDA runtime (`FERROCOLL_CUDART_LIBRARY`) for the streams and copies of
//!   the staging path, and the query that tells device memory from host memory.
//! - [`hccl`] and [`acl`]: HCCL (`libhccl.so`, `FERROCOLL_HCCL_LIBRARY`) and Ascend's ACL
//!   runtime (`libascendcl.so`, `FERROCOLL_ACL_LIBRARY`), the same way. HCCL's enums are
//!   ordered differently from NCCL's and it has no average: each has its own table.
//! - [`Runtime`] is what both runtimes offer the staging path.
//! - [`composed`]: one communicator over NVIDIA, Ascend and CPU hosts: the vendor inside a
//!   host, ferrocoll between hosts from staging buffers; [`price`] prices its plan with the
//!   cost model.
//!
//! Device buffers are raw device pointers and streams raw `cudaStream_t`/`aclrtStream`
//! handles, as the vendors' C APIs take them.

pub mod acl;
pub mod composed;
pub mod cudart;
pub mod hccl;
mod loader;
pub mod nccl;
pub mod price;
mod staging;

use std::ffi::c_void;

use crate::error::VendorError;

/// A vendor's stream handle (`cudaStream_t`, `aclrtStream`); null is the default stream.
pub type RawStream = *mut c_void;
/// A vendor's event handle (`cudaEvent_t`, `aclrtEvent`).
pub type RawEvent = *mut c_void;

/// The direction of a copy (`cudaMemcpyKind` and `aclrtMemcpyKind` number them alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum CopyKind {
    /// Host to device.
    HostToDevice = 1,
    /// Device to host.
    DeviceToHost = 2,
    /// Device to device.
    DeviceToDevice = 3,
}

/// A device runtime (the CUDA runtime, ACL): what the staging path needs of it. Every call
/// that takes a stream queues work on it; nothing waits unless it says so.
pub trait Runtime: Send + Sync {
    /// The library's name ("CUDA runtime", "ACL runtime").
    fn name(&self) -> &'static str;
    /// Makes `device` the calling thread's current device.
    fn set_device(&self, device: u32) -> Result<(), VendorError>;
    /// A new stream on the current device.
    fn stream_create(&self) -> Result<RawStream, VendorError>;
    /// Destroys a stream.
    ///
    /// # Safety
    /// `s` came from [`Runtime::stream_create`] and is not used afterwards.
    unsafe fn stream_destroy(&self, s: RawStream) -> Result<(), VendorError>;
    /// Waits until everything queued on `s` has run.
    ///
    /// # Safety
    /// `s` is a live stream (or null, the default stream).
    unsafe fn synchronize(&self, s: RawStream) -> Result<(), VendorError>;
    /// Queues a copy of `bytes` on `s`.
    ///
    /// # Safety
    /// `dst` and `src` are valid for `bytes` in the memory `kind` says until `s` reaches the
    /// copy; `s` is a live stream.
    unsafe fn copy_async(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: CopyKind,
        s: RawStream,
    ) -> Result<(), VendorError>;
    /// `bytes` of device memory on the current device.
    fn malloc(&self, bytes: usize) -> Result<*mut c_void, VendorError>;
    /// Frees device memory.
    ///
    /// # Safety
    /// `p` came from [`Runtime::malloc`] and is not used afterwards.
    unsafe fn free(&self, p: *mut c_void) -> Result<(), VendorError>;
    /// A new event.
    fn event_create(&self) -> Result<RawEvent, VendorError>;
    /// Marks the point `s` has reached in its queue with `e`.
    ///
    /// # Safety
    /// `e` and `s` are live.
    unsafe fn event_record(&self, e: RawEvent, s: RawStream) -> Result<(), VendorError>;
    /// Waits until the stream `e` was recorded on has passed it.
    ///
    /// # Safety
    /// `e` is live and recorded.
    unsafe fn event_synchronize(&self, e: RawEvent) -> Result<(), VendorError>;
    /// Destroys an event.
    ///
    /// # Safety
    /// `e` came from [`Runtime::event_create`] and is not used afterwards.
    unsafe fn event_destroy(&self, e: RawEvent) -> Result<(), VendorError>;
    /// Where `addr` lives, where the runtime can say (the CUDA runtime can; `None` where it
    /// cannot, and the caller's declaration stands).
    fn memory_kind(&self, addr: usize) -> Result<Option<MemoryKind>, VendorError> {
        let _ = addr;
        Ok(None)
    }
}

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

impl std::fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryKind::Host => write!(f, "host memory"),
            MemoryKind::Cuda(n) => write!(f, "memory of CUDA device {n}"),
            MemoryKind::Npu(n) => write!(f, "memory of NPU {n}"),
        }
    }
}

/// A buffer given to a device call: its address and the memory it is in, as the caller
/// declares it. A [`composed::DeviceComm`] checks the declaration against its own device
/// (and, where the runtime can tell, against the address itself) before any work is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceBuffer {
    /// The address (a device pointer, or a host pointer for host memory).
    pub ptr: *mut c_void,
    /// Where it lives.
    pub memory: MemoryKind,
}

impl DeviceBuffer {
    /// A buffer in the memory of CUDA device `device`.
    pub fn cuda(ptr: *mut c_void, device: u32) -> DeviceBuffer {
        DeviceBuffer {
            ptr,
            memory: MemoryKind::Cuda(device),
        }
    }

    /// A buffer in the memory of Ascend NPU `device`.
    pub fn npu(ptr: *mut c_void, device: u32) -> DeviceBuffer {
        DeviceBuffer {
            ptr,
            memory: MemoryKind::Npu(device),
        }
    }

    /// A buffer in host memory (the buffers of a CPU host's rank).
    pub fn host(ptr: *mut c_void) -> DeviceBuffer {
        DeviceBuffer {
            ptr,
            memory: MemoryKind::Host,
        }
    }

    /// The same buffer `bytes` further on.
    ///
    /// # Safety
    /// The result lies within the caller's allocation.
    pub unsafe fn add(self, bytes: usize) -> DeviceBuffer {
        DeviceBuffer {
            // SAFETY: the caller's contract.
            ptr: unsafe { (self.ptr as *mut u8).add(bytes) } as *mut c_void,
            memory: self.memory,
        }
    }
}
