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
//! - **Gather / scatter**: every rank sends its chunk to the root (the root sends chunk `j` to
//!   rank `j`); the root's own chunk is a local copy.
//! - **The uneven collectives** (all-gather-v, reduce-scatter-v, all-to-all-v): as their even
//!   forms, with each block at its own size and displacement; empty blocks send nothing
//!   (both ends know a block is empty: all-gather-v's and reduce-scatter-v's sizes are the
//!   same on every rank, and all-to-all-v's sender and receiver agree by contract).
//! - **Barrier**: dissemination — in round `k` send a one-byte token to `r + 2ᵏ` and receive
//!   one from `r - 2ᵏ`; each round's send waits for the previous round's receive, so after
//!   `⌈log₂ p⌉` rounds every rank has heard, transitively, from every other.

use super::{rel, Algorithm};
use crate::cost::{seg_cost, Net};
use crate::schedule::{CollSpec, Collective, RankPlan, Region, Step, Uneven};
use crate::topology::Placement;

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
        // Long on purpose (~190 lines): one arm per collective, each a few lines of direct
        // sends and receives; splitting the match would scatter one algorithm over files.
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
            Collective::Gather => {
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
                let mut steps = vec![Step::Copy {
                    src: Region::input(0, n),
                    dst: Region::output(r * n, n),
                }];
                steps.extend(others.map(|j| Step::Recv {
                    peer: j,
                    dst: Region::output(j * n, n),
                    with: None,
                }));
                RankPlan { steps, scratch: 0 }
            }
            Collective::Scatter => {
                let root = spec.root;
                if r != root {
                    return RankPlan {
                        steps: vec![Step::Recv {
                            peer: root,
                            dst: Region::output(0, n),
                            with: None,
                        }],
                        scratch: 0,
                    };
                }
                let mut steps = vec![Step::Copy {
                    src: Region::input(r * n, n),
                    dst: Region::output(0, n),
                }];
                steps.extend(others.map(|j| Step::Send {
                    peer: j,
                    src: Region::input(j * n, n),
                }));
                RankPlan { steps, scratch: 0 }
            }
            // Planned by `plan_uneven`.
            Collective::SendRecv
            | Collective::AllGatherV
            | Collective::ReduceScatterV
            | Collective::AllToAllV => RankPlan::default(),
        }
    }

    fn plan_uneven(&self, spec: &CollSpec, u: &Uneven, rank: usize, _: &Placement) -> RankPlan {
        let (p, r) = (spec.world, rank);
        let (c, d) = (u.counts(), u.displs());
        let others = (1..p).map(|k| rel(r, k as isize, p));
        match spec.kind {
            Collective::AllGatherV => {
                let mut steps = Vec::new();
                if c[r] > 0 {
                    steps.push(Step::Copy {
                        src: Region::input(0, c[r]),
                        dst: Region::output(d[r], c[r]),
                    });
                    steps.extend(others.clone().map(|j| Step::Send {
                        peer: j,
                        src: Region::input(0, c[r]),
                    }));
                }
                steps.extend(others.filter(|&j| c[j] > 0).map(|j| Step::Recv {
                    peer: j,
                    dst: Region::output(d[j], c[j]),
                    with: None,
                }));
                RankPlan { steps, scratch: 0 }
            }
            Collective::ReduceScatterV => {
                let mut steps: Vec<Step> = others
                    .filter(|&j| c[j] > 0)
                    .map(|j| Step::Send {
                        peer: j,
                        src: Region::input(d[j], c[j]),
                    })
                    .collect();
                if c[r] > 0 {
                    let own = Region::input(d[r], c[r]);
                    fold(&mut steps, p, r, |_| own, Region::output(0, c[r]));
                }
                RankPlan {
                    steps,
                    scratch: c[r],
                }
            }
            Collective::AllToAllV => {
                let (rc, rd) = (u.recv_counts(), u.recv_displs());
                let mut steps = Vec::new();
                if c[r] > 0 {
                    steps.push(Step::Copy {
                        src: Region::input(d[r], c[r]),
                        dst: Region::output(rd[r], c[r]),
                    });
                }
                // Every pair exchanges a message, empty blocks included: its frame carries the
                // size, so a pair whose counts disagree (one side zero included) is a mismatch
                // in this call rather than a message left for a later one, or a wait for one
                // that never comes. An empty block's message names offset 0, which lies in any
                // buffer (its displacement need not).
                let at = |displ: usize, n: usize| if n == 0 { 0 } else { displ };
                steps.extend(others.map(|j| Step::Send {
                    peer: j,
                    src: Region::input(at(d[j], c[j]), c[j]),
                }));
                // Receive in the mirrored order r-1, r-2, ...: the peer that sends to us first.
                steps.extend(
                    (1..p)
                        .map(|k| rel(r, -(k as isize), p))
                        .map(|j| Step::Recv {
                            peer: j,
                            dst: Region::output(at(rd[j], rc[j]), rc[j]),
                            with: None,
                        }),
                );
                RankPlan { steps, scratch: 0 }
            }
            _ => RankPlan::default(),
        }
    }

    fn cost(&self, net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
        price(net, spec, bytes, seg)
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

// ---- Cost ----

/// Slowest flow of a fan-out in which `out[h]` flows leave and `inn[h]` flows enter host
/// `h`, every host pair that has flows carrying `bytes` each (host level: O(hosts²)).
fn fan_flow(
    net: &Net,
    out: &[f64],
    inn: &[f64],
    pair: impl Fn(usize, usize) -> bool,
    bytes: f64,
) -> f64 {
    let t = net.topo;
    let mut worst = 0.0f64;
    for (a, &out_a) in out.iter().enumerate() {
        for (b, &inn_b) in inn.iter().enumerate() {
            if !pair(a, b) {
                continue;
            }
            let l = t.host_link(a, b);
            let bw = if a == b {
                l.bandwidth
            } else {
                l.bandwidth
                    .min(t.nic_of(a) / out_a.max(1.0))
                    .min(t.nic_of(b) / inn_b.max(1.0))
            };
            worst = worst.max(l.alpha + net.overhead() + bytes / bw);
        }
    }
    worst
}

/// Predicted seconds of the direct algorithm: every rank exchanges with every other at once
/// (fan-out per host pair over the NICs, the host's cores shared by its local flows).
fn price(net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
    let p = spec.world;
    let pf = p as f64;
    let t = net.topo;
    let k: Vec<f64> = t.hosts().iter().map(|h| h.ranks.len() as f64).collect();
    // Every rank sends to everyone at once; a rank also serialises its own p-1 messages, and
    // the k(k-1) flows inside a host share its cores.
    let local = |b: f64| {
        k.iter()
            .enumerate()
            .map(|(h, &kh)| {
                let f = kh * (kh - 1.0);
                net.intra_alpha(h) + b / net.intra_bw(h, f)
            })
            .fold(0.0, f64::max)
    };
    let all_to_all = |b: f64| {
        let out: Vec<f64> = k.iter().map(|&k| k * (pf - k)).collect();
        let per_flow = fan_flow(net, &out, &out, |a, c| a != c || k[a] > 1.0, b);
        per_flow
            .max((pf - 1.0) * b / t.intra.bandwidth)
            .max(local(b))
            + seg_cost(pf - 1.0, b, seg)
    };
    Some(match spec.kind {
        // Direct folds p-1 receives into an accumulator and copies the result out. Its
        // receives are fused like the others, but priced at the full pass: with the fused
        // share its one-host price fell below halving-doubling's at 128 KiB, where it
        // measures slower (1 host × 4 ranks, `bash benches/topo_proof.sh`); its transfer
        // term, not its reductions, is what needs refitting there. (Only all-reduce was
        // measured; its reduce-scatter keeps the share.)
        Collective::AllReduce => all_to_all(bytes) + pf * net.pass_time(bytes),
        Collective::AllGather | Collective::AllToAll => all_to_all(bytes),
        Collective::ReduceScatter => all_to_all(bytes) + (pf - 1.0) * net.reduce_time(bytes),
        // Gather and scatter move one chunk per rank, as reduce and broadcast move the
        // buffer, without the reductions.
        Collective::Broadcast | Collective::Reduce | Collective::Gather | Collective::Scatter => {
            let rh = t.host_of(spec.root);
            let remote = pf - k[rh];
            let mut out = vec![0.0; k.len()];
            let mut inn = vec![0.0; k.len()];
            // Flows leave the root's host (broadcast, scatter) or enter it (reduce, gather).
            let (from, to) = if matches!(spec.kind, Collective::Broadcast | Collective::Scatter) {
                (&mut out, &mut inn)
            } else {
                (&mut inn, &mut out)
            };
            from[rh] = remote;
            for (h, &kh) in k.iter().enumerate() {
                if h != rh {
                    to[h] = kh;
                }
            }
            let per_flow = fan_flow(net, &out, &inn, |a, b| a == rh || b == rh, bytes);
            let red = if spec.kind == Collective::Reduce {
                pf * net.reduce_time(bytes)
            } else {
                0.0
            };
            per_flow.max((pf - 1.0) * bytes / t.intra.bandwidth)
                + seg_cost(pf - 1.0, bytes, seg)
                + red
        }
        Collective::Barrier => {
            let rounds = pf.log2().ceil();
            rounds * net.round(&net.ring_edges(), 1.0)
        }
        Collective::SendRecv
        | Collective::AllGatherV
        | Collective::ReduceScatterV
        | Collective::AllToAllV => return None,
    })
}
