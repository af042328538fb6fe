//! # Hierarchical (intra-host, then inter-host, then intra-host)
//!
//! Links inside a host (shared memory, NVLink, HCCS) are 10–100× faster than the network
//! between hosts, so the bytes that cross the network should be as few as possible and
//! every host's NIC should carry one stream per rail, not one per ring edge. The algorithm
//! works in three phases over the [`Placement`]'s hosts (each with `k` local ranks, `k` may
//! differ between hosts; `K` is the largest):
//!
//! Vocabulary:
//! - **Column** `c < K`: the `c`-th local rank of every host. On a host with `k` ranks,
//!   local rank `c mod k` **stands for** column `c`, so hosts with fewer ranks still take
//!   part in every column (their ranks stand for several).
//! - **Shard** (all-reduce): the buffer is cut into `K` shards, shard `j` belonging to
//!   column `j`. **Block** (all-gather, reduce-scatter): rank `t`'s `count` elements; it
//!   belongs to the column of `t`'s local index.
//! - An intra-host **chunk** `c` is everything (shards or blocks) whose column is `c mod k`:
//!   what local rank `c` is responsible for on its host.
//!
//! Collectives (the rings are [`crate::algo::ring`]'s, over sets of spans):
//! - **All-reduce**: (1) intra-host ring reduce-scatter of the chunks, accumulated in the
//!   output, so local rank `c` holds its host's sum of its shards; (2) for each shard, in
//!   ascending order, a ring all-reduce (reduce-scatter + all-gather of `H` pieces) among the
//!   ranks standing for its column on every host, in place in the output — every local rank
//!   drives its own shard across the hosts at once (multi-rail); (3) intra-host ring
//!   all-gather of the chunks. Each element crosses the network `2(H-1)/H` times per host
//!   instead of the flat ring's `2(p-1)/p` times per ring edge leaving a host.
//! - **Reduce-scatter**: (1) intra-host ring reduce-scatter of the blocks into scratch,
//!   (2) per column, a ring reduce-scatter across hosts whose last receive lands in the
//!   output of the block's owner (the owner stands for its own column on its own host).
//! - **All-gather**: the reverse: (1) per column, a ring all-gather across hosts of the
//!   column's blocks into the output, (2) intra-host ring all-gather of the chunks.
//!
//! Every element of a reduction is combined along one fixed path and copied everywhere else,
//! so replicas are bit-identical. Per-peer message order is the same on both ends because
//! every rank walks phases, then columns, then ring steps, in the same order.

use super::Algorithm;
use crate::cost::{seg_cost, Flow, Net};
use crate::schedule::{chunk, CollSpec, Collective, RankPlan, Region, Step};
use crate::topology::Placement;

/// The hierarchical algorithm.
pub struct Hierarchical;

impl Algorithm for Hierarchical {
    fn name(&self) -> &'static str {
        "hierarchical"
    }

    fn supports(&self, kind: Collective) -> bool {
        matches!(
            kind,
            Collective::AllReduce | Collective::AllGather | Collective::ReduceScatter
        )
    }

    fn plan(&self, spec: &CollSpec, rank: usize) -> RankPlan {
        self.plan_on(spec, rank, &Placement::flat(spec.world))
    }

    fn plan_on(&self, spec: &CollSpec, rank: usize, place: &Placement) -> RankPlan {
        if spec.world == 1 {
            return RankPlan::local_copy(spec.count);
        }
        let flat;
        let place = if place.world() == spec.world {
            place
        } else {
            flat = Placement::flat(spec.world);
            &flat
        };
        let h = Hosts::new(place, rank);
        match spec.kind {
            Collective::AllReduce => all_reduce(&h, spec.count),
            Collective::ReduceScatter => reduce_scatter(&h, spec.count),
            Collective::AllGather => all_gather(&h, spec.count),
            _ => RankPlan::default(),
        }
    }

    fn cost(&self, net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
        price(net, spec, bytes, seg)
    }
}

/// The hosts as one rank sees them.
struct Hosts<'a> {
    hosts: &'a [Vec<usize>],
    /// Local index of every rank.
    local: Vec<usize>,
    /// This rank's host and local index.
    me: (usize, usize),
    /// Largest number of ranks on a host.
    kmax: usize,
}

impl<'a> Hosts<'a> {
    fn new(place: &'a Placement, rank: usize) -> Hosts<'a> {
        let mut local = vec![0; place.world()];
        let mut me = (0, 0);
        for (hi, h) in place.hosts.iter().enumerate() {
            for (li, &r) in h.iter().enumerate() {
                local[r] = li;
                if r == rank {
                    me = (hi, li);
                }
            }
        }
        Hosts {
            hosts: &place.hosts,
            local,
            me,
            kmax: place.hosts.iter().map(Vec::len).max().unwrap_or(1),
        }
    }

    fn k(&self) -> usize {
        self.hosts[self.me.0].len()
    }

    fn my_host(&self) -> &[usize] {
        &self.hosts[self.me.0]
    }

    /// The rank standing for column `c` on every host, in host order.
    fn column(&self, c: usize) -> Vec<usize> {
        self.hosts.iter().map(|h| h[c % h.len()]).collect()
    }

    /// Whether this rank stands for column `c` on its host.
    fn stands_for(&self, c: usize) -> bool {
        c % self.k() == self.me.1
    }
}

/// Spans `(offset, len)` in one element space.
type Chunk = Vec<(usize, usize)>;

/// How a span maps to a buffer region.
type At<'a> = &'a dyn Fn(usize, usize) -> Region;

fn sends(steps: &mut Vec<Step>, peer: usize, ch: &Chunk, at: At) {
    for &(o, l) in ch.iter().filter(|s| s.1 > 0) {
        steps.push(Step::Send {
            peer,
            src: at(o, l),
        });
    }
}

fn recvs(steps: &mut Vec<Step>, peer: usize, ch: &Chunk, dst: At, with: Option<At>) {
    for &(o, l) in ch.iter().filter(|s| s.1 > 0) {
        steps.push(Step::Recv {
            peer,
            dst: dst(o, l),
            with: with.map(|w| w(o, l)),
        });
    }
}

/// Ring reduce-scatter among `members` (this rank at position `i`): afterwards position `i`
/// holds chunk `i` reduced over all members, in `last` (or `acc` when `last` is `None`).
/// The first send reads `src0`; receives compute `acc = with ⊕ received`.
#[allow(clippy::too_many_arguments)]
fn ring_rs(
    steps: &mut Vec<Step>,
    members: &[usize],
    i: usize,
    chunks: &[Chunk],
    src0: At,
    acc: At,
    with: At,
    last: Option<At>,
) {
    let k = members.len();
    let at = |d: isize| (i as isize + d).rem_euclid(k as isize) as usize;
    let (right, left) = (members[at(1)], members[at(-1)]);
    for s in 0..k.saturating_sub(1) {
        let sc = &chunks[at(-(s as isize) - 1)];
        let rc = &chunks[at(-(s as isize) - 2)];
        sends(steps, right, sc, if s == 0 { src0 } else { acc });
        let dst = match last {
            Some(l) if s == k - 2 => l,
            _ => acc,
        };
        recvs(steps, left, rc, dst, Some(with));
    }
}

/// Ring all-gather among `members`: position `i` holds chunk `i` in `buf` (its first send
/// reads `src0`); afterwards every position holds every chunk in `buf`.
fn ring_ag(
    steps: &mut Vec<Step>,
    members: &[usize],
    i: usize,
    chunks: &[Chunk],
    src0: At,
    buf: At,
) {
    let k = members.len();
    let at = |d: isize| (i as isize + d).rem_euclid(k as isize) as usize;
    let (right, left) = (members[at(1)], members[at(-1)]);
    for s in 0..k.saturating_sub(1) {
        sends(
            steps,
            right,
            &chunks[at(-(s as isize))],
            if s == 0 { src0 } else { buf },
        );
        recvs(steps, left, &chunks[at(-(s as isize) - 1)], buf, None);
    }
}

fn all_reduce(h: &Hosts, n: usize) -> RankPlan {
    let (k, (me_h, me_l)) = (h.k(), h.me);
    let shards: Vec<(usize, usize)> = (0..h.kmax).map(|j| chunk(n, h.kmax, j)).collect();
    let intra: Vec<Chunk> = (0..k)
        .map(|c| {
            (0..h.kmax)
                .filter(|j| j % k == c)
                .map(|j| shards[j])
                .collect()
        })
        .collect();
    let input: At = &|o, l| Region::input(o, l);
    let output: At = &|o, l| Region::output(o, l);
    let mut steps = Vec::new();
    if k == 1 {
        steps.push(Step::Copy {
            src: Region::input(0, n),
            dst: Region::output(0, n),
        });
    } else {
        ring_rs(
            &mut steps,
            h.my_host(),
            me_l,
            &intra,
            input,
            output,
            input,
            None,
        );
    }
    if h.hosts.len() > 1 {
        for (j, &(off, len)) in shards.iter().enumerate() {
            if !h.stands_for(j) {
                continue;
            }
            let members = h.column(j);
            let pieces: Vec<Chunk> = (0..members.len())
                .map(|x| {
                    let (o, l) = chunk(len, members.len(), x);
                    vec![(off + o, l)]
                })
                .collect();
            ring_rs(
                &mut steps, &members, me_h, &pieces, output, output, output, None,
            );
            // Position i now holds piece i; gather the pieces.
            ring_ag(&mut steps, &members, me_h, &pieces, output, output);
        }
    }
    if k > 1 {
        ring_ag(&mut steps, h.my_host(), me_l, &intra, output, output);
    }
    RankPlan { steps, scratch: 0 }
}

/// The blocks of every rank whose column is `c mod k` (intra-host chunk `c`), ascending.
fn intra_blocks(h: &Hosts, m: usize, k: usize) -> Vec<Chunk> {
    let p = h.local.len();
    (0..k)
        .map(|c| {
            (0..p)
                .filter(|&t| h.local[t] % k == c)
                .map(|t| (t * m, m))
                .collect()
        })
        .collect()
}

/// Per host (in order), the block of its rank in column `c`, empty if it has none.
fn column_blocks(h: &Hosts, m: usize, c: usize) -> Vec<Chunk> {
    h.hosts
        .iter()
        .map(|host| match host.get(c) {
            Some(&t) => vec![(t * m, m)],
            None => Vec::new(),
        })
        .collect()
}

fn reduce_scatter(h: &Hosts, m: usize) -> RankPlan {
    let p = h.local.len();
    if m == 0 {
        return RankPlan::default();
    }
    let (k, (me_h, me_l)) = (h.k(), h.me);
    let input: At = &|o, l| Region::input(o, l);
    let scratch: At = &|o, l| Region::scratch(o, l);
    let out: At = &|_, l| Region::output(0, l);
    let single_host = h.hosts.len() == 1;
    let mut steps = Vec::new();
    // Phase 1: the host's sums of the blocks this rank stands for, in scratch (or, on one
    // host, its own block straight in the output).
    if k > 1 {
        let last = if single_host { Some(out) } else { None };
        let chunks = intra_blocks(h, m, k);
        ring_rs(
            &mut steps,
            h.my_host(),
            me_l,
            &chunks,
            input,
            scratch,
            input,
            last,
        );
    }
    // Phase 2: per column, reduce across hosts; the owner's last receive is its output.
    if !single_host {
        let held = if k > 1 { scratch } else { input };
        for c in 0..h.kmax {
            if !h.stands_for(c) {
                continue;
            }
            let members = h.column(c);
            let chunks = column_blocks(h, m, c);
            ring_rs(
                &mut steps,
                &members,
                me_h,
                &chunks,
                held,
                scratch,
                held,
                Some(out),
            );
        }
    }
    RankPlan {
        steps,
        scratch: p * m,
    }
}

fn all_gather(h: &Hosts, m: usize) -> RankPlan {
    let me = h.my_host()[h.me.1];
    let mut steps = vec![Step::Copy {
        src: Region::input(0, m),
        dst: Region::output(me * m, m),
    }];
    if m == 0 {
        return RankPlan { steps, scratch: 0 };
    }
    let (k, (me_h, me_l)) = (h.k(), h.me);
    let output: At = &|o, l| Region::output(o, l);
    let input: At = &|_, l| Region::input(0, l);
    if h.hosts.len() > 1 {
        for c in 0..h.kmax {
            if !h.stands_for(c) {
                continue;
            }
            let members = h.column(c);
            let chunks = column_blocks(h, m, c);
            // This rank's own block (column c == its local index) is sent from the input.
            let src0 = if c == me_l { input } else { output };
            ring_ag(&mut steps, &members, me_h, &chunks, src0, output);
        }
    }
    if k > 1 {
        let chunks = intra_blocks(h, m, k);
        ring_ag(&mut steps, h.my_host(), me_l, &chunks, output, output);
    }
    RankPlan { steps, scratch: 0 }
}

// ---- Cost ----

/// Predicted seconds of the hierarchical schedule: intra-host rings on every host at once,
/// then one inter-host ring per column (sharing the NICs), then the intra-host rings again.
fn price(net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
    let kind = spec.kind;
    let hosts = &net.place.hosts;
    let h = hosts.len() as f64;
    let kmax = hosts.iter().map(Vec::len).max().unwrap_or(1);
    let p: usize = hosts.iter().map(Vec::len).sum();
    // Intra-host ring over k ranks moving `c` bytes per step, `steps` steps; its k flows run
    // at once on the host's cores.
    let intra_ring = |c_of: &dyn Fn(f64) -> f64, red: bool| {
        hosts
            .iter()
            .map(|host| {
                let k = host.len() as f64;
                let c = c_of(k);
                let hi = net.topo.host_of(host[0]);
                let ia = Flow {
                    alpha: net.intra_alpha(hi),
                    bw: net.intra_bw(hi, k),
                };
                let s = k - 1.0;
                s * ia.time(c)
                    + seg_cost(s, c, seg)
                    + if red {
                        s * net.reduce_time_on(c, true)
                    } else {
                        0.0
                    }
            })
            .fold(0.0, f64::max)
    };
    // Inter-host rings, one per column, all at once: the flows of every column in the
    // first round price the NIC sharing; a rank standing for several columns does them in
    // turn.
    let inter_rings = |c: f64, steps: f64, red: bool| {
        if hosts.len() < 2 {
            return 0.0;
        }
        let cols = kmax.min(hosts.iter().map(Vec::len).min().unwrap_or(1));
        let mut pairs = Vec::new();
        for col in 0..cols {
            for (g, host) in hosts.iter().enumerate() {
                let next = &hosts[(g + 1) % hosts.len()];
                pairs.push((host[col % host.len()], next[col % next.len()]));
            }
        }
        let flows = net.flows(&pairs);
        let step = flows.iter().map(|f| f.time(c)).fold(0.0, f64::max);
        let turns = hosts
            .iter()
            .map(|x| kmax.div_ceil(x.len()))
            .max()
            .unwrap_or(1) as f64;
        // Columns beyond the smallest host's size run as extra turns on the small hosts.
        let turns = turns.max((kmax as f64 / cols as f64).ceil());
        turns
            * (steps * step
                + seg_cost(steps, c, seg)
                + if red {
                    steps * net.reduce_time_on(c, false)
                } else {
                    0.0
                })
    };
    let pf = p as f64;
    Some(match kind {
        Collective::AllReduce => {
            let shard = bytes / kmax as f64;
            intra_ring(&|k| bytes / k, true)
                + inter_rings(shard / h, 2.0 * (h - 1.0), true) / 2.0
                + inter_rings(shard / h, 2.0 * (h - 1.0), false) / 2.0
                + intra_ring(&|k| bytes / k, false)
        }
        Collective::ReduceScatter => {
            intra_ring(&|k| pf * bytes / k, true) + inter_rings(bytes, h - 1.0, true)
        }
        Collective::AllGather => {
            inter_rings(bytes, h - 1.0, false) + intra_ring(&|k| pf * bytes / k, false)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::tests::check_on;
    use crate::config::RingOrder;
    use crate::topology::{Host, LinkSpec, Topology};
    use crate::types::{DataType, ReduceOp};

    fn topo(sizes: &[usize], cyclic: bool) -> Topology {
        let p: usize = sizes.iter().sum();
        let mut hosts: Vec<Host> = sizes
            .iter()
            .enumerate()
            .map(|(i, _)| Host {
                name: format!("h{i}"),
                ranks: Vec::new(),
                nic: None,
                cores: None,
                intra_total: None,
            })
            .collect();
        // Deal ranks round-robin (cyclic) or in runs, respecting each host's size.
        let mut left = sizes.to_vec();
        let mut next = 0;
        for r in 0..p {
            if cyclic {
                while left[next % sizes.len()] == 0 {
                    next += 1;
                }
                let hi = next % sizes.len();
                hosts[hi].ranks.push(r);
                left[hi] -= 1;
                next += 1;
            } else {
                let hi = (0..sizes.len()).find(|&i| left[i] > 0).unwrap_or(0);
                hosts[hi].ranks.push(r);
                left[hi] -= 1;
            }
        }
        let l = LinkSpec::from_us_gbit(1.0, 10.0);
        Topology::new(hosts, l, l, None, vec![]).unwrap()
    }

    #[test]
    fn matches_the_reference_on_equal_and_unequal_hosts() {
        let shapes: &[&[usize]] = &[
            &[1],
            &[3],
            &[1, 1],
            &[2, 2],
            &[2, 1],
            &[1, 3, 2],
            &[3, 3, 3],
            &[4, 1, 2, 1],
        ];
        for sizes in shapes {
            for cyclic in [false, true] {
                let t = topo(sizes, cyclic);
                let place = Placement::new(&t, RingOrder::Topology);
                for kind in [
                    Collective::AllReduce,
                    Collective::AllGather,
                    Collective::ReduceScatter,
                ] {
                    for count in [0usize, 1, 5, 17] {
                        let spec = CollSpec {
                            kind,
                            world: t.world(),
                            count,
                            root: 0,
                        };
                        check_on(&Hierarchical, spec, DataType::I32, ReduceOp::Sum, &place);
                        if count == 5 {
                            check_on(&Hierarchical, spec, DataType::F32, ReduceOp::Avg, &place);
                        }
                    }
                }
            }
        }
    }
}
