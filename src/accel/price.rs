//! The composed plan of [`super::composed::DeviceComm`], priced with the cost model: the
//! vendor's part inside each host on the topology's intra-host link (NVLink, HCCS), the
//! staging copies over the host–device link, and the part between hosts as ferrocoll's
//! tuner prices it on the *cross* communicators (one rank per host, one communicator per
//! local index, all running at once and sharing each host's NIC).
//!
//! The vendor's part is priced as a ring on the intra-host link: `L − 1` steps of one
//! block each for a reduce-scatter or an all-gather (NCCL's and HCCL's own rings inside a
//! node). The all-reduce's staging is pipelined by chunk with the transfer between hosts
//! (a three-stage pipeline: copy out, cross, copy back); the other collectives copy whole
//! buffers out and back. `ferrocoll-probe simulate --composed` prints the result next to
//! the alternative of staging every rank's whole buffer through host memory and running
//! one flat ferrocoll collective over all ranks.

use super::composed::CHUNK_BYTES;
use crate::error::VendorError;
use crate::topology::{Host, Topology, DEFAULT_INTRA};
use crate::{AlgoId, CollSpec, Collective, Config, Error, Result, Tuner};

/// The host–device link the staging copies cross.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Staging {
    /// Bytes per second of one rank's copies, each way (PCIe Gen5 x16 reaches about 50 GB/s
    /// in practice).
    pub bandwidth: f64,
    /// Seconds per copy (queueing it, its event), beyond its bytes.
    pub latency: f64,
    /// Bytes per pipeline chunk of the all-reduce (the composed communicator's own).
    pub chunk_bytes: usize,
}

impl Default for Staging {
    /// PCIe Gen5 x16 as measured in practice (50 GB/s each way), 10 µs per copy, the
    /// composed communicator's chunk.
    fn default() -> Staging {
        Staging {
            bandwidth: 50e9,
            latency: 10e-6,
            chunk_bytes: CHUNK_BYTES,
        }
    }
}

/// A composed call's price, by part, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ComposedPrice {
    /// The vendor's part before the hosts exchange (reduce-scatter, all-gather, broadcast).
    pub vendor_before: f64,
    /// Staging copies not hidden behind the transfer between hosts.
    pub staging: f64,
    /// The transfer between hosts.
    pub cross: f64,
    /// The algorithm the tuner picks between hosts.
    pub cross_algo: Option<AlgoId>,
    /// The vendor's part after the exchange (all-gather).
    pub vendor_after: f64,
    /// The whole call.
    pub total: f64,
}

/// Prices composed calls on one cluster: the full topology and its cross communicators'.
pub struct ComposedPricer {
    topo: Topology,
    cross: Tuner,
    local: usize,
    staging: Staging,
}

impl ComposedPricer {
    /// The pricer of `topo` (every host must run the same number of ranks, as the composed
    /// communicator requires), with ferrocoll configured by `cfg` between hosts.
    pub fn new(cfg: &Config, topo: &Topology, staging: Staging) -> Result<ComposedPricer> {
        let local = topo.hosts()[0].ranks.len();
        if topo.hosts().iter().any(|h| h.ranks.len() != local) {
            let per: Vec<usize> = topo.hosts().iter().map(|h| h.ranks.len()).collect();
            return Err(VendorError::Unsupported {
                library: "ferrocoll",
                what: format!("compose hosts with different rank counts ({per:?})"),
            }
            .into());
        }
        let usable = staging.bandwidth.is_finite()
            && staging.bandwidth > 0.0
            && staging.latency.is_finite()
            && staging.latency >= 0.0
            && staging.chunk_bytes > 0;
        if !usable {
            return Err(Error::Config {
                var: "staging".into(),
                value: format!("{staging:?}"),
                reason: "bandwidth must be positive, latency non-negative, chunk non-zero".into(),
            });
        }
        // One rank per host; the `local` cross communicators share each NIC.
        let share = local as f64;
        let hosts = topo
            .hosts()
            .iter()
            .enumerate()
            .map(|(h, host)| Host {
                name: host.name.clone(),
                ranks: vec![h],
                nic: Some(topo.nic_of(h) / share),
                cores: host.cores,
                intra_total: host.intra_total,
            })
            .collect();
        let cross_topo = Topology::new(
            hosts,
            topo.intra,
            topo.inter,
            Some(topo.nic / share),
            topo.host_links(),
        )?;
        Ok(ComposedPricer {
            topo: topo.clone(),
            cross: Tuner::new(cfg, cross_topo)?,
            local,
            staging,
        })
    }

    /// Ranks per host.
    pub fn local_size(&self) -> usize {
        self.local
    }

    /// Seconds of the vendor's ring on the intra-host link: `L − 1` steps of `block` bytes.
    fn vendor_ring(&self, block: f64) -> f64 {
        let l = self.local as f64;
        if self.local == 1 {
            return 0.0;
        }
        (l - 1.0) * (self.topo.intra.alpha + block / self.topo.intra.bandwidth)
    }

    /// Seconds of one staging copy of `bytes`.
    fn copy(&self, bytes: f64) -> f64 {
        if bytes <= 0.0 {
            return 0.0;
        }
        self.staging.latency + bytes / self.staging.bandwidth
    }

    /// The tuner's price of `kind` between hosts on `count` elements per rank.
    fn cross(&self, kind: Collective, count: usize, es: usize) -> Result<(f64, Option<AlgoId>)> {
        let hosts = self.topo.hosts().len();
        if hosts == 1 {
            return Ok((0.0, None));
        }
        let spec = CollSpec {
            kind,
            world: hosts,
            count,
            root: 0,
        };
        let c = self.cross.decide(&spec, es)?;
        Ok((c.predicted_s, Some(c.algo)))
    }

    /// The alternative to composing: every rank's buffers staged whole through host memory
    /// and one flat ferrocoll collective over all ranks, with host shared memory
    /// ([`DEFAULT_INTRA`]) between the ranks of a host instead of the device link.
    pub fn flat(&self, cfg: &Config, kind: Collective, count: usize, es: usize) -> Result<f64> {
        let w = self.topo.world();
        let (ins, outs) = match kind {
            Collective::AllGather => (count, w * count),
            Collective::ReduceScatter => (w * count, count),
            Collective::AllToAll => (w * count, w * count),
            _ => (count, count),
        };
        let tuner = Tuner::new(cfg, self.topo.clone().with_intra(DEFAULT_INTRA))?;
        let spec = CollSpec {
            kind,
            world: w,
            count,
            root: 0,
        };
        let c = tuner.decide(&spec, es)?;
        Ok(self.copy((ins * es) as f64) + c.predicted_s + self.copy((outs * es) as f64))
    }

    /// The price of `kind` with `count` elements of `es` bytes per rank, counted as
    /// [`CollSpec`] counts them (all-reduce and broadcast: the buffer; all-gather: each
    /// rank's part; reduce-scatter: each rank's result). Only the collectives the composed
    /// communicator composes are priced (all-reduce, all-gather, reduce-scatter,
    /// broadcast); the others are staged whole through host memory.
    pub fn price(&self, kind: Collective, count: usize, es: usize) -> Result<ComposedPrice> {
        let l = self.local;
        let hosts = self.topo.hosts().len();
        let bytes = (count * es) as f64;
        let (before, staging, (cross, algo), after) = match kind {
            Collective::AllReduce => {
                let sharded = count % l == 0 && count >= l;
                let (shard, vendor) = if sharded {
                    (count / l, self.vendor_ring(bytes / l as f64))
                } else {
                    // The vendor's all-reduce (a ring: reduce-scatter then all-gather).
                    (count, 2.0 * self.vendor_ring(bytes / l as f64))
                };
                let shard_bytes = (shard * es) as f64;
                let chunk = (self.staging.chunk_bytes / es).max(1) * es;
                let chunks = (shard_bytes / chunk as f64).ceil().max(1.0);
                let per = shard_bytes / chunks;
                let (x, algo) = self.cross(kind, (per / es as f64).ceil() as usize, es)?;
                let d = self.copy(per);
                // Three stages over `chunks`: the first chunk goes through all three, then
                // one chunk leaves per slowest stage.
                let pipeline = 2.0 * d + x + (chunks - 1.0) * d.max(x);
                let cross_all = chunks * x;
                let hidden_staging = (pipeline - cross_all).max(0.0);
                if sharded {
                    (vendor, hidden_staging, (cross_all, algo), vendor)
                } else {
                    (vendor, hidden_staging, (cross_all, algo), 0.0)
                }
            }
            Collective::AllGather => {
                let vendor = self.vendor_ring(bytes);
                let staged = self.copy(l as f64 * bytes) + self.copy((l * hosts) as f64 * bytes);
                (vendor, staged, self.cross(kind, l * count, es)?, 0.0)
            }
            Collective::ReduceScatter => {
                // The rearrangement on device, then the vendor's reduce-scatter of
                // hosts × count per local rank.
                let all = bytes * (l * hosts) as f64;
                let rearrange = all / self.topo.intra.bandwidth;
                let vendor = rearrange + self.vendor_ring(hosts as f64 * bytes);
                let staged = self.copy(hosts as f64 * bytes) + self.copy(bytes);
                (vendor, staged, self.cross(kind, count, es)?, 0.0)
            }
            Collective::Broadcast => {
                let vendor = self.vendor_ring(bytes / l as f64) + bytes / self.topo.intra.bandwidth;
                let sharded = l > 1 && count % l == 0;
                let part = if sharded { count / l } else { count };
                let staged = 2.0 * self.copy((part * es) as f64);
                let after = if sharded {
                    self.vendor_ring(bytes / l as f64)
                } else {
                    0.0
                };
                (vendor, staged, self.cross(kind, part, es)?, after)
            }
            other => {
                return Err(Error::Config {
                    var: "collective".into(),
                    value: other.name().into(),
                    reason: "the composed plan composes all_reduce, all_gather, \
                             reduce_scatter and broadcast; the others are staged whole"
                        .into(),
                })
            }
        };
        Ok(ComposedPrice {
            vendor_before: before,
            staging,
            cross,
            cross_algo: algo,
            vendor_after: after,
            total: before + staging + cross + after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::LinkSpec;

    fn cluster(hosts: usize, local: usize) -> Topology {
        let hs = (0..hosts)
            .map(|h| Host {
                name: format!("h{h}"),
                ranks: (h * local..(h + 1) * local).collect(),
                nic: None,
                cores: None,
                intra_total: None,
            })
            .collect();
        Topology::new(
            hs,
            LinkSpec::from_us_gbit(1.0, 3600.0),
            LinkSpec::from_us_gbit(5.0, 400.0),
            Some(400.0 * local as f64 * 1e9 / 8.0),
            Vec::new(),
        )
        .unwrap()
    }

    fn pricer(hosts: usize, local: usize) -> ComposedPricer {
        ComposedPricer::new(
            &Config::default(),
            &cluster(hosts, local),
            Staging::default(),
        )
        .unwrap()
    }

    #[test]
    fn one_host_is_the_vendor_alone() {
        let p = pricer(1, 8);
        let count = 8 << 20;
        let c = p.price(Collective::AllReduce, count, 4).unwrap();
        assert_eq!(c.cross, 0.0);
        assert_eq!(c.cross_algo, None);
        // Reduce-scatter then all-gather: 7 steps of an eighth each, twice.
        let t = cluster(1, 8);
        let ring = 7.0 * (t.intra.alpha + (count * 4 / 8) as f64 / t.intra.bandwidth);
        assert!((c.vendor_before - ring).abs() < 1e-12, "{c:?}");
        assert!((c.vendor_after - ring).abs() < 1e-12, "{c:?}");
        // Only the pipeline's two copies of the first and last chunk show.
        assert!(c.staging > 0.0 && c.staging < 1e-3, "{c:?}");
        let sum = c.vendor_before + c.staging + c.cross + c.vendor_after;
        assert!((c.total - sum).abs() < 1e-12);
    }

    #[test]
    fn composing_beats_a_flat_staged_job_for_large_all_reduces() {
        let p = pricer(16, 8);
        let cfg = Config::default();
        for count in [1 << 22, 1 << 26] {
            let c = p.price(Collective::AllReduce, count, 4).unwrap();
            let flat = p.flat(&cfg, Collective::AllReduce, count, 4).unwrap();
            assert!(c.total < flat, "{count}: {c:?} vs {flat}");
            assert!(c.cross > 0.0 && c.cross_algo.is_some());
        }
    }

    #[test]
    fn prices_grow_with_size_and_shrink_with_faster_staging() {
        let p = pricer(4, 4);
        for kind in [
            Collective::AllReduce,
            Collective::AllGather,
            Collective::ReduceScatter,
            Collective::Broadcast,
        ] {
            let small = p.price(kind, 1 << 12, 4).unwrap().total;
            let large = p.price(kind, 1 << 22, 4).unwrap().total;
            assert!(small < large, "{kind:?}: {small} vs {large}");
        }
        let slow = ComposedPricer::new(
            &Config::default(),
            &cluster(4, 4),
            Staging {
                bandwidth: 5e9,
                ..Staging::default()
            },
        )
        .unwrap();
        let a = p.price(Collective::AllGather, 1 << 22, 4).unwrap();
        let b = slow.price(Collective::AllGather, 1 << 22, 4).unwrap();
        assert!(b.staging > a.staging && b.total > a.total);
    }

    #[test]
    fn uneven_hosts_bad_staging_and_uncomposed_collectives_are_refused() {
        let mut hs: Vec<Host> = cluster(2, 2).hosts().to_vec();
        hs[1].ranks.push(4);
        let t = Topology::new(
            hs,
            LinkSpec::from_us_gbit(1.0, 100.0),
            LinkSpec::from_us_gbit(5.0, 100.0),
            None,
            Vec::new(),
        )
        .unwrap();
        let e = ComposedPricer::new(&Config::default(), &t, Staging::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("different rank counts"), "{e}");
        for bad in [
            Staging {
                bandwidth: 0.0,
                ..Staging::default()
            },
            Staging {
                latency: f64::NAN,
                ..Staging::default()
            },
            Staging {
                chunk_bytes: 0,
                ..Staging::default()
            },
        ] {
            let e = ComposedPricer::new(&Config::default(), &cluster(2, 2), bad)
                .err()
                .unwrap();
            assert!(matches!(e, Error::Config { .. }), "{e}");
        }
        let e = pricer(2, 2).price(Collective::AllToAll, 16, 4).unwrap_err();
        assert!(e.to_string().contains("staged whole"), "{e}");
    }
}
