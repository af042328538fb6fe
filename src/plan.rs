//! The planner: from a checked call to a plan the executor can run.
//!
//! For a collective, the [`Tuner`] chooses the algorithm and the segment size; the
//! algorithm builds this rank's [`RankPlan`]; [`finish`] appends the post-steps the op
//! needs (`Avg`'s scaling); and the plan is segmented into a [`Prepared`] with the
//! [`CopyPolicy`] of the call. Point-to-point calls get their one-step plan here. Prepared
//! plans are cached by shape and [`AlgoId`], so a training loop's repeated calls reuse them.

use std::collections::HashMap;
use std::sync::Arc;

use ferrocoll_transports::Stores;

use crate::algo::AlgoId;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec::{CopyPolicy, Prepared};
use crate::schedule::{finish, layout, output_len, CollSpec, RankPlan, Region, Step, Uneven};
use crate::topology::Topology;
use crate::tune::{Choice, Tuner};
use crate::types::ReduceOp;

/// Most prepared plans kept; the cache starts over beyond it.
const CACHE_LIMIT: usize = 256;

/// The shape of one call, as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CallShape {
    /// The collective.
    pub spec: CollSpec,
    /// Element size in bytes.
    pub esize: usize,
    /// The reduction operator (`Sum` where the collective does not reduce).
    pub op: ReduceOp,
    /// Input and output share memory (NCCL's in-place convention).
    pub in_place: bool,
    /// For send/recv: the peer, and whether this side sends.
    pub p2p: Option<(usize, bool)>,
    /// The layout of an uneven collective (this rank's, for all-to-all-v).
    pub uneven: Option<Arc<Uneven>>,
    /// A premul-sum: the plan multiplies the input by the call's scalar first.
    pub premul: bool,
}

/// What identifies a prepared plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    spec: CollSpec,
    uneven: Option<Arc<Uneven>>,
    premul: bool,
    esize: usize,
    avg: bool,
    in_place: bool,
    p2p: Option<(usize, bool)>,
    algo: Option<AlgoId>,
    seg: usize,
}

/// Chooses, builds and caches plans for one rank of one communicator.
pub(crate) struct Planner {
    rank: usize,
    tuner: Tuner,
    /// Segment size in bytes of point-to-point messages.
    segment_bytes: usize,
    single_copy_min: usize,
    single_copy_reductions: bool,
    streaming_min: usize,
    cache: HashMap<PlanKey, Arc<Prepared>>,
    /// The last call's shape and plan: a training loop repeats its calls, and this skips
    /// the tuner's and the cache's lookups for them.
    last: Option<(CallShape, Arc<Prepared>)>,
    /// The algorithm of the last call's plan (`send/recv` for point-to-point calls).
    last_algo: &'static str,
}

impl Planner {
    /// The planner of `rank` on `topo` with the algorithm overrides, segment size and copy
    /// thresholds of `cfg`.
    pub(crate) fn new(cfg: &Config, topo: Topology, rank: usize) -> Result<Planner> {
        Ok(Planner {
            rank,
            tuner: Tuner::new(cfg, topo)?,
            segment_bytes: cfg.segment_bytes.max(1),
            single_copy_min: cfg.direct_min_bytes.max(1),
            single_copy_reductions: cfg.single_copy_reductions,
            streaming_min: cfg.streaming_min_bytes,
            cache: HashMap::new(),
            last: None,
            last_algo: "",
        })
    }

    /// The tuner's choice for `spec` with elements of `esize` bytes.
    pub(crate) fn choice(&mut self, spec: &CollSpec, esize: usize) -> Result<Choice> {
        self.tuner.choose(spec, esize)
    }

    /// The topology the planner prices.
    pub(crate) fn topology(&self) -> &Topology {
        self.tuner.topology()
    }

    /// The prepared plan of `call` (built, or reused from the cache).
    pub(crate) fn prepare(&mut self, call: &CallShape) -> Result<Arc<Prepared>> {
        if let Some((shape, p)) = &self.last {
            if shape == call {
                return Ok(p.clone());
            }
        }
        let p = self.lookup(call)?;
        self.last = Some((call.clone(), p.clone()));
        Ok(p)
    }

    /// The algorithm of the plan that [`Planner::prepare`] returned last.
    pub(crate) fn last_algorithm(&self) -> &'static str {
        self.last_algo
    }

    /// [`Planner::prepare`] through the tuner and the cache.
    fn lookup(&mut self, call: &CallShape) -> Result<Arc<Prepared>> {
        let es = call.esize;
        let (algo, seg_bytes) = match call.p2p {
            Some(_) => (None, self.segment_bytes),
            None => {
                let c = self.tuner.choose(&call.spec, es)?;
                (Some(c.algo), c.segment_bytes)
            }
        };
        let key = PlanKey {
            spec: call.spec,
            uneven: call.uneven.clone(),
            premul: call.premul,
            esize: es,
            avg: call.op == ReduceOp::Avg,
            in_place: call.in_place,
            p2p: call.p2p,
            algo,
            seg: (seg_bytes / es).max(1),
        };
        let name = algo.map_or("send/recv", AlgoId::name);
        if let Some(p) = self.cache.get(&key) {
            self.last_algo = name;
            return Ok(p.clone());
        }
        let p = Arc::new(self.build(call, &key)?);
        self.last_algo = name;
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(key, p.clone());
        Ok(p)
    }

    fn build(&self, call: &CallShape, key: &PlanKey) -> Result<Prepared> {
        let spec = &call.spec;
        let uneven = call.uneven.as_deref();
        let place = self.tuner.placement();
        let mut plan = match (call.p2p, key.algo, uneven) {
            (Some((peer, sending)), _, _) => p2p_plan(spec.count, peer, sending),
            (None, Some(algo), Some(u)) if spec.kind.is_uneven() => {
                algo.get().plan_uneven(spec, u, self.rank, place)
            }
            (None, Some(_), None) if spec.kind.is_uneven() => {
                return Err(Error::Internal(format!("{} without its layout", spec.kind)))
            }
            (None, Some(algo), _) => algo.get().plan_on(spec, self.rank, place),
            (None, None, _) => {
                return Err(Error::Internal("a collective without an algorithm".into()))
            }
        };
        finish(&mut plan, spec, uneven, self.rank, call.op, call.premul);
        tracing::trace!(
            rank = self.rank,
            "{} via {}:\n{}",
            spec.kind,
            key.algo.map_or("send/recv", AlgoId::name),
            plan.dump()
        );
        let layout = layout(spec, uneven, self.rank, call.in_place);
        let world = spec.world;
        let p = Prepared::new(&plan, key.seg, &layout, world, self.policy(call))?;
        debug_assert!(
            p.input_writers().next().is_none(),
            "a plan writes the caller's input: {:?}",
            p.input_writers().collect::<Vec<_>>()
        );
        Ok(p)
    }

    /// How the messages of `call` may move.
    ///
    /// - A large call (output of at least `streaming_min_bytes`) streams everything through
    ///   the links: copies out of a memory ring with streaming stores move less through
    ///   memory than single copy, where the kernel's cross-memory copy reads every
    ///   destination line before writing it and pins the pages
    ///   (`ferrocoll_transports::copy` documents the measurement and its command).
    /// - Point-to-point sends stay in the stream (eager, up to the link's capacity): a send
    ///   queued before its rank's own receive must not wait on a peer that waits likewise.
    /// - A call whose receivers reduce streams unless `single_copy_reductions` is set:
    ///   reducing straight out of a ring that the sender fills in parallel beats a
    ///   cross-memory read into a landing area followed by the reduction (compare
    ///   `ferrocoll-probe all_reduce -b 64M -e 64M` with `FERROCOLL_SINGLE_COPY_REDUCTIONS`
    ///   0 and 1).
    /// - Otherwise segments of at least `direct_min_bytes` go by single copy where the link
    ///   can.
    fn policy(&self, call: &CallShape) -> CopyPolicy {
        let out = output_len(&call.spec, call.uneven.as_deref(), self.rank);
        let large = out * call.esize >= self.streaming_min;
        let stores = if large {
            Stores::Streaming
        } else {
            Stores::Cached
        };
        let eager = call.p2p.is_some();
        let receivers_reduce = call.spec.kind.reduces();
        let single_copy = !large && !eager && (!receivers_reduce || self.single_copy_reductions);
        CopyPolicy {
            single_copy_min: if single_copy {
                self.single_copy_min
            } else {
                usize::MAX
            },
            stores,
        }
    }
}

/// The one-step plan of a send (`sending`) to, or a receive from, `peer` of `n` elements.
fn p2p_plan(n: usize, peer: usize, sending: bool) -> RankPlan {
    let step = if sending {
        Step::Send {
            peer,
            src: Region::input(0, n),
        }
    } else {
        Step::Recv {
            peer,
            dst: Region::output(0, n),
            with: None,
        }
    };
    RankPlan {
        steps: vec![step],
        scratch: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Collective;

    fn shape(kind: Collective, count: usize, op: ReduceOp) -> CallShape {
        CallShape {
            spec: CollSpec {
                kind,
                world: 4,
                count,
                root: 0,
            },
            esize: 4,
            op,
            in_place: false,
            p2p: None,
            uneven: None,
            premul: false,
        }
    }

    /// Repeated calls get the same prepared plan, from the last-call fast path or the cache;
    /// a call of another shape never gets the previous call's plan.
    #[test]
    fn plans_are_reused_per_shape_and_never_across_shapes() {
        let mut p = Planner::new(&Config::default(), Topology::single_host(4), 1).unwrap();
        let a = shape(Collective::AllReduce, 1000, ReduceOp::Sum);
        let b = shape(Collective::AllReduce, 1000, ReduceOp::Avg);
        let c = shape(Collective::AllGather, 1000, ReduceOp::Sum);
        let pa = p.prepare(&a).unwrap();
        assert!(Arc::ptr_eq(&pa, &p.prepare(&a).unwrap()));
        let pb = p.prepare(&b).unwrap();
        assert!(!Arc::ptr_eq(&pa, &pb), "Avg's plan has its Scale step");
        assert!(pb.steps().iter().any(|s| matches!(s, Step::Scale { .. })));
        assert!(!pa.steps().iter().any(|s| matches!(s, Step::Scale { .. })));
        let pc = p.prepare(&c).unwrap();
        assert!(!Arc::ptr_eq(&pc, &pa) && !Arc::ptr_eq(&pc, &pb));
        assert!(Arc::ptr_eq(&pa, &p.prepare(&a).unwrap()), "from the cache");
        assert!(Arc::ptr_eq(&pb, &p.prepare(&b).unwrap()));
    }

    /// Point-to-point plans stay eager (no single copy), reducing calls stream unless asked,
    /// and large calls stream with streaming stores.
    #[test]
    fn the_copy_policy_follows_the_call() {
        let p = Planner::new(&Config::default(), Topology::single_host(4), 1).unwrap();
        let min = Config::default().direct_min_bytes;
        let gather = shape(Collective::AllGather, 1000, ReduceOp::Sum);
        assert_eq!(p.policy(&gather).single_copy_min, min);
        assert_eq!(p.policy(&gather).stores, Stores::Cached);
        let reduce = shape(Collective::AllReduce, 1000, ReduceOp::Sum);
        assert_eq!(p.policy(&reduce).single_copy_min, usize::MAX);
        let send = CallShape {
            p2p: Some((2, true)),
            spec: CollSpec {
                kind: Collective::SendRecv,
                ..gather.spec
            },
            ..gather.clone()
        };
        assert_eq!(p.policy(&send).single_copy_min, usize::MAX);
        let big = shape(Collective::AllGather, 16 << 20, ReduceOp::Sum);
        assert_eq!(p.policy(&big), CopyPolicy::STREAM_LARGE);
        let cfg = Config {
            single_copy_reductions: true,
            ..Config::default()
        };
        let p = Planner::new(&cfg, Topology::single_host(4), 1).unwrap();
        assert_eq!(p.policy(&reduce).single_copy_min, min);
    }
}
