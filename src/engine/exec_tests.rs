//! Tests of the executor's plan preparation (the runs themselves are covered by the
//! collective tests over every transport).

use super::*;
use crate::algo::by_name;
use crate::schedule::{CollSpec, Collective};

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
    Prepared::new(&plan, 40, &layout, 3).unwrap()
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
fn copies_that_others_wait_for_are_not_carried() {
    // The ring all-gather forwards what it received; every plan here must keep each carried
    // copy free of dependencies both ways.
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
                let steps = segment(&plan.steps, 40);
                let deps = dependencies(&steps, &Layout::SEPARATE);
                let p = Prepared::new(&plan, 40, &Layout::SEPARATE, 3).unwrap();
                for (i, c) in p.tee.iter().enumerate() {
                    if let Some(c) = c {
                        assert!(deps[*c as usize].is_empty(), "{algo} {kind}");
                        assert!(p.dependents[*c as usize].is_empty(), "{algo} {kind}");
                        assert!(deps[i].is_empty(), "{algo} {kind}");
                    }
                }
            }
        }
    }
}
