//! In-process worlds: `n` ranks as threads of this process over the `mem` transport, with
//! fault injection. Tests and examples use them; they need no network and no launcher.
//!
//! Direction: `world` builds on `comm` (a world is a way to make communicators), never the
//! reverse. `comm`'s own code does not name [`World`]; only its tests run in one.

use ferrocoll_transports::mem::{mem_world, MemFaults, DEFAULT_RING_BYTES};

use crate::comm::Communicator;
use crate::config::Config;
use crate::error::{Error, Result};

/// Builder and runner of an in-process world.
#[derive(Clone, Debug)]
pub struct World {
    n: usize,
    cfg: Config,
    ring_bytes: usize,
    topo: Option<crate::topology::Topology>,
}

impl World {
    /// A world of `n` ranks with the default configuration.
    pub fn new(n: usize) -> World {
        World {
            n,
            cfg: Config::default(),
            ring_bytes: DEFAULT_RING_BYTES,
            topo: None,
        }
    }

    /// Uses `cfg` for every rank.
    pub fn config(mut self, cfg: Config) -> World {
        self.cfg = cfg;
        self
    }

    /// Plans on `topo` (fake hosts for the in-process ranks) instead of one host; it must
    /// describe this world's ranks, or building the communicators fails.
    pub fn topology(mut self, topo: crate::topology::Topology) -> World {
        self.topo = Some(topo);
        self
    }

    /// Bytes per directed ring (default 4 MiB). Kept at least twice the segment size plus a
    /// header, so that a whole segment always fits.
    pub fn ring_bytes(mut self, bytes: usize) -> World {
        self.ring_bytes = bytes;
        self
    }

    /// One communicator per rank, and the fault-injection handle.
    pub fn communicators(&self) -> Result<(Vec<Communicator>, MemFaults)> {
        if self.n == 0 {
            return Err(Error::InvalidWorld { rank: 0, world: 0 });
        }
        let ring = self
            .ring_bytes
            .max(2 * (self.cfg.segment_bytes + crate::exec::frame::FRAME_BYTES));
        let (eps, faults) = mem_world(self.n, ring);
        let mut cfg = self.cfg.clone();
        cfg.resolve_yield(self.n);
        let comms = eps
            .into_iter()
            .map(|ep| {
                Communicator::from_endpoint_on(Box::new(ep), cfg.clone(), self.topo.clone(), None)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((comms, faults))
    }

    /// Runs `f` on every rank, each in its own thread, and returns the results in rank order.
    pub fn run<R: Send>(&self, f: impl Fn(&Communicator) -> R + Sync) -> Result<Vec<R>> {
        self.run_with_faults(|c, _| f(c))
    }

    /// Like [`World::run`], also handing every rank the fault-injection handle.
    pub fn run_with_faults<R: Send>(
        &self,
        f: impl Fn(&Communicator, &MemFaults) -> R + Sync,
    ) -> Result<Vec<R>> {
        let (comms, faults) = self.communicators()?;
        let f = &f;
        let faults = &faults;
        std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .into_iter()
                .map(|c| {
                    std::thread::Builder::new()
                        .name(format!("rank{}", c.rank()))
                        .spawn_scoped(s, move || f(&c, faults))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h {
                    // A rank's panic is the caller's panic: pass it on.
                    Ok(h) => Ok(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
                    // The rank's communicator was dropped with the closure, closing its links,
                    // so the ranks that did start fail instead of waiting for it.
                    Err(source) => Err(Error::Io {
                        what: "starting a rank thread",
                        source,
                    }),
                })
                .collect()
        })
    }
}
