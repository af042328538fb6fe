//! The protocol state shared by an endpoint's links: the fabric, every peer's rings and
//! counters, the registration cache, and the completion dispatcher (see the module docs of
//! [`super`] for the protocol).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dmabuf::DmaBuf;
use super::fabric::{Access, Completion, Fabric, FabricError, MemRegion, RmaOp};
use super::regcache::{RegCache, RegRef};
use super::wire::{Announce, Imm, ANNOUNCE_LEN, MAX_COUNT};
use crate::link::LinkError;

/// Kinds of operation context (bits 60..63 of a context; the peer is in bits 32..59).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    TxData = 1,
    TxCtrl = 2,
    Read = 3,
    HelloSend = 4,
    HelloRecv = 5,
    Probe = 6,
}

pub(crate) fn ctx(op: Op, peer: usize, idx: u32) -> u64 {
    (op as u64) << 60 | ((peer as u64) & 0x0fff_ffff) << 32 | idx as u64
}

pub(crate) fn ctx_parts(c: u64) -> (Option<Op>, usize, u32) {
    let op = match c >> 60 {
        1 => Op::TxData,
        2 => Op::TxCtrl,
        3 => Op::Read,
        4 => Op::HelloSend,
        5 => Op::HelloRecv,
        6 => Op::Probe,
        _ => return (None, 0, 0),
    };
    (Some(op), ((c >> 32) & 0x0fff_ffff) as usize, c as u32)
}

/// How long a link waits on a silent peer before probing the connection with an
/// immediate-less write (a dead peer's connection then fails the probe).
pub(crate) const PROBE_AFTER: Duration = Duration::from_millis(500);

/// Where a peer lets us write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Remote {
    pub(crate) ring_addr: u64,
    pub(crate) ring_key: u64,
    pub(crate) ctrl_addr: u64,
    pub(crate) ctrl_key: u64,
    pub(crate) slots: usize,
    pub(crate) slot_bytes: usize,
}

/// One peer's side of the protocol.
pub(crate) struct Peer {
    pub(crate) peer: usize,
    pub(crate) remote: Option<Remote>,
    // Sending: staging slots (one per remote slot), the next sequence number, and how many
    // slots the peer has granted so far (its slot count + credits returned).
    pub(crate) tx: Option<(DmaBuf, usize)>,
    pub(crate) tx_seq: u64,
    pub(crate) granted: u64,
    pub(crate) tx_busy: Vec<bool>,
    pub(crate) pending_announce: VecDeque<Announce>,
    // Receiving: our ring for this peer, which slots hold bytes, the head's sequence
    // number and read offset, and how many consumed slots were credited back.
    pub(crate) rx: DmaBuf,
    pub(crate) slots: usize,
    pub(crate) slot_bytes: usize,
    pub(crate) rx_len: Vec<Option<u32>>,
    pub(crate) rx_head: u64,
    pub(crate) rx_off: usize,
    pub(crate) credited: u64,
    // Control writes land on the peer's control word; ours go from `ctrl_src`.
    pub(crate) ctrl_src: (DmaBuf, usize),
    /// Our control word, where the peer's control writes land (only owned, never read:
    /// the messages are the immediates).
    #[allow(dead_code)]
    pub(crate) ctrl_dst: DmaBuf,
    pub(crate) acks_to_send: u64,
    pub(crate) close_sent: bool,
    // Single copy: tickets posted and acknowledged, the registrations they hold, the
    // peer's announcements not yet acknowledged.
    pub(crate) posted: u64,
    pub(crate) acks_in: u64,
    pub(crate) held: VecDeque<Option<RegRef>>,
    pub(crate) announced: VecDeque<Announce>,
    // State.
    pub(crate) closed: bool,
    pub(crate) peer_closed: bool,
    pub(crate) fail: Option<LinkError>,
    pub(crate) last_heard: Instant,
    pub(crate) probe_inflight: bool,
    // Control writes (credits, acks, close) posted and not yet completed.
    pub(crate) ctrl_inflight: u32,
}

impl Peer {
    /// The error a call on this link returns now, if any.
    pub(crate) fn error(&self) -> Option<LinkError> {
        if let Some(e) = &self.fail {
            return Some(e.duplicate());
        }
        if self.closed {
            return Some(LinkError::Closed { peer: self.peer });
        }
        None
    }

    fn slot_ptr(&self, idx: usize) -> *mut u8 {
        self.rx.at(idx * self.slot_bytes)
    }

    fn set_fail(&mut self, e: LinkError) {
        if self.fail.is_none() {
            tracing::debug!("rdma: link to rank {} failed: {e}", self.peer);
            self.fail = Some(e);
        }
    }

    fn protocol(&mut self, detail: String) {
        let peer = self.peer;
        self.set_fail(LinkError::Protocol { peer, detail });
    }
}

/// A fabric error on the link to `peer`, as a link error.
pub(crate) fn link_error(peer: usize, e: &FabricError) -> LinkError {
    if e.disconnected {
        LinkError::Closed { peer }
    } else {
        LinkError::Io {
            peer,
            source: std::io::Error::other(e.to_string()),
        }
    }
}

/// The shared state; see the module docs.
pub(crate) struct Core<F: Fabric> {
    pub(crate) fabric: F,
    pub(crate) peers: Vec<Option<Peer>>,
    /// Other core-owned registered buffers (setup messages), freed after the fabric.
    pub(crate) keep: Vec<DmaBuf>,
    pub(crate) cache: RegCache<F::Mr>,
    /// Registrations owned by the core (rings, control words, setup buffers).
    pub(crate) mrs: Vec<F::Mr>,
    pub(crate) activity: Arc<AtomicU64>,
    pub(crate) timeout: Duration,
    comps: Vec<Completion>,
    /// Completions of setup messages and reads, for the code waiting on them.
    pub(crate) events: Vec<Completion>,
    pub(crate) next_read: u32,
}

impl<F: Fabric> Core<F> {
    pub(crate) fn new(fabric: F, world: usize, timeout: Duration) -> Self {
        Core {
            fabric,
            peers: (0..world).map(|_| None).collect(),
            keep: Vec::new(),
            cache: RegCache::new(super::DEFAULT_CACHE_BYTES),
            mrs: Vec::new(),
            activity: Arc::new(AtomicU64::new(0)),
            timeout,
            comps: Vec::new(),
            events: Vec::new(),
            next_read: 0,
        }
    }

    /// Registers core-owned memory; returns its region's key data (the handle is kept).
    pub(crate) fn register_owned(
        &mut self,
        buf: &DmaBuf,
        access: Access,
    ) -> Result<(u64, usize, u64), FabricError> {
        // SAFETY: the buffer is owned by the core (in a `Peer` or a setup field) and
        // outlives the registration: `Drop for Core` deregisters before fields are freed.
        let r: MemRegion<F::Mr> = unsafe { self.fabric.register(buf.ptr(), buf.len(), access)? };
        self.mrs.push(r.mr);
        Ok((r.rkey, r.desc, r.remote_base))
    }

    /// Whether some peer has work that only this endpoint's own progress moves: writes
    /// posted and not completed (a provider with manual progress, such as libfabric's tcp,
    /// transmits them only while its completion queue is polled), or control messages
    /// waiting for room in the send queue.
    pub(crate) fn needs_progress(&self) -> bool {
        self.peers.iter().flatten().any(|p| {
            p.fail.is_none()
                && (p.tx_busy.iter().any(|b| *b)
                    || p.ctrl_inflight > 0
                    || p.probe_inflight
                    || !p.pending_announce.is_empty()
                    || p.acks_to_send > 0
                    || (p.closed && !p.close_sent))
        })
    }

    /// Polls the fabric once and dispatches what came; flushes pending control messages.
    /// Returns whether anything completed.
    pub(crate) fn progress(&mut self) -> bool {
        let mut comps = std::mem::take(&mut self.comps);
        comps.clear();
        if let Err(e) = self.fabric.poll(&mut comps) {
            for p in self.peers.iter_mut().flatten() {
                let err = link_error(p.peer, &e);
                p.set_fail(err);
            }
        }
        let any = !comps.is_empty();
        for c in comps.drain(..) {
            self.dispatch(c);
        }
        self.comps = comps;
        for i in 0..self.peers.len() {
            self.flush(i);
        }
        if any {
            self.activity.fetch_add(1, Ordering::SeqCst);
        }
        any
    }

    fn dispatch(&mut self, c: Completion) {
        match c {
            Completion::Remote { peer, imm } => self.on_remote(peer, imm),
            Completion::Done { ctx: cx, .. } => {
                let (op, peer, idx) = ctx_parts(cx);
                let Some(p) = self.peers.get_mut(peer).and_then(Option::as_mut) else {
                    self.events.push(c);
                    return;
                };
                match op {
                    Some(Op::TxData) => {
                        if let Some(b) = p.tx_busy.get_mut(idx as usize) {
                            *b = false;
                        }
                    }
                    Some(Op::Probe) => p.probe_inflight = false,
                    Some(Op::TxCtrl) => p.ctrl_inflight = p.ctrl_inflight.saturating_sub(1),
                    _ => self.events.push(c),
                }
            }
            Completion::Failed { ctx: cx, ref error } => {
                let (op, peer, _) = ctx_parts(cx);
                match op {
                    Some(Op::Read | Op::HelloSend | Op::HelloRecv) | None => self.events.push(c),
                    Some(_) => {
                        if let Some(p) = self.peers.get_mut(peer).and_then(Option::as_mut) {
                            p.probe_inflight = false;
                            if op == Some(Op::TxCtrl) {
                                p.ctrl_inflight = p.ctrl_inflight.saturating_sub(1);
                            }
                            let e = link_error(peer, error);
                            p.set_fail(e);
                        }
                    }
                }
            }
        }
    }

    fn on_remote(&mut self, peer: usize, imm: u32) {
        let Some(p) = self.peers.get_mut(peer).and_then(Option::as_mut) else {
            tracing::debug!("rdma: a write with immediate data from unknown rank {peer}");
            return;
        };
        p.last_heard = Instant::now();
        match Imm::decode(imm) {
            Some(Imm::Data { slot, len }) => {
                let i = slot as usize;
                if i >= p.slots || len as usize > p.slot_bytes {
                    return p.protocol(format!("data in slot {slot} of {len} bytes"));
                }
                if p.rx_len[i].is_some() {
                    return p.protocol(format!("slot {slot} written while full (no credit)"));
                }
                p.rx_len[i] = Some(len);
            }
            Some(Imm::Announce { slot }) => {
                let i = slot as usize;
                if i >= p.slots || ANNOUNCE_LEN > p.slot_bytes || p.rx_len[i].is_some() {
                    return p.protocol(format!("announcement in slot {slot}"));
                }
                let mut b = [0u8; ANNOUNCE_LEN];
                // SAFETY: the peer's write into slot `i` completed (this is its remote
                // completion) and the slot is ours until we credit it back.
                unsafe { std::ptr::copy_nonoverlapping(p.slot_ptr(i), b.as_mut_ptr(), b.len()) };
                p.announced.push_back(Announce::decode(&b));
                // An empty slot: released when the stream reaches it.
                p.rx_len[i] = Some(0);
            }
            Some(Imm::Credit { n }) => {
                p.granted += u64::from(n);
                let slots = p.remote.map_or(0, |r| r.slots as u64);
                if p.granted > p.tx_seq + slots {
                    p.protocol(format!("{n} credits for slots never written"));
                }
            }
            Some(Imm::Ack { n }) => {
                p.acks_in += u64::from(n);
                if p.acks_in > p.posted {
                    p.protocol(format!(
                        "{} acknowledgements for {} posts",
                        p.acks_in, p.posted
                    ));
                }
            }
            Some(Imm::Close) => p.peer_closed = true,
            None => p.protocol(format!("unknown immediate {imm:#x}")),
        }
    }

    /// Posts what peer `i` has pending: announcements (they take slots), credits, acks,
    /// close. A full send queue leaves the rest for the next call.
    pub(crate) fn flush(&mut self, i: usize) {
        let Some(p) = self.peers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let Some(r) = p.remote else { return };
        if p.fail.is_some() {
            return;
        }
        while let Some(a) = p.pending_announce.front().copied() {
            match post_slot(&mut self.fabric, p, &r, &a.encode(), true) {
                Ok(true) => {
                    p.pending_announce.pop_front();
                }
                Ok(false) => break,
                Err(e) => return p.set_fail(e),
            }
        }
        // Credits: batched while the peer still has many, all at once when our ring is
        // drained (so the sender never waits on credits we hold).
        let owed = p.rx_head - p.credited;
        let drained = p.rx_len[(p.rx_head % p.slots as u64) as usize].is_none();
        if owed > 0 && (drained || owed >= (p.slots as u64 / 4).max(1)) {
            let n = owed.min(u64::from(MAX_COUNT)) as u32;
            match post_ctrl(&mut self.fabric, p, &r, Imm::Credit { n }) {
                Ok(true) => p.credited += u64::from(n),
                Ok(false) => {}
                Err(e) => return p.set_fail(e),
            }
        }
        if p.acks_to_send > 0 {
            let n = p.acks_to_send.min(u64::from(MAX_COUNT)) as u32;
            match post_ctrl(&mut self.fabric, p, &r, Imm::Ack { n }) {
                Ok(true) => p.acks_to_send -= u64::from(n),
                Ok(false) => {}
                Err(e) => return p.set_fail(e),
            }
        }
        if p.closed && !p.close_sent {
            match post_ctrl(&mut self.fabric, p, &r, Imm::Close) {
                Ok(true) => p.close_sent = true,
                Ok(false) => {}
                Err(e) => p.set_fail(e),
            }
        }
    }

    /// Probes the connection to a peer we have heard nothing from for [`PROBE_AFTER`]:
    /// a write without immediate data to its control word fails if the peer is gone.
    pub(crate) fn maybe_probe(&mut self, i: usize) {
        let Some(p) = self.peers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let Some(r) = p.remote else { return };
        if p.probe_inflight || p.fail.is_some() || p.last_heard.elapsed() < PROBE_AFTER {
            return;
        }
        let op = RmaOp {
            peer: p.peer,
            local: p.ctrl_src.0.ptr(),
            len: 8,
            desc: p.ctrl_src.1,
            remote_addr: r.ctrl_addr,
            rkey: r.ctrl_key,
            ctx: ctx(Op::Probe, p.peer, 0),
        };
        // SAFETY: `ctrl_src` is core-owned, registered, and never written.
        match unsafe { self.fabric.write(&op, None) } {
            Ok(true) => {
                p.probe_inflight = true;
                // Probe again a period after this one completes.
                p.last_heard = Instant::now();
            }
            Ok(false) => {}
            Err(e) => p.set_fail(link_error(p.peer, &e)),
        }
    }

    /// Takes the completion event matching `pred`, if it came.
    pub(crate) fn take_event(&mut self, pred: impl Fn(&Completion) -> bool) -> Option<Completion> {
        let i = self.events.iter().position(pred)?;
        Some(self.events.swap_remove(i))
    }

    /// Sleeps on the fabric for at most `d`.
    pub(crate) fn nap(&mut self, d: Duration) {
        if let Err(e) = self.fabric.wait(d) {
            tracing::debug!("rdma: fabric wait failed: {e}");
            std::thread::sleep(d.min(Duration::from_millis(1)));
        }
    }

    /// Registers `[addr, addr + len)` through the cache.
    pub(crate) fn cache_acquire(
        &mut self,
        addr: usize,
        len: usize,
        access: Access,
    ) -> Result<RegRef, FabricError> {
        let fabric = &mut self.fabric;
        let mut evicted = Vec::new();
        let r = self.cache.acquire(
            addr,
            len,
            // SAFETY: the registration covers the pages of a live user buffer; it is used
            // for transfers only while a post or read holds a reference (the buffer is live
            // then), and the cache deregisters it before the fabric closes.
            |start, plen| unsafe { fabric.register(start as *mut u8, plen, access) },
            |m| evicted.push(m),
        );
        for m in evicted {
            self.fabric.deregister(m);
        }
        r
    }

    /// Gives back a cache reference.
    pub(crate) fn cache_release(&mut self, r: RegRef) {
        let mut evicted = Vec::new();
        self.cache.release(r, |m| evicted.push(m));
        for m in evicted {
            self.fabric.deregister(m);
        }
    }
}

/// Writes `bytes` (at most one slot) into the peer's next slot as data or an announcement,
/// if a credit and the staging slot are free: `Ok(false)` when not.
pub(crate) fn post_slot<F: Fabric>(
    fabric: &mut F,
    p: &mut Peer,
    r: &Remote,
    bytes: &[u8],
    announce: bool,
) -> Result<bool, LinkError> {
    let Some((tx, desc)) = &p.tx else {
        return Ok(false);
    };
    if p.tx_seq >= p.granted {
        return Ok(false);
    }
    let idx = (p.tx_seq % r.slots as u64) as usize;
    if p.tx_busy[idx] {
        return Ok(false);
    }
    debug_assert!(bytes.len() <= r.slot_bytes);
    let local = tx.at(idx * r.slot_bytes);
    // SAFETY: staging slot `idx` is ours (its last write completed: not busy) and holds
    // `slot_bytes >= bytes.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), local, bytes.len()) };
    let imm = if announce {
        Imm::Announce { slot: idx as u32 }
    } else {
        Imm::Data {
            slot: idx as u32,
            len: bytes.len() as u32,
        }
    };
    let op = RmaOp {
        peer: p.peer,
        local,
        len: bytes.len(),
        desc: *desc,
        remote_addr: r.ring_addr + (idx * r.slot_bytes) as u64,
        rkey: r.ring_key,
        ctx: ctx(Op::TxData, p.peer, idx as u32),
    };
    // SAFETY: the staging slot stays untouched until its completion clears `tx_busy`.
    match unsafe { fabric.write(&op, Some(imm.encode())) } {
        Ok(true) => {
            p.tx_busy[idx] = true;
            p.tx_seq += 1;
            Ok(true)
        }
        Ok(false) => Ok(false),
        Err(e) => Err(link_error(p.peer, &e)),
    }
}

/// Writes a control message (8 bytes to the peer's control word, with `imm`).
fn post_ctrl<F: Fabric>(
    fabric: &mut F,
    p: &mut Peer,
    r: &Remote,
    imm: Imm,
) -> Result<bool, LinkError> {
    let op = RmaOp {
        peer: p.peer,
        local: p.ctrl_src.0.ptr(),
        len: 8,
        desc: p.ctrl_src.1,
        remote_addr: r.ctrl_addr,
        rkey: r.ctrl_key,
        ctx: ctx(Op::TxCtrl, p.peer, 0),
    };
    // SAFETY: `ctrl_src` is core-owned, registered, and never written (its content is
    // irrelevant: the message is the immediate data).
    let posted =
        unsafe { fabric.write(&op, Some(imm.encode())) }.map_err(|e| link_error(p.peer, &e))?;
    if posted {
        p.ctrl_inflight += 1;
    }
    Ok(posted)
}

impl<F: Fabric> Drop for Core<F> {
    fn drop(&mut self) {
        for p in self.peers.iter_mut().flatten() {
            while let Some(h) = p.held.pop_front() {
                if let Some(r) = h {
                    self.cache.release(r, |_| {});
                }
            }
        }
        let fabric = &mut self.fabric;
        self.cache.clear(|m| fabric.deregister(m));
        for m in self.mrs.drain(..) {
            self.fabric.deregister(m);
        }
        // The fabric (closing the endpoint) drops next, then the buffers.
    }
}
