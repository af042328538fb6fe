//! Topologies built from defaults: a uniform cluster or one host (tests, in-process
//! worlds), and the topology discovered at init from the host identities and CPU counts the
//! ranks published at rendezvous, with the links [`DEFAULT_INTRA`] and [`DEFAULT_INTER`].

use super::{Host, Topology, DEFAULT_INTER, DEFAULT_INTRA};

impl Topology {
    /// `hosts` hosts of `per_host` ranks each with default links; `cyclic` places rank `r`
    /// on host `r mod hosts` (as launchers often do), otherwise hosts hold consecutive ranks.
    pub fn uniform(hosts: usize, per_host: usize, cyclic: bool) -> Topology {
        let (hosts, per_host) = (hosts.max(1), per_host.max(1));
        let hs = (0..hosts)
            .map(|h| Host {
                name: format!("host{h}"),
                ranks: (0..per_host)
                    .map(|l| {
                        if cyclic {
                            l * hosts + h
                        } else {
                            h * per_host + l
                        }
                    })
                    .collect(),
                nic: None,
                cores: None,
                intra_total: None,
            })
            .collect();
        Topology::with_defaults(hs)
    }

    /// The topology discovered at init: rank `r` on the host named `names[r]`, hosts in the
    /// order of their first rank, links [`DEFAULT_INTRA`] and [`DEFAULT_INTER`], no core counts.
    pub fn from_host_names(names: &[String]) -> Topology {
        Topology::from_hosts(names, &[], &[])
    }

    /// [`Topology::from_host_names`] with the core count each rank reported for its host
    /// (`cores[r]`; missing or zero entries leave the host's count unknown; a host whose ranks
    /// disagree keeps the smallest) and the CPUs its affinity mask allows (`cpus[r]`, empty:
    /// unknown). Where every rank of a host gave its CPUs, the host has the union of them,
    /// capped by any rank's smaller count (a cgroup quota): ranks bound one per core share
    /// the cores of all of them, not one.
    pub fn from_hosts(names: &[String], cores: &[usize], cpus: &[Vec<usize>]) -> Topology {
        let mut hosts: Vec<Host> = Vec::new();
        for (r, n) in names.iter().enumerate() {
            let c = cores.get(r).copied().filter(|&c| c > 0);
            match hosts.iter_mut().find(|h| h.name == *n) {
                Some(h) => {
                    h.ranks.push(r);
                    h.cores = match (h.cores, c) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => hosts.push(Host {
                    name: n.clone(),
                    ranks: vec![r],
                    nic: None,
                    cores: c,
                    intra_total: None,
                }),
            }
        }
        for h in &mut hosts {
            if let Some(n) = union_of_cpus(&h.ranks, cores, cpus) {
                h.cores = Some(n);
            }
        }
        if hosts.is_empty() {
            hosts.push(Host {
                name: "local".into(),
                ranks: vec![0],
                nic: None,
                cores: None,
                intra_total: None,
            });
        }
        Topology::with_defaults(hosts)
    }

    /// One host holding ranks `0..world` (an in-process world).
    pub fn single_host(world: usize) -> Topology {
        Topology::uniform(1, world, false)
    }

    fn with_defaults(hosts: Vec<Host>) -> Topology {
        let t = Topology::new(hosts, DEFAULT_INTRA, DEFAULT_INTER, None, Vec::new());
        // The hosts built by the callers cover 0..world exactly and the constants are
        // positive, so `new` cannot refuse them.
        t.unwrap_or_else(|e| unreachable!("default topology refused: {e}"))
    }
}

/// CPUs the ranks `ranks` may run on together: the size of the union of their affinity
/// masks, capped by the count of any rank whose count is below its own mask (a cgroup quota
/// the ranks share); `None` when some rank gave no mask.
fn union_of_cpus(ranks: &[usize], cores: &[usize], cpus: &[Vec<usize>]) -> Option<usize> {
    let mut all = std::collections::BTreeSet::new();
    let mut quota = usize::MAX;
    for &r in ranks {
        let mask = cpus.get(r).filter(|m| !m.is_empty())?;
        all.extend(mask.iter().copied());
        if let Some(&c) = cores.get(r).filter(|&&c| c > 0 && c < mask.len()) {
            quota = quota.min(c);
        }
    }
    Some(all.len().min(quota))
}
