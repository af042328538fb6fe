//! The executor: runs one rank's segmented plan over its endpoint's links.
//!
//! Every step whose dependencies are met is in flight at once: local copies and reductions
//! run immediately, and for each peer the first pending send and the first pending receive
//! move as many bytes as the link takes. Receives that reduce do so straight out of the
//! link's buffer (no staging copy), carrying a partial element over a ring's wrap point.
//! The loop spins briefly when nothing moves, then sleeps on the endpoint until a link
//! moves, `abort` is raised, or the no-progress deadline passes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrocoll_transports::{Endpoint, LinkError, Stores};

use super::frame::{Frame, OpHeader, FRAME_BYTES};
use crate::error::{Error, Result};
use crate::reduce;
use crate::schedule::{dependencies, segment, Collective, Layout, RankPlan, Region, Step};
use crate::types::{DataType, ReduceOp};

/// A plan made ready to execute: segmented, with its dependency graph and per-peer streams.
#[derive(Debug)]
pub(crate) struct Prepared {
    steps: Vec<Step>,
    ndeps: Vec<u32>,
    dependents: Vec<Vec<u32>>,
    sends: Vec<Vec<u32>>,
    recvs: Vec<Vec<u32>>,
    /// Peers with any traffic in this plan.
    active: Vec<usize>,
    /// Local steps with no dependencies: ready when the call starts.
    initially_ready: Vec<u32>,
    /// Per step: for a send, the local copy of the same source that it makes while it
    /// writes (see [`fuse_copies`]); that copy is not run on its own.
    tee: Vec<Option<u32>>,
    /// Scratch elements needed.
    pub scratch: usize,
}

impl Prepared {
    /// Segments `plan` into pieces of `seg` elements and builds its dependency graph.
    pub fn new(plan: &RankPlan, seg: usize, layout: &Layout, world: usize) -> Result<Prepared> {
        let steps = segment(&plan.steps, seg);
        let deps = dependencies(&steps, layout);
        let mut dependents = vec![Vec::new(); steps.len()];
        for (i, d) in deps.iter().enumerate() {
            for &j in d {
                dependents[j as usize].push(i as u32);
            }
        }
        let (mut sends, mut recvs) = (vec![Vec::new(); world], vec![Vec::new(); world]);
        for (i, st) in steps.iter().enumerate() {
            match *st {
                Step::Send { peer, .. } => sends.get_mut(peer),
                Step::Recv { peer, .. } => recvs.get_mut(peer),
                _ => continue,
            }
            .ok_or_else(|| Error::Internal(format!("step {st} names a peer outside the world")))?
            .push(i as u32);
            // A reduction whose operand partly overlaps its destination cannot be computed in place.
            if let Step::Recv {
                dst, with: Some(w), ..
            } = *st
            {
                check_alias(layout, dst, w)?;
            }
        }
        for st in &steps {
            if let Step::Reduce { dst, a, b } = *st {
                check_alias(layout, dst, a)?;
                check_alias(layout, dst, b)?;
            }
        }
        let active = (0..world)
            .filter(|&p| !sends[p].is_empty() || !recvs[p].is_empty())
            .collect();
        let tee = fuse_copies(&steps, &deps, &dependents, &sends, layout);
        let teed: Vec<bool> = {
            let mut t = vec![false; steps.len()];
            tee.iter().flatten().for_each(|&c| t[c as usize] = true);
            t
        };
        let initially_ready = (0..steps.len())
            .filter(|&i| deps[i].is_empty() && is_local(&steps[i]) && !teed[i])
            .map(|i| i as u32)
            .collect();
        Ok(Prepared {
            active,
            initially_ready,
            tee,
            ndeps: deps.iter().map(|d| d.len() as u32).collect(),
            steps,
            dependents,
            sends,
            recvs,
            scratch: plan.scratch,
        })
    }
}

/// Pairs each local copy with a send of the same source, so the send's writes make the copy
/// too and the source is read once (all-gather's own chunk, broadcast's root): per send
/// step, the copy it carries.
///
/// Only a copy that nothing waits for and that waits for nothing is carried, by a send that
/// waits for nothing either: then the copy may run at any time before the call ends, so
/// running it while the send drains (however long the peer takes) cannot deadlock or
/// reorder anything. Source and destination must be distinct memory (not an in-place call's
/// aliased chunk).
fn fuse_copies(
    steps: &[Step],
    deps: &[Vec<u32>],
    dependents: &[Vec<u32>],
    sends: &[Vec<u32>],
    layout: &Layout,
) -> Vec<Option<u32>> {
    let mut tee = vec![None; steps.len()];
    let free = |i: usize| deps[i].is_empty() && dependents[i].is_empty();
    let mut first_send: std::collections::HashMap<Region, u32> = Default::default();
    for list in sends {
        for &i in list {
            if let Step::Send { src, .. } = steps[i as usize] {
                if deps[i as usize].is_empty() {
                    first_send.entry(src).or_insert(i);
                }
            }
        }
    }
    for (c, st) in steps.iter().enumerate() {
        let Step::Copy { src, dst } = *st else {
            continue;
        };
        let (a, b) = (layout.locate(src), layout.locate(dst));
        let disjoint = a.0 != b.0 || a.2 <= b.1 || b.2 <= a.1;
        if !free(c) || !disjoint {
            continue;
        }
        if let Some(i) = first_send.remove(&src) {
            tee[i as usize] = Some(c as u32);
        }
    }
    tee
}

fn is_local(st: &Step) -> bool {
    matches!(st, Step::Copy { .. } | Step::Reduce { .. })
}

fn check_alias(layout: &Layout, x: Region, y: Region) -> Result<()> {
    let (a, b) = (layout.locate(x), layout.locate(y));
    if a != b && a.0 == b.0 && a.1 < b.2 && b.1 < a.2 {
        return Err(Error::Internal(format!("{x} and {y} partly overlap")));
    }
    Ok(())
}

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
    pub timeout: Duration,
    pub spin: Duration,
    /// Whether to yield the core on each idle poll while spinning (oversubscribed host).
    pub yield_idle: bool,
    /// Smallest segment sent by single copy.
    pub direct_min: usize,
    /// Single copy also in reducing collectives (tests: `direct_min` below the default).
    pub force_direct: bool,
    /// A large call: no send goes by single copy (every one goes through the link's ring),
    /// and copies into the output that nothing reads again in this call use streaming
    /// stores (see `ferrocoll_transports::copy`).
    pub streaming: bool,
    pub abort: &'a AtomicBool,
}

impl CallCtx<'_> {
    /// The stores for copies into the output that nothing reads again in this call.
    fn stores(&self) -> Stores {
        if self.streaming {
            Stores::Streaming
        } else {
            Stores::Cached
        }
    }
}

#[derive(Default, Clone)]
struct SendState {
    idx: usize,
    hdr: Option<[u8; FRAME_BYTES]>,
    hdr_sent: usize,
    sent: usize,
    /// The header announces a single-copy message: no payload follows it.
    direct: bool,
}

#[derive(Clone)]
struct RecvState {
    idx: usize,
    hdr: [u8; FRAME_BYTES],
    hdr_got: usize,
    got: usize,
    carry: [u8; 8],
    carry_len: usize,
    /// The header announced a single-copy message at this address of the peer's.
    direct: Option<u64>,
}

impl Default for RecvState {
    fn default() -> Self {
        RecvState {
            idx: 0,
            hdr: [0; FRAME_BYTES],
            hdr_got: 0,
            got: 0,
            carry: [0; 8],
            carry_len: 0,
            direct: None,
        }
    }
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
    let mut done = 0usize;
    let active = &prep.active;
    let mut last_progress = Instant::now();
    let mut idle_since: Option<Instant> = None;
    let es = mem.esize;

    let complete = |i: usize, remaining: &mut [u32], ready: &mut Vec<u32>, done: &mut usize| {
        *done += 1;
        for &d in &prep.dependents[i] {
            remaining[d as usize] -= 1;
            if remaining[d as usize] == 0 && is_local(&prep.steps[d as usize]) {
                ready.push(d);
            }
        }
    };
    let link_err = |e: LinkError| match e {
        LinkError::Shutdown => Error::Aborted,
        LinkError::Closed { peer }
        | LinkError::Io { peer, .. }
        | LinkError::Protocol { peer, .. } => Error::PeerFailed {
            rank: cx.rank,
            peer,
            seq: cx.header.seq,
            source: e,
        },
    };

    while done < n {
        let token = ep.activity_token();
        let mut progressed = false;
        blocked.clear();
        while let Some(i) = ready.pop() {
            // SAFETY: the regions lie in memory valid per this function's contract.
            unsafe { run_local(&prep.steps[i as usize], mem, cx)? };
            complete(i as usize, remaining, ready, &mut done);
            progressed = true;
        }
        for &peer in active {
            let link = ep
                .link(peer)
                .ok_or_else(|| Error::Internal(format!("no link to rank {peer}")))?;
            // Sends to `peer`, in stream order.
            let st = &mut sst[peer];
            while let Some(&i) = prep.sends[peer].get(st.idx) {
                let i = i as usize;
                if remaining[i] > 0 {
                    break;
                }
                let Step::Send { src, .. } = prep.steps[i] else {
                    unreachable!("send list holds sends")
                };
                let total = src.len * es;
                if st.hdr.is_none() {
                    // Single copy: a large segment that no later step overwrites (so it stays
                    // as it is until the peer acknowledges) goes by address where the link
                    // can do that; the call does not end before the acknowledgement. Not for
                    // point-to-point sends: those stay eager (up to the ring's capacity), or a
                    // send queued before its rank's own receive would wait on a peer that
                    // waits likewise. And only where no rank reduces: measured on this VM, a
                    // receiver that reduces a single-copy message (cross-memory read into a
                    // landing area, then the reduction) is slower than reducing straight out
                    // of the ring that the sender filled in parallel (64 MiB all-reduce, 2
                    // ranks: 1.9 vs 3.0–3.5 GB/s busbw); plain copies gain (1 MiB
                    // all-gather: 4.3 vs 1.9).
                    //
                    // A large (streaming) call goes through the ring instead: the receiver
                    // copies out of the ring, which stays in cache, with streaming stores,
                    // where the kernel's cross-memory copy reads every destination line
                    // before writing it and pins the pages; and a send that carries the
                    // local copy of its source (`fuse_copies`) makes both copies with one
                    // read of it (measured in `copy`'s docs; 64 MiB all-gather, 2 ranks, on
                    // this VM: out-of-place 1.5–2.3 → 2.3–3.9 GB/s busbw, in-place 3.1–3.2
                    // → 2.8–6.0).
                    let tee = prep.tee[i];
                    st.direct = total >= cx.direct_min.max(1)
                        && !cx.streaming
                        && cx.header.kind != Collective::SendRecv
                        && (!cx.header.kind.reduces() || cx.force_direct)
                        && prep.dependents[i].is_empty()
                        && link.direct().is_some();
                    if let (true, Some(c)) = (st.direct, tee) {
                        // SAFETY: the regions lie in memory valid per this function's
                        // contract.
                        unsafe { run_local(&prep.steps[c as usize], mem, cx)? };
                        complete(c as usize, remaining, ready, &mut done);
                    }
                    st.hdr = Some(
                        Frame {
                            op: cx.header,
                            len: total as u64,
                            direct: st.direct.then(|| mem.ptr(src) as u64),
                        }
                        .encode(),
                    );
                }
                let hdr = st.hdr.unwrap_or([0; FRAME_BYTES]);
                // A peer that closed may have done so because it saw a mismatch: if its next
                // header is readable, report what it called rather than just "closed".
                let rs_idle = rst[peer].hdr_got == 0 && rst[peer].got == 0;
                let send_err = |e: LinkError, link: &mut dyn ferrocoll_transports::Link| {
                    if rs_idle {
                        if let Ok(s) = link.peek() {
                            if let Some(raw) = s
                                .get(..FRAME_BYTES)
                                .and_then(|h| <[u8; FRAME_BYTES]>::try_from(h).ok())
                            {
                                if let Err(m) = check_frame(cx, peer, &raw, usize::MAX) {
                                    if !matches!(&m, Error::Mismatch { got, .. } if got.contains("-byte segment"))
                                    {
                                        return m;
                                    }
                                }
                            }
                        }
                    }
                    link_err(e)
                };
                while st.hdr_sent < FRAME_BYTES {
                    let k = match link.try_write(&hdr[st.hdr_sent..]) {
                        Ok(k) => k,
                        Err(e) => return Err(send_err(e, link)),
                    };
                    if k == 0 {
                        break;
                    }
                    st.hdr_sent += k;
                    progressed = true;
                }
                if st.direct {
                    if st.hdr_sent < FRAME_BYTES {
                        break;
                    }
                    let ticket = link.direct().map_or(0, |d| d.post());
                    unacked[peer].push_back((i as u32, ticket));
                    *st = SendState {
                        idx: st.idx + 1,
                        ..SendState::default()
                    };
                    progressed = true;
                    continue;
                }
                if st.hdr_sent == FRAME_BYTES && st.sent < total {
                    // SAFETY: `src` lies in valid memory (contract) and is not written while
                    // this send is pending (the dependency graph orders writers after it).
                    let bytes = unsafe {
                        std::slice::from_raw_parts(mem.ptr(src).add(st.sent), total - st.sent)
                    };
                    let wrote = match prep.tee[i] {
                        None => link.try_write(bytes),
                        Some(c) => {
                            let Step::Copy { dst, .. } = prep.steps[c as usize] else {
                                unreachable!("a send carries a copy")
                            };
                            // SAFETY: the copy's destination lies in valid memory (contract),
                            // is disjoint from `src` (`fuse_copies`), and nothing else
                            // accesses it (the copy has no dependents and runs only here).
                            let out = unsafe {
                                std::slice::from_raw_parts_mut(
                                    mem.ptr(dst).add(st.sent),
                                    total - st.sent,
                                )
                            };
                            link.try_write_tee(bytes, out, cx.stores())
                        }
                    };
                    let k = match wrote {
                        Ok(k) => k,
                        Err(e) => return Err(send_err(e, link)),
                    };
                    st.sent += k;
                    progressed |= k > 0;
                }
                if st.hdr_sent < FRAME_BYTES || st.sent < total {
                    break;
                }
                *st = SendState {
                    idx: st.idx + 1,
                    ..SendState::default()
                };
                complete(i, remaining, ready, &mut done);
                if let Some(c) = prep.tee[i] {
                    complete(c as usize, remaining, ready, &mut done);
                }
                progressed = true;
            }
            // Single-copy sends the peer has acknowledged are complete.
            if !unacked[peer].is_empty() {
                let acked = match link.direct() {
                    Some(d) => d.acked().map_err(link_err)?,
                    None => 0,
                };
                while let Some(&(j, t)) = unacked[peer].front() {
                    if t > acked {
                        break;
                    }
                    unacked[peer].pop_front();
                    complete(j as usize, remaining, ready, &mut done);
                    progressed = true;
                }
            }
            // Receives from `peer`, in stream order.
            let rs = &mut rst[peer];
            while let Some(&i) = prep.recvs[peer].get(rs.idx) {
                let i = i as usize;
                if remaining[i] > 0 {
                    break;
                }
                let Step::Recv { dst, with, .. } = prep.steps[i] else {
                    unreachable!("recv list holds recvs")
                };
                let total = dst.len * es;
                if rs.hdr_got < FRAME_BYTES {
                    let k = link
                        .read_into(&mut rs.hdr[rs.hdr_got..])
                        .map_err(link_err)?;
                    rs.hdr_got += k;
                    progressed |= k > 0;
                    if rs.hdr_got < FRAME_BYTES {
                        break;
                    }
                    rs.direct = check_frame(cx, peer, &rs.hdr, total)?.direct;
                }
                if let Some(addr) = rs.direct {
                    let Some(d) = link.direct() else {
                        return Err(link_err(LinkError::Protocol {
                            peer,
                            detail: "a single-copy message on a link that cannot do that".into(),
                        }));
                    };
                    if with.is_none() {
                        // SAFETY: `dst` lies in valid memory that only this receive accesses
                        // now (contract and dependency graph).
                        let out = unsafe { std::slice::from_raw_parts_mut(mem.ptr(dst), total) };
                        d.read(addr, out).map_err(link_err)?;
                        rs.got = total;
                    } else {
                        bounce.resize(BOUNCE_BYTES / 8, 0);
                        // SAFETY: plain bytes of a live Vec<u64>.
                        let b = unsafe {
                            std::slice::from_raw_parts_mut(
                                bounce.as_mut_ptr().cast::<u8>(),
                                BOUNCE_BYTES,
                            )
                        };
                        while rs.got < total {
                            let k = (total - rs.got).min(BOUNCE_BYTES);
                            d.read(addr + rs.got as u64, &mut b[..k])
                                .map_err(link_err)?;
                            // SAFETY: as for the streamed path below.
                            unsafe { absorb(rs, &b[..k], dst, with, mem, cx) };
                        }
                    }
                    d.ack();
                    progressed = true;
                }
                if with.is_none() {
                    // A copy: let the link read straight into the destination (TCP then
                    // skips its staging buffer).
                    while rs.got < total {
                        // SAFETY: as for `absorb` below: `dst` is valid and only this receive
                        // accesses it now; [got, total) lies inside it.
                        let out = unsafe {
                            std::slice::from_raw_parts_mut(mem.ptr(dst).add(rs.got), total - rs.got)
                        };
                        let stores = if prep.dependents[i].is_empty() {
                            cx.stores()
                        } else {
                            Stores::Cached
                        };
                        let k = link.read_into_with(out, stores).map_err(link_err)?;
                        if k == 0 {
                            break;
                        }
                        rs.got += k;
                        progressed = true;
                    }
                }
                while rs.got + rs.carry_len < total {
                    let s = link.peek().map_err(link_err)?;
                    if s.is_empty() {
                        break;
                    }
                    let s = &s[..s.len().min(total - rs.got - rs.carry_len)];
                    // SAFETY: `dst`/`with` lie in valid memory (contract); the dependency graph
                    // keeps every other access to `dst` away while this receive is pending.
                    let used = unsafe { absorb(rs, s, dst, with, mem, cx) };
                    link.consume(used);
                    progressed = true;
                }
                if rs.got < total {
                    break;
                }
                *rs = RecvState {
                    idx: rs.idx + 1,
                    ..RecvState::default()
                };
                complete(i, remaining, ready, &mut done);
                progressed = true;
            }
            // Whether a step of this peer's waits on the link: a send or receive whose
            // dependencies are met, or an unacknowledged single-copy send.
            let link_bound = |list: &[u32], idx: usize| {
                list.get(idx).is_some_and(|&i| remaining[i as usize] == 0)
            };
            if link_bound(&prep.sends[peer], sst[peer].idx)
                || link_bound(&prep.recvs[peer], rst[peer].idx)
                || !unacked[peer].is_empty()
            {
                blocked.push(peer);
            }
        }
        if done == n {
            break;
        }
        let now = Instant::now();
        if progressed {
            last_progress = now;
            idle_since = None;
            continue;
        }
        if cx.abort.load(Ordering::Acquire) {
            return Err(Error::Aborted);
        }
        let stalled = now.duration_since(last_progress);
        if stalled >= cx.timeout {
            let peers = active
                .iter()
                .copied()
                .filter(|&p| {
                    sst[p].idx < prep.sends[p].len()
                        || rst[p].idx < prep.recvs[p].len()
                        || !unacked[p].is_empty()
                })
                .collect();
            return Err(Error::Timeout {
                rank: cx.rank,
                seq: cx.header.seq,
                peers,
                waited: stalled,
            });
        }
        let since = *idle_since.get_or_insert(now);
        let idle = now.duration_since(since);
        if idle < cx.spin {
            // A peer we wait for may need this core (oversubscribed host, or a loaded one):
            // after a short pure spin, each poll offers the core with `sched_yield`, which
            // costs well under a microsecond when nobody else is runnable.
            if cx.yield_idle || idle >= PURE_SPIN {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        let nap = (cx.timeout - stalled).min(Duration::from_millis(10));
        if blocked.is_empty() {
            ep.wait(token, nap).map_err(link_err)?;
        } else {
            ep.wait_for(token, nap, blocked).map_err(link_err)?;
        }
    }
    Ok(())
}

fn check_frame(
    cx: &CallCtx<'_>,
    peer: usize,
    raw: &[u8; FRAME_BYTES],
    len: usize,
) -> Result<Frame> {
    let mismatch = |got: String| Error::Mismatch {
        rank: cx.rank,
        peer,
        seq: cx.header.seq,
        expected: cx.header.to_string(),
        got,
    };
    let f = Frame::decode(raw).map_err(|e| mismatch(format!("an unreadable header ({e})")))?;
    if f.op != cx.header {
        return Err(mismatch(f.op.to_string()));
    }
    if f.len != len as u64 {
        return Err(mismatch(format!(
            "{} with a {}-byte segment where {len} were expected",
            f.op, f.len
        )));
    }
    Ok(f)
}

/// Bytes of a single-copy message landed at a time before they are reduced (cache-sized).
const BOUNCE_BYTES: usize = 128 << 10;

/// How long an idle rank spins without yielding on a host that is not oversubscribed: the
/// latency of a small message between two spinning ranks is ~1–2 µs.
const PURE_SPIN: Duration = Duration::from_micros(5);

/// Applies arrived bytes `s` to a receive; returns how many were used (all of them).
///
/// # Safety
/// `dst` and `with` must lie in valid, exclusively accessed memory as for [`execute`].
unsafe fn absorb(
    rs: &mut RecvState,
    s: &[u8],
    dst: Region,
    with: Option<Region>,
    mem: Mem,
    cx: &CallCtx<'_>,
) -> usize {
    let es = mem.esize;
    let Some(w) = with else {
        // SAFETY: [got, got + s.len()) lies inside `dst` (s was clipped to what remains).
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), mem.ptr(dst).add(rs.got), s.len()) };
        rs.got += s.len();
        return s.len();
    };
    let apply = |got: usize, src: &[u8]| {
        let d = mem.ptr(dst).wrapping_add(got);
        let a = mem.ptr(w).wrapping_add(got);
        // SAFETY: both lie inside their regions (same length as `dst`); `Prepared::new`
        // refused partial overlap, so they are either the same memory or disjoint.
        unsafe {
            let ds = std::slice::from_raw_parts_mut(d, src.len());
            if d.cast_const() == a.cast_const() {
                reduce::reduce(cx.dtype, cx.op, ds, src);
            } else {
                reduce::reduce3(
                    cx.dtype,
                    cx.op,
                    ds,
                    std::slice::from_raw_parts(a, src.len()),
                    src,
                );
            }
        }
    };
    let mut used = 0;
    if rs.carry_len > 0 {
        let k = (es - rs.carry_len).min(s.len());
        rs.carry[rs.carry_len..rs.carry_len + k].copy_from_slice(&s[..k]);
        rs.carry_len += k;
        used = k;
        if rs.carry_len == es {
            let c = rs.carry;
            apply(rs.got, &c[..es]);
            rs.got += es;
            rs.carry_len = 0;
        }
    }
    let whole = (s.len() - used) / es * es;
    if whole > 0 {
        apply(rs.got, &s[used..used + whole]);
        rs.got += whole;
        used += whole;
    }
    let rest = s.len() - used;
    rs.carry[..rest].copy_from_slice(&s[used..]);
    rs.carry_len = rest;
    s.len()
}

/// Runs a local copy or reduction.
///
/// # Safety
/// As for [`execute`].
unsafe fn run_local(st: &Step, mem: Mem, cx: &CallCtx<'_>) -> Result<()> {
    let es = mem.esize;
    match *st {
        Step::Copy { src, dst } => {
            let (s, d) = (mem.ptr(src), mem.ptr(dst));
            if s != d {
                // SAFETY: both regions are valid for `len` elements; `copy` allows overlap.
                unsafe { std::ptr::copy(s, d, dst.len * es) };
            }
        }
        Step::Reduce { dst, a, b } => {
            let n = dst.len * es;
            let (d, pa, pb) = (mem.ptr(dst), mem.ptr(a), mem.ptr(b));
            // SAFETY: all three regions are valid for `n` bytes; each operand is either the
            // destination itself or disjoint from it (checked in `Prepared::new`).
            unsafe {
                if d == pa {
                    reduce::reduce(
                        cx.dtype,
                        cx.op,
                        std::slice::from_raw_parts_mut(d, n),
                        std::slice::from_raw_parts(pb, n),
                    );
                } else if d == pb {
                    let mut tmp = vec![0u8; n];
                    reduce::reduce3(
                        cx.dtype,
                        cx.op,
                        &mut tmp,
                        std::slice::from_raw_parts(pa, n),
                        std::slice::from_raw_parts(pb, n),
                    );
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), d, n);
                } else {
                    reduce::reduce3(
                        cx.dtype,
                        cx.op,
                        std::slice::from_raw_parts_mut(d, n),
                        std::slice::from_raw_parts(pa, n),
                        std::slice::from_raw_parts(pb, n),
                    );
                }
            }
        }
        _ => return Err(Error::Internal(format!("{st} is not a local step"))),
    }
    Ok(())
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
