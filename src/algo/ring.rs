//! # Ring
//!
//! The ranks form a ring `r -> r+1 -> ... -> r-1 -> r`; every rank sends only to its right
//! neighbour and receives only from its left one, so each link carries the same bytes and
//! the ring runs at the speed of its slowest link. Bandwidth-optimal for large messages;
//! latency grows with `2(p-1)` steps.
//!
//! Vocabulary: the buffer is cut into `p` **chunks** (the first `count % p` one element
//! longer, see [`chunk`]); the executor cuts each message into **segments** and pipelines
//! them, so a segment is forwarded as soon as it has arrived and been reduced.
//!
//! - **Reduce-scatter** (`p-1` steps): at step `s` rank `r` sends chunk `r-s-1` and receives
//!   chunk `r-s-2`, reducing it with its own input; the reduced chunk is sent on at the next
//!   step. After `p-1` steps rank `r` holds chunk `r` fully reduced. Intermediate chunks
//!   alternate between two scratch slots.
//! - **All-gather** (`p-1` steps): rank `r` sends its chunk right, then forwards what it
//!   received at the previous step.
//! - **All-reduce** = reduce-scatter (rank `r` ends with chunk `r+1`, accumulated straight
//!   into the output) followed by all-gather: `2(p-1)/p` of the buffer crosses each link.
//! - **Broadcast / reduce**: a pipelined chain from (to) the root.
//! - **All-gather-v / reduce-scatter-v**: as all-gather and reduce-scatter, each rank's block
//!   at its own size and displacement; a step whose block is empty sends and receives nothing
//!   (both ends know, the sizes being the same on every rank). Reduce-scatter-v's two scratch
//!   slots hold the largest block.
//!
//! Each chunk of a reduction is combined along one fixed path, and every other rank copies
//! the result, so all ranks hold bit-identical data.
//!
//! **Order.** The ring need not follow rank numbers: with a [`Placement`] the ring is
//! `placement.ring` (each host's ranks contiguous, see [`crate::topology::ring`]), and
//! everything above is done by **position** in that ring. All-reduce chunks are numbered by
//! position; all-gather and reduce-scatter keep their rank-ordered buffer layout, so the
//! block of position `q` is the block of rank `ring[q]`.

use super::{rel, Algorithm};
use crate::cost::{seg_cost, Net};
use crate::schedule::{chunk, CollSpec, Collective, RankPlan, Region, Step, Uneven};
use crate::topology::Placement;

/// A ring order seen from one rank: its position, and the rank at any other position.
struct Order<'a> {
    ring: Option<&'a [usize]>,
    p: usize,
}

impl Order<'_> {
    /// The rank at position `q` (`q` taken modulo the world).
    fn at(&self, q: usize) -> usize {
        let q = q % self.p;
        self.ring.map_or(q, |o| o[q])
    }
}

/// The ring algorithm.
pub struct Ring;

impl Algorithm for Ring {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn supports(&self, kind: Collective) -> bool {
        matches!(
            kind,
            Collective::AllReduce
                | Collective::AllGather
                | Collective::ReduceScatter
                | Collective::Broadcast
                | Collective::Reduce
                | Collective::AllGatherV
                | Collective::ReduceScatterV
        )
    }

    fn plan(&self, spec: &CollSpec, rank: usize) -> RankPlan {
        plan_in(spec, rank, None)
    }

    fn plan_on(&self, spec: &CollSpec, rank: usize, place: &Placement) -> RankPlan {
        if place.world() != spec.world || place.ring_is_rank_order() {
            return plan_in(spec, rank, None);
        }
        plan_in(spec, rank, Some((&place.ring, &place.pos)))
    }

    fn plan_uneven(&self, spec: &CollSpec, u: &Uneven, rank: usize, place: &Placement) -> RankPlan {
        let p = spec.world;
        let ring = (place.world() == p && !place.ring_is_rank_order()).then_some(&place.ring);
        let o = Order {
            ring: ring.map(Vec::as_slice),
            p,
        };
        let me = if ring.is_some() {
            place.pos[rank]
        } else {
            rank
        };
        match spec.kind {
            Collective::AllGatherV => all_gather_v(&o, u, me),
            Collective::ReduceScatterV => reduce_scatter_v(&o, u, me),
            _ => RankPlan::default(),
        }
    }

    fn cost(&self, net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
        price(net, spec, bytes, seg)
    }
}

/// All-gather-v at position `r`: the block of the rank at position `r - s` goes right at
/// step `s`.
fn all_gather_v(o: &Order, u: &Uneven, r: usize) -> RankPlan {
    let p = o.p;
    let (c, d) = (u.counts(), u.displs());
    let (right, left) = (o.at(rel(r, 1, p)), o.at(rel(r, -1, p)));
    let me = o.at(r);
    let block = |q: usize| Region::output(d[q], c[q]);
    let mut steps = Vec::new();
    if c[me] > 0 {
        steps.push(Step::Copy {
            src: Region::input(0, c[me]),
            dst: block(me),
        });
    }
    for s in 0..p - 1 {
        let sc = o.at(rel(r, -(s as isize), p));
        let rc = o.at(rel(r, -(s as isize) - 1, p));
        if c[sc] > 0 {
            let src = if s == 0 {
                Region::input(0, c[me])
            } else {
                block(sc)
            };
            steps.push(Step::Send { peer: right, src });
        }
        if c[rc] > 0 {
            steps.push(Step::Recv {
                peer: left,
                dst: block(rc),
                with: None,
            });
        }
    }
    RankPlan { steps, scratch: 0 }
}

/// Reduce-scatter-v at position `r`: the partial sum of the block of the rank at position
/// `r - s - 1` goes right at step `s`; two scratch slots of the largest block alternate.
fn reduce_scatter_v(o: &Order, u: &Uneven, r: usize) -> RankPlan {
    let p = o.p;
    let (c, d) = (u.counts(), u.displs());
    let (right, left) = (o.at(rel(r, 1, p)), o.at(rel(r, -1, p)));
    let me = o.at(r);
    if p == 1 {
        let mut steps = Vec::new();
        if c[me] > 0 {
            steps.push(Step::Copy {
                src: Region::input(d[me], c[me]),
                dst: Region::output(0, c[me]),
            });
        }
        return RankPlan { steps, scratch: 0 };
    }
    let m = c.iter().copied().max().unwrap_or(0);
    let slot = |s: usize, len: usize| Region::scratch((s % 2) * m, len);
    let mut steps = Vec::new();
    for s in 0..p - 1 {
        let sc = o.at(rel(r, -(s as isize) - 1, p));
        let rc = o.at(rel(r, -(s as isize) - 2, p));
        if c[sc] > 0 {
            let src = if s == 0 {
                Region::input(d[sc], c[sc])
            } else {
                slot(s - 1, c[sc])
            };
            steps.push(Step::Send { peer: right, src });
        }
        if c[rc] > 0 {
            let dst = if s == p - 2 {
                Region::output(0, c[rc])
            } else {
                slot(s, c[rc])
            };
            steps.push(Step::Recv {
                peer: left,
                dst,
                with: Some(Region::input(d[rc], c[rc])),
            });
        }
    }
    RankPlan {
        steps,
        scratch: if p > 2 { 2 * m } else { 0 },
    }
}

/// The plan of `rank` on the ring `ring` (with positions `pos`), rank order when `None`.
fn plan_in(spec: &CollSpec, rank: usize, ring: Option<(&[usize], &[usize])>) -> RankPlan {
    let p = spec.world;
    let n = spec.count;
    if p == 1 {
        return RankPlan::local_copy(n);
    }
    let o = Order {
        ring: ring.map(|r| r.0),
        p,
    };
    let pos = |r: usize| ring.map_or(r, |x| x.1[r]);
    let me = pos(rank);
    match spec.kind {
        Collective::AllReduce => all_reduce(&o, n, me),
        Collective::AllGather => all_gather(&o, n, me),
        Collective::ReduceScatter => reduce_scatter(&o, n, me),
        Collective::Broadcast => broadcast(&o, n, me, pos(spec.root)),
        Collective::Reduce => reduce(&o, n, me, pos(spec.root)),
        _ => RankPlan::default(),
    }
}

fn all_reduce(o: &Order, n: usize, r: usize) -> RankPlan {
    let p = o.p;
    let (right, left) = (o.at(rel(r, 1, p)), o.at(rel(r, -1, p)));
    let ch = |c: usize| chunk(n, p, c);
    let mut steps = Vec::new();
    let push_pair = |steps: &mut Vec<Step>, send: Region, recv: Step| {
        if send.len > 0 {
            steps.push(Step::Send {
                peer: right,
                src: send,
            });
        }
        if !recv.is_empty() {
            steps.push(recv);
        }
    };
    for s in 0..p - 1 {
        let (so, sl) = ch(rel(r, -(s as isize), p));
        let (ro, rl) = ch(rel(r, -(s as isize) - 1, p));
        let src = if s == 0 {
            Region::input(so, sl)
        } else {
            Region::output(so, sl)
        };
        let recv = Step::Recv {
            peer: left,
            dst: Region::output(ro, rl),
            with: Some(Region::input(ro, rl)),
        };
        push_pair(&mut steps, src, recv);
    }
    for s in 0..p - 1 {
        let (so, sl) = ch(rel(r, 1 - s as isize, p));
        let (ro, rl) = ch(rel(r, -(s as isize), p));
        push_pair(
            &mut steps,
            Region::output(so, sl),
            Step::Recv {
                peer: left,
                dst: Region::output(ro, rl),
                with: None,
            },
        );
    }
    RankPlan { steps, scratch: 0 }
}

fn all_gather(o: &Order, m: usize, r: usize) -> RankPlan {
    let p = o.p;
    let (right, left) = (o.at(rel(r, 1, p)), o.at(rel(r, -1, p)));
    let mut steps = vec![Step::Copy {
        src: Region::input(0, m),
        dst: Region::output(o.at(r) * m, m),
    }];
    if m == 0 {
        return RankPlan { steps, scratch: 0 };
    }
    for s in 0..p - 1 {
        let sc = o.at(rel(r, -(s as isize), p));
        let rc = o.at(rel(r, -(s as isize) - 1, p));
        let src = if s == 0 {
            Region::input(0, m)
        } else {
            Region::output(sc * m, m)
        };
        steps.push(Step::Send { peer: right, src });
        steps.push(Step::Recv {
            peer: left,
            dst: Region::output(rc * m, m),
            with: None,
        });
    }
    RankPlan { steps, scratch: 0 }
}

fn reduce_scatter(o: &Order, m: usize, r: usize) -> RankPlan {
    let p = o.p;
    let (right, left) = (o.at(rel(r, 1, p)), o.at(rel(r, -1, p)));
    if m == 0 {
        return RankPlan::default();
    }
    let mut steps = Vec::new();
    let slot = |s: usize| Region::scratch((s % 2) * m, m);
    for s in 0..p - 1 {
        let sc = o.at(rel(r, -(s as isize) - 1, p));
        let rc = o.at(rel(r, -(s as isize) - 2, p));
        let src = if s == 0 {
            Region::input(sc * m, m)
        } else {
            slot(s - 1)
        };
        let dst = if s == p - 2 {
            Region::output(0, m)
        } else {
            slot(s)
        };
        steps.push(Step::Send { peer: right, src });
        steps.push(Step::Recv {
            peer: left,
            dst,
            with: Some(Region::input(rc * m, m)),
        });
    }
    RankPlan {
        steps,
        scratch: if p > 2 { 2 * m } else { 0 },
    }
}

fn broadcast(o: &Order, n: usize, r: usize, root: usize) -> RankPlan {
    let p = o.p;
    let k = rel(r, -(root as isize), p);
    let next = o.at(rel(r, 1, p));
    let prev = o.at(rel(r, -1, p));
    let all = |b: fn(usize, usize) -> Region| b(0, n);
    let mut steps = Vec::new();
    if n == 0 {
        return RankPlan::default();
    }
    if k == 0 {
        steps.push(Step::Copy {
            src: all(Region::input),
            dst: all(Region::output),
        });
        steps.push(Step::Send {
            peer: next,
            src: all(Region::input),
        });
    } else {
        steps.push(Step::Recv {
            peer: prev,
            dst: all(Region::output),
            with: None,
        });
        if k < p - 1 {
            steps.push(Step::Send {
                peer: next,
                src: all(Region::output),
            });
        }
    }
    RankPlan { steps, scratch: 0 }
}

fn reduce(o: &Order, n: usize, r: usize, root: usize) -> RankPlan {
    // Chain root+1 -> root+2 -> ... -> root (positions).
    let p = o.p;
    let k = rel(r, -(root as isize) - 1, p);
    let (next, prev) = (o.at(rel(r, 1, p)), o.at(rel(r, -1, p)));
    if n == 0 {
        return RankPlan::default();
    }
    let input = Region::input(0, n);
    let acc = Region::scratch(0, n);
    let steps = if k == 0 {
        vec![Step::Send {
            peer: next,
            src: input,
        }]
    } else if k == p - 1 {
        vec![Step::Recv {
            peer: prev,
            dst: Region::output(0, n),
            with: Some(input),
        }]
    } else {
        vec![
            Step::Recv {
                peer: prev,
                dst: acc,
                with: Some(input),
            },
            Step::Send {
                peer: next,
                src: acc,
            },
        ]
    };
    let scratch = if k == 0 || k == p - 1 { 0 } else { n };
    RankPlan { steps, scratch }
}

// ---- Cost ----

/// Predicted seconds of the ring for `spec` moving `bytes` per rank buffer in segments of
/// `seg` bytes: `2(p-1)` steps of one chunk over the slowest ring edge for all-reduce,
/// `p-1` steps for the gathers, a pipelined chain for broadcast and reduce.
fn price(net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
    let (kind, p) = (spec.kind, spec.world);
    let edges = net.ring_edges();
    // The flows' prices do not depend on the message size: price them once.
    let ring_flows = net.flows(&edges);
    let step = |c: f64| ring_flows.iter().map(|f| f.time(c)).fold(0.0, f64::max);
    let pf = p as f64;
    Some(match kind {
        Collective::AllReduce => {
            let c = bytes / pf;
            let steps = 2.0 * (pf - 1.0);
            steps * step(c) + seg_cost(steps, c, seg) + (pf - 1.0) * net.reduce_time(c)
        }
        Collective::AllGather | Collective::ReduceScatter => {
            let steps = pf - 1.0;
            let red = if kind == Collective::ReduceScatter {
                steps * net.reduce_time(bytes)
            } else {
                0.0
            };
            steps * step(bytes) + seg_cost(steps, bytes, seg) + red
        }
        Collective::Broadcast | Collective::Reduce => {
            // A pipelined chain: the first segment crosses p-1 links, the rest follow.
            let s = (seg as f64).min(bytes).max(1.0);
            // The chain runs along the ring from the root (broadcast) or into it (reduce,
            // from the root's successor): every edge but one carries the data.
            let chain: Vec<(usize, usize)> = edges
                .iter()
                .copied()
                .filter(|&(a, b)| {
                    if kind == Collective::Broadcast {
                        b != spec.root
                    } else {
                        a != spec.root
                    }
                })
                .collect();
            let flows = net.flows(&chain);
            let worst = flows.iter().fold(0.0f64, |m, f| m.max(f.time(s)));
            let slowest = flows.iter().map(|f| f.bw).fold(f64::INFINITY, f64::min);
            let red = if kind == Collective::Reduce {
                net.reduce_time(bytes)
            } else {
                0.0
            };
            (pf - 2.0) * worst + step(0.0) + bytes / slowest + seg_cost(1.0, bytes, seg) + red
        }
        _ => return None,
    })
}
