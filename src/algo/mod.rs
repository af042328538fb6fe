//! Algorithms: pure functions from a collective's shape to each rank's [`RankPlan`].
//!
//! Each algorithm lives in one file that opens with a block comment explaining it, and is
//! registered by one line in [`ALGORITHMS`], and priced by one function in
//! [`crate::tune`]. Algorithms never do I/O and never see the engine or the transports; the
//! same plan is executed, simulated and priced. Topology-aware algorithms read the
//! [`Placement`] (ring order, hosts) through [`Algorithm::plan_on`].

pub mod direct;
pub mod halving_doubling;
pub mod hierarchical;
pub mod ring;
pub mod tree;

#[cfg(test)]
mod tests;

use crate::schedule::{CollSpec, Collective, RankPlan};
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
}

/// The registry: one line per algorithm.
pub static ALGORITHMS: &[&dyn Algorithm] = &[
    &ring::Ring,
    &tree::DoubleBinaryTree,
    &halving_doubling::HalvingDoubling,
    &direct::Direct,
    &hierarchical::Hierarchical,
];

/// The algorithm called `name`, if any.
pub fn by_name(name: &str) -> Option<&'static dyn Algorithm> {
    ALGORITHMS.iter().copied().find(|a| a.name() == name)
}

/// Every rank's plan (for validation, simulation and tests).
pub fn plan_all(algo: &dyn Algorithm, spec: &CollSpec) -> Vec<RankPlan> {
    (0..spec.world).map(|r| algo.plan(spec, r)).collect()
}

/// Every rank's plan on a placed cluster.
pub fn plan_all_on(algo: &dyn Algorithm, spec: &CollSpec, place: &Placement) -> Vec<RankPlan> {
    (0..spec.world)
        .map(|r| algo.plan_on(spec, r, place))
        .collect()
}

/// `(rank + k) mod world` with `k` possibly negative.
pub(crate) fn rel(rank: usize, k: isize, world: usize) -> usize {
    (rank as isize + k).rem_euclid(world as isize) as usize
}
