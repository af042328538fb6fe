//! Tests of the executor's plan preparation (the runs themselves are covered by the
//! collective tests over every transport).

use super::prepared::{CopyPolicy, Prepared};
use crate::algo::by_name;
use crate::schedule::{dependencies, segment, CollSpec, Collective, Layout, Region, Step};

fn prepared(algo: &str, kind: Collective, rank: usize, in_place: bool) -> Prepared {
    let spec = CollSpec {
        kind,
        world: 3,
        count: 100,
        root: 1,
    };
    let plan = by_name(algo).unwrap().plan(&spec, rank);
    let layout = if in_place {
        Layout::in_place(&spec, rank)
    } else {
        Layout::SEPARATE
    };
    Prepared::new(&plan, 40, &layout, 3, CopyPolicy::STREAM).unwrap()
}

/// The copies a plan's sends carry, as (send source, copy source, copy destination).
fn carried(p: &Prepared) -> Vec<(Region, Region, Region)> {
    p.tee
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let (Step::Send { src, .. }, Some(c)) = (p.steps[i], c) else {
                return None;
            };
            let Step::Copy { src: cs, dst } = p.steps[*c as usize] else {
                panic!("a send carries a step that is not a copy");
            };
            Some((src, cs, dst))
        })
        .collect()
}

#[test]
fn all_gather_sends_carry_the_own_chunk_copy() {
    let p = prepared("direct", Collective::AllGather, 2, false);
    let c = carried(&p);
    // 100 elements in segments of 40: three copy segments, each carried by one send.
    assert_eq!(c.len(), 3);
    for (send_src, copy_src, dst) in &c {
        assert_eq!(send_src, copy_src);
        assert_eq!(dst.off, 200 + copy_src.off);
    }
    // Carried copies do not also run on their own.
    for &i in &p.initially_ready {
        assert!(!p.tee.contains(&Some(i)), "step {i} carried and ready");
    }
}

#[test]
fn broadcast_root_carries_its_copy_and_others_do_not() {
    assert_eq!(
        carried(&prepared("direct", Collective::Broadcast, 1, false)).len(),
        3
    );
    assert!(carried(&prepared("direct", Collective::Broadcast, 0, false)).is_empty());
}

#[test]
fn in_place_calls_carry_nothing() {
    // The own chunk already sits in the output: source and destination are the same memory.
    assert!(carried(&prepared("direct", Collective::AllGather, 2, true)).is_empty());
    assert!(carried(&prepared("direct", Collective::Broadcast, 1, true)).is_empty());
}

#[test]
fn carried_copies_are_independent_and_match_their_send() {
    // In every plan and layout, a carried copy reads what its send reads, into other
    // memory, and neither it nor the send waits for anything or is waited for (the ring
    // all-gather forwards what it received, so its copies must stay on their own).
    for algo in ["ring", "direct", "tree", "halving_doubling"] {
        for kind in Collective::COLLECTIVES {
            if !by_name(algo).unwrap().supports(kind) {
                continue;
            }
            let spec = CollSpec {
                kind,
                world: 3,
                count: 100,
                root: 1,
            };
            for rank in 0..3 {
                let plan = by_name(algo).unwrap().plan(&spec, rank);
                for layout in [Layout::SEPARATE, Layout::in_place(&spec, rank)] {
                    let steps = segment(&plan.steps, 40);
                    let deps = dependencies(&steps, &layout);
                    let p = Prepared::new(&plan, 40, &layout, 3, CopyPolicy::STREAM).unwrap();
                    for (i, c) in p.tee.iter().enumerate() {
                        let Some(c) = c else { continue };
                        let c = *c as usize;
                        let (Step::Send { src, .. }, Step::Copy { src: cs, dst }) =
                            (p.steps[i], p.steps[c])
                        else {
                            panic!("{algo} {kind}: tee pairs a send with a copy");
                        };
                        assert_eq!(src, cs, "{algo} {kind}");
                        let (a, b) = (layout.locate(cs), layout.locate(dst));
                        assert!(a.0 != b.0 || a.2 <= b.1 || b.2 <= a.1, "{algo} {kind}");
                        assert!(deps[c].is_empty() && deps[i].is_empty(), "{algo} {kind}");
                        assert!(p.dependents[c].is_empty(), "{algo} {kind}");
                    }
                }
            }
        }
    }
}
