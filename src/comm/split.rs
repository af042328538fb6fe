//! Communicators made without launcher variables: from a [`UniqueId`] (NCCL's
//! `ncclGetUniqueId` + `ncclCommInitRank`) and by splitting another communicator
//! ([`Communicator::split_by`], NCCL's `ncclCommSplit`).
//!
//! Both meet through a rendezvous store. A unique id names a store that the process which
//! made the id serves, plus a random 32-byte secret: the store and its clients prove to each
//! other that they hold it (it never crosses the wire), so a stray process cannot join. The children of a split meet through their parent's store,
//! under keys of their own (`<parent prefix>split<n>/<color>/`), so one store serves a whole
//! tree of communicators; every communicator of the tree holds the store (and, on the rank
//! that serves it, the server) alive.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Communicator;
use crate::bootstrap::rendezvous::{ipv4_interfaces, MeetingStore};
use crate::bootstrap::TcpStoreServer;
use crate::config::Config;
use crate::error::{Error, Result};

/// Bytes of an encoded [`UniqueId`] (NCCL's `NCCL_UNIQUE_ID_BYTES`).
pub const UNIQUE_ID_BYTES: usize = 128;

const MAGIC: &[u8; 4] = b"FCID";
const VERSION: u8 = 2;
/// Bytes of the random secret a unique id carries.
pub const UNIQUE_ID_SECRET_BYTES: usize = 32;
/// Where the secret sits in the encoded id.
const SECRET_AT: usize = 32;

/// Where the ranks of a job meet: a store address, a random token naming the job, and the
/// job's random secret, made by one process ([`UniqueId::new`], which also starts serving the
/// store) and handed to every rank by any means (a file, MPI, an environment variable), which
/// then calls [`Communicator::from_unique_id`]. Encodes to [`UNIQUE_ID_BYTES`] opaque bytes.
///
/// Whoever holds the id may join the job: hand it out as you would a password. `{:?}` never
/// prints the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UniqueId {
    /// The store's address.
    pub store: SocketAddr,
    /// The job's random token (which store server of this process the id names).
    pub token: u64,
    /// The job's random secret: the store and its clients prove to each other that they hold
    /// it.
    pub secret: [u8; UNIQUE_ID_SECRET_BYTES],
}

impl std::fmt::Debug for UniqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniqueId")
            .field("store", &self.store)
            .field("token", &format_args!("{:#018x}", self.token))
            .field("secret", &"<32 bytes>")
            .finish()
    }
}

/// Stores served by this process for unique ids it made, by token, until a rank 0 of this
/// process takes its server (or the process exits: a launcher that only makes the id keeps
/// serving for its children).
static SERVED: Mutex<Vec<(u64, TcpStoreServer)>> = Mutex::new(Vec::new());

pub(super) fn served() -> std::sync::MutexGuard<'static, Vec<(u64, TcpStoreServer)>> {
    SERVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The address a new store advertises: `FERROCOLL_SOCKET_IFNAME`'s, else the first IPv4
/// interface that is not loopback (like NCCL), else loopback.
fn advertised_ip(cfg: &Config) -> Result<IpAddr> {
    let ifs = ipv4_interfaces();
    if let Some(name) = &cfg.socket_ifname {
        return ifs
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, ip)| ip.into())
            .ok_or_else(|| Error::Config {
                var: "FERROCOLL_SOCKET_IFNAME".into(),
                value: name.clone(),
                reason: "no such interface with an IPv4 address".into(),
            });
    }
    let skip = |n: &str| n.starts_with("docker") || n.starts_with("virbr");
    Ok(ifs
        .into_iter()
        .find(|(n, ip)| !ip.is_loopback() && !skip(n))
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |(_, ip)| ip.into()))
}

impl UniqueId {
    /// Makes a new id and starts serving its store in this process, on the address of
    /// `FERROCOLL_SOCKET_IFNAME` (from `cfg`) or of the first non-loopback interface, at a
    /// free port.
    pub fn new(cfg: &Config) -> Result<UniqueId> {
        let ip = advertised_ip(cfg)?;
        let token = crate::bootstrap::rendezvous::random_token() | 1;
        let mut secret = [0u8; UNIQUE_ID_SECRET_BYTES];
        let drawn = ferrocoll_transports::auth::random_bytes(UNIQUE_ID_SECRET_BYTES)
            .map_err(crate::bootstrap::StoreError::Io)?;
        secret.copy_from_slice(&drawn);
        let server = TcpStoreServer::bind_with_secret(SocketAddr::new(ip, 0), Some(&secret))?;
        let id = UniqueId {
            store: server.local_addr(),
            token,
            secret,
        };
        served().push((token, server));
        Ok(id)
    }

    /// The id as [`UNIQUE_ID_BYTES`] bytes: magic `FCID`, version, address family, port,
    /// address, token, secret, zeros.
    pub fn to_bytes(&self) -> [u8; UNIQUE_ID_BYTES] {
        let mut b = [0u8; UNIQUE_ID_BYTES];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        let ip = match self.store.ip() {
            IpAddr::V4(v4) => {
                b[5] = 4;
                v4.to_ipv6_mapped().octets()
            }
            IpAddr::V6(v6) => {
                b[5] = 6;
                v6.octets()
            }
        };
        b[6..8].copy_from_slice(&self.store.port().to_le_bytes());
        b[8..24].copy_from_slice(&ip);
        b[24..32].copy_from_slice(&self.token.to_le_bytes());
        b[SECRET_AT..SECRET_AT + UNIQUE_ID_SECRET_BYTES].copy_from_slice(&self.secret);
        b
    }

    /// Decodes [`UniqueId::to_bytes`]; refuses bytes that were not made by it.
    pub fn from_bytes(b: &[u8; UNIQUE_ID_BYTES]) -> Result<UniqueId> {
        if &b[..4] != MAGIC {
            return Err(Error::InvalidUniqueId(
                "no FCID magic (not made by fcGetUniqueId)",
            ));
        }
        if b[4] != VERSION {
            return Err(Error::InvalidUniqueId("unknown version"));
        }
        let end = SECRET_AT + UNIQUE_ID_SECRET_BYTES;
        if b[end..].iter().any(|&x| x != 0) {
            return Err(Error::InvalidUniqueId("reserved bytes are not zero"));
        }
        let mut secret = [0u8; UNIQUE_ID_SECRET_BYTES];
        secret.copy_from_slice(&b[SECRET_AT..end]);
        if secret.iter().all(|&x| x == 0) {
            return Err(Error::InvalidUniqueId("no secret (all zero)"));
        }
        let port = u16::from_le_bytes([b[6], b[7]]);
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&b[8..24]);
        let ip = Ipv6Addr::from(ip);
        let ip = match b[5] {
            4 => IpAddr::V4(ip.to_ipv4_mapped().ok_or(Error::InvalidUniqueId(
                "IPv4 family with a non-IPv4 address",
            ))?),
            6 => IpAddr::V6(ip),
            _ => return Err(Error::InvalidUniqueId("unknown address family")),
        };
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[24..32]);
        let token = u64::from_le_bytes(t);
        if port == 0 || token == 0 {
            return Err(Error::InvalidUniqueId("zero port or token"));
        }
        Ok(UniqueId {
            store: SocketAddr::new(ip, port),
            token,
            secret,
        })
    }
}

/// What a communicator built through a store keeps: the store (shared with the other
/// communicators of its tree), its own key prefix, and how many splits it made.
pub(crate) struct Bootstrap {
    pub(super) job: Arc<JobStore>,
    pub(super) prefix: String,
    splits: AtomicU64,
    /// Explicit shrinks and grows made from this communicator (collective, so every rank
    /// counts the same).
    pub(super) shrinks: AtomicU64,
    pub(super) grows: AtomicU64,
}

/// The store client and, on the rank that serves it, the server. Fields drop in order: the
/// client closes before the server stops.
pub(super) struct JobStore {
    pub(super) store: MeetingStore,
    _server: Option<TcpStoreServer>,
}

impl crate::ft::StoreRef for JobStore {
    fn store(&self) -> &dyn crate::bootstrap::Store {
        self.store.store()
    }
}

impl Bootstrap {
    /// For a communicator built by [`crate::bootstrap::rendezvous::rendezvous`].
    pub(crate) fn new(store: MeetingStore, server: Option<TcpStoreServer>) -> Bootstrap {
        Bootstrap {
            job: Arc::new(JobStore {
                store,
                _server: server,
            }),
            prefix: "fc/".into(),
            splits: AtomicU64::new(0),
            shrinks: AtomicU64::new(0),
            grows: AtomicU64::new(0),
        }
    }

    /// For a communicator of the same job made under `prefix` (a split, shrink or grow).
    pub(super) fn child(&self, prefix: String) -> Bootstrap {
        Bootstrap {
            job: self.job.clone(),
            prefix,
            splits: AtomicU64::new(0),
            shrinks: AtomicU64::new(0),
            grows: AtomicU64::new(0),
        }
    }
}

impl Communicator {
    /// Splits this communicator (NCCL's `ncclCommSplit`): every rank calls it, in the same
    /// order as its other collectives; ranks that pass the same `color` form a new
    /// communicator, ranked by `(key, rank in this communicator)`. A rank that passes `None`
    /// joins none and gets `Ok(None)`. It returns once every rank's child has met (a barrier
    /// on this communicator), so rank 0 may drop everything, and with it the store, as soon
    /// as it returns.
    ///
    /// The children meet through this communicator's rendezvous store, so a communicator
    /// without one (an in-process [`crate::World`]) gives [`Error::NoStore`].
    pub fn split_by(&self, color: Option<u32>, key: i32) -> Result<Option<Communicator>> {
        self.split_with(color, key, self.config().clone())
    }

    /// [`Communicator::split_by`] with the child's own configuration (as NCCL's split takes
    /// an `ncclConfig_t`): e.g. a child that forces an algorithm, beside its parent on the
    /// same ranks, so a benchmark can alternate between algorithms call by call. The child
    /// still plans on its members' part of this communicator's topology (`cfg.topo_file` is
    /// not read again) and dumps none.
    pub fn split_with(
        &self,
        color: Option<u32>,
        key: i32,
        cfg: Config,
    ) -> Result<Option<Communicator>> {
        let boot = self.boot.as_ref().ok_or(Error::NoStore)?;
        let mine = [color.map_or(-1, i64::from), i64::from(key)];
        let mut all = vec![0i64; 2 * self.world];
        self.all_gather(&mine, &mut all)?;
        // Every rank counts the same splits (split is collective), so `n` agrees.
        let n = boot.splits.fetch_add(1, Ordering::Relaxed);
        let child = match color {
            Some(color) => self.child_of(boot, n, color, &all, cfg).map(Some),
            None => Ok(None),
        };
        // No rank returns before every child has met: the store may go away once rank 0
        // is done (its server stops, or a file store is cleared), and a child of another
        // colour may still be meeting there.
        self.barrier()?;
        child
    }

    /// This rank's child in split `n` (`all`: every rank's colour and key), for `color`.
    fn child_of(
        &self,
        boot: &Bootstrap,
        n: u64,
        color: u32,
        all: &[i64],
        cfg: Config,
    ) -> Result<Communicator> {
        let mut members: Vec<(i64, usize)> = (0..self.world)
            .filter(|&r| all[2 * r] == i64::from(color))
            .map(|r| (all[2 * r + 1], r))
            .collect();
        members.sort_unstable();
        let rank = members
            .iter()
            .position(|&(_, r)| r == self.rank)
            .ok_or_else(|| Error::Internal("split: this rank is missing from its group".into()))?;
        let prefix = format!("{}split{n}/{color}/", boot.prefix);
        let mut cfg = cfg;
        // Oversubscription as the parent saw it, unless the caller's configuration says.
        cfg.yield_when_idle = cfg.yield_when_idle.or(self.config().yield_when_idle);
        // The child plans on its members' part of this communicator's topology (a
        // topology file describes the parent, and the parent's rank 0 already dumped it).
        let olds: Vec<usize> = members.iter().map(|&(_, r)| r).collect();
        self.member_of(boot, prefix, rank, &olds, cfg, &|| false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_id_round_trips_and_refuses_garbage() {
        for store in ["127.0.0.1:4242", "[::1]:9"] {
            let id = UniqueId {
                store: store.parse().unwrap(),
                token: 0xdead_beef_0123_4567,
                secret: [0xa5; 32],
            };
            assert_eq!(UniqueId::from_bytes(&id.to_bytes()).unwrap(), id);
        }
        let good = UniqueId {
            store: "10.0.0.1:80".parse().unwrap(),
            token: 7,
            secret: [1; 32],
        }
        .to_bytes();
        let cases: [(usize, u8); 6] = [(0, b'X'), (4, 9), (5, 5), (64, 1), (127, 1), (6, 0)];
        for (at, v) in cases {
            let mut b = good;
            b[at] = v;
            if at == 6 {
                b[7] = 0;
            }
            assert!(
                matches!(UniqueId::from_bytes(&b), Err(Error::InvalidUniqueId(_))),
                "byte {at} = {v} accepted"
            );
        }
        let mut b = good;
        b[32..64].fill(0);
        assert!(matches!(
            UniqueId::from_bytes(&b),
            Err(Error::InvalidUniqueId("no secret (all zero)"))
        ));
    }

    #[test]
    fn a_new_id_carries_a_fresh_secret_that_debug_never_prints() {
        let (a, b) = (
            UniqueId::new(&Config::default()).unwrap(),
            UniqueId::new(&Config::default()).unwrap(),
        );
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.iter().any(|&x| x != 0));
        let shown = format!("{a:?}");
        let derived = format!("{:?}", a.secret);
        assert!(!shown.contains(&derived), "{shown}");
        assert!(shown.contains("secret: \"<32 bytes>\""), "{shown}");
        served().clear();
    }

    #[test]
    fn split_without_a_store_and_ranks_outside_the_world_are_refused() {
        let res = crate::World::new(2)
            .run(|c| c.split_by(Some(0), 0).map(|_| ()))
            .unwrap();
        for r in res {
            assert!(matches!(r, Err(Error::NoStore)), "{r:?}");
        }
        let id = UniqueId {
            store: "127.0.0.1:9".parse().unwrap(),
            token: 1,
            secret: [1; 32],
        };
        for (rank, world) in [(0, 0), (3, 3)] {
            let r = Communicator::from_unique_id(&id, rank, world, Config::default());
            assert!(matches!(r, Err(Error::InvalidWorld { .. })));
        }
    }
}
