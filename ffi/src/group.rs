//! `fcGroupStart` / `fcGroupEnd`: calls made between them (on this thread) are queued and
//! issued together at the outermost `fcGroupEnd`, as in NCCL.
//!
//! Issue order. Each communicator's engine runs its calls one after the other, so a group's
//! send/recv pairs are put in an order that cannot deadlock: collectives first (in call
//! order, which every rank shares), then the point-to-point calls sorted by peer, and for
//! each peer the lower rank sends before it receives while the higher rank receives before
//! it sends (calls of one direction keep their order). A rank blocked on its exchange with
//! peer `p` then waits only for ranks that are themselves progressing: a cycle of waiting
//! ranks would need ever-smaller ranks around the cycle, which cannot close. Calls on
//! different communicators run concurrently (each engine has its own thread), so one thread
//! may drive several ranks of one job in a group; `fcCommInitRank` calls in a group create
//! their communicators concurrently at its end, before its other calls run.

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::Arc;

use fc::{Collective, Communicator, RawCall, RawExtra};

use crate::boundary::{guard, Failure};
use crate::registry;
use crate::types::{fcComm_t, fcResult_t};
use crate::work::WorkState;

/// A communicator creation deferred to the group's end, with the handle it will fill.
type Init = (
    fcComm_t,
    Box<dyn FnOnce() -> fc::Result<Communicator> + Send>,
);

/// A call queued for the group's end.
type Call = (Arc<Communicator>, RawCall, RawExtra);

#[derive(Default)]
struct Group {
    depth: usize,
    inits: Vec<Init>,
    calls: Vec<Call>,
    /// The calls on device buffers: their place in `calls`, handle and stream.
    device: Vec<(usize, fcComm_t, *mut c_void)>,
}

thread_local! {
    static GROUP: RefCell<Group> = RefCell::new(Group::default());
}

/// Whether this thread is inside a group.
pub(crate) fn active() -> bool {
    GROUP.with(|g| g.borrow().depth > 0)
}

/// Queues a call (with its uneven layout or premul-sum scalar) for the group's end.
pub(crate) fn push(comm: Arc<Communicator>, call: RawCall, extra: RawExtra) {
    GROUP.with(|g| g.borrow_mut().calls.push((comm, call, extra)));
}

/// Queues a checked call on device buffers: at the group's end it is staged through host
/// memory and runs with the host calls, in its place (see `device.rs`).
pub(crate) fn push_device(
    h: fcComm_t,
    comm: Arc<Communicator>,
    call: RawCall,
    stream: *mut c_void,
) {
    GROUP.with(|g| {
        let mut g = g.borrow_mut();
        let at = g.calls.len();
        g.calls.push((comm, call, RawExtra::default()));
        g.device.push((at, h, stream));
    });
}

/// Defers the creation of the communicator of handle `h` to the group's end.
pub(crate) fn push_init(h: fcComm_t, make: Box<dyn FnOnce() -> fc::Result<Communicator> + Send>) {
    GROUP.with(|g| g.borrow_mut().inits.push((h, make)));
}

/// Starts a group (groups nest; only the outermost end issues the calls).
///
/// Thread safety: per thread: a group collects the calls of the thread that started it.
#[no_mangle]
pub extern "C" fn fcGroupStart() -> fcResult_t {
    guard("fcGroupStart", || {
        GROUP.with(|g| g.borrow_mut().depth += 1);
        Ok(())
    })
}

/// Ends a group; the outermost end issues the queued calls and returns when all have
/// completed, with the first failure if any failed (every call is still waited for). The
/// buffers of queued calls must stay valid until then.
///
/// Thread safety: per thread, as `fcGroupStart`.
#[no_mangle]
pub extern "C" fn fcGroupEnd() -> fcResult_t {
    guard("fcGroupEnd", || match take("fcGroupEnd")? {
        Some(g) => run_blocking(g),
        None => Ok(()),
    })
}

/// What the outermost end of a group runs.
type Ended = (Vec<Init>, Vec<Call>, Vec<(usize, fcComm_t, *mut c_void)>);

/// Leaves a group level; at the outermost, takes what the group queued.
fn take(name: &str) -> Result<Option<Ended>, Failure> {
    GROUP.with(|g| {
        let mut g = g.borrow_mut();
        match g.depth {
            0 => Err(Failure::usage(format!("{name} without fcGroupStart"))),
            1 => {
                g.depth = 0;
                Ok(Some((
                    std::mem::take(&mut g.inits),
                    std::mem::take(&mut g.calls),
                    std::mem::take(&mut g.device),
                )))
            }
            _ => {
                g.depth -= 1;
                Ok(None)
            }
        }
    })
}

/// Runs an ended group to completion.
fn run_blocking((inits, mut calls, device): Ended) -> Result<(), Failure> {
    let first = init_all(inits);
    let mut staged = Vec::new();
    for (at, h, stream) in device {
        let (comm, call, _) = &mut calls[at];
        // SAFETY: the buffers were promised valid until the group's end returns.
        staged.push(unsafe { crate::device::stage(h, comm, call, stream) }?);
    }
    let rest = run(calls);
    let back = staged
        .into_iter()
        .try_for_each(crate::device::Staged::finish);
    first.and(rest).and(back)
}

/// `fcGroupEndAsync`'s end: the group's calls issued, not waited for (`None` for an inner
/// end). Communicator creations and device calls run to completion first: the work then
/// holds nothing more.
pub(crate) fn end_async() -> Result<Option<WorkState>, Failure> {
    let Some(g) = take("fcGroupEndAsync")? else {
        return Ok(None);
    };
    if !g.0.is_empty() || !g.2.is_empty() {
        let r = run_blocking(g);
        return Ok(Some(WorkState::new(Vec::new(), r.err())));
    }
    let (works, failed) = submit(g.1);
    Ok(Some(WorkState::new(works, failed)))
}

/// Where a call goes in its communicator's issue order (see the module docs).
fn order_key(comm: &Communicator, c: &RawCall) -> (u8, usize, u8) {
    if c.kind != Collective::SendRecv {
        return (0, 0, 0);
    }
    let sending = c.output.is_null();
    let first = sending == (comm.rank() < c.root);
    (1, c.root, if first { 0 } else { 1 })
}

/// Creates the group's communicators concurrently (their ranks meet each other) and
/// registers them under their handles; returns the first failure.
fn init_all(inits: Vec<Init>) -> Result<(), Failure> {
    if inits.is_empty() {
        return Ok(());
    }
    let results: Vec<Result<(), Failure>> = std::thread::scope(|s| {
        let hs: Vec<_> = inits
            .into_iter()
            .map(|(h, make)| {
                let h = h.addr();
                let run = move || make().map(|c| (h, c));
                std::thread::Builder::new()
                    .name("ferrocoll-init".into())
                    .spawn_scoped(s, run)
            })
            .collect();
        hs.into_iter()
            .map(|h| match h {
                Ok(h) => match h.join() {
                    Ok(Ok((addr, c))) => {
                        registry::fill(std::ptr::without_provenance_mut(addr), c);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err(Failure::from(fc::Error::Internal(
                        "a group's init panicked".into(),
                    ))),
                },
                Err(e) => Err(Failure::from(fc::Error::Io {
                    what: "starting a thread for a group's init",
                    source: e,
                })),
            })
            .collect()
    });
    results.into_iter().collect()
}

fn run(calls: Vec<Call>) -> Result<(), Failure> {
    let (works, mut first_err) = submit(calls);
    for w in works {
        if let Err(e) = w.wait() {
            first_err.get_or_insert(e.into());
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Issues the calls in the group's order (see the module docs); stops at the first that
/// cannot be issued, and returns the works issued with that failure.
fn submit(calls: Vec<Call>) -> (Vec<fc::Work<()>>, Option<Failure>) {
    // Per communicator, in first-use order; a stable sort keeps same-key calls in order.
    type Calls = Vec<(RawCall, RawExtra)>;
    let mut per_comm: Vec<(Arc<Communicator>, Calls)> = Vec::new();
    for (comm, call, extra) in calls {
        match per_comm.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &comm)) {
            Some((_, v)) => v.push((call, extra)),
            None => per_comm.push((comm, vec![(call, extra)])),
        }
    }
    let mut works = Vec::new();
    let mut first_err: Option<Failure> = None;
    'submit: for (comm, mut v) in per_comm {
        v.sort_by_key(|(c, _)| order_key(&comm, c));
        for (call, extra) in v {
            // SAFETY: the buffers were promised valid until the group's calls complete, and
            // every work is waited for (fcGroupEnd) or owned by an fcWork_t (fcGroupEndAsync).
            match unsafe { comm.collective_raw_with_async(call, &extra) } {
                Ok(w) => works.push(w),
                Err(e) => {
                    first_err = Some(e.into());
                    break 'submit;
                }
            }
        }
    }
    (works, first_err)
}
