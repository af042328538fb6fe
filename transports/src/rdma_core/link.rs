//! [`RdmaLink`]: the byte stream and single-copy transfers of one peer, over the shared
//! [`Core`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::core::{ctx, link_error, Core, Op, Peer};
use super::fabric::{Access, Completion, Fabric, RmaOp};
use super::wire::Announce;
use crate::link::{Link, LinkCaps, LinkError, SingleCopy};

/// One rank's link to one peer over an RDMA fabric. See the module docs of [`super`].
pub struct RdmaLink<F: Fabric> {
    pub(crate) peer: usize,
    pub(crate) core: Arc<Mutex<Core<F>>>,
    /// Bytes one receive slot holds and slots per ring (for [`LinkCaps`]).
    pub(crate) in_flight: usize,
}

/// The core, even if a thread panicked while holding it (its state stays consistent: every
/// mutation is a single assignment).
pub(crate) fn lock<F: Fabric>(core: &Mutex<Core<F>>) -> MutexGuard<'_, Core<F>> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

fn peer_mut<F: Fabric>(c: &mut Core<F>, peer: usize) -> &mut Peer {
    c.peers[peer]
        .as_mut()
        .expect("a link exists only for a connected peer")
}

impl<F: Fabric> RdmaLink<F> {
    /// Waits (polling the completion queue, bounded by the core's timeout) until `done`
    /// says so; `what` names the wait in the timeout error.
    fn wait_until<T>(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut Core<F>) -> Option<Result<T, LinkError>>,
    ) -> Result<T, LinkError> {
        let peer = self.peer;
        let mut c = lock(&self.core);
        let deadline = Instant::now() + c.timeout;
        loop {
            c.progress();
            if let Some(r) = done(&mut c) {
                return r;
            }
            if let Some(e) = peer_mut(&mut c, peer)
                .fail
                .as_ref()
                .map(LinkError::duplicate)
            {
                return Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                let e = LinkError::Io {
                    peer,
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("rdma: {what} did not complete in {:?}", c.timeout),
                    ),
                };
                // A transfer may still be posted: the link is unusable from now on.
                peer_mut(&mut c, peer).fail = Some(e.duplicate());
                return Err(e);
            }
            c.maybe_probe(peer);
            c.nap((deadline - now).min(std::time::Duration::from_millis(20)));
        }
    }
}

impl<F: Fabric> Link for RdmaLink<F> {
    fn peer(&self) -> usize {
        self.peer
    }

    fn try_write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        let mut c = lock(&self.core);
        c.progress();
        let Core { fabric, peers, .. } = &mut *c;
        let p = peers[self.peer].as_mut().expect("connected peer");
        if let Some(e) = p.error() {
            return Err(e);
        }
        if p.peer_closed {
            return Err(LinkError::Closed { peer: self.peer });
        }
        let Some(r) = p.remote else { return Ok(0) };
        let mut off = 0;
        while off < buf.len() && p.pending_announce.is_empty() {
            let n = (buf.len() - off).min(r.slot_bytes);
            match super::core::post_slot(fabric, p, &r, &buf[off..off + n], false) {
                Ok(true) => off += n,
                Ok(false) => break,
                Err(e) if off == 0 => return Err(e),
                Err(e) => {
                    p.fail = Some(e);
                    break;
                }
            }
        }
        Ok(off)
    }

    fn peek(&mut self) -> Result<&[u8], LinkError> {
        let peer = self.peer;
        let mut c = lock(&self.core);
        c.progress();
        let p = peer_mut(&mut c, peer);
        loop {
            let idx = (p.rx_head % p.slots as u64) as usize;
            match p.rx_len[idx] {
                Some(len) if p.rx_off >= len as usize => {
                    p.rx_len[idx] = None;
                    p.rx_head += 1;
                    p.rx_off = 0;
                }
                Some(len) => {
                    let ptr = p.rx.at(idx * p.slot_bytes + p.rx_off);
                    let n = len as usize - p.rx_off;
                    drop(c);
                    // SAFETY: the peer's write into this slot completed (its immediate
                    // arrived) and the slot is not credited back before `consume` moves
                    // past it, so no one writes these bytes while the returned borrow of
                    // `self` lives; the ring lives as long as the core, which `self` holds.
                    return Ok(unsafe { std::slice::from_raw_parts(ptr, n) });
                }
                None => break,
            }
        }
        // Drained: owed credits go back now.
        c.flush(peer);
        let p = peer_mut(&mut c, peer);
        if let Some(e) = p.fail.as_ref().map(LinkError::duplicate) {
            return Err(e);
        }
        if p.peer_closed {
            return Err(LinkError::Closed { peer });
        }
        c.maybe_probe(peer);
        Ok(&[])
    }

    fn consume(&mut self, n: usize) {
        let peer = self.peer;
        let mut c = lock(&self.core);
        let p = peer_mut(&mut c, peer);
        p.rx_off += n;
        let idx = (p.rx_head % p.slots as u64) as usize;
        if let Some(len) = p.rx_len[idx] {
            debug_assert!(p.rx_off <= len as usize, "consumed past the peeked slice");
            if p.rx_off >= len as usize {
                p.rx_len[idx] = None;
                p.rx_head += 1;
                p.rx_off = 0;
                c.flush(peer);
            }
        }
    }

    fn close(&mut self) {
        let peer = self.peer;
        let mut c = lock(&self.core);
        let p = peer_mut(&mut c, peer);
        p.closed = true;
        c.flush(peer);
        c.progress();
    }

    fn caps(&self) -> LinkCaps {
        LinkCaps {
            single_copy: true,
            streaming_stores: false,
            registered_memory: true,
            max_in_flight: Some(self.in_flight),
        }
    }

    fn single_copy(&mut self) -> Option<&mut dyn SingleCopy> {
        Some(self)
    }
}

impl<F: Fabric> SingleCopy for RdmaLink<F> {
    /// Without the region the receiver cannot read: announces an empty one, which fails the
    /// peer's `read` with a protocol error (the executor must call `post_region`).
    fn post(&mut self) -> u64 {
        self.announce(None)
    }

    fn post_region(&mut self, addr: u64, len: usize) -> u64 {
        self.announce(Some((addr, len)))
    }

    fn acked(&mut self) -> Result<u64, LinkError> {
        let peer = self.peer;
        let mut c = lock(&self.core);
        c.progress();
        let mut released = Vec::new();
        let p = peer_mut(&mut c, peer);
        let acks = p.acks_in;
        while p.posted - (p.held.len() as u64) < acks {
            if let Some(Some(r)) = p.held.pop_front() {
                released.push(r);
            }
        }
        let waiting = acks < p.posted;
        let err = p.fail.as_ref().map(LinkError::duplicate);
        let gone = p.peer_closed;
        for r in released {
            c.cache_release(r);
        }
        if waiting {
            if let Some(e) = err {
                return Err(e);
            }
            if gone {
                return Err(LinkError::Closed { peer });
            }
            c.maybe_probe(peer);
        }
        Ok(acks)
    }

    fn read(&mut self, addr: u64, dst: &mut [u8]) -> Result<(), LinkError> {
        let peer = self.peer;
        let len = dst.len();
        let a = self.wait_until("a single-copy announcement", |c| {
            let p = peer_mut(c, peer);
            let a = p.announced.iter().find(|a| a.covers(addr, len)).copied();
            match a {
                Some(a) => Some(Ok(a)),
                None if p.peer_closed => Some(Err(LinkError::Closed { peer })),
                None => p
                    .announced
                    .iter()
                    .find(|a| a.len == 0)
                    .map(|_| Err(unregistered(peer))),
            }
        })?;
        if len == 0 {
            return Ok(());
        }
        let (local_mr, max_rma) = {
            let c = lock(&self.core);
            let caps = c.fabric.caps();
            (caps.local_mr, caps.max_rma.max(1))
        };
        let reg = if local_mr {
            let mut c = lock(&self.core);
            let access = Access::default();
            Some(
                c.cache_acquire(dst.as_mut_ptr() as usize, len, access)
                    .map_err(|e| link_error(peer, &e))?,
            )
        } else {
            None
        };
        let mut res = Ok(());
        let mut off = 0;
        while off < len && res.is_ok() {
            let n = (len - off).min(max_rma);
            res = self.read_chunk(
                &a,
                addr + off as u64,
                dst[off..off + n].as_mut_ptr(),
                n,
                reg.map_or(0, |r| r.desc),
            );
            off += n;
        }
        if let Some(r) = reg {
            lock(&self.core).cache_release(r);
        }
        res
    }

    fn ack(&mut self) {
        let peer = self.peer;
        let mut c = lock(&self.core);
        let p = peer_mut(&mut c, peer);
        p.announced.pop_front();
        p.acks_to_send += 1;
        c.flush(peer);
        // The sender's call cannot end before the acknowledgement arrives, and a fabric with
        // manual progress transmits it only while this side polls: push it out now (briefly
        // bounded), rather than leaving it until this rank's next call.
        let deadline = Instant::now() + ACK_PUSH;
        while Instant::now() < deadline {
            let p = peer_mut(&mut c, peer);
            if p.fail.is_some() || (p.acks_to_send == 0 && p.ctrl_inflight == 0) {
                break;
            }
            c.progress();
        }
    }
}

/// How long [`SingleCopy::ack`] polls for its acknowledgement to leave.
const ACK_PUSH: std::time::Duration = std::time::Duration::from_millis(50);

fn unregistered(peer: usize) -> LinkError {
    LinkError::Protocol {
        peer,
        detail: "the peer announced a single-copy buffer without a registered region \
                 (registration failed, or the executor called post() instead of post_region())"
            .into(),
    }
}

impl<F: Fabric> RdmaLink<F> {
    /// Announces a buffer (registering it through the cache) and returns its ticket.
    fn announce(&mut self, region: Option<(u64, usize)>) -> u64 {
        let peer = self.peer;
        let mut c = lock(&self.core);
        let reg = match region {
            Some((addr, len)) => {
                let access = Access {
                    remote_read: true,
                    remote_write: false,
                };
                match c.cache_acquire(addr as usize, len, access) {
                    Ok(r) => Some((addr, len, r)),
                    Err(e) => {
                        tracing::warn!(
                            "rdma: registering a single-copy buffer for rank {peer}: {e}"
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let p = peer_mut(&mut c, peer);
        p.posted += 1;
        let a = match reg {
            Some((addr, len, r)) => Announce {
                addr,
                len: len as u64,
                remote_addr: r.remote_addr(addr as usize),
                rkey: r.rkey,
            },
            None => Announce {
                addr: 0,
                len: 0,
                remote_addr: 0,
                rkey: 0,
            },
        };
        p.held.push_back(reg.map(|(_, _, r)| r));
        p.pending_announce.push_back(a);
        let ticket = p.posted;
        c.flush(peer);
        ticket
    }

    /// One RDMA read of `len` bytes at the peer's `addr` (inside announcement `a`) into
    /// `local`, waited for.
    fn read_chunk(
        &mut self,
        a: &Announce,
        addr: u64,
        local: *mut u8,
        len: usize,
        desc: usize,
    ) -> Result<(), LinkError> {
        let peer = self.peer;
        let id = {
            let mut c = lock(&self.core);
            c.next_read = c.next_read.wrapping_add(1);
            c.next_read
        };
        let op = RmaOp {
            peer,
            local,
            len,
            desc,
            remote_addr: a.remote_addr + (addr - a.addr),
            rkey: a.rkey,
            ctx: ctx(Op::Read, peer, id),
        };
        let mut posted = false;
        self.wait_until("an RDMA read", |c| {
            if !posted {
                // SAFETY: `local[..len]` is the caller's `dst` (borrowed mutably by `read`
                // for the whole wait) or lies in it; it is not touched until the completion,
                // and `read` does not return before it (or before a timeout, after which the
                // link has failed and the call is aborted).
                match unsafe { c.fabric.read(&op) } {
                    Ok(true) => posted = true,
                    Ok(false) => return None,
                    Err(e) => return Some(Err(link_error(peer, &e))),
                }
            }
            let ev = c.take_event(|e| match e {
                Completion::Done { ctx: x, .. } | Completion::Failed { ctx: x, .. } => *x == op.ctx,
                Completion::Remote { .. } => false,
            })?;
            Some(match ev {
                Completion::Failed { error, .. } => {
                    let e = link_error(peer, &error);
                    peer_mut(c, peer).fail = Some(e.duplicate());
                    Err(e)
                }
                _ => Ok(()),
            })
        })
    }
}
