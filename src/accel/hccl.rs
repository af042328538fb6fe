//! HCCL (Ascend CANN), loaded at run time (`libhccl.so`, or `FERROCOLL_HCCL_LIBRARY`). Where a
//! CANN build exports only the `…V2` names (the plain ones being inline in its header), those
//! are used. Group calls are optional (older CANN lacks them). Every failing call becomes a
//! [`VendorError::Call`] with HCCL's result name and its error string.
//!
//! HCCL's `HcclDataType` is not NCCL's order (`FP32` is 4 here, 7 there) and HCCL has no
//! average: [`dtype`] and [`red_op`] are its own tables, and [`red_op`] refuses `Avg` (the
//! composed path sums and scales). fp8 is refused too: not every CANN build has it, and
//! there is no version call to tell, so fp8 goes through ferrocoll's software path.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::loader::{c_text, load, Loaded};
use super::RawStream;
use crate::error::VendorError;
use crate::{DataType, ReduceOp};

const LIBRARY: &str = "HCCL";
/// The variable naming the library's path.
pub const LIBRARY_VAR: &str = "FERROCOLL_HCCL_LIBRARY";
/// Bytes of an `HcclRootInfo`.
pub const ROOT_INFO_BYTES: usize = 4108;

/// An `HcclRootInfo` (rank 0's; every rank passes it to [`HcclComm::init_root_info`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HcclRootInfo {
    /// HCCL's bytes.
    pub internal: [u8; ROOT_INFO_BYTES],
}

type RawComm = *mut c_void;
type Res = i32;

/// The names of `HcclResult`, by code.
const RESULT_NAMES: [&str; 22] = [
    "HCCL_SUCCESS",
    "HCCL_E_PARA",
    "HCCL_E_PTR",
    "HCCL_E_MEMORY",
    "HCCL_E_INTERNAL",
    "HCCL_E_NOT_SUPPORT",
    "HCCL_E_NOT_FOUND",
    "HCCL_E_UNAVAIL",
    "HCCL_E_SYSCALL",
    "HCCL_E_TIMEOUT",
    "HCCL_E_OPEN_FILE_FAILURE",
    "HCCL_E_TCP_CONNECT",
    "HCCL_E_ROCE_CONNECT",
    "HCCL_E_TCP_TRANSFER",
    "HCCL_E_ROCE_TRANSFER",
    "HCCL_E_RUNTIME",
    "HCCL_E_DRV",
    "HCCL_E_PROFILING",
    "HCCL_E_CCE",
    "HCCL_E_NETWORK",
    "HCCL_E_AGAIN",
    "HCCL_E_REMOTE",
];

/// HCCL's `HcclDataType` for `dt` (see the module docs for what is refused).
pub fn dtype(dt: DataType) -> Result<i32, VendorError> {
    Ok(match dt {
        DataType::I8 => 0,
        DataType::I32 => 2,
        DataType::F16 => 3,
        DataType::F32 => 4,
        DataType::I64 => 5,
        DataType::U64 => 6,
        DataType::U8 => 7,
        DataType::U32 => 9,
        DataType::F64 => 10,
        DataType::BF16 => 11,
        DataType::F8E4M3 | DataType::F8E5M2 => {
            return Err(VendorError::Unsupported {
                library: LIBRARY,
                what: format!("reduce {dt:?} (not in every CANN build)"),
            })
        }
    })
}

/// HCCL's `HcclReduceOp` for `op`; `Avg` is refused (HCCL has none).
pub fn red_op(op: ReduceOp) -> Result<i32, VendorError> {
    Ok(match op {
        ReduceOp::Sum => 0,
        ReduceOp::Prod => 1,
        ReduceOp::Max => 2,
        ReduceOp::Min => 3,
        ReduceOp::Avg => {
            return Err(VendorError::Unsupported {
                library: LIBRARY,
                what: "average (it has no avg: sum, then scale)".into(),
            })
        }
    })
}

struct Fns {
    get_root_info: unsafe extern "C" fn(*mut HcclRootInfo) -> Res,
    comm_init_root_info: unsafe extern "C" fn(u32, *const HcclRootInfo, u32, *mut RawComm) -> Res,
    comm_destroy: unsafe extern "C" fn(RawComm) -> Res,
    get_comm_async_error: unsafe extern "C" fn(RawComm, *mut Res) -> Res,
    get_error_string: Option<unsafe extern "C" fn(Res) -> *const c_char>,
    all_reduce:
        unsafe extern "C" fn(*mut c_void, *mut c_void, u64, i32, i32, RawComm, RawStream) -> Res,
    all_gather: unsafe extern "C" fn(*mut c_void, *mut c_void, u64, i32, RawComm, RawStream) -> Res,
    reduce_scatter:
        unsafe extern "C" fn(*mut c_void, *mut c_void, u64, i32, i32, RawComm, RawStream) -> Res,
    broadcast: unsafe extern "C" fn(*mut c_void, u64, i32, u32, RawComm, RawStream) -> Res,
    get_rank_size: unsafe extern "C" fn(RawComm, *mut u32) -> Res,
    get_rank_id: unsafe extern "C" fn(RawComm, *mut u32) -> Res,
    group_start: Option<unsafe extern "C" fn() -> Res>,
    group_end: Option<unsafe extern "C" fn() -> Res>,
}

/// A loaded HCCL. Share it (`Arc`) between the communicators made from it.
pub struct Hccl {
    f: Fns,
    // Last: the function pointers above point into it.
    lib: Loaded,
}

// SAFETY: function pointers into a loaded library and its handle; HCCL's entry points may
// be called from any thread (communicators are serialised by `HcclComm` not being `Sync`).
unsafe impl Send for Hccl {}
// SAFETY: as above; nothing is mutated after load.
unsafe impl Sync for Hccl {}

/// `names[0]`, else `names[1]` (a `…V2` export), from `lib`.
///
/// # Safety
/// As [`Loaded::get`], for both names.
unsafe fn either<F: Copy>(lib: &Loaded, names: [&'static str; 2]) -> Result<F, VendorError> {
    // SAFETY: the caller's contract, for both names.
    unsafe { lib.optional(names[0]) }.map_or_else(|| unsafe { lib.get(names[1]) }, Ok)
}

impl Hccl {
    /// Loads HCCL from `path`, else from `FERROCOLL_HCCL_LIBRARY`, else `libhccl.so`.
    pub fn open(path: Option<&str>) -> Result<Hccl, VendorError> {
        let lib = load(LIBRARY, LIBRARY_VAR, &["libhccl.so"], path)?;
        // SAFETY: each type is the symbol's signature in hccl.h / hccl_types.h; the pointers
        // live next to the library, which is dropped last.
        let f = unsafe {
            Fns {
                get_root_info: either(&lib, ["HcclGetRootInfo", "HcclGetRootInfoV2"])?,
                comm_init_root_info: either(
                    &lib,
                    ["HcclCommInitRootInfo", "HcclCommInitRootInfoV2"],
                )?,
                comm_destroy: lib.get("HcclCommDestroy")?,
                get_comm_async_error: lib.get("HcclGetCommAsyncError")?,
                get_error_string: lib.optional("HcclGetErrorString"),
                all_reduce: lib.get("HcclAllReduce")?,
                all_gather: lib.get("HcclAllGather")?,
                reduce_scatter: lib.get("HcclReduceScatter")?,
                broadcast: lib.get("HcclBroadcast")?,
                get_rank_size: lib.get("HcclGetRankSize")?,
                get_rank_id: lib.get("HcclGetRankId")?,
                group_start: lib.optional("HcclGroupStart"),
                group_end: lib.optional("HcclGroupEnd"),
            }
        };
        Ok(Hccl { f, lib })
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        &self.lib.path
    }

    fn check(&self, call: &'static str, r: Res) -> Result<(), VendorError> {
        if r == 0 {
            return Ok(());
        }
        let name = usize::try_from(r)
            .ok()
            .and_then(|i| RESULT_NAMES.get(i))
            .map_or_else(|| format!("HcclResult {r}"), |n| n.to_string());
        let message = match self.f.get_error_string {
            // SAFETY: returns a NUL-terminated string owned by HCCL (or null).
            Some(g) => unsafe { c_text(g(r), "no message") },
            None => "this HCCL has no error strings".into(),
        };
        Err(VendorError::Call {
            library: LIBRARY,
            call,
            code: i64::from(r),
            name,
            message,
        })
    }

    /// A fresh root info (`HcclGetRootInfo`), made by rank 0.
    pub fn root_info(&self) -> Result<HcclRootInfo, VendorError> {
        let mut info = HcclRootInfo {
            internal: [0; ROOT_INFO_BYTES],
        };
        // SAFETY: writes one HcclRootInfo.
        let r = unsafe { (self.f.get_root_info)(&mut info) };
        self.check("HcclGetRootInfo", r)?;
        Ok(info)
    }

    /// `HcclGroupStart`, where this HCCL has it (else the calls run one by one).
    pub fn group_start(&self) -> Result<bool, VendorError> {
        let Some(g) = self.f.group_start else {
            return Ok(false);
        };
        // SAFETY: no arguments.
        self.check("HcclGroupStart", unsafe { g() })?;
        Ok(true)
    }

    /// `HcclGroupEnd`, where this HCCL has it.
    pub fn group_end(&self) -> Result<bool, VendorError> {
        let Some(g) = self.f.group_end else {
            return Ok(false);
        };
        // SAFETY: no arguments.
        self.check("HcclGroupEnd", unsafe { g() })?;
        Ok(true)
    }
}

/// One HCCL communicator; destroyed on drop.
pub struct HcclComm {
    hccl: Arc<Hccl>,
    comm: RawComm,
}

// SAFETY: an HCCL communicator may be used from any thread, one at a time (not `Sync`).
unsafe impl Send for HcclComm {}

impl HcclComm {
    /// `HcclCommInitRootInfo`: rank `rank` of `world`, from rank 0's root info.
    pub fn init_root_info(
        hccl: Arc<Hccl>,
        world: usize,
        info: &HcclRootInfo,
        rank: usize,
    ) -> Result<HcclComm, VendorError> {
        let n = u32::try_from(world).unwrap_or(u32::MAX);
        let r = u32::try_from(rank).unwrap_or(u32::MAX);
        let mut comm: RawComm = std::ptr::null_mut();
        // SAFETY: reads one HcclRootInfo, writes one HcclComm.
        let res = unsafe { (hccl.f.comm_init_root_info)(n, info, r, &mut comm) };
        hccl.check("HcclCommInitRootInfo", res)?;
        Ok(HcclComm { hccl, comm })
    }

    /// The communicator's rank and size as HCCL sees them.
    pub fn rank_and_size(&self) -> Result<(usize, usize), VendorError> {
        let (mut rank, mut n) = (0u32, 0u32);
        // SAFETY: each writes one u32 for a live communicator.
        let r = unsafe { (self.hccl.f.get_rank_id)(self.comm, &mut rank) };
        self.hccl.check("HcclGetRankId", r)?;
        // SAFETY: as above.
        let r = unsafe { (self.hccl.f.get_rank_size)(self.comm, &mut n) };
        self.hccl.check("HcclGetRankSize", r)?;
        Ok((rank as usize, n as usize))
    }

    /// `HcclGetCommAsyncError`, polled: `Ok(())`, or the asynchronous error.
    pub fn async_error(&self) -> Result<(), VendorError> {
        let mut e: Res = 0;
        // SAFETY: writes one HcclResult for a live communicator.
        let r = unsafe { (self.hccl.f.get_comm_async_error)(self.comm, &mut e) };
        self.hccl.check("HcclGetCommAsyncError", r)?;
        self.hccl.check("HcclGetCommAsyncError", e)
    }

    /// Ends the communicator now. HCCL has no abort call: it is destroyed, which HCCL's
    /// `HCCL_EXEC_TIMEOUT` bounds when a peer is gone.
    pub fn abort(mut self) -> Result<(), VendorError> {
        let comm = std::mem::replace(&mut self.comm, std::ptr::null_mut());
        // SAFETY: a live communicator, destroyed once (the handle is cleared for drop).
        let r = unsafe { (self.hccl.f.comm_destroy)(comm) };
        self.hccl.check("HcclCommDestroy", r)
    }

    /// `HcclAllReduce` of `count` elements queued on `stream`.
    ///
    /// # Safety
    /// `send` and `recv` are device buffers of `count` elements of `dt`, valid until the
    /// stream reaches the call; `stream` is a live stream of the communicator's device.
    pub unsafe fn all_reduce(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let (t, o) = (dtype(dt)?, red_op(op)?);
        // SAFETY: the caller's contract (HCCL takes a mutable send pointer it only reads).
        let r = unsafe {
            (self.hccl.f.all_reduce)(send as *mut _, recv, count as u64, t, o, self.comm, stream)
        };
        self.hccl.check("HcclAllReduce", r)
    }

    /// `HcclAllGather`: `count` elements from each rank into `recv` (world × count).
    ///
    /// # Safety
    /// As [`HcclComm::all_reduce`], with `recv` of world × `count` elements.
    pub unsafe fn all_gather(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dt: DataType,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let t = dtype(dt)?;
        // SAFETY: the caller's contract.
        let r = unsafe {
            (self.hccl.f.all_gather)(send as *mut _, recv, count as u64, t, self.comm, stream)
        };
        self.hccl.check("HcclAllGather", r)
    }

    /// `HcclReduceScatter`: `send` of world × `count` elements, this rank's reduced `count`
    /// into `recv`.
    ///
    /// # Safety
    /// As [`HcclComm::all_reduce`], with `send` of world × `count` elements.
    pub unsafe fn reduce_scatter(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let (t, o) = (dtype(dt)?, red_op(op)?);
        // SAFETY: the caller's contract.
        let r = unsafe {
            (self.hccl.f.reduce_scatter)(
                send as *mut _,
                recv,
                count as u64,
                t,
                o,
                self.comm,
                stream,
            )
        };
        self.hccl.check("HcclReduceScatter", r)
    }

    /// `HcclBroadcast` of `buf` (in place, as HCCL broadcasts) from `root`.
    ///
    /// # Safety
    /// As [`HcclComm::all_reduce`].
    pub unsafe fn broadcast(
        &self,
        buf: *mut c_void,
        count: usize,
        dt: DataType,
        root: usize,
        stream: RawStream,
    ) -> Result<(), VendorError> {
        let t = dtype(dt)?;
        let root = u32::try_from(root).unwrap_or(u32::MAX);
        // SAFETY: the caller's contract.
        let r = unsafe { (self.hccl.f.broadcast)(buf, count as u64, t, root, self.comm, stream) };
        self.hccl.check("HcclBroadcast", r)
    }
}

impl Drop for HcclComm {
    fn drop(&mut self) {
        if !self.comm.is_null() {
            // SAFETY: a live communicator, destroyed once. An error here has no one to go to.
            let _ = unsafe { (self.hccl.f.comm_destroy)(self.comm) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_table_is_hccl_s_not_nccl_s() {
        assert_eq!(dtype(DataType::F32).unwrap(), 4);
        assert_eq!(dtype(DataType::U8).unwrap(), 7);
        assert_eq!(dtype(DataType::BF16).unwrap(), 11);
        assert!(dtype(DataType::F8E4M3).is_err());
        // Every other type maps, and no two to the same code.
        let codes: Vec<i32> = DataType::ALL
            .iter()
            .filter_map(|&d| dtype(d).ok())
            .collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
        assert_eq!(codes.len(), 10);
        assert!(red_op(ReduceOp::Avg).is_err());
        assert_eq!(red_op(ReduceOp::Min).unwrap(), 3);
    }
}
