//! The progress engine: one per communicator, the only place that waits.
//!
//! It queues calls, drives them (asking the [`Planner`] for each call's prepared plan and
//! the executor to run it), and records failure. It never sees algorithm names or
//! schedules.
//!
//! Calls become jobs in one FIFO queue (collectives must run in the same order on every
//! rank). Whoever holds the engine lock drives the queue: a blocking call drives it on its own
//! thread (a hand-off to another thread would cost a cross-core wake-up per call), and
//! a background thread, started on the first `*_async` call, drives it for async work.
//!
//! The first failure that touched the wire (peer failure, timeout, mismatch, abort) puts the
//! engine in a failed state: links are closed so peers learn at once, and every pending and
//! later call reports the failure. Argument errors are found before a call is queued and
//! leave the engine usable.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrocoll_transports::Endpoint;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec::frame::OpHeader;
use crate::exec::{self, execute, CallCtx, Mem};
use crate::plan::{CallShape, Planner};
use crate::schedule::{CollSpec, Collective};
use crate::tune::Choice;
use crate::types::{DataType, ReduceOp};

/// How often a caller whose job waits behind another thread's driving looks whether it
/// should drive itself (see `Shared::lock_for`).
const DRIVER_RECHECK: Duration = Duration::from_millis(2);

/// One call, with raw pointers the communicator has checked.
pub(crate) struct Call {
    pub spec: CollSpec,
    pub dtype: DataType,
    pub op: ReduceOp,
    pub input: *const u8,
    pub output: *mut u8,
    pub in_place: bool,
    pub header: OpHeader,
    /// For send/recv: the peer, and whether this side sends.
    pub p2p: Option<(usize, bool)>,
    /// The layout of an uneven collective (checked against the world and the kind).
    pub uneven: Option<Arc<crate::schedule::Uneven>>,
    /// A premul-sum's scalar (the op is then `Sum`).
    pub premul: Option<f64>,
}

impl Call {
    /// Whether this rank moves nothing in the call (it then completes at once).
    fn moves_nothing(&self) -> bool {
        match &self.uneven {
            Some(u) if self.spec.kind.is_uneven() => u.moves_nothing(self.spec.kind),
            _ => self.spec.kind != Collective::Barrier && self.spec.count == 0,
        }
    }
}

// SAFETY: the pointers are only dereferenced by the engine while the job runs, and the
// submitter guarantees (safe API: by owning the buffers in the job; raw API: by contract)
// that they stay valid and unaliased until the job completes.
unsafe impl Send for Call {}
// SAFETY: a `Call` is only read (never written) after it is queued, and its pointers are
// dereferenced only by the one thread driving the engine (under the engine lock).
unsafe impl Sync for Call {}

/// A queued call and, once it ran, its result.
pub(crate) struct Job {
    call: Call,
    /// Buffers owned by the job (safe async API) so they outlive the work.
    keep: Mutex<Option<Box<dyn Any + Send>>>,
    result: Mutex<JobState>,
    cv: Condvar,
    /// The call's id in the flight recorder (set when queued).
    fr_id: AtomicU64,
}

/// A job's result, and whether a thread sleeps on the job's condition variable (std's
/// futex-based `notify_all` makes a system call whether or not anyone waits; on the 8-byte
/// path that was two of them per call).
#[derive(Default)]
struct JobState {
    result: Option<Result<()>>,
    sleepers: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Job {
    pub(crate) fn new(call: Call, keep: Option<Box<dyn Any + Send>>) -> Arc<Job> {
        Arc::new(Job {
            call,
            keep: Mutex::new(keep),
            result: Mutex::new(JobState::default()),
            cv: Condvar::new(),
            fr_id: AtomicU64::new(0),
        })
    }

    fn finish(&self, r: Result<()>) {
        let mut g = lock(&self.result);
        g.result = Some(r);
        if g.sleepers > 0 {
            self.cv.notify_all();
        }
    }

    /// Sleeps until the job has run or `limit` has passed (or a spurious wake-up).
    pub(crate) fn sleep_until_done(&self, limit: Duration) {
        let mut g = lock(&self.result);
        if g.result.is_none() {
            g.sleepers += 1;
            let (mut g, _) = self
                .cv
                .wait_timeout(g, limit)
                .unwrap_or_else(|e| e.into_inner());
            g.sleepers -= 1;
        }
    }

    /// Whether the job has run.
    pub(crate) fn is_done(&self) -> bool {
        lock(&self.result).result.is_some()
    }

    /// Waits until the job has run, at most `limit`; returns its result (`None` when the
    /// limit passed first) and the buffers it kept.
    fn take(&self, limit: Duration) -> (Option<Result<()>>, Option<Box<dyn Any + Send>>) {
        let mut g = lock(&self.result);
        // The usual case: the caller drove the job to its end, and no clock is read.
        if g.result.is_none() {
            let deadline = Instant::now() + limit;
            while g.result.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (None, None);
                }
                // Announced under the lock that `finish` takes, so its notify cannot be
                // missed.
                g.sleepers += 1;
                g = self
                    .cv
                    .wait_timeout(g, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                g.sleepers -= 1;
            }
        }
        let r = g.result.take();
        drop(g);
        (r, lock(&self.keep).take())
    }
}

struct Inner {
    ep: Box<dyn Endpoint>,
    /// Chooses, builds and caches the plan of each call.
    planner: Planner,
    /// Engine-owned scratch, u64 words so any element type is aligned; grows, never shrinks.
    scratch: Vec<u64>,
    /// The executor's per-call state, reused across calls.
    work: exec::Workspace,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Arc<Job>>,
    shutdown: bool,
    worker: bool,
    /// The worker thread sleeps on `queue_cv` (only then does a submit notify it).
    worker_idle: bool,
}

pub(crate) struct Shared {
    pub rank: usize,
    pub cfg: Config,
    inner: Mutex<Inner>,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    abort: AtomicBool,
    interrupt: Arc<dyn Fn() + Send + Sync>,
    failure: Mutex<Option<Arc<Error>>>,
    /// The communicator's failure state, when it runs a failure detector (`crate::ft`):
    /// a failed call is reported as the revocation it caused or met.
    health: OnceLock<Arc<crate::ft::Health>>,
    /// The flight recorder (`crate::recorder`): hooks on queue, start, finish and failure.
    pub(crate) fr: crate::recorder::Handle,
}

/// The engine of one communicator.
pub(crate) struct Engine {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// The engine of the rank at `ep`, planning with `planner`.
    pub(crate) fn new(ep: Box<dyn Endpoint>, cfg: Config, planner: Planner) -> Engine {
        let interrupt = ep.interrupter();
        let fr = crate::recorder::Handle::new(&cfg, ep.rank(), ep.world_size());
        Engine {
            shared: Arc::new(Shared {
                rank: ep.rank(),
                cfg,
                inner: Mutex::new(Inner {
                    ep,
                    planner,
                    scratch: Vec::new(),
                    work: exec::Workspace::default(),
                }),
                queue: Mutex::new(Queue::default()),
                queue_cv: Condvar::new(),
                abort: AtomicBool::new(false),
                interrupt,
                failure: Mutex::new(None),
                health: OnceLock::new(),
                fr,
            }),
            worker: Mutex::new(None),
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(crate) fn shared_arc(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The failure that stopped the engine, if any.
    pub(crate) fn failure(&self) -> Option<Arc<Error>> {
        lock(&self.shared.failure).clone()
    }

    /// Queues `job`; `background` starts the worker thread if needed.
    pub(crate) fn submit(&self, job: Arc<Job>, background: bool) {
        let id = self.shared.fr.queued(&job.call.header, job.call.p2p);
        job.fr_id.store(id, Ordering::Relaxed);
        let mut q = lock(&self.shared.queue);
        q.jobs.push_back(job);
        if background && !q.worker {
            q.worker = true;
            let shared = self.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ferrocoll-r{}", self.shared.rank))
                .spawn(move || worker(shared));
            match handle {
                Ok(h) => *lock(&self.worker) = Some(h),
                // No thread: the job still runs when the caller waits on it.
                Err(_) => q.worker = false,
            }
        }
        let idle = q.worker_idle;
        drop(q);
        if idle {
            self.shared.queue_cv.notify_all();
        }
    }

    /// Connects the communicator's failure state (once).
    pub(crate) fn set_health(&self, h: Arc<crate::ft::Health>) {
        let _ = self.shared.health.set(h);
    }

    /// Raises the abort flag, wakes the engine, and closes the links if it is idle.
    pub(crate) fn abort(&self) {
        let s = &self.shared;
        s.abort.store(true, Ordering::Release);
        s.set_failure(Error::Aborted);
        (s.interrupt)();
        if let Ok(mut inner) = s.inner.try_lock() {
            inner.ep.close_all();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Finish queued work (bounded by the timeout), then stop the worker and close links.
        {
            let mut q = lock(&self.shared.queue);
            q.shutdown = true;
        }
        self.shared.queue_cv.notify_all();
        self.shared.drive(None);
        if let Some(h) = lock(&self.worker).take() {
            let _ = h.join();
        }
        lock(&self.shared.inner).ep.close_all();
    }
}

/// How long the idle background worker sleeps before it looks at the queue again without
/// being woken (a bound, like every wait of the engine; a submit or the communicator's drop
/// wakes it sooner).
const WORKER_RECHECK: Duration = Duration::from_secs(1);

fn worker(shared: Arc<Shared>) {
    loop {
        {
            let mut q = lock(&shared.queue);
            while q.jobs.is_empty() && !q.shutdown {
                q.worker_idle = true;
                q = shared
                    .queue_cv
                    .wait_timeout(q, WORKER_RECHECK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                q.worker_idle = false;
            }
            if q.jobs.is_empty() && q.shutdown {
                return;
            }
        }
        shared.drive(None);
    }
}

impl Shared {
    /// Records the first failure; a revocation replaces any other failure (it names the
    /// ranks that failed, which is what every survivor must report).
    fn set_failure(&self, e: Error) -> Arc<Error> {
        let mut f = lock(&self.failure);
        let revoke = matches!(e, Error::Revoked { .. });
        match &*f {
            Some(old) if !revoke || matches!(**old, Error::Revoked { .. }) => old.clone(),
            _ => f.insert(Arc::new(e)).clone(),
        }
    }

    /// Fails the engine with `e` (a revocation): the call in progress ends at its next
    /// poll and every later call reports `e`. The links stay open until the communicator
    /// is dropped (peers learn of the revocation from the failure detector, not from a
    /// broken link that would name this rank).
    pub(crate) fn revoke(&self, e: Error) {
        let stored = self.set_failure(e);
        self.abort.store(true, Ordering::Release);
        (self.interrupt)();
        self.fr.failure_dump(&stored);
    }

    /// The failure of a call made after the engine failed with `f`.
    pub(crate) fn later_error(f: &Arc<Error>) -> Error {
        match **f {
            Error::Revoked { .. } => f.duplicate(),
            _ => Error::CommFailed(f.clone()),
        }
    }

    /// Runs queued jobs on this thread until `target` has run, then returns its result and
    /// the buffers it kept. Driving runs every job before `target` to its end (each bounded
    /// by the executor's deadlines), so `target` has run when `drive` returns; the wait after
    /// it is bounded all the same, by the communicator's timeout.
    pub(crate) fn wait_job(&self, target: &Arc<Job>) -> (Result<()>, Option<Box<dyn Any + Send>>) {
        self.drive(Some(target));
        match target.take(self.cfg.timeout) {
            (Some(r), keep) => (r, keep),
            (None, _) => (
                Err(Error::Timeout {
                    rank: self.rank,
                    seq: target.call.header.seq,
                    peers: Vec::new(),
                    waited: self.cfg.timeout,
                }),
                None,
            ),
        }
    }

    fn drive(&self, target: Option<&Arc<Job>>) {
        let mut inner = match target {
            None => lock(&self.inner),
            Some(t) => match self.lock_for(t) {
                Some(g) => g,
                None => return,
            },
        };
        loop {
            let job = {
                let mut q = lock(&self.queue);
                if target.is_some_and(|t| t.is_done()) {
                    return;
                }
                match q.jobs.pop_front() {
                    Some(j) => j,
                    None => return,
                }
            };
            let id = job.fr_id.load(Ordering::Relaxed);
            let r = self.run(&mut inner, &job.call, id);
            self.fr.finished(id, &r);
            job.finish(r);
        }
    }

    /// The engine lock, to drive until `target` has run; `None` once `target` has run
    /// without it. While another thread drives (the background worker, which runs every
    /// queued job before it lets go), this one sleeps on its job, not on the lock: the
    /// driver goes on to later jobs that wait for the peers, and a caller whose job has
    /// finished must not wait for those (a pipeline that waits for call `s` while call
    /// `s + 1` waits for the peers' next step would otherwise run in lockstep). The sleep is
    /// bounded so that a caller whose job another caller's thread left queued (two user
    /// threads on one communicator) takes the lock and drives it itself.
    fn lock_for(&self, target: &Job) -> Option<MutexGuard<'_, Inner>> {
        loop {
            if target.is_done() {
                return None;
            }
            match self.inner.try_lock() {
                Ok(g) => return Some(g),
                Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => target.sleep_until_done(DRIVER_RECHECK),
            }
        }
    }

    fn run(&self, inner: &mut Inner, call: &Call, fr_id: u64) -> Result<()> {
        if let Some(f) = lock(&self.failure).clone() {
            return Err(Shared::later_error(&f));
        }
        if call.moves_nothing() {
            return Ok(());
        }
        let es = call.dtype.size();
        let prep = inner.planner.prepare(&CallShape {
            spec: call.spec,
            esize: es,
            op: call.op,
            in_place: call.in_place,
            p2p: call.p2p,
            uneven: call.uneven.clone(),
            premul: call.premul.is_some(),
        })?;
        self.fr
            .started(fr_id, inner.planner.last_algorithm(), &prep);
        let words = (prep.scratch * es).div_ceil(8);
        if inner.scratch.len() < words {
            inner.scratch.resize(words, 0);
        }
        let mem = Mem {
            input: call.input,
            output: call.output,
            scratch: inner.scratch.as_mut_ptr().cast(),
            esize: es,
        };
        let cx = CallCtx {
            rank: self.rank,
            header: call.header,
            dtype: call.dtype,
            op: call.op,
            premul: call.premul.unwrap_or(1.0),
            timeout: self.cfg.timeout,
            spin: self.cfg.spin,
            yield_idle: self.cfg.yield_when_idle.unwrap_or(false),
            abort: &self.abort,
        };
        let inner = &mut *inner;
        // SAFETY: the communicator checked that input/output hold the elements the spec
        // needs and keeps them valid and unaliased until the job completes (see `Call`);
        // scratch was sized for the plan above and is only used by this job.
        let r = unsafe { execute(inner.ep.as_mut(), &prep, &mut inner.work, mem, &cx) };
        if let Err(e) = r {
            // The dump names what this rank saw (a timeout, a broken link) before it
            // becomes the revocation every survivor reports.
            self.fr.comm_failed(fr_id, &e);
            let e = match self.health.get() {
                Some(h) => h.reconcile(e),
                None => e,
            };
            let stored = self.set_failure(e.duplicate());
            inner.ep.close_all();
            tracing::warn!(rank = self.rank, "communicator failed: {stored}");
            return Err(e);
        }
        Ok(())
    }
}

impl Engine {
    /// The tuner's choice for `spec` (what a call of that shape would run), with elements of
    /// `esize` bytes.
    pub(crate) fn choice(&self, spec: &CollSpec, esize: usize) -> Result<Choice> {
        lock(&self.shared.inner).planner.choice(spec, esize)
    }

    /// What the endpoint has counted so far (registration-cache work); waits for a call in
    /// progress to finish.
    pub(crate) fn transport_counters(&self) -> ferrocoll_transports::EndpointCounters {
        lock(&self.shared.inner).ep.counters()
    }

    /// The topology this engine plans on.
    pub(crate) fn topology(&self) -> crate::topology::Topology {
        lock(&self.shared.inner).planner.topology().clone()
    }
}
