//! The proof of issue 2: every collective × algorithm × dtype × op × world size × count ×
//! root × layout, run by the real executor over in-process links, equals the sequential
//! reference and is bit-identical on every rank.

mod common;

use std::time::Duration;

use common::{run_case, Case};
use ferrocoll::topology::{Host, LinkSpec, Topology};
use ferrocoll::{AlgoId, Collective, Config, DataType, ReduceOp, RingOrder, World};
use proptest::prelude::*;

/// `world` ranks dealt cyclically over `hosts` fake hosts (rank r on host r mod hosts, so
/// hosts may hold unequal numbers of ranks), with a slow network between them.
fn cyclic(world: usize, hosts: usize) -> Topology {
    let hosts = hosts.clamp(1, world);
    let hs = (0..hosts)
        .map(|h| Host {
            name: format!("fake{h}"),
            ranks: (h..world).step_by(hosts).collect(),
            nic: None,
            // Some fake hosts with a core count, so the tuner's CPU terms plan here too.
            cores: (h % 2 == 1).then_some(1 + h),
            intra_total: None,
        })
        .collect();
    Topology::new(
        hs,
        LinkSpec::from_us_gbit(1.0, 100.0),
        LinkSpec::from_us_gbit(20.0, 1.0),
        None,
        vec![],
    )
    .unwrap()
}

/// Which copy paths a test's calls take: single copy for segments of at least `direct_min`
/// bytes (in every collective, reducing ones too) in calls below `streaming_min` output bytes; at or above it, the ring only and
/// streaming stores. (A send carries its source's local copy on every path.)
#[derive(Clone, Copy, Debug)]
struct Copies {
    direct_min: usize,
    streaming_min: usize,
}

/// Ring only, streaming at every size (the cached path is the default at small sizes, and
/// the proptest samples both).
const RING_STREAMING: Copies = Copies {
    direct_min: usize::MAX,
    streaming_min: 0,
};

/// Ring only, ordinary stores: what calls below 8 MiB take on links without single copy.
const RING_CACHED: Copies = Copies {
    direct_min: usize::MAX,
    streaming_min: usize::MAX,
};

/// Single copy for every segment of 64 bytes or more, the copy a send carries run when the
/// send goes by single copy.
const SINGLE_COPY: Copies = Copies {
    direct_min: 64,
    streaming_min: usize::MAX,
};

fn config(algo: &str, seg_bytes: usize, copies: Copies) -> Config {
    let mut c = Config::default()
        .with_algo(algo)
        .unwrap()
        .with_segment_bytes(seg_bytes)
        .with_timeout(Duration::from_secs(60));
    c.spin = Duration::from_micros(5);
    c.direct_min_bytes = copies.direct_min;
    // Single copy, where on, is on for the collectives that reduce as well.
    c.single_copy_reductions = copies.direct_min != usize::MAX;
    c.streaming_min_bytes = copies.streaming_min;
    c
}

/// Runs one case on a fresh world; checks results and replica identity.
fn check(world: usize, algo: &str, seg: usize, case: Case) {
    check_with(world, algo, seg, RING_STREAMING, case, None)
}

/// [`check`], with the copy paths `copies`, and with `placed = Some((hosts, order))` on that many fake hosts with ranks placed cyclically,
/// the ring in `order`.
fn check_with(
    world: usize,
    algo: &str,
    seg: usize,
    copies: Copies,
    case: Case,
    placed: Option<(usize, RingOrder)>,
) {
    let mut w = World::new(world).ring_bytes(1 << 12);
    let mut cfg = config(algo, seg, copies);
    if let Some((hosts, order)) = placed {
        w = w.topology(cyclic(world, hosts));
        cfg = cfg.with_ring_order(order);
    }
    let outs = w.config(cfg).run(|c| run_case(c, &case, 7)).unwrap();
    let failed: Vec<String> = outs
        .iter()
        .enumerate()
        .filter_map(|(r, o)| o.as_ref().err().map(|e| format!("rank {r}: {e:?}")))
        .collect();
    assert!(
        failed.is_empty(),
        "{algo} {case:?} world {world}:\n{}",
        failed.join("\n")
    );
    let outs: Vec<(Vec<u8>, usize)> = outs.into_iter().map(|o| o.unwrap()).collect();
    for (r, (_, wrong)) in outs.iter().enumerate() {
        assert_eq!(
            *wrong, 0,
            "rank {r} wrong ({algo} seg {seg} {case:?} world {world})"
        );
    }
    if matches!(
        case.kind,
        Collective::AllReduce | Collective::AllGather | Collective::Broadcast
    ) {
        assert!(
            outs.windows(2).all(|w| w[0].0 == w[1].0),
            "replicas differ ({algo} {case:?} world {world})"
        );
    }
}

fn world_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(2),
        Just(3),
        Just(4),
        Just(5),
        Just(7),
        Just(8),
        Just(13),
        Just(16),
        1usize..=16
    ]
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(2),
        Just(3),
        Just(7),
        Just(13),
        Just(31),
        Just(97),
        0usize..300,
        Just(1031)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn collectives_match_reference(
        world in world_size(),
        kind in prop::sample::select(Collective::COLLECTIVES.to_vec()),
        algo_i in 0usize..AlgoId::all().count(),
        dtype in prop::sample::select(DataType::ALL.to_vec()),
        op in prop::sample::select(ReduceOp::ALL.to_vec()),
        count in count(),
        root_pick in 0usize..16,
        in_place in any::<bool>(),
        seg in prop::sample::select(vec![1usize, 8, 24, 256, 1 << 20]),
        direct_min in prop::sample::select(vec![usize::MAX, 1, 64]),
        streaming in any::<bool>(),
        hosts in 0usize..5,
        rank_order in any::<bool>(),
    ) {
        let algo = AlgoId::all().nth(algo_i).unwrap();
        prop_assume!(algo.supports(kind));
        let root = if kind.has_root() { root_pick % world } else { 0 };
        // hosts == 0: no topology (one host); otherwise that many fake hosts, cyclic placement.
        let order = if rank_order { RingOrder::Rank } else { RingOrder::Topology };
        let placed = (hosts > 0).then_some((hosts, order));
        let copies = Copies { direct_min, streaming_min: if streaming { 0 } else { usize::MAX } };
        check_with(world, algo.name(), seg, copies, Case { kind, dtype, op, count, root, in_place }, placed);
    }
}

/// Every algorithm × collective at a few fixed shapes, so no combination depends on luck.
#[test]
fn every_algorithm_and_collective_at_fixed_shapes() {
    for algo in AlgoId::all() {
        for kind in Collective::COLLECTIVES {
            if !algo.supports(kind) {
                continue;
            }
            for (world, count, in_place) in [
                (1, 5, false),
                (3, 1031, true),
                (5, 7, false),
                (7, 64, true),
                (13, 29, false),
            ] {
                let root = if kind.has_root() { world - 1 } else { 0 };
                // Each dtype takes another copy path, so every shape meets all three.
                for (dtype, op, copies) in [
                    (DataType::F32, ReduceOp::Sum, RING_CACHED),
                    (DataType::BF16, ReduceOp::Avg, RING_STREAMING),
                    (DataType::I64, ReduceOp::Prod, SINGLE_COPY),
                ] {
                    check_with(
                        world,
                        algo.name(),
                        64,
                        copies,
                        Case {
                            kind,
                            dtype,
                            op,
                            count,
                            root,
                            in_place,
                        },
                        None,
                    );
                }
            }
        }
    }
}

/// Every dtype × op × algorithm × collective at one multi-segment shape (world 3, a count
/// not divisible by it, root 2, both layouts), so the full product is covered, not sampled.
#[test]
fn every_dtype_op_algorithm_and_collective() {
    for algo in AlgoId::all() {
        for kind in Collective::COLLECTIVES {
            if !algo.supports(kind) {
                continue;
            }
            for (i, dtype) in DataType::ALL.into_iter().enumerate() {
                for (j, op) in ReduceOp::ALL.into_iter().enumerate() {
                    if j > 0 && !kind.reduces() {
                        break; // the op does not matter to data movement
                    }
                    let root = if kind.has_root() { 2 } else { 0 };
                    let case = Case {
                        kind,
                        dtype,
                        op,
                        count: 11,
                        root,
                        in_place: (i + j) % 2 == 0,
                    };
                    check_with(3, algo.name(), 8, RING_CACHED, case, None);
                }
            }
        }
    }
}

/// Topology-ordered ring and hierarchical on fake hosts (cyclic placement, unequal hosts),
/// every collective they implement, at fixed shapes.
#[test]
fn placed_ring_and_hierarchical_at_fixed_shapes() {
    for algo in ["ring", "hierarchical"] {
        let a = AlgoId::by_name(algo).unwrap();
        for kind in Collective::COLLECTIVES {
            if !a.supports(kind) {
                continue;
            }
            for (world, hosts, count, in_place) in [
                (4, 2, 1031, false),
                (5, 2, 7, true),
                (7, 3, 64, false),
                (6, 4, 29, true),
            ] {
                let root = if kind.has_root() { world - 1 } else { 0 };
                let case = Case {
                    kind,
                    dtype: DataType::F32,
                    op: ReduceOp::Sum,
                    count,
                    root,
                    in_place,
                };
                check_with(
                    world,
                    algo,
                    64,
                    RING_STREAMING,
                    case,
                    Some((hosts, RingOrder::Topology)),
                );
            }
        }
    }
}

/// Large buffers cross many segments and wrap the rings many times.
#[test]
fn large_buffers() {
    for a in AlgoId::all() {
        let algo = a.name();
        if !a.supports(Collective::AllReduce) {
            continue;
        }
        let case = Case {
            kind: Collective::AllReduce,
            dtype: DataType::F32,
            op: ReduceOp::Sum,
            count: 1 << 20,
            root: 0,
            in_place: false,
        };
        check(4, algo, 64 << 10, case);
        if matches!(algo, "ring" | "hierarchical") {
            check_with(
                4,
                algo,
                64 << 10,
                RING_STREAMING,
                case,
                Some((2, RingOrder::Topology)),
            );
        }
    }
}
