//! Transport choice and endpoint building: which peers a rank reaches over shared memory
//! and which over TCP (`FERROCOLL_TRANSPORT`, host identities), and the links themselves.

use std::net::{SocketAddr, TcpListener};

use ferrocoll_transports::hybrid::HybridEndpoint;
use ferrocoll_transports::shm::{ShmEndpoint, ShmOptions};
use ferrocoll_transports::tcp::TcpEndpoint;

use crate::config::{Config, TransportChoice};
use crate::error::{Error, Result};

/// Per peer, whether `rank` reaches it over shared memory: the ranks of its host under
/// `auto`, every rank under `shm` (an error when one is on another host), none under `tcp`.
pub(super) fn use_shm(cfg: &Config, rank: usize, hosts: &[String]) -> Result<Vec<bool>> {
    let world = hosts.len();
    let same_host: Vec<bool> = hosts.iter().map(|h| *h == hosts[rank]).collect();
    Ok(match cfg.transport {
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
    })
}

/// Connects `rank`'s links: shared memory to the peers of `use_shm` (a segment named by the
/// job `token`), TCP to the others (accepting on `listener`, dialling `addrs`).
pub(super) fn build_endpoint(
    rank: usize,
    token: u64,
    listener: TcpListener,
    addrs: &[SocketAddr],
    use_shm: &[bool],
    cfg: &Config,
) -> Result<HybridEndpoint> {
    let world = use_shm.len();
    let local: Vec<usize> = (0..world).filter(|&p| use_shm[p]).collect();
    let shm = if local.len() > 1 {
        let opts = ShmOptions {
            ring_bytes: cfg.shm_ring_bytes,
            timeout: cfg.timeout,
            spin: std::time::Duration::ZERO,
            single_copy: cfg.shm_direct,
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
            addrs,
            &wanted,
            token,
            cfg.timeout,
        )?)
    } else {
        None
    };
    let mut local_flags = use_shm.to_vec();
    local_flags[rank] = false;
    Ok(HybridEndpoint::new(rank, world, shm, tcp, local_flags))
}
