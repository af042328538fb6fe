//! # Recursive halving-doubling — being written (see issue 2); registered so the registry is complete.

use super::Algorithm;
use crate::schedule::{CollSpec, Collective, RankPlan};

/// The recursive halving-doubling algorithm.
pub struct HalvingDoubling;

impl Algorithm for HalvingDoubling {
    fn name(&self) -> &'static str {
        "halving_doubling"
    }
    fn supports(&self, _kind: Collective) -> bool {
        false
    }
    fn plan(&self, _spec: &CollSpec, _rank: usize) -> RankPlan {
        RankPlan::default()
    }
}
