//! Transport choice and endpoint building, through the transports' factories
//! (`ferrocoll_transports::plugin`).
//!
//! 1. [`prepare`]: the candidate transports in preference order (`FERROCOLL_TRANSPORT`, or
//!    `auto`), those not available here skipped with one INFO line each (a list of one that
//!    is unavailable is an error that says why); each prepared, its address blob published in
//!    the rank's record.
//! 2. [`choose`]: for every pair of ranks, the first transport in the preference order that
//!    both published and that reaches across them (a same-host transport only within a
//!    host). Every rank computes the whole matrix from the same records, so the two ends of
//!    a pair always agree, and the probe can show every pair.
//! 3. [`connect`]: each prepared transport connects to the peers routed to it, in the
//!    preference order on every rank (so no two ranks wait on each other in opposite
//!    orders), and the endpoints are composed into one [`CompositeEndpoint`].

use ferrocoll_transports::composite::{CompositeEndpoint, Part};
use ferrocoll_transports::plugin::{
    self, AddressBlob, Availability, PreparedTransport, SetupCtx, SetupError, TransportFactory,
};

use crate::config::{Config, TransportChoice};
use crate::error::{Error, Result};

/// One transport prepared on this rank.
pub(super) struct Offer {
    /// Its name.
    pub name: &'static str,
    /// Whether it reaches other hosts.
    pub crosses_hosts: bool,
    /// The prepared resources, until `connect`.
    pub prepared: Box<dyn PreparedTransport>,
}

/// The transports this rank offers, in preference order. Names of `FERROCOLL_TRANSPORT`
/// that are not available are skipped (INFO); an error when none is left, saying why each
/// was refused.
pub(super) fn prepare(cfg: &Config, ctx: &SetupCtx) -> Result<Vec<Offer>> {
    let (names, auto): (Vec<String>, bool) = match &cfg.transport {
        TransportChoice::Auto => (
            plugin::registry()
                .iter()
                .map(|f| f.name().to_string())
                .collect(),
            true,
        ),
        TransportChoice::Prefer(list) => (list.clone(), false),
    };
    let mut offers = Vec::new();
    let mut refused: Vec<SetupError> = Vec::new();
    for name in &names {
        let f: Box<dyn TransportFactory> = match plugin::factory(name) {
            Ok(f) => f,
            Err(e) => {
                tracing::info!("transport {name} skipped: {e}");
                refused.push(e);
                continue;
            }
        };
        if auto && f.crosses_hosts() && !f.auto_between_hosts() {
            continue;
        }
        if let Availability::Unavailable(why) = f.availability() {
            tracing::info!("transport {name} skipped: {why}");
            refused.push(SetupError::Unavailable {
                transport: f.name(),
                why,
            });
            continue;
        }
        offers.push(Offer {
            name: f.name(),
            crosses_hosts: f.crosses_hosts(),
            prepared: f.prepare(ctx)?,
        });
    }
    if offers.is_empty() {
        return Err(match refused.len() {
            1 => refused.remove(0).into(),
            _ => Error::Config {
                var: "FERROCOLL_TRANSPORT".into(),
                value: cfg.transport.spec(),
                reason: format!(
                    "no transport of the list is available: {}",
                    refused
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
        });
    }
    Ok(offers)
}

/// One record line per offer: `name hex(blob)`.
pub(super) fn offers_line(offers: &[Offer]) -> String {
    offers
        .iter()
        .map(|o| format!("{}={}", o.name, hex(&o.prepared.address().0)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The offers of rank `r` as published (`name=hex …`), in its preference order.
pub(super) fn parse_offers(r: usize, line: &str) -> Result<Vec<(String, AddressBlob)>> {
    let bad = |detail: String| {
        Error::from(SetupError::BadAddress {
            transport: "any",
            peer: r,
            detail,
        })
    };
    let mut out = Vec::new();
    for item in line.split_whitespace() {
        let (name, h) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("offer {item:?} is not name=hex")))?;
        let blob = unhex(h).ok_or_else(|| bad(format!("offer {name} is not hex")))?;
        out.push((name.to_string(), AddressBlob(blob)));
    }
    Ok(out)
}

/// The transport of every pair of ranks: `matrix[a][b]` (`"self"` on the diagonal). A pair
/// uses the first transport of `order` that both offer, and that crosses hosts unless both
/// ranks are on one host. `order` is this rank's preference order; `prefs` are every rank's
/// `FERROCOLL_TRANSPORT`, which must agree.
pub(super) fn choose(
    order: &[(&'static str, bool)],
    prefs: &[String],
    hosts: &[String],
    offers: &[Vec<(String, AddressBlob)>],
) -> Result<Vec<Vec<&'static str>>> {
    if let Some(r) = prefs.iter().position(|p| *p != prefs[0]) {
        return Err(Error::Config {
            var: "FERROCOLL_TRANSPORT".into(),
            value: prefs[r].clone(),
            reason: format!(
                "rank {r} has FERROCOLL_TRANSPORT={}, rank 0 has {}: every rank must use one list",
                prefs[r], prefs[0]
            ),
        });
    }
    let n = hosts.len();
    let offers_name = |r: usize, name: &str| offers[r].iter().any(|(o, _)| o == name);
    let mut m = vec![vec!["self"; n]; n];
    for a in 0..n {
        for b in 0..n {
            if a == b {
                continue;
            }
            let pick = order.iter().find(|(name, crosses)| {
                (*crosses || hosts[a] == hosts[b]) && offers_name(a, name) && offers_name(b, name)
            });
            m[a][b] = match pick {
                Some((name, _)) => name,
                None => {
                    let list = |r: usize| {
                        offers[r]
                            .iter()
                            .map(|(o, _)| o.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    return Err(Error::Config {
                        var: "FERROCOLL_TRANSPORT".into(),
                        value: prefs[0].clone(),
                        reason: format!(
                            "no transport reaches rank {b} (host {}, offers {}) from rank {a} \
                             (host {}, offers {})",
                            hosts[b],
                            list(b),
                            hosts[a],
                            list(a),
                        ),
                    });
                }
            };
        }
    }
    Ok(m)
}

/// Connects `rank`'s links: each offer to the peers whose pair `matrix` routes to it, in
/// offer order; offers no peer uses are dropped (their resources freed).
pub(super) fn connect(
    rank: usize,
    offers: Vec<Offer>,
    matrix: &[Vec<&'static str>],
    published: &[Vec<(String, AddressBlob)>],
) -> Result<CompositeEndpoint> {
    let world = matrix.len();
    let mut parts = Vec::new();
    let mut route = vec![None; world];
    for offer in offers {
        let peers: Vec<(usize, AddressBlob)> = (0..world)
            .filter(|&p| p != rank && matrix[rank][p] == offer.name)
            .map(|p| {
                let blob = published[p]
                    .iter()
                    .find(|(n, _)| n == offer.name)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_else(|| AddressBlob(Vec::new()));
                (p, blob)
            })
            .collect();
        if peers.is_empty() {
            continue;
        }
        let endpoint = offer.prepared.connect(&peers)?;
        for (p, _) in &peers {
            route[*p] = Some(parts.len());
        }
        parts.push(Part {
            name: offer.name,
            endpoint,
        });
    }
    Ok(CompositeEndpoint::new(rank, world, parts, route))
}

/// The names and host reach of `offers`, in order.
pub(super) fn order_of(offers: &[Offer]) -> Vec<(&'static str, bool)> {
    offers.iter().map(|o| (o.name, o.crosses_hosts)).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(list: &[&str]) -> Vec<(String, AddressBlob)> {
        list.iter()
            .map(|n| (n.to_string(), AddressBlob::new(n, 1, b"x")))
            .collect()
    }

    #[test]
    fn pairs_take_the_first_transport_both_offer_that_reaches() {
        let order = [("shm", false), ("ofi", true), ("tcp", true)];
        let hosts: Vec<String> = ["a", "a", "b"].iter().map(|s| s.to_string()).collect();
        let prefs = vec!["shm,ofi,tcp".to_string(); 3];
        let all = vec![
            offers(&["shm", "ofi", "tcp"]),
            offers(&["shm", "tcp"]),
            offers(&["shm", "ofi", "tcp"]),
        ];
        let m = choose(&order, &prefs, &hosts, &all).unwrap();
        assert_eq!(m[0], ["self", "shm", "ofi"]);
        assert_eq!(m[1], ["shm", "self", "tcp"]);
        assert_eq!(m[2], ["ofi", "tcp", "self"]);
        for (a, row) in m.iter().enumerate() {
            for (b, t) in row.iter().enumerate() {
                assert_eq!(*t, m[b][a], "pair {a},{b} is not symmetric");
            }
        }
    }

    #[test]
    fn no_common_transport_and_different_lists_are_errors() {
        let hosts: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let e = choose(
            &[("shm", false)],
            &vec!["shm".to_string(); 2],
            &hosts,
            &[offers(&["shm"]), offers(&["shm"])],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no transport reaches rank 1"), "{e}");
        let e = choose(
            &[("tcp", true)],
            &["tcp".to_string(), "shm,tcp".to_string()],
            &hosts,
            &[offers(&["tcp"]), offers(&["tcp"])],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("rank 1 has FERROCOLL_TRANSPORT=shm,tcp"),
            "{e}"
        );
    }

    #[test]
    fn offers_round_trip_and_garbage_is_refused() {
        let line = "tcp=0374637001 shm=0373686d01";
        let o = parse_offers(3, line).unwrap();
        assert_eq!(o[0].0, "tcp");
        assert_eq!(o[0].1.transport(), Some("tcp"));
        assert_eq!(o[1].1.open("shm", 1, 3).unwrap(), b"");
        for bad in ["tcp", "tcp=0g", "tcp=123"] {
            let e = parse_offers(3, bad).unwrap_err();
            assert!(e.to_string().contains("rank 3"), "{bad}: {e}");
        }
    }
}
