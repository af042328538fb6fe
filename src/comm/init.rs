//! The constructors of a [`Communicator`]: over an endpoint's links (an in-process world,
//! tests), for a rank started by a launcher ([`Communicator::from_env`]: configuration and
//! launcher variables, then rendezvous), and from a [`UniqueId`] (NCCL's
//! `ncclCommInitRank`). Splits, which make communicators from another one, are in
//! `split.rs`.

use std::sync::atomic::AtomicU64;

use ferrocoll_transports::Endpoint;

use super::split::{served, Bootstrap, UniqueId};
use super::Communicator;
use crate::bootstrap::rendezvous::{connect_ranks, MeetingStore};
use crate::bootstrap::TcpStore;
use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};

impl Communicator {
    /// A communicator over an endpoint's links (the transports build endpoints; the
    /// in-process [`crate::World`] is the simplest).
    pub fn from_endpoint(ep: Box<dyn Endpoint>, cfg: Config) -> Result<Communicator> {
        Communicator::from_endpoint_on(ep, cfg, None, None)
    }

    /// Like [`Communicator::from_endpoint`], planning on `given` (an in-process world's
    /// described cluster) or on what [`crate::topology::resolve`] finds (`FERROCOLL_TOPO_FILE`,
    /// else the hosts `discovered` at rendezvous, else one host).
    pub(crate) fn from_endpoint_on(
        ep: Box<dyn Endpoint>,
        cfg: Config,
        given: Option<crate::topology::Topology>,
        discovered: Option<crate::topology::Topology>,
    ) -> Result<Communicator> {
        let (rank, world) = (ep.rank(), ep.world_size());
        if world == 0 || rank >= world {
            return Err(Error::InvalidWorld { rank, world });
        }
        let topo = crate::topology::resolve(
            cfg.topo_file.as_deref(),
            cfg.topo_dump_file.as_deref(),
            world,
            rank,
            given,
            discovered,
        )?;
        let planner = crate::plan::Planner::new(&cfg, topo, rank)?;
        Ok(Communicator {
            engine: Engine::new(ep, cfg, planner),
            rank,
            world,
            seq: AtomicU64::new(0),
            send_seq: (0..world).map(|_| AtomicU64::new(0)).collect(),
            recv_seq: (0..world).map(|_| AtomicU64::new(0)).collect(),
            peers: None,
            boot: None,
            ft: None,
        })
    }

    /// A communicator for a rank started by a launcher: reads the configuration
    /// ([`Config::from_env`]) and the launcher variables (see [`crate::config::launcher`]), meets
    /// the other ranks through the store, and connects shared memory to ranks on this host and
    /// TCP to the others.
    pub fn from_env() -> Result<Communicator> {
        let cfg = Config::from_env()?;
        crate::init_logging(cfg.log_level);
        let env = crate::config::launcher::from_env_unchecked()?.ok_or_else(|| Error::Config {
            var: "FERROCOLL_RANK".into(),
            value: String::new(),
            reason: "no launcher variables found (FERROCOLL_RANK/WORLD_SIZE/STORE, torchrun, mpirun or srun)".into(),
        })?;
        Communicator::from_launch(&env, cfg)
    }

    /// A communicator for the rank described by `env` (see [`Communicator::from_env`]).
    ///
    /// Processes of the job that disagree about the ranks get an [`Error::RankConflict`]
    /// naming each side's rank, host and pid, within `cfg.timeout`: a rank not below the
    /// world size (at once, and the others learn it), two processes with one rank, ranks
    /// with different world sizes.
    pub fn from_launch(
        env: &crate::config::launcher::LaunchEnv,
        cfg: Config,
    ) -> Result<Communicator> {
        if env.rank >= env.world {
            return Err(crate::bootstrap::claims::out_of_range(env, &cfg));
        }
        let rv = crate::bootstrap::rendezvous::rendezvous(env, &cfg)?;
        let mut cfg = cfg;
        let me = &rv.peers.hosts[env.rank];
        cfg.resolve_yield(rv.peers.hosts.iter().filter(|h| *h == me).count());
        let hosts =
            crate::topology::Topology::from_hosts(&rv.peers.hosts, &rv.peers.cores, &rv.peers.cpus);
        let boot = Bootstrap::new(rv.store, rv.server);
        Communicator::assemble(
            (rv.endpoint, rv.peers, rv.control),
            cfg,
            None,
            Some(hosts),
            boot,
        )
    }

    /// Rank `rank` of a job of `world` ranks that meet through `id` (see [`UniqueId`]). Every
    /// rank calls this with the same id and world; it returns once all have arrived and the
    /// links are connected (or fails after `cfg.timeout`). The rank 0 that runs in the
    /// process that made the id keeps that store's server alive; if its init fails, the
    /// server stops (so waiting ranks fail too) and the job needs a new id, as with NCCL.
    pub fn from_unique_id(
        id: &UniqueId,
        rank: usize,
        world: usize,
        cfg: Config,
    ) -> Result<Communicator> {
        if world == 0 || rank >= world {
            return Err(Error::InvalidWorld { rank, world });
        }
        crate::init_logging(cfg.log_level);
        let server = if rank == 0 {
            let mut s = served();
            s.iter()
                .position(|(t, _)| *t == id.token)
                .map(|i| s.swap_remove(i).1)
        } else {
            None
        };
        let store = TcpStore::connect_with_secret(id.store, cfg.timeout, Some(&id.secret))?;
        let (ep, peers, control) =
            connect_ranks(&store, Some(id.store), "fc/", rank, world, &cfg, &|| false)?;
        tracing::info!(
            rank,
            world,
            "unique-id rendezvous done; hosts {:?}",
            peers.hosts
        );
        let hosts = crate::topology::Topology::from_hosts(&peers.hosts, &peers.cores, &peers.cpus);
        let boot = Bootstrap::new(MeetingStore::Tcp(store), server);
        Communicator::assemble((ep, peers, control), cfg, None, Some(hosts), boot)
    }
}
