//! Bad calls return typed errors and leave the communicator usable; disagreeing ranks get
//! `Error::Mismatch`; failures (killed rank, cut link, silent peer, abort) become errors
//! within the deadline, never hangs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrocoll::{Collective, Config, DataType, Error, RawCall, ReduceOp, World};

fn quick(timeout_ms: u64) -> Config {
    Config::default().with_timeout(Duration::from_millis(timeout_ms))
}

#[test]
fn bad_arguments_are_typed_errors_and_harmless() {
    let res = World::new(3)
        .run(|c| {
            let mut small = vec![0f32; 2];
            let big = vec![1f32; 8];
            let errs = vec![
                c.all_reduce_into(&big, &mut small, ReduceOp::Sum)
                    .unwrap_err(),
                c.all_gather(&big, &mut small).unwrap_err(),
                c.reduce_scatter(&small, &mut [0f32; 2], ReduceOp::Sum)
                    .unwrap_err(),
                c.broadcast(&mut small, 3).unwrap_err(),
                c.reduce(&mut small, ReduceOp::Max, 7).unwrap_err(),
                c.all_to_all(&[0f32; 4], &mut [0f32; 4]).unwrap_err(),
                c.send(&big, c.rank()).unwrap_err(),
                c.recv(&mut small, 9).unwrap_err(),
            ];
            // SAFETY: the null pointers are refused before any access.
            let null = unsafe {
                c.collective_raw(RawCall {
                    kind: Collective::AllReduce,
                    input: std::ptr::null(),
                    output: std::ptr::null_mut(),
                    count: 4,
                    dtype: DataType::F32,
                    op: ReduceOp::Sum,
                    root: 0,
                })
            }
            .unwrap_err();
            // count × world overflows for the gather-like collectives: refused, not wrapped.
            let huge: Vec<Error> = [
                Collective::AllGather,
                Collective::ReduceScatter,
                Collective::AllToAll,
            ]
            .into_iter()
            .map(|kind| {
                let mut one = [0f32; 1];
                // SAFETY: the count is refused before any access to the buffers.
                unsafe {
                    c.collective_raw(RawCall {
                        kind,
                        input: one.as_ptr().cast(),
                        output: one.as_mut_ptr().cast(),
                        count: usize::MAX / 2,
                        dtype: DataType::F32,
                        op: ReduceOp::Sum,
                        root: 0,
                    })
                }
                .unwrap_err()
            })
            .collect();
            assert!(
                huge.iter().all(|e| matches!(e, Error::CountTooLarge(_))),
                "{huge:?}"
            );
            // The communicator still works after all that.
            let mut v = vec![c.rank() as i32 + 1; 5];
            c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
            (errs, null, v)
        })
        .unwrap();
    for (errs, null, v) in res {
        assert!(
            matches!(
                errs[0],
                Error::BufferTooSmall {
                    buffer: "output",
                    needed: 8,
                    got: 2
                }
            ),
            "{}",
            errs[0]
        );
        assert!(matches!(errs[1], Error::BufferTooSmall { needed: 24, .. }));
        assert!(matches!(
            errs[2],
            Error::BufferTooSmall {
                buffer: "input",
                needed: 6,
                got: 2
            }
        ));
        assert!(matches!(
            errs[3],
            Error::RootOutOfRange { root: 3, world: 3 }
        ));
        assert!(matches!(errs[4], Error::RootOutOfRange { root: 7, .. }));
        assert!(matches!(errs[5], Error::Indivisible { len: 4, world: 3 }));
        assert!(matches!(errs[6], Error::SelfPeer { .. }));
        assert!(matches!(errs[7], Error::PeerOutOfRange { peer: 9, .. }));
        assert!(matches!(null, Error::NullPointer("input")));
        assert_eq!(v, vec![6; 5]);
    }
}

#[test]
fn forced_algorithm_that_does_not_apply_is_refused() {
    let cfg = Config::default().with_algo("ring").unwrap();
    let res = World::new(2)
        .config(cfg)
        .run(|c| {
            let e = c.all_to_all(&[1u8, 2], &mut [0u8; 2]).unwrap_err();
            let mut v = [1u8; 4];
            c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
            (e.to_string(), v)
        })
        .unwrap();
    for (e, v) in res {
        assert_eq!(e, "algorithm ring is not supported for all_to_all");
        assert_eq!(v, [2u8; 4]);
    }
}

#[test]
fn zero_world_is_refused() {
    assert!(matches!(
        World::new(0).communicators().err(),
        Some(Error::InvalidWorld { world: 0, .. })
    ));
}

#[test]
fn mismatched_ops_are_reported_not_hung() {
    let res = World::new(3)
        .config(quick(5000))
        .run(|c| {
            let mut ok = [1f32; 16];
            c.all_reduce(&mut ok, ReduceOp::Sum).unwrap(); // seq 0 agrees
            let mut v = [1f32; 16];
            let op = if c.rank() == 1 {
                ReduceOp::Max
            } else {
                ReduceOp::Sum
            };
            c.all_reduce(&mut v, op).unwrap_err()
        })
        .unwrap();
    let mismatches: Vec<_> = res
        .iter()
        .filter(|e| matches!(e, Error::Mismatch { seq: 1, .. }))
        .collect();
    assert!(!mismatches.is_empty(), "{res:?}");
    for e in &res {
        // Others learn through the failed ranks closing their links, never by hanging.
        assert!(
            matches!(e, Error::Mismatch { .. } | Error::PeerFailed { .. }),
            "{e}"
        );
    }
    let text = mismatches[0].to_string();
    assert!(text.contains("#1 all_reduce"), "{text}");
}

#[test]
fn mismatched_counts_and_collectives_are_reported() {
    let res = World::new(2)
        .config(quick(5000))
        .run(|c| {
            if c.rank() == 0 {
                c.all_reduce(&mut [1u32; 10], ReduceOp::Sum).unwrap_err()
            } else {
                c.all_reduce(&mut [1u32; 12], ReduceOp::Sum).unwrap_err()
            }
        })
        .unwrap();
    // The rank that reads the other's header first reports the mismatch and closes its links;
    // the other may see the closed link before it gets to read (then PeerFailed).
    assert!(
        res.iter()
            .any(|e| matches!(e, Error::Mismatch { seq: 0, .. })),
        "{res:?}"
    );
    assert!(
        res.iter()
            .all(|e| matches!(e, Error::Mismatch { .. } | Error::PeerFailed { .. })),
        "{res:?}"
    );
    let res = World::new(2)
        .config(quick(5000))
        .run(|c| {
            if c.rank() == 0 {
                c.broadcast(&mut [1u32; 10], 0).map(|_| ())
            } else {
                c.all_reduce(&mut [1u32; 10], ReduceOp::Sum).map(|_| ())
            }
        })
        .unwrap();
    assert!(
        res.iter().any(|r| matches!(r, Err(Error::Mismatch { .. }))),
        "{res:?}"
    );
}

#[test]
fn later_calls_report_the_failure() {
    let res = World::new(2)
        .config(quick(5000))
        .run(|c| {
            let op = if c.rank() == 0 {
                ReduceOp::Min
            } else {
                ReduceOp::Sum
            };
            let _ = c.all_reduce(&mut [1i8; 3], op);
            c.barrier().unwrap_err()
        })
        .unwrap();
    assert!(
        res.iter().all(|e| matches!(e, Error::CommFailed(_))),
        "{res:?}"
    );
}

#[test]
fn killed_rank_fails_survivors_quickly() {
    let t0 = Instant::now();
    let res = World::new(4)
        .config(quick(20_000))
        .run_with_faults(|c, faults| {
            let mut v = vec![1f32; 1 << 16];
            for i in 0..1000 {
                if c.rank() == 2 && i == 20 {
                    faults.kill(2);
                }
                if let Err(e) = c.all_reduce(&mut v, ReduceOp::Sum) {
                    return Some(e);
                }
            }
            None
        })
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    for (r, e) in res.iter().enumerate() {
        let e = e
            .as_ref()
            .unwrap_or_else(|| panic!("rank {r} finished 1000 all-reduces with a dead peer"));
        if r == 2 {
            assert!(matches!(e, Error::Aborted), "{e}");
        } else {
            assert!(matches!(e, Error::PeerFailed { .. }), "rank {r}: {e}");
        }
    }
}

#[test]
fn cut_link_is_an_error() {
    let res = World::new(3)
        .config(quick(20_000))
        .run_with_faults(|c, faults| {
            if c.rank() == 0 {
                faults.drop_link(0, 1);
            }
            let mut v = vec![1u64; 4096];
            (0..100).find_map(|_| c.all_reduce(&mut v, ReduceOp::Sum).err())
        })
        .unwrap();
    assert!(res.iter().all(|e| e.is_some()), "{res:?}");
}

#[test]
fn silent_peer_times_out_no_earlier_than_the_deadline() {
    let t0 = Instant::now();
    let res = World::new(3)
        .config(quick(400))
        .run(|c| {
            if c.rank() == 1 {
                std::thread::sleep(Duration::from_millis(1500));
                return None;
            }
            let start = Instant::now();
            let e = c.all_reduce(&mut [1f64; 64], ReduceOp::Sum).unwrap_err();
            Some((e, start.elapsed()))
        })
        .unwrap();
    for (e, waited) in res.into_iter().flatten() {
        assert!(
            matches!(e, Error::Timeout { .. } | Error::PeerFailed { .. }),
            "{e}"
        );
        if matches!(e, Error::Timeout { .. }) {
            assert!(waited >= Duration::from_millis(380), "{waited:?}");
            assert!(e.to_string().contains("timed out"), "{e}");
        }
        assert!(waited < Duration::from_millis(1200), "{waited:?}");
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn delayed_links_still_give_right_answers() {
    let res = World::new(3)
        .run_with_faults(|c, faults| {
            if c.rank() == 0 {
                faults.set_delay(0, 1, Duration::from_millis(2));
                faults.set_delay(2, 0, Duration::from_millis(3));
            }
            c.barrier().unwrap();
            let mut v: Vec<i32> = (0..1000).map(|i| i * (c.rank() as i32 + 1)).collect();
            c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
            v
        })
        .unwrap();
    let want: Vec<i32> = (0..1000).map(|i| i * 6).collect();
    assert!(res.iter().all(|v| *v == want));
}

#[test]
fn abort_from_another_thread_unblocks_a_waiting_call() {
    let (comms, _faults) = World::new(2).config(quick(60_000)).communicators().unwrap();
    let c0 = &comms[0];
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            c0.abort();
        });
        let t0 = Instant::now();
        // Rank 1 never joins: only abort can end this.
        let e = c0.all_reduce(&mut [1f32; 8], ReduceOp::Sum).unwrap_err();
        assert!(matches!(e, Error::Aborted), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        done.store(true, Ordering::SeqCst);
    });
    assert!(done.load(Ordering::SeqCst));
    assert!(matches!(c0.barrier().unwrap_err(), Error::CommFailed(_)));
}

#[test]
fn async_calls_complete_in_order_and_give_buffers_back() {
    let res = World::new(4)
        .run(|c| {
            let r = c.rank() as f32;
            let w1 = c.all_reduce_async(vec![r; 1000], ReduceOp::Sum).unwrap();
            let w2 = c.all_gather_async(vec![r; 3], vec![0f32; 12]).unwrap();
            let w3 = c.broadcast_async(vec![r; 10], 2).unwrap();
            let mut blocking = [1u8; 5];
            c.all_reduce(&mut blocking, ReduceOp::Sum).unwrap();
            let b = w3.wait().unwrap();
            let (_, g) = w2.wait().unwrap();
            assert!(w1.test());
            let a = w1.wait().unwrap();
            let barrier = c.barrier_async().unwrap();
            barrier.wait().unwrap();
            (a, g, b, blocking)
        })
        .unwrap();
    for (a, g, b, blocking) in res {
        assert_eq!(a, vec![6.0; 1000]);
        assert_eq!(g, vec![0., 0., 0., 1., 1., 1., 2., 2., 2., 3., 3., 3.]);
        assert_eq!(b, vec![2.0; 10]);
        assert_eq!(blocking, [4u8; 5]);
    }
}

/// `wait` hands back a finished async call while the engine's background thread is blocked
/// in a later call that waits for a peer: rank 1 joins the second call only once rank 0 has
/// its first one back. (`wait` used to sleep on the engine lock, which the background thread
/// holds until the queue is empty, so this waited for the timeout; in a pipeline of async
/// calls it put the ranks in lockstep.)
#[test]
fn wait_returns_a_finished_call_while_a_later_one_waits_for_a_peer() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Mutex::new(rx);
    let res = World::new(2)
        .config(quick(20_000))
        .run(|c| -> ferrocoll::Result<(Vec<f32>, Vec<f32>)> {
            let first = c.all_reduce_async(vec![1f32; 16], ReduceOp::Sum)?;
            if c.rank() == 0 {
                let second = c.all_reduce_async(vec![2f32; 16], ReduceOp::Sum)?;
                // Once `first` has run, the background thread is inside `second`.
                while !first.test() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let a = first.wait()?;
                tx.send(()).expect("rank 1 is listening");
                Ok((a, second.wait()?))
            } else {
                let a = first.wait()?;
                let heard = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                assert!(heard.is_ok(), "rank 0 never got its finished call back");
                let b = c.all_reduce_async(vec![2f32; 16], ReduceOp::Sum)?;
                Ok((a, b.wait()?))
            }
        })
        .unwrap();
    for r in res {
        let (a, b) = r.unwrap();
        assert_eq!((a, b), (vec![2f32; 16], vec![4f32; 16]));
    }
}

#[test]
fn send_and_recv_pair_up_per_peer() {
    let res = World::new(3)
        .run(|c| match c.rank() {
            0 => {
                c.send(&[1u32, 2, 3], 1).unwrap();
                c.send(&[4u32, 5], 2).unwrap();
                c.send(&[6u32], 1).unwrap();
                vec![]
            }
            1 => {
                let (mut a, mut b) = ([0u32; 3], [0u32; 1]);
                c.recv(&mut a, 0).unwrap();
                c.recv(&mut b, 0).unwrap();
                [a.to_vec(), b.to_vec()].concat()
            }
            _ => {
                let w = c.recv_async(vec![0u32; 2], 0).unwrap();
                w.wait().unwrap()
            }
        })
        .unwrap();
    assert_eq!(res[1], vec![1, 2, 3, 6]);
    assert_eq!(res[2], vec![4, 5]);
}

#[test]
fn recv_of_wrong_length_is_a_mismatch() {
    let res = World::new(2)
        .config(quick(5000))
        .run(|c| {
            if c.rank() == 0 {
                c.send(&[1u8; 4], 1)
            } else {
                c.recv(&mut [0u8; 5], 0)
            }
        })
        .unwrap();
    assert!(matches!(res[1], Err(Error::Mismatch { .. })), "{res:?}");
}

/// All-to-all-v counts that disagree between the two sides of a pair are a mismatch in the
/// call itself, on the receiving rank, when one side is zero too: empty blocks still
/// exchange a message (its frame carries the size), so the receiver neither waits for data
/// that never comes nor leaves the sender's block for the pair's next call.
#[test]
fn all_to_all_v_counts_that_disagree_are_a_mismatch_in_the_call() {
    // Per case, each rank's (send counts, receive counts). Only rank 0's send count for
    // rank 1 and rank 1's receive count from rank 0 disagree: zero against three, three
    // against zero, two against five, and four for a rank 1 that moves nothing by its own
    // counts.
    type Counts = ([usize; 2], [usize; 2]);
    let cases: [[Counts; 2]; 4] = [
        [([1, 0], [1, 1]), ([1, 1], [3, 1])],
        [([1, 3], [1, 1]), ([1, 1], [0, 1])],
        [([1, 2], [1, 1]), ([1, 1], [5, 1])],
        [([0, 4], [0, 0]), ([0, 0], [0, 0])],
    ];
    for case in cases {
        let res = World::new(2)
            .config(quick(20_000))
            .run(|c| {
                let (sc, rc) = case[c.rank()];
                c.all_to_all_v(&[1f32; 8], &sc, None, &mut [0f32; 8], &rc, None)
            })
            .unwrap();
        // A receiver that waited for the missing block would report a timeout instead.
        assert!(
            matches!(res[1], Err(Error::Mismatch { seq: 0, .. })),
            "{case:?}: {res:?}"
        );
        // The sender's block went out whole before the receiver objected: it may finish,
        // or learn of the failure from the closed link; it never waits for the timeout.
        assert!(
            matches!(
                res[0],
                Ok(()) | Err(Error::Mismatch { .. }) | Err(Error::PeerFailed { .. })
            ),
            "{case:?}: {res:?}"
        );
    }
}
