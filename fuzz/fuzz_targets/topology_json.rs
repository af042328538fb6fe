//! Topology files (src/topology/json.rs, `FERROCOLL_TOPO_FILE`): a file that loads is a
//! consistent topology, its dump loads back to the same topology, and the ring placement
//! built on it is a permutation of the ranks.
#![no_main]

use ferrocoll::topology::{json, Placement, RingOrder, Topology};

/// Equal within a relative 1e-9 (the file's units are converted on load and dump).
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn same(a: &Topology, b: &Topology) {
    assert_eq!(a.world(), b.world());
    assert_eq!(a.hosts().len(), b.hosts().len());
    assert_eq!(a.source, b.source);
    for (x, y) in a.hosts().iter().zip(b.hosts()) {
        assert_eq!((&x.name, &x.ranks, x.cores), (&y.name, &y.ranks, y.cores));
        for (p, q) in [(x.nic, y.nic), (x.intra_total, y.intra_total)] {
            assert_eq!(p.is_some(), q.is_some());
            assert!(close(p.unwrap_or(0.0), q.unwrap_or(0.0)), "{p:?} {q:?}");
        }
    }
    assert!(close(a.nic, b.nic));
    for h in 0..a.hosts().len() {
        for g in 0..a.hosts().len() {
            let (l, m) = (a.host_link(h, g), b.host_link(h, g));
            assert!(
                close(l.alpha, m.alpha) && close(l.bandwidth, m.bandwidth),
                "{l:?} {m:?}"
            );
        }
    }
}

fn permutation(v: &[usize], n: usize) {
    let mut seen = vec![false; n];
    assert_eq!(v.len(), n);
    for &x in v {
        assert!(x < n && !std::mem::replace(&mut seen[x], true), "{v:?}");
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = json::from_json(text) else {
        return;
    };
    let world = t.world();
    assert_eq!(
        world,
        t.hosts().iter().map(|h| h.ranks.len()).sum::<usize>()
    );
    for r in 0..world {
        let h = t.host_of(r);
        assert_eq!(t.hosts()[h].ranks[t.local_of(r)], r);
    }
    let dumped = json::to_json(&t);
    let back = json::from_json(&dumped)
        .unwrap_or_else(|e| panic!("the dump does not load: {e}\n{dumped}"));
    same(&t, &back);
    for order in [RingOrder::Rank, RingOrder::Topology] {
        let p = Placement::new(&t, order);
        permutation(&p.ring, world);
        permutation(&ferrocoll::topology::host_order(&t), t.hosts().len());
        for (i, &r) in p.ring.iter().enumerate() {
            assert_eq!(p.pos[r], i);
        }
    }
    let _ = ferrocoll::compress::slowest_link(&t);
});
