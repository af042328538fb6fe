//! In-process transport: ranks are threads, each directed pair of ranks shares one heap
//! [`ring`](crate::ring), and each rank has one [`Doorbell`] that writers and readers ring.
//!
//! It carries fault injection for tests, driven from any thread through [`MemFaults`]:
//! - [`MemFaults::set_delay`]: bytes on a directed link become visible to the reader only
//!   after a delay (a slow or congested link);
//! - [`MemFaults::drop_link`]: both directions between two ranks fail as if the cable was cut;
//! - [`MemFaults::kill`]: a rank dies; its peers see closed links and its own calls fail.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::copy::Stores;
use crate::doorbell::Doorbell;
use crate::link::{Endpoint, Link, LinkCaps, LinkError, SingleCopy};
use crate::ring::{heap_ring, RingReader, RingWriter};

/// Default bytes per directed ring.
pub const DEFAULT_RING_BYTES: usize = 4 << 20;

/// Write stamps of one directed link: (first byte, end byte, when written).
type Stamps = Mutex<VecDeque<(u64, u64, Instant)>>;

struct Shared {
    n: usize,
    bells: Vec<Doorbell>,
    killed: Vec<AtomicBool>,
    /// `dropped[a * n + b]` for a < b: the link between a and b is cut.
    dropped: Vec<AtomicBool>,
    /// Sticky: some delay was ever set, so writers stamp and readers check stamps.
    delay_on: AtomicBool,
    /// Delay per directed link `from * n + to`.
    delays: Mutex<Vec<Duration>>,
    /// Stamps per directed link `from * n + to`.
    stamps: Vec<Stamps>,
}

impl Shared {
    fn pair(&self, a: usize, b: usize) -> usize {
        a.min(b) * self.n + a.max(b)
    }
    fn delay(&self, from: usize, to: usize) -> Duration {
        self.delays.lock().unwrap_or_else(|e| e.into_inner())[from * self.n + to]
    }
    fn broken(&self, me: usize, peer: usize) -> bool {
        self.killed[peer].load(Ordering::Acquire)
            || self.dropped[self.pair(me, peer)].load(Ordering::Acquire)
    }
    fn ring_all(&self) {
        self.bells.iter().for_each(Doorbell::ring);
    }
}

/// Fault-injection handle for a set of in-process endpoints; cheap to clone and share.
#[derive(Clone)]
pub struct MemFaults {
    shared: Arc<Shared>,
}

impl MemFaults {
    /// Delays every byte sent from `from` to `to` by `delay` (zero removes the delay for bytes
    /// written from now on).
    pub fn set_delay(&self, from: usize, to: usize, delay: Duration) {
        let s = &self.shared;
        s.delays.lock().unwrap_or_else(|e| e.into_inner())[from * s.n + to] = delay;
        s.delay_on.store(true, Ordering::Release);
        s.ring_all();
    }

    /// Cuts the link between `a` and `b` in both directions.
    pub fn drop_link(&self, a: usize, b: usize) {
        let s = &self.shared;
        s.dropped[s.pair(a, b)].store(true, Ordering::Release);
        s.ring_all();
    }

    /// Kills `rank`: its peers see closed links, its own endpoint fails with `Shutdown`.
    pub fn kill(&self, rank: usize) {
        self.shared.killed[rank].store(true, Ordering::Release);
        self.shared.ring_all();
    }

    /// Whether `rank` was killed.
    pub fn is_killed(&self, rank: usize) -> bool {
        self.shared.killed[rank].load(Ordering::Acquire)
    }
}

/// One rank's link to one peer over heap rings.
pub struct MemLink {
    me: usize,
    peer: usize,
    tx: RingWriter,
    rx: RingReader,
    shared: Arc<Shared>,
    written: u64,
    read: u64,
    /// Single-copy announcements made (tickets handed out).
    posted: u64,
}

impl MemLink {
    fn check(&self) -> Result<(), LinkError> {
        if self.shared.killed[self.me].load(Ordering::Acquire) {
            return Err(LinkError::Shutdown);
        }
        if self.shared.broken(self.me, self.peer) {
            return Err(LinkError::Closed { peer: self.peer });
        }
        Ok(())
    }

    /// How many bytes past `self.read` the delay lets the reader see (`None`: no limit).
    fn visible_limit(&self) -> Option<u64> {
        if !self.shared.delay_on.load(Ordering::Acquire) {
            return None;
        }
        let delay = self.shared.delay(self.peer, self.me);
        let s = &self.shared;
        let mut q = s.stamps[self.peer * s.n + self.me]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while q.front().is_some_and(|&(_, _, t)| t + delay <= now) {
            q.pop_front();
        }
        q.front()
            .map(|&(start, _, _)| start.saturating_sub(self.read))
    }
}

impl MemLink {
    /// Runs one write into the ring (`write` returns the bytes it took), records it for the
    /// injected delay and wakes the peer.
    fn write_with(
        &mut self,
        write: impl FnOnce(&mut RingWriter) -> usize,
    ) -> Result<usize, LinkError> {
        self.check()?;
        if self.tx.header().is_closed() {
            return Err(LinkError::Closed { peer: self.peer });
        }
        let n = write(&mut self.tx);
        if n > 0 {
            let s = &self.shared;
            if s.delay_on.load(Ordering::Acquire) && !s.delay(self.me, self.peer).is_zero() {
                s.stamps[self.me * s.n + self.peer]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back((self.written, self.written + n as u64, Instant::now()));
            }
            self.written += n as u64;
            s.bells[self.peer].ring();
        }
        Ok(n)
    }
}

impl Link for MemLink {
    fn peer(&self) -> usize {
        self.peer
    }

    fn try_write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        self.write_with(|tx| tx.write(buf))
    }

    fn try_write_tee(
        &mut self,
        buf: &[u8],
        tee: &mut [u8],
        stores: Stores,
    ) -> Result<usize, LinkError> {
        self.write_with(|tx| tx.write_tee(buf, tee, stores))
    }

    fn peek(&mut self) -> Result<&[u8], LinkError> {
        self.check()?;
        let limit = self.visible_limit();
        let closed = self.rx.header().is_closed();
        let s = self.rx.peek();
        if s.is_empty() && closed {
            return Err(LinkError::Closed { peer: self.peer });
        }
        let n = limit.map_or(s.len(), |l| s.len().min(l as usize));
        Ok(&s[..n])
    }

    fn consume(&mut self, n: usize) {
        if n > 0 {
            self.rx.consume(n);
            self.read += n as u64;
            self.shared.bells[self.peer].ring();
        }
    }

    fn close(&mut self) {
        self.tx.header().close();
        self.rx.header().close();
        self.shared.bells[self.peer].ring();
    }

    fn caps(&self) -> LinkCaps {
        LinkCaps {
            single_copy: true,
            streaming_stores: true,
            registered_memory: false,
            max_in_flight: Some(self.tx.capacity()),
        }
    }

    fn single_copy(&mut self) -> Option<&mut dyn SingleCopy> {
        Some(self)
    }
}

/// Threads of one process read each other's buffers with the same system call as processes
/// do, so that the kernel checks the announced addresses.
impl SingleCopy for MemLink {
    fn post(&mut self) -> u64 {
        self.posted += 1;
        self.posted
    }

    fn acked(&mut self) -> Result<u64, LinkError> {
        self.check()?;
        let acks = self.tx.header().single_copy_acks();
        if acks < self.posted && self.rx.header().is_closed() {
            return Err(LinkError::Closed { peer: self.peer });
        }
        Ok(acks)
    }

    fn read(&mut self, addr: u64, dst: &mut [u8]) -> Result<(), LinkError> {
        self.check()?;
        let len = dst.len();
        crate::cma::read_remote(std::process::id() as i32, addr, dst)
            .map_err(|e| crate::cma::read_error(self.peer, addr, len, e))
    }

    fn ack(&mut self) {
        self.rx.header().add_single_copy_ack();
        self.shared.bells[self.peer].ring();
    }
}

/// One rank's endpoint in an in-process world.
pub struct MemEndpoint {
    rank: usize,
    links: Vec<Option<MemLink>>,
    shared: Arc<Shared>,
}

impl Endpoint for MemEndpoint {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.n
    }

    fn link(&mut self, peer: usize) -> Option<&mut dyn Link> {
        self.links
            .get_mut(peer)?
            .as_mut()
            .map(|l| l as &mut dyn Link)
    }

    fn activity_token(&self) -> u64 {
        self.shared.bells[self.rank].token()
    }

    fn wait(&mut self, token: u64, timeout: Duration) -> Result<(), LinkError> {
        if self.shared.killed[self.rank].load(Ordering::Acquire) {
            return Err(LinkError::Shutdown);
        }
        // Delayed bytes become visible without anyone ringing: poll at a fine grain.
        let timeout = if self.shared.delay_on.load(Ordering::Acquire) {
            timeout.min(Duration::from_micros(200))
        } else {
            timeout
        };
        self.shared.bells[self.rank].wait(token, timeout);
        Ok(())
    }

    fn interrupter(&self) -> Arc<dyn Fn() + Send + Sync> {
        let shared = self.shared.clone();
        let rank = self.rank;
        Arc::new(move || shared.bells[rank].ring())
    }

    fn close_all(&mut self) {
        for l in self.links.iter_mut().flatten() {
            l.close();
        }
    }
}

impl Drop for MemEndpoint {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// Builds the endpoints of an `n`-rank in-process world whose rings hold `ring_bytes` each,
/// and the handle that injects faults into it.
pub fn mem_world(n: usize, ring_bytes: usize) -> (Vec<MemEndpoint>, MemFaults) {
    let shared = Arc::new(Shared {
        n,
        bells: (0..n).map(|_| Doorbell::new()).collect(),
        killed: (0..n).map(|_| AtomicBool::new(false)).collect(),
        dropped: (0..n * n).map(|_| AtomicBool::new(false)).collect(),
        delay_on: AtomicBool::new(false),
        delays: Mutex::new(vec![Duration::ZERO; n * n]),
        stamps: (0..n * n).map(|_| Mutex::new(VecDeque::new())).collect(),
    });
    // rings[from][to]: halves of the ring carrying bytes from `from` to `to`.
    let mut writers: Vec<Vec<Option<RingWriter>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut readers: Vec<Vec<Option<RingReader>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (w, r) = heap_ring(ring_bytes);
                writers[from][to] = Some(w);
                readers[to][from] = Some(r);
            }
        }
    }
    let endpoints = (0..n)
        .map(|me| MemEndpoint {
            rank: me,
            links: (0..n)
                .map(|peer| {
                    let tx = writers[me][peer].take()?;
                    let rx = readers[me][peer].take()?;
                    Some(MemLink {
                        me,
                        peer,
                        tx,
                        rx,
                        shared: shared.clone(),
                        written: 0,
                        read: 0,
                        posted: 0,
                    })
                })
                .collect(),
            shared: shared.clone(),
        })
        .collect();
    (endpoints, MemFaults { shared })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_all(l: &mut dyn Link, mut b: &[u8]) {
        while !b.is_empty() {
            let n = l.try_write(b).unwrap();
            b = &b[n..];
        }
    }

    #[test]
    fn bytes_flow_both_ways() {
        let (mut eps, _f) = mem_world(2, 64);
        let mut e1 = eps.pop().unwrap();
        let mut e0 = eps.pop().unwrap();
        send_all(e0.link(1).unwrap(), b"hello");
        send_all(e1.link(0).unwrap(), b"world");
        let mut buf = [0u8; 5];
        assert_eq!(e1.link(0).unwrap().read_into(&mut buf).unwrap(), 5);
        assert_eq!(&buf, b"hello");
        assert_eq!(e0.link(1).unwrap().read_into(&mut buf).unwrap(), 5);
        assert_eq!(&buf, b"world");
        assert!(e0.link(0).is_none());
    }

    #[test]
    fn kill_closes_peers_and_shuts_down_self() {
        let (mut eps, f) = mem_world(3, 64);
        f.kill(1);
        assert!(matches!(
            eps[0].link(1).unwrap().try_write(b"x"),
            Err(LinkError::Closed { peer: 1 })
        ));
        assert!(matches!(
            eps[1].link(0).unwrap().peek(),
            Err(LinkError::Shutdown)
        ));
        assert!(eps[0].link(2).unwrap().try_write(b"x").is_ok());
        assert!(f.is_killed(1));
    }

    #[test]
    fn dropped_link_fails_both_sides_only() {
        let (mut eps, f) = mem_world(3, 64);
        f.drop_link(0, 2);
        assert!(matches!(
            eps[2].link(0).unwrap().peek(),
            Err(LinkError::Closed { peer: 0 })
        ));
        assert!(matches!(
            eps[0].link(2).unwrap().try_write(b"x"),
            Err(LinkError::Closed { peer: 2 })
        ));
        assert!(eps[0].link(1).unwrap().try_write(b"x").is_ok());
    }

    #[test]
    fn close_is_seen_after_drain() {
        let (mut eps, _f) = mem_world(2, 64);
        send_all(eps[0].link(1).unwrap(), b"ab");
        eps[0].close_all();
        let l = eps[1].link(0).unwrap();
        assert_eq!(l.peek().unwrap(), b"ab");
        l.consume(2);
        assert!(matches!(l.peek(), Err(LinkError::Closed { peer: 0 })));
    }

    #[test]
    fn single_copy_reads_acks_and_refuses_bad_addresses() {
        let (mut eps, _f) = mem_world(2, 64);
        let src = vec![7u8; 1000];
        let t = eps[0].link(1).unwrap().single_copy().unwrap().post();
        assert_eq!(t, 1);
        assert_eq!(
            eps[0]
                .link(1)
                .unwrap()
                .single_copy()
                .unwrap()
                .acked()
                .unwrap(),
            0
        );
        let mut dst = vec![0u8; 1000];
        let d = eps[1].link(0).unwrap().single_copy().unwrap();
        d.read(src.as_ptr() as u64, &mut dst).unwrap();
        assert_eq!(dst, src);
        d.ack();
        assert_eq!(
            eps[0]
                .link(1)
                .unwrap()
                .single_copy()
                .unwrap()
                .acked()
                .unwrap(),
            1
        );
        // An address that is not mapped (garbage from a peer) is a typed error, not a crash.
        let e = eps[1]
            .link(0)
            .unwrap()
            .single_copy()
            .unwrap()
            .read(8, &mut dst);
        assert!(
            matches!(e, Err(LinkError::Protocol { peer: 0, .. })),
            "{e:?}"
        );
    }

    #[test]
    fn delay_hides_bytes_until_due() {
        let (mut eps, f) = mem_world(2, 64);
        f.set_delay(0, 1, Duration::from_millis(50));
        send_all(eps[0].link(1).unwrap(), b"late");
        assert!(eps[1].link(0).unwrap().peek().unwrap().is_empty());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(eps[1].link(0).unwrap().peek().unwrap(), b"late");
    }
}
