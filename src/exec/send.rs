//! The sending side of the executor: per peer, the sends of the plan in stream order, each
//! a frame header then the payload, or a header that announces a single-copy message.

use ferrocoll_transports::{Link, LinkError};

use std::collections::VecDeque;

use super::frame::{Frame, FRAME_BYTES};
use super::recv::{check_frame, RecvState};
use super::{local, Run};
use crate::error::{Error, Result};
use crate::schedule::Step;

/// Progress of the current send to one peer.
#[derive(Default, Clone)]
pub(super) struct SendState {
    /// Position in the peer's send list.
    pub(super) idx: usize,
    hdr: Option<[u8; FRAME_BYTES]>,
    hdr_sent: usize,
    sent: usize,
    /// The header announces a single-copy message: no payload follows it.
    single_copy: bool,
}

impl Run<'_, '_> {
    /// Moves the sends to `peer` (state `st`) as far as the link takes them; whether
    /// anything moved. `rs` is the peer's receive state (read for error reports), `unacked`
    /// its single-copy sends awaiting acknowledgement.
    ///
    /// # Safety
    /// As for [`super::execute`].
    pub(super) unsafe fn sends(
        &mut self,
        st: &mut SendState,
        rs: &RecvState,
        unacked: &mut VecDeque<(u32, u64)>,
        peer: usize,
        link: &mut dyn Link,
    ) -> Result<bool> {
        let (prep, mem, cx) = (self.prep, self.mem, self.cx);
        let mut progressed = false;
        while let Some(&i) = prep.sends[peer].get(st.idx) {
            let i = i as usize;
            if self.remaining[i] > 0 {
                break;
            }
            let Step::Send { src, .. } = prep.steps[i] else {
                unreachable!("send list holds sends")
            };
            let total = src.len * mem.esize;
            if st.hdr.is_none() {
                // Single copy: a segment the plan's policy allows, that no later step
                // overwrites (so it stays as it is until the peer acknowledges), on a link
                // that can; the call does not end before the acknowledgement.
                st.single_copy = total >= prep.policy.single_copy_min
                    && prep.dependents[i].is_empty()
                    && link.caps().single_copy;
                if let (true, Some(c)) = (st.single_copy, prep.tee[i]) {
                    // SAFETY: the regions lie in memory valid per the caller's contract.
                    unsafe { local::run(&prep.steps[c as usize], mem, cx)? };
                    self.complete(c as usize);
                }
                st.hdr = Some(
                    Frame {
                        op: cx.header,
                        len: total as u64,
                        single_copy: st.single_copy.then(|| mem.ptr(src) as u64),
                    }
                    .encode(),
                );
            }
            let hdr = st.hdr.unwrap_or([0; FRAME_BYTES]);
            while st.hdr_sent < FRAME_BYTES {
                let k = match link.try_write(&hdr[st.hdr_sent..]) {
                    Ok(k) => k,
                    Err(e) => return Err(self.send_err(e, rs, peer, link)),
                };
                if k == 0 {
                    break;
                }
                st.hdr_sent += k;
                progressed = true;
            }
            if st.single_copy {
                if st.hdr_sent < FRAME_BYTES {
                    break;
                }
                let ticket = link
                    .single_copy()
                    .map_or(0, |d| d.post_region(mem.ptr(src) as u64, total));
                unacked.push_back((i as u32, ticket));
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
                        link.try_write_tee(bytes, out, prep.policy.stores)
                    }
                };
                let k = match wrote {
                    Ok(k) => k,
                    Err(e) => return Err(self.send_err(e, rs, peer, link)),
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
            self.complete(i);
            if let Some(c) = prep.tee[i] {
                self.complete(c as usize);
            }
            progressed = true;
        }
        Ok(progressed)
    }

    /// Completes the single-copy sends (`unacked`) that the peer has acknowledged.
    pub(super) fn acks(
        &mut self,
        unacked: &mut VecDeque<(u32, u64)>,
        link: &mut dyn Link,
    ) -> Result<bool> {
        if unacked.is_empty() {
            return Ok(false);
        }
        let acked = match link.single_copy() {
            Some(d) => d.acked().map_err(|e| self.link_err(e))?,
            None => 0,
        };
        let mut progressed = false;
        while let Some(&(j, t)) = unacked.front() {
            if t > acked {
                break;
            }
            unacked.pop_front();
            self.complete(j as usize);
            progressed = true;
        }
        Ok(progressed)
    }

    /// The error of a failed write to `peer`. A peer that closed may have done so because it
    /// saw a mismatch: if its next header is readable, report what it called rather than
    /// just "closed".
    fn send_err(&self, e: LinkError, rs: &RecvState, peer: usize, link: &mut dyn Link) -> Error {
        if rs.hdr_got == 0 && rs.got == 0 {
            if let Ok(s) = link.peek() {
                if let Some(raw) = s
                    .get(..FRAME_BYTES)
                    .and_then(|h| <[u8; FRAME_BYTES]>::try_from(h).ok())
                {
                    if let Err(m) = check_frame(self.cx, peer, &raw, usize::MAX) {
                        if !matches!(&m, Error::Mismatch { got, .. } if got.contains("-byte segment"))
                        {
                            return m;
                        }
                    }
                }
            }
        }
        self.link_err(e)
    }
}
