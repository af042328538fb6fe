//! Hand-written declarations of the C shim in `shim.c` (keep the two in step), plus the few
//! libfabric functions that are real exported symbols (`fi_strerror`).

use std::ffi::{c_char, c_int, c_void};

/// Opaque endpoint of the shim (`struct fc_ep`).
#[repr(C)]
pub(crate) struct FcEp {
    _private: [u8; 0],
}

/// Opaque libfabric memory region (`struct fid_mr`).
#[repr(C)]
pub(crate) struct FidMr {
    _private: [u8; 0],
}

/// `struct fc_attr`: what the chosen provider offers.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct FcAttr {
    pub mr_mode: u64,
    pub cq_data_size: u64,
    pub max_msg_size: u64,
    pub inject_size: u64,
    pub caps: u64,
    pub prov_name: [c_char; 64],
    pub fabric_name: [c_char; 64],
}

impl FcAttr {
    /// All zero (filled by the shim).
    pub(crate) fn zeroed() -> FcAttr {
        FcAttr {
            mr_mode: 0,
            cq_data_size: 0,
            max_msg_size: 0,
            inject_size: 0,
            caps: 0,
            prov_name: [0; 64],
            fabric_name: [0; 64],
        }
    }

    /// The provider's name as libfabric reports it (`"tcp;ofi_rxm"`).
    pub(crate) fn prov_name(&self) -> String {
        c_chars(&self.prov_name)
    }
}

/// A NUL-terminated (or full) C char array as a string.
pub(crate) fn c_chars(a: &[c_char]) -> String {
    let bytes: Vec<u8> = a
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `struct fc_cqe`: one successful completion.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct FcCqe {
    pub ctx: u64,
    pub flags: u64,
    pub len: u64,
    pub data: u64,
}

/// `struct fc_cqerr`: one error completion.
#[repr(C)]
pub(crate) struct FcCqErr {
    pub ctx: u64,
    pub flags: u64,
    pub err: i32,
    pub prov_errno: i32,
    pub msg: [c_char; 256],
}

/// `FI_MR_LOCAL`: local buffers of transfers must be registered (descriptors passed).
pub(crate) const FI_MR_LOCAL: u64 = 1 << 2;
/// `FI_MR_VIRT_ADDR`: remote addresses are virtual addresses (else offsets into the region).
pub(crate) const FI_MR_VIRT_ADDR: u64 = 1 << 4;

/// Access flags of `fi_mr_reg`.
pub(crate) const FI_READ: u64 = 1 << 8;
/// See [`FI_READ`].
pub(crate) const FI_WRITE: u64 = 1 << 9;
/// See [`FI_READ`].
pub(crate) const FI_RECV: u64 = 1 << 10;
/// See [`FI_READ`].
pub(crate) const FI_SEND: u64 = 1 << 11;
/// See [`FI_READ`].
pub(crate) const FI_REMOTE_READ: u64 = 1 << 12;
/// See [`FI_READ`].
pub(crate) const FI_REMOTE_WRITE: u64 = 1 << 13;
/// Completion flag: carries remote CQ data.
pub(crate) const FI_REMOTE_CQ_DATA: u64 = 1 << 17;

/// `FI_EAGAIN`, `FI_EAVAIL` (libfabric errnos, positive).
pub(crate) const FI_EAGAIN: i64 = 11;
/// See [`FI_EAGAIN`].
pub(crate) const FI_EAVAIL: i64 = 259;
/// Errnos that mean the connection to the peer is gone.
pub(crate) const DISCONNECT_ERRNOS: [i32; 7] = [
    libc::ECONNRESET,
    libc::ECONNREFUSED,
    libc::EPIPE,
    libc::ENOTCONN,
    libc::ECONNABORTED,
    libc::ESHUTDOWN,
    libc::EHOSTUNREACH,
];

extern "C" {
    pub(crate) fn fc_probe(prov: *const c_char, node: *const c_char, attr: *mut FcAttr) -> c_int;
    pub(crate) fn fc_open(
        prov: *const c_char,
        node: *const c_char,
        out: *mut *mut FcEp,
        attr: *mut FcAttr,
    ) -> c_int;
    pub(crate) fn fc_close(e: *mut FcEp);
    pub(crate) fn fc_getname(e: *mut FcEp, buf: *mut c_void, len: *mut usize) -> c_int;
    pub(crate) fn fc_av_insert(e: *mut FcEp, addr: *const c_void, fi_addr: *mut u64) -> c_int;
    pub(crate) fn fc_mr_reg(
        e: *mut FcEp,
        buf: *const c_void,
        len: usize,
        access: u64,
        req_key: u64,
        mr: *mut *mut FidMr,
        key: *mut u64,
        desc: *mut *mut c_void,
    ) -> c_int;
    pub(crate) fn fc_mr_close(mr: *mut FidMr) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fc_write(
        e: *mut FcEp,
        buf: *const c_void,
        len: usize,
        desc: *mut c_void,
        dest: u64,
        raddr: u64,
        key: u64,
        data: u64,
        with_data: c_int,
        ctx: u64,
    ) -> isize;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fc_read(
        e: *mut FcEp,
        buf: *mut c_void,
        len: usize,
        desc: *mut c_void,
        src: u64,
        raddr: u64,
        key: u64,
        ctx: u64,
    ) -> isize;
    pub(crate) fn fc_send(
        e: *mut FcEp,
        buf: *const c_void,
        len: usize,
        desc: *mut c_void,
        dest: u64,
        ctx: u64,
    ) -> isize;
    pub(crate) fn fc_recv(
        e: *mut FcEp,
        buf: *mut c_void,
        len: usize,
        desc: *mut c_void,
        ctx: u64,
    ) -> isize;
    pub(crate) fn fc_cq_read(e: *mut FcEp, out: *mut FcCqe, n: usize) -> isize;
    pub(crate) fn fc_cq_readerr(e: *mut FcEp, out: *mut FcCqErr) -> c_int;
    pub(crate) fn fc_wait_fd(e: *mut FcEp) -> c_int;
    pub(crate) fn fc_trywait(e: *mut FcEp) -> c_int;
    /// libfabric's own (exported) error text for a positive errno.
    pub(crate) fn fi_strerror(errnum: c_int) -> *const c_char;
}

/// libfabric's message for a (negative or positive) errno.
pub(crate) fn strerror(ret: i64) -> String {
    let n = ret.unsigned_abs().min(i32::MAX as u64) as c_int;
    // SAFETY: fi_strerror returns a pointer to a static NUL-terminated string (or NULL).
    let p = unsafe { fi_strerror(n) };
    if p.is_null() {
        return format!("libfabric error {n}");
    }
    // SAFETY: non-null, NUL-terminated, static (libfabric's table).
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}
