//! The collectives and point-to-point calls.
//!
//! Every call checks its handle, stream, data type, operator, ranks and count here, then
//! either runs at once (blocking until this rank's part is done) or, inside
//! `fcGroupStart`/`fcGroupEnd`, is queued for `fcGroupEnd`. With `stream` NULL buffers are
//! host memory unless the runtime finds them on the device; with a stream they are device
//! memory (`FERROCOLL_DEVICE`, see `device.rs`). In-place calls pass NCCL's pointers:
//! `sendbuff == recvbuff`, or for all-gather `sendbuff == recvbuff + rank * sendcount`, for
//! reduce-scatter `recvbuff == sendbuff + rank * recvcount` (elements).

use std::ffi::c_void;
use std::os::raw::c_int;

use fc::{Collective, DataType, RawCall, RawExtra, ReduceOp};

use crate::boundary::{guard, non_negative, Failure};
use crate::group;
use crate::registry;
use crate::types::fcResult_t;
use crate::types::*;

/// One call as the C caller gave it.
pub(crate) struct Args {
    pub(crate) kind: Collective,
    pub(crate) send: *const c_void,
    pub(crate) recv: *mut c_void,
    pub(crate) count: usize,
    pub(crate) datatype: fcDataType_t,
    /// The operator, for the calls that reduce.
    pub(crate) op: Option<fcRedOp_t>,
    /// The root (broadcast, reduce, gather, scatter) or the peer (send, recv).
    pub(crate) root: Option<c_int>,
    /// The uneven collectives' layout (the premul-sum scalar is found from `op`).
    pub(crate) extra: RawExtra,
}

/// Checks `a` and runs it (or queues it inside a group).
///
/// # Safety
/// The buffers must be valid for the reads and writes the collective makes on this rank
/// (`count` elements, scaled by the number of ranks where the collective says so) until the
/// call returns, or inside a group until `fcGroupEnd` returns.
pub(crate) unsafe fn issue(name: &str, comm: fcComm_t, stream: *mut c_void, a: Args) -> fcResult_t {
    guard(name, || {
        let c = registry::get(comm)?;
        let dtype = DataType::from_code(a.datatype.into())
            .ok_or_else(|| Failure::from(fc::Error::InvalidDataType(a.datatype.into())))?;
        let mut extra = a.extra;
        let op = match a.op {
            Some(o) => match ReduceOp::from_code(o.into()) {
                Some(op) => op,
                // A premul-sum operator of this communicator, made for this data type.
                None => {
                    extra.premul = Some(crate::redop::scalar_of(comm, o, dtype)?);
                    ReduceOp::Sum
                }
            },
            None => ReduceOp::Sum,
        };
        let root = match a.root {
            Some(r) => non_negative(r, "root/peer")?,
            None => 0,
        };
        // The core checks count × element size; the per-rank chunk collectives also scale
        // by the world size, which is checked here first so that it cannot overflow.
        let scale = match a.kind {
            Collective::AllGather
            | Collective::ReduceScatter
            | Collective::AllToAll
            | Collective::Gather
            | Collective::Scatter => c.world_size(),
            _ => 1,
        };
        let fits = a
            .count
            .checked_mul(scale)
            .and_then(|n| n.checked_mul(dtype.size()))
            .is_some_and(|b| b <= isize::MAX as usize);
        if !fits {
            return Err(fc::Error::CountTooLarge(a.count).into());
        }
        let mut output = a.recv;
        if a.kind == Collective::SendRecv && a.send.is_null() {
            // A receive: the core tells a receive by a non-null output, so an empty receive
            // into NULL gets a dangling (never dereferenced) pointer.
            if output.is_null() {
                if a.count > 0 {
                    return Err(fc::Error::NullPointer("recvbuff").into());
                }
                output = std::ptr::NonNull::<u8>::dangling().as_ptr().cast();
            }
        }
        let call = RawCall {
            kind: a.kind,
            input: a.send,
            output,
            count: a.count,
            dtype,
            op,
            root,
        };
        if !stream.is_null() || crate::device::detect(&c, &[call.input, a.recv as *const c_void])? {
            if extra != RawExtra::default() {
                return Err(Failure::usage(format!(
                    "{} on device buffers is not supported yet (premul-sum and the uneven \
                     collectives run on host buffers: pass stream NULL)",
                    a.kind.name()
                )));
            }
            // SAFETY: the caller's contract: device buffers valid until the stream has run
            // (NULL: the default stream).
            return unsafe { crate::device::issue(comm, &c, call, stream) };
        }
        if group::active() {
            group::push(c, call, extra);
            return Ok(());
        }
        // SAFETY: the caller's contract: the buffers are valid for this call until it returns.
        unsafe { c.collective_raw_with(call, &extra) }?;
        Ok(())
    })
}

/// All-reduce: every rank's `recvbuff[0..count]` becomes the reduction (`op`) of all ranks'
/// `sendbuff[0..count]`. In place when `sendbuff == recvbuff`.
///
/// Thread safety: safe from any thread, but calls on one communicator must be made in the
/// same order on every rank: do not call concurrently on one communicator.
///
/// # Safety
/// `sendbuff` must be valid for reads and `recvbuff` for writes of `count` elements of
/// `datatype` until the call returns (inside a group: until `fcGroupEnd` returns).
#[no_mangle]
pub unsafe extern "C" fn fcAllReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: fcDataType_t,
    op: fcRedOp_t,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::AllReduce,
        send: sendbuff,
        recv: recvbuff,
        count,
        datatype,
        op: Some(op),
        root: None,
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract.
    unsafe { issue("fcAllReduce", comm, stream, a) }
}

/// All-gather: `recvbuff` (`nranks × sendcount` elements) becomes every rank's `sendbuff`
/// (`sendcount` elements) in rank order. In place when
/// `sendbuff == recvbuff + rank * sendcount`.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// `sendbuff` must be valid for reads of `sendcount` elements and `recvbuff` for writes of
/// `nranks × sendcount` elements until the call returns (inside a group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcAllGather(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: fcDataType_t,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::AllGather,
        send: sendbuff,
        recv: recvbuff,
        count: sendcount,
        datatype,
        op: None,
        root: None,
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract.
    unsafe { issue("fcAllGather", comm, stream, a) }
}

/// Reduce-scatter: `recvbuff` (`recvcount` elements) becomes block `rank` of the reduction
/// (`op`) of all ranks' `sendbuff` (`nranks × recvcount` elements). In place when
/// `recvbuff == sendbuff + rank * recvcount`.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// `sendbuff` must be valid for reads of `nranks × recvcount` elements and `recvbuff` for
/// writes of `recvcount` elements until the call returns (inside a group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcReduceScatter(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: fcDataType_t,
    op: fcRedOp_t,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::ReduceScatter,
        send: sendbuff,
        recv: recvbuff,
        count: recvcount,
        datatype,
        op: Some(op),
        root: None,
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract.
    unsafe { issue("fcReduceScatter", comm, stream, a) }
}

/// Broadcast: every rank's `recvbuff[0..count]` becomes rank `root`'s `sendbuff` (only read
/// on the root). In place when `sendbuff == recvbuff`.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// On the root `sendbuff` must be valid for reads, and everywhere `recvbuff` for writes, of
/// `count` elements until the call returns (inside a group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcBroadcast(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: fcDataType_t,
    root: c_int,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::Broadcast,
        send: sendbuff,
        recv: recvbuff,
        count,
        datatype,
        op: None,
        root: Some(root),
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract.
    unsafe { issue("fcBroadcast", comm, stream, a) }
}

/// Reduce: rank `root`'s `recvbuff[0..count]` becomes the reduction (`op`) of all ranks'
/// `sendbuff` (`recvbuff` is only written on the root). In place when `sendbuff == recvbuff`.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// `sendbuff` must be valid for reads, and on the root `recvbuff` for writes, of `count`
/// elements until the call returns (inside a group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: fcDataType_t,
    op: fcRedOp_t,
    root: c_int,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::Reduce,
        send: sendbuff,
        recv: recvbuff,
        count,
        datatype,
        op: Some(op),
        root: Some(root),
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract.
    unsafe { issue("fcReduce", comm, stream, a) }
}

/// All-to-all: block `j` (`count` elements) of `sendbuff` goes to rank `j`, which stores it as
/// block `rank` of its `recvbuff`; both hold `nranks × count` elements. In place when
/// `sendbuff == recvbuff`.
///
/// Thread safety: as `fcAllReduce`.
///
/// # Safety
/// `sendbuff` must be valid for reads and `recvbuff` for writes of `nranks × count` elements
/// until the call returns (inside a group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcAllToAll(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: fcDataType_t,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::AllToAll,
        send: sendbuff,
        recv: recvbuff,
        count,
        datatype,
        op: None,
        root: None,
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract.
    unsafe { issue("fcAllToAll", comm, stream, a) }
}

/// Sends `count` elements of `sendbuff` to rank `peer`, matched by its `fcRecv` of the same
/// count and type. Outside a group it returns once the data is handed to the link (a large
/// message waits for the receiver); put a rank's sends and receives in one group to exchange
/// without ordering them by hand.
///
/// Thread safety: as `fcAllReduce` (sends and receives to one peer must be made in matching
/// order on both sides).
///
/// # Safety
/// `sendbuff` must be valid for reads of `count` elements until the call returns (inside a
/// group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcSend(
    sendbuff: *const c_void,
    count: usize,
    datatype: fcDataType_t,
    peer: c_int,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    if sendbuff.is_null() && count > 0 {
        return guard("fcSend", || Err(fc::Error::NullPointer("sendbuff").into()));
    }
    // An empty send needs a non-null pointer too: the core tells a send by a null output.
    let send = if sendbuff.is_null() {
        std::ptr::NonNull::<u8>::dangling()
            .as_ptr()
            .cast_const()
            .cast()
    } else {
        sendbuff
    };
    let a = Args {
        kind: Collective::SendRecv,
        send,
        recv: std::ptr::null_mut(),
        count,
        datatype,
        op: None,
        root: Some(peer),
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract.
    unsafe { issue("fcSend", comm, stream, a) }
}

/// Receives `count` elements from rank `peer` into `recvbuff` (see `fcSend`).
///
/// Thread safety: as `fcSend`.
///
/// # Safety
/// `recvbuff` must be valid for writes of `count` elements until the call returns (inside a
/// group: `fcGroupEnd`).
#[no_mangle]
pub unsafe extern "C" fn fcRecv(
    recvbuff: *mut c_void,
    count: usize,
    datatype: fcDataType_t,
    peer: c_int,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    let a = Args {
        kind: Collective::SendRecv,
        send: std::ptr::null(),
        recv: recvbuff,
        count,
        datatype,
        op: None,
        root: Some(peer),
        extra: RawExtra::default(),
    };
    // SAFETY: forwarded contract (no send buffer).
    unsafe { issue("fcRecv", comm, stream, a) }
}

/// Returns once every rank of `comm` has entered the barrier.
///
/// Thread safety: as `fcAllReduce`.
// `comm` is a token looked up in the registry and `stream` is only compared with NULL:
// neither is dereferenced, so the function is safe to call with any values.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
#[no_mangle]
pub extern "C" fn fcBarrier(comm: fcComm_t, stream: *mut c_void) -> fcResult_t {
    let a = Args {
        kind: Collective::Barrier,
        send: std::ptr::null(),
        recv: std::ptr::null_mut(),
        count: 0,
        datatype: fcUint8,
        op: None,
        root: None,
        extra: RawExtra::default(),
    };
    // SAFETY: a barrier touches no buffer.
    unsafe { issue("fcBarrier", comm, stream, a) }
}
