//! Rendezvous: from launcher variables to connected links.
//!
//! With `FERROCOLL_STORE=host:port` rank 0 serves a [`TcpStoreServer`] at that address (so
//! rank 0 is then the one rank whose death ends the job); with `tcp://host:port` the server
//! runs outside the ranks (`ferrocoll-store`, or the launcher: [`crate::launch::LocalStore`])
//! and rank 0 is only a client; with `etcd://host:port/prefix` the ranks meet in etcd
//! ([`EtcdStore`]). Every rank connects to the store, publishes its record (host identity,
//! pid, heartbeat address, and the versioned address of every transport it offers), and
//! reads everyone else's. Each pair of ranks then uses the first transport of the
//! preference list (`FERROCOLL_TRANSPORT`; `auto`: shared memory between ranks with the same
//! host identity, hostname + boot id or `FERROCOLL_HOSTNAME`, else a fabric, else TCP) that
//! both offer (`endpoint.rs`).
//!
//! With `FERROCOLL_STORE=file:DIR` the ranks meet through a [`FileStore`] in `DIR` instead (a
//! directory every rank sees, e.g. on a shared file system under Slurm; no server, no port).
//! The directory belongs to one job at a time: rank 0 refuses one that already holds keys
//! (left by a job that crashed, or still running), and removes the keys when its
//! communicators are gone. Each rank then listens on the interface named by
//! `FERROCOLL_SOCKET_IFNAME`, else on this host's first non-loopback IPv4 address (no store
//! address to route to), else on loopback. A store that outlives the ranks (`tcp://`,
//! `etcd://`) also belongs to one job: rank 0 refuses one that already holds a job token.
//!
//! This file runs the exchange; the jobs it uses have their own files: the store choice
//! (`bootstrap/meeting.rs`), the interface to listen on (`interfaces.rs`), the CPUs a rank
//! publishes (`affinity.rs`), the transport choice and endpoint building (`endpoint.rs`), and
//! the rank claims, which name processes that disagree about the ranks (`claims.rs`).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ferrocoll_transports::auth::{self, JobKey};
use ferrocoll_transports::composite::CompositeEndpoint;
use ferrocoll_transports::plugin::SetupCtx;

use super::affinity::parse_cpus;
use super::interfaces::listen_ip;
use super::meeting::{store_spec, StoreSpec};
use ferrocoll_transports::tcp::factory as tcp_factory;

use super::{endpoint, EtcdStore, FileStore, Store, StoreError, TcpStore, TcpStoreServer};
use crate::config::launcher::LaunchEnv;
use crate::config::Config;
use crate::error::{Error, Result};

pub use super::affinity::{affinity_cpus, available_cores};
pub(crate) use super::interfaces::ipv4_interfaces;
pub use super::meeting::MeetingStore;

/// What a rank learnt at rendezvous, kept for reporting (the probe prints it).
#[derive(Clone, Debug)]
pub struct Peers {
    /// Host identity per rank.
    pub hosts: Vec<String>,
    /// The transport to each rank (`"shm"`, `"tcp"`, `"ofi"`, …; `"self"` for this rank).
    pub transports: Vec<&'static str>,
    /// The transport of every pair of ranks: `links[a][b]`, the same on every rank.
    pub links: Vec<Vec<&'static str>>,
    /// CPU cores each rank may run on (its affinity and cgroup quota), 0 where unknown.
    pub cores: Vec<usize>,
    /// The CPUs each rank's affinity mask allows, empty where unknown: ranks bound to
    /// different cores of one host (`taskset`, `mpirun --bind-to core`) each see one core,
    /// but together they run on the union of their masks.
    pub cpus: Vec<Vec<usize>>,
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

/// What a communicator's failure detector (`crate::ft`) needs from rendezvous: its bound
/// heartbeat socket, and its peers' heartbeat addresses and (on this host) pids.
pub(crate) struct Control {
    /// This rank's heartbeat socket (published in its record).
    pub socket: UdpSocket,
    /// This rank and the world.
    pub rank: usize,
    pub world: usize,
    /// The communicator's random token.
    pub token: u64,
    /// The communicator's random key (its datagrams carry a tag under it).
    pub key: JobKey,
    /// Each rank's heartbeat address (`None`: it published none).
    pub addrs: Vec<Option<SocketAddr>>,
    /// Each rank's pid if it runs on this host.
    pub local_pids: Vec<Option<i32>>,
}

/// Everything a communicator built by rendezvous keeps alive: the store server (rank 0, when
/// it serves one) and the store client.
pub struct Rendezvous {
    /// The links.
    pub endpoint: CompositeEndpoint,
    /// What the rank learnt about its peers.
    pub peers: Peers,
    /// The store (for later rendezvous, e.g. split).
    pub store: MeetingStore,
    /// Rank 0's store server (with a bare `host:port` store only).
    pub server: Option<TcpStoreServer>,
    /// The failure detector's socket and peers.
    pub(crate) control: Control,
}

/// Runs the rendezvous of `env` and connects the links.
pub fn rendezvous(env: &LaunchEnv, cfg: &Config) -> Result<Rendezvous> {
    let rank = env.rank;
    let secret = cfg.secret.as_deref().map(str::as_bytes);
    match store_spec(&env.store)? {
        StoreSpec::Tcp(addr) => served_by_rank0(env, cfg, addr),
        StoreSpec::External(addr) => {
            let store = TcpStore::connect_with_secret(addr, cfg.timeout, secret)?;
            unused_by_another_job(env, &store)?;
            finish(env, cfg, MeetingStore::Tcp(store), None)
        }
        StoreSpec::Etcd(spec) => {
            if cfg.secret.is_some() && rank == 0 {
                tracing::info!(
                    "FERROCOLL_SECRET is not sent to etcd: protect etcd with its own \
                     authentication and TLS"
                );
            }
            let store = EtcdStore::connect(&spec.authority, &spec.prefix, cfg.timeout)?;
            unused_by_another_job(env, &store)?;
            finish(env, cfg, MeetingStore::Etcd(store), None)
        }
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
            // A job without a secret of its own keeps one in the directory (mode 0600).
            let mut with_secret;
            let cfg = if cfg.secret.is_none() {
                with_secret = cfg.clone();
                with_secret.secret = Some(store.job_secret(rank == 0)?);
                &with_secret
            } else {
                cfg
            };
            let store = MeetingStore::File {
                store,
                owner: rank == 0,
            };
            finish(env, cfg, store, None)
        }
    }
}

/// Rank 0 of a job whose store outlives it (`tcp://`, `etcd://`) refuses a store that already
/// holds a job's token: the other ranks could read that job's addresses instead of ours.
fn unused_by_another_job(env: &LaunchEnv, store: &dyn Store) -> Result<()> {
    if env.rank != 0 {
        return Ok(());
    }
    match store.get_timeout("fc/job_token", std::time::Duration::ZERO) {
        Err(StoreError::Timeout { .. }) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(_) => Err(Error::Config {
            var: "FERROCOLL_STORE".into(),
            value: env.store.clone(),
            reason: "the store already holds a job's keys (a job that ended, or one still \
                     running): give each job its own store server or etcd prefix"
                .into(),
        }),
    }
}

/// The store of a bare `host:port`: rank 0 serves it, every rank is a client.
fn served_by_rank0(env: &LaunchEnv, cfg: &Config, store_addr: SocketAddr) -> Result<Rendezvous> {
    let secret = cfg.secret.as_deref().map(str::as_bytes);
    let server = if env.rank == 0 {
        // Listen on the store's own address only (loopback for a job on one host, the
        // interface the other hosts reach otherwise), never on every interface.
        match TcpStoreServer::bind_with_secret(store_addr, secret) {
            Ok(s) => Some(s),
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Err(Error::Config {
                    var: "FERROCOLL_STORE".into(),
                    value: env.store.clone(),
                    reason: format!(
                        "rank 0 serves the store at this address, but {} is not an address \
                         of this host ({e})",
                        store_addr.ip()
                    ),
                });
            }
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(Error::Config {
                    var: "FERROCOLL_STORE".into(),
                    value: env.store.clone(),
                    reason: format!(
                        "rank 0 serves the store at this address, but another process already \
                         listens on {store_addr} (another job's rank 0, a second process given \
                         rank 0, or a store left running): give each job its own port ({e})"
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let store = TcpStore::connect_with_secret(store_addr, cfg.timeout, secret)?;
    finish(env, cfg, MeetingStore::Tcp(store), server)
}

/// A client of the store named by `spec` (a `FERROCOLL_STORE` value) that serves nothing:
/// a replacement process joining a running job.
pub(crate) fn client_store(spec: &str, cfg: &Config) -> Result<MeetingStore> {
    let secret = cfg.secret.as_deref().map(str::as_bytes);
    Ok(match store_spec(spec)? {
        StoreSpec::Tcp(a) | StoreSpec::External(a) => {
            MeetingStore::Tcp(TcpStore::connect_with_secret(a, cfg.timeout, secret)?)
        }
        StoreSpec::Etcd(e) => {
            MeetingStore::Etcd(EtcdStore::connect(&e.authority, &e.prefix, cfg.timeout)?)
        }
        StoreSpec::File(dir) => MeetingStore::File {
            store: FileStore::new(&dir, cfg.timeout)?,
            owner: false,
        },
    })
}

/// Connects the links through `store` and returns what the communicator keeps.
fn finish(
    env: &LaunchEnv,
    cfg: &Config,
    store: MeetingStore,
    server: Option<TcpStoreServer>,
) -> Result<Rendezvous> {
    let (rank, world) = (env.rank, env.world);
    let (endpoint, peers, control) = connect_ranks(
        store.store(),
        store.route(),
        "fc/",
        rank,
        world,
        cfg,
        &|| false,
    )?;
    let hosts: std::collections::BTreeSet<&String> = peers.hosts.iter().collect();
    if rank == 0 && cfg.secret.is_none() && hosts.len() > 1 {
        tracing::warn!(
            "this job spans {} hosts without a secret: any process that reaches its store \
             or its ports can join it or read its addresses. Give every rank the same \
             FERROCOLL_SECRET (or FERROCOLL_SECRET_FILE, a file of mode 0600); see the \
             README's security section",
            hosts.len()
        );
    }
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
        control,
    })
}

/// Meets the `world` ranks of one communicator through `store` (a TCP store reached at
/// `route`; `None` for a file store), under keys that start with `prefix` (so one store
/// serves several communicators, e.g. the children of a split), and connects shared memory
/// and TCP links between them. Waiting for the others gives up with [`Error::Aborted`] as
/// soon as `cancelled()` says so (a shrink whose membership changed under it).
pub(crate) fn connect_ranks(
    store: &dyn Store,
    route: Option<SocketAddr>,
    prefix: &str,
    rank: usize,
    world: usize,
    cfg: &Config,
    cancelled: &dyn Fn() -> bool,
) -> Result<(CompositeEndpoint, Peers, Control)> {
    let get = |key: &str| get_until(store, key, cfg.timeout, cancelled);
    // The communicator's token (unique: shared-memory names derive from it) and its key
    // (links and datagrams prove they hold it), drawn by rank 0 and handed out through the
    // store, which only the job's processes can read when the job has a secret.
    let token_key = format!("{prefix}job_token");
    let (token, key) = if rank == 0 {
        let mut v = random_token().to_le_bytes().to_vec();
        v.extend_from_slice(&auth::random_bytes(JOB_KEY_BYTES).map_err(StoreError::Io)?);
        store.set(&token_key, &v)?;
        parse_job_token(&v, cfg)?
    } else {
        parse_job_token(&get(&token_key)?, cfg)?
    };
    let ip = listen_ip(cfg, route)?;
    let claim = super::claims::claim(store, prefix, rank, world, cfg)?;
    let ctx = SetupCtx {
        rank,
        world,
        token,
        key: key.clone(),
        ip,
        timeout: cfg.timeout,
        ring_bytes: cfg.shm_ring_bytes,
        single_copy: cfg.shm_direct,
        tls: cfg.tls,
    };
    let offers = endpoint::prepare(cfg, &ctx)?;
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(StoreError::Io)?;
    let cpu_list: Vec<String> = affinity_cpus().iter().map(usize::to_string).collect();
    // The record: host identity, the data address (TCP's, for people reading the store),
    // pid, core count, the affinity's CPU list, the heartbeat address, the transport list as
    // configured, the offers (`name=hex(address blob)` in preference order) and the world size
    // this rank was given (checked against the others' in `claims.rs`).
    let tcp_addr = offers
        .iter()
        .find(|o| o.name == "tcp")
        .and_then(|o| tcp_factory::decode_address(&o.prepared.address(), rank).ok())
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let me = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        host_identity(cfg),
        tcp_addr,
        std::process::id(),
        available_cores(),
        cpu_list.join(","),
        socket.local_addr().map_err(StoreError::Io)?,
        cfg.transport.spec(),
        endpoint::offers_line(&offers),
        claim.world_line(),
    );
    store.set(&format!("{prefix}rank/{rank}"), me.as_bytes())?;
    let mut hosts = Vec::with_capacity(world);
    let mut cores = Vec::with_capacity(world);
    let mut cpus = Vec::with_capacity(world);
    let mut pids = Vec::with_capacity(world);
    let mut hb_addrs = Vec::with_capacity(world);
    let mut prefs = Vec::with_capacity(world);
    let mut published = Vec::with_capacity(world);
    for r in 0..world {
        let rec = parse_record(r, claim.record(r, cancelled)?.as_bytes())?;
        pids.push(rec.pid);
        cores.push(rec.cores);
        cpus.push(rec.cpus);
        hb_addrs.push(rec.heartbeat);
        prefs.push(rec.transports);
        published.push(rec.offers);
        hosts.push(rec.host);
    }
    claim.settle()?;
    let links = match endpoint::choose(&endpoint::order_of(&offers), &prefs, &hosts, &published) {
        Ok(l) => l,
        Err(e) => {
            // Every rank finds the same error from the same records. Rank 0 may serve the
            // store: it waits (briefly) until each rank has found it too, so that no rank
            // sees the store vanish instead of the reason.
            store.set(&format!("{prefix}refused/{rank}"), b"")?;
            if rank == 0 {
                let wait = cfg.timeout.min(Duration::from_secs(5));
                for r in 1..world {
                    let _ = get_until(store, &format!("{prefix}refused/{r}"), wait, cancelled);
                }
            }
            return Err(e);
        }
    };
    let endpoint = endpoint::connect(rank, offers, &links, &published)?;
    let transports = (0..world).map(|p| endpoint.transport_of(p)).collect();
    let local_pids = (0..world)
        .map(|r| pids[r].filter(|_| r != rank && hosts[r] == hosts[rank]))
        .collect();
    let control = Control {
        socket,
        rank,
        world,
        token,
        key,
        addrs: hb_addrs,
        local_pids,
    };
    Ok((
        endpoint,
        Peers {
            hosts,
            transports,
            links,
            cores,
            cpus,
        },
        control,
    ))
}

/// Bytes of a communicator's random key.
const JOB_KEY_BYTES: usize = 32;

/// The token and key rank 0 published: 8 bytes of token, then the key material. With a job
/// secret the key is derived from both (HMAC under the secret), so that a reader of the
/// store who lacks the secret (a file store's directory, an etcd user) cannot link to the
/// ranks either.
fn parse_job_token(v: &[u8], cfg: &Config) -> Result<(u64, JobKey)> {
    if v.len() != 8 + JOB_KEY_BYTES {
        return Err(StoreError::Protocol(format!(
            "the job token in the store is {} bytes, {} expected (another ferrocoll version?)",
            v.len(),
            8 + JOB_KEY_BYTES
        ))
        .into());
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&v[..8]);
    let key = match &cfg.secret {
        Some(s) => JobKey::new(s.as_bytes()).derive(b"ferrocoll communicator key", &v[8..]),
        None => JobKey::new(&v[8..]),
    };
    Ok((u64::from_le_bytes(t), key))
}

/// What one rank published at rendezvous (see [`connect_ranks`]), as its peers read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RankRecord {
    /// Host identity.
    pub(crate) host: String,
    /// Process id (`None`: unreadable).
    pub(crate) pid: Option<i32>,
    /// Cores it may use (0: unknown).
    pub(crate) cores: usize,
    /// The CPUs of its affinity mask.
    pub(crate) cpus: Vec<usize>,
    /// Its heartbeat address (`None`: unreadable).
    pub(crate) heartbeat: Option<SocketAddr>,
    /// Its `FERROCOLL_TRANSPORT`, as configured.
    pub(crate) transports: String,
    /// Its transport offers, in its preference order.
    pub(crate) offers: Vec<(String, ferrocoll_transports::plugin::AddressBlob)>,
}

/// Parses the record rank `r` published (the store's value `v`): nine lines (the ninth, the world size, is [`super::claims`]'s), see
/// [`connect_ranks`].
pub(crate) fn parse_record(r: usize, v: &[u8]) -> Result<RankRecord> {
    let text = String::from_utf8_lossy(v);
    let lines: Vec<&str> = text.split('\n').collect();
    if lines.len() < 9 {
        return Err(StoreError::Protocol(format!(
            "rank {r} published a record of {} lines, 9 expected (another ferrocoll version?)",
            lines.len()
        ))
        .into());
    }
    Ok(RankRecord {
        host: lines[0].to_string(),
        pid: lines[2].trim().parse::<i32>().ok(),
        cores: lines[3].trim().parse().unwrap_or(0),
        cpus: parse_cpus(r, lines[4])?,
        heartbeat: lines[5].trim().parse::<SocketAddr>().ok(),
        transports: lines[6].trim().to_string(),
        offers: endpoint::parse_offers(r, lines[7])?,
    })
}

/// The value of `key`, waiting up to `timeout` in short slices so that `cancelled()` is
/// heard ([`Error::Aborted`]).
fn get_until(
    store: &dyn Store,
    key: &str,
    timeout: Duration,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<u8>> {
    const SLICE: Duration = Duration::from_millis(50);
    let deadline = Instant::now().checked_add(timeout);
    loop {
        if cancelled() {
            return Err(Error::Aborted);
        }
        let left = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()));
        match store.get_timeout(key, left.min(SLICE)) {
            Err(StoreError::Timeout { .. }) if left > SLICE => {}
            r => return Ok(r?),
        }
    }
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
