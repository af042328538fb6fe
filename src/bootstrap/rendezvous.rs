//! Rendezvous: from launcher variables to connected links.
//!
//! Rank 0 serves a [`TcpStoreServer`] at the store address; every rank connects to it,
//! publishes `host identity / listening address / pid`, and reads everyone else's. Ranks
//! with the same host identity (hostname + boot id, or `FERROCOLL_HOSTNAME`) talk over shared
//! memory, the others over TCP (`FERROCOLL_TRANSPORT` can force either).
//!
//! With `FERROCOLL_STORE=file:DIR` the ranks meet through a [`FileStore`] in `DIR` instead (a
//! directory every rank sees, e.g. on a shared file system under Slurm; no server, no port).
//! The directory belongs to one job at a time: rank 0 refuses one that already holds keys
//! (left by a job that crashed, or still running), and removes the keys when its
//! communicators are gone. Each rank then listens on the interface named by
//! `FERROCOLL_SOCKET_IFNAME`, else on this host's first non-loopback IPv4 address (no store
//! address to route to), else on loopback.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;

use ferrocoll_transports::hybrid::HybridEndpoint;
use ferrocoll_transports::shm::{ShmEndpoint, ShmOptions};
use ferrocoll_transports::tcp::TcpEndpoint;

use super::{FileStore, Store, StoreError, TcpStore, TcpStoreServer};
use crate::config::launcher::LaunchEnv;
use crate::config::{Config, TransportChoice};
use crate::error::{Error, Result};

/// What a rank learnt at rendezvous, kept for reporting (the probe prints it).
#[derive(Clone, Debug)]
pub struct Peers {
    /// Host identity per rank.
    pub hosts: Vec<String>,
    /// `"shm"`, `"tcp"` or `"self"` per rank, as seen from this rank.
    pub transports: Vec<&'static str>,
    /// CPU cores each rank may run on (its affinity and cgroup quota), 0 where unknown.
    pub cores: Vec<usize>,
    /// The CPUs each rank's affinity mask allows, empty where unknown: ranks bound to
    /// different cores of one host (`taskset`, `mpirun --bind-to core`) each see one core,
    /// but together they run on the union of their masks.
    pub cpus: Vec<Vec<usize>>,
}

/// The CPU cores this process may run on (affinity mask, cgroup quota), 0 when unknown.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

/// The CPUs this process's affinity mask allows, in increasing order; empty when it cannot
/// be read.
pub fn affinity_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is a plain bit array, for which all zeroes is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the kernel writes at most the size given into `set`,
    // which is exactly that large and lives for the call.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, inside the set's bits.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Parses the CPU list a peer published (`"0,1,5"`; empty: unknown).
fn parse_cpus(r: usize, text: &str) -> std::result::Result<Vec<usize>, StoreError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|c| {
            c.parse::<usize>()
                .ok()
                .filter(|&c| c < 1 << 20)
                .ok_or_else(|| {
                    StoreError::Protocol(format!("rank {r} published a bad CPU list {text:?}"))
                })
        })
        .collect()
}

/// This machine's identity for "may these ranks share memory": `FERROCOLL_HOSTNAME` if set
/// (containers, tests), else hostname + boot id.
pub fn host_identity(cfg: &Config) -> String {
    if let Some(h) = &cfg.hostname {
        return h.clone();
    }
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{}/{}",
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/random/boot_id")
    )
}

/// The store a job meets through, kept for later rendezvous (a split's children meet there
/// too).
pub enum MeetingStore {
    /// A client of the job's [`TcpStoreServer`].
    Tcp(TcpStore),
    /// A directory every rank sees (`FERROCOLL_STORE=file:DIR`); the rank that is `owner`
    /// (rank 0) removes the store's keys when this is dropped.
    File {
        /// The store.
        store: FileStore,
        /// Whether dropping this clears the directory's keys.
        owner: bool,
    },
}

impl MeetingStore {
    /// The store itself.
    pub fn store(&self) -> &dyn Store {
        match self {
            MeetingStore::Tcp(s) => s,
            MeetingStore::File { store, .. } => store,
        }
    }

    /// An address that routes towards the other ranks (the TCP store's), from which a rank
    /// picks the interface it listens on; `None` for a file store.
    pub fn route(&self) -> Option<SocketAddr> {
        match self {
            MeetingStore::Tcp(s) => Some(s.server_addr()),
            MeetingStore::File { .. } => None,
        }
    }
}

impl Drop for MeetingStore {
    fn drop(&mut self) {
        if let MeetingStore::File { store, owner: true } = self {
            if let Err(e) = store.clear() {
                tracing::warn!(dir = %store.dir().display(), "cannot clear the file store: {e}");
            }
        }
    }
}

/// Where `FERROCOLL_STORE` (or the launcher's address) says the ranks meet.
enum StoreSpec {
    Tcp(SocketAddr),
    File(PathBuf),
}

fn store_spec(spec: &str) -> Result<StoreSpec> {
    match spec.strip_prefix("file:") {
        Some(dir) if dir.trim().is_empty() => Err(Error::Config {
            var: "FERROCOLL_STORE".into(),
            value: spec.into(),
            reason: "file: needs a directory (file:/shared/dir)".into(),
        }),
        Some(dir) => Ok(StoreSpec::File(PathBuf::from(dir))),
        None => resolve(spec).map(StoreSpec::Tcp),
    }
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| Error::Config {
            var: "FERROCOLL_STORE".into(),
            value: addr.into(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| Error::Config {
            var: "FERROCOLL_STORE".into(),
            value: addr.into(),
            reason: "no address".into(),
        })
}

/// The local IP to listen on: the interface named by `FERROCOLL_SOCKET_IFNAME`, else the one
/// that routes to the store, else (a file store) the first non-loopback IPv4 address, else
/// loopback.
fn listen_ip(cfg: &Config, route: Option<SocketAddr>) -> Result<std::net::IpAddr> {
    if let Some(ifname) = &cfg.socket_ifname {
        return interface_ipv4(ifname).ok_or_else(|| Error::Config {
            var: "FERROCOLL_SOCKET_IFNAME".into(),
            value: ifname.clone(),
            reason: "no such interface with an IPv4 address".into(),
        });
    }
    let Some(store) = route else {
        let ip = ipv4_interfaces()
            .into_iter()
            .map(|(_, ip)| ip)
            .find(|ip| !ip.is_loopback())
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        return Ok(ip.into());
    };
    let probe = UdpSocket::bind(if store.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .map_err(StoreError::Io)?;
    probe.connect(store).map_err(StoreError::Io)?;
    Ok(probe.local_addr().map_err(StoreError::Io)?.ip())
}

fn interface_ipv4(name: &str) -> Option<std::net::IpAddr> {
    ipv4_interfaces()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, ip)| ip.into())
}

/// The IPv4 addresses of this host's interfaces, as (interface name, address), in the order
/// the system lists them.
pub(crate) fn ipv4_interfaces() -> Vec<(String, std::net::Ipv4Addr)> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs;
        // ifa_name is a NUL-terminated string, ifa_addr (if non-null) a sockaddr whose family
        // says its real type.
        unsafe {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let n = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found.push((
                    n.into_owned(),
                    std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                ));
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// Everything a communicator built by rendezvous keeps alive: the store server (rank 0) and
/// the store client.
pub struct Rendezvous {
    /// The links.
    pub endpoint: HybridEndpoint,
    /// What the rank learnt about its peers.
    pub peers: Peers,
    /// The store (for later rendezvous, e.g. split).
    pub store: MeetingStore,
    /// Rank 0's store server.
    pub server: Option<TcpStoreServer>,
}

/// Runs the rendezvous of `env` and connects the links.
pub fn rendezvous(env: &LaunchEnv, cfg: &Config) -> Result<Rendezvous> {
    let rank = env.rank;
    let store_addr = match store_spec(&env.store)? {
        StoreSpec::Tcp(a) => a,
        StoreSpec::File(dir) => {
            let store = FileStore::new(&dir, cfg.timeout)?;
            if rank == 0 && !store.is_empty()? {
                return Err(Error::Config {
                    var: "FERROCOLL_STORE".into(),
                    value: env.store.clone(),
                    reason: "the directory already holds a job's keys (a crashed job, or one \
                             still running): give each job an empty directory"
                        .into(),
                });
            }
            let store = MeetingStore::File {
                store,
                owner: rank == 0,
            };
            return finish(env, cfg, store, None);
        }
    };
    let server = if rank == 0 {
        // Listen on every interface at the store's port, so ranks on other hosts reach it.
        let any: std::net::IpAddr = if store_addr.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let bind = SocketAddr::new(
            if store_addr.ip().is_loopback() {
                store_addr.ip()
            } else {
                any
            },
            store_addr.port(),
        );
        Some(TcpStoreServer::bind_with_secret(
            bind,
            cfg.secret.as_deref().map(str::as_bytes),
        )?)
    } else {
        None
    };
    let store = TcpStore::connect_with_secret(
        store_addr,
        cfg.timeout,
        cfg.secret.as_deref().map(str::as_bytes),
    )?;
    finish(env, cfg, MeetingStore::Tcp(store), server)
}

/// Connects the links through `store` and returns what the communicator keeps.
fn finish(
    env: &LaunchEnv,
    cfg: &Config,
    store: MeetingStore,
    server: Option<TcpStoreServer>,
) -> Result<Rendezvous> {
    let (rank, world) = (env.rank, env.world);
    let (endpoint, peers) = connect_ranks(store.store(), store.route(), "fc/", rank, world, cfg)?;
    tracing::info!(
        rank,
        world,
        source = env.source,
        "rendezvous done; hosts {:?}",
        peers.hosts
    );
    Ok(Rendezvous {
        endpoint,
        peers,
        store,
        server,
    })
}

/// Meets the `world` ranks of one communicator through `store` (a TCP store reached at
/// `route`; `None` for a file store), under keys that start with `prefix` (so one store
/// serves several communicators, e.g. the children of a split), and connects shared memory
/// and TCP links between them.
pub fn connect_ranks(
    store: &dyn Store,
    route: Option<SocketAddr>,
    prefix: &str,
    rank: usize,
    world: usize,
    cfg: &Config,
) -> Result<(HybridEndpoint, Peers)> {
    let token_key = format!("{prefix}job_token");
    let token: u64 = if rank == 0 {
        let t = random_token();
        store.set(&token_key, &t.to_le_bytes())?;
        t
    } else {
        let b = store.get_timeout(&token_key, cfg.timeout)?;
        u64::from_le_bytes(
            b.get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| StoreError::Protocol("bad job token".into()))?,
        )
    };
    let ip = listen_ip(cfg, route)?;
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).map_err(StoreError::Io)?;
    let cpu_list: Vec<String> = affinity_cpus().iter().map(usize::to_string).collect();
    let me = format!(
        "{}\n{}\n{}\n{}\n{}",
        host_identity(cfg),
        listener.local_addr().map_err(StoreError::Io)?,
        std::process::id(),
        available_cores(),
        cpu_list.join(",")
    );
    store.set(&format!("{prefix}rank/{rank}"), me.as_bytes())?;
    let mut hosts = Vec::with_capacity(world);
    let mut addrs = Vec::with_capacity(world);
    let mut cores = Vec::with_capacity(world);
    let mut cpus = Vec::with_capacity(world);
    for r in 0..world {
        let v = store.get_timeout(&format!("{prefix}rank/{r}"), cfg.timeout)?;
        let text = String::from_utf8_lossy(&v).into_owned();
        let mut parts = text.split('\n');
        let (host, addr) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let addr: SocketAddr = addr.parse().map_err(|_| {
            StoreError::Protocol(format!("rank {r} published a bad address {addr:?}"))
        })?;
        // Line 3 is the pid; line 4 the core count, line 5 the affinity's CPU list (a peer
        // that sends none: unknown).
        cores.push(
            parts
                .nth(1)
                .and_then(|c| c.trim().parse().ok())
                .unwrap_or(0),
        );
        cpus.push(parse_cpus(r, parts.next().unwrap_or(""))?);
        hosts.push(host.to_string());
        addrs.push(addr);
    }
    let same_host: Vec<bool> = hosts.iter().map(|h| *h == hosts[rank]).collect();
    let use_shm: Vec<bool> = match cfg.transport {
        TransportChoice::Tcp => vec![false; world],
        TransportChoice::Shm => {
            if let Some(p) = same_host.iter().position(|s| !s) {
                return Err(Error::Config {
                    var: "FERROCOLL_TRANSPORT".into(),
                    value: "shm".into(),
                    reason: format!("rank {p} is on another host ({})", hosts[p]),
                });
            }
            vec![true; world]
        }
        TransportChoice::Auto => same_host.clone(),
    };
    let local: Vec<usize> = (0..world).filter(|&p| use_shm[p]).collect();
    let shm = if local.len() > 1 {
        let opts = ShmOptions {
            ring_bytes: cfg.shm_ring_bytes,
            timeout: cfg.timeout,
            spin: std::time::Duration::ZERO,
            direct: cfg.shm_direct,
        };
        Some(ShmEndpoint::open_with(
            &format!("{token:016x}"),
            rank,
            world,
            &local,
            &opts,
        )?)
    } else {
        None
    };
    let wanted: Vec<bool> = (0..world).map(|p| p != rank && !use_shm[p]).collect();
    let tcp = if wanted.iter().any(|&w| w) {
        Some(TcpEndpoint::connect_to(
            rank,
            world,
            listener,
            &addrs,
            &wanted,
            token,
            cfg.timeout,
        )?)
    } else {
        None
    };
    let mut local_flags = use_shm.clone();
    local_flags[rank] = false;
    let endpoint = HybridEndpoint::new(rank, world, shm, tcp, local_flags);
    let transports = (0..world).map(|p| endpoint.transport_of(p)).collect();
    Ok((
        endpoint,
        Peers {
            hosts,
            transports,
            cores,
            cpus,
        },
    ))
}

/// A random 64-bit job token (not cryptographic: hashed time and pid with a random key).
pub(crate) fn random_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_from_peers_parse_or_fail_with_a_protocol_error() {
        assert_eq!(parse_cpus(0, "0,1,5").unwrap(), vec![0, 1, 5]);
        assert_eq!(parse_cpus(0, " ").unwrap(), Vec::<usize>::new());
        for bad in ["0,x", "1,,2", "-1", "99999999"] {
            let e = parse_cpus(3, bad).unwrap_err().to_string();
            assert!(e.contains("rank 3 published a bad CPU list"), "{bad}: {e}");
        }
    }

    #[test]
    fn this_process_affinity_covers_its_available_cores() {
        let cpus = affinity_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
        // available_parallelism is the mask's size or less (a cgroup quota).
        assert!(available_cores() <= cpus.len());
    }
}
