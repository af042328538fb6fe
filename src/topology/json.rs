//! The topology file: load (`FERROCOLL_TOPO_FILE`) and dump (`FERROCOLL_TOPO_DUMP_FILE`);
//! what is wrong with one is a [`TopologyError`].
//!
//! ```json
//! {
//!   "format": "ferrocoll-topology", "version": 1,
//!   "source": "where the figures come from",
//!   "world_size": 4,
//!   "intra_host": { "latency_us": 0.5, "bandwidth_gbit_s": 160 },
//!   "inter_host": { "latency_us": 40, "bandwidth_gbit_s": 1 },
//!   "nic_gbit_s": 1,
//!   "hosts": [ { "name": "a", "ranks": [0, 2], "cores": 2 }, { "name": "b", "ranks": [1, 3], "nic_gbit_s": 1 } ],
//!   "host_links": [ { "a": "a", "b": "b", "latency_us": 40, "bandwidth_gbit_s": 0.5 } ]
//! }
//! ```
//! Bandwidths are in Gbit/s (10⁹ bits per second), latencies in microseconds. `inter_host`
//! is one flow between two hosts (one rail); `nic_gbit_s` is what a host's network
//! interfaces carry per direction in all (default: `inter_host`'s bandwidth), shared by its
//! flows; `host_links` override `inter_host` for pairs of hosts (a degraded cable, a slower
//! switch tier). `cores` (optional) is the number of CPU cores a host's ranks share; where a
//! file omits it, the count each rank reported at init is used. `intra_total_gbit_s`
//! (optional) is what a host's ranks move between them in all when every one sends at once
//! (`ferrocoll-probe links` measures it); the cost model caps the host's shared-memory
//! traffic there. Other fields (the probe's raw measurements) are ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Host, LinkSpec, Topology};
use crate::error::TopologyError;

/// The format tag of topology files.
pub const FORMAT: &str = "ferrocoll-topology";
/// The newest version this code reads and the one it writes.
pub const VERSION: u32 = 1;

/// A link as written in the file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDoc {
    /// Latency, µs.
    pub latency_us: f64,
    /// Bandwidth, Gbit/s.
    pub bandwidth_gbit_s: f64,
}

/// A host as written in the file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDoc {
    /// Name.
    pub name: String,
    /// Ranks on it.
    pub ranks: Vec<usize>,
    /// NIC capacity per direction, Gbit/s, if not the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_gbit_s: Option<f64>,
    /// CPU cores its ranks share, if known (discovered at init when the file omits it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<usize>,
    /// What its ranks move between them in all when every one sends at once, Gbit/s, if
    /// known (measured by `ferrocoll-probe links`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intra_total_gbit_s: Option<f64>,
}

/// A host-pair override as written in the file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLinkDoc {
    /// One host's name.
    pub a: String,
    /// The other host's name.
    pub b: String,
    /// Latency, µs.
    pub latency_us: f64,
    /// Bandwidth, Gbit/s.
    pub bandwidth_gbit_s: f64,
}

/// The topology document (see the module docs). The probe writes it with extra fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopologyDoc {
    /// [`FORMAT`].
    #[serde(default = "format_tag")]
    pub format: String,
    /// [`VERSION`].
    #[serde(default = "version_one")]
    pub version: u32,
    /// Where the figures come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Number of ranks (checked against the hosts when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<usize>,
    /// Link between two ranks of one host.
    pub intra_host: LinkDoc,
    /// One flow between two hosts.
    pub inter_host: LinkDoc,
    /// Default NIC capacity per direction, Gbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_gbit_s: Option<f64>,
    /// The hosts.
    pub hosts: Vec<HostDoc>,
    /// Host-pair overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_links: Vec<HostLinkDoc>,
}

fn format_tag() -> String {
    FORMAT.to_string()
}

fn version_one() -> u32 {
    VERSION
}

fn gbit(v: f64) -> f64 {
    v * 1e9 / 8.0
}

impl TopologyDoc {
    /// The document of `t`.
    pub fn of(t: &Topology) -> TopologyDoc {
        let link = |l: &LinkSpec| LinkDoc {
            latency_us: l.latency_us(),
            bandwidth_gbit_s: l.gbit_s(),
        };
        TopologyDoc {
            format: FORMAT.into(),
            version: VERSION,
            source: t.source.clone(),
            world_size: Some(t.world()),
            intra_host: link(&t.intra),
            inter_host: link(&t.inter),
            nic_gbit_s: Some(t.nic * 8.0 / 1e9),
            hosts: t
                .hosts()
                .iter()
                .map(|h| HostDoc {
                    name: h.name.clone(),
                    ranks: h.ranks.clone(),
                    nic_gbit_s: h.nic.map(|b| b * 8.0 / 1e9),
                    cores: h.cores,
                    intra_total_gbit_s: h.intra_total.map(|b| b * 8.0 / 1e9),
                })
                .collect(),
            host_links: t
                .host_links()
                .into_iter()
                .map(|(a, b, l)| HostLinkDoc {
                    a: t.hosts()[a].name.clone(),
                    b: t.hosts()[b].name.clone(),
                    latency_us: l.latency_us(),
                    bandwidth_gbit_s: l.gbit_s(),
                })
                .collect(),
        }
    }

    /// The checked topology this document describes.
    pub fn to_topology(&self) -> Result<Topology, TopologyError> {
        if self.format != FORMAT || self.version > VERSION || self.version == 0 {
            return Err(TopologyError::Format {
                format: self.format.clone(),
                version: self.version,
            });
        }
        let link = |l: &LinkDoc| LinkSpec::from_us_gbit(l.latency_us, l.bandwidth_gbit_s);
        if let Some(world) = self.world_size {
            // Sized by the ranks the file lists, not by the world it claims (which may be
            // anything up to usize::MAX).
            let mut ranks: Vec<usize> = self.hosts.iter().flat_map(|h| h.ranks.clone()).collect();
            if let Some(&rank) = ranks.iter().find(|&&r| r >= world) {
                return Err(TopologyError::RankOutOfRange { rank, world });
            }
            ranks.sort_unstable();
            ranks.dedup();
            // The smallest rank below `world` that no host lists.
            let rank = ranks
                .iter()
                .enumerate()
                .position(|(i, &r)| i != r)
                .unwrap_or(ranks.len());
            if rank < world {
                return Err(TopologyError::MissingRank { rank, world });
            }
        }
        let hosts: Vec<Host> = self
            .hosts
            .iter()
            .map(|h| Host {
                name: h.name.clone(),
                ranks: h.ranks.clone(),
                nic: h.nic_gbit_s.map(gbit),
                cores: h.cores,
                intra_total: h.intra_total_gbit_s.map(gbit),
            })
            .collect();
        let index = |name: &str| hosts.iter().position(|h| h.name == name);
        let mut links = Vec::with_capacity(self.host_links.len());
        for l in &self.host_links {
            match (index(&l.a), index(&l.b)) {
                (Some(a), Some(b)) => links.push((
                    a,
                    b,
                    LinkSpec::from_us_gbit(l.latency_us, l.bandwidth_gbit_s),
                )),
                _ => {
                    return Err(TopologyError::BadHostLink {
                        a: l.a.clone(),
                        b: l.b.clone(),
                    })
                }
            }
        }
        let mut t = Topology::new(
            hosts,
            link(&self.intra_host),
            link(&self.inter_host),
            self.nic_gbit_s.map(gbit),
            links,
        )?;
        t.source = self.source.clone();
        Ok(t)
    }
}

/// Parses and checks a topology from JSON text.
pub fn from_json(text: &str) -> Result<Topology, TopologyError> {
    let doc: TopologyDoc = serde_json::from_str(text).map_err(|e| TopologyError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    doc.to_topology()
}

/// The JSON text of a topology (pretty-printed).
pub fn to_json(t: &Topology) -> String {
    // A document of plain numbers, strings and vectors always serialises.
    serde_json::to_string_pretty(&TopologyDoc::of(t)).unwrap_or_default()
}

/// Reads and checks a topology file.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|e| TopologyError::Io {
        what: "read",
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    from_json(&text)
}

/// Writes `t` to `path`.
pub fn save(t: &Topology, path: &Path) -> Result<(), TopologyError> {
    std::fs::write(path, to_json(t) + "\n").map_err(|e| TopologyError::Io {
        what: "write",
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "source": "test",
      "world_size": 4,
      "intra_host": { "latency_us": 0.5, "bandwidth_gbit_s": 160 },
      "inter_host": { "latency_us": 40, "bandwidth_gbit_s": 1 },
      "hosts": [ { "name": "a", "ranks": [0, 2] }, { "name": "b", "ranks": [3, 1], "nic_gbit_s": 2 } ],
      "host_links": [ { "a": "a", "b": "b", "latency_us": 50, "bandwidth_gbit_s": 0.5 } ]
    }"#;

    #[test]
    fn loads_and_round_trips() {
        let t = from_json(GOOD).unwrap();
        assert_eq!(t.world(), 4);
        assert_eq!(t.hosts()[1].ranks, vec![1, 3]);
        assert_eq!(t.source.as_deref(), Some("test"));
        assert!((t.link(0, 1).gbit_s() - 0.5).abs() < 1e-9);
        assert!((t.nic_of(1) * 8.0 / 1e9 - 2.0).abs() < 1e-9);
        assert!((t.nic_of(0) * 8.0 / 1e9 - 1.0).abs() < 1e-9);
        let back = from_json(&to_json(&t)).unwrap();
        assert_eq!(back.hosts(), t.hosts());
        assert_eq!(back.source, t.source);
        for (a, b) in [(0, 1), (0, 2), (1, 3)] {
            let (x, y) = (back.link(a, b), t.link(a, b));
            assert!((x.alpha - y.alpha).abs() < 1e-12 && (x.bandwidth - y.bandwidth).abs() < 1e-3);
        }
        assert!((back.nic - t.nic).abs() < 1e-3);
    }

    fn err(text: &str) -> String {
        from_json(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = err(&GOOD.replace("[3, 1]", "[3]"));
        assert_eq!(e, "rank 1 is missing: no host lists it (world of 4 ranks)");
        let e = err(&GOOD.replace("\"bandwidth_gbit_s\": 1 }", "\"bandwidth_gbit_s\": -1 }"));
        assert_eq!(
            e,
            "bad inter_host.bandwidth_gbit_s = -1: bandwidth must be positive and finite"
        );
        let e = err(&GOOD.replace("\"world_size\": 4,", "\"world_size\": 4"));
        assert!(e.starts_with("malformed topology JSON at line 4"), "{e}");
        let e = err(r#"{"hosts": []}"#);
        assert!(e.contains("missing field"), "{e}");
        let e = err(&GOOD.replace("\"a\": \"a\"", "\"a\": \"zz\""));
        assert!(e.contains("bad host link zz - b"), "{e}");
        let e = err(&GOOD.replace("\"source\"", "\"format\": \"other\", \"source\""));
        assert!(e.contains("not a ferrocoll topology"), "{e}");
        let e = err(&GOOD.replace("[0, 2]", "[0, 2, 9]"));
        assert_eq!(e, "rank 9 is out of range for a world of 4 ranks");
        let e = err(&GOOD.replace("\"nic_gbit_s\": 2", "\"nic_gbit_s\": 0"));
        assert!(e.contains("hosts[b].nic_gbit_s"), "{e}");
        let e = err(&GOOD.replace("\"ranks\": [0, 2]", "\"ranks\": [0, 2], \"gpus\": 8"));
        assert!(e.contains("unknown field `gpus`"), "{e}");
        let e = err(&GOOD.replace("\"ranks\": [0, 2]", "\"ranks\": [0, 2], \"cores\": 0"));
        assert_eq!(e, "bad hosts[a].cores = 0: a host needs at least one core");
        let e = err(&GOOD.replace("\"ranks\": [0, 2]", "\"ranks\": [0, 2], \"cores\": -2"));
        assert!(e.starts_with("malformed topology JSON"), "{e}");
    }

    /// Found by reading, confirmed with the topology_json fuzz target
    /// (fuzz/corpus/topology_json/regress-*): a huge `world_size` sized a vector by it, so
    /// usize::MAX panicked (capacity overflow) and 4e12 aborted (allocation failure).
    #[test]
    fn a_huge_world_size_is_an_error_not_an_allocation() {
        let e = err(&GOOD.replace("4,", "18446744073709551615,"));
        assert_eq!(
            e,
            "rank 4 is missing: no host lists it (world of 18446744073709551615 ranks)"
        );
        let e = err(&GOOD
            .replace("4,", "4000000000000,")
            .replace("[0, 2]", "[0, 2, 3999999999999]"));
        assert!(e.contains("rank 4 is missing"), "{e}");
        let e = err(&GOOD.replace("[3, 1]", "[3, 1, 1]"));
        assert!(e.contains("rank 1"), "{e}");
    }

    #[test]
    fn cores_load_round_trip_and_fill_in_from_discovery() {
        let t = from_json(&GOOD.replace("\"ranks\": [0, 2]", "\"ranks\": [0, 2], \"cores\": 1"))
            .unwrap();
        assert_eq!(t.hosts()[0].cores, Some(1));
        assert_eq!(t.hosts()[1].cores, None);
        // Host a: 2 ranks on 1 core; host b: unknown.
        assert_eq!(t.oversubscription(0), 2.0);
        assert_eq!(t.oversubscription(1), 1.0);
        let back = from_json(&to_json(&t)).unwrap();
        assert_eq!(back.hosts(), t.hosts());
        // Discovered: the same grouping, 8 cores reported on each host (a rank that reported
        // nothing counts as unknown). The file's own count wins; the missing one is filled.
        let names: Vec<String> = ["a", "b", "a", "b"].iter().map(|s| s.to_string()).collect();
        let found = Topology::from_hosts(&names, &[8, 0, 8, 8], &[]);
        assert_eq!(found.hosts()[0].cores, Some(8));
        assert_eq!(found.hosts()[1].cores, Some(8));
        let mut t = t;
        t.fill_cores_from(&found);
        assert_eq!(t.hosts()[0].cores, Some(1));
        assert_eq!(t.hosts()[1].cores, Some(8));
    }

    /// A host's loaded intra-host rate loads in Gbit/s, dumps back, and a non-positive one
    /// is refused by name.
    #[test]
    fn intra_total_loads_round_trips_and_is_checked() {
        let with = |v: &str| {
            GOOD.replace(
                "\"ranks\": [0, 2]",
                &format!("\"ranks\": [0, 2], \"intra_total_gbit_s\": {v}"),
            )
        };
        let t = from_json(&with("88")).unwrap();
        assert_eq!(t.hosts()[0].intra_total, Some(11e9));
        assert_eq!(t.hosts()[1].intra_total, None);
        let back = from_json(&to_json(&t)).unwrap();
        assert_eq!(back.hosts(), t.hosts());
        for bad in ["0", "-5"] {
            let e = err(&with(bad));
            assert!(e.contains("hosts[a].intra_total_gbit_s"), "{e}");
        }
    }

    #[test]
    fn unreadable_file_is_an_io_error() {
        let e = load(Path::new("/nonexistent/topo.json")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read topology file /nonexistent/topo.json"),
            "{e}"
        );
        let t = Topology::uniform(1, 2, false);
        assert!(matches!(
            save(&t, Path::new("/nonexistent/dir/t.json")).unwrap_err(),
            TopologyError::Io { what: "write", .. }
        ));
    }
}
