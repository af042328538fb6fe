//! # Double binary tree — being written (see issue 2); registered so the registry is complete.

use super::Algorithm;
use crate::schedule::{CollSpec, Collective, RankPlan};

/// The double binary tree algorithm.
pub struct DoubleBinaryTree;

impl Algorithm for DoubleBinaryTree {
    fn name(&self) -> &'static str {
        "tree"
    }
    fn supports(&self, _kind: Collective) -> bool {
        false
    }
    fn plan(&self, _spec: &CollSpec, _rank: usize) -> RankPlan {
        RankPlan::default()
    }
}
