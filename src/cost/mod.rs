//! # Cost model
//!
//! An α–β model: a message of `b` bytes over a link costs `α + b / bandwidth`, where the
//! bandwidth of a flow between hosts is the least of its link's bandwidth and its share of
//! the sending and receiving hosts' NICs (every flow that leaves a host at the same time
//! shares that host's NIC). Each algorithm prices itself in its own file
//! ([`crate::algo::Algorithm::cost`]) by following the communication pattern its schedule
//! has on the [`Placement`], with the helpers here: [`Net::flows`] (concurrent flows with
//! their NIC and core shares), [`Net::round`], the per-message and per-segment software
//! overheads ([`seg_cost`]) and the local reduction time ([`Net::reduce_time`]).
//!
//! **CPU.** Shared memory moves bytes with the ranks' own cores — the sender copies into
//! the ring, the receiver copies or reduces out of it — so where a host's core count is known
//! (discovered at init, or `cores` in the topology file), the flows inside a host share its
//! cores like the flows leaving it share its NIC: a pair measured alone reaches the
//! intra-host bandwidth with two cores busy, so a host copies at about `bandwidth × cores`
//! in all, and `f` concurrent intra-host flows get `bandwidth × cores / (2f)` each (at most
//! the link's). Nor do they move more in all than the host's ranks did when every one sent
//! at once (`intra_total`, from `ferrocoll-probe links`' ring exchange, where known): a pair
//! measured alone, the other ranks idle, lands on the cores and the cache differently from
//! run to run, while the loaded figure tracks what a collective sees. A host with more ranks
//! than cores reduces `ranks / cores` times slower. Messages inside an oversubscribed host
//! also wait for their receiver to be scheduled (at least `oversub_handoff_us` per rank
//! beyond the cores), and while the local ranks' buffers of the call fit in the last-level
//! cache (`cache_bytes`), copies and reductions run `cache_speedup` times faster, less
//! beyond it (with the square of the share that fits). With the core count unknown
//! (in-process worlds, files without it) none of these terms applies.
//!
//! **Efficiency.** Halving-doubling's exchanges between hosts are priced at
//! `halving_doubling_inter_efficiency` of the link: an empirical factor, like NCCL's
//! per-algorithm bandwidth factors.
//!
//! The CPU constants were fitted on a 2-core VM with 4 ranks; `bash benches/topo_proof.sh`
//! measures every algorithm against this model on the machine at hand and reports the
//! model's error and the tuner's regret (see `PERFORMANCE.md`). Not modelled: the copies TCP
//! costs the CPU, and shaping bursts (small messages passing a token bucket faster than its
//! rate). Every constant is in [`CONSTANTS`]; the link figures come from the [`Topology`].
//!
//! The tuner ([`crate::tune::Tuner`]) and `ferrocoll-probe simulate` both price with these
//! functions; they are linear in the number of ranks (one pass over the ring or the
//! partners per step), so thousands of ranks price in milliseconds.

use crate::schedule::{CollSpec, Collective};
use crate::topology::{Placement, Topology};

/// The constants of the cost model, in one table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constants {
    /// Software cost of one message (posting, header, completion), µs.
    pub message_overhead_us: f64,
    /// Software cost of one segment of a message, µs.
    pub segment_overhead_us: f64,
    /// Throughput of the local reduction `dst = a ⊕ b`, bytes of `b` per second.
    pub reduce_bytes_s: f64,
    /// Share of a separate reduction pass that a reduction fused into a shared-memory
    /// receive still costs: the executor reduces straight out of the peer's segment (two
    /// reads and a write in one pass), and the link's bandwidth already prices that pass's
    /// read and write as a copy, which leaves the extra operand's read, one stream of three.
    pub fused_reduce_share: f64,
    /// Smallest segment the tuner considers, bytes.
    pub min_segment_bytes: usize,
    /// Least latency of a message inside a host per rank beyond its cores (the receiver
    /// must be scheduled first), µs; scaled by `ranks / cores - 1`. A floor, not an
    /// addition: a latency measured on that host (`links --save`) already contains it.
    pub oversub_handoff_us: f64,
    /// Bytes of a host's ranks' buffers (input and output of a call, summed over its ranks)
    /// that stay in its last-level cache.
    pub cache_bytes: f64,
    /// How much faster a host's cores copy when the bytes stay in the cache.
    pub cache_speedup: f64,
    /// Fraction of an inter-host link's bandwidth that halving-doubling's exchanges reach,
    /// relative to the ring's steady flow over the same link. Like NCCL's per-algorithm
    /// bandwidth factors, an empirical efficiency rather than a derived one: the exchanges
    /// change partner every round, each partner's data depends on the previous round's, and
    /// the link idles at the hand-overs.
    pub halving_doubling_inter_efficiency: f64,
    /// Relative price difference below which the tuner treats two algorithms as tied and
    /// keeps the earlier one in the registry (the ring first). The model prices bytes and
    /// messages, not how well an algorithm overlaps its steps: the ring pipelines segments
    /// across its steps, halving-doubling synchronises at every round. Where the two move
    /// the same bytes and are priced within this margin, the ring measured 2–7% faster (1
    /// host × 4 ranks on 2 cores, 8–64 MiB all-reduce, `bash benches/topo_proof.sh`).
    pub tie_margin: f64,
}

/// The cost model's constants (the link figures of a cluster are its [`Topology`]'s, with
/// [`crate::topology::DEFAULT_INTRA`] and [`crate::topology::DEFAULT_INTER`] where nothing
/// was measured). Overheads are of the order the executor shows at 8 bytes
/// (`ferrocoll-probe all_reduce -b 8 -e 8`).
pub const CONSTANTS: Constants = Constants {
    message_overhead_us: 1.0,
    segment_overhead_us: 0.5,
    reduce_bytes_s: 8e9,
    // A reduction fused into a shared-memory receive reads one extra operand stream of the
    // three a separate pass touches. Priced as a full pass, the model ran 9–29% slow on 1
    // host × 4 ranks at 2–64 MiB (`bash benches/topo_proof.sh`, its "model error" lines).
    fused_reduce_share: 1.0 / 3.0,
    min_segment_bytes: 32 << 10,
    // Fitted to 4 ranks on 2 cores with idle ranks asleep (`bash benches/topo_proof.sh`,
    // medians of 9 rounds of 200 calls at 8 B–512 B): one message costs a hand-off of
    // 16–25 µs in halving-doubling's rounds and 11–30 µs in the ring's steps.
    oversub_handoff_us: 18.0,
    cache_bytes: 8e6,
    cache_speedup: 2.0,
    // 0.88–0.91 of the ring's rate measured on 4 hosts × 1 rank over 1 Gbit shaped links
    // at 2–32 MiB all-reduce (`bash benches/topo_proof.sh`, its part 2).
    halving_doubling_inter_efficiency: 0.9,
    tie_margin: 0.02,
};

/// A priced link: latency (with the message overhead) and bandwidth.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flow {
    /// Seconds before the first byte arrives, software overhead included.
    pub(crate) alpha: f64,
    /// Bytes per second.
    pub(crate) bw: f64,
}

impl Flow {
    /// Seconds to move `bytes`.
    pub(crate) fn time(&self, bytes: f64) -> f64 {
        self.alpha + bytes / self.bw
    }
}

/// The cluster as the cost functions see it.
#[derive(Clone, Copy)]
pub struct Net<'a> {
    /// The topology.
    pub topo: &'a Topology,
    /// Ring order and hosts.
    pub place: &'a Placement,
    /// Bytes of one rank's buffers (input and output) in the call being priced; set by
    /// [`cost`].
    call_bytes: f64,
}

impl<'a> Net<'a> {
    /// The cluster `topo` with ranks placed by `place`.
    pub fn new(topo: &'a Topology, place: &'a Placement) -> Self {
        Net {
            topo,
            place,
            call_bytes: 0.0,
        }
    }

    /// How much faster host `h`'s cores copy and reduce in this call: `cache_speedup` while
    /// the local ranks' buffers fit in `cache_bytes`, falling off with the square of the
    /// share that fits beyond that — a collective sweeps its buffers in order, and a sweep
    /// larger than an LRU cache finds little of it there (1× where the cores are unknown).
    pub(crate) fn cache_factor(&self, h: usize) -> f64 {
        let host = &self.topo.hosts()[h];
        if host.cores.is_none() {
            return 1.0;
        }
        let set = self.call_bytes * host.ranks.len() as f64;
        let fits = (CONSTANTS.cache_bytes / set.max(1.0)).min(1.0);
        1.0 + (CONSTANTS.cache_speedup - 1.0) * fits * fits
    }

    pub(crate) fn overhead(&self) -> f64 {
        CONSTANTS.message_overhead_us * 1e-6
    }

    /// Bandwidth of each of `flows` intra-host flows that run at once on host `h`: the
    /// link's, or the host's share of its cores when they are known and fewer, and of what
    /// it moved with every rank sending at once (`intra_total`) when that is known too
    /// (module docs), faster by [`Net::cache_factor`].
    pub(crate) fn intra_bw(&self, h: usize, flows: f64) -> f64 {
        let t = self.topo;
        let bw = t.intra.bandwidth;
        let host = &t.hosts()[h];
        match host.cores {
            Some(c) if c > 0 && flows > 0.0 => {
                let busy = c.min(host.ranks.len()) as f64;
                // Every flow keeps two cores copying (module docs); all of them together
                // move no more than the host did with every rank sending at once.
                let all = (bw * busy / 2.0).min(host.intra_total.unwrap_or(f64::INFINITY));
                bw.min(self.cache_factor(h) * all / flows)
            }
            _ => bw,
        }
    }

    /// The hand-off an oversubscribed host `h` costs each message inside it, seconds.
    pub(crate) fn handoff(&self, h: usize) -> f64 {
        (self.topo.oversubscription(h) - 1.0) * CONSTANTS.oversub_handoff_us * 1e-6
    }

    /// Latency `link_alpha` of a message inside host `h`, at least the hand-off its
    /// oversubscription costs: a latency measured there already includes the hand-off
    /// (`links` measured 13–62 µs with 4 ranks on 2 cores), a declared or default one
    /// (2 µs) does not, so the two are not added.
    pub(crate) fn intra_latency(&self, h: usize, link_alpha: f64) -> f64 {
        link_alpha.max(self.handoff(h))
    }

    /// Latency of a message inside host `h`, with the hand-off its oversubscription costs.
    pub(crate) fn intra_alpha(&self, h: usize) -> f64 {
        self.intra_latency(h, self.topo.intra.alpha) + self.overhead()
    }

    /// Seconds to reduce `bytes` received from a peer on the slowest host: on one host every
    /// receive comes through shared memory and the reduction is fused into it
    /// (`fused_reduce_share`); across hosts some come over TCP into a bounce buffer and are
    /// reduced in a pass of their own.
    pub(crate) fn reduce_time(&self, bytes: f64) -> f64 {
        self.reduce_time_on(bytes, self.topo.hosts().len() == 1)
    }

    /// Seconds to reduce `bytes` on the slowest host, `fused` into a shared-memory receive or
    /// as a pass of its own: slower on oversubscribed cores, faster while every local
    /// rank's operands stay in the cache (only where cores are known, like the other CPU
    /// terms).
    pub(crate) fn reduce_time_on(&self, bytes: f64, fused: bool) -> f64 {
        let share = if fused {
            CONSTANTS.fused_reduce_share
        } else {
            1.0
        };
        share * self.pass_time(bytes)
    }

    /// Seconds of one separate reduction pass over `bytes` on the slowest host.
    pub(crate) fn pass_time(&self, bytes: f64) -> f64 {
        let t = self.topo;
        let factor = |h: usize| {
            if t.hosts()[h].cores.is_none() {
                return 1.0;
            }
            t.oversubscription(h) / self.cache_factor(h)
        };
        let worst = (0..t.hosts().len()).map(factor).fold(0.0, f64::max);
        worst * reduce_time(bytes)
    }

    /// Flows (a, b) that run at the same time, each priced with its share of
    /// the NICs (and, inside a host, of its cores).
    pub(crate) fn flows(&self, pairs: &[(usize, usize)]) -> Vec<Flow> {
        let t = self.topo;
        let hosts = t.hosts().len();
        let mut out = vec![0usize; hosts];
        let mut inn = vec![0usize; hosts];
        let mut local = vec![0usize; hosts];
        for &(a, b) in pairs {
            let (ha, hb) = (t.host_of(a), t.host_of(b));
            if ha != hb {
                out[ha] += 1;
                inn[hb] += 1;
            } else {
                local[ha] += 1;
            }
        }
        pairs
            .iter()
            .map(|&(a, b)| {
                let (ha, hb) = (t.host_of(a), t.host_of(b));
                let l = t.host_link(ha, hb);
                let bw = if ha == hb {
                    l.bandwidth.min(self.intra_bw(ha, local[ha] as f64))
                } else {
                    l.bandwidth
                        .min(t.nic_of(ha) / out[ha] as f64)
                        .min(t.nic_of(hb) / inn[hb] as f64)
                };
                let alpha = if ha == hb {
                    self.intra_latency(ha, l.alpha)
                } else {
                    l.alpha
                };
                Flow {
                    alpha: alpha + self.overhead(),
                    bw,
                }
            })
            .collect()
    }

    /// Time of one round in which `pairs` each move `bytes`.
    pub(crate) fn round(&self, pairs: &[(usize, usize)], bytes: f64) -> f64 {
        self.round_at(pairs, bytes, 1.0)
    }

    /// [`Net::round`] with the flows between hosts reaching `inter_efficiency` of their
    /// bandwidth.
    pub(crate) fn round_at(
        &self,
        pairs: &[(usize, usize)],
        bytes: f64,
        inter_efficiency: f64,
    ) -> f64 {
        let t = self.topo;
        self.flows(pairs)
            .iter()
            .zip(pairs)
            .map(|(f, &(a, b))| {
                let eff = if t.host_of(a) == t.host_of(b) {
                    1.0
                } else {
                    inter_efficiency
                };
                f.alpha + bytes / (f.bw * eff)
            })
            .fold(0.0, f64::max)
    }

    /// The edges of the ring.
    pub(crate) fn ring_edges(&self) -> Vec<(usize, usize)> {
        let r = &self.place.ring;
        (0..r.len()).map(|i| (r[i], r[(i + 1) % r.len()])).collect()
    }
}

pub(crate) fn segments(bytes: f64, seg: usize) -> f64 {
    (bytes / seg.max(1) as f64).ceil().max(1.0)
}

pub(crate) fn seg_cost(messages: f64, bytes_each: f64, seg: usize) -> f64 {
    messages * segments(bytes_each, seg) * CONSTANTS.segment_overhead_us * 1e-6
}

pub(crate) fn reduce_time(bytes: f64) -> f64 {
    bytes / CONSTANTS.reduce_bytes_s
}

impl Net<'_> {
    /// This cluster priced for one call of `spec` with elements of `esize` bytes (the
    /// cache terms depend on the call's buffers).
    pub(crate) fn for_call(&self, spec: &CollSpec, esize: usize) -> Self {
        let bytes = (spec.count * esize) as f64;
        let call_bytes = match spec.kind {
            Collective::AllGather | Collective::ReduceScatter => (spec.world + 1) as f64 * bytes,
            _ => 2.0 * bytes,
        };
        Net {
            call_bytes,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests;
