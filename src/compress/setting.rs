//! `auto`'s choice of codec from the link bandwidth. The setting itself
//! ([`CompressionSetting`], `FERROCOLL_COMPRESSION`) is read with the rest of the
//! configuration, in `crate::config::compression`.

use super::{Codec, CompressionSetting, DEFAULT_BLOCK};

impl CompressionSetting {
    /// The codec to use on a link of `link_bytes_per_s` (used only by `Auto`; `None` when
    /// the bandwidth is unknown, so `auto` never compresses blindly).
    pub fn resolve(&self, link_bytes_per_s: Option<f64>) -> Codec {
        match (self, link_bytes_per_s) {
            (CompressionSetting::Fixed(c), _) => *c,
            (CompressionSetting::Auto, Some(bw)) => auto_codec(bw),
            (CompressionSetting::Auto, None) => Codec::None,
        }
    }
}

/// `auto`'s choice for a link of `bytes_per_s` (the slowest link an all-reduce crosses):
/// no compression from 12.5 GB/s (100 Gbit/s, NVLink, shared memory), bf16 from 3 GB/s
/// (25 Gbit/s), fp8 from 0.6 GB/s (5 Gbit/s), 1-bit from 0.1 GB/s, top-k 1% below.
///
/// Callers pass the slowest inter-host link of their topology ([`auto_link`]) or their own
/// figure (e.g. from `ferrocoll-probe links`).
pub fn auto_codec(bytes_per_s: f64) -> Codec {
    if bytes_per_s.is_nan() || bytes_per_s >= 12.5e9 {
        // Unknown (NaN) or fast: lossless.
        Codec::None
    } else if bytes_per_s >= 3e9 {
        Codec::Bf16
    } else if bytes_per_s >= 0.6e9 {
        Codec::Fp8E4M3 {
            block: DEFAULT_BLOCK,
        }
    } else if bytes_per_s >= 0.1e9 {
        Codec::OneBit {
            block: DEFAULT_BLOCK,
        }
    } else {
        Codec::TopK { fraction: 0.01 }
    }
}

/// The bandwidth in bytes per second of the slowest link an all-reduce on `topo` crosses:
/// between hosts (pair links and NICs) when there are several, else within the host; `None`
/// for a single rank.
pub fn slowest_link(topo: &crate::topology::Topology) -> Option<f64> {
    if topo.world() < 2 {
        return None;
    }
    let h = topo.hosts().len();
    if h < 2 {
        return Some(topo.host_link(0, 0).bandwidth);
    }
    let mut bw = f64::INFINITY;
    for a in 0..h {
        bw = bw.min(topo.nic_of(a));
        for b in a + 1..h {
            bw = bw.min(topo.host_link(a, b).bandwidth);
        }
    }
    bw.is_finite().then_some(bw)
}

impl CompressionSetting {
    /// The codec for all-reduces on `comm`: `auto` decides from the slowest link between
    /// the hosts of the communicator's topology (discovered, measured with `ferrocoll-probe
    /// links --save`, or described by `FERROCOLL_TOPO_FILE`) and leaves a communicator on
    /// one host uncompressed ([`auto_link`]).
    pub fn resolve_for(&self, comm: &crate::Communicator) -> Codec {
        self.resolve(auto_link(&comm.topology()))
    }
}

/// The link `auto` decides from: [`slowest_link`] when the ranks span several hosts, `None`
/// (no compression) on one host. Ranks of one host exchange through shared memory, where a
/// codec's passes over the data cost as much CPU and memory time as the copy they save
/// (`ferrocoll-probe all_reduce -b 64M -e 64M --compression fp8`, or `onebit`, `topk:0.01`,
/// against no `--compression`, 2 ranks: each codec took about 1.4–5× the uncompressed call
/// on a 2-vCPU VM), whatever bandwidth the topology gives that link.
pub fn auto_link(topo: &crate::topology::Topology) -> Option<f64> {
    if topo.hosts().len() < 2 {
        return None;
    }
    slowest_link(topo)
}
