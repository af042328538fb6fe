//! NCCL, loaded at run time (`libnccl.so.2`, or `FERROCOLL_NCCL_LIBRARY`): the symbols every
//! NCCL since 2.13 has, resolved at load; the version checked at load; newer optional calls
//! (shrink, revoke, grow, pre-multiplied sums) resolved when first asked for. Every failing
//! call becomes a [`VendorError::Call`] with NCCL's result name and its own last-error
//! message.
//!
//! The enum tables (`ncclDataType_t`, `ncclRedOp_t`, `ncclResult_t`) are NCCL 2.31's, from
//! its `nccl.h`.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use super::loader::{c_text, load, Loaded};
use super::RawStream;
use crate::error::VendorError;
use crate::{DataType, ReduceOp};

const LIBRARY: &str = "NCCL";
/// The variable naming the library's path.
pub const LIBRARY_VAR: &str = "FERROCOLL_NCCL_LIBRARY";
/// The oldest NCCL supported: 2.13 (per-communicator last-error strings, `ncclAvg`).
pub const MIN_VERSION: u32 = 21300;
/// The first NCCL with fp8 (`ncclFloat8e4m3`, `ncclFloat8e5m2`).
pub const FP8_VERSION: u32 = 22400;
/// Bytes of an `ncclUniqueId`.
pub const UNIQUE_ID_BYTES: usize = 128;

/// An `ncclUniqueId` (passed by value, as NCCL does).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NcclUniqueId {
    /// NCCL's bytes (a random magic and rank 0's bootstrap address).
    pub internal: [u8; UNIQUE_ID_BYTES],
}

/// An `ncclComm_t`.
type RawComm = *mut c_void;
type Res = c_int;

/// The names of `ncclResult_t`, by code.
const RESULT_NAMES: [&str; 9] = [
    "ncclSuccess",
    "ncclUnhandledCudaError",
    "ncclSystemError",
    "ncclInternalError",
    "ncclInvalidArgument",
    "ncclInvalidUsage",
    "ncclRemoteError",
    "ncclInProgress",
    "ncclTimeout",
];
/// `ncclInProgress`: a non-blocking call or an asynchronous operation still running.
const IN_PROGRESS: Res = 7;

/// NCCL's `ncclDataType_t` for `dt`: NCCL's order is ferrocoll's, but the table is kept
/// explicit so that neither can drift. fp8 needs NCCL 2.24 (`version`): older ones say
/// [`VendorError::Unsupported`], and callers send fp8 through ferrocoll's software path.
pub fn dtype(dt: DataType, version: u32) -> Result<c_int, VendorError> {
    Ok(match dt {
        DataType::I8 => 0,
        DataType::U8 => 1,
        DataType::I32 => 2,
        DataType::U32 => 3,
        DataType::I64 => 4,
        DataType::U64 => 5,
        DataType::F16 => 6,
        DataType::F32 => 7,
        DataType::F64 => 8,
        DataType::BF16 => 9,
        DataType::F8E4M3 | DataType::F8E5M2 if version < FP8_VERSION => {
            return Err(VendorError::Unsupported {
                library: LIBRARY,
                what: format!(
                    "reduce {dt:?} before 2.24 (this is {})",
                    version_text(version)
                ),
            })
        }
        DataType::F8E4M3 => 10,
        DataType::F8E5M2 => 11,
    })
}

/// NCCL's `ncclRedOp_t` for `op`.
pub fn red_op(op: ReduceOp) -> c_int {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Prod => 1,
        ReduceOp::Max => 2,
        ReduceOp::Min => 3,
        ReduceOp::Avg => 4,
    }
}

/// `2.31.2` for NCCL's integer version (`X*10000+Y*100+Z` since 2.9, `X*1000+Y*100+Z` before).
pub fn version_text(v: u32) -> String {
    if v >= 10000 {
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}.{}", v / 1000, v / 100 % 10, v % 100)
    }
}

/// The same version on the `X*10000+Y*100+Z` scale.
fn normalised(v: u32) -> u32 {
    if v >= 10000 {
        v
    } else {
        v / 1000 * 10000 + v / 100 % 10 * 100 + v % 100
    }
}

/// The entry points every supported NCCL has.
struct Fns {
    get_version: unsafe extern "C" fn(*mut c_int) -> Res,
    get_unique_id: unsafe extern "C" fn(*mut NcclUniqueId) -> Res,
    comm_init_rank: unsafe extern "C" fn(*mut RawComm, c_int, NcclUniqueId, c_int) -> Res,
    comm_destroy: unsafe extern "C" fn(RawComm) -> Res,
    comm_abort: unsafe extern "C" fn(RawComm) -> Res,
    comm_get_async_error: unsafe extern "C" fn(RawComm, *mut Res) -> Res,
    get_error_string: unsafe extern "C" fn(Res) -> *const c_char,
    get_last_error: unsafe extern "C" fn(RawComm) -> *const c_char,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        RawComm,
        RawStream,
    ) -> Res,
    all_gather:
        unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, RawComm, RawStream) -> Res,
    reduce_scatter: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        RawComm,
        RawStream,
    ) -> Res,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        RawComm,
        RawStream,
    ) -> Res,
    send: unsafe extern "C" fn(*const c_void, usize, c_int, c_int, RawComm, RawStream) -> Res,
    recv: unsafe extern "C" fn(*mut c_void, usize, c_int, c_int, RawComm, RawStream) -> Res,
    group_start: unsafe extern "C" fn() -> Res,
    group_end: unsafe extern "C" fn() -> Res,
    comm_count: unsafe extern "C" fn(RawComm, *mut c_int) -> Res,
    comm_user_rank: unsafe extern "C" fn(RawComm, *mut c_int) -> Res,
}

/// A loaded NCCL. Share it (`Arc`) between the communicators made from it.
pub struct Nccl {
    f: Fns,
    version: u32,
    // Last: the function pointers above point into it.
    lib: Loaded,
}

// SAFETY: `Nccl` holds function pointers into a loaded library and the library handle;
// NCCL's entry points may be called from any thread (NCCL's own thread-safety rules apply to
// communicators, which `NcclComm` enforces by not being `Sync`).
unsafe impl Send for Nccl {}
// SAFETY: as above; nothing in `Nccl` is mutated after load.
unsafe impl Sync for Nccl {}

impl Nccl {
    /// Loads NCCL from `path`, else from `FERROCOLL_NCCL_LIBRARY`, else `libnccl.so.2`
    /// (`libnccl.so`) wherever the dynamic loader finds it, and checks its version.
    pub fn open(path: Option<&str>) -> Result<Nccl, VendorError> {
        let lib = load(LIBRARY, LIBRARY_VAR, &["libnccl.so.2", "libnccl.so"], path)?;
        // SAFETY: each type below is the symbol's signature in nccl.h (2.13–2.31), and the
        // pointers live in `Nccl` next to the library they point into, which outlives them
        // (it is dropped last).
        let f = unsafe {
            Fns {
                get_version: lib.get("ncclGetVersion")?,
                get_unique_id: lib.get("ncclGetUniqueId")?,
                comm_init_rank: lib.get("ncclCommInitRank")?,
                comm_destroy: lib.get("ncclCommDestroy")?,
                comm_abort: lib.get("ncclCommAbort")?,
                comm_get_async_error: lib.get("ncclCommGetAsyncError")?,
                get_error_string: lib.get("ncclGetErrorString")?,
                get_last_error: lib.get("ncclGetLastError")?,
                all_reduce: lib.get("ncclAllReduce")?,
                all_gather: lib.get("ncclAllGather")?,
                reduce_scatter: lib.get("ncclReduceScatter")?,
                broadcast: lib.get("ncclBroadcast")?,
                send: lib.get("ncclSend")?,
                recv: lib.get("ncclRecv")?,
                group_start: lib.get("ncclGroupStart")?,
                group_end: lib.get("ncclGroupEnd")?,
                comm_count: lib.get("ncclCommCount")?,
                comm_user_rank: lib.get("ncclCommUserRank")?,
            }
        };
        let mut v: c_int = 0;
        // SAFETY: ncclGetVersion writes one int.
        let r = unsafe { (f.get_version)(&mut v) };
        let mut nccl = Nccl { f, version: 0, lib };
        nccl.check("ncclGetVersion", r, std::ptr::null_mut())?;
        nccl.version = normalised(u32::try_from(v).unwrap_or(0));
        if nccl.version < MIN_VERSION {
            return Err(VendorError::TooOld {
                library: LIBRARY,
                path: nccl.lib.path.clone(),
                found: version_text(nccl.version),
                min: version_text(MIN_VERSION),
            });
        }
        Ok(nccl)
    }

    /// The version, on NCCL's `X*10000+Y*100+Z` scale.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        &self.lib.path
    }

    /// Whether this NCCL has the optional entry point `symbol` (e.g. `ncclCommShrink`, 2.27+;
    /// `ncclCommRevoke`, 2.28+; `ncclCommGrow`, 2.29+), looked up now.
    pub fn has(&self, symbol: &'static str) -> bool {
        // SAFETY: only looked up, never called through this type.
        unsafe { self.lib.optional::<unsafe extern "C" fn()>(symbol) }.is_some()
    }

    /// `Ok` for `ncclSuccess`, else the error with NCCL's name for `r` and its message: the
    /// communicator's last error when there is one, else the result's string.
    fn check(&self, call: &'static str, r: Res, comm: RawComm) -> Result<(), VendorError> {
        if r == 0 {
            return Ok(());
        }
        // SAFETY: both return NUL-terminated strings owned by NCCL (or null); a null comm
        // asks for the last error of the thread's latest call.
        let last = unsafe { c_text((self.f.get_last_error)(comm), "") };
        let message = if last.trim().is_empty() {
            // SAFETY: as above.
            unsafe { c_text((self.f.get_error_string)(r), "no message") }
        } else {
            last
        };
        Err(VendorError::Call {
            library: LIBRARY,
            call,
            code: i64::from(r),
            name: usize::try_from(r)
                .ok()
                .and_then(|i| RESULT_NAMES.get(i))
                .map_or_else(|| format!("ncclResult {r}"), |n| n.to_string()),
            message,
        })
    }

    /// A fresh unique id (`ncclGetUniqueId`: opens rank 0's bootstrap listener; no device
    /// needed).
    pub fn unique_id(&self) -> Result<NcclUniqueId, VendorError> {
        let mut id = NcclUniqueId {
            internal: [0; UNIQUE_ID_BYTES],
        };
        // SAFETY: writes one ncclUniqueId.
        let r = unsafe { (self.f.get_unique_id)(&mut id) };
        self.check("ncclGetUniqueId", r, std::ptr::null_mut())?;
        Ok(id)
    }

    /// `ncclGroupStart`: the calls until [`Nccl::group_end`] are issued together.
    pub fn group_start(&self) -> Result<(), VendorError> {
        // SAFETY: no arguments.
        let r = unsafe { (self.f.group_start)() };
        self.check("ncclGroupStart", r, std::ptr::null_mut())
    }

    /// `ncclGroupEnd`.
    pub fn group_end(&self) -> Result<(), VendorError> {
        // SAFETY: no arguments.
        let r = unsafe { (self.f.group_end)() };
        self.check("ncclGroupEnd", r, std::ptr::null_mut())
    }
}

/// Where an NCCL communicator's asynchronous work stands ([`NcclComm::async_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncState {
    /// No error so far.
    Ok,
    /// A non-blocking operation (initialisation, abort) is still running.
    InProgress,
}

/// One NCCL communicator. Calls on it are queued on the stream given; it is destroyed on
/// drop ([`NcclComm::abort`] instead when a peer failed).
pub struct NcclComm {
    nccl: Arc<Nccl>,
    comm: RawComm,
}

// SAFETY: an NCCL communicator may be used from any thread, one at a time; `NcclComm` is
// not `Sync`, so `&mut`/ownership serialises its use.
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// `ncclCommInitRank`: rank `rank` of a `world`-rank communicator made from `id` (every
    /// rank passes the id rank 0 made). Blocks until every rank has joined.
    pub fn init_rank(
        nccl: Arc<Nccl>,
        world: usize,
        id: &NcclUniqueId,
        rank: usize,
    ) -> Result<NcclComm, VendorError> {
        let too_big = |what: &str| VendorError::Unsupported {
            library: LIBRARY,
            what: format!("address {what} beyond i32"),
        };
        let world = c_int::try_from(world).map_err(|_| too_big("a world"))?;
        let rank = c_int::try_from(rank).map_err(|_| too_big("a rank"))?;
        let mut comm: RawComm = std::ptr::null_mut();
        // SAFETY: writes one ncclComm_t; the id is passed by value as NCCL takes it.
        let r = unsafe { (nccl.f.comm_init_rank)(&mut comm, world, *id, rank) };
        nccl.check("ncclCommInitRank", r, std::ptr::null_mut())?;
        Ok(NcclComm { nccl, comm })
    }

    /// The communicator's rank and size as NCCL sees them.
    pub fn rank_and_size(&self) -> Result<(usize, usize), VendorError> {
        let (mut rank, mut n) = (0, 0);
        // SAFETY: each writes one int for a live communicator.
        let r = unsafe { (self.nccl.f.comm_user_rank)(self.comm, &mut rank) };
        self.nccl.check("ncclCommUserRank", r, self.comm)?;
        // SAFETY: as above.
        let r = unsafe { (self.nccl.f.comm_count)(self.comm, &mut n) };
        self.nccl.check("ncclCommCount", r, self.comm)?;
        Ok((rank as usize, n as usize))
    }

    /// `ncclCommGetAsyncError`, polled: `Ok(state)`, or the asynchronous error.
    pub fn async_error(&self) -> Result<AsyncState, VendorError> {
        let mut e: Res = 0;
        // SAFETY: writes one ncclResult_t for a live communicator.
        let r = unsafe { (self.nccl.f.comm_get_async_error)(self.comm, &mut e) };
        self.nccl.check("ncclCommGetAsyncError", r, self.comm)?;
        match e {
            0 => Ok(AsyncState::Ok),
            IN_PROGRESS => Ok(AsyncState::InProgress),
            e => self
                .nccl
                .check("ncclCommGetAsyncError", e, self.comm)
                .map(|()| AsyncState::Ok),
        }
    }

    /// `ncclCommAbort`: stops the communicator's work now and frees it (after a peer's
    /// failure, where destroying would wait for it).
    pub fn abort(mut self) -> Result<(), VendorError> {
        let comm = std::mem::replace(&mut self.comm, std::ptr::null_mut());
        // SAFETY: a live communicator, aborted once (the handle is cleared for drop).
        let r = unsafe { (self.nccl.f.comm_abort)(comm) };
        self.nccl.check("ncclCommAbort", r, std::ptr::null_mut())
    }

    /// `ncclAllReduce` of `count` elements queued on `stream`.
    ///
    /// # Safety
    /// `send` and `recv` are device buffers (or NULL-stream-compatible memory, as NCCL
    /// allows) of `count` elements of `dt` that stay valid until the stream reaches the
    /// call; `stream` is a live stream of the communicator's device.
    pub unsafe fn all_reduce(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let (t, o) = (dtype(dt, self.nccl.version)?, red_op(op));
        // SAFETY: the caller's contract.
        let r = unsafe { (self.nccl.f.all_reduce)(send, recv, count, t, o, self.comm, stream) };
        self.nccl.check("ncclAllReduce", r, self.comm)
    }

    /// `ncclAllGather`: `count` elements from each rank into `recv` (world × count).
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce`], with `recv` of world × `count` elements.
    pub unsafe fn all_gather(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dt: DataType,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let t = dtype(dt, self.nccl.version)?;
        // SAFETY: the caller's contract.
        let r = unsafe { (self.nccl.f.all_gather)(send, recv, count, t, self.comm, stream) };
        self.nccl.check("ncclAllGather", r, self.comm)
    }

    /// `ncclReduceScatter`: `send` of world × `count` elements, this rank's reduced `count`
    /// into `recv`.
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce`], with `send` of world × `count` elements.
    pub unsafe fn reduce_scatter(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let (t, o) = (dtype(dt, self.nccl.version)?, red_op(op));
        // SAFETY: the caller's contract.
        let r = unsafe { (self.nccl.f.reduce_scatter)(send, recv, count, t, o, self.comm, stream) };
        self.nccl.check("ncclReduceScatter", r, self.comm)
    }

    /// `ncclBroadcast` from `root`.
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce`].
    pub unsafe fn broadcast(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dt: DataType,
        root: usize,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let t = dtype(dt, self.nccl.version)?;
        let root = c_int::try_from(root).unwrap_or(c_int::MAX);
        // SAFETY: the caller's contract.
        let r = unsafe { (self.nccl.f.broadcast)(send, recv, count, t, root, self.comm, stream) };
        self.nccl.check("ncclBroadcast", r, self.comm)
    }

    /// `ncclSend` of `count` elements to `peer`.
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce`].
    pub unsafe fn send(
        &self,
        buf: *const c_void,
        count: usize,
        dt: DataType,
        peer: usize,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let t = dtype(dt, self.nccl.version)?;
        let peer = c_int::try_from(peer).unwrap_or(c_int::MAX);
        // SAFETY: the caller's contract.
        let r = unsafe { (self.nccl.f.send)(buf, count, t, peer, self.comm, stream) };
        self.nccl.check("ncclSend", r, self.comm)
    }

    /// `ncclRecv` of `count` elements from `peer`.
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce`].
    pub unsafe fn recv(
        &self,
        buf: *mut c_void,
        count: usize,
        dt: DataType,
        peer: usize,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let t = dtype(dt, self.nccl.version)?;
        let peer = c_int::try_from(peer).unwrap_or(c_int::MAX);
        // SAFETY: the caller's contract.
        let r = unsafe { (self.nccl.f.recv)(buf, count, t, peer, self.comm, stream) };
        self.nccl.check("ncclRecv", r, self.comm)
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if !self.comm.is_null() {
            // SAFETY: a live communicator, destroyed once. An error here has no one to go to.
            let _ = unsafe { (self.nccl.f.comm_destroy)(self.comm) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_on_both_scales() {
        assert_eq!(version_text(23102), "2.31.2");
        assert_eq!(version_text(2804), "2.8.4");
        assert_eq!(normalised(2804), 20804);
        assert_eq!(normalised(23102), 23102);
    }

    #[test]
    fn the_type_table_is_nccl_s_and_fp8_needs_2_24() {
        let want = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        for (dt, w) in DataType::ALL.iter().zip(want) {
            assert_eq!(dtype(*dt, 23102).unwrap(), w, "{dt:?}");
        }
        let e = dtype(DataType::F8E4M3, 22300).unwrap_err();
        assert!(e.to_string().contains("2.23.0"), "{e}");
        assert_eq!(red_op(ReduceOp::Avg), 4);
    }
}
