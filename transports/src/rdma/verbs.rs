//! [`Fabric`] over ibverbs: one RC queue pair per peer, one completion queue with a
//! completion channel, and one shared receive queue.
//!
//! - **Writes with immediate** (`IBV_WR_RDMA_WRITE_WITH_IMM`) consume a receive request at
//!   the target, so the shared receive queue is kept stocked by this file with
//!   [`RECV_POOL`]-many small buffers of [`MSG_BYTES`]; each is posted again as soon as its
//!   completion is handled. A completion with `IBV_WC_RECV_RDMA_WITH_IMM` becomes
//!   [`Completion::Remote`] (the writer found from the completion's queue-pair number).
//! - **Small messages** (the core's setup hello, `IBV_WR_SEND`) land in one of those
//!   buffers too; they are copied into the oldest receive the core posted
//!   ([`Fabric::post_recv`]) and reported as [`Completion::Done`], or held until it posts
//!   one.
//! - **Waiting**: `ibv_req_notify_cq`, then `poll(2)` on the completion channel's fd and an
//!   eventfd that [`Fabric::waker`] writes.
//! - Queue-pair attributes as in Gloo's ibverbs pair: RNR retry 7 (infinite), retry count 7,
//!   timeout 14 (~67 ms × 2^… per retry, about 4 s before a dead peer's queue pair errors),
//!   path MTU the port's active MTU.
//!
//! Not run on hardware in this project's CI (its machines have no RDMA device); built with
//! `--features rdma`, its no-device path tested.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdma_sys::*;

use super::device::Device;
use crate::rdma_core::{
    Access, Completion, Fabric, FabricCaps, FabricError, MemRegion, RmaOp, Wakeup,
};

/// Bytes of each internal receive buffer (the largest setup message).
pub const MSG_BYTES: usize = 256;
/// Internal receive requests kept posted on the shared receive queue.
pub const RECV_POOL: usize = 1024;
/// Send requests per queue pair.
const SEND_WR: u32 = 512;

/// A verbs memory registration.
pub struct VerbsMr(*mut ibv_mr);

// SAFETY: an MR handle is an opaque pointer that libibverbs lets any thread use.
unsafe impl Send for VerbsMr {}

/// See the module docs.
pub struct Verbs {
    dev: Device,
    pd: *mut ibv_pd,
    channel: *mut ibv_comp_channel,
    cq: *mut ibv_cq,
    srq: *mut ibv_srq,
    /// Per rank, its queue pair (`None` for this rank and unused ranks).
    qps: Vec<Option<*mut ibv_qp>>,
    /// Queue-pair number → peer rank.
    by_qpn: HashMap<u32, usize>,
    /// The internal receive buffers and their registration.
    pool: Vec<u8>,
    pool_mr: *mut ibv_mr,
    /// Receives the core posted: (buffer, capacity, ctx).
    user_recvs: VecDeque<(*mut u8, usize, u64)>,
    /// Messages that arrived before the core posted a receive.
    held: VecDeque<Vec<u8>>,
    /// Written by the waker; watched by `wait` next to the completion channel.
    wake: Wakeup,
}

// SAFETY: all handles are used by the one owner of this value (the core's mutex serialises
// calls); libibverbs objects may be used from any thread.
unsafe impl Send for Verbs {}

/// One scatter-gather entry: `len` bytes at `addr`, registered under local key `desc`.
fn sge(addr: u64, len: usize, desc: usize) -> ibv_sge {
    ibv_sge {
        addr,
        length: len as u32,
        lkey: desc as u32,
    }
}

fn os_err(what: &str) -> FabricError {
    let e = std::io::Error::last_os_error();
    FabricError::other(e.raw_os_error().unwrap_or(0), format!("{what}: {e}"))
}

impl Verbs {
    /// Creates the protection domain, completion queue and channel, shared receive queue and
    /// one RC queue pair per rank other than `rank` (in state RESET), on `dev`.
    pub fn new(dev: Device, rank: usize, world: usize) -> Result<Verbs, FabricError> {
        let ctx = dev.ctx;
        // SAFETY: `ctx` is an open device context for every call below; each returned
        // object is checked for NULL and owned by `Verbs` (destroyed in Drop).
        unsafe {
            let pd = ibv_alloc_pd(ctx);
            if pd.is_null() {
                return Err(os_err("ibv_alloc_pd"));
            }
            let mut v = Verbs {
                dev,
                pd,
                channel: std::ptr::null_mut(),
                cq: std::ptr::null_mut(),
                srq: std::ptr::null_mut(),
                qps: vec![None; world],
                by_qpn: HashMap::new(),
                pool: vec![0u8; RECV_POOL * MSG_BYTES],
                pool_mr: std::ptr::null_mut(),
                user_recvs: VecDeque::new(),
                held: VecDeque::new(),
                wake: Wakeup::new()?,
            };
            v.channel = ibv_create_comp_channel(ctx);
            if v.channel.is_null() {
                return Err(os_err("ibv_create_comp_channel"));
            }
            let cqe = (SEND_WR as usize * world + RECV_POOL).min(1 << 16) as i32;
            v.cq = ibv_create_cq(ctx, cqe, std::ptr::null_mut(), v.channel, 0);
            if v.cq.is_null() {
                return Err(os_err("ibv_create_cq"));
            }
            let mut sattr: ibv_srq_init_attr = std::mem::zeroed();
            sattr.attr.max_wr = RECV_POOL as u32;
            sattr.attr.max_sge = 1;
            v.srq = ibv_create_srq(pd, &mut sattr);
            if v.srq.is_null() {
                return Err(os_err("ibv_create_srq"));
            }
            let flags = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as i32;
            v.pool_mr = ibv_reg_mr(pd, v.pool.as_mut_ptr().cast(), v.pool.len(), flags);
            if v.pool_mr.is_null() {
                return Err(os_err("ibv_reg_mr (receive pool)"));
            }
            for i in 0..RECV_POOL {
                v.repost(i)?;
            }
            for p in (0..world).filter(|&p| p != rank) {
                let mut attr: ibv_qp_init_attr = std::mem::zeroed();
                attr.send_cq = v.cq;
                attr.recv_cq = v.cq;
                attr.srq = v.srq;
                attr.qp_type = ibv_qp_type::IBV_QPT_RC;
                attr.cap.max_send_wr = SEND_WR;
                attr.cap.max_send_sge = 1;
                attr.cap.max_recv_sge = 1;
                let qp = ibv_create_qp(pd, &mut attr);
                if qp.is_null() {
                    return Err(os_err("ibv_create_qp"));
                }
                v.by_qpn.insert((*qp).qp_num, p);
                v.qps[p] = Some(qp);
            }
            if ibv_req_notify_cq(v.cq, 0) != 0 {
                return Err(os_err("ibv_req_notify_cq"));
            }
            Ok(v)
        }
    }

    /// The device and port in use.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// The queue-pair number this rank uses towards `peer` (0 for none).
    pub fn qpn(&self, peer: usize) -> u32 {
        // SAFETY: a live queue pair.
        self.qps
            .get(peer)
            .copied()
            .flatten()
            .map_or(0, |qp| unsafe { (*qp).qp_num })
    }

    /// Brings the queue pair to `peer` to RTS, given the peer's LID, GID and its queue-pair
    /// number towards this rank.
    pub fn connect_peer(
        &mut self,
        peer: usize,
        lid: u16,
        gid: [u8; 16],
        qpn: u32,
    ) -> Result<(), FabricError> {
        let Some(qp) = self.qps.get(peer).copied().flatten() else {
            return Err(FabricError::other(
                0,
                format!("no queue pair for rank {peer}"),
            ));
        };
        let port = &self.dev.port;
        // SAFETY: `qp` is a live queue pair; the attribute structs are plain C data.
        unsafe {
            let mut a: ibv_qp_attr = std::mem::zeroed();
            a.qp_state = ibv_qp_state::IBV_QPS_INIT;
            a.pkey_index = 0;
            a.port_num = port.port;
            a.qp_access_flags = ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
                | ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
                | ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
            let mask = ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
                | ibv_qp_attr_mask::IBV_QP_PORT
                | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
            if ibv_modify_qp(qp, &mut a, mask.0 as i32) != 0 {
                return Err(os_err(&format!("queue pair to rank {peer}: INIT")));
            }
            let mut a: ibv_qp_attr = std::mem::zeroed();
            a.qp_state = ibv_qp_state::IBV_QPS_RTR;
            a.path_mtu = port.mtu;
            a.dest_qp_num = qpn;
            a.rq_psn = 0;
            a.max_dest_rd_atomic = 16;
            a.min_rnr_timer = 12;
            a.ah_attr.dlid = lid;
            a.ah_attr.port_num = port.port;
            a.ah_attr.is_global = 1;
            a.ah_attr.grh.dgid.raw = gid;
            a.ah_attr.grh.sgid_index = port.gid_index;
            a.ah_attr.grh.hop_limit = 64;
            let mask = ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_AV
                | ibv_qp_attr_mask::IBV_QP_PATH_MTU
                | ibv_qp_attr_mask::IBV_QP_DEST_QPN
                | ibv_qp_attr_mask::IBV_QP_RQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
                | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
            if ibv_modify_qp(qp, &mut a, mask.0 as i32) != 0 {
                return Err(os_err(&format!("queue pair to rank {peer}: RTR")));
            }
            let mut a: ibv_qp_attr = std::mem::zeroed();
            a.qp_state = ibv_qp_state::IBV_QPS_RTS;
            a.timeout = 14;
            a.retry_cnt = 7;
            a.rnr_retry = 7;
            a.sq_psn = 0;
            a.max_rd_atomic = 16;
            let mask = ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_TIMEOUT
                | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
                | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
                | ibv_qp_attr_mask::IBV_QP_SQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
            if ibv_modify_qp(qp, &mut a, mask.0 as i32) != 0 {
                return Err(os_err(&format!("queue pair to rank {peer}: RTS")));
            }
        }
        Ok(())
    }

    /// Posts internal receive buffer `i` on the shared receive queue.
    fn repost(&mut self, i: usize) -> Result<(), FabricError> {
        let mut sge = ibv_sge {
            // SAFETY: in bounds of the pool.
            addr: unsafe { self.pool.as_mut_ptr().add(i * MSG_BYTES) } as u64,
            length: MSG_BYTES as u32,
            // SAFETY: a live MR.
            lkey: unsafe { (*self.pool_mr).lkey },
        };
        let mut wr = ibv_recv_wr {
            wr_id: i as u64,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad = std::ptr::null_mut();
        // SAFETY: the SRQ is live; the buffer lies in the registered pool, which outlives it.
        if unsafe { ibv_post_srq_recv(self.srq, &mut wr, &mut bad) } != 0 {
            return Err(os_err("ibv_post_srq_recv"));
        }
        Ok(())
    }

    /// Posts one send request to `peer`'s queue pair; `Ok(false)` when its queue is full.
    ///
    /// # Safety
    /// As for [`Fabric::write`].
    unsafe fn post(
        &mut self,
        peer: usize,
        opcode: ibv_wr_opcode::Type,
        sge: ibv_sge,
        remote: Option<(u64, u32)>,
        imm: Option<u32>,
        ctx: u64,
    ) -> Result<bool, FabricError> {
        let Some(qp) = self.qps.get(peer).copied().flatten() else {
            return Err(FabricError::other(
                0,
                format!("no queue pair for rank {peer}"),
            ));
        };
        let mut sge = sge;
        // SAFETY: plain C struct; zero is valid for every field not set below.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = ctx;
        wr.sg_list = &mut sge;
        wr.num_sge = i32::from(sge.length > 0);
        wr.opcode = opcode;
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        if let Some(v) = imm {
            wr.imm_data_invalidated_rkey_union.imm_data = v.to_be();
        }
        if let Some((addr, rkey)) = remote {
            wr.wr.rdma = rdma_t {
                remote_addr: addr,
                rkey,
            };
        }
        let mut bad = std::ptr::null_mut();
        // SAFETY: the caller keeps the local buffer valid until the completion.
        match unsafe { ibv_post_send(qp, &mut wr, &mut bad) } {
            0 => Ok(true),
            libc::ENOMEM => Ok(false),
            e => Err(FabricError::other(
                e,
                format!("ibv_post_send to rank {peer}: errno {e}"),
            )),
        }
    }

    /// Hands held messages to posted receives.
    fn deliver_held(&mut self, out: &mut Vec<Completion>) {
        while !self.held.is_empty() && !self.user_recvs.is_empty() {
            let (Some(msg), Some((buf, cap, ctx))) =
                (self.held.pop_front(), self.user_recvs.pop_front())
            else {
                break;
            };
            let n = msg.len().min(cap);
            // SAFETY: the core keeps `buf[..cap]` valid until this completion.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), buf, n) };
            out.push(Completion::Done { ctx, len: n });
        }
    }
}

impl Fabric for Verbs {
    type Mr = VerbsMr;

    fn caps(&self) -> FabricCaps {
        FabricCaps {
            local_mr: true,
            max_rma: 1 << 30,
        }
    }

    unsafe fn register(
        &mut self,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<MemRegion<VerbsMr>, FabricError> {
        let mut flags = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        if access.remote_read {
            flags |= ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;
        }
        if access.remote_write {
            flags |= ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        }
        // SAFETY: the caller keeps the memory allocated until deregister.
        let mr = unsafe { ibv_reg_mr(self.pd, addr.cast(), len, flags as i32) };
        if mr.is_null() {
            return Err(os_err(&format!("ibv_reg_mr of {len} bytes")));
        }
        // SAFETY: a live MR.
        let (rkey, lkey) = unsafe { ((*mr).rkey, (*mr).lkey) };
        Ok(MemRegion {
            mr: VerbsMr(mr),
            rkey: u64::from(rkey),
            desc: lkey as usize,
            remote_base: addr as u64,
        })
    }

    fn deregister(&mut self, mr: VerbsMr) {
        // SAFETY: registered by `register`, deregistered once.
        unsafe { ibv_dereg_mr(mr.0) };
    }

    unsafe fn write(&mut self, op: &RmaOp, imm: Option<u32>) -> Result<bool, FabricError> {
        let opcode = if imm.is_some() {
            ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM
        } else {
            ibv_wr_opcode::IBV_WR_RDMA_WRITE
        };
        let sge = sge(op.local as u64, op.len, op.desc);
        // SAFETY: forwarded contract.
        unsafe {
            self.post(
                op.peer,
                opcode,
                sge,
                Some((op.remote_addr, op.rkey as u32)),
                imm,
                op.ctx,
            )
        }
    }

    unsafe fn read(&mut self, op: &RmaOp) -> Result<bool, FabricError> {
        let sge = sge(op.local as u64, op.len, op.desc);
        // SAFETY: forwarded contract.
        unsafe {
            self.post(
                op.peer,
                ibv_wr_opcode::IBV_WR_RDMA_READ,
                sge,
                Some((op.remote_addr, op.rkey as u32)),
                None,
                op.ctx,
            )
        }
    }

    unsafe fn send(
        &mut self,
        peer: usize,
        buf: *const u8,
        len: usize,
        desc: usize,
        ctx: u64,
    ) -> Result<bool, FabricError> {
        if len > MSG_BYTES {
            return Err(FabricError::other(
                libc::EMSGSIZE,
                format!("a {len}-byte message exceeds the {MSG_BYTES}-byte receive buffers"),
            ));
        }
        let sge = sge(buf as u64, len, desc);
        // SAFETY: forwarded contract.
        unsafe { self.post(peer, ibv_wr_opcode::IBV_WR_SEND, sge, None, None, ctx) }
    }

    unsafe fn post_recv(
        &mut self,
        buf: *mut u8,
        len: usize,
        _desc: usize,
        ctx: u64,
    ) -> Result<bool, FabricError> {
        self.user_recvs.push_back((buf, len, ctx));
        Ok(true)
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> Result<(), FabricError> {
        self.deliver_held(out);
        // SAFETY: plain C structs; all-zero is valid.
        let mut wcs: [ibv_wc; 32] = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: a live CQ and room for 32 completions.
            let n = unsafe { ibv_poll_cq(self.cq, wcs.len() as i32, wcs.as_mut_ptr()) };
            if n < 0 {
                return Err(FabricError::other(-n, "ibv_poll_cq failed"));
            }
            for wc in &wcs[..n as usize] {
                self.complete(wc, out)?;
            }
            if (n as usize) < wcs.len() {
                return Ok(());
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), FabricError> {
        // SAFETY: a live channel.
        let channel_fd = unsafe { (*self.channel).fd };
        if self.wake.sleep(Some(channel_fd), timeout)? {
            let mut cq = std::ptr::null_mut();
            let mut cq_ctx = std::ptr::null_mut();
            // SAFETY: the channel has an event (poll said so); ack and re-arm.
            unsafe {
                if ibv_get_cq_event(self.channel, &mut cq, &mut cq_ctx) == 0 {
                    ibv_ack_cq_events(cq, 1);
                }
                ibv_req_notify_cq(self.cq, 0);
            }
        }
        Ok(())
    }

    fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        self.wake.waker()
    }
}

impl Verbs {
    /// Turns one work completion into the core's completions.
    fn complete(&mut self, wc: &ibv_wc, out: &mut Vec<Completion>) -> Result<(), FabricError> {
        let recv = wc.opcode & ibv_wc_opcode::IBV_WC_RECV != 0;
        if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
            // SAFETY: returns a static string for any status.
            let msg = unsafe { std::ffi::CStr::from_ptr(ibv_wc_status_str(wc.status)) }
                .to_string_lossy()
                .into_owned();
            let disconnected = matches!(
                wc.status,
                ibv_wc_status::IBV_WC_RETRY_EXC_ERR
                    | ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR
                    | ibv_wc_status::IBV_WC_WR_FLUSH_ERR
                    | ibv_wc_status::IBV_WC_REM_ABORT_ERR
            );
            if recv {
                // A flushed receive: its queue pair is in error; nothing to give back.
                return Ok(());
            }
            out.push(Completion::Failed {
                ctx: wc.wr_id,
                error: FabricError {
                    disconnected,
                    errno: wc.status as i32,
                    message: format!("{msg} (vendor error {:#x})", wc.vendor_err),
                },
            });
            return Ok(());
        }
        if !recv {
            out.push(Completion::Done {
                ctx: wc.wr_id,
                len: wc.byte_len as usize,
            });
            return Ok(());
        }
        let i = wc.wr_id as usize;
        if wc.opcode == ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM {
            let peer = self.by_qpn.get(&wc.qp_num).copied();
            // SAFETY: a completion with immediate data carries it in this union member.
            let imm = u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data });
            if let Some(peer) = peer {
                out.push(Completion::Remote { peer, imm });
            }
        } else {
            let n = (wc.byte_len as usize).min(MSG_BYTES);
            let msg = self.pool[i * MSG_BYTES..i * MSG_BYTES + n].to_vec();
            self.held.push_back(msg);
            self.deliver_held(out);
        }
        self.repost(i)
    }
}

impl Drop for Verbs {
    fn drop(&mut self) {
        // SAFETY: every handle was created in `new` and is destroyed once, in dependency
        // order (queue pairs before the SRQ and CQ, MRs before the PD).
        unsafe {
            for qp in self.qps.iter().flatten() {
                ibv_destroy_qp(*qp);
            }
            if !self.srq.is_null() {
                ibv_destroy_srq(self.srq);
            }
            if !self.pool_mr.is_null() {
                ibv_dereg_mr(self.pool_mr);
            }
            if !self.cq.is_null() {
                ibv_destroy_cq(self.cq);
            }
            if !self.channel.is_null() {
                ibv_destroy_comp_channel(self.channel);
            }
            ibv_dealloc_pd(self.pd);
        }
    }
}
