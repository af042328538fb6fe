//! A plan made ready to execute: segmented, with its dependency graph, its per-peer streams,
//! the copies its sends carry, and the copy policy the planner chose for it.

use std::collections::HashMap;

use ferrocoll_transports::Stores;

use crate::error::{Error, Result};
use crate::schedule::{dependencies, segment, Buf, Layout, RankPlan, Region, Step};

/// How the messages of one plan may be moved, chosen by the planner from the call and the
/// configuration. Whether a link *can* do a thing is the link's to declare
/// ([`ferrocoll_transports::LinkCaps`]); this says whether this plan *should*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CopyPolicy {
    /// Smallest segment, in bytes, sent by single copy on links that can; `usize::MAX` when
    /// no send of this plan goes by single copy.
    pub single_copy_min: usize,
    /// Stores for copies into the output that nothing reads again in this call.
    pub stores: Stores,
}

#[cfg(test)]
impl CopyPolicy {
    /// Everything through the link's byte stream, cached stores.
    pub const STREAM: CopyPolicy = CopyPolicy {
        single_copy_min: usize::MAX,
        stores: Stores::Cached,
    };

    /// Everything through the link's byte stream, streaming stores (a large call).
    pub const STREAM_LARGE: CopyPolicy = CopyPolicy {
        single_copy_min: usize::MAX,
        stores: Stores::Streaming,
    };
}

/// A plan made ready to execute.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(super) steps: Vec<Step>,
    pub(super) ndeps: Vec<u32>,
    pub(super) dependents: Vec<Vec<u32>>,
    pub(super) sends: Vec<Vec<u32>>,
    pub(super) recvs: Vec<Vec<u32>>,
    /// Peers with any traffic in this plan.
    pub(super) active: Vec<usize>,
    /// Local steps with no dependencies: ready when the call starts.
    pub(super) initially_ready: Vec<u32>,
    /// Per step: for a send, the local copy of the same source that it makes while it
    /// writes (see [`fuse_copies`]); that copy is not run on its own.
    pub(super) tee: Vec<Option<u32>>,
    /// How messages move.
    pub(super) policy: CopyPolicy,
    /// Scratch elements needed.
    pub scratch: usize,
}

impl Prepared {
    /// Segments `plan` into pieces of `seg` elements and builds its dependency graph.
    pub fn new(
        plan: &RankPlan,
        seg: usize,
        layout: &Layout,
        world: usize,
        policy: CopyPolicy,
    ) -> Result<Prepared> {
        let steps = segment(&plan.steps, seg);
        let deps = dependencies(&steps, layout);
        let mut dependents = vec![Vec::new(); steps.len()];
        for (i, d) in deps.iter().enumerate() {
            for &j in d {
                dependents[j as usize].push(i as u32);
            }
        }
        let (mut sends, mut recvs) = (vec![Vec::new(); world], vec![Vec::new(); world]);
        for (i, st) in steps.iter().enumerate() {
            match *st {
                Step::Send { peer, .. } => sends.get_mut(peer),
                Step::Recv { peer, .. } => recvs.get_mut(peer),
                _ => continue,
            }
            .ok_or_else(|| Error::Internal(format!("step {st} names a peer outside the world")))?
            .push(i as u32);
            // A reduction whose operand partly overlaps its destination cannot be computed in place.
            if let Step::Recv {
                dst, with: Some(w), ..
            } = *st
            {
                check_alias(layout, dst, w)?;
            }
        }
        for st in &steps {
            if let Step::Reduce { dst, a, b } = *st {
                check_alias(layout, dst, a)?;
                check_alias(layout, dst, b)?;
            }
        }
        let active = (0..world)
            .filter(|&p| !sends[p].is_empty() || !recvs[p].is_empty())
            .collect();
        let tee = fuse_copies(&steps, &deps, &dependents, &sends, layout);
        let teed: Vec<bool> = {
            let mut t = vec![false; steps.len()];
            tee.iter().flatten().for_each(|&c| t[c as usize] = true);
            t
        };
        let initially_ready = (0..steps.len())
            .filter(|&i| deps[i].is_empty() && is_local(&steps[i]) && !teed[i])
            .map(|i| i as u32)
            .collect();
        Ok(Prepared {
            active,
            initially_ready,
            tee,
            ndeps: deps.iter().map(|d| d.len() as u32).collect(),
            steps,
            dependents,
            sends,
            recvs,
            policy,
            scratch: plan.scratch,
        })
    }

    /// The ranks this plan exchanges messages with.
    pub(crate) fn peers(&self) -> &[usize] {
        &self.active
    }

    /// The segmented steps.
    #[cfg(test)]
    pub(crate) fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The steps that write the caller's input buffer. No plan may have any (the input is
    /// read only; an in-place call's plans write the output, which aliases it); the planner
    /// checks every plan it builds in debug builds.
    pub(crate) fn input_writers(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .filter(|st| st.writes().is_some_and(|w| w.buf == Buf::Input))
    }
}

/// Pairs each local copy with a send of the same source, so the send's writes make the copy
/// too and the source is read once (all-gather's own chunk, broadcast's root): per send
/// step, the copy it carries.
///
/// Only a copy that nothing waits for and that waits for nothing is carried, by a send that
/// waits for nothing either: then the copy may run at any time before the call ends, so
/// running it while the send drains (however long the peer takes) cannot deadlock or
/// reorder anything. Source and destination must be distinct memory (not an in-place call's
/// aliased chunk).
fn fuse_copies(
    steps: &[Step],
    deps: &[Vec<u32>],
    dependents: &[Vec<u32>],
    sends: &[Vec<u32>],
    layout: &Layout,
) -> Vec<Option<u32>> {
    let mut tee = vec![None; steps.len()];
    let free = |i: usize| deps[i].is_empty() && dependents[i].is_empty();
    let mut first_send: HashMap<Region, u32> = HashMap::new();
    for list in sends {
        for &i in list {
            if let Step::Send { src, .. } = steps[i as usize] {
                if deps[i as usize].is_empty() {
                    first_send.entry(src).or_insert(i);
                }
            }
        }
    }
    for (c, st) in steps.iter().enumerate() {
        let Step::Copy { src, dst } = *st else {
            continue;
        };
        let (a, b) = (layout.locate(src), layout.locate(dst));
        let disjoint = a.0 != b.0 || a.2 <= b.1 || b.2 <= a.1;
        if !free(c) || !disjoint {
            continue;
        }
        if let Some(i) = first_send.remove(&src) {
            tee[i as usize] = Some(c as u32);
        }
    }
    tee
}

/// Whether a step runs locally (no link).
pub(super) fn is_local(st: &Step) -> bool {
    matches!(
        st,
        Step::Copy { .. } | Step::Reduce { .. } | Step::Scale { .. } | Step::PreMul { .. }
    )
}

fn check_alias(layout: &Layout, x: Region, y: Region) -> Result<()> {
    let (a, b) = (layout.locate(x), layout.locate(y));
    if a != b && a.0 == b.0 && a.1 < b.2 && b.1 < a.2 {
        return Err(Error::Internal(format!("{x} and {y} partly overlap")));
    }
    Ok(())
}
