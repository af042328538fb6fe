//! Surviving failures (see `crate::ft` for detection, revocation and agreement):
//! [`Communicator::revoke`], [`Communicator::shrink`] (to the agreed survivors),
//! [`Communicator::shrink_excluding`] (NCCL's `ncclCommShrink` with an exclusion list),
//! and growing back: [`Communicator::grow`] on the members, [`Communicator::join`] in a
//! replacement process.
//!
//! Every communicator made here meets through the job's store under a fresh key prefix, so
//! the store must outlive the failure: an external one (`FERROCOLL_STORE=tcp://…` or
//! `etcd://…`), not rank 0's.
//!
//! Joining: a replacement takes a ticket (`fc/elastic/tickets`, a counter) and waits for
//! `fc/elastic/join/<ticket>`. A `grow` on the members decides, by compare-and-set, which
//! tickets it admits (those taken so far and not yet admitted), gives them the next ranks,
//! and writes each ticket's admission (prefix, rank, world); then members and replacements
//! meet under the new prefix. Training state is the program's to send (e.g. a broadcast from
//! rank 0 on the grown communicator).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocoll_transports::composite::CompositeEndpoint;

use super::split::Bootstrap;
use super::Communicator;
use crate::bootstrap::rendezvous::{connect_ranks, Control, Peers};
use crate::bootstrap::{Store, StoreError};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::topology::Topology;

const TICKETS: &str = "fc/elastic/tickets";
const ADMITTED: &str = "fc/elastic/admitted";

fn admission_key(ticket: i64) -> String {
    format!("fc/elastic/join/{ticket}")
}

/// The value of `key` if it is set now.
fn peek(store: &dyn Store, key: &str) -> Result<Option<Vec<u8>>> {
    match store.get_timeout(key, Duration::ZERO) {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::Timeout { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn counter(store: &dyn Store, key: &str) -> Result<i64> {
    match peek(store, key)? {
        Some(v) => Ok(crate::bootstrap::parse_counter(key, &v)?),
        None => Ok(0),
    }
}

fn protocol(what: String) -> Error {
    Error::Bootstrap(StoreError::Protocol(what))
}

fn ranks_csv(r: &[usize]) -> String {
    r.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// Most ranks a communicator may have: ranks travel as u32 in frame headers and hellos.
const MAX_WORLD: usize = u32::MAX as usize;

/// A grow decision as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GrowDecision {
    /// Tickets admitted before this grow.
    pub(crate) from: i64,
    /// Tickets admitted after it: this grow admits tickets `from + 1 ..= to`.
    pub(crate) to: i64,
    /// The key prefix the grown communicator meets under.
    pub(crate) prefix: String,
    /// The grown communicator's world size.
    pub(crate) world: usize,
}

/// Parses a grow decision (`from\nto\nprefix`, as `grow` proposes it) for a communicator of
/// `world` ranks; a decision that admits a negative number of tickets, or more ranks than
/// fit a world, is a store protocol error.
pub(crate) fn parse_grow(v: &[u8], world: usize) -> Result<GrowDecision> {
    let text = String::from_utf8_lossy(v);
    let bad = || protocol(format!("grow decision {text:?}"));
    let mut parts = text.split('\n');
    let from: i64 = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let to: i64 = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let prefix = parts
        .next()
        .filter(|p| p.starts_with("fc/"))
        .ok_or_else(bad)?
        .to_string();
    if from < 0 || to < from {
        return Err(bad());
    }
    let world = usize::try_from(to - from)
        .ok()
        .and_then(|joining| world.checked_add(joining))
        .filter(|&w| w <= MAX_WORLD)
        .ok_or_else(bad)?;
    Ok(GrowDecision {
        from,
        to,
        prefix,
        world,
    })
}

/// Parses a replacement's admission (`prefix\nrank\nworld`, as `grow` writes it): the prefix
/// it meets under, its rank and the grown world size.
pub(crate) fn parse_admission(v: &[u8]) -> Result<(String, usize, usize)> {
    let text = String::from_utf8_lossy(v);
    let bad = || protocol(format!("admission {text:?}"));
    let mut parts = text.split('\n');
    let prefix = parts
        .next()
        .filter(|p| p.starts_with("fc/"))
        .ok_or_else(bad)?
        .to_string();
    let rank: usize = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let world: usize = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    if rank >= world || world > MAX_WORLD {
        return Err(bad());
    }
    Ok((prefix, rank, world))
}

impl Communicator {
    /// A communicator over links made through the job's store; starts its failure detector
    /// unless `cfg.heartbeat_timeout` is zero.
    pub(super) fn assemble(
        links: (CompositeEndpoint, Peers, Control),
        cfg: Config,
        given: Option<Topology>,
        discovered: Option<Topology>,
        boot: Bootstrap,
    ) -> Result<Communicator> {
        let (ep, peers, control) = links;
        let hb = cfg.heartbeat_timeout;
        let mut c = Communicator::from_endpoint_on(Box::new(ep), cfg, given, discovered)?;
        c.peers = Some(peers);
        if !hb.is_zero() {
            let g = crate::ft::Guard::start(control, hb, boot.job.clone(), boot.prefix.clone())?;
            let shared = Arc::downgrade(&c.engine.shared_arc());
            g.health().set_hook(Box::new(move |e| {
                if let Some(s) = shared.upgrade() {
                    s.revoke(e);
                }
            }));
            c.engine.set_health(g.health().clone());
            c.ft = Some(g);
        }
        c.boot = Some(boot);
        Ok(c)
    }

    /// Rank `rank` of a new communicator of this job over `olds` (ranks of this one), made
    /// under `prefix`; it plans on their part of this communicator's topology.
    pub(super) fn member_of(
        &self,
        boot: &Bootstrap,
        prefix: String,
        rank: usize,
        olds: &[usize],
        mut cfg: Config,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Communicator> {
        let store = &boot.job.store;
        let links = connect_ranks(
            store.store(),
            store.route(),
            &prefix,
            rank,
            olds.len(),
            &cfg,
            cancelled,
        )?;
        let topo = self.topology().subset(olds)?;
        cfg.topo_dump_file = None;
        Communicator::assemble(links, cfg, Some(topo), None, boot.child(prefix))
    }

    fn bootstrap(&self) -> Result<&Bootstrap> {
        self.boot.as_ref().ok_or(Error::NoStore)
    }

    /// Revokes this communicator on every rank (ULFM's `MPI_Comm_revoke`, NCCL's
    /// `ncclCommRevoke`): this rank's pending and later calls fail with [`Error::Revoked`],
    /// and so do every other rank's within the heartbeat period. Never blocks. Then
    /// [`Communicator::shrink`] makes a communicator over the ranks that are still alive.
    pub fn revoke(&self) {
        match &self.ft {
            Some(g) => g.health().revoke(self.rank, &[]),
            None => self.engine.shared().revoke(Error::Revoked {
                rank: self.rank,
                by: self.rank,
                failed: Vec::new(),
            }),
        }
    }

    /// After a failure: a communicator over the survivors (every rank that is alive calls
    /// it). It revokes this communicator if that has not happened, waits for the survivors'
    /// agreement (see `crate::ft`), and connects them with the same transports: dense new
    /// ranks in the old ranks' order, the topology restricted to them, new plans. A member
    /// that fails meanwhile moves the agreement to its next epoch, and the shrink follows.
    ///
    /// Errors: [`Error::Excluded`] when the survivors went on without this rank,
    /// [`Error::NoStore`] for a communicator without a store or failure detector
    /// (`FERROCOLL_HEARTBEAT_TIMEOUT=0`), a store error when the store is gone.
    pub fn shrink(&self) -> Result<Communicator> {
        let boot = self.bootstrap()?;
        let h = self.ft.as_ref().ok_or(Error::NoStore)?.health().clone();
        if !h.is_revoked() {
            h.revoke(self.rank, &[]);
        }
        let cfg = self.config().clone();
        loop {
            let d = h.wait_decision(cfg.timeout)?;
            let Some(rank) = d.members.iter().position(|&m| m == self.rank) else {
                return Err(Error::Excluded {
                    rank: self.rank,
                    epoch: d.epoch,
                    survivors: d.members,
                });
            };
            let moved_on = || h.epoch() != d.epoch;
            let built = self.member_of(
                boot,
                d.prefix.clone(),
                rank,
                &d.members,
                cfg.clone(),
                &moved_on,
            );
            match built {
                Ok(c) => {
                    h.finish();
                    tracing::info!(
                        rank = self.rank,
                        "shrunk: world {} -> {} (new rank {rank})",
                        self.world,
                        d.members.len()
                    );
                    return Ok(c);
                }
                Err(e) => {
                    // A member that failed while the next communicator formed is found by
                    // this communicator's detector, which moves the agreement on: wait for
                    // that, then follow it.
                    let until = Instant::now() + 2 * h.heartbeat_timeout();
                    while !moved_on() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if !moved_on() {
                        return Err(e);
                    }
                    tracing::warn!(
                        rank = self.rank,
                        "shrink of epoch {} failed ({e}); retrying",
                        d.epoch
                    );
                }
            }
        }
    }

    /// NCCL's `ncclCommShrink`: a communicator over every rank of this one except `exclude`,
    /// made by the ranks that remain (excluded ranks do not call it). Every caller must pass
    /// the same set: the first caller's set is decided by compare-and-set in the store, and a
    /// caller with another set gets [`Error::ShrinkMismatch`], as do the callers waiting for
    /// it; no two communicators come out of one shrink.
    pub fn shrink_excluding(&self, exclude: &[usize]) -> Result<Communicator> {
        let boot = self.bootstrap()?;
        let mut ex = exclude.to_vec();
        ex.sort_unstable();
        ex.dedup();
        if let Some(&bad) = ex.iter().find(|&&r| r >= self.world) {
            return Err(Error::PeerOutOfRange {
                peer: bad,
                world: self.world,
            });
        }
        let olds: Vec<usize> = (0..self.world).filter(|r| !ex.contains(r)).collect();
        let Some(rank) = olds.iter().position(|&r| r == self.rank) else {
            return Err(Error::Excluded {
                rank: self.rank,
                epoch: 0,
                survivors: olds,
            });
        };
        let n = boot.shrinks.fetch_add(1, Ordering::Relaxed);
        let base = format!("{}shrink{n}/", boot.prefix);
        let store = boot.job.store.store();
        let mine = ranks_csv(&ex);
        let proposal = format!("{}:{mine}", self.rank);
        let decided = store.compare_set(&format!("{base}decision"), None, proposal.as_bytes())?;
        let decided = String::from_utf8_lossy(&decided).into_owned();
        let (by, theirs) = decided
            .split_once(':')
            .ok_or_else(|| protocol(format!("shrink decision {decided:?}")))?;
        let parse =
            |s: &str| -> Vec<usize> { s.split(',').filter_map(|x| x.parse().ok()).collect() };
        let mismatch = |peer: usize, theirs: Vec<usize>| Error::ShrinkMismatch {
            rank: self.rank,
            peer,
            mine: ex.clone(),
            theirs,
        };
        if theirs != mine {
            store.set(&format!("{base}ok/{}", self.rank), b"mismatch")?;
            return Err(mismatch(by.parse().unwrap_or(self.rank), parse(theirs)));
        }
        store.set(&format!("{base}ok/{}", self.rank), mine.as_bytes())?;
        for &r in &olds {
            let v = store.get_timeout(&format!("{base}ok/{r}"), self.config().timeout)?;
            if v != mine.as_bytes() {
                return Err(mismatch(r, Vec::new()));
            }
        }
        if let Some(g) = &self.ft {
            g.health().finish();
        }
        let mut cfg = self.config().clone();
        cfg.topo_dump_file = None;
        self.member_of(boot, format!("{base}c/"), rank, &olds, cfg, &|| false)
    }

    /// How many replacement processes wait to join ([`Communicator::join`]). Each rank reads
    /// it from the store on its own: combine the answers (e.g. an all-reduce of the maximum)
    /// before every rank calls [`Communicator::grow`].
    pub fn joiners_waiting(&self) -> Result<usize> {
        let store = self.bootstrap()?.job.store.store();
        let waiting = counter(store, TICKETS)? - counter(store, ADMITTED)?;
        Ok(usize::try_from(waiting).unwrap_or(0))
    }

    /// Admits the replacements waiting to join, collectively (every member calls it at the
    /// same point of its program): they get the ranks after this communicator's, and the
    /// returned communicator spans the members and them. `Ok(None)` when nobody was waiting
    /// (every member gets `None`: the admission is decided once, in the store).
    pub fn grow(&self) -> Result<Option<Communicator>> {
        let boot = self.bootstrap()?;
        let store = boot.job.store.store();
        let n = boot.grows.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}grow{n}/decision", boot.prefix);
        let (from, to) = (counter(store, ADMITTED)?, counter(store, TICKETS)?);
        let prefix = crate::ft::fresh_prefix(store)?;
        let proposal = format!("{from}\n{to}\n{prefix}");
        let v = store.compare_set(&key, None, proposal.as_bytes())?;
        let GrowDecision {
            from,
            to,
            prefix,
            world,
        } = parse_grow(&v, self.world)?;
        if to == from {
            return Ok(None);
        }
        for (i, t) in (from + 1..=to).enumerate() {
            let admit = format!("{prefix}\n{}\n{world}", self.world + i);
            store.set(&admission_key(t), admit.as_bytes())?;
        }
        store.set(ADMITTED, to.to_string().as_bytes())?;
        let t0 = Instant::now();
        let cfg = self.config().clone();
        let store_ = &boot.job.store;
        let links = connect_ranks(
            store_.store(),
            store_.route(),
            &prefix,
            self.rank,
            world,
            &cfg,
            &|| false,
        )?;
        let hosts = Topology::from_hosts(&links.1.hosts, &links.1.cores, &links.1.cpus);
        let mut cfg = cfg;
        cfg.topo_file = None;
        cfg.topo_dump_file = None;
        let c = Communicator::assemble(links, cfg, None, Some(hosts), boot.child(prefix))?;
        tracing::info!(
            rank = self.rank,
            "grew: world {} -> {world} in {:?}",
            self.world,
            t0.elapsed()
        );
        Ok(Some(c))
    }

    /// A replacement process joins a running job through its store (`store`, a
    /// `FERROCOLL_STORE` value; the secret is `cfg.secret`): it waits, up to `cfg.timeout`,
    /// until the members call [`Communicator::grow`], and returns its rank in the grown
    /// communicator. [`Communicator::join_from_env`] reads both from the environment.
    pub fn join(store: &str, cfg: Config) -> Result<Communicator> {
        crate::init_logging(cfg.log_level);
        let meeting = crate::bootstrap::rendezvous::client_store(store, &cfg)?;
        let st = meeting.store();
        let ticket = st.add(TICKETS, 1)?;
        let v = st.get_timeout(&admission_key(ticket), cfg.timeout)?;
        let (prefix, rank, world) = parse_admission(&v)?;
        let links = connect_ranks(st, meeting.route(), &prefix, rank, world, &cfg, &|| false)?;
        let hosts = Topology::from_hosts(&links.1.hosts, &links.1.cores, &links.1.cpus);
        let mut cfg = cfg;
        cfg.topo_file = None;
        cfg.topo_dump_file = None;
        let boot = Bootstrap::new(meeting, None).child(prefix);
        Communicator::assemble(links, cfg, None, Some(hosts), boot)
    }

    /// [`Communicator::join`] with the store from `FERROCOLL_STORE` and the configuration
    /// from the environment.
    pub fn join_from_env() -> Result<Communicator> {
        let cfg = Config::from_env()?;
        let store = crate::config::launcher::store_from_env()?;
        Communicator::join(&store, cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grow decisions and admissions come from the store: counts that overflow or worlds
    /// beyond the wire's u32 ranks are protocol errors, never a panic or a huge allocation.
    #[test]
    fn grow_decisions_and_admissions_are_bounded() {
        let g = parse_grow(b"3\n5\nfc/g7/", 4).unwrap();
        assert_eq!(
            (g.from, g.to, g.world, g.prefix.as_str()),
            (3, 5, 6, "fc/g7/")
        );
        assert_eq!(parse_grow(b"5\n5\nfc/g7/", 4).unwrap().world, 4);
        let max = i64::MAX;
        for bad in [
            format!("-1\n{max}\nfc/x/"),
            format!("0\n{max}\nfc/x/"),
            "5\n3\nfc/x/".to_string(),
            "1\n2\nother/".to_string(),
            "1\n2".to_string(),
        ] {
            let e = parse_grow(bad.as_bytes(), 4).unwrap_err();
            let ok = matches!(&e, Error::Bootstrap(StoreError::Protocol(m)) if m.contains("grow"));
            assert!(ok, "{bad:?}: {e:?}");
        }
        assert_eq!(
            parse_admission(b"fc/g7/\n4\n6").unwrap(),
            ("fc/g7/".into(), 4, 6)
        );
        for bad in [
            "fc/g7/\n6\n6",
            "fc/g7/\n0\n18446744073709551615",
            "x/\n0\n1",
            "fc/\n0",
        ] {
            assert!(parse_admission(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
