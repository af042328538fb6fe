//! [`OfiFabric`]: the [`Fabric`] of the RDMA core over one libfabric RDM endpoint.

use std::ffi::{c_void, CString};
use std::sync::Arc;
use std::time::Duration;

use super::ffi;
use crate::rdma_core::{
    Access, Completion, Fabric, FabricCaps, FabricError, MemRegion, RmaOp, Wakeup,
};

/// A libfabric endpoint (fabric, domain, CQ, AV, RDM endpoint) reaching peers by rank.
pub struct OfiFabric {
    ep: *mut ffi::FcEp,
    attr: ffi::FcAttr,
    /// Our rank (sent in the upper half of every write's remote CQ data).
    rank: u32,
    /// `fi_addr` of each rank (after `insert_peer`).
    addrs: Vec<Option<u64>>,
    next_key: u64,
    /// Written by the waker; watched by `wait` next to the CQ's fd.
    wake: Wakeup,
    cqes: Vec<ffi::FcCqe>,
}

// SAFETY: the endpoint is used by one thread at a time (the core's mutex); libfabric's
// FI_THREAD_DOMAIN model allows that. The waker only touches the eventfd.
unsafe impl Send for OfiFabric {}

/// libfabric's error as a [`FabricError`].
fn fab_err(what: &str, ret: i64) -> FabricError {
    let errno = ret.unsigned_abs().min(i32::MAX as u64) as i32;
    FabricError {
        disconnected: ffi::DISCONNECT_ERRNOS.contains(&errno),
        errno,
        message: format!("{what}: {}", ffi::strerror(ret)),
    }
}

/// A posting call's result: posted, queue full, or an error.
fn posted(what: &str, ret: isize) -> Result<bool, FabricError> {
    match ret as i64 {
        0 => Ok(true),
        r if r == -ffi::FI_EAGAIN => Ok(false),
        r => Err(fab_err(what, r)),
    }
}

impl OfiFabric {
    /// Opens provider `prov` on interface `node` (any interface when `None`).
    pub fn open(
        prov: &str,
        node: Option<&str>,
        rank: usize,
        world: usize,
    ) -> Result<OfiFabric, FabricError> {
        let cprov = CString::new(prov)
            .map_err(|_| FabricError::other(0, "provider name with a NUL byte"))?;
        let cnode = node
            .map(CString::new)
            .transpose()
            .map_err(|_| FabricError::other(0, "interface name with a NUL byte"))?;
        let mut ep = std::ptr::null_mut();
        let mut attr = ffi::FcAttr::zeroed();
        // SAFETY: valid C strings and out-pointers; the shim frees everything on failure.
        let ret = unsafe {
            ffi::fc_open(
                cprov.as_ptr(),
                cnode.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                &mut ep,
                &mut attr,
            )
        };
        if ret != 0 {
            return Err(fab_err("opening the endpoint", i64::from(ret)));
        }
        let wake = match Wakeup::new() {
            Ok(w) => w,
            Err(e) => {
                // SAFETY: `ep` was opened above and is not used again.
                unsafe { ffi::fc_close(ep) };
                return Err(e);
            }
        };
        let fabric = OfiFabric {
            ep,
            attr,
            rank: rank as u32,
            addrs: vec![None; world],
            next_key: 1,
            wake,
            cqes: vec![ffi::FcCqe::default(); 64],
        };
        if fabric.attr.cq_data_size < 8 {
            return Err(FabricError::other(
                0,
                format!(
                    "provider carries {} bytes of remote CQ data; this transport needs 8",
                    fabric.attr.cq_data_size
                ),
            ));
        }
        Ok(fabric)
    }

    /// The provider's attributes.
    pub(crate) fn attr(&self) -> &ffi::FcAttr {
        &self.attr
    }

    /// This endpoint's address (`fi_getname`).
    pub fn name(&self) -> Result<Vec<u8>, FabricError> {
        let mut buf = vec![0u8; 256];
        let mut len = buf.len();
        // SAFETY: `buf` has `len` writable bytes.
        let ret = unsafe { ffi::fc_getname(self.ep, buf.as_mut_ptr().cast(), &mut len) };
        if ret != 0 {
            return Err(fab_err("fi_getname", i64::from(ret)));
        }
        buf.truncate(len);
        Ok(buf)
    }

    /// Inserts `peer`'s address (as its `name` returned) into the address vector.
    pub fn insert_peer(&mut self, peer: usize, addr: &[u8]) -> Result<(), FabricError> {
        if peer >= self.addrs.len() {
            return Err(FabricError::other(0, format!("rank {peer} out of range")));
        }
        if addr.is_empty() {
            return Err(FabricError::other(0, "empty address"));
        }
        let mut a = 0u64;
        // SAFETY: `addr` is readable; libfabric reads one address of its format from it (a
        // short one is refused by the length check of the caller's format: see connect).
        let ret = unsafe { ffi::fc_av_insert(self.ep, addr.as_ptr().cast(), &mut a) };
        if ret != 0 {
            return Err(fab_err("fi_av_insert", i64::from(ret)));
        }
        self.addrs[peer] = Some(a);
        Ok(())
    }

    fn addr(&self, peer: usize) -> Result<u64, FabricError> {
        self.addrs
            .get(peer)
            .copied()
            .flatten()
            .ok_or_else(|| FabricError::other(0, format!("rank {peer} has no address")))
    }
}

impl Drop for OfiFabric {
    fn drop(&mut self) {
        // SAFETY: opened in `open`, closed once; memory regions were closed by the core.
        unsafe { ffi::fc_close(self.ep) };
    }
}

impl Fabric for OfiFabric {
    type Mr = usize;

    fn caps(&self) -> FabricCaps {
        FabricCaps {
            local_mr: self.attr.mr_mode & ffi::FI_MR_LOCAL != 0,
            max_rma: usize::try_from(self.attr.max_msg_size)
                .unwrap_or(usize::MAX)
                .min(1 << 30),
        }
    }

    unsafe fn register(
        &mut self,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<MemRegion<usize>, FabricError> {
        let mut flags = ffi::FI_READ | ffi::FI_WRITE | ffi::FI_SEND | ffi::FI_RECV;
        if access.remote_read {
            flags |= ffi::FI_REMOTE_READ;
        }
        if access.remote_write {
            flags |= ffi::FI_REMOTE_WRITE;
        }
        let req_key = self.next_key;
        self.next_key += 1;
        let mut mr = std::ptr::null_mut();
        let (mut key, mut desc) = (0u64, std::ptr::null_mut::<c_void>());
        // SAFETY: the caller keeps `addr[..len]` allocated until `deregister`.
        let ret = unsafe {
            ffi::fc_mr_reg(
                self.ep,
                addr.cast(),
                len,
                flags,
                req_key,
                &mut mr,
                &mut key,
                &mut desc,
            )
        };
        if ret != 0 {
            return Err(fab_err("fi_mr_reg", i64::from(ret)));
        }
        let virt = self.attr.mr_mode & ffi::FI_MR_VIRT_ADDR != 0;
        Ok(MemRegion {
            mr: mr as usize,
            rkey: key,
            desc: desc as usize,
            remote_base: if virt { addr as u64 } else { 0 },
        })
    }

    fn deregister(&mut self, mr: usize) {
        // SAFETY: `mr` came from `register` and is closed once (the core and the cache
        // hand each handle back exactly once).
        let ret = unsafe { ffi::fc_mr_close(mr as *mut ffi::FidMr) };
        if ret != 0 {
            tracing::debug!("ofi: fi_close(mr): {}", ffi::strerror(i64::from(ret)));
        }
    }

    unsafe fn write(&mut self, op: &RmaOp, imm: Option<u32>) -> Result<bool, FabricError> {
        let dest = self.addr(op.peer)?;
        let data = u64::from(self.rank) << 32 | u64::from(imm.unwrap_or(0));
        // SAFETY: the caller keeps `op.local[..op.len]` valid until the completion.
        let ret = unsafe {
            ffi::fc_write(
                self.ep,
                op.local.cast(),
                op.len,
                op.desc as *mut c_void,
                dest,
                op.remote_addr,
                op.rkey,
                data,
                i32::from(imm.is_some()),
                op.ctx,
            )
        };
        posted("fi_write", ret)
    }

    unsafe fn read(&mut self, op: &RmaOp) -> Result<bool, FabricError> {
        let src = self.addr(op.peer)?;
        // SAFETY: the caller keeps `op.local[..op.len]` valid until the completion.
        let ret = unsafe {
            ffi::fc_read(
                self.ep,
                op.local.cast(),
                op.len,
                op.desc as *mut c_void,
                src,
                op.remote_addr,
                op.rkey,
                op.ctx,
            )
        };
        posted("fi_read", ret)
    }

    unsafe fn send(
        &mut self,
        peer: usize,
        buf: *const u8,
        len: usize,
        desc: usize,
        ctx: u64,
    ) -> Result<bool, FabricError> {
        let dest = self.addr(peer)?;
        // SAFETY: the caller keeps `buf[..len]` valid until the completion.
        let ret = unsafe { ffi::fc_send(self.ep, buf.cast(), len, desc as *mut c_void, dest, ctx) };
        posted("fi_send", ret)
    }

    unsafe fn post_recv(
        &mut self,
        buf: *mut u8,
        len: usize,
        desc: usize,
        ctx: u64,
    ) -> Result<bool, FabricError> {
        // SAFETY: the caller keeps `buf[..len]` valid until the completion.
        let ret = unsafe { ffi::fc_recv(self.ep, buf.cast(), len, desc as *mut c_void, ctx) };
        posted("fi_recv", ret)
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> Result<(), FabricError> {
        loop {
            // SAFETY: `cqes` has room for its length.
            let n =
                unsafe { ffi::fc_cq_read(self.ep, self.cqes.as_mut_ptr(), self.cqes.len()) } as i64;
            if n == -ffi::FI_EAGAIN {
                return Ok(());
            }
            if n == -ffi::FI_EAVAIL {
                let mut e = ffi::FcCqErr {
                    ctx: 0,
                    flags: 0,
                    err: 0,
                    prov_errno: 0,
                    msg: [0; 256],
                };
                // SAFETY: `e` is a valid out-struct.
                let ret = unsafe { ffi::fc_cq_readerr(self.ep, &mut e) };
                if ret < 0 {
                    return Err(fab_err("fi_cq_readerr", i64::from(ret)));
                }
                let mut error = fab_err("completion", i64::from(e.err));
                error.message =
                    format!("{} (provider errno {})", ffi::c_chars(&e.msg), e.prov_errno);
                out.push(Completion::Failed { ctx: e.ctx, error });
                continue;
            }
            if n < 0 {
                return Err(fab_err("fi_cq_read", n));
            }
            for c in &self.cqes[..n as usize] {
                if c.flags & ffi::FI_REMOTE_CQ_DATA != 0 {
                    out.push(Completion::Remote {
                        peer: (c.data >> 32) as usize,
                        imm: c.data as u32,
                    });
                } else {
                    out.push(Completion::Done {
                        ctx: c.ctx,
                        len: c.len as usize,
                    });
                }
            }
            if (n as usize) < self.cqes.len() {
                return Ok(());
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), FabricError> {
        // SAFETY: the endpoint is open.
        let cq_fd = unsafe { ffi::fc_wait_fd(self.ep) };
        if cq_fd >= 0 {
            // SAFETY: the endpoint is open.
            if unsafe { ffi::fc_trywait(self.ep) } != 0 {
                // Completions (or progress) pending: the caller should poll, not sleep.
                return Ok(());
            }
            self.wake.sleep(Some(cq_fd), timeout)?;
        } else {
            // No wait object: sleep in short slices, polling in between.
            self.wake
                .sleep(None, timeout.min(Duration::from_millis(1)))?;
        }
        Ok(())
    }

    fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        self.wake.waker()
    }
}
