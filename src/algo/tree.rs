//! # Double binary tree
//!
//! NCCL's double binary tree. A single binary tree has logarithmic latency but uses only
//! half of the links' bandwidth: its leaves (half of the ranks) only ever send up and receive
//! down once. Two **complementary** trees fix that: a rank that is a leaf in one tree is
//! interior in the other, so with half of the buffer on each tree every rank sends and
//! receives about the whole buffer once per phase, and every link stays busy.
//!
//! Vocabulary:
//! - **vrank**: a rank relabelled relative to the root, `v = (r - root) mod p` (the root is
//!   `spec.root` for broadcast and reduce, rank 0 for all-reduce). Both trees are built over
//!   vranks, so both are rooted at the root.
//! - **Shape**: vrank 0 sits on top with exactly one child per tree; below it, vranks
//!   `1..p` form an in-order balanced binary tree (NCCL's `ncclGetBtree`, which works on the
//!   bits of the label: a label's lowest set bit is its height, so odd labels are leaves).
//!   Tree 0 uses the vranks themselves as labels. Tree 1 relabels them so that odd and even
//!   labels swap: mirrored (`x -> p - x`) when `p - 1` is even, shifted down by one
//!   (`x -> x - 1`, `1 -> p - 1`) when it is odd. Interior nodes carry even labels, so every
//!   rank other than the root is interior in at most one tree.
//! - **Half**: the buffer is cut into two halves ([`chunk`]`(n, 2, t)`); half `t` travels
//!   over tree `t` only. Empty halves are skipped.
//! - **Up** (reduce): a node receives its children's partial sums in vrank order and folds
//!   them as `acc = own ⊕ child₀ ⊕ child₁` into a scratch accumulator (the root into its
//!   output), then sends `acc` to its parent. Leaves send their input.
//! - **Down** (broadcast): a node receives the half from its parent into its output and
//!   forwards it to its children.
//!
//! Collectives: **all-reduce** = up on both trees, then down on both trees (each half is
//! reduced at the root only, everybody else copies it, so replicas are bit-identical);
//! **reduce** = up only (non-root outputs are unspecified); **broadcast** = down only, the
//! root sending from its input. The executor cuts messages into segments, so a segment moves
//! on as soon as it has arrived: the trees pipeline, and latency grows with `2 log₂ p`.
//!
//! Stream order: every rank emits all up steps (tree 0, then tree 1) before all down steps,
//! so on every directed stream the messages appear in the same global order at both ends, and
//! no reduce message ever waits behind a broadcast message.

use super::{rel, Algorithm};
use crate::cost::{seg_cost, Net};
use crate::schedule::{chunk, CollSpec, Collective, RankPlan, Region, Step};

/// The double binary tree algorithm.
pub struct DoubleBinaryTree;

impl Algorithm for DoubleBinaryTree {
    fn name(&self) -> &'static str {
        "tree"
    }

    fn supports(&self, kind: Collective) -> bool {
        matches!(
            kind,
            Collective::AllReduce | Collective::Broadcast | Collective::Reduce
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
        let root = match spec.kind {
            Collective::Broadcast | Collective::Reduce => spec.root,
            _ => 0,
        };
        let v = rel(rank, -(root as isize), p);
        let real = |u: usize| rel(u, root as isize, p);
        let halves: Vec<(Node, usize, usize)> = (0..2)
            .map(|t| {
                let node = node(p, v, t);
                let real_node = Node {
                    parent: node.parent.map(real),
                    children: node.children.map(|c| c.map(real)),
                };
                let (off, len) = chunk(n, 2, t);
                (real_node, off, len)
            })
            .filter(|h| h.2 > 0)
            .collect();
        let mut plan = RankPlan::default();
        match spec.kind {
            Collective::AllReduce => {
                for (node, off, len) in &halves {
                    up(&mut plan, node, *off, *len);
                }
                for (node, off, len) in &halves {
                    down(&mut plan, node, *off, *len, false);
                }
            }
            Collective::Reduce => {
                for (node, off, len) in &halves {
                    up(&mut plan, node, *off, *len);
                }
            }
            Collective::Broadcast => {
                if v == 0 {
                    plan.steps.push(Step::Copy {
                        src: Region::input(0, n),
                        dst: Region::output(0, n),
                    });
                }
                for (node, off, len) in &halves {
                    down(&mut plan, node, *off, *len, true);
                }
            }
            _ => {}
        }
        plan
    }

    fn cost(&self, net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
        price(net, spec, bytes, seg)
    }
}

/// One rank's place in one tree: its parent (none for the root) and its children, in
/// increasing order, at most two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    parent: Option<usize>,
    children: [Option<usize>; 2],
}

impl Node {
    fn kids(&self) -> impl Iterator<Item = usize> {
        self.children.into_iter().flatten()
    }
}

/// NCCL's binary tree over labels `0..n`: label 0 on top with one child (the largest power of
/// two below `n`); below it an in-order tree where a label's lowest set bit is its height.
/// Returns (parent, children) of label `y`, children in increasing order.
fn btree(n: usize, y: usize) -> (Option<usize>, [Option<usize>; 2]) {
    if y == 0 {
        let child = (n > 1).then(|| n.next_power_of_two() / 2);
        return (None, [child, None]);
    }
    let bit = 1usize << y.trailing_zeros();
    let up = (y ^ bit) | (bit << 1);
    let parent = if up >= n { y ^ bit } else { up };
    let low = bit >> 1;
    if low == 0 {
        return (Some(parent), [None, None]);
    }
    // The right child is y + l for the largest l <= low still inside the tree.
    let mut l = low;
    while l > 0 && y + l >= n {
        l >>= 1;
    }
    let right = (l > 0).then_some(y + l);
    (Some(parent), [Some(y - low), right])
}

/// Label of vrank `x` in tree `t` of a world of `p` (see the module docs), and its inverse.
fn label(p: usize, t: usize, x: usize, inverse: bool) -> usize {
    let m = p - 1;
    if t == 0 || x == 0 {
        x
    } else if m % 2 == 0 {
        p - x
    } else if inverse {
        if x < m {
            x + 1
        } else {
            1
        }
    } else if x > 1 {
        x - 1
    } else {
        m
    }
}

/// The place of vrank `v` in tree `t` (0 or 1) of a world of `p`, in vranks.
fn node(p: usize, v: usize, t: usize) -> Node {
    let (parent, kids) = btree(p, label(p, t, v, false));
    let back = |y: usize| label(p, t, y, true);
    let mut children = kids.map(|k| k.map(back));
    if let [Some(a), Some(b)] = children {
        if b < a {
            children = [Some(b), Some(a)];
        }
    }
    Node {
        parent: parent.map(back),
        children,
    }
}

/// Appends the reduction of half `[off, off + len)` up one tree.
fn up(plan: &mut RankPlan, node: &Node, off: usize, len: usize) {
    let input = Region::input(off, len);
    let Some(parent) = node.parent else {
        // The root folds its children straight into the output.
        let out = Region::output(off, len);
        let mut with = input;
        for c in node.kids() {
            plan.steps.push(Step::Recv {
                peer: c,
                dst: out,
                with: Some(with),
            });
            with = out;
        }
        if with == input {
            plan.steps.push(Step::Copy {
                src: input,
                dst: out,
            });
        }
        return;
    };
    let acc = Region::scratch(off, len);
    let mut with = input;
    for c in node.kids() {
        plan.steps.push(Step::Recv {
            peer: c,
            dst: acc,
            with: Some(with),
        });
        with = acc;
        plan.scratch = plan.scratch.max(acc.end());
    }
    plan.steps.push(Step::Send {
        peer: parent,
        src: with,
    });
}

/// Appends the broadcast of half `[off, off + len)` down one tree. The root sends from its
/// input when `from_input` (broadcast), from its output otherwise (all-reduce).
fn down(plan: &mut RankPlan, node: &Node, off: usize, len: usize, from_input: bool) {
    let out = Region::output(off, len);
    let src = match node.parent {
        None if from_input => Region::input(off, len),
        None => out,
        Some(parent) => {
            plan.steps.push(Step::Recv {
                peer: parent,
                dst: out,
                with: None,
            });
            out
        }
    };
    for c in node.kids() {
        plan.steps.push(Step::Send { peer: c, src });
    }
}

// ---- Cost ----

/// Predicted seconds of the double binary tree: an approximation (depth `⌈log2 p⌉`, the
/// share of tree edges that cross hosts taken as a random pair's), see the module docs.
fn price(net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64> {
    let (kind, p) = (spec.kind, spec.world);
    // Double binary tree over rank numbers: depth ⌈log₂ p⌉, each rank sends about the whole
    // buffer per phase (half per tree); the share of tree edges that cross hosts is taken as
    // that of a random pair of ranks.
    let t = net.topo;
    let depth = (p as f64).log2().ceil().max(1.0);
    let s = (seg as f64).min(bytes).max(1.0);
    let mut worst = 0.0f64;
    for (h, host) in t.hosts().iter().enumerate() {
        let k = host.ranks.len() as f64;
        let cross = (p as f64 - k) / (p as f64 - 1.0).max(1.0);
        let nic_load = k * bytes * cross / t.nic_of(h);
        let link = if t.hosts().len() > 1 {
            t.inter
        } else {
            t.intra
        };
        // Every rank of the host forwards at once: k flows on its cores.
        let per_rank = bytes * cross / link.bandwidth + bytes * (1.0 - cross) / net.intra_bw(h, k);
        worst = worst.max(nic_load.max(per_rank));
    }
    let alpha = if t.hosts().len() > 1 {
        t.inter.alpha + net.overhead()
    } else {
        net.intra_alpha(0)
    };
    let bw = if t.hosts().len() > 1 {
        t.inter.bandwidth
    } else {
        t.intra.bandwidth
    };
    let phase = depth * (alpha + s / bw) + worst + seg_cost(2.0, bytes / 2.0, seg);
    Some(match kind {
        Collective::AllReduce => 2.0 * phase + 2.0 * net.reduce_time(bytes),
        Collective::Broadcast => phase,
        Collective::Reduce => phase + 2.0 * net.reduce_time(bytes),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::tests::check;
    use crate::types::{DataType, ReduceOp};

    /// Every node of both trees reaches vrank 0 within `⌈log₂ p⌉ + 1` hops, parents and
    /// children agree, the root has one child, and no rank but the root is interior in both.
    #[test]
    fn trees_are_complementary_binary_trees() {
        for p in 1..=70usize {
            let trees: Vec<Vec<Node>> = (0..2)
                .map(|t| (0..p).map(|v| node(p, v, t)).collect())
                .collect();
            let max_depth = p.next_power_of_two().trailing_zeros() as usize + 1;
            for (t, tree) in trees.iter().enumerate() {
                assert_eq!(tree[0].parent, None);
                assert_eq!(tree[0].kids().count(), usize::from(p > 1), "p={p} tree {t}");
                for (v, nd) in tree.iter().enumerate().skip(1) {
                    let parent = nd.parent.expect("non-root has a parent");
                    assert!(
                        tree[parent].kids().any(|c| c == v),
                        "p={p} tree {t}: {v} not a child of its parent {parent}"
                    );
                    for c in nd.kids() {
                        assert_eq!(tree[c].parent, Some(v), "p={p} tree {t} child {c}");
                    }
                    let (mut x, mut hops) = (v, 0);
                    while x != 0 {
                        x = tree[x].parent.expect("parent");
                        hops += 1;
                        assert!(hops <= max_depth, "p={p} tree {t}: {v} too deep");
                    }
                }
            }
            for v in 1..p {
                let interior = trees.iter().filter(|tr| tr[v].kids().next().is_some());
                assert!(
                    interior.count() <= 1,
                    "p={p}: vrank {v} interior in both trees"
                );
            }
        }
    }

    #[test]
    fn small_worlds_have_the_expected_shape() {
        // p = 2: both trees are 0 -> 1.
        assert_eq!(node(2, 0, 0).children, [Some(1), None]);
        assert_eq!(node(2, 0, 1).children, [Some(1), None]);
        // p = 3: tree 0 is 0 -> 2 -> 1, tree 1 (mirrored) is 0 -> 1 -> 2.
        assert_eq!(node(3, 0, 0).children, [Some(2), None]);
        assert_eq!(node(3, 2, 0).children, [Some(1), None]);
        assert_eq!(node(3, 0, 1).children, [Some(1), None]);
        assert_eq!(node(3, 1, 1).children, [Some(2), None]);
        // p = 8: tree 0 is 0 -> 4, 4 -> {2, 6}, 2 -> {1, 3}, 6 -> {5, 7}.
        assert_eq!(node(8, 0, 0).children, [Some(4), None]);
        assert_eq!(node(8, 4, 0).children, [Some(2), Some(6)]);
        assert_eq!(node(8, 6, 0).children, [Some(5), Some(7)]);
    }

    #[test]
    fn roots_everywhere_and_odd_shapes() {
        for world in [2usize, 3, 6, 9, 11, 12, 15, 17, 24] {
            for count in [1usize, 3, 33] {
                for root in [0, 1, world - 1] {
                    for kind in [Collective::Broadcast, Collective::Reduce] {
                        let spec = CollSpec {
                            kind,
                            world,
                            count,
                            root,
                        };
                        check(&DoubleBinaryTree, spec, DataType::I32, ReduceOp::Sum);
                    }
                }
                let spec = CollSpec {
                    kind: Collective::AllReduce,
                    world,
                    count,
                    root: 0,
                };
                check(&DoubleBinaryTree, spec, DataType::F32, ReduceOp::Sum);
            }
        }
    }
}
