//! Nonblocking groups: `fcGroupEndAsync` issues a group's calls and returns at once with an
//! `fcWork_t`, which `fcWorkTest` polls, `fcWorkWait` waits for (with a timeout) and
//! `fcWorkFree` releases. This is how a caller overlaps communication with computation on
//! host memory: each collective (or a coalesced batch of them) is a group whose work
//! completes in the background, in issue order per communicator.
//!
//! Work handles are opaque tokens looked up among the live works, never dereferenced, like
//! communicator handles: a freed or made-up handle is `fcInvalidArgument`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::boundary::{guard, write_out, Failure};
use crate::group;
use crate::types::{fcResult_t, fcWork_t};

/// A group's calls in flight, or their outcome once every one has finished.
pub(crate) struct WorkState {
    works: Vec<fc::Work<()>>,
    /// The first failure, once known (a submission error is known at once).
    failed: Option<Failure>,
}

impl WorkState {
    /// Calls in flight, and a failure already met while issuing them.
    pub(crate) fn new(works: Vec<fc::Work<()>>, failed: Option<Failure>) -> WorkState {
        WorkState { works, failed }
    }

    fn done(&self) -> bool {
        self.works.iter().all(fc::Work::test)
    }

    /// Waits for every call (they have all finished when `done` said so) and keeps the
    /// first failure.
    fn finish(&mut self) {
        for w in self.works.drain(..) {
            if let Err(e) = w.wait() {
                self.failed.get_or_insert(e.into());
            }
        }
    }

    fn outcome(&self) -> Result<(), Failure> {
        match &self.failed {
            Some(f) => Err(Failure {
                code: f.code,
                message: f.message.clone(),
            }),
            None => Ok(()),
        }
    }
}

type Works = HashMap<usize, Arc<Mutex<WorkState>>>;

fn works() -> MutexGuard<'static, Works> {
    static WORKS: OnceLock<Mutex<Works>> = OnceLock::new();
    WORKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn lookup(h: fcWork_t) -> Result<Arc<Mutex<WorkState>>, Failure> {
    works()
        .get(&h.addr())
        .cloned()
        .ok_or_else(|| Failure::arg(format!("{h:p} is not a live fcWork_t")))
}

fn lock(w: &Mutex<WorkState>) -> MutexGuard<'_, WorkState> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers `state` and returns its handle (never NULL).
pub(crate) fn register(state: WorkState) -> fcWork_t {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    works().insert(id, Arc::new(Mutex::new(state)));
    std::ptr::without_provenance_mut(id)
}

/// Ends a group like `fcGroupEnd`, but returns as soon as its calls are issued: `*work`
/// completes when every one of them has. The buffers of the group's calls must stay valid
/// until then. Device calls in the group (staged through host memory) and communicator
/// creations run before it returns; an inner (nested) end sets `*work` to NULL and issues
/// nothing, as `fcGroupEnd` would.
///
/// Thread safety: per thread, as `fcGroupStart`.
///
/// # Safety
/// `work` must be NULL (refused) or valid for a write of one `fcWork_t`.
#[no_mangle]
pub unsafe extern "C" fn fcGroupEndAsync(work: *mut fcWork_t) -> fcResult_t {
    guard("fcGroupEndAsync", || {
        if work.is_null() {
            return Err(Failure::arg("work is NULL"));
        }
        let handle = match group::end_async()? {
            Some(state) => register(state),
            None => std::ptr::null_mut(),
        };
        // SAFETY: non-null, and valid for a write by the caller's contract.
        unsafe { write_out(work, "work", handle) }
    })
}

/// Whether `work` has completed: `*done` becomes 1 (and the call returns the work's result:
/// the first failure of its calls, if any) or 0 (and it returns `fcSuccess`). Never blocks.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `done` must be NULL (refused) or valid for a write of one `int`.
#[no_mangle]
pub unsafe extern "C" fn fcWorkTest(work: fcWork_t, done: *mut std::os::raw::c_int) -> fcResult_t {
    guard("fcWorkTest", || {
        if done.is_null() {
            return Err(Failure::arg("done is NULL"));
        }
        let w = lookup(work)?;
        let mut w = lock(&w);
        let finished = w.done();
        if finished {
            w.finish();
        }
        // SAFETY: non-null, and valid for a write by the caller's contract.
        unsafe { write_out(done, "done", finished as std::os::raw::c_int)? };
        if finished {
            w.outcome()
        } else {
            Ok(())
        }
    })
}

/// Waits until `work` has completed and returns its result (the first failure of its
/// calls, if any), or `fcInProgress` once `timeout_ms` milliseconds have passed without it
/// (negative: no limit; 0: a test). A timed-out work is still live: wait again, or abort
/// its communicator. Calls stuck on a failed peer end with the communicator's own error
/// (`FERROCOLL_TIMEOUT`) whatever the timeout here.
///
/// Thread safety: safe from any thread; one waiter per work at a time.
#[no_mangle]
pub extern "C" fn fcWorkWait(work: fcWork_t, timeout_ms: i64) -> fcResult_t {
    guard("fcWorkWait", || {
        let w = lookup(work)?;
        let mut w = lock(&w);
        if timeout_ms < 0 {
            w.finish();
            return w.outcome();
        }
        let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
        let finished = w
            .works
            .iter()
            .all(|c| c.wait_for(deadline.saturating_duration_since(Instant::now())));
        if !finished {
            return Err(Failure {
                code: fcResult_t::fcInProgress,
                message: format!("not complete after {timeout_ms} ms"),
            });
        }
        w.finish();
        w.outcome()
    })
}

/// Releases `work`, first waiting for its calls (their buffers are in use until then). Its
/// result is not reported: test or wait first to learn it.
///
/// Thread safety: safe from any thread; the handle is invalid afterwards.
#[no_mangle]
pub extern "C" fn fcWorkFree(work: fcWork_t) -> fcResult_t {
    guard("fcWorkFree", || {
        let w = works()
            .remove(&work.addr())
            .ok_or_else(|| Failure::arg(format!("{work:p} is not a live fcWork_t")))?;
        lock(&w).finish();
        Ok(())
    })
}
