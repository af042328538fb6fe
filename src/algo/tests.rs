//! Every registered algorithm, every collective it supports, many world sizes and counts:
//! the plans validate, and simulating them gives the sequential reference on every rank —
//! in rank order and on placed clusters (cyclic placement, unequal hosts).

use super::{plan_all_on, Algorithm, ALGORITHMS};
use crate::config::RingOrder;
use crate::reference::{count_wrong, expected, magnitudes, test_input};
use crate::schedule::{simulate, validate, CollSpec, Collective};
use crate::topology::{Placement, Topology};
use crate::types::{DataType, ReduceOp};

/// Checks one algorithm on one shape with one dtype/op, both layouts, several segment sizes.
pub(crate) fn check(algo: &dyn Algorithm, spec: CollSpec, dtype: DataType, op: ReduceOp) {
    check_on(algo, spec, dtype, op, &Placement::flat(spec.world));
}

/// [`check`] on a placed cluster.
pub(crate) fn check_on(
    algo: &dyn Algorithm,
    spec: CollSpec,
    dtype: DataType,
    op: ReduceOp,
    place: &Placement,
) {
    let plans = plan_all_on(algo, &spec, place);
    if let Err(e) = validate(&spec, &plans) {
        panic!("{} {:?}: invalid schedule: {e}", algo.name(), spec);
    }
    let inputs: Vec<Vec<u8>> = (0..spec.world)
        .map(|r| {
            test_input(
                dtype,
                op,
                r,
                spec.input_len(),
                spec.count as u64 * 31 + spec.world as u64,
            )
        })
        .collect();
    for in_place in [false, true] {
        for seg in [usize::MAX, 2] {
            let outs = simulate(&spec, &plans, dtype, op, &inputs, in_place, seg)
                .unwrap_or_else(|e| panic!("{} {:?} in_place={in_place}: {e}", algo.name(), spec));
            for (r, out) in outs.iter().enumerate() {
                let want = expected(&spec, dtype, op, &inputs, r);
                if matches!(spec.kind, Collective::Reduce | Collective::Gather) && r != spec.root
                    || spec.kind == Collective::Barrier
                {
                    continue;
                }
                let bound = magnitudes(&spec, dtype, op, &inputs, r);
                let wrong = count_wrong(dtype, op, spec.world, out, &want, &bound);
                assert_eq!(
                    wrong,
                    0,
                    "{} {:?} {dtype} {op} in_place={in_place} seg={seg} rank {r}",
                    algo.name(),
                    spec
                );
            }
            // Replicas stay in sync: results meant to be equal are bit-identical.
            if matches!(
                spec.kind,
                Collective::AllReduce | Collective::AllGather | Collective::Broadcast
            ) {
                assert!(
                    outs.windows(2).all(|w| w[0] == w[1]),
                    "{} {:?}: ranks differ",
                    algo.name(),
                    spec
                );
            }
        }
    }
}

#[test]
fn every_algorithm_matches_the_reference() {
    let worlds = [1usize, 2, 3, 4, 5, 7, 8, 13, 16];
    let counts = [0usize, 1, 2, 5, 17, 64];
    for algo in ALGORITHMS {
        for kind in Collective::COLLECTIVES {
            if !algo.supports(kind) {
                continue;
            }
            for &world in &worlds {
                for &count in &counts {
                    let root = if kind.has_root() { world / 2 } else { 0 };
                    let spec = CollSpec {
                        kind,
                        world,
                        count,
                        root,
                    };
                    check(*algo, spec, DataType::I32, ReduceOp::Sum);
                    if kind.reduces() && count == 5 {
                        for op in ReduceOp::ALL {
                            check(*algo, spec, DataType::F32, op);
                            check(*algo, spec, DataType::BF16, op);
                            check(*algo, spec, DataType::U8, op);
                        }
                    }
                }
            }
        }
    }
}

/// Every algorithm on placed clusters: ranks placed cyclically over hosts, so the topology
/// ring differs from rank order and hierarchical plans have several hosts.
#[test]
fn every_algorithm_on_placed_clusters() {
    for (hosts, per_host) in [(2usize, 2usize), (3, 2), (2, 3), (4, 1), (3, 4)] {
        let t = Topology::uniform(hosts, per_host, true);
        let world = t.world();
        for order in [RingOrder::Topology, RingOrder::Rank] {
            let place = Placement::new(&t, order);
            for algo in ALGORITHMS {
                for kind in Collective::COLLECTIVES {
                    if !algo.supports(kind) {
                        continue;
                    }
                    for count in [0usize, 1, 7, 24] {
                        let root = if kind.has_root() { world - 1 } else { 0 };
                        let spec = CollSpec {
                            kind,
                            world,
                            count,
                            root,
                        };
                        check_on(*algo, spec, DataType::I32, ReduceOp::Sum, &place);
                        if kind.reduces() && count == 7 {
                            check_on(*algo, spec, DataType::F32, ReduceOp::Avg, &place);
                        }
                    }
                }
            }
        }
    }
}
