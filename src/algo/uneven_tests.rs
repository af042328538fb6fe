//! Every registered algorithm that implements an uneven collective, and premul-sum on every
//! reducing collective: the plans validate, and simulating them gives the sequential
//! reference on every rank, over world sizes 1..=7, layouts with empty blocks, gaps and
//! blocks out of rank order, both layouts in memory and several segment sizes.

use super::{Algorithm, ALGORITHMS};
use crate::reference::{
    count_wrong, expected, expected_uneven, magnitudes, magnitudes_uneven, premultiplied,
    test_input,
};
use crate::schedule::{simulate_with, validate_with, CollSpec, Collective, Extra, Uneven};
use crate::topology::{Placement, Topology};
use crate::types::{DataType, ReduceOp};

/// All-gather-v / reduce-scatter-v layouts for `p` ranks: packed, one with empty blocks,
/// and one with gaps and blocks in reverse rank order.
fn block_layouts(p: usize, unit: usize) -> Vec<Uneven> {
    let counts: Vec<usize> = (0..p).map(|r| (r * 7 + 3) % 5 * unit).collect();
    let ones: Vec<usize> = (0..p).map(|r| r % 2 * unit + 1).collect();
    let mut reversed = vec![0; p];
    let mut next = 3;
    for r in (0..p).rev() {
        reversed[r] = next;
        next += ones[r] + 2;
    }
    vec![
        Uneven::blocks(p, &counts, None).unwrap(),
        Uneven::blocks(p, &vec![0; p], None).unwrap(),
        Uneven::blocks(p, &ones, Some(&reversed)).unwrap(),
    ]
}

/// All-to-all-v layouts for `p` ranks (one per rank): a send matrix with empty entries,
/// packed; and a symmetric one (send = receive layout, for in place) with gaps.
fn all_to_all_layouts(p: usize) -> Vec<(Vec<Uneven>, bool)> {
    let m = |i: usize, j: usize| (i * 3 + j * 5 + 1) % 4;
    let packed = (0..p)
        .map(|i| {
            let send: Vec<usize> = (0..p).map(|j| m(i, j)).collect();
            let recv: Vec<usize> = (0..p).map(|j| m(j, i)).collect();
            Uneven::all_to_all(p, &send, None, &recv, None).unwrap()
        })
        .collect();
    let sym = |i: usize, j: usize| (i + j) % 3;
    let gapped = (0..p)
        .map(|i| {
            let counts: Vec<usize> = (0..p).map(|j| sym(i, j)).collect();
            let displs: Vec<usize> = (0..p).map(|j| (p - 1 - j) * 4 + 1).collect();
            Uneven::all_to_all(p, &counts, Some(&displs), &counts, Some(&displs)).unwrap()
        })
        .collect();
    vec![(packed, false), (gapped, true)]
}

/// Checks one algorithm on one uneven call (every rank's layout in `lay`).
fn check_uneven(
    algo: &dyn Algorithm,
    kind: Collective,
    lay: &[Uneven],
    dtype: DataType,
    op: ReduceOp,
    place: &Placement,
    in_place_ok: bool,
) {
    let p = lay.len();
    let count = if kind == Collective::AllToAllV {
        0
    } else {
        lay[0].total()
    };
    let spec = CollSpec {
        kind,
        world: p,
        count,
        root: 0,
    };
    let plans: Vec<_> = (0..p)
        .map(|r| algo.plan_uneven(&spec, &lay[r], r, place))
        .collect();
    let extra = Extra {
        uneven: Some(lay),
        premul: None,
    };
    if let Err(e) = validate_with(&spec, extra, &plans) {
        panic!("{} {kind} {lay:?}: invalid schedule: {e}", algo.name());
    }
    let inputs: Vec<Vec<u8>> = (0..p)
        .map(|r| test_input(dtype, op, r, lay[r].input_len(kind, r), 5 + p as u64))
        .collect();
    for in_place in [false, true] {
        if in_place && !in_place_ok {
            continue;
        }
        for seg in [usize::MAX, 2] {
            let outs = simulate_with(&spec, extra, &plans, dtype, op, &inputs, in_place, seg)
                .unwrap_or_else(|e| {
                    panic!("{} {kind} {lay:?} in_place={in_place}: {e}", algo.name())
                });
            for (r, out) in outs.iter().enumerate() {
                // The simulator fills memory never written with 0xA5; in place, the rank's own
                // block of all-gather-v already holds its input, and all-to-all-v's output is
                // its input.
                let mut before = vec![0xA5u8; out.len()];
                let es = dtype.size();
                if in_place && kind == Collective::AllGatherV && !inputs[r].is_empty() {
                    let d = lay[r].displs()[r] * es;
                    before[d..d + inputs[r].len()].copy_from_slice(&inputs[r]);
                }
                if in_place && kind == Collective::AllToAllV {
                    let n = inputs[r].len().min(before.len());
                    before[..n].copy_from_slice(&inputs[r][..n]);
                }
                let want = expected_uneven(kind, lay, dtype, op, &inputs, r, &before);
                let bound = if kind == Collective::ReduceScatterV {
                    magnitudes_uneven(lay, dtype, op, &inputs, r)
                } else {
                    Vec::new()
                };
                let (out, want) = if kind == Collective::ReduceScatterV {
                    (out.as_slice(), &want[..out.len()])
                } else {
                    (out.as_slice(), &want[..])
                };
                let wrong = count_wrong(dtype, op, p, out, want, &bound);
                assert_eq!(
                    wrong,
                    0,
                    "{} {kind} {dtype} {op} in_place={in_place} seg={seg} rank {r} {lay:?}",
                    algo.name()
                );
            }
        }
    }
}

#[test]
fn every_algorithm_matches_the_uneven_reference() {
    for algo in ALGORITHMS {
        for p in 1..=7usize {
            let flat = Placement::flat(p);
            for kind in [Collective::AllGatherV, Collective::ReduceScatterV] {
                if !algo.supports(kind) {
                    continue;
                }
                for u in block_layouts(p, 3) {
                    let lay = vec![u; p];
                    check_uneven(*algo, kind, &lay, DataType::I32, ReduceOp::Sum, &flat, true);
                    if kind == Collective::ReduceScatterV {
                        for op in ReduceOp::ALL {
                            for dt in [DataType::F32, DataType::BF16, DataType::F8E4M3] {
                                check_uneven(*algo, kind, &lay, dt, op, &flat, true);
                            }
                        }
                    } else {
                        for dt in [DataType::F16, DataType::F8E5M2, DataType::U64] {
                            check_uneven(*algo, kind, &lay, dt, ReduceOp::Sum, &flat, true);
                        }
                    }
                }
            }
            if algo.supports(Collective::AllToAllV) {
                for (lay, sym) in all_to_all_layouts(p) {
                    for dt in [DataType::I32, DataType::BF16, DataType::F8E4M3] {
                        let kind = Collective::AllToAllV;
                        check_uneven(*algo, kind, &lay, dt, ReduceOp::Sum, &flat, sym);
                    }
                }
            }
        }
    }
}

/// The ring's uneven plans on placed clusters (its ring differs from rank order there).
#[test]
fn uneven_plans_on_placed_clusters() {
    for (hosts, per_host) in [(2usize, 2usize), (3, 2), (2, 3)] {
        let t = Topology::uniform(hosts, per_host, true);
        let p = t.world();
        let place = Placement::new(&t, crate::config::RingOrder::Topology);
        for algo in ALGORITHMS {
            for kind in [Collective::AllGatherV, Collective::ReduceScatterV] {
                if !algo.supports(kind) {
                    continue;
                }
                for u in block_layouts(p, 2) {
                    let lay = vec![u; p];
                    check_uneven(
                        *algo,
                        kind,
                        &lay,
                        DataType::I32,
                        ReduceOp::Sum,
                        &place,
                        true,
                    );
                }
            }
        }
    }
}

/// Premul-sum on every reducing collective of every algorithm: the sum of every rank's
/// input multiplied by its own scalar.
#[test]
fn premul_sum_matches_the_reference() {
    let kinds = [
        Collective::AllReduce,
        Collective::ReduceScatter,
        Collective::Reduce,
    ];
    for algo in ALGORITHMS {
        for kind in kinds {
            if !algo.supports(kind) {
                continue;
            }
            for p in [1usize, 2, 3, 4, 5] {
                for count in [0usize, 1, 7] {
                    let spec = CollSpec {
                        kind,
                        world: p,
                        count,
                        root: p / 2,
                    };
                    let plans: Vec<_> = (0..p).map(|r| algo.plan(&spec, r)).collect();
                    let scalars: Vec<f64> = (0..p).map(|r| 0.5 + r as f64).collect();
                    for dtype in [DataType::F32, DataType::F64, DataType::BF16, DataType::I32] {
                        let op = ReduceOp::Sum;
                        let inputs: Vec<Vec<u8>> = (0..p)
                            .map(|r| test_input(dtype, op, r, spec.input_len(), 9))
                            .collect();
                        let pre: Vec<Vec<u8>> = (0..p)
                            .map(|r| premultiplied(dtype, &inputs[r], scalars[r]))
                            .collect();
                        let extra = Extra {
                            uneven: None,
                            premul: Some(&scalars),
                        };
                        for in_place in [false, true] {
                            let outs = simulate_with(
                                &spec, extra, &plans, dtype, op, &inputs, in_place, 3,
                            )
                            .unwrap_or_else(|e| panic!("{} {spec:?}: {e}", algo.name()));
                            for (r, out) in outs.iter().enumerate() {
                                if kind == Collective::Reduce && r != spec.root {
                                    continue;
                                }
                                let want = expected(&spec, dtype, op, &pre, r);
                                let bound = magnitudes(&spec, dtype, op, &pre, r);
                                assert_eq!(
                                    count_wrong(dtype, op, p, out, &want, &bound),
                                    0,
                                    "{} {spec:?} {dtype} in_place={in_place} rank {r}",
                                    algo.name()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
