//! `fcGroupEndAsync` and the `fcWork_t` calls: a work completes after its call returns, when
//! its collective does, and bad handles are refused.

use std::os::raw::c_int;
use std::ptr::null_mut;
use std::time::Duration;

use super::{last_error, world};
use crate::types::fcResult_t::*;
use crate::*;

fn ok(r: fcResult_t) {
    assert_eq!(r, fcSuccess, "{}", last_error());
}

#[test]
fn an_async_group_completes_when_its_collective_does() {
    const P: usize = 3;
    const N: usize = 1 << 20;
    world(P, |r, c| {
        let send = vec![(r + 1) as f32; N];
        let mut recv = vec![0f32; N];
        if r == 0 {
            // The other ranks' works cannot complete before this rank joins.
            std::thread::sleep(Duration::from_millis(400));
        }
        ok(fcGroupStart());
        // SAFETY: both hold N f32 and outlive the work (waited for below).
        ok(unsafe {
            fcAllReduce(
                send.as_ptr().cast(),
                recv.as_mut_ptr().cast(),
                N,
                fcFloat32,
                fcSum,
                c,
                null_mut(),
            )
        });
        let mut w: fcWork_t = null_mut();
        // SAFETY: `w` is a valid out-pointer.
        ok(unsafe { fcGroupEndAsync(&mut w) });
        assert!(!w.is_null());
        if r != 0 {
            let mut done: c_int = -1;
            // SAFETY: `done` is a valid out-pointer.
            ok(unsafe { fcWorkTest(w, &mut done) });
            assert_eq!(done, 0, "rank {r}: complete before rank 0 joined");
            assert_eq!(fcWorkWait(w, 0), fcInProgress);
            assert!(last_error().contains("not complete"), "{}", last_error());
            // A positive timeout sleeps that long, not less, and not until the peer comes.
            let t0 = std::time::Instant::now();
            assert_eq!(fcWorkWait(w, 40), fcInProgress);
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(40), "rank {r}: {took:?}");
            assert!(took < Duration::from_millis(300), "rank {r}: {took:?}");
            // Long enough: it completes within the timeout.
            ok(fcWorkWait(w, 20_000));
        }
        ok(fcWorkWait(w, -1));
        let mut done: c_int = -1;
        // SAFETY: `done` is a valid out-pointer.
        ok(unsafe { fcWorkTest(w, &mut done) });
        assert_eq!(done, 1);
        ok(fcWorkFree(w));
        assert!(recv.iter().all(|&v| v == 6.0), "rank {r}: {}", recv[0]);
        // Freed: the handle is gone.
        assert_eq!(fcWorkWait(w, -1), fcInvalidArgument);
    });
}

#[test]
fn a_work_freed_unwaited_waits_for_its_calls_first() {
    const P: usize = 2;
    const N: usize = 1 << 18;
    world(P, |r, c| {
        let mut buf = vec![r as f32; N];
        ok(fcGroupStart());
        // SAFETY: `buf` holds N f32 and outlives the work (freed below, which waits).
        ok(unsafe {
            fcAllReduce(
                buf.as_ptr().cast(),
                buf.as_mut_ptr().cast(),
                N,
                fcFloat32,
                fcMax,
                c,
                null_mut(),
            )
        });
        let mut w: fcWork_t = null_mut();
        // SAFETY: `w` is a valid out-pointer.
        ok(unsafe { fcGroupEndAsync(&mut w) });
        ok(fcWorkFree(w));
        assert!(buf.iter().all(|&v| v == 1.0));
    });
}

#[test]
fn work_misuse_is_refused() {
    super::test_env();
    let made_up: fcWork_t = std::ptr::without_provenance_mut(0xdead_beef);
    let mut done: c_int = 0;
    // SAFETY: `done` is a valid out-pointer; the handle is only looked up.
    assert_eq!(unsafe { fcWorkTest(made_up, &mut done) }, fcInvalidArgument);
    assert!(
        last_error().contains("not a live fcWork_t"),
        "{}",
        last_error()
    );
    assert_eq!(fcWorkWait(made_up, 10), fcInvalidArgument);
    assert_eq!(fcWorkFree(made_up), fcInvalidArgument);
    assert_eq!(fcWorkWait(null_mut(), -1), fcInvalidArgument);
    // SAFETY: NULL out-pointers are refused before any write.
    assert_eq!(unsafe { fcGroupEndAsync(null_mut()) }, fcInvalidArgument);
    let mut w: fcWork_t = null_mut();
    // SAFETY: `w` is a valid out-pointer.
    assert_eq!(unsafe { fcGroupEndAsync(&mut w) }, fcInvalidUsage);
    assert!(last_error().contains("without fcGroupStart"));
    // An inner end issues nothing and gives no work; the outer one gives an empty work.
    ok(fcGroupStart());
    ok(fcGroupStart());
    // SAFETY: `w` is a valid out-pointer.
    ok(unsafe { fcGroupEndAsync(&mut w) });
    assert!(w.is_null());
    // SAFETY: `w` is a valid out-pointer.
    ok(unsafe { fcGroupEndAsync(&mut w) });
    assert!(!w.is_null());
    // SAFETY: `done` is a valid out-pointer.
    ok(unsafe { fcWorkTest(w, &mut done) });
    assert_eq!(done, 1);
    // SAFETY: a NULL `done` is refused before any write.
    assert_eq!(unsafe { fcWorkTest(w, null_mut()) }, fcInvalidArgument);
    ok(fcWorkFree(w));
    assert_eq!(fcWorkFree(w), fcInvalidArgument);
}
