//! The receiving side of the executor: per peer, the receives of the plan in stream order,
//! each a frame header checked against the call, then the payload copied or reduced
//! straight out of the link, or read from the sender's memory (single copy).

use ferrocoll_transports::{Link, LinkError, Stores};

use super::frame::{Frame, FRAME_BYTES};
use super::{CallCtx, Mem, Run};
use crate::error::{Error, Result};
use crate::reduce;
use crate::schedule::{Region, Step};

/// Bytes of a single-copy message landed at a time before they are reduced (cache-sized).
const BOUNCE_BYTES: usize = 128 << 10;

/// Progress of the current receive from one peer.
#[derive(Clone)]
pub(super) struct RecvState {
    /// Position in the peer's receive list.
    pub(super) idx: usize,
    hdr: [u8; FRAME_BYTES],
    pub(super) hdr_got: usize,
    pub(super) got: usize,
    carry: [u8; 8],
    carry_len: usize,
    /// The header announced a single-copy message at this address of the peer's.
    single_copy: Option<u64>,
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
            single_copy: None,
        }
    }
}

impl Run<'_, '_> {
    /// Moves the receives from `peer` (state `rs`) as far as the link has bytes; whether
    /// anything moved. `bounce` is the landing area of single-copy reductions.
    ///
    /// # Safety
    /// As for [`super::execute`].
    pub(super) unsafe fn recvs(
        &mut self,
        rs: &mut RecvState,
        bounce: &mut Vec<u64>,
        peer: usize,
        link: &mut dyn Link,
    ) -> Result<bool> {
        let (prep, mem, cx) = (self.prep, self.mem, self.cx);
        let mut progressed = false;
        while let Some(&i) = prep.recvs[peer].get(rs.idx) {
            let i = i as usize;
            if self.remaining[i] > 0 {
                break;
            }
            let Step::Recv { dst, with, .. } = prep.steps[i] else {
                unreachable!("recv list holds recvs")
            };
            let total = dst.len * mem.esize;
            if rs.hdr_got < FRAME_BYTES {
                let k = link
                    .read_into(&mut rs.hdr[rs.hdr_got..])
                    .map_err(|e| self.link_err(e))?;
                rs.hdr_got += k;
                progressed |= k > 0;
                if rs.hdr_got < FRAME_BYTES {
                    break;
                }
                rs.single_copy = check_frame(cx, peer, &rs.hdr, total)?.single_copy;
            }
            if let Some(addr) = rs.single_copy {
                // SAFETY: passed on from the caller.
                unsafe { self.read_single_copy(rs, bounce, addr, peer, link, dst, with)? };
                progressed = true;
            }
            if with.is_none() {
                // A copy: let the link read straight into the destination (TCP then skips
                // its staging buffer).
                let stores = if prep.dependents[i].is_empty() {
                    prep.policy.stores
                } else {
                    Stores::Cached
                };
                while rs.got < total {
                    // SAFETY: `dst` is valid and only this receive accesses it now (contract
                    // and dependency graph); [got, total) lies inside it.
                    let out = unsafe {
                        std::slice::from_raw_parts_mut(mem.ptr(dst).add(rs.got), total - rs.got)
                    };
                    let k = link
                        .read_into_with(out, stores)
                        .map_err(|e| self.link_err(e))?;
                    if k == 0 {
                        break;
                    }
                    rs.got += k;
                    progressed = true;
                }
            }
            while rs.got + rs.carry_len < total {
                let s = link.peek().map_err(|e| link_err_of(cx, e))?;
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
            self.complete(i);
            progressed = true;
        }
        Ok(progressed)
    }

    /// Reads a single-copy message at `addr` of `peer`'s memory into `dst` (or, when the
    /// receive reduces, through a cache-sized landing area into the reduction), then
    /// acknowledges it.
    ///
    /// # Safety
    /// As for [`super::execute`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn read_single_copy(
        &mut self,
        rs: &mut RecvState,
        bounce: &mut Vec<u64>,
        addr: u64,
        peer: usize,
        link: &mut dyn Link,
        dst: Region,
        with: Option<Region>,
    ) -> Result<()> {
        let (mem, cx) = (self.mem, self.cx);
        let total = dst.len * mem.esize;
        let Some(d) = link.single_copy() else {
            return Err(link_err_of(
                cx,
                LinkError::Protocol {
                    peer,
                    detail: "a single-copy message on a link that cannot do that".into(),
                },
            ));
        };
        if with.is_none() {
            // SAFETY: `dst` lies in valid memory that only this receive accesses now
            // (contract and dependency graph).
            let out = unsafe { std::slice::from_raw_parts_mut(mem.ptr(dst), total) };
            d.read(addr, out).map_err(|e| link_err_of(cx, e))?;
            rs.got = total;
        } else {
            bounce.resize(BOUNCE_BYTES / 8, 0);
            // SAFETY: plain bytes of a live Vec<u64>.
            let b = unsafe {
                std::slice::from_raw_parts_mut(bounce.as_mut_ptr().cast::<u8>(), BOUNCE_BYTES)
            };
            while rs.got < total {
                let k = (total - rs.got).min(BOUNCE_BYTES);
                d.read(addr + rs.got as u64, &mut b[..k])
                    .map_err(|e| link_err_of(cx, e))?;
                // SAFETY: as for the streamed path in `recvs`.
                unsafe { absorb(rs, &b[..k], dst, with, mem, cx) };
            }
        }
        d.ack();
        Ok(())
    }
}

fn link_err_of(cx: &CallCtx<'_>, e: LinkError) -> Error {
    super::link_err(cx, e)
}

/// Decodes a received header and checks it against the call: the same op, and `len`
/// payload bytes (`usize::MAX`: any length).
pub(super) fn check_frame(
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

/// Applies arrived bytes `s` to a receive; returns how many were used (all of them).
///
/// # Safety
/// `dst` and `with` must lie in valid, exclusively accessed memory as for
/// [`super::execute`].
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
