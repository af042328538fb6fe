//! Ring order from the topology, and the [`Placement`] the algorithms plan with.
//!
//! A ring runs at the speed of its slowest link, and every ring edge that leaves a host
//! shares that host's NIC. So the ring keeps each host's ranks **contiguous** (whatever
//! their rank numbers: launchers often place rank `r` on host `r mod H`), which leaves
//! exactly one edge into and one out of every host, and visits the hosts in an order whose
//! slowest host-to-host link is as fast as possible (ties: the larger total bandwidth, then
//! the first order found, so a uniform cluster keeps its hosts in order). Up to
//! [`EXACT_HOSTS`] hosts every order is tried; beyond, a greedy tour (fastest link to an
//! unvisited host first) is improved by 2-opt moves while they raise the bottleneck.

use super::Topology;

/// How the ring algorithm orders the ranks (`FERROCOLL_RING_ORDER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RingOrder {
    /// Rank order `0 -> 1 -> ... -> p-1`, whatever the hosts (for comparison).
    Rank,
    /// Each host's ranks contiguous, hosts in an order that spares the slowest links.
    #[default]
    Topology,
}

/// Up to this many hosts the host order is searched exhaustively.
pub const EXACT_HOSTS: usize = 8;

/// What the algorithms see of the topology: the ring and the hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The ring: `ring[i+1]` is the right neighbour of `ring[i]` (cyclically).
    pub ring: Vec<usize>,
    /// Position of each rank in `ring`.
    pub pos: Vec<usize>,
    /// The hosts in the topology's ring order, each with its ranks ascending.
    pub hosts: Vec<Vec<usize>>,
}

impl Placement {
    /// One host, the ring in rank order: what an algorithm sees without a topology.
    pub fn flat(world: usize) -> Placement {
        let ring: Vec<usize> = (0..world).collect();
        Placement {
            pos: ring.clone(),
            hosts: vec![ring.clone()],
            ring,
        }
    }

    /// The placement of `topo` with the ring in `order`.
    pub fn new(topo: &Topology, order: RingOrder) -> Placement {
        let hosts: Vec<Vec<usize>> = host_order(topo)
            .into_iter()
            .map(|h| topo.hosts()[h].ranks.clone())
            .collect();
        let ring: Vec<usize> = match order {
            RingOrder::Rank => (0..topo.world()).collect(),
            RingOrder::Topology => hosts.iter().flatten().copied().collect(),
        };
        let mut pos = vec![0; ring.len()];
        for (i, &r) in ring.iter().enumerate() {
            pos[r] = i;
        }
        Placement { ring, pos, hosts }
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.ring.len()
    }

    /// Whether the ring is the rank order.
    pub fn ring_is_rank_order(&self) -> bool {
        self.ring.iter().enumerate().all(|(i, &r)| i == r)
    }
}

/// (bottleneck bandwidth, total bandwidth) of the cyclic host tour `order`.
fn score(topo: &Topology, order: &[usize]) -> (f64, f64) {
    let h = order.len();
    if h < 2 {
        return (f64::INFINITY, 0.0);
    }
    let mut min = f64::INFINITY;
    let mut sum = 0.0;
    for i in 0..h {
        let b = topo.host_link(order[i], order[(i + 1) % h]).bandwidth;
        min = min.min(b);
        sum += b;
    }
    (min, sum)
}

fn better(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 > b.0 * (1.0 + 1e-12) || (a.0 >= b.0 * (1.0 - 1e-12) && a.1 > b.1 * (1.0 + 1e-12))
}

/// The order in which the ring visits the hosts (indices into [`Topology::hosts`]),
/// starting with host 0.
pub fn host_order(topo: &Topology) -> Vec<usize> {
    let h = topo.hosts().len();
    let mut order: Vec<usize> = (0..h).collect();
    if h <= 3 {
        // Every cyclic order of three or fewer hosts uses the same links.
        return order;
    }
    if h <= EXACT_HOSTS {
        let mut best = order.clone();
        let mut best_score = score(topo, &order);
        permute(&mut order, 1, &mut |o| {
            let s = score(topo, o);
            if better(s, best_score) {
                best_score = s;
                best = o.to_vec();
            }
        });
        return best;
    }
    // Greedy: from host 0, always the fastest link to an unvisited host (lowest index on ties).
    let mut tour = vec![0usize];
    let mut used = vec![false; h];
    used[0] = true;
    for _ in 1..h {
        let last = tour[tour.len() - 1];
        let mut pick = usize::MAX;
        let mut pick_bw = -1.0;
        for (c, u) in used.iter().enumerate() {
            let bw = topo.host_link(last, c).bandwidth;
            if !u && bw > pick_bw {
                pick = c;
                pick_bw = bw;
            }
        }
        used[pick] = true;
        tour.push(pick);
    }
    // 2-opt: reverse a segment while that raises (bottleneck, total); bounded passes.
    let mut cur = score(topo, &tour);
    for _ in 0..4 {
        let mut improved = false;
        for i in 1..h - 1 {
            for j in i + 1..h {
                let (a, b) = (tour[i - 1], tour[i]);
                let (c, d) = (tour[j], tour[(j + 1) % h]);
                let old = topo
                    .host_link(a, b)
                    .bandwidth
                    .min(topo.host_link(c, d).bandwidth);
                let new = topo
                    .host_link(a, c)
                    .bandwidth
                    .min(topo.host_link(b, d).bandwidth);
                if new <= old {
                    continue;
                }
                tour[i..=j].reverse();
                let s = score(topo, &tour);
                if better(s, cur) {
                    cur = s;
                    improved = true;
                } else {
                    tour[i..=j].reverse();
                }
            }
        }
        if !improved {
            break;
        }
    }
    tour
}

/// Calls `f` on every permutation of `v[k..]` (Heap-free recursive swap order, which visits
/// the identity first).
fn permute(v: &mut Vec<usize>, k: usize, f: &mut impl FnMut(&[usize])) {
    if k == v.len() {
        f(v);
        return;
    }
    for i in k..v.len() {
        v.swap(k, i);
        permute(v, k + 1, f);
        v.swap(k, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::LinkSpec;

    #[test]
    fn cyclic_placement_gives_host_contiguous_ring() {
        let t = Topology::uniform(2, 2, true);
        let p = Placement::new(&t, RingOrder::Topology);
        assert_eq!(p.ring, vec![0, 2, 1, 3]);
        assert_eq!(p.pos, vec![0, 2, 1, 3]);
        assert_eq!(p.hosts, vec![vec![0, 2], vec![1, 3]]);
        let r = Placement::new(&t, RingOrder::Rank);
        assert_eq!(r.ring, vec![0, 1, 2, 3]);
        assert!(r.ring_is_rank_order());
        assert_eq!(r.hosts, p.hosts);
    }

    #[test]
    fn ring_avoids_the_slow_link() {
        // Four hosts; the links 0-1 and 2-3 are slow. The natural order 0,1,2,3 would use
        // both; the best tours avoid them.
        let slow = LinkSpec::from_us_gbit(10.0, 1.0);
        for hosts in [4usize, 12] {
            let mut t = Topology::uniform(hosts, 2, true);
            t = t.with_host_link(0, 1, slow).unwrap();
            t = t.with_host_link(2, 3, slow).unwrap();
            let order = host_order(&t);
            assert_eq!(order[0], 0);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..hosts).collect::<Vec<_>>());
            let (min, _) = score(&t, &order);
            assert!(min > slow.bandwidth, "{hosts} hosts: {order:?}");
        }
    }

    #[test]
    fn uniform_cluster_keeps_host_order() {
        for hosts in [1usize, 2, 5, 9, 40] {
            let t = Topology::uniform(hosts, 3, false);
            assert_eq!(host_order(&t), (0..hosts).collect::<Vec<_>>());
            let p = Placement::new(&t, RingOrder::Topology);
            assert!(p.ring_is_rank_order());
        }
    }
}
