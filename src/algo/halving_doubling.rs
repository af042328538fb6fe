//! # Recursive halving-doubling (Rabenseifner)
//!
//! Ranks pair up across distances that are powers of two, and every exchange halves (or
//! doubles) the data a rank is responsible for: `log₂ p` steps per phase instead of the
//! ring's `p - 1`, with the same bandwidth (each rank sends `(p-1)/p` of the buffer per
//! phase). The choice for mid-sized messages, where the ring's latency hurts and the tree's
//! bandwidth is not needed.
//!
//! Vocabulary:
//! - **Chunk**: the buffer holds `p` chunks, one per rank — [`chunk`]`(n, p, c)` for
//!   all-reduce (uneven when `p` does not divide `n`), exactly `count` elements for
//!   reduce-scatter (input) and all-gather (output).
//! - **Fold**: with `p' = 2^⌊log₂ p⌋` and `e = p - p'` **excess** ranks, the pairs of real
//!   ranks `(2i, 2i+1)` for `i < e` are folded: the odd one (**guest**) sends its whole input
//!   to the even one (**host**), which reduces `host ⊕ guest` (or, for all-gather, stores the
//!   guest's chunk) and stands for both; the guest sits out and gets its result from the host
//!   at the end. Power-of-two worlds fold nothing.
//! - **Virtual rank** `v < p'`: host `2v` for `v < e`, real rank `v + e` otherwise. Virtual
//!   rank `v` owns the real chunks `[real(v), real(v+1))` (two for a host, one otherwise), so
//!   every aligned range of virtual ranks owns a *contiguous* range of chunks, in elements
//!   too, which is what lets non-power-of-two worlds and uneven chunks work unchanged.
//! - **Block**: the range of virtual ranks a rank is responsible for at a step.
//!
//! - **Recursive halving** (reduce-scatter), distances `d = p'/2, p'/4, …, 1`: a rank's block
//!   is the aligned range of `2d` virtual ranks around it; it keeps the half holding itself,
//!   sends the other half to its partner `v xor d` and receives the partner's partial sums of
//!   the kept half, computing `mine ⊕ theirs`. After `log₂ p'` steps virtual rank `v` holds
//!   its own chunks fully reduced, each computed at exactly one place.
//! - **Recursive doubling** (all-gather), distances `d = 1, 2, …, p'/2`: a rank sends its
//!   aligned block of `d` virtual ranks to `v xor d` and receives the partner's block.
//! - **All-reduce** = fold, halving, doubling, unfold (the host sends the whole result to
//!   its guest). Working data lives in the output (scratch-free): the first step reads the
//!   input, every later one the output, and results are bit-identical everywhere because
//!   every chunk is reduced by one rank and copied by the others.
//! - **Reduce-scatter** works in a scratch copy of the input layout (the output aliases the
//!   input's chunk `r` in place); the last receive lands straight in the output.

use super::Algorithm;
use crate::cost::{seg_cost, Net, CONSTANTS};
use crate::schedule::{chunk, Buf, CollSpec, Collective, RankPlan, Region, Step};

/// The recursive halving-doubling algorithm.
pub struct HalvingDoubling;

impl Algorithm for HalvingDoubling {
    fn name(&self) -> &'static str {
        "halving_doubling"
    }

    fn supports(&self, kind: Collective) -> bool {
        matches!(
            kind,
            Collective::AllReduce | Collective::ReduceScatter | Collective::AllGather
        )
    }

    fn plan(&self, spec: &CollSpec, rank: usize) -> RankPlan {
        let (p, n) = (spec.world, spec.count);
        if p == 1 {
            return RankPlan::local_copy(n);
        }
        if n == 0 {
            return RankPlan::default();
        }
        let fold = Fold::new(p);
        match spec.kind {
            Collective::AllReduce => all_reduce(&fold, n, rank),
            Collective::ReduceScatter => reduce_scatter(&fold, n, rank),
            Collective::AllGather => all_gather(&fold, n, rank),
            _ => RankPlan::default(),
        }
    }

    fn cost(&self, net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
        price(net, spec, bytes, seg)
    }
}

/// How the real ranks fold onto a power-of-two group of virtual ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fold {
    /// Number of virtual ranks, the largest power of two `<= world`.
    pow2: usize,
    /// Number of folded pairs, `world - pow2`.
    extra: usize,
}

/// A rank's role after folding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Virtual rank `v`, hosting the guest `r + 1` when `host`.
    Virtual { v: usize, host: bool },
    /// Folded into the host `r - 1`.
    Guest,
}

impl Fold {
    fn new(world: usize) -> Fold {
        let pow2 = 1usize << world.ilog2();
        Fold {
            pow2,
            extra: world - pow2,
        }
    }

    fn role(&self, r: usize) -> Role {
        if r >= 2 * self.extra {
            Role::Virtual {
                v: r - self.extra,
                host: false,
            }
        } else if r % 2 == 0 {
            Role::Virtual {
                v: r / 2,
                host: true,
            }
        } else {
            Role::Guest
        }
    }

    /// The real rank acting as virtual rank `v`, which is also the first real chunk that `v`
    /// owns (`real(pow2)` is the world size: one past the last chunk).
    fn real(&self, v: usize) -> usize {
        if v < self.extra {
            2 * v
        } else {
            v + self.extra
        }
    }
}

/// Where the chunks of a range of virtual ranks lie, in elements: (offset, length).
type Span<'a> = &'a dyn Fn(usize, usize) -> (usize, usize);

/// Appends recursive halving for virtual rank `v`. The first step reads `src` (later ones
/// `work`); kept halves are reduced into `work` at the span's offsets, except the last one,
/// which goes to `last` when given.
fn halving(
    steps: &mut Vec<Step>,
    fold: &Fold,
    v: usize,
    span: Span,
    mut src: Buf,
    work: Buf,
    last: Option<Region>,
) {
    let mut d = fold.pow2 / 2;
    while d >= 1 {
        let a = v - v % (2 * d);
        let (keep, give) = if v & d == 0 { (a, a + d) } else { (a + d, a) };
        let peer = fold.real(v ^ d);
        let (go, gl) = span(give, give + d);
        let (ko, kl) = span(keep, keep + d);
        if gl > 0 {
            steps.push(Step::Send {
                peer,
                src: Region::new(src, go, gl),
            });
        }
        if kl > 0 {
            let dst = match last {
                Some(out) if d == 1 => out,
                _ => Region::new(work, ko, kl),
            };
            steps.push(Step::Recv {
                peer,
                dst,
                with: Some(Region::new(src, ko, kl)),
            });
        }
        src = work;
        d /= 2;
    }
}

/// Appends recursive doubling for virtual rank `v` over the output at the span's offsets.
fn doubling(steps: &mut Vec<Step>, fold: &Fold, v: usize, span: Span) {
    let mut d = 1;
    while d < fold.pow2 {
        let w = v ^ d;
        let peer = fold.real(w);
        let (mo, ml) = span(v - v % d, v - v % d + d);
        let (to, tl) = span(w - w % d, w - w % d + d);
        if ml > 0 {
            steps.push(Step::Send {
                peer,
                src: Region::output(mo, ml),
            });
        }
        if tl > 0 {
            steps.push(Step::Recv {
                peer,
                dst: Region::output(to, tl),
                with: None,
            });
        }
        d *= 2;
    }
}

fn all_reduce(fold: &Fold, n: usize, r: usize) -> RankPlan {
    let p = fold.pow2 + fold.extra;
    let off = |c: usize| if c < p { chunk(n, p, c).0 } else { n };
    let span = |a: usize, b: usize| {
        let (s, e) = (off(fold.real(a)), off(fold.real(b)));
        (s, e - s)
    };
    let (input, output) = (Region::input(0, n), Region::output(0, n));
    let mut steps = Vec::new();
    match fold.role(r) {
        Role::Guest => {
            steps.push(Step::Send {
                peer: r - 1,
                src: input,
            });
            steps.push(Step::Recv {
                peer: r - 1,
                dst: output,
                with: None,
            });
        }
        Role::Virtual { v, host } => {
            let src = if host {
                steps.push(Step::Recv {
                    peer: r + 1,
                    dst: output,
                    with: Some(input),
                });
                Buf::Output
            } else {
                Buf::Input
            };
            halving(&mut steps, fold, v, &span, src, Buf::Output, None);
            doubling(&mut steps, fold, v, &span);
            if host {
                steps.push(Step::Send {
                    peer: r + 1,
                    src: output,
                });
            }
        }
    }
    RankPlan { steps, scratch: 0 }
}

fn reduce_scatter(fold: &Fold, m: usize, r: usize) -> RankPlan {
    let p = fold.pow2 + fold.extra;
    let span = |a: usize, b: usize| {
        let (s, e) = (fold.real(a), fold.real(b));
        (s * m, (e - s) * m)
    };
    let (input, output) = (Region::input(0, p * m), Region::output(0, m));
    let mut steps = Vec::new();
    match fold.role(r) {
        Role::Guest => {
            steps.push(Step::Send {
                peer: r - 1,
                src: input,
            });
            steps.push(Step::Recv {
                peer: r - 1,
                dst: output,
                with: None,
            });
            RankPlan { steps, scratch: 0 }
        }
        Role::Virtual { v, host } => {
            let work = Region::scratch(0, p * m);
            if host {
                steps.push(Step::Recv {
                    peer: r + 1,
                    dst: work,
                    with: Some(input),
                });
                halving(&mut steps, fold, v, &span, Buf::Scratch, Buf::Scratch, None);
                steps.push(Step::Copy {
                    src: work.sub(r * m, m),
                    dst: output,
                });
                steps.push(Step::Send {
                    peer: r + 1,
                    src: work.sub((r + 1) * m, m),
                });
            } else {
                halving(
                    &mut steps,
                    fold,
                    v,
                    &span,
                    Buf::Input,
                    Buf::Scratch,
                    Some(output),
                );
            }
            let scratch = if host || fold.pow2 > 2 { p * m } else { 0 };
            RankPlan { steps, scratch }
        }
    }
}

fn all_gather(fold: &Fold, m: usize, r: usize) -> RankPlan {
    let p = fold.pow2 + fold.extra;
    let span = |a: usize, b: usize| {
        let (s, e) = (fold.real(a), fold.real(b));
        (s * m, (e - s) * m)
    };
    let (input, output) = (Region::input(0, m), Region::output(0, p * m));
    let mut steps = Vec::new();
    match fold.role(r) {
        Role::Guest => {
            steps.push(Step::Send {
                peer: r - 1,
                src: input,
            });
            steps.push(Step::Recv {
                peer: r - 1,
                dst: output,
                with: None,
            });
        }
        Role::Virtual { v, host } => {
            steps.push(Step::Copy {
                src: input,
                dst: output.sub(r * m, m),
            });
            if host {
                steps.push(Step::Recv {
                    peer: r + 1,
                    dst: output.sub((r + 1) * m, m),
                    with: None,
                });
            }
            doubling(&mut steps, fold, v, &span);
            if host {
                steps.push(Step::Send {
                    peer: r + 1,
                    src: output,
                });
            }
        }
    }
    RankPlan { steps, scratch: 0 }
}

// ---- Cost ----

/// Real rank of virtual rank `v` after folding `e` excess ranks.
fn folded_real(v: usize, e: usize) -> usize {
    if v < e {
        2 * v
    } else {
        v + e
    }
}

/// Predicted seconds of recursive halving-doubling: the fold of the excess ranks, then
/// `log2 p` rounds of pairwise exchanges with halving (then doubling) pieces; exchanges
/// between hosts reach `halving_doubling_inter_efficiency` of the link.
fn price(net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
    let (kind, p) = (spec.kind, spec.world);
    let pp = 1usize << (usize::BITS - 1 - p.leading_zeros());
    let e = p - pp;
    let total = match kind {
        Collective::AllReduce => bytes,
        Collective::AllGather | Collective::ReduceScatter => bytes * p as f64,
        _ => return None,
    };
    let mut t = 0.0;
    if e > 0 {
        let pairs: Vec<(usize, usize)> = (0..e).map(|i| (2 * i + 1, 2 * i)).collect();
        let fold = match kind {
            Collective::AllGather => bytes,
            _ => total,
        };
        // Fold in, and (all-reduce, all-gather) the result back out.
        let back = if kind == Collective::ReduceScatter {
            0.0
        } else {
            net.round(&pairs, total)
        };
        t += net.round(&pairs, fold) + back;
    }
    let mut d = pp / 2;
    let mut piece = total / 2.0;
    let mut rounds = Vec::new();
    while d >= 1 {
        let pairs: Vec<(usize, usize)> = (0..pp)
            .map(|v| (folded_real(v, e), folded_real(v ^ d, e)))
            .collect();
        let eff = CONSTANTS.halving_doubling_inter_efficiency;
        rounds.push((net.round_at(&pairs, piece, eff), piece));
        d /= 2;
        piece /= 2.0;
    }
    let phases = if kind == Collective::AllReduce {
        2.0
    } else {
        1.0
    };
    for (time, piece) in &rounds {
        t += phases * time + seg_cost(phases, *piece, seg);
        if kind != Collective::AllGather {
            t += net.reduce_time(*piece);
        }
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::tests::check;
    use crate::types::{DataType, ReduceOp};

    #[test]
    fn folding_maps_every_rank_once() {
        for p in 1..=40usize {
            let f = Fold::new(p);
            assert!(f.pow2.is_power_of_two() && f.pow2 <= p && p < 2 * f.pow2);
            let mut seen = vec![false; f.pow2];
            for r in 0..p {
                match f.role(r) {
                    Role::Virtual { v, host } => {
                        assert!(!seen[v], "p={p}: virtual rank {v} twice");
                        seen[v] = true;
                        assert_eq!(f.real(v), r);
                        assert_eq!(host, r + 1 < p && f.role(r + 1) == Role::Guest);
                    }
                    Role::Guest => {
                        assert!(matches!(f.role(r - 1), Role::Virtual { host: true, .. }));
                    }
                }
            }
            assert!(seen.iter().all(|s| *s), "p={p}");
            // Virtual ranks own consecutive runs of chunks covering all of them.
            assert_eq!(f.real(0), 0);
            assert_eq!(f.real(f.pow2), p);
            for v in 0..f.pow2 {
                let owned = f.real(v + 1) - f.real(v);
                assert_eq!(owned, if v < f.extra { 2 } else { 1 });
            }
        }
    }

    #[test]
    fn three_ranks_fold_the_first_pair() {
        let f = Fold::new(3);
        assert_eq!((f.pow2, f.extra), (2, 1));
        assert_eq!(f.role(0), Role::Virtual { v: 0, host: true });
        assert_eq!(f.role(1), Role::Guest);
        assert_eq!(f.role(2), Role::Virtual { v: 1, host: false });
    }

    #[test]
    fn uneven_counts_and_odd_worlds() {
        for world in [3usize, 6, 9, 10, 11, 12, 14, 15, 17, 24] {
            for count in [1usize, 3, 7, 19] {
                for kind in [
                    Collective::AllReduce,
                    Collective::ReduceScatter,
                    Collective::AllGather,
                ] {
                    let spec = CollSpec {
                        kind,
                        world,
                        count,
                        root: 0,
                    };
                    check(&HalvingDoubling, spec, DataType::I32, ReduceOp::Sum);
                    check(&HalvingDoubling, spec, DataType::F32, ReduceOp::Sum);
                }
            }
        }
    }
}
