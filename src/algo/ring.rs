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
//!
//! Each chunk of a reduction is combined along one fixed path, and every other rank copies
//! the result, so all ranks hold bit-identical data.

use super::{rel, Algorithm};
use crate::schedule::{chunk, CollSpec, Collective, RankPlan, Region, Step};

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
        )
    }

    fn plan(&self, spec: &CollSpec, rank: usize) -> RankPlan {
        let p = spec.world;
        let n = spec.count;
        if p == 1 {
            return RankPlan::local_copy(n);
        }
        match spec.kind {
            Collective::AllReduce => all_reduce(p, n, rank),
            Collective::AllGather => all_gather(p, n, rank),
            Collective::ReduceScatter => reduce_scatter(p, n, rank),
            Collective::Broadcast => broadcast(p, n, rank, spec.root),
            Collective::Reduce => reduce(p, n, rank, spec.root),
            _ => RankPlan::default(),
        }
    }
}

fn all_reduce(p: usize, n: usize, r: usize) -> RankPlan {
    let (right, left) = (rel(r, 1, p), rel(r, -1, p));
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

fn all_gather(p: usize, m: usize, r: usize) -> RankPlan {
    let (right, left) = (rel(r, 1, p), rel(r, -1, p));
    let mut steps = vec![Step::Copy {
        src: Region::input(0, m),
        dst: Region::output(r * m, m),
    }];
    if m == 0 {
        return RankPlan { steps, scratch: 0 };
    }
    for s in 0..p - 1 {
        let sc = rel(r, -(s as isize), p);
        let rc = rel(r, -(s as isize) - 1, p);
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

fn reduce_scatter(p: usize, m: usize, r: usize) -> RankPlan {
    let (right, left) = (rel(r, 1, p), rel(r, -1, p));
    if m == 0 {
        return RankPlan::default();
    }
    let mut steps = Vec::new();
    let slot = |s: usize| Region::scratch((s % 2) * m, m);
    for s in 0..p - 1 {
        let sc = rel(r, -(s as isize) - 1, p);
        let rc = rel(r, -(s as isize) - 2, p);
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

fn broadcast(p: usize, n: usize, r: usize, root: usize) -> RankPlan {
    let k = rel(r, -(root as isize), p);
    let next = rel(r, 1, p);
    let prev = rel(r, -1, p);
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

fn reduce(p: usize, n: usize, r: usize, root: usize) -> RankPlan {
    // Chain root+1 -> root+2 -> ... -> root.
    let k = rel(r, -(root as isize) - 1, p);
    let (next, prev) = (rel(r, 1, p), rel(r, -1, p));
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
