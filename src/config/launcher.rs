//! Where a rank learns who it is: the variables of the launchers people use (also reached
//! as `bootstrap::env`, where it lived before; kept in the configuration module because it
//! reads `FERROCOLL_*` variables, which are read nowhere else).
//!
//! Read in this order (the first family present wins): `FERROCOLL_RANK` /
//! `FERROCOLL_WORLD_SIZE` / `FERROCOLL_STORE`; torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`); Open MPI (`OMPI_COMM_WORLD_RANK`,
//! `_SIZE`, `_LOCAL_RANK`, `_LOCAL_SIZE`); PMI (`PMI_RANK`, `PMI_SIZE`); Slurm
//! (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`). The store address is `FERROCOLL_STORE`
//! (`host:port`, `tcp://host:port`, `etcd://host:port/prefix`, `file:DIR`) or, failing that, `MASTER_ADDR:MASTER_PORT`. Under torchrun the agent already
//! serves torch's own store on `MASTER_PORT`, so ferrocoll's store then listens on
//! `MASTER_PORT + 1` (set `FERROCOLL_STORE` to choose another address, or `file:DIR` to meet
//! through a shared directory instead).

use crate::error::{Error, Result};

/// What the launcher told this rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchEnv {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Rank among the ranks of this host, if the launcher says.
    pub local_rank: Option<usize>,
    /// Ranks on this host, if the launcher says.
    pub local_world: Option<usize>,
    /// Where the ranks meet: `host:port` (a store served by rank 0), `tcp://host:port` (a
    /// store served outside the ranks), `etcd://host:port/prefix` or `file:DIR` (see
    /// `ARCHITECTURE.md`, the store seam).
    pub store: String,
    /// Which launcher family the values came from (`ferrocoll`, `torchrun`, `openmpi`, `pmi`, `slurm`).
    pub source: &'static str,
}

fn bad(var: &str, value: &str, reason: &str) -> Error {
    Error::Config {
        var: var.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Reads the launcher variables of this process's environment; `Ok(None)` when none are set.
pub fn from_env() -> Result<Option<LaunchEnv>> {
    detect(|k| std::env::var(k).ok())
}

/// The store a replacement process joins through (`FERROCOLL_STORE`; it has no rank yet, so
/// no other launcher variable is read). Missing or empty is an [`Error::Config`] naming it.
pub fn store_from_env() -> Result<String> {
    store_from(|k| std::env::var(k).ok())
}

fn store_from(get: impl Fn(&str) -> Option<String>) -> Result<String> {
    match get("FERROCOLL_STORE") {
        Some(s) if s.contains(':') => Ok(s),
        Some(s) => Err(bad("FERROCOLL_STORE", &s, "expected host:port or file:DIR")),
        None => Err(bad(
            "FERROCOLL_STORE",
            "",
            "is missing: a replacement joins through the job's store",
        )),
    }
}

/// Reads the launcher variables through `get`; `Ok(None)` when none are set. A rank not
/// below the world size is an [`Error::Config`] naming the variable.
pub fn detect(get: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>> {
    let env = detect_unchecked(get)?;
    if let Some(e) = &env {
        if e.rank >= e.world {
            let (rank_var, world_var) = variables(e.source);
            return Err(bad(
                rank_var,
                &e.rank.to_string(),
                &format!("not below {world_var}={}", e.world),
            ));
        }
    }
    Ok(env)
}

/// Like [`from_env`], but a rank not below the world size is returned as it is: the
/// communicator's constructor refuses it with a [`crate::error::RankConflict`] that the
/// job's other ranks learn too.
pub(crate) fn from_env_unchecked() -> Result<Option<LaunchEnv>> {
    detect_unchecked(|k| std::env::var(k).ok())
}

/// The rank and world-size variables of the launcher family `source`.
fn variables(source: &str) -> (&'static str, &'static str) {
    FAMILIES
        .iter()
        .find(|f| f.0 == source)
        .map_or(("FERROCOLL_RANK", "FERROCOLL_WORLD_SIZE"), |f| (f.1, f.2))
}

/// A launcher family: (source, rank variable, world variable, local rank variable, local
/// world variable).
type Family = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// The launcher families, in the order they are read.
const FAMILIES: [Family; 5] = [
    (
        "ferrocoll",
        "FERROCOLL_RANK",
        "FERROCOLL_WORLD_SIZE",
        Some("FERROCOLL_LOCAL_RANK"),
        Some("FERROCOLL_LOCAL_WORLD_SIZE"),
    ),
    (
        "torchrun",
        "RANK",
        "WORLD_SIZE",
        Some("LOCAL_RANK"),
        Some("LOCAL_WORLD_SIZE"),
    ),
    (
        "openmpi",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        Some("OMPI_COMM_WORLD_LOCAL_RANK"),
        Some("OMPI_COMM_WORLD_LOCAL_SIZE"),
    ),
    ("pmi", "PMI_RANK", "PMI_SIZE", None, None),
    (
        "slurm",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        Some("SLURM_LOCALID"),
        None,
    ),
];

/// [`detect`] without the rank's range check.
fn detect_unchecked(get: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>> {
    let num = |var: &str| -> Result<Option<usize>> {
        match get(var) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| bad(var, &v, "not a non-negative integer")),
        }
    };
    for (source, rank_var, world_var, local_var, local_world_var) in FAMILIES {
        let (rank, world) = (num(rank_var)?, num(world_var)?);
        let (rank, world) = match (rank, world) {
            (None, None) => continue,
            (Some(r), Some(w)) => (r, w),
            (Some(_), None) => {
                return Err(bad(
                    world_var,
                    "",
                    &format!("missing while {rank_var} is set"),
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    rank_var,
                    "",
                    &format!("missing while {world_var} is set"),
                ))
            }
        };
        if world == 0 {
            return Err(bad(world_var, "0", "a world needs at least one rank"));
        }
        let local_rank = local_var.map(num).transpose()?.flatten();
        let local_world = local_world_var.map(num).transpose()?.flatten();
        if let (Some(lr), Some(lw)) = (local_rank, local_world) {
            if lr >= lw || lw > world {
                return Err(bad(
                    local_var.unwrap_or(rank_var),
                    &lr.to_string(),
                    "contradicts the local world size",
                ));
            }
        }
        let store = match get("FERROCOLL_STORE") {
            Some(s) => {
                if !s.contains(':') {
                    return Err(bad(
                        "FERROCOLL_STORE",
                        &s,
                        "expected host:port, tcp://host:port, etcd://host:port/prefix or \
                         file:DIR",
                    ));
                }
                s
            }
            None => {
                let addr = get("MASTER_ADDR").ok_or_else(|| {
                    bad(
                        "FERROCOLL_STORE",
                        "",
                        "not set (nor MASTER_ADDR/MASTER_PORT)",
                    )
                })?;
                let port = num("MASTER_PORT")?
                    .ok_or_else(|| bad("MASTER_PORT", "", "missing while MASTER_ADDR is set"))?;
                // torchrun's agent serves its own store on MASTER_PORT: use the next port.
                let port = match source {
                    "torchrun" => port.checked_add(1),
                    _ => Some(port),
                }
                .filter(|&p| p <= u16::MAX as usize)
                .ok_or_else(|| bad("MASTER_PORT", &port.to_string(), "not a TCP port"))?;
                format!("{addr}:{port}")
            }
        };
        return Ok(Some(LaunchEnv {
            rank,
            world,
            local_rank,
            local_world,
            store,
            source,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Option<LaunchEnv>> {
        detect(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn families_in_order() {
        assert_eq!(from(&[]).unwrap(), None);
        let e = from(&[
            ("FERROCOLL_RANK", "1"),
            ("FERROCOLL_WORLD_SIZE", "4"),
            ("FERROCOLL_STORE", "h:5"),
            ("RANK", "3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.rank, e.world, e.source, e.store.as_str()),
            (1, 4, "ferrocoll", "h:5")
        );
        let t = from(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "0"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.source, t.store.as_str(), t.local_world),
            ("torchrun", "10.0.0.1:29501", Some(2))
        );
        let m = from(&[
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("FERROCOLL_STORE", "a:1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(m.source, "openmpi");
        let s = from(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "7000"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.source, s.store.as_str(), s.local_rank),
            ("slurm", "n1:7000", Some(1))
        );
        let p = from(&[
            ("PMI_RANK", "0"),
            ("PMI_SIZE", "1"),
            ("FERROCOLL_STORE", "x:2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(p.source, "pmi");
    }

    #[test]
    fn errors_name_the_variable() {
        let msg = |pairs: &[(&str, &str)]| from(pairs).unwrap_err().to_string();
        assert!(msg(&[("FERROCOLL_RANK", "1")]).contains("FERROCOLL_WORLD_SIZE"));
        assert!(msg(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("RANK"));
        assert!(msg(&[
            ("RANK", "4"),
            ("WORLD_SIZE", "4"),
            ("FERROCOLL_STORE", "h:1")
        ])
        .contains("RANK"));
        assert!(msg(&[("PMI_RANK", "0"), ("PMI_SIZE", "2")]).contains("FERROCOLL_STORE"));
        assert!(
            msg(&[("PMI_RANK", "0"), ("PMI_SIZE", "2"), ("MASTER_ADDR", "h")])
                .contains("MASTER_PORT")
        );
        assert!(msg(&[
            ("PMI_RANK", "0"),
            ("PMI_SIZE", "2"),
            ("FERROCOLL_STORE", "nocolon")
        ])
        .contains("FERROCOLL_STORE"));
        assert!(msg(&[
            ("LOCAL_RANK", "3"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("WORLD_SIZE", "4"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1")
        ])
        .contains("LOCAL_RANK"));
        // torchrun's next port overflowed (a panic with overflow checks, port 0 without).
        for port in ["18446744073709551615", "65535", "65536"] {
            let m = msg(&[
                ("RANK", "0"),
                ("WORLD_SIZE", "1"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", port),
            ]);
            assert!(
                m.contains("MASTER_PORT") && m.contains("not a TCP port"),
                "{m}"
            );
        }
    }
}

#[cfg(test)]
mod join_tests {
    use super::*;

    #[test]
    fn a_replacement_needs_the_store_variable() {
        let e = store_from(|_| None).unwrap_err();
        assert!(
            e.to_string().contains("FERROCOLL_STORE") && e.to_string().contains("missing"),
            "{e}"
        );
        let e = store_from(|_| Some("nowhere".into())).unwrap_err();
        assert!(e.to_string().contains("host:port"), "{e}");
        assert_eq!(store_from(|_| Some("h:1".into())).unwrap(), "h:1");
    }
}
