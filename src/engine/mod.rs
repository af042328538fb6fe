//! The progress engine: one per communicator, the only place that waits.
//!
//! Calls become jobs in one FIFO queue (collectives must run in the same order on every
//! rank). Whoever holds the engine lock drives the queue: a blocking call drives it on its own
//! thread (a hand-off to another thread costs a cross-core wake-up, ~50 µs on small VMs), and
//! a background thread, started on the first `*_async` call, drives it for async work.
//!
//! The first failure that touched the wire (peer failure, timeout, mismatch, abort) puts the
//! engine in a failed state: links are closed so peers learn at once, and every pending and
//! later call reports the failure. Argument errors are found before a call is queued and
//! leave the engine usable.

pub(crate) mod exec;
pub mod frame;

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use ferrocoll_transports::Endpoint;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::plan;
use crate::reduce;
use crate::schedule::{CollSpec, Collective, Layout, RankPlan, Region, Step};
use crate::types::{DataType, ReduceOp};
use exec::{execute, CallCtx, Mem, Prepared};
use frame::OpHeader;

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
        })
    }

    fn finish(&self, r: Result<()>) {
        let mut g = lock(&self.result);
        g.result = Some(r);
        if g.sleepers > 0 {
            self.cv.notify_all();
        }
    }

    /// Sleeps until the job has run or `limit` has passed.
    fn sleep_until_done(&self, limit: Duration) {
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

    /// Blocks until the job has run; returns its result and the buffers it kept.
    pub(crate) fn take(&self) -> (Result<()>, Option<Box<dyn Any + Send>>) {
        let mut g = lock(&self.result);
        while g.result.is_none() {
            // Announced under the lock that `finish` takes, so its notify cannot be missed.
            g.sleepers += 1;
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            g.sleepers -= 1;
        }
        let r = g
            .result
            .take()
            .unwrap_or_else(|| Err(Error::Internal("job result taken twice".into())));
        drop(g);
        (r, lock(&self.keep).take())
    }
}

/// (collective, count, root, p2p peer/direction, element size, algorithm, in place, segment).
type CacheKey = (
    Collective,
    usize,
    usize,
    Option<(usize, bool)>,
    usize,
    &'static str,
    bool,
    usize,
);

struct Inner {
    ep: Box<dyn Endpoint>,
    /// Picks algorithm and segment size per shape on this communicator's topology.
    tuner: plan::Tuner,
    /// Engine-owned scratch, u64 words so any element type is aligned; grows, never shrinks.
    scratch: Vec<u64>,
    /// The executor's per-call state, reused across calls.
    work: exec::Workspace,
    cache: HashMap<CacheKey, Arc<Prepared>>,
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
    pub world: usize,
    pub cfg: Config,
    inner: Mutex<Inner>,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    abort: AtomicBool,
    interrupt: Arc<dyn Fn() + Send + Sync>,
    failure: Mutex<Option<Arc<Error>>>,
}

/// The engine of one communicator.
pub(crate) struct Engine {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    pub(crate) fn new(ep: Box<dyn Endpoint>, cfg: Config, tuner: plan::Tuner) -> Engine {
        let interrupt = ep.interrupter();
        Engine {
            shared: Arc::new(Shared {
                rank: ep.rank(),
                world: ep.world_size(),
                cfg,
                inner: Mutex::new(Inner {
                    ep,
                    tuner,
                    scratch: Vec::new(),
                    work: exec::Workspace::default(),
                    cache: HashMap::new(),
                }),
                queue: Mutex::new(Queue::default()),
                queue_cv: Condvar::new(),
                abort: AtomicBool::new(false),
                interrupt,
                failure: Mutex::new(None),
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

    /// Runs queued jobs on this thread until `target` has run.
    pub(crate) fn drive_until(&self, target: &Arc<Job>) {
        self.shared.drive(Some(target));
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

fn worker(shared: Arc<Shared>) {
    loop {
        {
            let mut q = lock(&shared.queue);
            while q.jobs.is_empty() && !q.shutdown {
                q.worker_idle = true;
                q = shared.queue_cv.wait(q).unwrap_or_else(|e| e.into_inner());
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
    fn set_failure(&self, e: Error) -> Arc<Error> {
        let mut f = lock(&self.failure);
        f.get_or_insert_with(|| Arc::new(e)).clone()
    }

    /// Runs queued jobs on this thread until `target` has run (used by `Work::wait`).
    pub(crate) fn drive_public(&self, target: &Arc<Job>) {
        self.drive(Some(target));
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
            let r = self.run(&mut inner, &job.call);
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

    fn run(&self, inner: &mut Inner, call: &Call) -> Result<()> {
        if let Some(f) = lock(&self.failure).clone() {
            return Err(Error::CommFailed(f));
        }
        if call.spec.kind != Collective::Barrier && call.spec.count == 0 {
            return Ok(());
        }
        let es = call.dtype.size();
        let mut seg = (self.cfg.segment_bytes / es).max(1);
        let (plan_name, plan): (&'static str, Option<RankPlan>) = match call.p2p {
            Some((peer, sending)) => {
                let n = call.spec.count;
                let step = if sending {
                    Step::Send {
                        peer,
                        src: Region::input(0, n),
                    }
                } else {
                    Step::Recv {
                        peer,
                        dst: Region::output(0, n),
                        with: None,
                    }
                };
                (
                    if sending { "send" } else { "recv" },
                    Some(RankPlan {
                        steps: vec![step],
                        scratch: 0,
                    }),
                )
            }
            None => {
                let choice = inner.tuner.choose(&call.spec, es)?;
                seg = (choice.segment_bytes / es).max(1);
                (choice.algo.name(), None)
            }
        };
        let key: CacheKey = (
            call.spec.kind,
            call.spec.count,
            call.spec.root,
            call.p2p,
            es,
            plan_name,
            call.in_place,
            seg,
        );
        let prep = match inner.cache.get(&key) {
            Some(p) => p.clone(),
            None => {
                let plan = match plan {
                    Some(p) => p,
                    None => {
                        let algo = crate::algo::by_name(plan_name)
                            .ok_or_else(|| Error::Internal(plan_name.into()))?;
                        algo.plan_on(&call.spec, self.rank, inner.tuner.placement())
                    }
                };
                tracing::trace!(
                    rank = self.rank,
                    "{} via {plan_name}:\n{}",
                    call.spec.kind,
                    plan.dump()
                );
                let layout = if call.in_place {
                    Layout::in_place(&call.spec, self.rank)
                } else {
                    Layout::SEPARATE
                };
                let p = Arc::new(Prepared::new(&plan, seg, &layout, self.world)?);
                if inner.cache.len() >= 256 {
                    inner.cache.clear();
                }
                inner.cache.insert(key, p.clone());
                p
            }
        };
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
            timeout: self.cfg.timeout,
            spin: self.cfg.spin,
            yield_idle: self.cfg.yield_when_idle.unwrap_or(false),
            direct_min: self.cfg.direct_min_bytes,
            force_direct: self.cfg.direct_min_bytes < 64 << 10,
            streaming: call.spec.output_len() * es >= self.cfg.streaming_min_bytes,
            abort: &self.abort,
        };
        let inner = &mut *inner;
        // SAFETY: the communicator checked that input/output hold the elements the spec
        // needs and keeps them valid and unaliased until the job completes (see `Call`);
        // scratch was sized for the plan above and is only used by this job.
        let r = unsafe { execute(inner.ep.as_mut(), &prep, &mut inner.work, mem, &cx) };
        if let Err(e) = r {
            let stored = self.set_failure(e.duplicate());
            inner.ep.close_all();
            tracing::warn!(rank = self.rank, "communicator failed: {stored}");
            return Err(e);
        }
        let root_or_all = call.spec.kind != Collective::Reduce || self.rank == call.spec.root;
        if call.op == ReduceOp::Avg && call.spec.kind.reduces() && root_or_all && call.p2p.is_none()
        {
            // SAFETY: the output holds `count` elements (checked by the communicator).
            let out = unsafe { std::slice::from_raw_parts_mut(call.output, call.spec.count * es) };
            reduce::divide(call.dtype, out, self.world);
        }
        Ok(())
    }
}

impl Engine {
    /// The tuner's choice for `spec` (what a call of that shape would run), with elements of
    /// `esize` bytes.
    pub(crate) fn choice(&self, spec: &CollSpec, esize: usize) -> Result<plan::Choice> {
        lock(&self.shared.inner).tuner.choose(spec, esize)
    }

    /// The topology this engine plans on.
    pub(crate) fn topology(&self) -> crate::topology::Topology {
        lock(&self.shared.inner).tuner.topology().clone()
    }
}
