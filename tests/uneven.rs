//! Gather, scatter, all-gather-v, reduce-scatter-v, all-to-all-v and premul-sum run by the
//! real executor over in-process links: every algorithm that implements each (forced), world
//! sizes 1 to 5, every element type, zero counts, empty blocks and gaps, both memory
//! layouts, against the sequential reference; the typed, asynchronous and raw forms agree;
//! bad layouts are typed errors that leave the communicator usable.

use std::ffi::c_void;
use std::time::Duration;

use ferrocoll::verify::{
    count_wrong, expected, expected_uneven, magnitudes, magnitudes_uneven, premultiplied,
    test_input,
};
use ferrocoll::{
    AlgoId, CollSpec, Collective, Communicator, Config, DataType, Error, RawCall, RawExtra,
    ReduceOp, Uneven, World,
};

fn config(algo: &str) -> Config {
    let mut c = Config::default()
        .with_algo(algo)
        .unwrap()
        .with_segment_bytes(64)
        .with_timeout(Duration::from_secs(60));
    c.spin = Duration::from_micros(5);
    c
}

/// Layouts for `p` ranks, every rank's own (the same for the block collectives): blocks
/// with empty ones, packed or gapped in reverse rank order.
fn layouts(kind: Collective, p: usize, gapped: bool) -> Vec<Uneven> {
    let c = |r: usize| (r * 7 + 3) % 5 * 9;
    let counts: Vec<usize> = (0..p).map(c).collect();
    let displs: Vec<usize> = (0..p).map(|r| 2 + (p - 1 - r) * 50).collect();
    let d = gapped.then_some(&displs[..]);
    match kind {
        Collective::AllToAllV => (0..p)
            .map(|i| {
                let m = |i: usize, j: usize| (i * 3 + j * 5 + 1) % 4 * 7;
                let send: Vec<usize> = (0..p).map(|j| m(i, j)).collect();
                let recv: Vec<usize> = (0..p).map(|j| m(j, i)).collect();
                let sd: Vec<usize> = (0..p).map(|j| 1 + (p - 1 - j) * 40).collect();
                let sd = gapped.then_some(&sd[..]);
                Uneven::all_to_all(p, &send, sd, &recv, None).unwrap()
            })
            .collect(),
        _ => vec![Uneven::blocks(p, &counts, d).unwrap(); p],
    }
}

/// Runs one uneven call through the raw API on this rank and counts wrong elements.
fn run_uneven(
    c: &Communicator,
    kind: Collective,
    lay: &[Uneven],
    dtype: DataType,
    op: ReduceOp,
    in_place: bool,
) -> ferrocoll::Result<usize> {
    let (p, r) = (c.world_size(), c.rank());
    let es = dtype.size();
    let u = &lay[r];
    let inputs: Vec<Vec<u8>> = (0..p)
        .map(|q| test_input(dtype, op, q, lay[q].input_len(kind, q), 3))
        .collect();
    let (n_in, n_out) = (u.input_len(kind, r), u.output_len(kind, r));
    let own = u.displs()[r];
    // In place: one buffer in NCCL's layout; out of place: input then output.
    let (mut buf, inp, out) = if in_place {
        let len = (n_in.max(n_out) + own) * es;
        let mut b = vec![0x5Au8; len];
        let at = if kind == Collective::AllGatherV {
            own * es
        } else {
            0
        };
        b[at..at + inputs[r].len()].copy_from_slice(&inputs[r]);
        let (i, o) = match kind {
            Collective::AllGatherV => (own * es, 0),
            Collective::ReduceScatterV => (0, own * es),
            _ => (0, 0),
        };
        (b, i, o)
    } else {
        let mut b = inputs[r].clone();
        b.resize(n_in * es + n_out * es, 0x5A);
        (b, 0, n_in * es)
    };
    let before = buf[out..out + n_out * es].to_vec();
    let base = buf.as_mut_ptr();
    let call = RawCall {
        kind,
        input: base.wrapping_add(inp) as *const c_void,
        output: base.wrapping_add(out) as *mut c_void,
        count: if kind == Collective::AllGatherV {
            u.counts()[r]
        } else {
            0
        },
        dtype,
        op,
        root: 0,
    };
    // SAFETY: `buf` holds the input and output blocks of this rank's layout for the call.
    unsafe { c.collective_raw_with(call, &RawExtra::uneven(u.clone()))? };
    let got = &buf[out..out + n_out * es];
    let want = expected_uneven(kind, lay, dtype, op, &inputs, r, &before);
    let bound = if kind == Collective::ReduceScatterV {
        magnitudes_uneven(lay, dtype, op, &inputs, r)
    } else {
        Vec::new()
    };
    Ok(count_wrong(dtype, op, p, got, &want, &bound))
}

fn check_all(
    world: usize,
    algo: &str,
    f: impl Fn(&Communicator) -> ferrocoll::Result<usize> + Sync,
) {
    let outs = World::new(world)
        .ring_bytes(1 << 12)
        .config(config(algo))
        .run(f)
        .unwrap();
    for (r, o) in outs.into_iter().enumerate() {
        match o {
            Ok(0) => {}
            Ok(w) => panic!("{algo} world {world}: rank {r} has {w} wrong elements"),
            Err(e) => panic!("{algo} world {world}: rank {r}: {e}"),
        }
    }
}

#[test]
fn uneven_collectives_match_the_reference() {
    let dtypes = [
        (DataType::F32, ReduceOp::Sum),
        (DataType::F16, ReduceOp::Avg),
        (DataType::BF16, ReduceOp::Max),
        (DataType::F8E4M3, ReduceOp::Sum),
        (DataType::F8E5M2, ReduceOp::Min),
        (DataType::I64, ReduceOp::Prod),
        (DataType::U8, ReduceOp::Sum),
    ];
    for kind in Collective::UNEVEN {
        for algo in AlgoId::all().filter(|a| a.supports(kind)) {
            for world in 1..=5 {
                check_all(world, algo.name(), |c| {
                    let mut wrong = 0;
                    for (i, &(dtype, op)) in dtypes.iter().enumerate() {
                        for gapped in [false, true] {
                            let lay = layouts(kind, world, gapped);
                            let in_place = (i % 2 == 0) && kind != Collective::AllToAllV;
                            wrong += run_uneven(c, kind, &lay, dtype, op, in_place)?;
                        }
                    }
                    // All blocks empty: nothing moves.
                    let zero = vec![0; world];
                    let empty = match kind {
                        Collective::AllToAllV => {
                            vec![Uneven::all_to_all(world, &zero, None, &zero, None)?; world]
                        }
                        _ => vec![Uneven::blocks(world, &zero, None)?; world],
                    };
                    wrong += run_uneven(c, kind, &empty, DataType::F32, ReduceOp::Sum, false)?;
                    Ok(wrong)
                });
            }
        }
    }
}

/// Gather and scatter (also in the property matrix of `tests/collectives.rs`) at every
/// world size up to 5, every element type, zero counts, typed and asynchronous.
#[test]
fn gather_and_scatter_typed_and_async() {
    for world in 1..=5usize {
        check_all(world, "direct", |c| {
            let (p, r) = (c.world_size(), c.rank());
            let root = p - 1;
            let mut wrong = 0;
            for n in [0usize, 1, 33] {
                let mine: Vec<f32> = (0..n).map(|i| (r * 100 + i) as f32).collect();
                let all: Vec<f32> = (0..p)
                    .flat_map(|q| (0..n).map(move |i| (q * 100 + i) as f32))
                    .collect();
                let mut out = if r == root {
                    vec![0f32; p * n]
                } else {
                    Vec::new()
                };
                c.gather(&mine, &mut out, root)?;
                if r == root && out != all {
                    wrong += 1;
                }
                let (_, out2) = c
                    .gather_async(mine.clone(), vec![0f32; p * n], root)?
                    .wait()?;
                if r == root && out2 != all {
                    wrong += 1;
                }
                let src = if r == root { all.clone() } else { Vec::new() };
                let mut got = vec![0f32; n];
                c.scatter(&src, &mut got, root)?;
                wrong += usize::from(got != mine);
                let (_, got2) = c.scatter_async(src, vec![0f32; n], root)?.wait()?;
                wrong += usize::from(got2 != mine);
            }
            // Other types through the raw API against the reference.
            for dtype in DataType::ALL {
                for kind in [Collective::Gather, Collective::Scatter] {
                    let spec = CollSpec {
                        kind,
                        world: p,
                        count: 9,
                        root: p / 2,
                    };
                    let inputs: Vec<Vec<u8>> = (0..p)
                        .map(|q| test_input(dtype, ReduceOp::Sum, q, spec.input_len(), 1))
                        .collect();
                    let mut out = vec![0u8; spec.output_len() * dtype.size()];
                    let call = RawCall {
                        kind,
                        input: inputs[r].as_ptr().cast(),
                        output: out.as_mut_ptr().cast(),
                        count: 9,
                        dtype,
                        op: ReduceOp::Sum,
                        root: p / 2,
                    };
                    // SAFETY: both buffers hold what the spec needs and outlive the call.
                    unsafe { c.collective_raw(call)? };
                    let want = expected(&spec, dtype, ReduceOp::Sum, &inputs, r);
                    if !(kind == Collective::Gather && r != p / 2) {
                        wrong += count_wrong(dtype, ReduceOp::Sum, p, &out, &want, &[]);
                    }
                }
            }
            Ok(wrong)
        });
    }
}

/// The typed uneven forms, blocking and asynchronous, with f32 and bf16 data.
#[test]
fn typed_uneven_forms_blocking_and_async() {
    use half::bf16;
    // Every uneven collective by direct, then all-gather-v and reduce-scatter-v by the ring
    // (forced per collective; all-to-all-v keeps the tuner's choice, direct).
    let algos = ["direct", "all_gather_v:ring,reduce_scatter_v:ring"];
    for (world, algo) in (1..=5usize).flat_map(|w| algos.map(|a| (w, a))) {
        check_all(world, algo, |c| {
            let (p, r) = (c.world_size(), c.rank());
            let counts: Vec<usize> = (0..p).map(|q| (q * 3 + 1) % 4).collect();
            let total: usize = counts.iter().sum();
            let mut wrong = 0;
            let mine: Vec<bf16> = (0..counts[r])
                .map(|i| bf16::from_f32((r * 10 + i) as f32))
                .collect();
            let want: Vec<bf16> = (0..p)
                .flat_map(|q| (0..counts[q]).map(move |i| bf16::from_f32((q * 10 + i) as f32)))
                .collect();
            let mut out = vec![bf16::ZERO; total];
            c.all_gather_v(&mine, &mut out, &counts, None)?;
            wrong += usize::from(out != want);
            let (_, out) = c
                .all_gather_v_async(mine.clone(), vec![bf16::ZERO; total], &counts, None)?
                .wait()?;
            wrong += usize::from(out != want);
            // Reduce-scatter-v: every rank's input is 1, 2, 3, ...; the sum is p times it.
            let input: Vec<f32> = (0..total).map(|i| i as f32).collect();
            let off: usize = counts[..r].iter().sum();
            let want: Vec<f32> = (0..counts[r]).map(|i| ((off + i) * p) as f32).collect();
            let mut out = vec![0f32; counts[r]];
            c.reduce_scatter_v(&input, &mut out, &counts, None, ReduceOp::Sum)?;
            wrong += usize::from(out != want);
            let (_, out) = c
                .reduce_scatter_v_async(
                    input.clone(),
                    vec![0f32; counts[r]],
                    &counts,
                    None,
                    ReduceOp::Sum,
                )?
                .wait()?;
            wrong += usize::from(out != want);
            // All-to-all-v: rank i sends i + j + 1 elements to rank j, valued 100 i + j.
            let sc: Vec<usize> = (0..p).map(|j| r + j + 1).collect();
            let rc: Vec<usize> = (0..p).map(|j| j + r + 1).collect();
            let send: Vec<f32> = (0..p)
                .flat_map(|j| vec![(100 * r + j) as f32; sc[j]])
                .collect();
            let want: Vec<f32> = (0..p)
                .flat_map(|j| vec![(100 * j + r) as f32; rc[j]])
                .collect();
            let mut out = vec![0f32; want.len()];
            c.all_to_all_v(&send, &sc, None, &mut out, &rc, None)?;
            wrong += usize::from(out != want);
            let (_, out) = c
                .all_to_all_v_async(send, &sc, None, vec![0f32; want.len()], &rc, None)?
                .wait()?;
            wrong += usize::from(out != want);
            Ok(wrong)
        });
    }
}

/// Premul-sum through every algorithm that reduces, each rank with its own scalar, in every
/// float type and an integer one, typed (blocking and asynchronous) and raw.
#[test]
fn premul_sum_matches_the_reference() {
    for algo in AlgoId::all() {
        for world in [1usize, 2, 3, 5] {
            check_all(world, algo.name(), |c| {
                let (p, r) = (c.world_size(), c.rank());
                let s = 0.5 + r as f64;
                let mut wrong = 0;
                for kind in [
                    Collective::AllReduce,
                    Collective::ReduceScatter,
                    Collective::Reduce,
                ] {
                    if !algo.supports(kind) {
                        continue;
                    }
                    for dtype in [
                        DataType::F32,
                        DataType::F64,
                        DataType::F16,
                        DataType::BF16,
                        DataType::F8E4M3,
                        DataType::I32,
                    ] {
                        let scalars: Vec<f64> = (0..p).map(|q| 0.5 + q as f64).collect();
                        let spec = CollSpec {
                            kind,
                            world: p,
                            count: 13,
                            root: p - 1,
                        };
                        let op = ReduceOp::Sum;
                        let inputs: Vec<Vec<u8>> = (0..p)
                            .map(|q| test_input(dtype, op, q, spec.input_len(), 4))
                            .collect();
                        let pre: Vec<Vec<u8>> = (0..p)
                            .map(|q| premultiplied(dtype, &inputs[q], scalars[q]))
                            .collect();
                        let mut out = vec![0u8; spec.output_len() * dtype.size()];
                        let call = RawCall {
                            kind,
                            input: inputs[r].as_ptr().cast(),
                            output: out.as_mut_ptr().cast(),
                            count: 13,
                            dtype,
                            op,
                            root: p - 1,
                        };
                        // SAFETY: both buffers hold what the spec needs and outlive the call.
                        unsafe { c.collective_raw_with(call, &RawExtra::premul(scalars[r]))? };
                        if kind != Collective::Reduce || r == p - 1 {
                            let want = expected(&spec, dtype, op, &pre, r);
                            let bound = magnitudes(&spec, dtype, op, &pre, r);
                            wrong += count_wrong(dtype, op, p, &out, &want, &bound);
                        }
                    }
                }
                if algo.supports(Collective::AllReduce) {
                    // Σ_q (0.5 + q) × 2 = p² exactly.
                    let want = vec![(p * p) as f32; 7];
                    let mut buf = vec![2f32; 7];
                    c.all_reduce_premul_sum(&mut buf, s)?;
                    wrong += usize::from(buf != want);
                    let mut out = vec![0f32; 7];
                    c.all_reduce_premul_sum_into(&[2f32; 7], &mut out, s)?;
                    wrong += usize::from(out != want);
                    let buf = c.all_reduce_premul_sum_async(vec![2f32; 7], s)?.wait()?;
                    wrong += usize::from(buf != want);
                }
                if algo.supports(Collective::ReduceScatter) {
                    let want = vec![(p * p) as f32; 3];
                    let mut out = vec![0f32; 3];
                    c.reduce_scatter_premul_sum(&vec![2f32; 3 * p], &mut out, s)?;
                    wrong += usize::from(out != want);
                    let (_, out) = c
                        .reduce_scatter_premul_sum_async(vec![2f32; 3 * p], vec![0f32; 3], s)?
                        .wait()?;
                    wrong += usize::from(out != want);
                }
                if algo.supports(Collective::Reduce) {
                    let mut out = vec![0f32; 4];
                    c.reduce_premul_sum_into(&[2f32; 4], &mut out, s, 0)?;
                    wrong += usize::from(r == 0 && out != vec![(p * p) as f32; 4]);
                }
                Ok(wrong)
            });
        }
    }
}

/// Every bad argument of the typed forms is its typed error, and leaves the communicator
/// usable (the ranks stay in step).
#[test]
fn bad_arguments_are_typed_errors() {
    let outs = World::new(2)
        .run(|c| {
            let r = c.rank();
            let x = [1f32; 8];
            let mut y = [0f32; 8];
            let mut errs = vec![c.all_gather_v(&x[..2], &mut y, &[2], None).unwrap_err()];
            errs.push(
                c.all_gather_v(&x[..2], &mut y, &[2, 2], Some(&[0]))
                    .unwrap_err(),
            );
            errs.push(
                c.all_gather_v(&x[..2], &mut y, &[2, 2], Some(&[0, 1]))
                    .unwrap_err(),
            );
            errs.push(
                c.all_gather_v(&x[..2], &mut y, &[2, 2], Some(&[0, usize::MAX]))
                    .unwrap_err(),
            );
            errs.push(c.all_gather_v(&x[..3], &mut y, &[2, 2], None).unwrap_err());
            errs.push(
                c.all_gather_v(&x[..2], &mut y, &[2, 2], Some(&[0, 7]))
                    .unwrap_err(),
            );
            errs.push(
                c.reduce_scatter_v(&x[..3], &mut y, &[2, 2], None, ReduceOp::Sum)
                    .unwrap_err(),
            );
            errs.push(
                c.reduce_scatter_v(&x, &mut y[..1], &[2, 2], None, ReduceOp::Sum)
                    .unwrap_err(),
            );
            errs.push(
                c.all_to_all_v(&x, &[1, 1], None, &mut y, &[1, 2], Some(&[0, 0]))
                    .unwrap_err(),
            );
            let mut selfish = [1usize, 1];
            selfish[r] = 2;
            errs.push(
                c.all_to_all_v(&x, &selfish, None, &mut y, &[1, 1], None)
                    .unwrap_err(),
            );
            // Each rank its own root, so that both refuse the call.
            errs.push(c.gather(&x[..4], &mut y[..1], r).unwrap_err());
            errs.push(c.scatter(&x, &mut y, 5).unwrap_err());
            let ptr = y.as_mut_ptr().cast::<c_void>();
            let raw = RawCall {
                kind: Collective::AllGather,
                input: ptr.cast_const(),
                output: ptr,
                count: 1,
                dtype: DataType::F32,
                op: ReduceOp::Sum,
                root: 0,
            };
            // SAFETY: refused before anything moves (premul-sum on a gather; a layout on
            // a plain collective; an uneven collective without its layout; in place
            // all-to-all-v with another receive layout).
            unsafe {
                errs.push(
                    c.collective_raw_with(raw, &RawExtra::premul(2.0))
                        .unwrap_err(),
                );
                let u = Uneven::blocks(2, &[1, 1], None).unwrap();
                errs.push(
                    c.collective_raw_with(raw, &RawExtra::uneven(u.clone()))
                        .unwrap_err(),
                );
                let v = RawCall {
                    kind: Collective::AllGatherV,
                    ..raw
                };
                errs.push(c.collective_raw_with(v, &RawExtra::default()).unwrap_err());
                let a = RawCall {
                    kind: Collective::AllToAllV,
                    ..raw
                };
                let lay = Uneven::all_to_all(2, &[1, 1], None, &[1, 1], Some(&[1, 0])).unwrap();
                errs.push(
                    c.collective_raw_with(a, &RawExtra::uneven(lay))
                        .unwrap_err(),
                );
                let s = RawCall {
                    kind: Collective::AllReduce,
                    op: ReduceOp::Max,
                    ..raw
                };
                errs.push(
                    c.collective_raw_with(s, &RawExtra::premul(2.0))
                        .unwrap_err(),
                );
            }
            // Still in step: a good call works on both ranks.
            let mut out = [0f32; 3];
            let mine = if r == 1 { vec![1f32] } else { Vec::new() };
            c.all_gather_v(&mine, &mut out, &[0, 1], None)
                .map(|_| (errs, out))
        })
        .unwrap();
    for (r, o) in outs.into_iter().enumerate() {
        let (errs, out) = o.unwrap();
        assert_eq!(out[0], 1.0, "rank {r}");
        let want: [fn(&Error) -> bool; 17] = [
            |e| {
                matches!(
                    e,
                    Error::CountsLength {
                        array: "counts",
                        got: 1,
                        world: 2
                    }
                )
            },
            |e| {
                matches!(
                    e,
                    Error::CountsLength {
                        array: "displs",
                        ..
                    }
                )
            },
            |e| matches!(e, Error::BlocksOverlap { a: 0, b: 1, .. }),
            |e| matches!(e, Error::BlockOutOfRange { index: 1, .. }),
            |e| {
                matches!(
                    e,
                    Error::SendCountMismatch {
                        sendcount: 3,
                        expected: 2,
                        ..
                    }
                )
            },
            |e| {
                matches!(
                    e,
                    Error::BufferTooSmall {
                        buffer: "output",
                        needed: 9,
                        ..
                    }
                )
            },
            |e| {
                matches!(
                    e,
                    Error::BufferTooSmall {
                        buffer: "input",
                        needed: 4,
                        ..
                    }
                )
            },
            |e| {
                matches!(
                    e,
                    Error::BufferTooSmall {
                        buffer: "output",
                        ..
                    }
                )
            },
            |e| {
                matches!(
                    e,
                    Error::BlocksOverlap {
                        array: "recv_displs",
                        ..
                    }
                )
            },
            |e| {
                matches!(
                    e,
                    Error::SendCountMismatch {
                        sendcount: 2,
                        expected: 1,
                        ..
                    }
                )
            },
            |e| {
                matches!(
                    e,
                    Error::BufferTooSmall {
                        buffer: "output",
                        needed: 8,
                        ..
                    }
                )
            },
            |e| matches!(e, Error::RootOutOfRange { root: 5, world: 2 }),
            |e| {
                matches!(
                    e,
                    Error::PreMulSumMisuse {
                        collective: Collective::AllGather,
                        ..
                    }
                )
            },
            |e| {
                matches!(
                    e,
                    Error::LayoutMismatch {
                        collective: Collective::AllGather,
                        ..
                    }
                )
            },
            |e| {
                matches!(
                    e,
                    Error::LayoutMismatch {
                        collective: Collective::AllGatherV,
                        ..
                    }
                )
            },
            |e| matches!(e, Error::InPlaceLayout),
            |e| {
                matches!(
                    e,
                    Error::PreMulSumMisuse {
                        op: ReduceOp::Max,
                        ..
                    }
                )
            },
        ];
        assert_eq!(errs.len(), want.len());
        for (i, (e, ok)) in errs.iter().zip(want).enumerate() {
            assert!(ok(e), "rank {r} error {i}: {e:?}");
            assert_eq!(e.kind(), ferrocoll::ErrorKind::InvalidArgument, "{e}");
        }
    }
}
