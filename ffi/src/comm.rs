//! Communicator lifecycle: version, unique id, init, split, destroy, abort, queries, errors.

use std::os::raw::{c_char, c_int};

use fc::{Communicator, Config, UniqueId};

use crate::boundary::{code_of, guard, last_error_ptr, non_negative, write_out, Failure};
use crate::group;
use crate::registry;
use crate::types::fcResult_t::{self, *};
use crate::types::*;

/// Writes the library version, `FC_VERSION_CODE` (major × 10000 + minor × 100 + patch), to
/// `*version`.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `version` must be NULL (refused) or valid for a write of an `int`.
#[no_mangle]
pub unsafe extern "C" fn fcGetVersion(version: *mut c_int) -> fcResult_t {
    // SAFETY: the caller's contract on `version`.
    guard("fcGetVersion", || unsafe {
        write_out(version, "version", FC_VERSION_CODE)
    })
}

/// Makes a new unique id and starts serving its rendezvous store in this process (on the
/// interface named by `FERROCOLL_SOCKET_IFNAME`, else the first non-loopback one, at a free
/// port). Call it once per job, in one process (normally rank 0's), and hand the id to every
/// rank's `fcCommInitRank`. The store lives until rank 0's communicator made from this id in
/// this process is destroyed, or until the process exits if rank 0 runs elsewhere. An id
/// serves one job: after a failed init, make a new one (as with NCCL).
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `uniqueId` must be NULL (refused) or valid for a write of an `fcUniqueId`.
#[no_mangle]
pub unsafe extern "C" fn fcGetUniqueId(uniqueId: *mut fcUniqueId) -> fcResult_t {
    guard("fcGetUniqueId", || {
        if uniqueId.is_null() {
            return Err(Failure::arg("uniqueId is NULL"));
        }
        let id = UniqueId::new(&Config::from_env()?)?;
        let mut out = fcUniqueId {
            internal: [0; FC_UNIQUE_ID_BYTES],
        };
        for (o, b) in out.internal.iter_mut().zip(id.to_bytes()) {
            *o = b as c_char;
        }
        // SAFETY: non-null, and valid for writes by the caller's contract.
        unsafe { write_out(uniqueId, "uniqueId", out) }
    })
}

pub(crate) fn refuse_in_group(what: &str) -> Result<(), Failure> {
    if group::active() {
        return Err(Failure::usage(format!(
            "{what} is not supported inside fcGroupStart/fcGroupEnd (initialise each rank on its own thread)"
        )));
    }
    Ok(())
}

/// Creates rank `rank` of a communicator of `nranks` ranks that meet through `commId` (from
/// `fcGetUniqueId`). Every rank calls it with the same id and `nranks`; it blocks until all
/// have arrived and their links are connected, or fails after `FERROCOLL_TIMEOUT`. The other
/// `FERROCOLL_*` variables configure the communicator. On failure `*comm` is set to NULL.
///
/// Inside a group (as in NCCL, for one thread that drives several ranks) the arguments are
/// checked at once and `*comm` receives its handle, but the communicator is created at
/// `fcGroupEnd` (the group's inits run concurrently); use the handle only after that.
///
/// Thread safety: safe from any thread; several ranks of one job may be initialised by
/// different threads of one process at once, or by one thread inside a group.
///
/// # Safety
/// `comm` must be NULL (refused) or valid for a write of an `fcComm_t`.
#[no_mangle]
pub unsafe extern "C" fn fcCommInitRank(
    comm: *mut fcComm_t,
    nranks: c_int,
    commId: fcUniqueId,
    rank: c_int,
) -> fcResult_t {
    guard("fcCommInitRank", || {
        if comm.is_null() {
            return Err(Failure::arg("comm is NULL"));
        }
        // SAFETY: non-null, valid for writes (contract): cleared first so a failure leaves NULL.
        unsafe { comm.write(std::ptr::null_mut()) };
        let world = non_negative(nranks, "nranks")?;
        let r = non_negative(rank, "rank")?;
        if world == 0 || r >= world {
            return Err(Failure::arg(format!(
                "rank {rank} is not in 0..nranks ({nranks})"
            )));
        }
        let mut bytes = [0u8; FC_UNIQUE_ID_BYTES];
        for (b, c) in bytes.iter_mut().zip(commId.internal) {
            *b = c as u8;
        }
        let id = UniqueId::from_bytes(&bytes)?;
        let cfg = Config::from_env()?;
        let make = move || Communicator::from_unique_id(&id, r, world, cfg);
        let handle = if group::active() {
            let h = registry::reserve();
            group::push_init(h, Box::new(make));
            h
        } else {
            registry::insert(make()?)
        };
        // SAFETY: as above.
        unsafe { comm.write(handle) };
        Ok(())
    })
}

/// Creates this process's communicator from launcher variables, as the Rust
/// `Communicator::from_env`: `FERROCOLL_RANK`/`FERROCOLL_WORLD_SIZE`/`FERROCOLL_STORE`,
/// torchrun's, Open MPI's, PMI's or Slurm's (rank 0 serves the store). Blocks until every
/// rank has arrived. On failure `*comm` is set to NULL.
///
/// Thread safety: safe from any thread. Not allowed inside a group (`fcInvalidUsage`): the
/// environment describes one rank.
///
/// # Safety
/// `comm` must be NULL (refused) or valid for a write of an `fcComm_t`.
#[no_mangle]
pub unsafe extern "C" fn fcCommInitFromEnv(comm: *mut fcComm_t) -> fcResult_t {
    // SAFETY: the caller's contract on `comm`.
    unsafe { init_into(comm, "fcCommInitFromEnv", || Ok(Communicator::from_env()?)) }
}

/// Runs `make` and stores the new communicator's handle (or NULL) in `*out`.
///
/// # Safety
/// `out` must be NULL or valid for a write of an `fcComm_t`.
pub(crate) unsafe fn init_into(
    out: *mut fcComm_t,
    name: &str,
    make: impl FnOnce() -> Result<Communicator, Failure>,
) -> fcResult_t {
    guard(name, || {
        if out.is_null() {
            return Err(Failure::arg("comm is NULL"));
        }
        // SAFETY: non-null, valid for writes (contract): cleared first so a failure leaves NULL.
        unsafe { out.write(std::ptr::null_mut()) };
        refuse_in_group(name)?;
        let handle = registry::insert(make()?);
        // SAFETY: as above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Splits `comm` (NCCL's `ncclCommSplit`): every rank of `comm` calls it, in the same order as
/// its collectives; ranks with the same `color` (≥ 0) form a new communicator, ordered by
/// `key` then by rank in `comm`. A rank passing `FC_SPLIT_NOCOLOR` joins none and gets
/// `*newcomm = NULL`. The children meet through `comm`'s rendezvous store.
///
/// Thread safety: as a collective on `comm`. Not allowed inside a group (`fcInvalidUsage`).
///
/// # Safety
/// `newcomm` must be NULL (refused) or valid for a write of an `fcComm_t`.
#[no_mangle]
pub unsafe extern "C" fn fcCommSplit(
    comm: fcComm_t,
    color: c_int,
    key: c_int,
    newcomm: *mut fcComm_t,
) -> fcResult_t {
    guard("fcCommSplit", || {
        if newcomm.is_null() {
            return Err(Failure::arg("newcomm is NULL"));
        }
        // SAFETY: non-null, valid for writes (contract).
        unsafe { newcomm.write(std::ptr::null_mut()) };
        let c = registry::get(comm)?;
        refuse_in_group("fcCommSplit")?;
        let color = match color {
            FC_SPLIT_NOCOLOR => None,
            c if c >= 0 => Some(c as u32),
            c => {
                return Err(Failure::arg(format!(
                    "color {c} is negative (use FC_SPLIT_NOCOLOR = -1 to join no communicator)"
                )))
            }
        };
        if let Some(child) = c.split_by(color, key)? {
            let h = registry::insert(child);
            // SAFETY: as above.
            unsafe { newcomm.write(h) };
        }
        Ok(())
    })
}

/// Destroys `comm` after the calls in progress on it finish (bounded by `FERROCOLL_TIMEOUT`)
/// and closes its links. The handle is dead afterwards: using it gives `fcInvalidUsage`.
///
/// Thread safety: safe from any thread; a call running on `comm` in another thread finishes
/// first (the communicator is freed when it returns).
#[no_mangle]
pub extern "C" fn fcCommDestroy(comm: fcComm_t) -> fcResult_t {
    guard("fcCommDestroy", || {
        drop(registry::remove(comm)?);
        crate::compress::forget(comm);
        crate::device::forget(comm, false);
        crate::redop::forget(comm);
        Ok(())
    })
}

/// Aborts `comm`: the call in progress on it (in any thread) and any later one fail, its
/// links close so the peers learn of it, and the handle is destroyed. Never blocks on peers.
///
/// Thread safety: safe from any thread, at any time (that is its purpose).
#[no_mangle]
pub extern "C" fn fcCommAbort(comm: fcComm_t) -> fcResult_t {
    guard("fcCommAbort", || {
        let c = registry::remove(comm)?;
        c.abort();
        crate::compress::forget(comm);
        crate::device::forget(comm, true);
        crate::redop::forget(comm);
        Ok(())
    })
}

/// Writes to `*asyncError` the failure that stopped `comm` (a peer failure, a timeout, an
/// abort seen by this rank), or `fcSuccess` while it is healthy.
///
/// Thread safety: safe from any thread, also while a call runs on `comm`.
///
/// # Safety
/// `asyncError` must be NULL (refused) or valid for a write of an `fcResult_t`.
#[no_mangle]
pub unsafe extern "C" fn fcCommGetAsyncError(
    comm: fcComm_t,
    asyncError: *mut fcResult_t,
) -> fcResult_t {
    guard("fcCommGetAsyncError", || {
        let c = registry::get(comm)?;
        let code = match c.failure() {
            Some(e) => code_of(e.kind()),
            // The vendor's own asynchronous error, when device calls have run.
            None => crate::device::async_error(comm).map_or_else(|f| f.code, |()| fcSuccess),
        };
        // SAFETY: the caller's contract on `asyncError`.
        unsafe { write_out(asyncError, "asyncError", code) }
    })
}

/// Writes the number of ranks of `comm` to `*count`.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `count` must be NULL (refused) or valid for a write of an `int`.
#[no_mangle]
pub unsafe extern "C" fn fcCommCount(comm: fcComm_t, count: *mut c_int) -> fcResult_t {
    guard("fcCommCount", || {
        let n = registry::get(comm)?.world_size();
        let n = c_int::try_from(n).map_err(|_| Failure::arg("world too large for an int"))?;
        // SAFETY: the caller's contract on `count`.
        unsafe { write_out(count, "count", n) }
    })
}

/// Writes this rank's number in `comm` to `*rank`.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `rank` must be NULL (refused) or valid for a write of an `int`.
#[no_mangle]
pub unsafe extern "C" fn fcCommUserRank(comm: fcComm_t, rank: *mut c_int) -> fcResult_t {
    guard("fcCommUserRank", || {
        let r = registry::get(comm)?.rank();
        let r = c_int::try_from(r).map_err(|_| Failure::arg("rank too large for an int"))?;
        // SAFETY: the caller's contract on `rank`.
        unsafe { write_out(rank, "rank", r) }
    })
}

/// A static, NUL-terminated description of a result code (`"unknown result code"` for a
/// value that is none).
///
/// Thread safety: safe from any thread; the string is never freed.
#[no_mangle]
pub extern "C" fn fcGetErrorString(result: c_int) -> *const c_char {
    // Cannot panic (a match on constants), so no panic boundary is needed.
    let s: &'static [u8] = match result {
        0 => b"no error\0",
        7002 => b"unhandled system error (a resource, a link or an abort)\0",
        7003 => b"internal error - please report this issue to the ferrocoll developers\0",
        7004 => b"invalid argument\0",
        7005 => b"invalid usage\0",
        7006 => b"remote process exited or there was a network error\0",
        7007 => b"operation in progress\0",
        7100 => b"timeout: no progress within FERROCOLL_TIMEOUT\0",
        _ => b"unknown result code\0",
    };
    s.as_ptr().cast()
}

/// The message of the last failed call on this thread (what failed and why, with the
/// causes), or `""` if none failed yet. `comm` is not used (NULL is fine), as in NCCL.
///
/// Thread safety: per thread. The string stays valid until the next failing call on the
/// same thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn fcGetLastError(comm: fcComm_t) -> *const c_char {
    let _ = comm;
    // Cannot panic: the thread-local is read with `try_with`/`try_borrow`.
    last_error_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_strings_cover_every_code() {
        let codes = [
            fcSuccess,
            fcSystemError,
            fcInternalError,
            fcInvalidArgument,
            fcInvalidUsage,
            fcRemoteError,
            fcInProgress,
            fcTimeout,
        ];
        let unknown = fcGetErrorString(1);
        for c in codes {
            let p = fcGetErrorString(c as c_int);
            assert_ne!(p, unknown, "{c:?} has no string");
        }
        // SAFETY: fcGetErrorString returns static NUL-terminated strings.
        let s = unsafe { std::ffi::CStr::from_ptr(unknown) };
        assert_eq!(s.to_str().unwrap(), "unknown result code");
    }
}
