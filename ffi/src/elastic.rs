//! Surviving failures, NCCL's way: `fcCommRevoke` (`ncclCommRevoke`), `fcCommShrink`
//! (`ncclCommShrink`, with an exclusion list or, given none, the survivors the ranks agree
//! on), and growing back: `fcCommJoinersWaiting` and `fcCommGrow` on the members,
//! `fcCommJoin` in a replacement process.
//!
//! A failed peer is found by the communicator's heartbeat detector
//! (`FERROCOLL_HEARTBEAT_TIMEOUT`, 3 s by default), which revokes the communicator on every
//! survivor: their pending and later calls return `fcRemoteError` with a last-error message
//! that says "communicator revoked". The new communicators meet through the job's store,
//! which must outlive the failure: a directory (`FERROCOLL_STORE=file:DIR`) or an external
//! server, not one served by the process that failed.

use std::os::raw::{c_int, c_void};

use fc::Communicator;

use crate::boundary::{guard, non_negative, write_out, Failure};
use crate::comm::{init_into, refuse_in_group};
use crate::registry;
use crate::types::*;

/// Revokes `comm` on every rank (NCCL's `ncclCommRevoke`): the call in progress on it (in
/// any thread) and every later one fail with `fcRemoteError` ("communicator revoked"), on
/// this rank at once and on the others within the heartbeat period. Never blocks. The handle
/// stays valid: make a communicator of the survivors with `fcCommShrink`, then destroy it.
/// `revokeFlags` must be `FC_REVOKE_DEFAULT` (0); any other value is `fcInvalidArgument`.
///
/// Thread safety: safe from any thread, at any time.
#[no_mangle]
pub extern "C" fn fcCommRevoke(comm: fcComm_t, revokeFlags: c_int) -> fcResult_t {
    guard("fcCommRevoke", || {
        let c = registry::get(comm)?;
        if revokeFlags != FC_REVOKE_DEFAULT {
            return Err(Failure::arg(format!(
                "revokeFlags {revokeFlags} is not FC_REVOKE_DEFAULT (0)"
            )));
        }
        c.revoke();
        Ok(())
    })
}

/// The exclusion list of `fcCommShrink`, checked against a world of `world` ranks.
///
/// # Safety
/// `ranks` must be NULL or valid for reads of `n` `int`s when `0 < n <= world`.
unsafe fn exclusion_list(
    ranks: *const c_int,
    n: c_int,
    world: usize,
) -> Result<Vec<usize>, Failure> {
    let n = non_negative(n, "nExclude")?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if ranks.is_null() {
        return Err(Failure::arg(format!(
            "excludeRanks is NULL but nExclude is {n}"
        )));
    }
    if n > world {
        return Err(Failure::arg(format!(
            "nExclude {n} is more than the {world} ranks of the communicator"
        )));
    }
    // SAFETY: non-null, and valid for `n` reads by the caller's contract.
    let given = unsafe { std::slice::from_raw_parts(ranks, n) };
    let mut out = Vec::with_capacity(n);
    for (i, &r) in given.iter().enumerate() {
        let r = usize::try_from(r)
            .ok()
            .filter(|&r| r < world)
            .ok_or_else(|| {
                Failure::arg(format!(
                    "excludeRanks[{i}] = {r} is not a rank of the communicator (0..{world})"
                ))
            })?;
        if out.contains(&r) {
            return Err(Failure::arg(format!("excludeRanks lists rank {r} twice")));
        }
        out.push(r);
    }
    Ok(out)
}

/// Makes a communicator of part of `comm` (NCCL's `ncclCommShrink`); `*newcomm` receives it,
/// or NULL on failure.
///
/// - `nExclude == 0` (`excludeRanks` may then be NULL): after a failure, every rank that is
///   still alive calls it; `comm` is revoked if it was not, the survivors agree on who is
///   alive, and the new communicator spans them (new ranks are dense, in the old ranks'
///   order). A member that fails meanwhile is left out too.
/// - `nExclude > 0`: every rank of `comm` except the `nExclude` ranks of `excludeRanks` calls
///   it, each with the same list; they form the new communicator. Callers with different
///   lists all get `fcInvalidUsage`.
///
/// `shrinkFlags`: `FC_SHRINK_DEFAULT`, or `FC_SHRINK_ABORT` to revoke `comm` first, so that
/// calls still running on it (in other threads, and on the other ranks) fail at once. `config`
/// must be NULL: this ABI has no configuration struct, and the new communicator takes
/// `comm`'s settings (from the `FERROCOLL_*` variables).
///
/// Errors: `fcInvalidArgument` for a NULL `newcomm`, a non-NULL `config`, unknown flags, a
/// negative `nExclude`, a NULL list with `nExclude > 0`, a rank listed twice or out of range;
/// `fcRemoteError` when this rank is excluded (it lists itself, or the survivors agreed
/// without it: the message says "left out of the survivors"); `fcInvalidUsage` inside a
/// group, for mismatched lists, or for a communicator without a store or failure detector.
/// `comm` stays valid either way: destroy it when done.
///
/// Thread safety: as a collective on `comm`. Not allowed inside a group.
///
/// # Safety
/// `newcomm` must be NULL (refused) or valid for a write of an `fcComm_t`; `excludeRanks`
/// must be NULL or valid for reads of `nExclude` `int`s.
#[no_mangle]
pub unsafe extern "C" fn fcCommShrink(
    comm: fcComm_t,
    excludeRanks: *const c_int,
    nExclude: c_int,
    newcomm: *mut fcComm_t,
    config: *mut c_void,
    shrinkFlags: c_int,
) -> fcResult_t {
    guard("fcCommShrink", || {
        if newcomm.is_null() {
            return Err(Failure::arg("newcomm is NULL"));
        }
        // SAFETY: non-null, valid for writes (contract): cleared first so a failure leaves NULL.
        unsafe { newcomm.write(std::ptr::null_mut()) };
        let c = registry::get(comm)?;
        if !config.is_null() {
            return Err(Failure::arg(
                "config must be NULL (the new communicator takes comm's settings)",
            ));
        }
        if shrinkFlags != FC_SHRINK_DEFAULT && shrinkFlags != FC_SHRINK_ABORT {
            return Err(Failure::arg(format!(
                "shrinkFlags {shrinkFlags} is neither FC_SHRINK_DEFAULT (0) nor FC_SHRINK_ABORT (1)"
            )));
        }
        // SAFETY: the caller's contract on `excludeRanks`.
        let exclude = unsafe { exclusion_list(excludeRanks, nExclude, c.world_size())? };
        refuse_in_group("fcCommShrink")?;
        if shrinkFlags == FC_SHRINK_ABORT {
            c.revoke();
        }
        let child = if exclude.is_empty() {
            c.shrink()?
        } else {
            c.shrink_excluding(&exclude)?
        };
        let h = registry::insert(child);
        // SAFETY: as above.
        unsafe { newcomm.write(h) };
        Ok(())
    })
}

/// Writes to `*count` how many replacement processes wait to join (`fcCommJoin`) the job of
/// `comm`. Each rank reads the store on its own, so ranks may see different numbers: agree
/// on one (e.g. an `fcAllReduce` with `fcMax`) before every rank calls `fcCommGrow`.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `count` must be NULL (refused) or valid for a write of an `int`.
#[no_mangle]
pub unsafe extern "C" fn fcCommJoinersWaiting(comm: fcComm_t, count: *mut c_int) -> fcResult_t {
    guard("fcCommJoinersWaiting", || {
        if count.is_null() {
            return Err(Failure::arg("count is NULL"));
        }
        let n = registry::get(comm)?.joiners_waiting()?;
        let n = c_int::try_from(n).unwrap_or(c_int::MAX);
        // SAFETY: the caller's contract on `count`.
        unsafe { write_out(count, "count", n) }
    })
}

/// Admits the replacement processes waiting to join (`fcCommJoin`), collectively: every rank
/// of `comm` calls it at the same point of its program. `*newcomm` receives a communicator of
/// `comm`'s ranks (same numbers) followed by the replacements, or NULL when nobody was waiting
/// (then on every rank: the admission is decided once, in the store). Unlike NCCL's
/// `ncclCommGrow`, no unique id is passed: the replacements meet the members through the
/// job's store. Sending them the training state is the program's part (e.g. `fcBroadcast`).
///
/// Thread safety: as a collective on `comm`. Not allowed inside a group.
///
/// # Safety
/// `newcomm` must be NULL (refused) or valid for a write of an `fcComm_t`.
#[no_mangle]
pub unsafe extern "C" fn fcCommGrow(comm: fcComm_t, newcomm: *mut fcComm_t) -> fcResult_t {
    guard("fcCommGrow", || {
        if newcomm.is_null() {
            return Err(Failure::arg("newcomm is NULL"));
        }
        // SAFETY: non-null, valid for writes (contract).
        unsafe { newcomm.write(std::ptr::null_mut()) };
        let c = registry::get(comm)?;
        refuse_in_group("fcCommGrow")?;
        if let Some(child) = c.grow()? {
            let h = registry::insert(child);
            // SAFETY: as above.
            unsafe { newcomm.write(h) };
        }
        Ok(())
    })
}

/// A replacement process joins a running job: it finds the job's store in `FERROCOLL_STORE`
/// (and the other `FERROCOLL_*` variables, the secret included, as the members had them),
/// waits up to `FERROCOLL_TIMEOUT` for the members' `fcCommGrow`, and receives its rank of the
/// grown communicator in `*newcomm` (NULL on failure).
///
/// Thread safety: safe from any thread. Not allowed inside a group.
///
/// # Safety
/// `newcomm` must be NULL (refused) or valid for a write of an `fcComm_t`.
#[no_mangle]
pub unsafe extern "C" fn fcCommJoin(newcomm: *mut fcComm_t) -> fcResult_t {
    // SAFETY: the caller's contract on `newcomm`.
    unsafe { init_into(newcomm, "fcCommJoin", || Ok(Communicator::join_from_env()?)) }
}
