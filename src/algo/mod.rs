//! Algorithms: pure functions from a collective's shape to each rank's [`RankPlan`].
//!
//! Each algorithm lives in one file that opens with a block comment explaining it, and is
//! registered by one line in [`ALGORITHMS`]. Algorithms never do I/O and never see the
//! engine or the transports; the same plan is executed, simulated and (issue 7) priced.

pub mod direct;
pub mod halving_doubling;
pub mod ring;
pub mod tree;

#[cfg(test)]
mod tests;

use crate::schedule::{CollSpec, Collective, RankPlan};

/// A way to run collectives.
pub trait Algorithm: Sync {
    /// The name `FERROCOLL_ALGO` uses.
    fn name(&self) -> &'static str;

    /// Whether this algorithm implements `kind`.
    fn supports(&self, kind: Collective) -> bool;

    /// The plan of `rank` for `spec`. Only called when [`Algorithm::supports`] holds for
    /// `spec.kind`, with `spec.world >= 1`, `rank < spec.world` and `spec.root < spec.world`.
    fn plan(&self, spec: &CollSpec, rank: usize) -> RankPlan;
}

/// The registry: one line per algorithm.
pub static ALGORITHMS: &[&dyn Algorithm] = &[
    &ring::Ring,
    &tree::DoubleBinaryTree,
    &halving_doubling::HalvingDoubling,
    &direct::Direct,
];

/// The algorithm called `name`, if any.
pub fn by_name(name: &str) -> Option<&'static dyn Algorithm> {
    ALGORITHMS.iter().copied().find(|a| a.name() == name)
}

/// Every rank's plan (for validation, simulation and tests).
pub fn plan_all(algo: &dyn Algorithm, spec: &CollSpec) -> Vec<RankPlan> {
    (0..spec.world).map(|r| algo.plan(spec, r)).collect()
}

/// `(rank + k) mod world` with `k` possibly negative.
pub(crate) fn rel(rank: usize, k: isize, world: usize) -> usize {
    (rank as isize + k).rem_euclid(world as isize) as usize
}
