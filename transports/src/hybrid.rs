//! An endpoint that reaches ranks on its host over shared memory and the others over TCP.
//!
//! Waiting has to watch two kinds of wake-up (a futex word and a socket poll), which no single
//! system call covers. When the caller's pending work is on one kind of link only (the
//! executor says which peers it waits for: [`Endpoint::wait_for`]), the wait is that kind's
//! own blocking wait. Otherwise [`HybridEndpoint::wait`] alternates: a short futex wait on
//! the shared-memory doorbell, then a non-blocking poll of the sockets, until either moved
//! or the timeout passed; the slice bounds the extra latency of the side not being waited
//! on (up to 200 µs on every TCP message of a hierarchical collective's inter-host phase,
//! before `wait_for`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::link::{Endpoint, Link, LinkError};
use crate::shm::ShmEndpoint;
use crate::tcp::TcpEndpoint;

/// Longest futex wait before the sockets are polled again.
const SLICE: Duration = Duration::from_micros(200);

/// The first futex wait of a mixed wait; each next one is twice as long, up to [`SLICE`].
/// A message that arrives on the side not waited on is seen at most about as late again as
/// it took to come, so a collective's short hops stay short while a long wait still
/// settles at one wake-up per [`SLICE`].
const FIRST_SLICE: Duration = Duration::from_micros(10);

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
                let mut slice = FIRST_SLICE;
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
                    s.wait(st, left.min(slice))?;
                    slice = (slice * 2).min(SLICE);
                }
            }
        }
    }

    fn wait_for(
        &mut self,
        token: u64,
        timeout: Duration,
        peers: &[usize],
    ) -> Result<(), LinkError> {
        let local = |p: &usize| self.local.get(*p).copied().unwrap_or(false);
        let (any_shm, any_tcp) = (peers.iter().any(local), !peers.iter().all(local));
        match (&mut self.shm, &mut self.tcp, any_shm, any_tcp) {
            // Work on one kind of link only: that kind's own wait, after checking that
            // nothing moved since the caller's token (a later move ends that wait at once).
            (Some(s), Some(t), true, false) | (Some(s), Some(t), false, true) => {
                let (st, tt) = (s.activity_token(), t.activity_token());
                if st.wrapping_add(tt) != token {
                    return Ok(());
                }
                if any_shm {
                    s.wait(st, timeout)
                } else {
                    t.wait(tt, timeout)
                }
            }
            _ => self.wait(token, timeout),
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

#[cfg(test)]
mod tests {
    //! `wait_for` loses no wake-up: whichever kind of link it watches, a message on a link
    //! it was told about ends the wait long before the timeout.

    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::*;

    const LONG: Duration = Duration::from_secs(20);

    /// Rank 0 of 3 as a hybrid endpoint (rank 1 over shared memory, rank 2 over TCP), rank
    /// 1's shared-memory endpoint, and rank 2's end of the socket.
    fn three() -> (HybridEndpoint, ShmEndpoint, TcpStream) {
        let job = format!("test-{}-hybrid-wait", std::process::id());
        let j1 = job.clone();
        let one = std::thread::spawn(move || ShmEndpoint::open(&j1, 1, 3, &[0, 1], 1 << 16, LONG));
        let shm0 = ShmEndpoint::open(&job, 0, 3, &[0, 1], 1 << 16, LONG).expect("shm rank 0");
        let shm1 = one.join().unwrap().expect("shm rank 1");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let far = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (near, _) = l.accept().unwrap();
        near.set_nonblocking(true).unwrap();
        let tcp0 = TcpEndpoint::from_streams(
            0,
            vec![None, None, Some(mio::net::TcpStream::from_std(near))],
        )
        .expect("tcp rank 0");
        let ep = HybridEndpoint::new(0, 3, Some(shm0), Some(tcp0), vec![false, true, false]);
        (ep, shm1, far)
    }

    /// Waits with `peers` as the hint while `poke` runs 50 ms later on another thread;
    /// returns how long the wait took.
    fn timed_wait(
        ep: &mut HybridEndpoint,
        peers: &[usize],
        poke: impl FnOnce() + Send + 'static,
    ) -> Duration {
        let token = ep.activity_token();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            poke();
        });
        let t0 = Instant::now();
        ep.wait_for(token, LONG, peers).unwrap();
        let took = t0.elapsed();
        t.join().unwrap();
        took
    }

    #[test]
    fn wait_for_wakes_on_the_links_it_watches() {
        let (mut ep, mut shm1, mut far) = three();
        // TCP only: the sockets' own wait.
        let mut f = far.try_clone().unwrap();
        let took = timed_wait(&mut ep, &[2], move || f.write_all(b"tcp!").unwrap());
        assert!(took < LONG / 4, "TCP wake-up lost: {took:?}");
        let deadline = Instant::now() + LONG;
        while ep.link(2).unwrap().peek().unwrap().len() < 4 {
            assert!(Instant::now() < deadline, "TCP bytes never arrived");
        }
        assert_eq!(&ep.link(2).unwrap().peek().unwrap()[..4], b"tcp!");
        ep.link(2).unwrap().consume(4);
        // Shared memory only: the doorbell's wait.
        let took = timed_wait(&mut ep, &[1], move || {
            assert_eq!(shm1.link(0).unwrap().try_write(b"shm!").unwrap(), 4);
        });
        assert!(took < LONG / 4, "shared-memory wake-up lost: {took:?}");
        assert_eq!(&ep.link(1).unwrap().peek().unwrap()[..4], b"shm!");
        // Both kinds: the alternating wait.
        let took = timed_wait(&mut ep, &[1, 2], move || far.write_all(b"more").unwrap());
        assert!(took < LONG / 4, "mixed wake-up lost: {took:?}");
    }
}
