//! Broadcast and reduce on device buffers.
//!
//! - **broadcast**: the vendor's broadcast inside the root's host; across hosts each local
//!   rank `j` carries shard `j` of the buffer (the whole buffer when its length is not a
//!   multiple of the local size) on its cross communicator; on the other hosts the vendor's
//!   all-gather assembles the shards. Every byte crosses hosts once per host.
//! - **reduce**: the all-reduce, kept by the root alone (the other ranks reduce into
//!   scratch). This moves what an all-reduce moves, about twice a tree reduce's traffic;
//!   its result has the all-reduce's bits.

use std::ffi::c_void;

use super::{DeviceComm, Local};
use crate::accel::{CopyKind, DeviceBuffer, RawStream};
use crate::{Collective, DataType, Error, RawCall, ReduceOp, Result};

/// The scratch slot the non-root ranks of a reduce write into (the all-reduce uses 0).
const REDUCE_SCRATCH: usize = 2;

impl DeviceComm {
    /// Copies `root`'s `count` elements of `send` into every rank's `recv` (in place when
    /// they are the same buffer; `send` is read on the root only); see the module docs.
    ///
    /// # Safety
    /// `recv` (and on the root `send`) hold `count` elements of `dt` in this rank's device
    /// memory (host memory on CPU hosts), valid until `stream` has run the work queued;
    /// `stream` is a live stream of this rank's device (null: the default stream).
    pub unsafe fn broadcast(
        &mut self,
        send: DeviceBuffer,
        recv: DeviceBuffer,
        count: usize,
        dt: DataType,
        root: usize,
        stream: RawStream,
    ) -> Result<()> {
        let recv = self.addr(recv, "recvbuff")?;
        let (rh, rl) = self.place(root)?;
        let (h, j) = self.place(self.whole.rank())?;
        let es = dt.size();
        if self.whole.rank() == root {
            let send = self.addr(send, "sendbuff")?;
            if send != recv && count > 0 {
                // SAFETY: both hold `count` elements (the caller's contract).
                unsafe { self.copy(recv, send, count * es, CopyKind::DeviceToDevice, stream)? };
            }
        }
        if h == rh {
            // SAFETY: `recv` holds `count` elements; on the root it holds the data now.
            unsafe { self.local_broadcast(recv, count, dt, rl, stream)? };
        }
        if self.global.len() == 1 {
            return Ok(());
        }
        let l = self.local_size;
        let sharded = l > 1 && count % l == 0;
        let (first, n) = if sharded {
            (j * (count / l), count / l)
        } else {
            (0, count)
        };
        let bytes = n * es;
        let mut staging = std::mem::take(&mut self.staging);
        staging.resize(bytes, 0);
        let result = (|| -> Result<()> {
            if h == rh {
                // SAFETY: the shard lies within `recv`; synchronised before it is read.
                unsafe {
                    self.copy(
                        staging.as_mut_ptr() as *mut c_void,
                        (recv as *const u8).add(first * es) as *const c_void,
                        bytes,
                        CopyKind::DeviceToHost,
                        stream,
                    )?;
                    self.sync(stream)?;
                }
            }
            let call = RawCall {
                kind: Collective::Broadcast,
                input: staging.as_ptr() as *const c_void,
                output: staging.as_mut_ptr() as *mut c_void,
                count: n,
                dtype: dt,
                op: ReduceOp::Sum,
                // The cross communicator orders its ranks by host.
                root: rh,
            };
            // SAFETY: `staging` holds `n` elements of `dt`.
            unsafe { self.cross.collective_raw(call)? };
            if h == rh {
                return Ok(());
            }
            let target = if sharded {
                self.scratch(0, bytes)?
            } else {
                recv
            };
            // SAFETY: `target` holds `n` elements; `staging` outlives the copy (synchronised
            // below).
            unsafe {
                self.copy(
                    target,
                    staging.as_ptr() as *const c_void,
                    bytes,
                    CopyKind::HostToDevice,
                    stream,
                )?;
                if sharded {
                    self.local_call(
                        Collective::AllGather,
                        target,
                        recv,
                        n,
                        dt,
                        ReduceOp::Sum,
                        stream,
                    )?;
                }
                self.sync(stream)
            }
        })();
        self.staging = staging;
        result
    }

    /// Reduces `count` elements of `send` over every rank into `root`'s `recv` (`recv` is
    /// not touched elsewhere); see the module docs.
    ///
    /// # Safety
    /// As [`DeviceComm::broadcast`], `send` on every rank and `recv` on the root.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn reduce(
        &mut self,
        send: DeviceBuffer,
        recv: DeviceBuffer,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        root: usize,
        stream: RawStream,
    ) -> Result<()> {
        let send = self.addr(send, "sendbuff")? as *const c_void;
        self.place(root)?;
        let out = if self.whole.rank() == root {
            self.addr(recv, "recvbuff")?
        } else {
            self.scratch(REDUCE_SCRATCH, count * dt.size())?
        };
        // SAFETY: the caller's contract; the scratch holds `count` elements.
        unsafe { self.all_reduce_ptr(send, out, count, dt, op, stream) }
    }

    /// `(host, local index)` of global rank `rank`.
    pub(super) fn place(&self, rank: usize) -> Result<(usize, usize)> {
        self.global
            .iter()
            .enumerate()
            .find_map(|(h, ranks)| ranks.iter().position(|&g| g == rank).map(|j| (h, j)))
            .ok_or(Error::RootOutOfRange {
                root: rank,
                world: self.world,
            })
    }

    /// The host's broadcast of `buf` from local rank `root`, queued on `stream` (CPU: run
    /// now).
    ///
    /// # Safety
    /// `buf` holds `count` elements of `dt`.
    unsafe fn local_broadcast(
        &self,
        buf: *mut c_void,
        count: usize,
        dt: DataType,
        root: usize,
        stream: RawStream,
    ) -> Result<()> {
        match &self.local {
            // SAFETY: the caller's contract (in place).
            Local::Nccl(c) => unsafe { c.broadcast(buf, buf, count, dt, root, stream)? },
            // SAFETY: the caller's contract.
            Local::Hccl(c) => unsafe { c.broadcast(buf, count, dt, root, stream)? },
            Local::Cpu => {
                let call = RawCall {
                    kind: Collective::Broadcast,
                    input: buf,
                    output: buf,
                    count,
                    dtype: dt,
                    op: ReduceOp::Sum,
                    root,
                };
                // SAFETY: the caller's contract.
                unsafe { self.local_comm.collective_raw(call)? }
            }
        }
        Ok(())
    }
}
