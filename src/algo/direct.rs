//! # Direct (pairwise)
//!
//! Every rank talks to every other rank at once: one step of latency, `p-1` messages per
//! rank. The choice for small messages, where latency dominates, and for all-to-all, whose
//! traffic is pairwise by nature.
//!
//! Reductions fold the contributions in rank order `((x₀ ⊕ x₁) ⊕ x₂) ⊕ …` into a scratch
//! accumulator (so in-place calls never overwrite data still to be sent), then copy the result
//! out: every rank computes exactly the same operations, so results are bit-identical.
//!
//! - **All-reduce**: send the input to every peer; fold all contributions.
//! - **All-gather / broadcast**: send the input to every peer (the root's only, for broadcast).
//! - **Reduce-scatter / reduce**: send chunk `j` to rank `j` (everything to the root); the
//!   receiver folds.
//! - **All-to-all**: send chunk `j` to rank `j` and receive chunk `j` from it, every send
//!   posted before any receive so that in-place calls read their data before it is replaced;
//!   peers are visited in the order `r+1, r+2, …` so no rank is everyone's first target.
//! - **Barrier**: dissemination — in round `k` send a one-byte token to `r + 2ᵏ` and receive
//!   one from `r - 2ᵏ`; each round's send waits for the previous round's receive, so after
//!   `⌈log₂ p⌉` rounds every rank has heard, transitively, from every other.

use super::{rel, Algorithm};
use crate::schedule::{CollSpec, Collective, RankPlan, Region, Step};

/// The direct algorithm.
pub struct Direct;

impl Algorithm for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn supports(&self, kind: Collective) -> bool {
        kind != Collective::SendRecv
    }

    fn plan(&self, spec: &CollSpec, rank: usize) -> RankPlan {
        let (p, n, r) = (spec.world, spec.count, rank);
        let others = (1..p).map(|k| rel(r, k as isize, p));
        match spec.kind {
            Collective::AllReduce => {
                let mut steps: Vec<Step> = others
                    .map(|j| Step::Send {
                        peer: j,
                        src: Region::input(0, n),
                    })
                    .collect();
                fold(
                    &mut steps,
                    p,
                    r,
                    |_| Region::input(0, n),
                    Region::output(0, n),
                );
                RankPlan { steps, scratch: n }
            }
            Collective::ReduceScatter => {
                let mut steps: Vec<Step> = others
                    .map(|j| Step::Send {
                        peer: j,
                        src: Region::input(j * n, n),
                    })
                    .collect();
                fold(
                    &mut steps,
                    p,
                    r,
                    |me| Region::input(me * n, n),
                    Region::output(0, n),
                );
                RankPlan { steps, scratch: n }
            }
            Collective::Reduce => {
                let root = spec.root;
                if r != root {
                    return RankPlan {
                        steps: vec![Step::Send {
                            peer: root,
                            src: Region::input(0, n),
                        }],
                        scratch: 0,
                    };
                }
                let mut steps = Vec::new();
                fold(
                    &mut steps,
                    p,
                    r,
                    |_| Region::input(0, n),
                    Region::output(0, n),
                );
                RankPlan { steps, scratch: n }
            }
            Collective::AllGather => {
                let mut steps = vec![Step::Copy {
                    src: Region::input(0, n),
                    dst: Region::output(r * n, n),
                }];
                steps.extend(others.clone().map(|j| Step::Send {
                    peer: j,
                    src: Region::input(0, n),
                }));
                steps.extend(others.map(|j| Step::Recv {
                    peer: j,
                    dst: Region::output(j * n, n),
                    with: None,
                }));
                RankPlan { steps, scratch: 0 }
            }
            Collective::Broadcast => {
                let root = spec.root;
                let steps = if r == root {
                    let mut s = vec![Step::Copy {
                        src: Region::input(0, n),
                        dst: Region::output(0, n),
                    }];
                    s.extend(others.map(|j| Step::Send {
                        peer: j,
                        src: Region::input(0, n),
                    }));
                    s
                } else {
                    vec![Step::Recv {
                        peer: root,
                        dst: Region::output(0, n),
                        with: None,
                    }]
                };
                RankPlan { steps, scratch: 0 }
            }
            Collective::AllToAll => {
                let mut steps = vec![Step::Copy {
                    src: Region::input(r * n, n),
                    dst: Region::output(r * n, n),
                }];
                steps.extend(others.clone().map(|j| Step::Send {
                    peer: j,
                    src: Region::input(j * n, n),
                }));
                // Receive in the mirrored order r-1, r-2, ...: the peer that sends to us first.
                steps.extend(
                    (1..p)
                        .map(|k| rel(r, -(k as isize), p))
                        .map(|j| Step::Recv {
                            peer: j,
                            dst: Region::output(j * n, n),
                            with: None,
                        }),
                );
                RankPlan { steps, scratch: 0 }
            }
            Collective::Barrier => {
                let rounds = p.next_power_of_two().trailing_zeros() as usize;
                let mut steps = Vec::new();
                for k in 0..rounds {
                    let d = 1isize << k;
                    // Round 0's token is never read as data; later rounds forward the last token.
                    let token = Region::scratch(k.saturating_sub(1), 1);
                    steps.push(Step::Send {
                        peer: rel(r, d, p),
                        src: token,
                    });
                    steps.push(Step::Recv {
                        peer: rel(r, -d, p),
                        dst: Region::scratch(k, 1),
                        with: None,
                    });
                }
                RankPlan {
                    steps,
                    scratch: rounds.max(1),
                }
            }
            Collective::SendRecv => RankPlan::default(),
        }
    }
}

/// Appends the rank-order fold of all `p` contributions into the scratch accumulator
/// `[0, len)`, then the copy of the result to `out`. `own(r)` is this rank's contribution;
/// peers' contributions arrive as messages of `out.len` elements.
fn fold(steps: &mut Vec<Step>, p: usize, r: usize, own: impl Fn(usize) -> Region, out: Region) {
    let acc = Region::scratch(0, out.len);
    for j in 0..p {
        steps.push(match (j == 0, j == r) {
            (true, true) => Step::Copy {
                src: own(r),
                dst: acc,
            },
            (true, false) => Step::Recv {
                peer: j,
                dst: acc,
                with: None,
            },
            (false, true) => Step::Reduce {
                dst: acc,
                a: acc,
                b: own(r),
            },
            (false, false) => Step::Recv {
                peer: j,
                dst: acc,
                with: Some(acc),
            },
        });
    }
    steps.push(Step::Copy { src: acc, dst: out });
}
