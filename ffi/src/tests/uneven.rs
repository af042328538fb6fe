//! Gather, scatter, the uneven collectives and premul-sum through the C ABI: results on
//! worlds of 1 to 5 ranks (out of place, in place, inside groups, with empty blocks and
//! gaps), and every bad input with its code.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use super::{last_error, world};
use crate::types::fcResult_t::*;
use crate::*;

fn ok(r: fcResult_t) {
    assert_eq!(r, fcSuccess, "{}", last_error());
}

/// The value rank `r` contributes at element `i`.
fn v(r: usize, i: usize) -> f32 {
    (r * 1000 + i) as f32
}

/// Rank `r`'s block size in the uneven tests (0 for some ranks).
fn count(r: usize) -> usize {
    (r * 5 + 2) % 4
}

#[test]
fn gather_and_scatter_on_one_to_five_ranks() {
    const N: usize = 37;
    for p in 1..=5usize {
        world(p, |r, c| {
            let root = p / 2;
            let mine: Vec<f32> = (0..N).map(|i| v(r, i)).collect();
            let everyone: Vec<f32> = (0..p).flat_map(|q| (0..N).map(move |i| v(q, i))).collect();
            // Gather out of place; recvbuff NULL off the root.
            let mut all = vec![0f32; if r == root { p * N } else { 0 }];
            let recv = if r == root {
                all.as_mut_ptr().cast::<c_void>()
            } else {
                null_mut()
            };
            // SAFETY: `mine` holds N, the root's `all` p × N f32.
            ok(unsafe {
                fcGather(
                    mine.as_ptr().cast(),
                    recv,
                    N,
                    fcFloat32,
                    root as i32,
                    c,
                    null_mut(),
                )
            });
            if r == root {
                assert_eq!(all, everyone);
            }
            // Gather in place on the root (sendbuff = recvbuff + root × N), in a group.
            let mut buf = vec![0f32; p * N];
            buf[r * N..(r + 1) * N].copy_from_slice(&mine);
            let bp = buf.as_mut_ptr();
            ok(fcGroupStart());
            // SAFETY: `buf` holds p × N f32 and outlives fcGroupEnd.
            ok(unsafe {
                fcGather(
                    bp.wrapping_add(r * N).cast(),
                    bp.cast(),
                    N,
                    fcFloat32,
                    root as i32,
                    c,
                    null_mut(),
                )
            });
            ok(fcGroupEnd());
            if r == root {
                assert_eq!(buf, everyone);
            }
            // Scatter: sendbuff NULL off the root; then in place on the root.
            let mut out = vec![0f32; N];
            let send = if r == root {
                everyone.as_ptr().cast()
            } else {
                null()
            };
            // SAFETY: the root's `everyone` holds p × N, `out` N f32.
            ok(unsafe {
                fcScatter(
                    send,
                    out.as_mut_ptr().cast(),
                    N,
                    fcFloat32,
                    root as i32,
                    c,
                    null_mut(),
                )
            });
            assert_eq!(out, mine);
            let mut buf = if r == root {
                everyone.clone()
            } else {
                vec![0f32; N]
            };
            let bp = buf.as_mut_ptr();
            let (s, d) = if r == root {
                (bp, bp.wrapping_add(r * N))
            } else {
                (null_mut(), bp)
            };
            // SAFETY: `buf` holds what this rank's part reads and writes.
            ok(unsafe {
                fcScatter(
                    s.cast_const().cast(),
                    d.cast(),
                    N,
                    fcFloat32,
                    root as i32,
                    c,
                    null_mut(),
                )
            });
            let at = if r == root { r * N } else { 0 };
            assert_eq!(&buf[at..at + N], &mine[..]);
            // A zero count moves nothing.
            // SAFETY: nothing is read or written.
            ok(unsafe { fcGather(null(), null_mut(), 0, fcFloat32, root as i32, c, null_mut()) });
        });
    }
}

#[test]
fn uneven_collectives_on_one_to_five_ranks() {
    for p in 1..=5usize {
        world(p, |r, c| {
            let counts: Vec<i64> = (0..p).map(|q| count(q) as i64).collect();
            // Gapped, in reverse rank order: block q at 3 + 6 × (p - 1 - q).
            let displs: Vec<i64> = (0..p).map(|q| 3 + 6 * (p - 1 - q) as i64).collect();
            let extent = 3 + 6 * p;
            let mine: Vec<f32> = (0..count(r)).map(|i| v(r, i)).collect();

            // All-gather-v, packed (displs NULL) and gapped; gaps keep their value.
            let total: usize = (0..p).map(count).sum();
            let mut out = vec![-1f32; total];
            // SAFETY: `mine` holds counts[r], `out` the packed blocks; arrays p entries.
            ok(unsafe {
                fcAllGatherV(
                    mine.as_ptr().cast(),
                    mine.len(),
                    out.as_mut_ptr().cast(),
                    counts.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                )
            });
            let packed: Vec<f32> = (0..p)
                .flat_map(|q| (0..count(q)).map(move |i| v(q, i)))
                .collect();
            assert_eq!(out, packed);
            let mut out = vec![-1f32; extent];
            // SAFETY: as above, `out` holds every gapped block.
            ok(unsafe {
                fcAllGatherV(
                    mine.as_ptr().cast(),
                    mine.len(),
                    out.as_mut_ptr().cast(),
                    counts.as_ptr(),
                    displs.as_ptr(),
                    fcFloat32,
                    c,
                    null_mut(),
                )
            });
            let mut want = vec![-1f32; extent];
            for q in 0..p {
                for i in 0..count(q) {
                    want[displs[q] as usize + i] = v(q, i);
                }
            }
            assert_eq!(out, want);

            // Reduce-scatter-v (gapped input), with fcSum, then in place inside a group.
            let input: Vec<f32> = (0..extent).map(|i| v(r, i)).collect();
            let d = displs[r] as usize;
            let reduced: Vec<f32> = (0..count(r))
                .map(|i| (0..p).map(|q| v(q, d + i)).sum())
                .collect();
            let mut got = vec![0f32; count(r)];
            // SAFETY: `input` holds every block, `got` counts[r].
            ok(unsafe {
                fcReduceScatterV(
                    input.as_ptr().cast(),
                    got.as_mut_ptr().cast(),
                    counts.as_ptr(),
                    displs.as_ptr(),
                    fcFloat32,
                    fcSum,
                    c,
                    null_mut(),
                )
            });
            assert_eq!(got, reduced);
            let mut buf = input.clone();
            let bp = buf.as_mut_ptr();
            ok(fcGroupStart());
            // SAFETY: in place in `buf`, which outlives fcGroupEnd.
            ok(unsafe {
                fcReduceScatterV(
                    bp.cast_const().cast(),
                    bp.wrapping_add(d).cast(),
                    counts.as_ptr(),
                    displs.as_ptr(),
                    fcFloat32,
                    fcSum,
                    c,
                    null_mut(),
                )
            });
            ok(fcGroupEnd());
            assert_eq!(&buf[d..d + count(r)], &reduced[..]);

            // All-to-all-v: rank i sends (i + j) % 3 elements to rank j, packed on both sides.
            let m = |i: usize, j: usize| (i + 2 * j) % 3;
            let sc: Vec<i64> = (0..p).map(|j| m(r, j) as i64).collect();
            let rc: Vec<i64> = (0..p).map(|j| m(j, r) as i64).collect();
            // Element k of the block for j carries (sender, receiver, k).
            let send: Vec<f32> = (0..p)
                .flat_map(|j| (0..m(r, j)).map(move |k| (r * 100 + j * 10 + k) as f32))
                .collect();
            let want: Vec<f32> = (0..p)
                .flat_map(|j| (0..m(j, r)).map(move |k| (j * 100 + r * 10 + k) as f32))
                .collect();
            let mut recv = vec![0f32; want.len()];
            // SAFETY: `send`/`recv` hold the packed blocks; arrays p entries.
            ok(unsafe {
                fcAllToAllV(
                    send.as_ptr().cast(),
                    sc.as_ptr(),
                    null(),
                    recv.as_mut_ptr().cast(),
                    rc.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                )
            });
            assert_eq!(recv, want);
        });
    }
}

#[test]
fn premul_sum_operators() {
    const N: usize = 10;
    world(3, |r, c| {
        // Each rank its own scalar: r + 1.
        let s = (r + 1) as f32;
        let mut op: fcRedOp_t = 0;
        // SAFETY: valid out-pointer and scalar.
        ok(unsafe {
            fcRedOpCreatePreMulSum(
                &mut op,
                (&s as *const f32).cast_mut().cast(),
                fcFloat32,
                fcScalarHostImmediate,
                c,
            )
        });
        assert!(op >= fcNumOps);
        let x: Vec<f32> = (0..N).map(|i| i as f32).collect();
        let mut y = vec![0f32; N];
        // SAFETY: both hold N f32.
        ok(unsafe {
            fcAllReduce(
                x.as_ptr().cast(),
                y.as_mut_ptr().cast(),
                N,
                fcFloat32,
                op,
                c,
                null_mut(),
            )
        });
        // Σ (r + 1) × i over three ranks = 6i.
        assert_eq!(y, (0..N).map(|i| 6.0 * i as f32).collect::<Vec<_>>());
        // Reduce-scatter-v with the premul-sum operator.
        let counts = [1i64, 2, 3];
        let mut z = vec![0f32; counts[r] as usize];
        let xs: Vec<f32> = vec![1.0; 6];
        // SAFETY: `xs` holds every block, `z` counts[r].
        ok(unsafe {
            fcReduceScatterV(
                xs.as_ptr().cast(),
                z.as_mut_ptr().cast(),
                counts.as_ptr(),
                null(),
                fcFloat32,
                op,
                c,
                null_mut(),
            )
        });
        assert_eq!(z, vec![6.0; counts[r] as usize]);
        // Another type than the operator's.
        let xd = [1f64; N];
        let mut yd = vec![0f64; N];
        // SAFETY: both hold N f64.
        let e = unsafe {
            fcAllReduce(
                xd.as_ptr().cast(),
                yd.as_mut_ptr().cast(),
                N,
                fcFloat64,
                op,
                c,
                null_mut(),
            )
        };
        assert_eq!(e, fcInvalidArgument);
        assert!(last_error().contains("made for f32"), "{}", last_error());
        // Destroyed: the code is unknown afterwards, and a second destroy is refused.
        ok(fcRedOpDestroy(op, c));
        assert_eq!(fcRedOpDestroy(op, c), fcInvalidArgument);
        assert_eq!(fcRedOpDestroy(fcSum, c), fcInvalidArgument);
        // SAFETY: both hold N f32.
        let e = unsafe {
            fcAllReduce(
                x.as_ptr().cast(),
                y.as_mut_ptr().cast(),
                N,
                fcFloat32,
                op,
                c,
                null_mut(),
            )
        };
        assert_eq!(e, fcInvalidArgument);
        assert!(last_error().contains("operator code"), "{}", last_error());
        // Device residence, a NULL scalar or op, an unknown residence, a bad type, a 64-bit
        // integer that a double cannot hold.
        let sp = (&s as *const f32).cast_mut().cast::<c_void>();
        // SAFETY: (all below) valid pointers where given; NULLs are refused before use.
        unsafe {
            assert_eq!(
                fcRedOpCreatePreMulSum(&mut op, sp, fcFloat32, fcScalarDevice, c),
                fcInvalidUsage
            );
            assert!(
                last_error().contains("fcScalarHostImmediate"),
                "{}",
                last_error()
            );
            assert_eq!(
                fcRedOpCreatePreMulSum(&mut op, null_mut(), fcFloat32, fcScalarHostImmediate, c),
                fcInvalidArgument
            );
            assert_eq!(
                fcRedOpCreatePreMulSum(null_mut(), sp, fcFloat32, fcScalarHostImmediate, c),
                fcInvalidArgument
            );
            assert_eq!(
                fcRedOpCreatePreMulSum(&mut op, sp, fcFloat32, 7, c),
                fcInvalidArgument
            );
            assert_eq!(
                fcRedOpCreatePreMulSum(&mut op, sp, 99, fcScalarHostImmediate, c),
                fcInvalidArgument
            );
            let big: i64 = (1 << 53) + 1;
            let bp = (&big as *const i64).cast_mut().cast::<c_void>();
            assert_eq!(
                fcRedOpCreatePreMulSum(&mut op, bp, fcInt64, fcScalarHostImmediate, c),
                fcInvalidArgument
            );
            assert!(
                last_error().contains("not exactly representable"),
                "{}",
                last_error()
            );
            // A premul-sum operator on a collective that does not reduce is refused by its
            // signature (no op argument); on all-reduce with an integer type it works.
            let three: i32 = 3;
            let tp = (&three as *const i32).cast_mut().cast::<c_void>();
            ok(fcRedOpCreatePreMulSum(
                &mut op,
                tp,
                fcInt32,
                fcScalarHostImmediate,
                c,
            ));
            let xi = [1i32, -2];
            let mut yi = [0i32; 2];
            ok(fcAllReduce(
                xi.as_ptr().cast(),
                yi.as_mut_ptr().cast(),
                2,
                fcInt32,
                op,
                c,
                null_mut(),
            ));
            assert_eq!(yi, [9, -18]);
        }
    });
}

#[test]
fn bad_uneven_arguments_are_typed_errors() {
    world(2, |r, c| {
        let x = [0f32; 8];
        let mut y = [0f32; 16];
        let (xp, yp) = (x.as_ptr().cast::<c_void>(), y.as_mut_ptr().cast::<c_void>());
        let counts = [2i64, 3];
        let mine = counts[r] as usize;
        let bad = |code: fcResult_t, what: &str| {
            assert_eq!(code, fcInvalidArgument, "{what}: {}", last_error());
            assert!(
                last_error().contains(what),
                "want {what:?} in {}",
                last_error()
            );
        };
        // SAFETY: (all below) every array given holds 2 entries and the buffers hold the
        // blocks; the calls are refused before anything moves.
        unsafe {
            bad(
                fcAllGatherV(xp, mine, yp, null(), null(), fcFloat32, c, null_mut()),
                "recvcounts is NULL",
            );
            bad(
                fcAllGatherV(
                    xp,
                    mine,
                    yp,
                    [2i64, -1].as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "recvcounts[1] is negative",
            );
            bad(
                fcAllGatherV(
                    xp,
                    mine,
                    yp,
                    counts.as_ptr(),
                    [0i64, -4].as_ptr(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "displs[1] is negative",
            );
            bad(
                fcAllGatherV(
                    xp,
                    mine,
                    yp,
                    counts.as_ptr(),
                    [0i64, 1].as_ptr(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "overlap",
            );
            bad(
                fcAllGatherV(
                    xp,
                    mine,
                    yp,
                    counts.as_ptr(),
                    [0i64, i64::MAX].as_ptr(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "out of range",
            );
            bad(
                fcAllGatherV(
                    xp,
                    mine + 1,
                    yp,
                    counts.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "send count",
            );
            bad(
                fcAllGatherV(
                    null(),
                    mine,
                    yp,
                    counts.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "null input",
            );
            bad(
                fcAllGatherV(xp, mine, yp, counts.as_ptr(), null(), 42, c, null_mut()),
                "data type",
            );
            bad(
                fcReduceScatterV(xp, yp, null(), null(), fcFloat32, fcSum, c, null_mut()),
                "recvcounts is NULL",
            );
            bad(
                fcReduceScatterV(
                    xp,
                    yp,
                    [-3i64, 1].as_ptr(),
                    null(),
                    fcFloat32,
                    fcSum,
                    c,
                    null_mut(),
                ),
                "recvcounts[0] is negative",
            );
            bad(
                fcReduceScatterV(
                    xp,
                    yp,
                    counts.as_ptr(),
                    [4i64, 3].as_ptr(),
                    fcFloat32,
                    fcSum,
                    c,
                    null_mut(),
                ),
                "overlap",
            );
            bad(
                fcReduceScatterV(
                    xp,
                    yp,
                    counts.as_ptr(),
                    null(),
                    fcFloat32,
                    77,
                    c,
                    null_mut(),
                ),
                "operator code",
            );
            bad(
                fcReduceScatterV(
                    xp,
                    null_mut(),
                    counts.as_ptr(),
                    null(),
                    fcFloat32,
                    fcSum,
                    c,
                    null_mut(),
                ),
                "null output",
            );
            // Elements whose bytes overflow: the count fits in elements, not in bytes.
            let huge = [1i64 << 61, 0];
            bad(
                fcReduceScatterV(
                    xp,
                    yp,
                    huge.as_ptr(),
                    null(),
                    fcFloat64,
                    fcSum,
                    c,
                    null_mut(),
                ),
                "too large",
            );
            let two = [1i64, 1];
            bad(
                fcAllToAllV(
                    xp,
                    null(),
                    null(),
                    yp,
                    two.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "sendcounts is NULL",
            );
            bad(
                fcAllToAllV(
                    xp,
                    two.as_ptr(),
                    null(),
                    yp,
                    null(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "recvcounts is NULL",
            );
            bad(
                fcAllToAllV(
                    xp,
                    [1i64, -1].as_ptr(),
                    null(),
                    yp,
                    two.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "sendcounts[1] is negative",
            );
            bad(
                fcAllToAllV(
                    xp,
                    two.as_ptr(),
                    [0i64, -1].as_ptr(),
                    yp,
                    two.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "sdispls[1] is negative",
            );
            bad(
                fcAllToAllV(
                    xp,
                    two.as_ptr(),
                    null(),
                    yp,
                    two.as_ptr(),
                    [-1i64, 0].as_ptr(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "rdispls[0] is negative",
            );
            bad(
                fcAllToAllV(
                    xp,
                    [2i64, 2].as_ptr(),
                    [0i64, 1].as_ptr(),
                    yp,
                    two.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "overlap",
            );
            bad(
                fcAllToAllV(
                    xp,
                    two.as_ptr(),
                    null(),
                    yp,
                    two.as_ptr(),
                    [1i64, 1].as_ptr(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "overlap",
            );
            // This rank's block to itself must be the same size both ways.
            let mut selfish = [1i64, 1];
            selfish[r] = 2;
            bad(
                fcAllToAllV(
                    xp,
                    selfish.as_ptr(),
                    null(),
                    yp,
                    two.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "received from it",
            );
            // In place needs one layout both ways.
            let zp = y.as_mut_ptr().cast::<c_void>();
            bad(
                fcAllToAllV(
                    zp.cast_const(),
                    two.as_ptr(),
                    null(),
                    zp,
                    two.as_ptr(),
                    [2i64, 4].as_ptr(),
                    fcFloat32,
                    c,
                    null_mut(),
                ),
                "in-place",
            );
            // Roots out of range; a stream (device buffers) is refused.
            bad(
                fcGather(xp, yp, 1, fcFloat32, 2, c, null_mut()),
                "root 2 out of range",
            );
            bad(
                fcScatter(xp, yp, 1, fcFloat32, -1, c, null_mut()),
                "root/peer is negative",
            );
            let stream = 0x1000 as *mut c_void;
            assert_eq!(
                fcAllToAllV(
                    xp,
                    two.as_ptr(),
                    null(),
                    yp,
                    two.as_ptr(),
                    null(),
                    fcFloat32,
                    c,
                    stream
                ),
                fcInvalidUsage
            );
            assert!(last_error().contains("host buffers"), "{}", last_error());
            assert_eq!(
                fcGather(xp, yp, 1, fcFloat32, 0, c, stream),
                fcInvalidArgument
            );
        }
        // Refused calls leave the communicator usable (and in step across ranks).
        let mut out = [0f32; 5];
        let mine_v = vec![r as f32; mine];
        // SAFETY: `mine_v` holds counts[r], `out` both blocks.
        ok(unsafe {
            fcAllGatherV(
                mine_v.as_ptr().cast(),
                mine,
                out.as_mut_ptr().cast(),
                counts.as_ptr(),
                null(),
                fcFloat32,
                c,
                null_mut(),
            )
        });
        assert_eq!(out, [0.0, 0.0, 1.0, 1.0, 1.0]);
    });
}
