//! Choosing the algorithm and segment size of a call: the [`Tuner`] prices every
//! registered algorithm that implements the collective with its own cost function
//! ([`crate::algo::Algorithm::cost`], on the α–β model of [`crate::cost`]) on the
//! communicator's topology and takes the cheapest, caching the choice per shape and logging
//! it at INFO. `FERROCOLL_ALGO` forces an algorithm (for every
//! collective, or per collective); a forced algorithm that does not implement the collective
//! is an error, never a silent substitute.

use std::collections::HashMap;

use crate::algo::{predict, AlgoId};
use crate::config::Config;
use crate::cost::{Net, CONSTANTS};
use crate::error::{Error, Result};
use crate::schedule::{CollSpec, Collective};
use crate::topology::{Placement, Topology};

/// What the tuner decided for one shape.
#[derive(Clone, Copy, Debug)]
pub struct Choice {
    /// The algorithm.
    pub algo: AlgoId,
    /// Segment size in bytes (at most the configured `segment_bytes`).
    pub segment_bytes: usize,
    /// The cost model's prediction, seconds.
    pub predicted_s: f64,
}

/// (collective, count, root, element size).
type Shape = (Collective, usize, usize, usize);

/// Picks algorithm and segment size per call from the cost model; one per communicator.
pub struct Tuner {
    topo: Topology,
    place: Placement,
    forced: Vec<(Collective, AlgoId)>,
    forced_all: Option<AlgoId>,
    max_segment: usize,
    cache: HashMap<Shape, Choice>,
}

impl Tuner {
    /// A tuner for `topo` with the overrides and ring order of `cfg`. Algorithm names were
    /// checked when `cfg` was built; an unregistered one is an internal error.
    pub fn new(cfg: &Config, topo: Topology) -> Result<Tuner> {
        let get = |n: &str| {
            AlgoId::by_name(n).ok_or_else(|| Error::Internal(format!("unregistered algorithm {n}")))
        };
        let forced_all = match &cfg.algo {
            crate::config::AlgoChoice::Forced(n) => Some(get(n)?),
            crate::config::AlgoChoice::Auto => None,
        };
        let forced = cfg
            .algo_per_collective
            .iter()
            .map(|(k, n)| Ok((*k, get(n)?)))
            .collect::<Result<Vec<_>>>()?;
        let place = Placement::new(&topo, cfg.ring_order);
        Ok(Tuner {
            topo,
            place,
            forced,
            forced_all,
            max_segment: cfg.segment_bytes.max(1),
            cache: HashMap::new(),
        })
    }

    /// The topology priced.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The placement the algorithms plan with.
    pub fn placement(&self) -> &Placement {
        &self.place
    }

    /// The segment sizes considered: powers of two from the model's minimum up to the
    /// configured maximum, and the maximum itself.
    fn segments(&self) -> Vec<usize> {
        let mut v = Vec::new();
        let mut s = CONSTANTS.min_segment_bytes;
        while s < self.max_segment {
            v.push(s);
            s *= 2;
        }
        v.push(self.max_segment);
        v
    }

    /// The predicted time of `algo` for `spec` with the best segment size, or `None` when
    /// the algorithm does not implement the collective or has no cost function.
    pub fn price(&self, algo: AlgoId, spec: &CollSpec, esize: usize) -> Option<(f64, usize)> {
        let algo = algo.get();
        if !algo.supports(spec.kind) {
            return None;
        }
        let net = Net::new(&self.topo, &self.place);
        self.segments()
            .into_iter()
            .filter_map(|s| predict(algo, &net, spec, esize, s).map(|c| (c, s)))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
    }

    /// Every registered algorithm's price for `spec` (`None` where it does not apply), in
    /// registry order.
    pub fn price_all(
        &self,
        spec: &CollSpec,
        esize: usize,
    ) -> Vec<(&'static str, Option<(f64, usize)>)> {
        AlgoId::all()
            .map(|a| (a.name(), self.price(a, spec, esize)))
            .collect()
    }

    /// The choice for `spec` with elements of `esize` bytes (cached per shape).
    pub fn choose(&mut self, spec: &CollSpec, esize: usize) -> Result<Choice> {
        let key = (spec.kind, spec.count, spec.root, esize);
        if let Some(c) = self.cache.get(&key) {
            return Ok(*c);
        }
        let c = self.decide(spec, esize)?;
        tracing::info!(
            collective = spec.kind.name(),
            world = spec.world,
            bytes = spec.count * esize,
            algorithm = c.algo.name(),
            segment_bytes = c.segment_bytes,
            predicted_us = c.predicted_s * 1e6,
            "tuner choice"
        );
        if self.cache.len() >= 1024 {
            self.cache.clear();
        }
        self.cache.insert(key, c);
        Ok(c)
    }

    /// The choice without the cache or the log.
    pub fn decide(&self, spec: &CollSpec, esize: usize) -> Result<Choice> {
        if spec.kind == Collective::SendRecv {
            // Point-to-point has no algorithm; the engine builds its one-step plan itself.
            return Err(Error::Internal("send/recv has no algorithm".into()));
        }
        let forced = self
            .forced
            .iter()
            .find(|(k, _)| *k == spec.kind)
            .map(|(_, a)| *a)
            .or(self.forced_all);
        if let Some(algo) = forced {
            if !algo.get().supports(spec.kind) {
                return Err(Error::AlgoNotSupported {
                    algo: algo.name(),
                    collective: spec.kind,
                });
            }
            let (predicted_s, segment_bytes) = self
                .price(algo, spec, esize)
                .unwrap_or((f64::NAN, self.max_segment));
            return Ok(Choice {
                algo,
                segment_bytes,
                predicted_s,
            });
        }
        let mut best: Option<Choice> = None;
        for algo in AlgoId::all() {
            if let Some((c, s)) = self.price(algo, spec, esize) {
                // Ties go to the earlier one: prices equal to rounding (one algorithm can be
                // another's special case, as the hierarchical one is the ring's on a single
                // host) and prices within the model's resolution (`tie_margin`).
                if best.is_none_or(|b| c < b.predicted_s * (1.0 - CONSTANTS.tie_margin)) {
                    best = Some(Choice {
                        algo,
                        segment_bytes: s,
                        predicted_s: c,
                    });
                }
            }
        }
        best.ok_or_else(|| Error::Internal(format!("no algorithm for {}", spec.kind)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The algorithm for `spec` whose payload is `bytes` bytes per rank, priced on one host of
    /// `spec.world` ranks (callers without a communicator; a communicator's own choice, made on
    /// its topology, is [`crate::Communicator::algorithm_for`]).
    fn choose(cfg: &Config, spec: &CollSpec, bytes: usize) -> Result<AlgoId> {
        let esize = if spec.count > 0 {
            (bytes / spec.input_len().max(1)).max(1)
        } else {
            1
        };
        let tuner = Tuner::new(cfg, Topology::single_host(spec.world.max(1)))?;
        Ok(tuner.decide(spec, esize)?.algo)
    }
    use crate::topology::LinkSpec;

    #[test]
    fn forced_algorithm_that_does_not_apply_is_an_error() {
        let cfg = Config::default().with_algo("ring").unwrap();
        let spec = CollSpec {
            kind: Collective::AllToAll,
            world: 4,
            count: 8,
            root: 0,
        };
        let e = choose(&cfg, &spec, 32).err().unwrap();
        assert_eq!(
            e.to_string(),
            "algorithm ring is not supported for all_to_all"
        );
    }

    #[test]
    fn auto_picks_something_that_supports_the_call() {
        let cfg = Config::default();
        for kind in Collective::ALL
            .into_iter()
            .filter(|k| *k != Collective::SendRecv)
        {
            for bytes in [8usize, 1 << 20, 64 << 20] {
                let spec = CollSpec {
                    kind,
                    world: 4,
                    count: bytes / 4,
                    root: 0,
                };
                assert!(choose(&cfg, &spec, bytes).unwrap().get().supports(kind));
            }
        }
    }

    #[test]
    fn tuner_prefers_hierarchical_across_slow_hosts_and_caches() {
        let slow = |cyclic| {
            Topology::uniform(2, 2, cyclic).with_inter(LinkSpec::from_us_gbit(50.0, 1.0), 1e9 / 8.0)
        };
        // Hosts of consecutive ranks: halving-doubling's first exchange crosses the hosts
        // with half the buffer, hierarchical sends a quarter per rail.
        let topo = slow(false);
        let mut t = Tuner::new(&Config::default(), topo.clone()).unwrap();
        let big = CollSpec {
            kind: Collective::AllReduce,
            world: 4,
            count: 16 << 20,
            root: 0,
        };
        let c = t.choose(&big, 4).unwrap();
        assert_eq!(c.algo.name(), "hierarchical");
        assert!(c.segment_bytes <= 512 << 10);
        let small = CollSpec { count: 2, ..big };
        let s = t.choose(&small, 4).unwrap();
        assert_ne!(s.algo.name(), "hierarchical", "8 bytes: latency decides");
        assert_eq!(t.cache.len(), 2);
        // Cyclic placement: halving-doubling's far exchange stays on the host, so it prices
        // like hierarchical; both beat the rings.
        let t = Tuner::new(&Config::default(), slow(true)).unwrap();
        let c = t.decide(&big, 4).unwrap();
        assert!(
            matches!(c.algo.name(), "hierarchical" | "halving_doubling"),
            "{c:?}"
        );
        let ring = t
            .price(AlgoId::by_name("ring").unwrap(), &big, 4)
            .unwrap()
            .0;
        assert!(c.predicted_s * 1.4 < ring, "{c:?} vs ring {ring}");
        // Per-collective override wins for its collective only.
        let cfg = Config::default()
            .with_algo("all_reduce:ring;all_gather:direct")
            .unwrap();
        let t = Tuner::new(&cfg, topo).unwrap();
        assert_eq!(t.decide(&big, 4).unwrap().algo.name(), "ring");
        let ag = CollSpec {
            kind: Collective::AllGather,
            ..big
        };
        assert_eq!(t.decide(&ag, 4).unwrap().algo.name(), "direct");
        let rs = CollSpec {
            kind: Collective::ReduceScatter,
            count: 4 << 20,
            ..big
        };
        assert_eq!(t.decide(&rs, 4).unwrap().algo.name(), "hierarchical");
    }

    /// Prices within `tie_margin` of each other are a tie, which the earlier algorithm in
    /// the registry wins; a later one must be cheaper by more than the margin.
    #[test]
    fn near_ties_go_to_the_earlier_algorithm() {
        // 1 host × 4 ranks on 2 cores (the VM of benches/topo_proof.sh): at 64 MiB the ring
        // and halving-doubling move the same bytes and are priced within the margin.
        let mut topo =
            Topology::uniform(1, 4, false).with_intra(LinkSpec::from_us_gbit(10.6, 143.7));
        topo.set_cores(0, Some(2));
        let t = Tuner::new(&Config::default(), topo).unwrap();
        let spec = |bytes: usize| CollSpec {
            kind: Collective::AllReduce,
            world: 4,
            count: bytes / 4,
            root: 0,
        };
        let price = |name: &str, bytes: usize| {
            t.price(AlgoId::by_name(name).unwrap(), &spec(bytes), 4)
                .unwrap()
                .0
        };
        let big = 64 << 20;
        let (ring, hd) = (price("ring", big), price("halving_doubling", big));
        assert!(
            hd < ring && hd > ring * (1.0 - CONSTANTS.tie_margin),
            "{ring} {hd}"
        );
        let c = t.decide(&spec(big), 4).unwrap();
        assert_eq!(c.algo.name(), "ring");
        assert_eq!(c.predicted_s, ring);
        // At 512 KiB halving-doubling is cheaper by more than the margin and wins.
        let mid = 512 << 10;
        let (ring, hd) = (price("ring", mid), price("halving_doubling", mid));
        assert!(hd < ring * (1.0 - CONSTANTS.tie_margin), "{ring} {hd}");
        assert_eq!(
            t.decide(&spec(mid), 4).unwrap().algo.name(),
            "halving_doubling"
        );
    }
}
