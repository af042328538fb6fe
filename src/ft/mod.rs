//! Fault tolerance: find a failed rank fast, revoke the communicator on every survivor, agree
//! on who survived, and hand [`crate::Communicator::shrink`] the membership of the next
//! communicator. Growing back (`grow`/`join`) is in `comm/elastic.rs`.
//!
//! # Detection: dead, stopped or unreachable, and not merely slow
//! Every communicator built through a store runs a detector thread (`detector.rs`) with its
//! own UDP socket, published beside the rank's other addresses at rendezvous. Each rank sends
//! a small heartbeat every `heartbeat_timeout / 6` to its next `K` ranks on the rank ring,
//! and watches its previous `K` (so every rank has `K` observers, and a failure goes unseen
//! only if its `K` successors fail with it; the agreement's bound catches that case too). A
//! rank that stays silent for `FERROCOLL_HEARTBEAT_TIMEOUT` is declared failed; a rank on this
//! host whose process is gone (or a zombie) is declared failed at the next tick, once the
//! datagrams already received are read (its goodbye among them, when it left cleanly).
//!
//! A slow rank is told apart from a dead one because heartbeats come from a thread that does
//! nothing else: a rank busy computing, or blocked in a long collective, or waiting on a slow
//! peer, keeps heartbeating; a killed, stopped (`SIGSTOP`) or cut-off process cannot. The
//! timeout (seconds) is many heartbeat periods, so a thread delayed by CPU contention for a
//! few periods is not declared dead. A rank that leaves cleanly (its communicator is dropped)
//! says goodbye and is not counted failed.
//!
//! The transports' own liveness is used too: a collective that fails because a peer's link
//! broke (`Error::PeerFailed`, `Error::Timeout`) revokes the communicator naming that peer,
//! unless a revoke from elsewhere arrives within a short grace (a rank that revokes sends its
//! revoke datagrams before it closes its links, so peers name the failed rank, not it).
//!
//! # Revoke
//! [`Health::revoke`] is idempotent and monotone: the first call records who revoked and
//! which ranks failed, floods a revoke datagram to every rank not known failed, and fails the
//! engine (its abort flag ends the call in progress, in the middle of a ring or a tree).
//! Every pending and later call then returns [`Error::Revoked`]. A rank that receives a
//! revoke does the same (and floods again, so a revoker that dies mid-flood still reaches
//! everyone); while revoked, heartbeats are replaced by revokes, so a lost datagram is resent.
//!
//! # Agreement (`agree.rs`)
//! Once revoked, every survivor's agreement thread registers the rank as alive for epoch `E`
//! in the store, waits until every rank of the communicator has registered or is suspected
//! (a failed rank is suspected within one heartbeat timeout and a live one is not, so the
//! wait ends when the last survivor registers; it is bounded by five heartbeat timeouts for
//! a rank that does neither), and proposes "the registered ranks minus the suspected
//! ones" with one compare-and-set on the epoch's decision key. The first proposal wins;
//! everyone adopts the value that key holds.
//!
//! Why it is correct (crash failures, a linearizable store):
//! - **Agreement:** the decision of epoch `E` is the value of one key, written once by
//!   compare-and-set; every survivor adopts exactly that value, so all hold the same set.
//! - **Validity:** a decided member registered in epoch `E`, so it was alive and knew of the
//!   revocation; a rank that failed before registering is not a member.
//! - **Termination:** a proposer waits at most five heartbeat timeouts, then makes one store
//!   call; a proposer that dies before its compare-and-set wrote nothing, one that dies after
//!   it left a complete decision. No rank waits on another rank's progress.
//! - **Failures during agreement:** a member that fails after the decision is suspected by
//!   the detectors of the still-running old communicator, which starts epoch `E + 1` among the
//!   members of `E`; `shrink` then gives up building `E`'s communicator and uses `E + 1`'s.
//!   Two failures at once are one epoch with both ranks suspected.
//! - A rank left out of a decision while alive (it registered too late) gets
//!   [`Error::Excluded`] from `shrink` and takes no part in later epochs.
//!
//! The store is trusted and must outlive the failure: with rank 0 serving it (a bare
//! `FERROCOLL_STORE=host:port`), rank 0's death ends the job with a typed store error.

pub(crate) mod agree;
pub(crate) use agree::fresh_prefix;
mod detector;
pub(crate) mod wire;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) use agree::Decision;
use ferrocoll_transports::auth::JobKey;
use wire::{Datagram, Kind, ReplayWindow};

use crate::bootstrap::rendezvous::Control;
use crate::bootstrap::Store;
use crate::error::Error;

/// How many successors each rank heartbeats to (and how many observers each rank has).
const K: usize = 3;

/// Something that holds the job's store alive and lends it (the communicator's bootstrap).
pub(crate) trait StoreRef: Send + Sync {
    /// The store.
    fn store(&self) -> &dyn Store;
}

/// The failure state of one communicator, shared by its engine, its detector and agreement
/// threads and its `shrink`.
pub(crate) struct Health {
    pub rank: usize,
    pub world: usize,
    token: u64,
    /// The communicator's key: datagrams carry a tag under it.
    key: JobKey,
    /// The sequence number of the next datagram this rank sends.
    seq: AtomicU64,
    /// The sequence numbers seen from each rank.
    windows: Mutex<Vec<ReplayWindow>>,
    hb_timeout: Duration,
    socket: UdpSocket,
    addrs: Vec<Option<SocketAddr>>,
    revoked: AtomicBool,
    stop: AtomicBool,
    st: Mutex<State>,
    cv: Condvar,
    /// Fails the engine (set once the engine exists).
    hook: OnceLock<Box<dyn Fn(Error) + Send + Sync>>,
}

#[derive(Default)]
struct State {
    /// Who revoked first, and the ranks it named.
    revoked_by: Option<(usize, Vec<usize>)>,
    /// Every rank known failed (detected here or named in a revoke).
    suspects: BTreeSet<usize>,
    /// Ranks that left cleanly.
    departed: BTreeSet<usize>,
    /// The agreement epoch in progress (or last decided).
    epoch: u64,
    /// The latest decision.
    decision: Option<Decision>,
    /// Why the agreement could not go on (the store is gone, this rank was left out).
    agree_error: Option<Arc<Error>>,
    /// A `shrink` built the next communicator: this one's threads stop watching.
    finished: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Health {
    fn new(m: &Control, socket: UdpSocket, hb_timeout: Duration) -> Health {
        Health {
            rank: m.rank,
            world: m.world,
            token: m.token,
            key: m.key.clone(),
            seq: AtomicU64::new(1),
            windows: Mutex::new(vec![ReplayWindow::default(); m.world]),
            hb_timeout,
            socket,
            addrs: m.addrs.clone(),
            revoked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            st: Mutex::new(State::default()),
            cv: Condvar::new(),
            hook: OnceLock::new(),
        }
    }

    /// Connects the engine: `fail` is called once, with [`Error::Revoked`], when this
    /// communicator is revoked.
    pub(crate) fn set_hook(&self, fail: Box<dyn Fn(Error) + Send + Sync>) {
        let _ = self.hook.set(fail);
        // A revoke that came before the engine existed still fails it.
        if let Some(e) = self.revoked_error() {
            if let Some(h) = self.hook.get() {
                h(e);
            }
        }
    }

    /// The heartbeat timeout.
    pub(crate) fn heartbeat_timeout(&self) -> Duration {
        self.hb_timeout
    }

    /// Whether this communicator is revoked.
    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// The error calls report once revoked.
    pub(crate) fn revoked_error(&self) -> Option<Error> {
        let st = lock(&self.st);
        st.revoked_by.as_ref().map(|(by, _)| Error::Revoked {
            rank: self.rank,
            by: *by,
            failed: st.suspects.iter().copied().collect(),
        })
    }

    /// Revokes (first call) or adds `failed` to the known failures (later calls); floods the
    /// news to every rank not known failed and fails the engine. `by` is the rank that
    /// revoked first as far as the caller knows.
    pub(crate) fn revoke(&self, by: usize, failed: &[usize]) {
        let (first, news, by, all) = {
            let mut st = lock(&self.st);
            if st.finished {
                return;
            }
            let before = st.suspects.len();
            st.suspects
                .extend(failed.iter().copied().filter(|&r| r != self.rank));
            let news = st.suspects.len() > before;
            let first = st.revoked_by.is_none();
            if first {
                st.revoked_by = Some((by, failed.to_vec()));
                // Under the lock: whoever sees `revoked_by` set also sees the flag.
                self.revoked.store(true, Ordering::Release);
            }
            let by = st.revoked_by.as_ref().map_or(by, |(b, _)| *b);
            (first, news, by, st.suspects.clone())
        };
        if !(first || news) {
            return;
        }
        if first {
            tracing::warn!(
                rank = self.rank,
                "communicator revoked by rank {by}: failed ranks {all:?}"
            );
        }
        // The news goes out before the engine closes any link (see the module docs).
        self.flood(by, &all);
        self.cv.notify_all();
        if first {
            if let (Some(h), Some(e)) = (self.hook.get(), self.revoked_error()) {
                h(e);
            }
        }
    }

    /// Sends a revoke datagram to every rank not known failed.
    fn flood(&self, by: usize, failed: &BTreeSet<usize>) {
        let d = self.datagram(Kind::Revoke {
            by,
            failed: failed.iter().copied().collect(),
        });
        for (r, a) in self.addrs.iter().enumerate() {
            if let Some(a) = a.filter(|_| r != self.rank && !failed.contains(&r)) {
                let _ = self.socket.send_to(&d, a);
            }
        }
    }

    /// What a call that failed with `e` reports: [`Error::Revoked`] when the communicator is
    /// (or, within a short grace, becomes) revoked. A broken link or a timeout revokes it,
    /// naming the peers at fault (the transport's own liveness).
    pub(crate) fn reconcile(&self, e: Error) -> Error {
        let at_fault: Vec<usize> = match &e {
            Error::PeerFailed { peer, .. } => vec![*peer],
            Error::Timeout { peers, .. } => peers.clone(),
            Error::Aborted | Error::Transport(_) => Vec::new(),
            _ => return e,
        };
        let grace = (self.hb_timeout / 4).min(Duration::from_millis(100));
        if !self.wait_revoked(grace) && !self.drain_revokes() {
            if matches!(e, Error::Aborted) {
                return e;
            }
            self.revoke(self.rank, &at_fault);
        }
        self.revoked_error().unwrap_or(e)
    }

    /// Handles, on the calling thread, the datagrams already waiting on the socket; whether
    /// the communicator is revoked afterwards. A peer that revokes sends its revoke
    /// datagrams before it closes its links, so a link that broke because of a revocation is
    /// explained by one of them, even when the detector thread has not run since it arrived
    /// (a loaded host): without this, the peer would be blamed as failed. A heartbeat read
    /// here is not seen by the detector, which is harmless: the timeout spans six of them.
    fn drain_revokes(&self) -> bool {
        self.drain(|_| {});
        self.is_revoked()
    }

    /// Handles every datagram already waiting on the socket, without blocking, calling `seen`
    /// with the sender of each valid one first.
    pub(super) fn drain(&self, mut seen: impl FnMut(usize)) {
        use std::os::fd::AsRawFd;
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: recv(2) into `buf`, of its length, on our own socket; MSG_DONTWAIT
            // keeps it from blocking (the detector thread's read timeout is not touched).
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                break;
            }
            if let Ok(Some(d)) = self.receive(&buf[..n as usize]) {
                seen(d.from);
                self.on_datagram(d);
            }
        }
    }

    /// Waits up to `d` for a revocation; whether there is one.
    fn wait_revoked(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut st = lock(&self.st);
        while st.revoked_by.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// The bytes of a datagram of `kind` from this rank, with the next sequence number.
    fn datagram(&self, kind: Kind) -> Vec<u8> {
        Datagram {
            token: self.token,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            from: self.rank,
            kind,
        }
        .encode(&self.key)
    }

    /// Decodes and checks received bytes: `Ok(None)` for a valid datagram of another
    /// communicator of the job (a parent's or a child's, sharing the port), `Err` for bytes
    /// to drop (with why), among them a datagram seen before (a replay).
    fn receive(&self, b: &[u8]) -> std::result::Result<Option<Datagram>, &'static str> {
        let d = Datagram::decode(b, self.world, &self.key)?;
        if d.token != self.token {
            return Ok(None);
        }
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !w[d.from].accept(d.seq) {
            return Err("a datagram seen before (a replay)");
        }
        Ok(Some(d))
    }

    /// A datagram from a peer.
    fn on_datagram(&self, d: Datagram) {
        match d.kind {
            Kind::Heartbeat => {}
            Kind::Goodbye => {
                lock(&self.st).departed.insert(d.from);
            }
            Kind::Revoke { by, failed } => self.revoke(by, &failed),
        }
    }

    /// Records the decision of an epoch and wakes `shrink`.
    fn decided(&self, d: Decision) {
        let mut st = lock(&self.st);
        st.decision = Some(d);
        drop(st);
        self.cv.notify_all();
    }

    /// Records why agreement cannot go on.
    fn agreement_failed(&self, e: Error) {
        lock(&self.st)
            .agree_error
            .get_or_insert_with(|| Arc::new(e));
        self.cv.notify_all();
    }

    /// The current epoch (it moves on when a decided member fails).
    pub(crate) fn epoch(&self) -> u64 {
        lock(&self.st).epoch
    }

    /// Waits up to `timeout` for the decision of the current epoch.
    pub(crate) fn wait_decision(&self, timeout: Duration) -> Result<Decision, Error> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.st);
        loop {
            if let Some(e) = &st.agree_error {
                return Err(e.duplicate());
            }
            if let Some(d) = st.decision.as_ref().filter(|d| d.epoch == st.epoch) {
                return Ok(d.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Internal(format!(
                    "rank {}: no agreement on the survivors within {timeout:?}",
                    self.rank
                )));
            }
            st = self
                .cv
                .wait_timeout(st, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A `shrink` built the next communicator from this one's decision: stop watching.
    pub(crate) fn finish(&self) {
        lock(&self.st).finished = true;
        self.cv.notify_all();
    }
}

/// The running detector and agreement threads of one communicator; dropping it says goodbye
/// to the peers and stops the threads.
pub(crate) struct Guard {
    health: Arc<Health>,
    threads: Vec<JoinHandle<()>>,
}

/// Detectors of this process, told to say goodbye when the process exits without dropping
/// its communicators (`std::process::exit` runs no destructors, but it runs `atexit`
/// handlers): a clean exit must not look like a crash to the peers.
static LIVE: Mutex<Vec<std::sync::Weak<Health>>> = Mutex::new(Vec::new());

extern "C" fn goodbye_at_exit() {
    if let Ok(live) = LIVE.try_lock() {
        for h in live.iter().filter_map(std::sync::Weak::upgrade) {
            if !h.stop.swap(true, Ordering::AcqRel) {
                detector::goodbye(&h);
            }
        }
    }
}

fn register(h: &Arc<Health>) {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: `goodbye_at_exit` is a plain `extern "C" fn()` that never unwinds (it only
        // takes a lock without blocking and sends datagrams, ignoring errors).
        unsafe { libc::atexit(goodbye_at_exit) };
    });
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(h));
}

impl Guard {
    /// Starts failure detection for the communicator described by `m` (heartbeating from its
    /// socket); the agreement meets through `store` under keys that start with `prefix`.
    pub(crate) fn start(
        m: Control,
        hb_timeout: Duration,
        store: Arc<dyn StoreRef>,
        prefix: String,
    ) -> Result<Guard, Error> {
        let io = |source| Error::Io {
            what: "starting the failure detector",
            source,
        };
        let tick = detector::tick(hb_timeout);
        let socket = m.socket.try_clone().map_err(io)?;
        socket.set_read_timeout(Some(tick)).map_err(io)?;
        let health = Arc::new(Health::new(&m, socket, hb_timeout));
        register(&health);
        let h = health.clone();
        let pids = m.local_pids.clone();
        let det = std::thread::Builder::new()
            .name(format!("ferrocoll-hb{}", m.rank))
            .spawn(move || detector::run(&h, &pids))
            .map_err(io)?;
        let h = health.clone();
        let agr = std::thread::Builder::new()
            .name(format!("ferrocoll-ag{}", m.rank))
            .spawn(move || agree::run(&h, store.store(), &prefix));
        let mut g = Guard {
            health,
            threads: vec![det],
        };
        g.threads.push(agr.map_err(io)?);
        Ok(g)
    }

    /// The shared state.
    pub(crate) fn health(&self) -> &Arc<Health> {
        &self.health
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let h = &self.health;
        h.stop.store(true, Ordering::Release);
        h.cv.notify_all();
        // Also when revoked: the survivors still building the next communicator must not
        // count this rank failed because the old one went quiet.
        detector::goodbye(h);
        // Wakes the detector from its receive at once (it then sees `stop`).
        if let Ok(me) = h.socket.local_addr() {
            let _ = h.socket.send_to(&[], me);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
