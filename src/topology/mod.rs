//! # Topology
//!
//! What the scheduler knows about the cluster: which ranks share a **host**, and what the
//! **links** deliver — a latency α (seconds) and a bandwidth (bytes per second) for a pair of
//! ranks on one host, for one flow between two hosts, and the capacity of each host's
//! network interface (**NIC**), which all flows leaving (or entering) the host share.
//!
//! A topology is data: it is discovered at init (host identities exchanged through the
//! rendezvous store, with the link figures [`DEFAULT_INTRA`] and [`DEFAULT_INTER`]), or
//! loaded from a JSON file (`FERROCOLL_TOPO_FILE`, written by `ferrocoll-probe links --save`
//! or by hand, see [`json`]) and dumped back (`FERROCOLL_TOPO_DUMP_FILE`), so tests and users
//! can describe clusters we do not have.
//!
//! A [`Placement`] is what the algorithms see: the order of the ring ([`RingOrder`]: rank
//! order, or the topology's: each host's ranks contiguous, hosts in an order that spares the
//! slowest links, see [`ring`]) and the ranks of each host in that order.
//!
//! Files: this one is the model ([`Topology`], [`LinkSpec`], [`Host`], the checks);
//! `discover.rs` builds topologies from defaults and from what the ranks published at init;
//! [`json`] reads and writes the file; `source.rs` picks the topology a communicator plans on
//! ([`resolve`]); [`ring`] places the ranks.

mod discover;
pub mod json;
pub mod ring;
mod source;

use std::collections::HashMap;

/// What is wrong with a topology (defined with the other errors, in `crate::error`).
pub use crate::error::TopologyError;
pub use ring::{host_order, Placement, RingOrder};
pub use source::resolve;

/// Latency and bandwidth of a link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkSpec {
    /// Latency α in seconds.
    pub alpha: f64,
    /// Bandwidth in bytes per second.
    pub bandwidth: f64,
}

impl LinkSpec {
    /// A link of `latency_us` microseconds and `gbit_s` Gbit/s (10⁹ bits per second).
    pub const fn from_us_gbit(latency_us: f64, gbit_s: f64) -> LinkSpec {
        LinkSpec {
            alpha: latency_us * 1e-6,
            bandwidth: gbit_s * 1e9 / 8.0,
        }
    }

    /// Latency in microseconds.
    pub fn latency_us(&self) -> f64 {
        self.alpha * 1e6
    }

    /// Bandwidth in Gbit/s.
    pub fn gbit_s(&self) -> f64 {
        self.bandwidth * 8.0 / 1e9
    }
}

/// The link between two ranks of one host in a discovered topology (no file, no
/// measurement): 2 µs, 40 Gbit/s.
pub const DEFAULT_INTRA: LinkSpec = LinkSpec::from_us_gbit(2.0, 40.0);

/// One flow between two hosts in a discovered topology (no file, no measurement): 30 µs,
/// 10 Gbit/s; a host's NIC defaults to the same bandwidth.
pub const DEFAULT_INTER: LinkSpec = LinkSpec::from_us_gbit(30.0, 10.0);

/// One host: a name and the ranks on it (ascending).
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    /// Host identity (hostname, or anything unique).
    pub name: String,
    /// Ranks on this host, ascending.
    pub ranks: Vec<usize>,
    /// This host's NIC capacity per direction in bytes per second, if it differs from the
    /// topology's default.
    pub nic: Option<f64>,
    /// CPU cores its ranks share, if known: the cost model slows a host's shared-memory
    /// copies, reductions and hand-offs down when it runs more ranks than cores.
    pub cores: Option<usize>,
    /// Bytes per second its ranks move between them in all when every one sends at once
    /// (`ferrocoll-probe links` measures it with a ring exchange), if known: the cost model
    /// caps the host's shared-memory traffic there, however fast one pair alone measured.
    pub intra_total: Option<f64>,
}

/// The cluster as the scheduler sees it. Build it with [`Topology::new`] (which checks it),
/// [`Topology::uniform`], [`Topology::from_host_names`] or [`json::load`].
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// Where the figures come from (free text, kept through load and dump).
    pub source: Option<String>,
    hosts: Vec<Host>,
    /// Link between two ranks of one host.
    pub intra: LinkSpec,
    /// One flow between two hosts (a rail), unless `host_links` says otherwise.
    pub inter: LinkSpec,
    /// Default NIC capacity of a host per direction, bytes per second, shared by the flows
    /// that leave (or enter) it.
    pub nic: f64,
    host_links: HashMap<(usize, usize), LinkSpec>,
    host_of: Vec<usize>,
    local_of: Vec<usize>,
}

impl Topology {
    /// A checked topology. `hosts` must cover the ranks `0..world` exactly once, without
    /// empty hosts; every bandwidth must be positive and finite, every latency finite and
    /// non-negative. `host_links` are undirected overrides between host indices.
    pub fn new(
        hosts: Vec<Host>,
        intra: LinkSpec,
        inter: LinkSpec,
        nic: Option<f64>,
        host_links: Vec<(usize, usize, LinkSpec)>,
    ) -> Result<Topology, TopologyError> {
        check_link("intra_host", &intra)?;
        check_link("inter_host", &inter)?;
        let nic = nic.unwrap_or(inter.bandwidth);
        check_bandwidth("nic_gbit_s", nic)?;
        if hosts.is_empty() {
            return Err(TopologyError::NoHosts);
        }
        let world: usize = hosts.iter().map(|h| h.ranks.len()).sum();
        let mut host_of = vec![usize::MAX; world];
        let mut local_of = vec![0; world];
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (hi, h) in hosts.iter().enumerate() {
            if h.ranks.is_empty() {
                return Err(TopologyError::EmptyHost(h.name.clone()));
            }
            if names.insert(&h.name, hi).is_some() {
                return Err(TopologyError::DuplicateHost(h.name.clone()));
            }
            if let Some(b) = h.nic {
                check_bandwidth(&format!("hosts[{}].nic_gbit_s", h.name), b)?;
            }
            if let Some(b) = h.intra_total {
                check_bandwidth(&format!("hosts[{}].intra_total_gbit_s", h.name), b)?;
            }
            if h.cores == Some(0) {
                return Err(TopologyError::BadValue {
                    field: format!("hosts[{}].cores", h.name),
                    value: 0.0,
                    reason: "a host needs at least one core",
                });
            }
            for (li, &r) in h.ranks.iter().enumerate() {
                if r >= world {
                    return Err(TopologyError::RankOutOfRange { rank: r, world });
                }
                if host_of[r] != usize::MAX {
                    return Err(TopologyError::DuplicateRank {
                        rank: r,
                        first: hosts[host_of[r]].name.clone(),
                        second: h.name.clone(),
                    });
                }
                host_of[r] = hi;
                local_of[r] = li;
            }
        }
        if let Some(missing) = host_of.iter().position(|&h| h == usize::MAX) {
            return Err(TopologyError::MissingRank {
                rank: missing,
                world,
            });
        }
        let mut links = HashMap::new();
        for (a, b, l) in host_links {
            let name = |i: usize| {
                hosts
                    .get(i)
                    .map_or_else(|| i.to_string(), |h| h.name.clone())
            };
            check_link(&format!("host_links[{}-{}]", name(a), name(b)), &l)?;
            if a >= hosts.len() || b >= hosts.len() || a == b {
                return Err(TopologyError::BadHostLink {
                    a: name(a),
                    b: name(b),
                });
            }
            links.insert((a.min(b), a.max(b)), l);
        }
        let mut hosts = hosts;
        for h in &mut hosts {
            h.ranks.sort_unstable();
        }
        // Local indices follow the ascending order.
        for h in &hosts {
            for (li, &r) in h.ranks.iter().enumerate() {
                local_of[r] = li;
            }
        }
        Ok(Topology {
            source: None,
            hosts,
            intra,
            inter,
            nic,
            host_links: links,
            host_of,
            local_of,
        })
    }

    /// Sets the default inter-host link and NIC capacity (builder for tests and examples).
    pub fn with_inter(mut self, link: LinkSpec, nic: f64) -> Topology {
        self.inter = link;
        self.nic = nic;
        self
    }

    /// Sets the intra-host link (builder for tests and examples).
    pub fn with_intra(mut self, link: LinkSpec) -> Topology {
        self.intra = link;
        self
    }

    /// Overrides the link between hosts `a` and `b` (indices; builder for tests). Invalid
    /// indices or figures are refused.
    pub fn with_host_link(
        mut self,
        a: usize,
        b: usize,
        link: LinkSpec,
    ) -> Result<Topology, TopologyError> {
        let name = |i: usize| {
            self.hosts
                .get(i)
                .map_or_else(|| i.to_string(), |h| h.name.clone())
        };
        check_link(&format!("host_links[{}-{}]", name(a), name(b)), &link)?;
        if a >= self.hosts.len() || b >= self.hosts.len() || a == b {
            return Err(TopologyError::BadHostLink {
                a: name(a),
                b: name(b),
            });
        }
        self.host_links.insert((a.min(b), a.max(b)), link);
        Ok(self)
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.host_of.len()
    }

    /// The hosts, in the order given.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Index of the host of `rank`.
    pub fn host_of(&self, rank: usize) -> usize {
        self.host_of[rank]
    }

    /// Position of `rank` among its host's ranks (ascending).
    pub fn local_of(&self, rank: usize) -> usize {
        self.local_of[rank]
    }

    /// NIC capacity of host `h` per direction, bytes per second.
    pub fn nic_of(&self, h: usize) -> f64 {
        self.hosts[h].nic.unwrap_or(self.nic)
    }

    /// The link between hosts `a` and `b` (one flow); `intra` when `a == b`.
    pub fn host_link(&self, a: usize, b: usize) -> LinkSpec {
        if a == b {
            return self.intra;
        }
        *self
            .host_links
            .get(&(a.min(b), a.max(b)))
            .unwrap_or(&self.inter)
    }

    /// The host-pair overrides, as (host index, host index, link), sorted.
    pub fn host_links(&self) -> Vec<(usize, usize, LinkSpec)> {
        let mut v: Vec<_> = self
            .host_links
            .iter()
            .map(|(k, l)| (k.0, k.1, *l))
            .collect();
        v.sort_by_key(|x| (x.0, x.1));
        v
    }

    /// The link between ranks `a` and `b`.
    pub fn link(&self, a: usize, b: usize) -> LinkSpec {
        self.host_link(self.host_of[a], self.host_of[b])
    }

    /// The topology of a communicator made of some of these ranks (a split): new rank `i` is
    /// old rank `members[i]`; hosts left without ranks are dropped, link figures kept.
    /// Repeated or out-of-range members are refused.
    pub fn subset(&self, members: &[usize]) -> Result<Topology, TopologyError> {
        let mut hosts: Vec<Host> = Vec::new();
        let mut new_index = vec![usize::MAX; self.hosts.len()];
        let mut seen = vec![false; self.world()];
        for (i, &old) in members.iter().enumerate() {
            let h = *self.host_of.get(old).ok_or(TopologyError::RankOutOfRange {
                rank: old,
                world: self.world(),
            })?;
            if std::mem::replace(&mut seen[old], true) {
                let name = self.hosts[h].name.clone();
                return Err(TopologyError::DuplicateRank {
                    rank: old,
                    first: name.clone(),
                    second: name,
                });
            }
            if new_index[h] == usize::MAX {
                new_index[h] = hosts.len();
                hosts.push(Host {
                    name: self.hosts[h].name.clone(),
                    ranks: Vec::new(),
                    nic: self.hosts[h].nic,
                    cores: self.hosts[h].cores,
                    intra_total: self.hosts[h].intra_total,
                });
            }
            hosts[new_index[h]].ranks.push(i);
        }
        let links = self
            .host_links()
            .into_iter()
            .filter(|(a, b, _)| new_index[*a] != usize::MAX && new_index[*b] != usize::MAX)
            .map(|(a, b, l)| (new_index[a], new_index[b], l))
            .collect();
        let mut t = Topology::new(hosts, self.intra, self.inter, Some(self.nic), links)?;
        t.source.clone_from(&self.source);
        Ok(t)
    }

    /// Refuses a topology that does not describe the running job: a different number of
    /// ranks, or (when the job's host identities are known) a different grouping of ranks
    /// into hosts. Host names may differ (a file written on other machines).
    pub fn check_matches(
        &self,
        world: usize,
        discovered: Option<&Topology>,
    ) -> Result<(), TopologyError> {
        if self.world() != world {
            return Err(TopologyError::Mismatch(format!(
                "the topology has {} ranks but the job has {world}",
                self.world()
            )));
        }
        if let Some(d) = discovered {
            for r in 0..world {
                for q in r + 1..world {
                    let ours = self.host_of(r) == self.host_of(q);
                    let theirs = d.host_of(r) == d.host_of(q);
                    if ours != theirs {
                        let (yes, no) = ("on one host", "on different hosts");
                        return Err(TopologyError::Mismatch(format!(
                            "ranks {r} and {q} are {} in the topology but {} in the job",
                            if ours { yes } else { no },
                            if theirs { yes } else { no }
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the core count of every host that has none from `other` (the discovered
    /// topology of the same job: same grouping of ranks, checked by
    /// [`Topology::check_matches`]).
    pub fn fill_cores_from(&mut self, other: &Topology) {
        for h in &mut self.hosts {
            if h.cores.is_none() {
                if let Some(&r) = h.ranks.first() {
                    h.cores = other
                        .host_of
                        .get(r)
                        .and_then(|&oh| other.hosts.get(oh))
                        .and_then(|o| o.cores);
                }
            }
        }
    }

    /// Sets host `host`'s core count (`None`: unknown); zero is stored as unknown.
    pub fn set_cores(&mut self, host: usize, cores: Option<usize>) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.cores = cores.filter(|&c| c > 0);
        }
    }

    /// Sets host `host`'s loaded intra-host rate, bytes per second (`None`: unknown); a
    /// value that is not positive and finite is stored as unknown.
    pub fn set_intra_total(&mut self, host: usize, bytes_s: Option<f64>) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.intra_total = bytes_s.filter(|b| b.is_finite() && *b > 0.0);
        }
    }

    /// How many times over a host's ranks oversubscribe its cores: `ranks / cores`, at
    /// least 1 (1 when the core count is unknown).
    pub fn oversubscription(&self, host: usize) -> f64 {
        let h = &self.hosts[host];
        match h.cores {
            Some(c) if c > 0 => (h.ranks.len() as f64 / c as f64).max(1.0),
            _ => 1.0,
        }
    }
}

/// `v` in bytes per second; reported in Gbit/s, the file's unit.
fn check_bandwidth(field: &str, v: f64) -> Result<(), TopologyError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(TopologyError::BadValue {
            field: field.to_string(),
            value: v * 8.0 / 1e9,
            reason: "bandwidth must be positive and finite",
        })
    }
}

fn check_link(what: &str, l: &LinkSpec) -> Result<(), TopologyError> {
    check_bandwidth(&format!("{what}.bandwidth_gbit_s"), l.bandwidth)?;
    if !(l.alpha.is_finite() && l.alpha >= 0.0) {
        return Err(TopologyError::BadValue {
            field: format!("{what}.latency_us"),
            value: l.alpha * 1e6,
            reason: "latency must be finite and not negative",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
