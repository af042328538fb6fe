//! Every bad input at the boundary returns its code (and a message), never UB or a panic.

use std::ffi::c_void;
use std::os::raw::c_int;
use std::ptr::{null, null_mut};

use super::{all_reduce_f32, last_error, test_env, unique_id, world};
use crate::boundary::guard;
use crate::types::fcResult_t::*;
use crate::*;

#[test]
fn a_panic_becomes_internal_error_with_its_message() {
    let r = guard("fcTest", || panic!("boom at the boundary"));
    assert_eq!(r, fcInternalError);
    let m = last_error();
    assert!(
        m.contains("fcTest") && m.contains("boom at the boundary"),
        "{m}"
    );
}

#[test]
fn version_matches_the_crate() {
    let mut v: c_int = 0;
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { fcGetVersion(&mut v) }, fcSuccess);
    let want: Vec<c_int> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(v, want[0] * 10000 + want[1] * 100 + want[2]);
    assert_eq!(v, FC_VERSION_CODE);
}

#[test]
fn null_out_pointers_are_invalid_arguments() {
    test_env();
    // SAFETY: (all calls below) NULL out-pointers are what is tested; they are refused
    // before any write.
    unsafe {
        assert_eq!(fcGetVersion(null_mut()), fcInvalidArgument);
        assert_eq!(fcGetUniqueId(null_mut()), fcInvalidArgument);
        assert!(
            last_error().contains("uniqueId is NULL"),
            "{}",
            last_error()
        );
        let id = unique_id();
        assert_eq!(fcCommInitRank(null_mut(), 1, id, 0), fcInvalidArgument);
        assert_eq!(fcCommInitFromEnv(null_mut()), fcInvalidArgument);
    }
    world(1, |_, c| {
        // SAFETY: as above.
        unsafe {
            assert_eq!(fcCommCount(c, null_mut()), fcInvalidArgument);
            assert_eq!(fcCommUserRank(c, null_mut()), fcInvalidArgument);
            assert_eq!(fcCommGetAsyncError(c, null_mut()), fcInvalidArgument);
            assert_eq!(fcCommSplit(c, 0, 0, null_mut()), fcInvalidArgument);
        }
    });
}

#[test]
fn bad_init_arguments_leave_a_null_comm() {
    let id = unique_id();
    for (n, r) in [(0, 0), (-1, 0), (2, -1), (2, 2), (1, 5)] {
        let mut c: fcComm_t = 0x40 as fcComm_t;
        // SAFETY: valid out-pointer.
        let rc = unsafe { fcCommInitRank(&mut c, n, id, r) };
        assert_eq!(rc, fcInvalidArgument);
        assert!(c.is_null(), "nranks {n} rank {r} left a handle");
    }
    let garbage = fcUniqueId {
        internal: [7; FC_UNIQUE_ID_BYTES],
    };
    let mut c: fcComm_t = null_mut();
    // SAFETY: valid out-pointer.
    let rc = unsafe { fcCommInitRank(&mut c, 1, garbage, 0) };
    assert_eq!(rc, fcInvalidArgument);
    assert!(last_error().contains("unique id"), "{}", last_error());
}

#[test]
fn null_made_up_and_destroyed_handles_are_refused() {
    let made_up = 0x1234usize as fcComm_t;
    let mut n: c_int = 0;
    // SAFETY: valid out-pointer; the handles are never dereferenced.
    unsafe {
        assert_eq!(fcCommCount(null_mut(), &mut n), fcInvalidArgument);
        assert!(last_error().contains("comm is NULL"));
        assert_eq!(fcCommCount(made_up, &mut n), fcInvalidArgument);
        assert!(last_error().contains("not a communicator"));
    }
    assert_eq!(fcCommDestroy(null_mut()), fcInvalidArgument);
    assert_eq!(fcCommAbort(made_up), fcInvalidArgument);
    assert_eq!(fcBarrier(made_up, null_mut()), fcInvalidArgument);

    let id = unique_id();
    let c = super::init(1, id, 0);
    assert_eq!(fcCommDestroy(c), fcSuccess);
    let (x, mut y) = ([1.0f32; 4], [0.0f32; 4]);
    let mut e = fcSuccess;
    let mut child: fcComm_t = null_mut();
    assert_eq!(all_reduce_f32(&x, &mut y, fcSum, c), fcInvalidUsage);
    assert!(last_error().contains("destroyed"), "{}", last_error());
    // SAFETY: valid out-pointers; the dead handle is never dereferenced.
    unsafe {
        assert_eq!(fcCommCount(c, &mut n), fcInvalidUsage);
        assert_eq!(fcCommUserRank(c, &mut n), fcInvalidUsage);
        assert_eq!(fcCommGetAsyncError(c, &mut e), fcInvalidUsage);
        assert_eq!(fcCommSplit(c, 0, 0, &mut child), fcInvalidUsage);
    }
    assert_eq!(fcBarrier(c, null_mut()), fcInvalidUsage);
    assert_eq!(fcCommDestroy(c), fcInvalidUsage);
    assert_eq!(fcCommAbort(c), fcInvalidUsage);
}

#[test]
fn bad_enums_counts_buffers_streams_and_ranks() {
    world(1, |_, c| {
        let (x, mut y) = ([1.0f32; 4], [0.0f32; 4]);
        let (xp, yp) = (x.as_ptr().cast::<c_void>(), y.as_mut_ptr().cast::<c_void>());
        let stream = 0x10 as *mut c_void;
        // SAFETY: (every call) the buffers hold 4 f32 and live for the whole block; the bad
        // arguments are refused before any buffer is touched.
        unsafe {
            for dt in [-1, fcNumTypes, 100] {
                assert_eq!(
                    fcAllReduce(xp, yp, 4, dt, fcSum, c, null_mut()),
                    fcInvalidArgument
                );
                assert!(last_error().contains("data type"), "{}", last_error());
            }
            for op in [-1, fcNumOps, 77] {
                assert_eq!(
                    fcAllReduce(xp, yp, 4, fcFloat32, op, c, null_mut()),
                    fcInvalidArgument
                );
                assert!(last_error().contains("operator"), "{}", last_error());
                assert_eq!(
                    fcReduceScatter(xp, yp, 4, fcFloat32, op, c, null_mut()),
                    fcInvalidArgument
                );
                assert_eq!(
                    fcReduce(xp, yp, 4, fcFloat32, op, 0, c, null_mut()),
                    fcInvalidArgument
                );
            }
            // Counts a size_t cannot address: "negative" ones from C and Python wrap to these.
            for count in [usize::MAX, usize::MAX / 2, (isize::MAX as usize) / 2 + 1] {
                assert_eq!(
                    fcAllReduce(xp, yp, count, fcFloat32, fcSum, c, null_mut()),
                    fcInvalidArgument
                );
                assert!(last_error().contains("too large"), "{}", last_error());
                assert_eq!(
                    fcAllGather(xp, yp, count, fcFloat32, c, null_mut()),
                    fcInvalidArgument
                );
                assert_eq!(
                    fcAllToAll(xp, yp, count, fcFloat32, c, null_mut()),
                    fcInvalidArgument
                );
                assert_eq!(
                    fcSend(xp, count, fcFloat32, 0, c, null_mut()),
                    fcInvalidArgument
                );
            }
            assert_eq!(
                fcAllReduce(null(), yp, 4, fcFloat32, fcSum, c, null_mut()),
                fcInvalidArgument
            );
            assert!(last_error().contains("null"), "{}", last_error());
            assert_eq!(
                fcAllReduce(xp, null_mut(), 4, fcFloat32, fcSum, c, null_mut()),
                fcInvalidArgument
            );
            assert_eq!(
                fcBroadcast(null(), null_mut(), 4, fcFloat32, 0, c, null_mut()),
                fcInvalidArgument
            );
            assert_eq!(
                fcRecv(null_mut(), 4, fcFloat32, 0, c, null_mut()),
                fcInvalidArgument
            );
            assert_eq!(
                fcSend(null(), 4, fcFloat32, 0, c, null_mut()),
                fcInvalidArgument
            );
            // Empty calls may pass NULL.
            assert_eq!(
                fcAllReduce(null(), null_mut(), 0, fcFloat32, fcSum, c, null_mut()),
                fcSuccess
            );
            assert_eq!(
                fcAllGather(null(), null_mut(), 0, fcInt8, c, null_mut()),
                fcSuccess
            );

            assert_eq!(
                fcAllReduce(xp, yp, 4, fcFloat32, fcSum, c, stream),
                fcInvalidArgument
            );
            assert!(last_error().contains("stream"), "{}", last_error());
            assert_eq!(fcBarrier(c, stream), fcInvalidArgument);

            for root in [-1, 1, c_int::MAX] {
                assert_eq!(
                    fcBroadcast(xp, yp, 4, fcFloat32, root, c, null_mut()),
                    fcInvalidArgument
                );
                assert_eq!(
                    fcReduce(xp, yp, 4, fcFloat32, fcSum, root, c, null_mut()),
                    fcInvalidArgument
                );
                assert_eq!(
                    fcSend(xp, 4, fcFloat32, root, c, null_mut()),
                    fcInvalidArgument
                );
                assert_eq!(
                    fcRecv(yp, 4, fcFloat32, root, c, null_mut()),
                    fcInvalidArgument
                );
            }
            // Oneself as the peer.
            assert_eq!(
                fcSend(xp, 4, fcFloat32, 0, c, null_mut()),
                fcInvalidArgument
            );
            let mut child: fcComm_t = 0x40 as fcComm_t;
            assert_eq!(fcCommSplit(c, -2, 0, &mut child), fcInvalidArgument);
            assert!(child.is_null());
        }
        // None of these failures hurt the communicator.
        let mut e = fcInternalError;
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { fcCommGetAsyncError(c, &mut e) }, fcSuccess);
        assert_eq!(e, fcSuccess);
        assert_eq!(all_reduce_f32(&x, &mut y, fcAvg, c), fcSuccess);
        assert_eq!(y, x);
    });
}

#[test]
fn group_misuse_is_invalid_usage() {
    assert_eq!(fcGroupEnd(), fcInvalidUsage);
    assert!(last_error().contains("without fcGroupStart"));
    let id = unique_id();
    assert_eq!(fcGroupStart(), fcSuccess);
    let mut c: fcComm_t = 0x40 as fcComm_t;
    // SAFETY: valid out-pointer.
    unsafe {
        // The environment describes one rank: no deferred init from it.
        assert_eq!(fcCommInitFromEnv(&mut c), fcInvalidUsage);
        assert!(c.is_null());
        // A deferred init still checks its arguments at once.
        assert_eq!(fcCommInitRank(&mut c, 2, id, 2), fcInvalidArgument);
        assert!(c.is_null());
    }
    assert_eq!(fcGroupEnd(), fcSuccess);
    world(1, |_, c| {
        // A bad call is refused when queued; one the core refuses fails the group's end.
        let (x, mut y) = ([2.0f32; 3], [0.0f32; 3]);
        assert_eq!(fcGroupStart(), fcSuccess);
        assert_eq!(fcGroupStart(), fcSuccess);
        assert_eq!(all_reduce_f32(&x, &mut y, 99, c), fcInvalidArgument);
        assert_eq!(all_reduce_f32(&x, &mut y, fcSum, c), fcSuccess);
        assert_eq!(y, [0.0; 3], "a queued call ran before the group's end");
        assert_eq!(fcGroupEnd(), fcSuccess);
        assert_eq!(y, [0.0; 3], "an inner group end issued the calls");
        // SAFETY: the buffers hold 3 f32 (x) and 3 f32 (y) and outlive the group.
        unsafe {
            assert_eq!(
                fcRecv(y.as_mut_ptr().cast(), 3, fcFloat32, 0, c, null_mut()),
                fcSuccess
            );
        }
        assert_eq!(
            fcGroupEnd(),
            fcInvalidArgument,
            "recv from oneself must fail at the end"
        );
        assert_eq!(y, [2.0; 3], "the valid call of the group did run");
    });
}

#[test]
fn an_id_with_a_forged_secret_is_refused_by_the_store_also_in_a_group() {
    let mut id = unique_id();
    id.internal[40] ^= 0x5a; // in the secret: the store demands proof of the real one
    let mut c: fcComm_t = null_mut();
    // SAFETY: valid out-pointer.
    let rc = unsafe { fcCommInitRank(&mut c, 1, id, 0) };
    assert_eq!(rc, fcSystemError, "{}", last_error());
    assert!(last_error().contains("refused"), "{}", last_error());
    assert!(c.is_null());
    // Deferred: the handle exists at once, the failure comes from fcGroupEnd.
    assert_eq!(fcGroupStart(), fcSuccess);
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { fcCommInitRank(&mut c, 1, id, 0) }, fcSuccess);
    assert!(!c.is_null());
    assert_eq!(fcGroupEnd(), fcSystemError);
    assert_eq!(fcBarrier(c, null_mut()), fcInvalidUsage);
}
