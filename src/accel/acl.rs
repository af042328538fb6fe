//! Ascend's ACL runtime, loaded at run time (`libascendcl.so`, or `FERROCOLL_ACL_LIBRARY`):
//! the streams, events, copies and allocations of the staging path on NPUs. Every failing
//! call becomes a [`VendorError::Call`] with ACL's code and its most recent error message
//! (`aclGetRecentErrMsg`).

use std::ffi::{c_char, c_int, c_void};

use super::loader::{c_text, load, Loaded};
use super::{CopyKind, RawEvent, RawStream, Runtime};
use crate::error::VendorError;

const LIBRARY: &str = "ACL runtime";
/// The variable naming the library's path.
pub const LIBRARY_VAR: &str = "FERROCOLL_ACL_LIBRARY";

type Err = c_int;

struct Fns {
    set_device: unsafe extern "C" fn(i32) -> Err,
    get_device_count: unsafe extern "C" fn(*mut u32) -> Err,
    create_stream: unsafe extern "C" fn(*mut RawStream) -> Err,
    destroy_stream: unsafe extern "C" fn(RawStream) -> Err,
    synchronize_stream: unsafe extern "C" fn(RawStream) -> Err,
    memcpy_async:
        unsafe extern "C" fn(*mut c_void, usize, *const c_void, usize, c_int, RawStream) -> Err,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize, c_int) -> Err,
    free: unsafe extern "C" fn(*mut c_void) -> Err,
    create_event: unsafe extern "C" fn(*mut RawEvent) -> Err,
    record_event: unsafe extern "C" fn(RawEvent, RawStream) -> Err,
    synchronize_event: unsafe extern "C" fn(RawEvent) -> Err,
    destroy_event: unsafe extern "C" fn(RawEvent) -> Err,
    recent_err_msg: unsafe extern "C" fn() -> *const c_char,
}

/// A loaded ACL runtime.
pub struct AclRuntime {
    f: Fns,
    version: String,
    // Last: the function pointers above point into it.
    lib: Loaded,
}

// SAFETY: function pointers into a loaded library and its handle; ACL's runtime calls are
// thread-safe (each thread sets its device).
unsafe impl Send for AclRuntime {}
// SAFETY: as above; nothing is mutated after load.
unsafe impl Sync for AclRuntime {}

impl AclRuntime {
    /// Loads the runtime from `path`, else from `FERROCOLL_ACL_LIBRARY`, else
    /// `libascendcl.so` wherever the dynamic loader finds it.
    pub fn open(path: Option<&str>) -> Result<AclRuntime, VendorError> {
        let lib = load(LIBRARY, LIBRARY_VAR, &["libascendcl.so"], path)?;
        // SAFETY: each type is the symbol's signature in acl_rt.h / acl_base.h; the pointers
        // live next to the library, which is dropped last.
        let f = unsafe {
            Fns {
                set_device: lib.get("aclrtSetDevice")?,
                get_device_count: lib.get("aclrtGetDeviceCount")?,
                create_stream: lib.get("aclrtCreateStream")?,
                destroy_stream: lib.get("aclrtDestroyStream")?,
                synchronize_stream: lib.get("aclrtSynchronizeStream")?,
                memcpy_async: lib.get("aclrtMemcpyAsync")?,
                malloc: lib.get("aclrtMalloc")?,
                free: lib.get("aclrtFree")?,
                create_event: lib.get("aclrtCreateEvent")?,
                record_event: lib.get("aclrtRecordEvent")?,
                synchronize_event: lib.get("aclrtSynchronizeEvent")?,
                destroy_event: lib.get("aclrtDestroyEvent")?,
                recent_err_msg: lib.get("aclGetRecentErrMsg")?,
            }
        };
        // SAFETY: the signature of aclrtGetVersion (CANN 5+); optional in older ones.
        let get_version: Option<unsafe extern "C" fn(*mut i32, *mut i32, *mut i32) -> Err> =
            unsafe { lib.optional("aclrtGetVersion") };
        let mut rt = AclRuntime {
            f,
            version: "unknown".into(),
            lib,
        };
        if let Some(g) = get_version {
            let (mut a, mut b, mut c) = (0, 0, 0);
            // SAFETY: writes three ints.
            let r = unsafe { g(&mut a, &mut b, &mut c) };
            rt.check("aclrtGetVersion", r)?;
            rt.version = format!("{a}.{b}.{c}");
        }
        Ok(rt)
    }

    /// The runtime's version (`major.minor.patch`), or `unknown` where it cannot say.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        &self.lib.path
    }

    fn check(&self, call: &'static str, r: Err) -> Result<(), VendorError> {
        if r == 0 {
            return Ok(());
        }
        // SAFETY: returns a NUL-terminated string owned by ACL (or null).
        let message = unsafe { c_text((self.f.recent_err_msg)(), "no message") };
        Err(VendorError::Call {
            library: LIBRARY,
            call,
            code: i64::from(r),
            name: format!("aclError {r}"),
            message,
        })
    }

    /// How many NPUs this process sees.
    pub fn device_count(&self) -> Result<usize, VendorError> {
        let mut n = 0u32;
        // SAFETY: writes one u32.
        let r = unsafe { (self.f.get_device_count)(&mut n) };
        self.check("aclrtGetDeviceCount", r)?;
        Ok(n as usize)
    }
}

impl Runtime for AclRuntime {
    fn name(&self) -> &'static str {
        LIBRARY
    }

    fn set_device(&self, device: u32) -> Result<(), VendorError> {
        // SAFETY: takes an int.
        let r = unsafe { (self.f.set_device)(i32::try_from(device).unwrap_or(i32::MAX)) };
        self.check("aclrtSetDevice", r)
    }

    fn stream_create(&self) -> Result<RawStream, VendorError> {
        let mut s = std::ptr::null_mut();
        // SAFETY: writes one aclrtStream.
        let r = unsafe { (self.f.create_stream)(&mut s) };
        self.check("aclrtCreateStream", r)?;
        Ok(s)
    }

    unsafe fn stream_destroy(&self, s: RawStream) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.destroy_stream)(s) };
        self.check("aclrtDestroyStream", r)
    }

    unsafe fn synchronize(&self, s: RawStream) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.synchronize_stream)(s) };
        self.check("aclrtSynchronizeStream", r)
    }

    unsafe fn copy_async(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: CopyKind,
        s: RawStream,
    ) -> Result<(), VendorError> {
        // SAFETY: the caller's contract; the destination holds `bytes`. ACL's kinds number
        // as CUDA's do (host-to-device 1, device-to-host 2, device-to-device 3).
        let r = unsafe { (self.f.memcpy_async)(dst, bytes, src, bytes, kind as c_int, s) };
        self.check("aclrtMemcpyAsync", r)
    }

    fn malloc(&self, bytes: usize) -> Result<*mut c_void, VendorError> {
        let mut p = std::ptr::null_mut();
        // SAFETY: writes one pointer; policy 0 is ACL_MEM_MALLOC_HUGE_FIRST.
        let r = unsafe { (self.f.malloc)(&mut p, bytes, 0) };
        self.check("aclrtMalloc", r)?;
        Ok(p)
    }

    unsafe fn free(&self, p: *mut c_void) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.free)(p) };
        self.check("aclrtFree", r)
    }

    fn event_create(&self) -> Result<RawEvent, VendorError> {
        let mut e = std::ptr::null_mut();
        // SAFETY: writes one aclrtEvent.
        let r = unsafe { (self.f.create_event)(&mut e) };
        self.check("aclrtCreateEvent", r)?;
        Ok(e)
    }

    unsafe fn event_record(&self, e: RawEvent, s: RawStream) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.record_event)(e, s) };
        self.check("aclrtRecordEvent", r)
    }

    unsafe fn event_synchronize(&self, e: RawEvent) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.synchronize_event)(e) };
        self.check("aclrtSynchronizeEvent", r)
    }

    unsafe fn event_destroy(&self, e: RawEvent) -> Result<(), VendorError> {
        // SAFETY: the caller's contract.
        let r = unsafe { (self.f.destroy_event)(e) };
        self.check("aclrtDestroyEvent", r)
    }
}
