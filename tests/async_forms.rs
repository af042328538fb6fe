//! Every `*_async` form gives the same result as its blocking twin, several of them in
//! flight at once, and a bad buffer is refused when the call is made, not later.

use ferrocoll::{Communicator, Error, ReduceOp, World};

const WORLD: usize = 3;
const N: usize = 4 * WORLD + 3;

/// Rank `r`'s input: distinct per rank and element, small integers so sums are exact.
fn input(r: usize, len: usize) -> Vec<f32> {
    (0..len).map(|i| (r * 100 + i) as f32).collect()
}

/// What every form returns, blocking or not, in one fixed order.
fn blocking(c: &Communicator) -> Vec<Vec<f32>> {
    let r = c.rank();
    let chunk = N / WORLD * WORLD; // a multiple of the world for the in-place forms
    let mut out = Vec::new();

    let mut a = input(r, N);
    c.all_reduce(&mut a, ReduceOp::Sum).unwrap();
    out.push(a);
    let mut o = vec![0f32; N];
    c.all_reduce_into(&input(r, N), &mut o, ReduceOp::Max)
        .unwrap();
    out.push(o);
    let mut o = vec![0f32; N * WORLD];
    c.all_gather(&input(r, N), &mut o).unwrap();
    out.push(o);
    let mut a = input(r, chunk);
    c.all_gather_in_place(&mut a).unwrap();
    out.push(a);
    let mut o = vec![0f32; N];
    c.reduce_scatter(&input(r, N * WORLD), &mut o, ReduceOp::Sum)
        .unwrap();
    out.push(o);
    let mut a = input(r, chunk);
    c.reduce_scatter_in_place(&mut a, ReduceOp::Min).unwrap();
    out.push(a);
    let mut a = input(r, N);
    c.broadcast(&mut a, 2).unwrap();
    out.push(a);
    let mut o = vec![0f32; N];
    c.broadcast_into(&input(r, N), &mut o, 1).unwrap();
    out.push(o);
    let mut a = input(r, N);
    c.reduce(&mut a, ReduceOp::Prod, 0).unwrap();
    out.push(a);
    let mut o = vec![-1f32; N];
    c.reduce_into(&input(r, N), &mut o, ReduceOp::Sum, 2)
        .unwrap();
    out.push(o);
    let mut o = vec![0f32; chunk];
    c.all_to_all(&input(r, chunk), &mut o).unwrap();
    out.push(o);
    let mut a = input(r, chunk);
    c.all_to_all_in_place(&mut a).unwrap();
    out.push(a);
    c.barrier().unwrap();
    // A ring of sends: rank r sends to r + 1 and receives from r - 1.
    let (to, from) = ((r + 1) % WORLD, (r + WORLD - 1) % WORLD);
    let mut got = vec![0f32; N];
    if r % 2 == 0 {
        c.send(&input(r, N), to).unwrap();
        c.recv(&mut got, from).unwrap();
    } else {
        c.recv(&mut got, from).unwrap();
        c.send(&input(r, N), to).unwrap();
    }
    out.push(got);
    out
}

/// The same calls, all started before any is waited on (send/recv as the last pair).
fn asynchronous(c: &Communicator) -> Vec<Vec<f32>> {
    let r = c.rank();
    let chunk = N / WORLD * WORLD;
    let w1 = c.all_reduce_async(input(r, N), ReduceOp::Sum).unwrap();
    let w2 = c
        .all_reduce_into_async(input(r, N), vec![0f32; N], ReduceOp::Max)
        .unwrap();
    let w3 = c
        .all_gather_async(input(r, N), vec![0f32; N * WORLD])
        .unwrap();
    let w4 = c.all_gather_in_place_async(input(r, chunk)).unwrap();
    let w5 = c
        .reduce_scatter_async(input(r, N * WORLD), vec![0f32; N], ReduceOp::Sum)
        .unwrap();
    let w6 = c
        .reduce_scatter_in_place_async(input(r, chunk), ReduceOp::Min)
        .unwrap();
    let w7 = c.broadcast_async(input(r, N), 2).unwrap();
    let w8 = c
        .broadcast_into_async(input(r, N), vec![0f32; N], 1)
        .unwrap();
    let w9 = c.reduce_async(input(r, N), ReduceOp::Prod, 0).unwrap();
    let w10 = c
        .reduce_into_async(input(r, N), vec![-1f32; N], ReduceOp::Sum, 2)
        .unwrap();
    let w11 = c
        .all_to_all_async(input(r, chunk), vec![0f32; chunk])
        .unwrap();
    let w12 = c.all_to_all_in_place_async(input(r, chunk)).unwrap();
    let w13 = c.barrier_async().unwrap();
    let (to, from) = ((r + 1) % WORLD, (r + WORLD - 1) % WORLD);
    let ws = c.send_async(input(r, N), to).unwrap();
    let wr = c.recv_async(vec![0f32; N], from).unwrap();
    // Waited on in reverse: completion does not depend on the order of the waits.
    let got = wr.wait().unwrap();
    ws.wait().unwrap();
    w13.wait().unwrap();
    let mut out = vec![
        w12.wait().unwrap(),
        w11.wait().unwrap().1,
        w10.wait().unwrap().1,
        w9.wait().unwrap(),
        w8.wait().unwrap().1,
        w7.wait().unwrap(),
        w6.wait().unwrap(),
        w5.wait().unwrap().1,
        w4.wait().unwrap(),
        w3.wait().unwrap().1,
        w2.wait().unwrap().1,
        w1.wait().unwrap(),
    ];
    out.reverse();
    out.push(got);
    out
}

#[test]
fn every_async_form_matches_its_blocking_twin() {
    let want = World::new(WORLD).run(blocking).unwrap();
    let got = World::new(WORLD).run(asynchronous).unwrap();
    assert_eq!(want.len(), WORLD);
    for (r, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.len(), 13);
        for (k, (a, b)) in w.iter().zip(g).enumerate() {
            assert_eq!(a, b, "rank {r}, call {k}");
        }
    }
    // Spot checks against hand-computed values, so the two forms cannot agree on a wrong
    // answer: all-reduce sum of element 0 is 0 + 100 + 200; the ring's receive comes from
    // the previous rank.
    for (r, w) in want.iter().enumerate() {
        assert_eq!(w[0][0], 300.0);
        assert_eq!(w[0][N - 1], 300.0 + 3.0 * (N - 1) as f32);
        let from = (r + WORLD - 1) % WORLD;
        assert_eq!(w[12], input(from, N));
        assert_eq!(w[7], input(1, N), "broadcast_into from root 1");
    }
}

#[test]
fn async_forms_refuse_bad_buffers_when_called() {
    let res = World::new(WORLD)
        .run(|c| {
            let errs = [
                c.all_reduce_into_async(vec![0f32; 8], vec![0f32; 7], ReduceOp::Sum)
                    .err(),
                c.all_gather_async(vec![0f32; 4], vec![0f32; 11]).err(),
                c.all_gather_in_place_async(vec![0f32; 10]).err(),
                c.reduce_scatter_async(vec![0f32; 8], vec![0f32; 3], ReduceOp::Sum)
                    .err(),
                c.reduce_scatter_in_place_async(vec![0f32; 4], ReduceOp::Sum)
                    .err(),
                c.all_to_all_async(vec![0f32; 7], vec![0f32; 7]).err(),
                c.all_to_all_in_place_async(vec![0f32; 5]).err(),
                c.all_to_all_async(vec![0f32; 6], vec![0f32; 5]).err(),
                // Only the root's input/output are read, so only the root is refused.
                c.broadcast_into_async(vec![0f32; 2], vec![0f32; 3], c.rank())
                    .err(),
                c.reduce_into_async(vec![0f32; 3], vec![0f32; 2], ReduceOp::Sum, c.rank())
                    .err(),
                c.broadcast_async(vec![0f32; 2], WORLD).err(),
                c.send_async(vec![0f32; 2], c.rank()).err(),
            ];
            // The communicator is still usable: nothing was started.
            let mut x = [1u32; 4];
            c.all_reduce(&mut x, ReduceOp::Sum).unwrap();
            (errs, x)
        })
        .unwrap();
    for (r, (errs, x)) in res.into_iter().enumerate() {
        assert_eq!(x, [WORLD as u32; 4]);
        for (k, e) in errs.into_iter().enumerate() {
            let e = e.unwrap_or_else(|| panic!("rank {r}: bad call {k} was accepted"));
            let ok = match k {
                0..=1 | 3 | 7..=9 => matches!(e, Error::BufferTooSmall { .. }),
                2 | 4..=6 => matches!(e, Error::Indivisible { .. }),
                10 => matches!(e, Error::RootOutOfRange { .. }),
                _ => matches!(e, Error::SelfPeer { .. }),
            };
            assert!(ok, "rank {r}, call {k}: {e:?}");
        }
    }
}

/// `Work::wait_for` is bounded: false while a peer is late, true once the call finished
/// (then `wait` gives the result), and it never takes the result itself.
#[test]
fn wait_for_is_bounded_and_leaves_the_result() {
    use std::time::{Duration, Instant};
    let res = World::new(2)
        .run(|c| {
            if c.rank() == 1 {
                std::thread::sleep(Duration::from_millis(400));
            }
            let w = c.all_reduce_async(vec![c.rank() as f32 + 1.0; 1000], ReduceOp::Sum)?;
            let t0 = Instant::now();
            let early = if c.rank() == 0 {
                Some((w.wait_for(Duration::from_millis(50)), t0.elapsed()))
            } else {
                None
            };
            let done = w.wait_for(Duration::from_secs(20));
            let again = w.wait_for(Duration::ZERO);
            let v = w.wait()?;
            Ok::<_, Error>((early, done, again, v[0], v[999]))
        })
        .unwrap();
    for (r, out) in res.into_iter().enumerate() {
        let (early, done, again, a, b) = out.unwrap();
        if r == 0 {
            let (finished, took) = early.unwrap();
            assert!(!finished, "finished while rank 1 had not called");
            assert!(
                took >= Duration::from_millis(50),
                "returned early: {took:?}"
            );
            assert!(took < Duration::from_millis(350), "returned late: {took:?}");
        }
        assert!(done && again, "rank {r}");
        assert_eq!((a, b), (3.0, 3.0), "rank {r}");
    }
}
