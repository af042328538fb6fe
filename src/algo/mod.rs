//! Algorithms: pure functions from a collective's shape to each rank's [`RankPlan`], and
//! the price of that plan.
//!
//! Each algorithm lives in one file that opens with a block comment explaining it, holds its
//! plan ([`Algorithm::plan`]) and its cost function ([`Algorithm::cost`], on the shared
//! α–β model of [`crate::cost`]), and is registered by one line in [`ALGORITHMS`]. An
//! algorithm is known to the rest of the crate by its [`AlgoId`] (its place in the
//! registry); its name is only for people (`FERROCOLL_ALGO`, logs, the probe).
//! Algorithms never do I/O and never see the engine or the transports; the same plan is
//! executed, simulated and priced. Topology-aware algorithms read the [`Placement`] (ring
//! order, hosts) through [`Algorithm::plan_on`].

pub mod direct;
pub mod halving_doubling;
pub mod hierarchical;
pub mod ring;
pub mod tree;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod uneven_tests;

use crate::cost::Net;
use crate::schedule::{CollSpec, Collective, RankPlan, Uneven};
use crate::topology::Placement;

/// A way to run collectives.
pub trait Algorithm: Sync {
    /// The name `FERROCOLL_ALGO` uses.
    fn name(&self) -> &'static str;

    /// Whether this algorithm implements `kind`.
    fn supports(&self, kind: Collective) -> bool;

    /// The plan of `rank` for `spec`. Only called when [`Algorithm::supports`] holds for
    /// `spec.kind`, with `spec.world >= 1`, `rank < spec.world` and `spec.root < spec.world`.
    fn plan(&self, spec: &CollSpec, rank: usize) -> RankPlan;

    /// The plan of `rank` for `spec` on a cluster placed as `place` (same preconditions as
    /// [`Algorithm::plan`], and `place.world() == spec.world`). Algorithms that ignore the
    /// topology keep this default.
    fn plan_on(&self, spec: &CollSpec, rank: usize, place: &Placement) -> RankPlan {
        let _ = place;
        self.plan(spec, rank)
    }

    /// The plan of `rank` for an uneven collective (`spec.kind.is_uneven()`) whose layout on
    /// this rank is `uneven` (all-gather-v's and reduce-scatter-v's are the same on every
    /// rank; all-to-all-v's is this rank's own), on a cluster placed as `place`. Only called
    /// when [`Algorithm::supports`] holds for `spec.kind`, with `uneven.world() ==
    /// spec.world`; an algorithm that supports no uneven collective keeps this default.
    fn plan_uneven(
        &self,
        spec: &CollSpec,
        uneven: &Uneven,
        rank: usize,
        place: &Placement,
    ) -> RankPlan {
        let _ = (spec, uneven, rank, place);
        RankPlan::default()
    }

    /// Predicted seconds of this algorithm's plan for `spec` on `net`, where one rank's
    /// buffer holds `bytes` (`spec.count` elements) and messages are cut into segments of
    /// `seg` bytes; `None` where the algorithm does not implement `spec.kind`. Called by
    /// [`predict`] with `spec.world >= 2` and `net` priced for this call
    /// ([`Net::for_call`]).
    fn cost(&self, net: &Net, spec: &CollSpec, bytes: f64, seg: usize) -> Option<f64>;
}

/// A registered algorithm (ring, tree, halving-doubling, direct, hierarchical), as the
/// crate and its users know it: [`AlgoId::all`] lists them, [`AlgoId::by_name`] finds one
/// by its `FERROCOLL_ALGO` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AlgoId(u8);

impl AlgoId {
    /// The algorithm.
    pub(crate) fn get(self) -> &'static dyn Algorithm {
        ALGORITHMS[self.0 as usize]
    }

    /// Its name (for people: `FERROCOLL_ALGO`, logs, the probe).
    pub fn name(self) -> &'static str {
        self.get().name()
    }

    /// Whether the algorithm implements `kind`.
    pub fn supports(self, kind: Collective) -> bool {
        self.get().supports(kind)
    }

    /// Every registered algorithm, in registry order.
    pub fn all() -> impl Iterator<Item = AlgoId> {
        (0..ALGORITHMS.len()).map(|i| AlgoId(i as u8))
    }

    /// The algorithm called `name`, if any.
    pub fn by_name(name: &str) -> Option<AlgoId> {
        AlgoId::all().find(|a| a.name() == name)
    }
}

/// Predicted seconds of `algo` for `spec` with elements of `esize` bytes and segments of
/// `seg` bytes on `net`; `None` when the algorithm does not implement the collective. A
/// world of one rank costs one message overhead, whatever the algorithm. An uneven
/// collective is priced as its even form with the same total (see [`even_form`]).
pub fn predict(
    algo: &dyn Algorithm,
    net: &Net,
    spec: &CollSpec,
    esize: usize,
    seg: usize,
) -> Option<f64> {
    if !algo.supports(spec.kind) {
        return None;
    }
    if spec.world <= 1 {
        return Some(net.overhead());
    }
    let even = even_form(spec);
    let spec = &even;
    let net = net.for_call(spec, esize);
    algo.cost(&net, spec, (spec.count * esize) as f64, seg)
}

/// The even collective an uneven one is priced as: all-gather and reduce-scatter with the
/// total spread evenly over the ranks, all-to-all with nothing known of the sizes (each rank
/// knows only its own). Other shapes are returned as they are. The uneven collectives'
/// prices choose among the algorithms that implement them; they are not fitted.
pub fn even_form(spec: &CollSpec) -> CollSpec {
    let per_rank = spec.count.div_ceil(spec.world.max(1));
    match spec.kind {
        Collective::AllGatherV => CollSpec {
            kind: Collective::AllGather,
            count: per_rank,
            ..*spec
        },
        Collective::ReduceScatterV => CollSpec {
            kind: Collective::ReduceScatter,
            count: per_rank,
            ..*spec
        },
        Collective::AllToAllV => CollSpec {
            kind: Collective::AllToAll,
            count: per_rank,
            ..*spec
        },
        _ => *spec,
    }
}

/// The registry: one line per algorithm. Order matters twice: it is the [`AlgoId`], and the
/// tuner keeps the earlier of two algorithms priced within its tie margin.
pub static ALGORITHMS: &[&dyn Algorithm] = &[
    &ring::Ring,
    &tree::DoubleBinaryTree,
    &halving_doubling::HalvingDoubling,
    &direct::Direct,
    &hierarchical::Hierarchical,
];

/// The algorithm called `name`, if any.
pub fn by_name(name: &str) -> Option<&'static dyn Algorithm> {
    AlgoId::by_name(name).map(AlgoId::get)
}

/// Every rank's plan on a placed cluster.
#[cfg(test)]
pub fn plan_all_on(algo: &dyn Algorithm, spec: &CollSpec, place: &Placement) -> Vec<RankPlan> {
    (0..spec.world)
        .map(|r| algo.plan_on(spec, r, place))
        .collect()
}

/// `(rank + k) mod world` with `k` possibly negative.
pub(crate) fn rel(rank: usize, k: isize, world: usize) -> usize {
    (rank as isize + k).rem_euclid(world as isize) as usize
}
