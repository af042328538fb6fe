//! The CUDA runtime, loaded at run time (`libcudart.so`, or `FERROCOLL_CUDART_LIBRARY`): the
//! streams, copies and allocations the staging path needs, and the pointer query that tells
//! device memory from host memory. Every failing call becomes a [`VendorError::Call`] with
//! CUDA's error name and string.

use std::ffi::{c_char, c_int, c_void};

use super::loader::{c_text, load, Loaded};
use super::{CopyKind, MemoryKind, RawEvent, RawStream, Runtime};
use crate::error::VendorError;

const LIBRARY: &str = "CUDA runtime";
/// The variable naming the library's path.
pub const LIBRARY_VAR: &str = "FERROCOLL_CUDART_LIBRARY";

type Err = c_int;

/// `struct cudaPointerAttributes` (CUDA 11+).
#[repr(C)]
struct PointerAttributes {
    kind: c_int,
    device: c_int,
    device_pointer: *mut c_void,
    host_pointer: *mut c_void,
}

struct Fns {
    runtime_get_version: unsafe extern "C" fn(*mut c_int) -> Err,
    get_error_name: unsafe extern "C" fn(Err) -> *const c_char,
    get_error_string: unsafe extern "C" fn(Err) -> *const c_char,
    get_device_count: unsafe extern "C" fn(*mut c_int) -> Err,
    set_device: unsafe extern "C" fn(c_int) -> Err,
    stream_create: unsafe extern "C" fn(*mut RawStream) -> Err,
    stream_destroy: unsafe extern "C" fn(RawStream) -> Err,
    stream_synchronize: unsafe extern "C" fn(RawStream) -> Err,
    memcpy_async: unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int, RawStream) -> Err,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> Err,
    free: unsafe extern "C" fn(*mut c_void) -> Err,
    pointer_get_attributes: unsafe extern "C" fn(*mut PointerAttributes, *const c_void) -> Err,
    event_create: unsafe extern "C" fn(*mut RawEvent) -> Err,
    event_record: unsafe extern "C" fn(RawEvent, RawStream) -> Err,
    event_synchronize: unsafe extern "C" fn(RawEvent) -> Err,
    event_destroy: unsafe extern "C" fn(RawEvent) -> Err,
}

/// A loaded CUDA runtime.
pub struct CudaRuntime {
    f: Fns,
    version: u32,
    // Last: the function pointers above point into it.
    lib: Loaded,
}

// SAFETY: function pointers into a loaded library and its handle; the CUDA runtime's entry
// points are thread-safe.
unsafe impl Send for CudaRuntime {}
// SAFETY: as above; nothing is mutated after load.
unsafe impl Sync for CudaRuntime {}

impl CudaRuntime {
    /// Loads the runtime from `path`, else from `FERROCOLL_CUDART_LIBRARY`, else
    /// `libcudart.so` (13, 12, 11) wherever the dynamic loader finds it.
    pub fn open(path: Option<&str>) -> Result<CudaRuntime, VendorError> {
        let names = [
            "libcudart.so",
            "libcudart.so.13",
            "libcudart.so.12",
            "libcudart.so.11.0",
        ];
        let lib = load(LIBRARY, LIBRARY_VAR, &names, path)?;
        // SAFETY: each type is the symbol's signature in cuda_runtime_api.h (11–13); the
        // pointers live next to the library, which is dropped last.
        let f = unsafe {
            Fns {
                runtime_get_version: lib.get("cudaRuntimeGetVersion")?,
                get_error_name: lib.get("cudaGetErrorName")?,
                get_error_string: lib.get("cudaGetErrorString")?,
                get_device_count: lib.get("cudaGetDeviceCount")?,
                set_device: lib.get("cudaSetDevice")?,
                stream_create: lib.get("cudaStreamCreate")?,
                stream_destroy: lib.get("cudaStreamDestroy")?,
                stream_synchronize: lib.get("cudaStreamSynchronize")?,
                memcpy_async: lib.get("cudaMemcpyAsync")?,
                malloc: lib.get("cudaMalloc")?,
                free: lib.get("cudaFree")?,
                pointer_get_attributes: lib.get("cudaPointerGetAttributes")?,
                event_create: lib.get("cudaEventCreate")?,
                event_record: lib.get("cudaEventRecord")?,
                event_synchronize: lib.get("cudaEventSynchronize")?,
                event_destroy: lib.get("cudaEventDestroy")?,
            }
        };
        let mut v = 0;
        // SAFETY: writes one int; needs no device.
        let r = unsafe { (f.runtime_get_version)(&mut v) };
        let mut rt = CudaRuntime { f, version: 0, lib };
        rt.check("cudaRuntimeGetVersion", r)?;
        rt.version = u32::try_from(v).unwrap_or(0);
        Ok(rt)
    }

    /// The runtime's version (`1000 × major + 10 × minor`, CUDA's scale).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        &self.lib.path
    }

    fn check(&self, call: &'static str, r: Err) -> Result<(), VendorError> {
        if r == 0 {
            return Ok(());
        }
        // SAFETY: both return static NUL-terminated strings (or null).
        let (name, message) = unsafe {
            (
                c_text((self.f.get_error_name)(r), "unknown CUDA error"),
                c_text((self.f.get_error_string)(r), "no message"),
            )
        };
        Err(VendorError::Call {
            library: LIBRARY,
            call,
            code: i64::from(r),
            name,
            message,
        })
    }

    /// How many CUDA devices this process sees (an error where the driver is missing).
    pub fn device_count(&self) -> Result<usize, VendorError> {
        let mut n = 0;
        // SAFETY: writes one int.
        let r = unsafe { (self.f.get_device_count)(&mut n) };
        self.check("cudaGetDeviceCount", r)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

impl Runtime for CudaRuntime {
    fn name(&self) -> &'static str {
        LIBRARY
    }

    fn set_device(&self, device: u32) -> Result<(), VendorError> {
        let d = c_int::try_from(device).unwrap_or(c_int::MAX);
        // SAFETY: takes an int.
        let r = unsafe { (self.f.set_device)(d) };
        self.check("cudaSetDevice", r)
    }

    fn stream_create(&self) -> Result<RawStream, VendorError> {
        let mut s: RawStream = std::ptr::null_mut();
        // SAFETY: writes one cudaStream_t.
        let r = unsafe { (self.f.stream_create)(&mut s) };
        self.check("cudaStreamCreate", r)?;
        Ok(s)
    }

    unsafe fn stream_destroy(&self, s: RawStream) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.stream_destroy)(s) };
        self.check("cudaStreamDestroy", r)
    }

    unsafe fn synchronize(&self, s: RawStream) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.stream_synchronize)(s) };
        self.check("cudaStreamSynchronize", r)
    }

    unsafe fn copy_async(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: CopyKind,
        s: RawStream,
    ) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.memcpy_async)(dst, src, bytes, kind as c_int, s) };
        self.check("cudaMemcpyAsync", r)
    }

    fn malloc(&self, bytes: usize) -> Result<*mut c_void, VendorError> {
        let mut p = std::ptr::null_mut();
        // SAFETY: writes one pointer.
        let r = unsafe { (self.f.malloc)(&mut p, bytes) };
        self.check("cudaMalloc", r)?;
        Ok(p)
    }

    unsafe fn free(&self, p: *mut c_void) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.free)(p) };
        self.check("cudaFree", r)
    }

    fn event_create(&self) -> Result<RawEvent, VendorError> {
        let mut e = std::ptr::null_mut();
        // SAFETY: writes one cudaEvent_t.
        let r = unsafe { (self.f.event_create)(&mut e) };
        self.check("cudaEventCreate", r)?;
        Ok(e)
    }

    unsafe fn event_record(&self, e: RawEvent, s: RawStream) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.event_record)(e, s) };
        self.check("cudaEventRecord", r)
    }

    unsafe fn event_synchronize(&self, e: RawEvent) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.event_synchronize)(e) };
        self.check("cudaEventSynchronize", r)
    }

    unsafe fn event_destroy(&self, e: RawEvent) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.event_destroy)(e) };
        self.check("cudaEventDestroy", r)
    }

    /// `cudaPointerGetAttributes`, which only looks the address up: plain host memory the
    /// runtime never saw is [`MemoryKind::Host`].
    fn memory_kind(&self, addr: usize) -> Result<Option<MemoryKind>, VendorError> {
        let p = addr as *const c_void;
        let mut a = PointerAttributes {
            kind: 0,
            device: 0,
            device_pointer: std::ptr::null_mut(),
            host_pointer: std::ptr::null_mut(),
        };
        // SAFETY: writes one attribute struct; the pointer is only looked up.
        let r = unsafe { (self.f.pointer_get_attributes)(&mut a, p) };
        self.check("cudaPointerGetAttributes", r)?;
        Ok(Some(match a.kind {
            2 | 3 => MemoryKind::Cuda(u32::try_from(a.device).unwrap_or(0)),
            _ => MemoryKind::Host,
        }))
    }
}
