//! Every registered algorithm, every collective it supports, many world sizes and counts:
//! the plans validate, and simulating them gives the sequential reference on every rank.

use super::{plan_all, Algorithm, ALGORITHMS};
use crate::reference::{count_wrong, expected, magnitudes, test_input};
use crate::schedule::{simulate, validate, CollSpec, Collective};
use crate::types::{DataType, ReduceOp};

/// Checks one algorithm on one shape with one dtype/op, both layouts, several segment sizes.
pub(crate) fn check(algo: &dyn Algorithm, spec: CollSpec, dtype: DataType, op: ReduceOp) {
    let plans = plan_all(algo, &spec);
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
                if spec.kind == Collective::Reduce && r != spec.root
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
                    let root = if matches!(kind, Collective::Broadcast | Collective::Reduce) {
                        world / 2
                    } else {
                        0
                    };
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
