//! Real communicators: three ranks as threads of this process, meeting through a unique id.

use std::os::raw::c_int;
use std::ptr::null_mut;

use super::{all_reduce_f32, last_error, world};
use crate::types::fcResult_t::*;
use crate::*;

fn ok(r: fcResult_t) {
    assert_eq!(r, fcSuccess, "{}", last_error());
}

/// One world runs every collective of the C ABI in turn, out of place and in place, on the
/// same three communicators: a single function over ~150 lines on purpose, so that each
/// call sees the state (sequence numbers, buffers) the previous calls left, as a C program
/// would.
#[test]
fn every_collective_out_of_place_and_in_place_with_nccl_offsets() {
    const P: usize = 3;
    const N: usize = 1001;
    world(P, |r, c| {
        let (mut n, mut me): (c_int, c_int) = (0, 0);
        // SAFETY: valid out-pointers.
        unsafe {
            ok(fcCommCount(c, &mut n));
            ok(fcCommUserRank(c, &mut me));
        }
        assert_eq!((n as usize, me as usize), (P, r));
        let base = |k: usize| (0..k).map(|i| (i * (r + 1)) as f32).collect::<Vec<f32>>();

        // All-reduce: out of place, then in place.
        let x = base(N);
        let mut y = vec![0.0f32; N];
        ok(all_reduce_f32(&x, &mut y, fcSum, c));
        let want: Vec<f32> = (0..N).map(|i| (i * 6) as f32).collect();
        assert_eq!(y, want);
        let mut z = x.clone();
        let zp = z.as_mut_ptr();
        // SAFETY: in place on `z` (N f32), borrowed for the call.
        ok(unsafe { fcAllReduce(zp.cast(), zp.cast(), N, fcFloat32, fcMax, c, null_mut()) });
        assert_eq!(z, (0..N).map(|i| (i * 3) as f32).collect::<Vec<_>>());

        // All-gather: out of place, then in place at recvbuff + rank * count.
        let mine: Vec<i32> = (0..N as i32).map(|i| i + 1000 * r as i32).collect();
        let want: Vec<i32> = (0..P)
            .flat_map(|q| (0..N as i32).map(move |i| i + 1000 * q as i32))
            .collect();
        let mut all = vec![0i32; P * N];
        // SAFETY: `mine` holds N and `all` P × N i32.
        ok(unsafe {
            fcAllGather(
                mine.as_ptr().cast(),
                all.as_mut_ptr().cast(),
                N,
                fcInt32,
                c,
                null_mut(),
            )
        });
        assert_eq!(all, want);
        let mut buf = vec![-1i32; P * N];
        buf[r * N..(r + 1) * N].copy_from_slice(&mine);
        let bp = buf.as_mut_ptr();
        // SAFETY: in place: sendbuff = recvbuff + rank × N inside `buf` (P × N i32).
        ok(unsafe {
            fcAllGather(
                bp.wrapping_add(r * N).cast(),
                bp.cast(),
                N,
                fcInt32,
                c,
                null_mut(),
            )
        });
        assert_eq!(buf, want);

        // Reduce-scatter: out of place, then in place at sendbuff + rank * count.
        let input: Vec<i64> = (0..(P * N) as i64).map(|i| i * (r as i64 + 1)).collect();
        let want: Vec<i64> = (0..N as i64).map(|i| (i + (r * N) as i64) * 6).collect();
        let mut out = vec![0i64; N];
        // SAFETY: `input` holds P × N and `out` N i64.
        ok(unsafe {
            fcReduceScatter(
                input.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                N,
                fcInt64,
                fcSum,
                c,
                null_mut(),
            )
        });
        assert_eq!(out, want);
        let mut inout = input.clone();
        let ip = inout.as_mut_ptr();
        // SAFETY: in place: recvbuff = sendbuff + rank × N inside `inout` (P × N i64).
        ok(unsafe {
            fcReduceScatter(
                ip.cast(),
                ip.wrapping_add(r * N).cast(),
                N,
                fcInt64,
                fcSum,
                c,
                null_mut(),
            )
        });
        assert_eq!(&inout[r * N..(r + 1) * N], &want[..]);

        // Broadcast from 1 (in place) and reduce to 2 (out of place), f64.
        let mut b: Vec<f64> = if r == 1 {
            (0..N).map(|i| i as f64 / 8.0).collect()
        } else {
            vec![0.0; N]
        };
        let bp = b.as_mut_ptr();
        // SAFETY: in place on `b` (N f64).
        ok(unsafe { fcBroadcast(bp.cast(), bp.cast(), N, fcFloat64, 1, c, null_mut()) });
        assert_eq!(b, (0..N).map(|i| i as f64 / 8.0).collect::<Vec<_>>());
        let v = vec![(r + 1) as f64; N];
        let mut red = vec![0.0f64; N];
        // SAFETY: `v` and `red` hold N f64.
        ok(unsafe {
            fcReduce(
                v.as_ptr().cast(),
                red.as_mut_ptr().cast(),
                N,
                fcFloat64,
                fcProd,
                2,
                c,
                null_mut(),
            )
        });
        assert_eq!(red, if r == 2 { vec![6.0; N] } else { vec![0.0; N] });

        // All-to-all: block j of rank r holds 10 r + j.
        let send: Vec<u8> = (0..P).flat_map(|j| [(10 * r + j) as u8; 5]).collect();
        let mut recv = vec![0u8; P * 5];
        // SAFETY: both hold P × 5 bytes.
        ok(unsafe {
            fcAllToAll(
                send.as_ptr().cast(),
                recv.as_mut_ptr().cast(),
                5,
                fcUint8,
                c,
                null_mut(),
            )
        });
        let want: Vec<u8> = (0..P).flat_map(|j| [(10 * j + r) as u8; 5]).collect();
        assert_eq!(recv, want);
        ok(fcBarrier(c, null_mut()));

        // A count whose world-scaled size overflows is refused before the core sees it.
        let huge = usize::MAX / 2 + 1;
        // SAFETY: refused before any buffer is touched.
        let e = unsafe {
            fcAllGather(
                send.as_ptr().cast(),
                recv.as_mut_ptr().cast(),
                huge,
                fcUint8,
                c,
                null_mut(),
            )
        };
        assert_eq!(e, fcInvalidArgument);
    });
}

#[test]
fn grouped_sends_and_receives_larger_than_the_links_do_not_deadlock() {
    // Every rank sends 6 MiB to each other rank and receives as much, all in one group, with
    // the sends written first: issued in that order the sends would fill the links and wait.
    const P: usize = 3;
    const N: usize = 3 << 19;
    world(P, |r, c| {
        let sends: Vec<Vec<f32>> = (0..P).map(|q| vec![(10 * r + q) as f32; N]).collect();
        let mut recvs: Vec<Vec<f32>> = (0..P).map(|_| vec![0.0; N]).collect();
        ok(fcGroupStart());
        for (q, s) in sends.iter().enumerate().filter(|&(q, _)| q != r) {
            // SAFETY: `s` holds N f32 and outlives the group.
            ok(unsafe { fcSend(s.as_ptr().cast(), N, fcFloat32, q as c_int, c, null_mut()) });
        }
        for (q, d) in recvs.iter_mut().enumerate().filter(|&(q, _)| q != r) {
            // SAFETY: `d` holds N f32 and outlives the group.
            ok(unsafe {
                fcRecv(
                    d.as_mut_ptr().cast(),
                    N,
                    fcFloat32,
                    q as c_int,
                    c,
                    null_mut(),
                )
            });
        }
        ok(fcGroupEnd());
        for (q, d) in recvs.iter().enumerate().filter(|&(q, _)| q != r) {
            assert!(d.iter().all(|&v| v == (10 * q + r) as f32), "from {q}");
        }
    });
}

#[test]
fn one_thread_initialises_and_drives_three_ranks_in_groups() {
    const P: usize = 3;
    let id = super::unique_id();
    let mut comms: [fcComm_t; P] = [null_mut(); P];
    ok(fcGroupStart());
    for (r, c) in comms.iter_mut().enumerate() {
        // SAFETY: valid out-pointer.
        ok(unsafe { fcCommInitRank(c, P as c_int, id, r as c_int) });
        assert!(!c.is_null());
    }
    // Not usable before the group's end.
    assert_eq!(fcBarrier(comms[0], null_mut()), fcInvalidUsage);
    assert!(last_error().contains("inside a group"), "{}", last_error());
    ok(fcGroupEnd());
    let inputs: Vec<Vec<f32>> = (0..P).map(|r| vec![(r + 1) as f32; 1000]).collect();
    let mut outputs = vec![vec![0.0f32; 1000]; P];
    ok(fcGroupStart());
    for ((x, y), &c) in inputs.iter().zip(outputs.iter_mut()).zip(&comms) {
        ok(all_reduce_f32(x, y, fcSum, c));
    }
    ok(fcGroupEnd());
    for (r, (y, &c)) in outputs.iter().zip(&comms).enumerate() {
        assert!(y.iter().all(|&v| v == 6.0), "rank {r}");
        let mut me: c_int = -1;
        // SAFETY: valid out-pointer.
        ok(unsafe { fcCommUserRank(c, &mut me) });
        assert_eq!(me as usize, r);
    }
    for c in comms {
        ok(fcCommDestroy(c));
    }
}

#[test]
fn split_by_color_orders_by_key_and_nocolor_gets_null() {
    world(3, |r, c| {
        // Ranks 0 and 2 form one communicator, rank 2 first (lower key); rank 1 joins none.
        let color = if r == 1 { FC_SPLIT_NOCOLOR } else { 5 };
        let mut child: fcComm_t = 0x40 as fcComm_t;
        // SAFETY: valid out-pointer.
        ok(unsafe { fcCommSplit(c, color, -(r as c_int), &mut child) });
        if r == 1 {
            assert!(child.is_null());
        } else {
            let (mut n, mut me): (c_int, c_int) = (0, 0);
            // SAFETY: valid out-pointers.
            unsafe {
                ok(fcCommCount(child, &mut n));
                ok(fcCommUserRank(child, &mut me));
            }
            assert_eq!((n, me), (2, if r == 2 { 0 } else { 1 }));
            let x = [r as f32; 7];
            let mut y = [0.0f32; 7];
            ok(all_reduce_f32(&x, &mut y, fcSum, child));
            assert_eq!(y, [2.0; 7]);
            ok(fcCommDestroy(child));
        }
        // The parent still works after the split.
        let x = [1.0f32; 3];
        let mut y = [0.0f32; 3];
        ok(all_reduce_f32(&x, &mut y, fcSum, c));
        assert_eq!(y, [3.0; 3]);
    });
}

#[test]
fn an_aborted_peer_is_reported_not_waited_for() {
    let id = super::unique_id();
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            let c = super::init(2, id, 1);
            ok(fcCommAbort(c));
            assert_eq!(fcCommAbort(c), fcInvalidUsage);
        });
        let c = super::init(2, id, 0);
        let x = vec![1.0f32; 1 << 16];
        let mut y = vec![0.0f32; 1 << 16];
        let t = std::time::Instant::now();
        let e = all_reduce_f32(&x, &mut y, fcSum, c);
        assert!(
            matches!(e, fcRemoteError | fcSystemError),
            "{e:?}: {}",
            last_error()
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "waited {:?}",
            t.elapsed()
        );
        let mut async_err = fcSuccess;
        // SAFETY: valid out-pointer.
        ok(unsafe { fcCommGetAsyncError(c, &mut async_err) });
        assert_eq!(async_err, e);
        ok(fcCommDestroy(c));
        h.join().unwrap();
    });
}

#[test]
fn compressed_all_reduce_with_error_feedback_and_bad_arguments() {
    use std::ffi::CString;
    let key = CString::new("layer0").unwrap();
    let fp16 = CString::new("fp16").unwrap();
    let bogus = CString::new("zip:9").unwrap();
    let outs = world(3, |r, c| {
        // Values exact in fp16: the compressed sum equals the exact one.
        let mut g: Vec<f32> = (0..1000).map(|i| (i % 7) as f32 + r as f32).collect();
        // SAFETY: `g` holds 1000 floats; the strings are NUL-terminated.
        ok(unsafe {
            fcAllReduceCompressed(
                g.as_mut_ptr().cast(),
                g.len(),
                fcFloat32,
                key.as_ptr(),
                fp16.as_ptr(),
                c,
                null_mut(),
            )
        });
        // Same key, another length: the error feedback refuses to mix tensors.
        let mut short = vec![0f32; 10];
        // SAFETY: as above.
        let mixed = unsafe {
            fcAllReduceCompressed(
                short.as_mut_ptr().cast(),
                10,
                fcFloat32,
                key.as_ptr(),
                fp16.as_ptr(),
                c,
                null_mut(),
            )
        };
        // SAFETY: the codec string is read before any buffer access.
        let bad_codec = unsafe {
            fcAllReduceCompressed(
                short.as_mut_ptr().cast(),
                10,
                fcFloat32,
                key.as_ptr(),
                bogus.as_ptr(),
                c,
                null_mut(),
            )
        };
        // SAFETY: refused for its data type before any access.
        let bad_type = unsafe {
            fcAllReduceCompressed(
                short.as_mut_ptr().cast(),
                10,
                fcInt32,
                key.as_ptr(),
                fp16.as_ptr(),
                c,
                null_mut(),
            )
        };
        // SAFETY: refused for the NULL key before any access.
        let no_key = unsafe {
            fcAllReduceCompressed(
                short.as_mut_ptr().cast(),
                10,
                fcFloat32,
                std::ptr::null(),
                fp16.as_ptr(),
                c,
                null_mut(),
            )
        };
        // SAFETY: a NUL-terminated key.
        ok(unsafe { fcCompressionReset(c, key.as_ptr()) });
        (g, [mixed, bad_codec, bad_type, no_key])
    });
    for (g, errs) in outs {
        for (i, v) in g.iter().enumerate() {
            assert_eq!(*v, 3.0 * (i % 7) as f32 + 3.0, "element {i}");
        }
        for e in errs {
            assert_eq!(e, fcResult_t::fcInvalidArgument);
        }
    }
}
