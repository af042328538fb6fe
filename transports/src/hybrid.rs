//! An endpoint that reaches ranks on its host over shared memory and the others over TCP.
//!
//! Waiting has to watch two kinds of wake-up (a futex word and a socket poll), which no single
//! system call covers. When both are present, [`HybridEndpoint::wait`] alternates: a short
//! futex wait on the shared-memory doorbell, then a non-blocking poll of the sockets, until
//! either moved or the timeout passed. The slice bounds the extra latency of the side not
//! being waited on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::link::{Endpoint, Link, LinkError};
use crate::shm::ShmEndpoint;
use crate::tcp::TcpEndpoint;

/// Longest futex wait before the sockets are polled again.
const SLICE: Duration = Duration::from_micros(200);

/// See the module docs.
pub struct HybridEndpoint {
    rank: usize,
    world: usize,
    shm: Option<ShmEndpoint>,
    tcp: Option<TcpEndpoint>,
    /// `true` for peers reached over shared memory.
    local: Vec<bool>,
}

impl HybridEndpoint {
    /// Combines the two endpoints of one rank; `local[p]` says which one reaches peer `p`.
    pub fn new(
        rank: usize,
        world: usize,
        shm: Option<ShmEndpoint>,
        tcp: Option<TcpEndpoint>,
        local: Vec<bool>,
    ) -> HybridEndpoint {
        HybridEndpoint {
            rank,
            world,
            shm,
            tcp,
            local,
        }
    }

    /// Which transport reaches `peer` (`"shm"`, `"tcp"`, or `"self"`).
    pub fn transport_of(&self, peer: usize) -> &'static str {
        if peer == self.rank {
            "self"
        } else if self.local.get(peer).copied().unwrap_or(false) {
            "shm"
        } else {
            "tcp"
        }
    }
}

impl Endpoint for HybridEndpoint {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn link(&mut self, peer: usize) -> Option<&mut dyn Link> {
        if peer == self.rank || peer >= self.world {
            return None;
        }
        if self.local[peer] {
            self.shm.as_mut()?.link(peer)
        } else {
            self.tcp.as_mut()?.link(peer)
        }
    }

    fn activity_token(&self) -> u64 {
        // Both are counters that only grow, so their sum changes whenever either does.
        let s = self.shm.as_ref().map_or(0, |e| e.activity_token());
        let t = self.tcp.as_ref().map_or(0, |e| e.activity_token());
        s.wrapping_add(t)
    }

    fn wait(&mut self, token: u64, timeout: Duration) -> Result<(), LinkError> {
        match (&mut self.shm, &mut self.tcp) {
            (Some(s), None) => s.wait(token, timeout),
            (None, Some(t)) => t.wait(token, timeout),
            (None, None) => {
                std::thread::sleep(timeout.min(SLICE));
                Ok(())
            }
            (Some(s), Some(t)) => {
                let deadline = Instant::now() + timeout;
                loop {
                    let (st, tt) = (s.activity_token(), t.activity_token());
                    if st.wrapping_add(tt) != token {
                        return Ok(());
                    }
                    t.wait(tt, Duration::ZERO)?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(());
                    }
                    s.wait(st, left.min(SLICE))?;
                }
            }
        }
    }

    fn interrupter(&self) -> Arc<dyn Fn() + Send + Sync> {
        let a = self.shm.as_ref().map(|e| e.interrupter());
        let b = self.tcp.as_ref().map(|e| e.interrupter());
        Arc::new(move || {
            if let Some(f) = &a {
                f();
            }
            if let Some(f) = &b {
                f();
            }
        })
    }

    fn close_all(&mut self) {
        if let Some(e) = &mut self.shm {
            e.close_all();
        }
        if let Some(e) = &mut self.tcp {
            e.close_all();
        }
    }
}
