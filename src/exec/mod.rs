//! The executor: runs one rank's [`Prepared`] plan over its endpoint's links.
//!
//! Every step whose dependencies are met is in flight at once: local copies, reductions and
//! scalings run immediately ([`local`]), and for each peer the first pending send
//! ([`send`]) and the first pending receive ([`recv`]) move as many bytes as the link takes.
//! Receives that reduce do so straight out of the link's buffer (no staging copy), carrying
//! a partial element over a ring's wrap point. The loop spins briefly when nothing moves,
//! then sleeps on the endpoint until a link moves, `abort` is raised, or the no-progress
//! deadline passes.
//!
//! The executor knows nothing of collectives or algorithms: what a message may use is the
//! plan's [`CopyPolicy`] (chosen by the planner) intersected with what the link declares it
//! can do ([`ferrocoll_transports::LinkCaps`]).

pub(crate) mod frame;
mod local;
mod prepared;
mod recv;
mod send;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrocoll_transports::{Endpoint, LinkError};

use crate::error::{Error, Result};
use crate::schedule::Region;
use crate::types::{DataType, ReduceOp};
use frame::OpHeader;
pub(crate) use prepared::{CopyPolicy, Prepared};
use recv::RecvState;
use send::SendState;

/// Raw memory of one call. The caller of [`execute`] guarantees the pointers are valid for
/// the regions the plan touches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mem {
    pub input: *const u8,
    pub output: *mut u8,
    pub scratch: *mut u8,
    pub esize: usize,
}

impl Mem {
    fn ptr(&self, r: Region) -> *mut u8 {
        let base = match r.buf {
            crate::schedule::Buf::Input => self.input.cast_mut(),
            crate::schedule::Buf::Output => self.output,
            crate::schedule::Buf::Scratch => self.scratch,
        };
        base.wrapping_add(r.off * self.esize)
    }
}

/// What one call needs besides its plan.
pub(crate) struct CallCtx<'a> {
    pub rank: usize,
    pub header: OpHeader,
    pub dtype: DataType,
    pub op: ReduceOp,
    /// The premul-sum scalar that [`crate::schedule::Step::PreMul`] multiplies by (1 when the
    /// call is no premul-sum, whose plan has no such step).
    pub premul: f64,
    /// Longest time without progress before the call fails with [`Error::Timeout`].
    pub timeout: Duration,
    /// How long an idle rank polls before it sleeps on the endpoint.
    pub spin: Duration,
    /// Whether to yield the core on each idle poll while spinning (oversubscribed host).
    pub yield_idle: bool,
    pub abort: &'a AtomicBool,
}

/// Per-call executor state, kept by the engine and reused so that a call allocates nothing
/// once the communicator has run a plan of this size.
#[derive(Default)]
pub(crate) struct Workspace {
    remaining: Vec<u32>,
    ready: Vec<u32>,
    sst: Vec<SendState>,
    rst: Vec<RecvState>,
    /// Per peer: single-copy sends announced and not yet acknowledged (step, ticket).
    unacked: Vec<VecDeque<(u32, u64)>>,
    /// Landing area for single-copy messages that are reduced rather than copied.
    bounce: Vec<u64>,
    /// Peers with a step that waits on the link (not on other steps), per poll round.
    blocked: Vec<usize>,
}

/// One call in progress: the plan, its memory and context, and the completion bookkeeping
/// (how many dependencies each step still waits for, the local steps ready to run, how many
/// steps are done). The per-peer send and receive states are kept apart, in the
/// [`Workspace`], so that both can be borrowed beside this.
struct Run<'a, 'c> {
    prep: &'a Prepared,
    mem: Mem,
    cx: &'a CallCtx<'c>,
    remaining: &'a mut [u32],
    ready: &'a mut Vec<u32>,
    done: usize,
}

impl Run<'_, '_> {
    /// Marks step `i` complete and makes the local steps it unblocks ready.
    #[inline]
    fn complete(&mut self, i: usize) {
        self.done += 1;
        for &d in &self.prep.dependents[i] {
            let left = &mut self.remaining[d as usize];
            *left -= 1;
            if *left == 0 && prepared::is_local(&self.prep.steps[d as usize]) {
                self.ready.push(d);
            }
        }
    }

    /// The typed error of a link failure during this call.
    fn link_err(&self, e: LinkError) -> Error {
        link_err(self.cx, e)
    }

    /// Runs every ready local step.
    ///
    /// # Safety
    /// As for [`execute`].
    unsafe fn run_ready_locals(&mut self) -> Result<bool> {
        let mut progressed = false;
        while let Some(i) = self.ready.pop() {
            // SAFETY: the regions lie in memory valid per `execute`'s contract.
            unsafe { local::run(&self.prep.steps[i as usize], self.mem, self.cx)? };
            self.complete(i as usize);
            progressed = true;
        }
        Ok(progressed)
    }

    /// Whether the first pending step of `list` (at `idx`) has its dependencies met.
    fn link_bound(&self, list: &[u32], idx: usize) -> bool {
        list.get(idx)
            .is_some_and(|&i| self.remaining[i as usize] == 0)
    }
}

/// Runs `prep` to completion.
///
/// # Safety
/// `mem`'s pointers must be valid for reads (input) and reads and writes (output, scratch) of
/// every region the plan touches, for the whole call, and nothing else may access the output
/// and scratch memory meanwhile.
pub(crate) unsafe fn execute(
    ep: &mut dyn Endpoint,
    prep: &Prepared,
    ws: &mut Workspace,
    mem: Mem,
    cx: &CallCtx<'_>,
) -> Result<()> {
    let n = prep.steps.len();
    let world = prep.sends.len();
    let Workspace {
        remaining,
        ready,
        sst,
        rst,
        unacked,
        bounce,
        blocked,
    } = ws;
    remaining.clear();
    remaining.extend_from_slice(&prep.ndeps);
    ready.clear();
    ready.extend_from_slice(&prep.initially_ready);
    sst.clear();
    sst.resize(world, SendState::default());
    rst.clear();
    rst.resize(world, RecvState::default());
    unacked.iter_mut().for_each(VecDeque::clear);
    unacked.resize_with(world, VecDeque::new);
    let mut run = Run {
        prep,
        mem,
        cx,
        remaining,
        ready,
        done: 0,
    };
    let mut idle = Idle::new(Instant::now());
    while run.done < n {
        let token = ep.activity_token();
        // SAFETY: `execute`'s contract, passed on.
        let mut progressed = unsafe { run.run_ready_locals()? };
        blocked.clear();
        for &peer in &prep.active {
            let link = ep
                .link(peer)
                .ok_or_else(|| Error::Internal(format!("no link to rank {peer}")))?;
            let (st, rs, un) = (&mut sst[peer], &mut rst[peer], &mut unacked[peer]);
            // SAFETY: `execute`'s contract, passed on.
            progressed |= unsafe { run.sends(st, rs, un, peer, link)? };
            progressed |= run.acks(un, link)?;
            // SAFETY: `execute`'s contract, passed on.
            progressed |= unsafe { run.recvs(rs, bounce, peer, link)? };
            // A step of this peer's waits on the link: a send or receive whose dependencies
            // are met, or an unacknowledged single-copy send.
            if run.link_bound(&prep.sends[peer], st.idx)
                || run.link_bound(&prep.recvs[peer], rs.idx)
                || !un.is_empty()
            {
                blocked.push(peer);
            }
        }
        if run.done == n {
            break;
        }
        match idle.next(progressed, cx) {
            Next::Poll => {}
            Next::Abort => return Err(Error::Aborted),
            Next::Timeout => {
                let peers = prep
                    .active
                    .iter()
                    .copied()
                    .filter(|&q| {
                        sst[q].idx < prep.sends[q].len()
                            || rst[q].idx < prep.recvs[q].len()
                            || !unacked[q].is_empty()
                    })
                    .collect();
                return Err(Error::Timeout {
                    rank: cx.rank,
                    seq: cx.header.seq,
                    peers,
                    waited: idle.stalled(),
                });
            }
            Next::Sleep(nap) => {
                let r = if blocked.is_empty() {
                    ep.wait(token, nap)
                } else {
                    ep.wait_for(token, nap, blocked)
                };
                r.map_err(|e| run.link_err(e))?;
            }
        }
    }
    Ok(())
}

/// What the executor does after a poll round.
enum Next {
    /// Poll again at once.
    Poll,
    /// The communicator was aborted.
    Abort,
    /// Nothing has moved for the call's timeout.
    Timeout,
    /// Sleep on the endpoint for at most this long.
    Sleep(Duration),
}

/// The executor's idle policy: spin (yielding the core where the host is oversubscribed,
/// or after [`PURE_SPIN`]), then sleep on the endpoint in naps of at most 10 ms, and fail
/// once nothing has moved for the call's timeout.
struct Idle {
    last_progress: Instant,
    idle_since: Option<Instant>,
    now: Instant,
}

impl Idle {
    fn new(now: Instant) -> Idle {
        Idle {
            last_progress: now,
            idle_since: None,
            now,
        }
    }

    /// How long nothing has moved.
    fn stalled(&self) -> Duration {
        self.now.duration_since(self.last_progress)
    }

    /// What to do after a poll round that `progressed` or not; spins and yields here.
    fn next(&mut self, progressed: bool, cx: &CallCtx<'_>) -> Next {
        self.now = Instant::now();
        if progressed {
            self.last_progress = self.now;
            self.idle_since = None;
            return Next::Poll;
        }
        if cx.abort.load(Ordering::Acquire) {
            return Next::Abort;
        }
        let stalled = self.stalled();
        if stalled >= cx.timeout {
            return Next::Timeout;
        }
        let since = *self.idle_since.get_or_insert(self.now);
        let idle = self.now.duration_since(since);
        if idle < cx.spin {
            // A peer we wait for may need this core (oversubscribed host, or a loaded one):
            // after a short pure spin, each poll offers the core with `sched_yield`, which
            // costs well under a microsecond when nobody else is runnable.
            if cx.yield_idle || idle >= PURE_SPIN {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            return Next::Poll;
        }
        Next::Sleep((cx.timeout - stalled).min(Duration::from_millis(10)))
    }
}

/// The typed error of a link failure during the call `cx`.
fn link_err(cx: &CallCtx<'_>, e: LinkError) -> Error {
    match e {
        LinkError::Shutdown => Error::Aborted,
        LinkError::Closed { peer }
        | LinkError::Io { peer, .. }
        | LinkError::Protocol { peer, .. } => Error::PeerFailed {
            rank: cx.rank,
            peer,
            seq: cx.header.seq,
            source: e,
        },
    }
}

/// How long an idle rank spins without yielding on a host that is not oversubscribed: a few
/// times the latency of a small message between two spinning ranks
/// (`ferrocoll-probe all_reduce -b 8 -e 8`).
const PURE_SPIN: Duration = Duration::from_micros(5);

#[cfg(test)]
mod tests;
