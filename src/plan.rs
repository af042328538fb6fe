//! Choosing the algorithm of a call. Until the cost model (issue 7) exists, a size rule
//! decides; `FERROCOLL_ALGO` forces one, and a forced algorithm that does not implement the
//! collective is an error, never a silent substitute.

use crate::algo::{by_name, Algorithm};
use crate::config::{AlgoChoice, Config};
use crate::error::{Error, Result};
use crate::schedule::{CollSpec, Collective};

/// The algorithm for `spec` whose payload is `bytes` bytes per rank.
pub fn choose(cfg: &Config, spec: &CollSpec, bytes: usize) -> Result<&'static dyn Algorithm> {
    if spec.kind == Collective::SendRecv {
        // Point-to-point has no algorithm; the engine builds its one-step plan itself.
        return Err(Error::Internal("send/recv has no algorithm".into()));
    }
    if let AlgoChoice::Forced(name) = &cfg.algo {
        let algo = by_name(name)
            .ok_or_else(|| Error::Internal(format!("unregistered algorithm {name}")))?;
        if !algo.supports(spec.kind) {
            return Err(Error::AlgoNotSupported {
                algo: algo.name(),
                collective: spec.kind,
            });
        }
        return Ok(algo);
    }
    let preferred: &[&str] = match spec.kind {
        Collective::AllReduce if bytes <= 4 << 10 => &["direct"],
        Collective::AllReduce if bytes <= 256 << 10 => &["halving_doubling", "ring"],
        Collective::AllReduce => &["ring"],
        Collective::AllGather | Collective::ReduceScatter if bytes <= 4 << 10 => &["direct"],
        Collective::AllGather | Collective::ReduceScatter => &["ring"],
        Collective::Broadcast | Collective::Reduce if bytes <= 32 << 10 || spec.world <= 2 => {
            &["direct"]
        }
        Collective::Broadcast | Collective::Reduce => &["tree", "ring"],
        _ => &["direct"],
    };
    preferred
        .iter()
        .filter_map(|n| by_name(n))
        .find(|a| a.supports(spec.kind))
        .ok_or_else(|| Error::Internal(format!("no algorithm for {}", spec.kind)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
                assert!(choose(&cfg, &spec, bytes).unwrap().supports(kind));
            }
        }
    }
}
