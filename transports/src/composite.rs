//! One rank's endpoint composed of the endpoints of several transports, one per peer.
//!
//! The bootstrap picks a transport for every peer (see [`crate::plugin`]) and hands the
//! endpoints it built to [`CompositeEndpoint::new`] with the route of each peer. Links are
//! the parts' links; the activity token is the sum of the parts' tokens (each only grows).
//!
//! Waiting has to watch several kinds of wake-up (a futex word, a socket poll, a fabric's
//! completion queue), which no single system call covers. When the caller's pending work is
//! on one part's links only (the executor says which peers it waits for:
//! [`Endpoint::wait_for`]), the wait is that part's own blocking wait. Otherwise the wait
//! alternates: a short blocking wait on the first part (parts are ordered with the
//! same-host transport first, whose futex wait is the cheapest to cut short), then a
//! non-blocking poll of the others, until one moved or the timeout passed. The slice bounds
//! the extra latency of the parts not being waited on (up to 200 µs on every TCP message of a
//! hierarchical collective's inter-host phase, before `wait_for`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::link::{Endpoint, EndpointCounters, Link, LinkError};

/// Longest blocking wait on the first part before the others are polled again.
const SLICE: Duration = Duration::from_micros(200);

/// The first blocking wait of a mixed wait; each next one is twice as long, up to [`SLICE`].
/// A message that arrives on a part not waited on is seen at most about as late again as
/// it took to come, so a collective's short hops stay short while a long wait still
/// settles at one wake-up per [`SLICE`].
const FIRST_SLICE: Duration = Duration::from_micros(10);

/// One transport's endpoint inside a [`CompositeEndpoint`].
pub struct Part {
    /// The transport's name (`"shm"`, `"tcp"`, `"ofi"`, …).
    pub name: &'static str,
    /// Its endpoint, holding the links of the peers routed to it.
    pub endpoint: Box<dyn Endpoint>,
}

/// See the module docs.
pub struct CompositeEndpoint {
    rank: usize,
    world: usize,
    parts: Vec<Part>,
    /// Per peer, the index of the part that reaches it (`None` for this rank).
    route: Vec<Option<usize>>,
}

impl CompositeEndpoint {
    /// Composes `parts`; `route[p]` is the index of the part whose endpoint holds the link to
    /// peer `p` (`None` for `rank` itself). Put the same-host part first (see the module
    /// docs).
    ///
    /// # Panics
    /// If `route` does not have `world` entries or names a part that does not exist (a bug
    /// in the caller).
    pub fn new(
        rank: usize,
        world: usize,
        parts: Vec<Part>,
        route: Vec<Option<usize>>,
    ) -> CompositeEndpoint {
        assert_eq!(route.len(), world, "one route per rank");
        assert!(
            route.iter().flatten().all(|&i| i < parts.len()),
            "route names a missing part"
        );
        CompositeEndpoint {
            rank,
            world,
            parts,
            route,
        }
    }

    /// Which transport reaches `peer` (`"self"` for this rank, `"none"` out of range).
    pub fn transport_of(&self, peer: usize) -> &'static str {
        if peer == self.rank {
            return "self";
        }
        match self.route.get(peer).copied().flatten() {
            Some(i) => self.parts[i].name,
            None => "none",
        }
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    fn token_of(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |acc, p| acc.wrapping_add(p.endpoint.activity_token()))
    }
}

impl Endpoint for CompositeEndpoint {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn link(&mut self, peer: usize) -> Option<&mut dyn Link> {
        if peer == self.rank {
            return None;
        }
        let i = self.route.get(peer).copied().flatten()?;
        self.parts[i].endpoint.link(peer)
    }

    fn activity_token(&self) -> u64 {
        self.token_of()
    }

    fn wait(&mut self, token: u64, timeout: Duration) -> Result<(), LinkError> {
        match self.parts.len() {
            0 => {
                std::thread::sleep(timeout.min(SLICE));
                Ok(())
            }
            1 => self.parts[0].endpoint.wait(token, timeout),
            _ => {
                let deadline = Instant::now() + timeout;
                let mut slice = FIRST_SLICE;
                loop {
                    let tokens: Vec<u64> = self
                        .parts
                        .iter()
                        .map(|p| p.endpoint.activity_token())
                        .collect();
                    if tokens.iter().fold(0u64, |a, t| a.wrapping_add(*t)) != token {
                        return Ok(());
                    }
                    for (p, t) in self.parts.iter_mut().zip(&tokens).skip(1) {
                        p.endpoint.wait(*t, Duration::ZERO)?;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(());
                    }
                    self.parts[0].endpoint.wait(tokens[0], left.min(slice))?;
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
        let mut only = None;
        for p in peers {
            let r = self.route.get(*p).copied().flatten();
            match (only, r) {
                (_, None) => {}
                (None, Some(i)) => only = Some(i),
                (Some(a), Some(b)) if a == b => {}
                _ => return self.wait(token, timeout),
            }
        }
        match only {
            // Work on one part's links only: that part's own wait, after checking that
            // nothing moved since the caller's token (a later move ends that wait at once).
            // Not while another part has work only its own polling moves (a fabric with
            // manual progress holding a posted write): the mixed wait polls it.
            Some(i)
                if self.parts.len() > 1
                    && !self
                        .parts
                        .iter_mut()
                        .enumerate()
                        .any(|(j, p)| j != i && p.endpoint.needs_progress()) =>
            {
                if self.token_of() != token {
                    return Ok(());
                }
                let t = self.parts[i].endpoint.activity_token();
                self.parts[i].endpoint.wait(t, timeout)
            }
            _ => self.wait(token, timeout),
        }
    }

    fn counters(&self) -> EndpointCounters {
        self.parts
            .iter()
            .fold(EndpointCounters::default(), |sum, p| {
                sum + p.endpoint.counters()
            })
    }

    fn interrupter(&self) -> Arc<dyn Fn() + Send + Sync> {
        let all: Vec<_> = self
            .parts
            .iter()
            .map(|p| p.endpoint.interrupter())
            .collect();
        Arc::new(move || all.iter().for_each(|f| f()))
    }

    fn close_all(&mut self) {
        self.parts.iter_mut().for_each(|p| p.endpoint.close_all());
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
    use crate::shm::ShmEndpoint;
    use crate::tcp::TcpEndpoint;

    const LONG: Duration = Duration::from_secs(20);

    /// Rank 0 of 3 as a hybrid endpoint (rank 1 over shared memory, rank 2 over TCP), rank
    /// 1's shared-memory endpoint, and rank 2's end of the socket.
    fn three() -> (CompositeEndpoint, ShmEndpoint, TcpStream) {
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
        let parts = vec![
            Part {
                name: "shm",
                endpoint: Box::new(shm0),
            },
            Part {
                name: "tcp",
                endpoint: Box::new(tcp0),
            },
        ];
        let ep = CompositeEndpoint::new(0, 3, parts, vec![None, Some(0), Some(1)]);
        (ep, shm1, far)
    }

    /// Waits with `peers` as the hint while `poke` runs 50 ms later on another thread;
    /// returns how long the wait took.
    fn timed_wait(
        ep: &mut CompositeEndpoint,
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
