//! Single-copy transfers between processes of one host: Linux cross-memory attach
//! (`process_vm_readv`). The receiver copies a large buffer straight out of the sender's
//! address space into its destination, instead of the sender copying it into the ring and
//! the receiver copying it out again; the acknowledgement is a counter in the ring header
//! (see [`crate::link::SingleCopy`]).
//!
//! Whether it works is decided per peer when the endpoint opens: the kernel allows it only
//! where we may ptrace the peer (same user, Yama `ptrace_scope` permitting, no seccomp
//! filter in the way). The probe reads the peer's pid from the peer's own mapping of the
//! segment and compares it with what the segment says; any failure leaves the link on the
//! ring path, silently (a `debug` log line says why).

use std::sync::atomic::Ordering;

use super::segment::Mapping;
use super::ShmLink;
use crate::cma::{read_error, read_remote};
use crate::link::{LinkError, SingleCopy};

/// Per-link single-copy state.
pub(crate) struct SingleCopyState {
    /// The peer's process.
    pid: i32,
    /// Announcements made so far (tickets handed out).
    posted: u64,
}

impl SingleCopyState {
    /// Tests cross-memory attach to local peer `j` (whose slot must be filled: every local
    /// rank has joined). `None` where it does not work.
    pub(crate) fn probe(map: &Mapping, j: usize) -> Option<SingleCopyState> {
        let slot = map.slot(j);
        let pid = slot.pid.load(Ordering::Acquire);
        let base = slot.base.load(Ordering::Acquire);
        if pid <= 0 || base == 0 || pid == std::process::id() as i32 {
            return None;
        }
        // Where the peer's own pid lies in the peer's mapping: same offset as in ours.
        let off = (&slot.pid as *const _ as usize).checked_sub(map.at(0) as usize)?;
        let mut got = [0u8; 4];
        match read_remote(pid, base.checked_add(off as u64)?, &mut got) {
            Ok(()) if i32::from_ne_bytes(got) == pid => Some(SingleCopyState { pid, posted: 0 }),
            Ok(()) => {
                tracing::debug!("shm: single copy to pid {pid} off: probe read a wrong value");
                None
            }
            Err(e) => {
                tracing::debug!("shm: single copy to pid {pid} off: {e}");
                None
            }
        }
    }
}

impl SingleCopy for ShmLink {
    fn post(&mut self) -> u64 {
        let st = self
            .single_copy
            .as_mut()
            .expect("single_copy() returned this link");
        st.posted += 1;
        st.posted
    }

    fn acked(&mut self) -> Result<u64, LinkError> {
        let acks = self.tx.header().single_copy_acks();
        let posted = self.single_copy.as_ref().map_or(0, |d| d.posted);
        if acks < posted {
            // Waiting on the peer: notice if it is gone, as `peek` does.
            self.empty_polls = self.empty_polls.wrapping_add(1);
            if self.empty_polls & 255 == 0 {
                self.inner.check_peers(false);
            }
            if self.peer_dead() || self.rx.header().is_closed() {
                return Err(LinkError::Closed { peer: self.peer });
            }
        }
        Ok(acks)
    }

    fn read(&mut self, addr: u64, dst: &mut [u8]) -> Result<(), LinkError> {
        let pid = self.single_copy.as_ref().map_or(0, |d| d.pid);
        let len = dst.len();
        read_remote(pid, addr, dst).map_err(|e| read_error(self.peer, addr, len, e))
    }

    fn ack(&mut self) {
        self.rx.header().add_single_copy_ack();
        self.ring_peer();
    }
}
