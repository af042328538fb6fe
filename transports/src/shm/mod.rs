//! Shared-memory transport: the ranks of one host exchange bytes through one segment.
//!
//! One segment per (job, host) — a file under `/dev/shm` named by [`segment_path`] — holds a
//! control block (magic, version, sizes, a "mapped" counter, each local rank's pid), one
//! futex doorbell per local rank and one [`ring`](crate::ring) per directed pair of local
//! ranks. The lowest local rank creates it (`O_EXCL`); the others wait until it exists and
//! its magic word is published. The last rank to map the segment unlinks the file, so
//! nothing stays in `/dev/shm` even if processes crash afterwards; every error path and
//! `Drop` unlink it too if it is still linked.
//!
//! Waking: writers and readers ring the peer's [`ShmBell`] (an atomic increment, plus
//! `FUTEX_WAKE` only if the peer announced that it sleeps). [`Endpoint::wait`] spins briefly
//! and then parks on its own bell.
//!
//! Peer death: a crashed peer never closes its rings, so the endpoint checks, at most every
//! [`PID_CHECK_INTERVAL`] and only while no data moves, whether each local peer's process
//! still exists (`kill(pid, 0)`, and a zombie counts as gone; a peer in another pid
//! namespace cannot be watched this way and is skipped); a vanished peer's link then reports
//! [`LinkError::Closed`] once the bytes that arrived before the crash are read.

mod bell;
pub mod factory;
mod segment;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::copy::Stores;
use crate::link::{Endpoint, Link, LinkError};
use crate::ring::{ring_from_raw, RingHeader, RingReader, RingWriter};

mod single_copy;

pub use bell::ShmBell;
pub use segment::{process_gone, segment_path};
use segment::{Layout, Mapping};

/// Default bytes per directed ring.
pub const DEFAULT_RING_BYTES: usize = 4 << 20;
/// Default time [`Endpoint::wait`] spins before it parks on the futex.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);
/// Local peers' processes are checked for liveness at most this often.
pub const PID_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// State shared by an endpoint, its links and its interrupter.
struct Inner {
    map: Arc<Mapping>,
    path: std::path::PathBuf,
    /// Global rank of each local index.
    local_ranks: Vec<usize>,
    /// This rank's local index.
    me: usize,
    bells: Vec<ShmBell>,
    /// Per local index: the peer's process is known to be gone.
    dead: Vec<AtomicBool>,
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last liveness check.
    last_check: AtomicU64,
}

impl Inner {
    /// Checks the local peers' pids if `force` or the last check is older than
    /// [`PID_CHECK_INTERVAL`].
    /// Returns whether a peer was newly found dead.
    fn check_peers(&self, force: bool) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let last = self.last_check.load(Ordering::Relaxed);
        if !force && now.saturating_sub(last) < PID_CHECK_INTERVAL.as_nanos() as u64
            || self
                .last_check
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        let own = std::process::id() as i32;
        let own_ns = self.map.slot(self.me).pid_ns.load(Ordering::Relaxed);
        let mut newly = false;
        for (i, dead) in self.dead.iter().enumerate() {
            if i == self.me || dead.load(Ordering::Acquire) {
                continue;
            }
            // A pid is whatever the peer (or garbage) wrote: only a positive value from our
            // own pid namespace names a process we can watch.
            let slot = self.map.slot(i);
            let pid = slot.pid.load(Ordering::Acquire);
            let ns = slot.pid_ns.load(Ordering::Relaxed);
            if pid <= 0 || pid == own || ns != own_ns {
                continue;
            }
            if segment::process_gone(pid) {
                tracing::warn!(
                    "shm: local peer rank {} (pid {pid}) is gone",
                    self.local_ranks[i]
                );
                dead.store(true, Ordering::Release);
                newly = true;
            }
        }
        newly
    }
}

/// One rank's link to one peer on the same host, over two rings in the shared segment.
pub struct ShmLink {
    peer: usize,
    /// The peer's local index.
    peer_local: usize,
    tx: RingWriter,
    rx: RingReader,
    inner: Arc<Inner>,
    empty_polls: u32,
    /// Single-copy state; `None` where cross-memory attach to this peer is not available.
    single_copy: Option<single_copy::SingleCopyState>,
}

impl ShmLink {
    fn peer_dead(&self) -> bool {
        self.inner.dead[self.peer_local].load(Ordering::Acquire)
    }

    fn ring_peer(&self) {
        self.inner.bells[self.peer_local].ring();
    }
}

impl ShmLink {
    /// Runs one write into the ring (`write` returns the bytes it took), then wakes the peer,
    /// or, when nothing fit, looks now and then whether the reader died.
    fn write_with(
        &mut self,
        empty: bool,
        write: impl FnOnce(&mut RingWriter) -> usize,
    ) -> Result<usize, LinkError> {
        if self.tx.header().is_closed() || self.peer_dead() {
            return Err(LinkError::Closed { peer: self.peer });
        }
        let n = write(&mut self.tx);
        if n > 0 {
            self.ring_peer();
        } else if !empty {
            // A full ring whose reader crashed never drains: look at the peer now and then.
            self.empty_polls = self.empty_polls.wrapping_add(1);
            if self.empty_polls & 255 == 0 && self.inner.check_peers(false) && self.peer_dead() {
                return Err(LinkError::Closed { peer: self.peer });
            }
        }
        Ok(n)
    }
}

impl Link for ShmLink {
    fn peer(&self) -> usize {
        self.peer
    }

    fn try_write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        self.write_with(buf.is_empty(), |tx| tx.write(buf))
    }

    fn try_write_tee(
        &mut self,
        buf: &[u8],
        tee: &mut [u8],
        stores: Stores,
    ) -> Result<usize, LinkError> {
        self.write_with(buf.is_empty(), |tx| tx.write_tee(buf, tee, stores))
    }

    fn peek(&mut self) -> Result<&[u8], LinkError> {
        let closed = self.rx.header().is_closed();
        let s = self.rx.peek();
        if !s.is_empty() {
            self.empty_polls = 0;
            return Ok(s);
        }
        if closed {
            return Err(LinkError::Closed { peer: self.peer });
        }
        self.empty_polls = self.empty_polls.wrapping_add(1);
        if self.empty_polls & 255 == 0 {
            self.inner.check_peers(false);
        }
        if self.inner.dead[self.peer_local].load(Ordering::Acquire) {
            return Err(LinkError::Closed { peer: self.peer });
        }
        Ok(s)
    }

    fn consume(&mut self, n: usize) {
        if n > 0 {
            self.rx.consume(n);
            self.ring_peer();
        }
    }

    fn close(&mut self) {
        self.tx.header().close();
        self.rx.header().close();
        self.ring_peer();
    }

    fn caps(&self) -> crate::link::LinkCaps {
        crate::link::LinkCaps {
            single_copy: self.single_copy.is_some(),
            streaming_stores: true,
            registered_memory: false,
            max_in_flight: Some(self.tx.capacity()),
        }
    }

    fn single_copy(&mut self) -> Option<&mut dyn crate::link::SingleCopy> {
        if self.single_copy.is_some() {
            Some(self)
        } else {
            None
        }
    }
}

/// Options of [`ShmEndpoint::open_with`].
#[derive(Clone, Debug)]
pub struct ShmOptions {
    /// Bytes per directed ring (rounded up to a power of two, at least 4 KiB); every local
    /// rank must use the same value.
    pub ring_bytes: usize,
    /// How long to wait for the segment to appear and for every local rank to map it.
    pub timeout: Duration,
    /// How long [`Endpoint::wait`] spins before it parks.
    pub spin: Duration,
    /// Offer single-copy transfers ([`crate::link::SingleCopy`], Linux cross-memory attach)
    /// on links where a probe read of the peer's memory succeeds.
    pub single_copy: bool,
}

impl Default for ShmOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            timeout: Duration::from_secs(300),
            spin: DEFAULT_SPIN,
            single_copy: true,
        }
    }
}

/// One rank's endpoint over the shared-memory segment of its host.
pub struct ShmEndpoint {
    rank: usize,
    world: usize,
    links: Vec<Option<ShmLink>>,
    inner: Arc<Inner>,
    spin: Duration,
}

/// `now + d`, saturating far in the future instead of overflowing.
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn setup_error(rank: usize, source: io::Error) -> LinkError {
    LinkError::Io { peer: rank, source }
}

fn invalid_input(rank: usize, msg: String) -> LinkError {
    setup_error(rank, io::Error::new(io::ErrorKind::InvalidInput, msg))
}

impl ShmEndpoint {
    /// Opens (the lowest local rank: creates) the segment of `job` on this host and returns
    /// `rank`'s endpoint, after every rank in `local_ranks` has mapped it.
    ///
    /// `local_ranks` are the global ranks on this host, sorted, including `rank`; every one
    /// of them must call this with the same `job`, `local_ranks` and `ring_bytes` within
    /// `timeout`. Errors ([`LinkError::Io`] naming `rank` as the peer): bad arguments, a
    /// stale or foreign file of the same name, a rank that did not come in time.
    pub fn open(
        job: &str,
        rank: usize,
        world: usize,
        local_ranks: &[usize],
        ring_bytes: usize,
        timeout: Duration,
    ) -> Result<ShmEndpoint, LinkError> {
        let opts = ShmOptions {
            ring_bytes,
            timeout,
            ..ShmOptions::default()
        };
        Self::open_with(job, rank, world, local_ranks, &opts)
    }

    /// [`ShmEndpoint::open`] with all options.
    pub fn open_with(
        job: &str,
        rank: usize,
        world: usize,
        local_ranks: &[usize],
        opts: &ShmOptions,
    ) -> Result<ShmEndpoint, LinkError> {
        let deadline = deadline_after(opts.timeout);
        if !local_ranks.windows(2).all(|w| w[0] < w[1])
            || local_ranks.last().is_some_and(|&r| r >= world)
        {
            return Err(invalid_input(
                rank,
                format!("local ranks {local_ranks:?} must be sorted, distinct and < {world}"),
            ));
        }
        let Some(me) = local_ranks.iter().position(|&r| r == rank) else {
            return Err(invalid_input(
                rank,
                format!("rank {rank} is not among the local ranks {local_ranks:?}"),
            ));
        };
        let ring_bytes = opts.ring_bytes.max(4096).checked_next_power_of_two();
        let Some(layout) = ring_bytes.and_then(|b| Layout::new(local_ranks.len(), b)) else {
            return Err(invalid_input(
                rank,
                format!(
                    "no segment layout for {} local ranks with {} byte rings",
                    local_ranks.len(),
                    opts.ring_bytes
                ),
            ));
        };
        let path = segment_path(job, local_ranks);
        let map = if me == 0 {
            segment::create(&path, &layout)
        } else {
            segment::attach(&path, &layout, deadline)
        }
        .map_err(|e| setup_error(rank, e))?;
        let map = Arc::new(map);
        // From here on, any failure unlinks the segment if it is still linked.
        let res = Self::join(&map, &layout, me, deadline).and_then(|()| {
            Self::assemble(
                map.clone(),
                &layout,
                path.clone(),
                rank,
                world,
                local_ranks,
                me,
            )
        });
        match res {
            Ok(mut ep) => {
                ep.spin = opts.spin;
                if opts.single_copy {
                    for l in ep.links.iter_mut().flatten() {
                        l.single_copy = single_copy::SingleCopyState::probe(&map, l.peer_local);
                    }
                }
                Ok(ep)
            }
            Err(e) => {
                segment::unlink_once(&map, &path);
                Err(setup_error(rank, e))
            }
        }
    }

    /// Claims local slot `me`, publishes our pid and waits until every local rank has
    /// mapped the segment (the first to see that unlinks it, in `assemble`).
    fn join(map: &Mapping, layout: &Layout, me: usize, deadline: Instant) -> io::Result<()> {
        let slot = map.slot(me);
        if slot
            .claimed
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("local rank index {me} opened the segment twice"),
            ));
        }
        slot.pid_ns.store(segment::own_pid_ns(), Ordering::Relaxed);
        slot.base.store(map.at(0) as u64, Ordering::Relaxed);
        slot.pid.store(std::process::id() as i32, Ordering::Release);
        let c = map.control();
        let n = layout.n as u32;
        c.mapped.fetch_add(1, Ordering::AcqRel);
        let mut pause = Duration::from_micros(50);
        loop {
            let mapped = c.mapped.load(Ordering::Acquire);
            if mapped >= n {
                break;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("only {mapped} of {n} local ranks mapped the segment in time"),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        Ok(())
    }

    fn assemble(
        map: Arc<Mapping>,
        layout: &Layout,
        path: std::path::PathBuf,
        rank: usize,
        world: usize,
        local_ranks: &[usize],
        me: usize,
    ) -> io::Result<ShmEndpoint> {
        // Everyone has mapped it: the file is no longer needed (idempotent).
        segment::unlink_once(&map, &path);
        let bells = (0..layout.n)
            .map(|i| {
                let p = map.at(layout.bell(i)) as *const bell::BellWords;
                // SAFETY: `layout.bell(i)` is 128-byte aligned inside the mapping (the
                // layout reserves n bells there) and `map` keeps the mapping alive.
                unsafe { ShmBell::new(p, map.clone()) }
            })
            .collect();
        let inner = Arc::new(Inner {
            map: map.clone(),
            path,
            local_ranks: local_ranks.to_vec(),
            me,
            bells,
            dead: (0..layout.n).map(|_| AtomicBool::new(false)).collect(),
            epoch: Instant::now(),
            last_check: AtomicU64::new(0),
        });
        let mut links: Vec<Option<ShmLink>> = (0..world).map(|_| None).collect();
        for (j, &peer) in local_ranks.iter().enumerate() {
            if j == me {
                continue;
            }
            let half = |from: usize, to: usize| {
                let (hdr, data) = layout.ring(from, to);
                let owner: Arc<dyn std::any::Any + Send + Sync> = map.clone();
                // SAFETY: the layout places an (initially zeroed, hence valid) RingHeader
                // at `hdr`, page aligned, followed by `ring_bytes` (a power of two) of data,
                // all inside the mapping that `owner` keeps alive. Only local rank `from`
                // uses the writer half of ring (from, to) and only `to` the reader half:
                // each local index is claimed by exactly one endpoint (slot CAS in `join`),
                // and the half of each pair that this rank does not own is dropped unused.
                unsafe {
                    ring_from_raw(
                        map.at(hdr) as *const RingHeader,
                        map.at(data),
                        layout.ring_bytes,
                        owner,
                    )
                }
            };
            let (tx, _) = half(me, j);
            let (_, rx) = half(j, me);
            links[peer] = Some(ShmLink {
                peer,
                peer_local: j,
                tx,
                rx,
                inner: inner.clone(),
                empty_polls: 0,
                single_copy: None,
            });
        }
        Ok(ShmEndpoint {
            rank,
            world,
            links,
            inner,
            spin: DEFAULT_SPIN,
        })
    }

    /// A handle to this rank's doorbell: its token is the endpoint's activity token, and
    /// other transports may ring it so that one wait covers them too.
    pub fn doorbell(&self) -> ShmBell {
        self.inner.bells[self.inner.me].clone()
    }

    /// Path of the segment file (already unlinked once `open` returned).
    pub fn segment_path(&self) -> &std::path::Path {
        &self.inner.path
    }

    /// The global ranks on this host, sorted.
    pub fn local_ranks(&self) -> &[usize] {
        &self.inner.local_ranks
    }

    /// Checks the local peers' processes now (normally done at most every
    /// [`PID_CHECK_INTERVAL`] while waiting) and returns the global ranks known to be gone.
    pub fn dead_peers(&self) -> Vec<usize> {
        self.inner.check_peers(true);
        self.inner
            .dead
            .iter()
            .enumerate()
            .filter(|(_, d)| d.load(Ordering::Acquire))
            .map(|(i, _)| self.inner.local_ranks[i])
            .collect()
    }

    /// Test hook: pretends local index `i` runs as `pid`.
    #[cfg(test)]
    fn set_pid_for_test(&self, i: usize, pid: i32) {
        self.inner.map.slot(i).pid.store(pid, Ordering::Release);
    }
}

impl Endpoint for ShmEndpoint {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn link(&mut self, peer: usize) -> Option<&mut dyn Link> {
        self.links
            .get_mut(peer)?
            .as_mut()
            .map(|l| l as &mut dyn Link)
    }

    fn activity_token(&self) -> u64 {
        self.inner.bells[self.inner.me].token()
    }

    fn wait(&mut self, token: u64, timeout: Duration) -> Result<(), LinkError> {
        let bell = &self.inner.bells[self.inner.me];
        let deadline = deadline_after(timeout);
        let mut spin = self.spin;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let slice = (deadline - now).min(PID_CHECK_INTERVAL);
            if bell.wait(token, spin, slice) || self.inner.check_peers(false) {
                return Ok(());
            }
            spin = Duration::ZERO;
        }
    }

    fn interrupter(&self) -> Arc<dyn Fn() + Send + Sync> {
        let bell = self.doorbell();
        Arc::new(move || bell.ring())
    }

    fn close_all(&mut self) {
        for l in self.links.iter_mut().flatten() {
            l.close();
        }
    }
}

impl Drop for ShmEndpoint {
    fn drop(&mut self) {
        self.close_all();
        segment::unlink_once(&self.inner.map, &self.inner.path);
    }
}
