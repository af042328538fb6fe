//! Gather and scatter (NCCL 2.28's `ncclGather`/`ncclScatter` shape) and the uneven
//! collectives, which NCCL lacks: `fcAllGatherV`, `fcReduceScatterV` and `fcAllToAllV`
//! (`MPI_Allgatherv`, `MPI_Reduce_scatter`, `MPI_Alltoallv` with the `fc` call shape).
//!
//! The uneven collectives take their per-rank counts and displacements as arrays of
//! `nranks` `int64_t` elements (counts and displacements in elements, as torch's split
//! sizes). A NULL counts array, a negative entry, an array entry whose block ends past what
//! can be addressed, two non-empty blocks of one buffer that overlap, and all-gather-v's
//! `sendcount != recvcounts[rank]` are refused with `fcInvalidArgument` and a message naming
//! the array and the entry. A NULL displacement array means the blocks are packed in rank
//! order. Every call checks and runs (or queues inside a group) like the collectives of
//! `coll.rs`; with a non-NULL stream they are refused (`fcInvalidUsage`): they run on host
//! buffers.

use std::ffi::c_void;
use std::os::raw::c_int;

use fc::{Collective, RawExtra, Uneven};

use crate::boundary::{guard, Failure};
use crate::coll::{issue, Args};
use crate::registry;
use crate::types::*;

/// `nranks` entries of a C `int64_t` array as element counts or displacements; `None` for a
/// NULL array.
///
/// # Safety
/// `p` must be NULL or valid for reads of `n` `int64_t`s.
unsafe fn array(
    p: *const i64,
    n: usize,
    name: &'static str,
) -> Result<Option<Vec<usize>>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null and valid for `n` elements by the caller's contract.
    let s = unsafe { std::slice::from_raw_parts(p, n) };
    s.iter()
        .enumerate()
        .map(|(i, &v)| {
            usize::try_from(v).map_err(|_| Failure::arg(format!("{name}[{i}] is negative ({v})")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// [`array`] for a counts array, which may not be NULL.
///
/// # Safety
/// As for [`array`].
unsafe fn counts(p: *const i64, n: usize, name: &'static str) -> Result<Vec<usize>, Failure> {
    // SAFETY: forwarded contract.
    unsafe { array(p, n, name) }?.ok_or_else(|| Failure::arg(format!("{name} is NULL")))
}

/// The layout of one block per rank from `recvcounts` and `displs` (NULL: packed).
///
/// # Safety
/// As [`array`], for both arrays.
unsafe fn blocks(recvcounts: *const i64, displs: *const i64, p: usize) -> Result<Uneven, Failure> {
    // SAFETY: forwarded contract.
    let (c, d) = unsafe {
        (
            counts(recvcounts, p, "recvcounts")?,
            array(displs, p, "displs")?,
        )
    };
    Ok(Uneven::blocks(p, &c, d.as_deref())?)
}

/// Runs the uneven call `a` whose layout `layout` builds from the communicator's size, inside
/// the panic boundary (a bad array is reported like any other bad argument).
///
/// # Safety
/// As for `coll::issue`, and the arrays `layout` reads valid for `nranks` elements.
unsafe fn issue_uneven(
    name: &str,
    comm: fcComm_t,
    stream: *mut c_void,
    mut a: Args,
    layout: impl FnOnce(usize) -> Result<Uneven, Failure>,
) -> fcResult_t {
    let r = guard(name, || {
        let world = registry::get(comm)?.world_size();
        a.extra = RawExtra::uneven(layout(world)?);
        Ok(())
    });
    if r != fcResult_t::fcSuccess {
        return r;
    }
    // SAFETY: forwarded contract.
    unsafe { issue(name, comm, stream, a) }
}

/// Gather: rank `root`'s `recvbuff` (`nranks × count` elements) becomes every rank's
/// `sendbuff` (`count` elements) in rank order; `recvbuff` is only written on the root and
/// may be NULL elsewhere. In place when, on the root, `sendbuff == recvbuff + root * count`.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// `sendbuff` must be valid for reads of `count` elements, and on the root `recvbuff` for
/// writes of `nranks × count`, until the call returns (inside a group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcGather(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: fcDataType_t,
    root: c_int,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::Gather,
        send: sendbuff,
        recv: recvbuff,
        count,
        datatype,
        op: None,
        root: Some(root),
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract.
    unsafe { issue("fcGather", comm, stream, a) }
}

/// Scatter: every rank's `recvbuff` (`count` elements) becomes block `rank` of rank `root`'s
/// `sendbuff` (`nranks × count` elements, only read on the root and may be NULL elsewhere).
/// In place when, on the root, `recvbuff == sendbuff + root * count`.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// On the root `sendbuff` must be valid for reads of `nranks × count` elements, and
/// everywhere `recvbuff` for writes of `count`, until the call returns (inside a group:
/// `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcScatter(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: fcDataType_t,
    root: c_int,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::Scatter,
        send: sendbuff,
        recv: recvbuff,
        count,
        datatype,
        op: None,
        root: Some(root),
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract.
    unsafe { issue("fcScatter", comm, stream, a) }
}

/// All-gather-v: rank `r` contributes `recvcounts[r]` elements (its `sendbuff`, with
/// `sendcount == recvcounts[rank]`), and every rank's `recvbuff` holds them at element
/// `displs[r]` (packed in rank order when `displs` is NULL). Elements of `recvbuff` outside
/// the blocks are not written. In place when `sendbuff == recvbuff + displs[rank]`.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// `recvcounts` and (unless NULL) `displs` must be valid for reads of `nranks` elements;
/// `sendbuff` for reads of `sendcount` elements and `recvbuff` for writes of every block
/// until the call returns (inside a group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcAllGatherV(
    sendbuff: *const c_void,
    sendcount: usize,
    recvbuff: *mut c_void,
    recvcounts: *const i64,
    displs: *const i64,
    datatype: fcDataType_t,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::AllGatherV,
        send: sendbuff,
        recv: recvbuff,
        count: sendcount,
        datatype,
        op: None,
        root: None,
        extra: RawExtra::default(),
    };
    // SAFETY: the caller's contract: `nranks` elements each.
    let layout = |p: usize| unsafe { blocks(recvcounts, displs, p) };
    // SAFETY: forwarded contract.
    unsafe { issue_uneven("fcAllGatherV", comm, stream, a, layout) }
}

/// Reduce-scatter-v: rank `r`'s `recvbuff` (`recvcounts[r]` elements) becomes the reduction
/// (`op`, a premul-sum operator included) of every rank's block `r` of `sendbuff`, which lies
/// at element `displs[r]` (packed in rank order when `displs` is NULL). In place when
/// `recvbuff == sendbuff + displs[rank]`.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// `recvcounts` and (unless NULL) `displs` must be valid for reads of `nranks` elements;
/// `sendbuff` for reads of every block and `recvbuff` for writes of `recvcounts[rank]`
/// elements until the call returns (inside a group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcReduceScatterV(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcounts: *const i64,
    displs: *const i64,
    datatype: fcDataType_t,
    op: fcRedOp_t,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::ReduceScatterV,
        send: sendbuff,
        recv: recvbuff,
        count: 0,
        datatype,
        op: Some(op),
        root: None,
        extra: RawExtra::default(),
    };
    // SAFETY: the caller's contract: `nranks` elements each.
    let layout = |p: usize| unsafe { blocks(recvcounts, displs, p) };
    // SAFETY: forwarded contract.
    unsafe { issue_uneven("fcReduceScatterV", comm, stream, a, layout) }
}

/// All-to-all-v (`MPI_Alltoallv`): this rank sends `sendcounts[j]` elements from element
/// `sdispls[j]` of `sendbuff` to rank `j`, and receives `recvcounts[j]` elements from rank
/// `j` at element `rdispls[j]` of `recvbuff` (packed in rank order where a displacement
/// array is NULL). Rank `j`'s `recvcounts[rank]` must equal this rank's `sendcounts[j]`
/// (different sizes, one of them zero included, are reported by the receiving rank as
/// `fcInvalidUsage`, mismatched calls), and `sendcounts[rank] == recvcounts[rank]`. In place
/// when `sendbuff == recvbuff`, which needs equal send and receive counts and displacements.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// `sendcounts` and `recvcounts`, and unless NULL `sdispls` and `rdispls`, must be valid for
/// reads of `nranks` elements; `sendbuff` for reads of every send block and `recvbuff` for
/// writes of every receive block until the call returns (inside a group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcAllToAllV(
    sendbuff: *const c_void,
    sendcounts: *const i64,
    sdispls: *const i64,
    recvbuff: *mut c_void,
    recvcounts: *const i64,
    rdispls: *const i64,
    datatype: fcDataType_t,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::AllToAllV,
        send: sendbuff,
        recv: recvbuff,
        count: 0,
        datatype,
        op: None,
        root: None,
        extra: RawExtra::default(),
    };
    let layout = |p: usize| {
        // SAFETY: the caller's contract: `nranks` elements each.
        let (sc, sd, rc, rd) = unsafe {
            (
                counts(sendcounts, p, "sendcounts")?,
                array(sdispls, p, "sdispls")?,
                counts(recvcounts, p, "recvcounts")?,
                array(rdispls, p, "rdispls")?,
            )
        };
        Ok(Uneven::all_to_all(
            p,
            &sc,
            sd.as_deref(),
            &rc,
            rd.as_deref(),
        )?)
    };
    // SAFETY: forwarded contract.
    unsafe { issue_uneven("fcAllToAllV", comm, stream, a, layout) }
}
