//! All-gather and reduce-scatter on device buffers: the per-rank block collectives (see the
//! parent module's docs for how each is composed).

use std::ffi::c_void;

use super::DeviceComm;
use crate::accel::staging::scale;
use crate::accel::{CopyKind, DeviceBuffer, RawStream};
use crate::{Collective, DataType, ReduceOp, Result};

impl DeviceComm {
    /// Gathers `count` elements from every rank into `recv` (world × count, in rank order).
    ///
    /// # Safety
    /// As [`DeviceComm::all_reduce`], with `recv` of world × `count` elements.
    pub unsafe fn all_gather(
        &mut self,
        send: DeviceBuffer,
        recv: DeviceBuffer,
        count: usize,
        dt: DataType,
        stream: RawStream,
    ) -> Result<()> {
        let send = self.addr(send, "sendbuff")? as *const c_void;
        let recv = self.addr(recv, "recvbuff")?;
        let es = dt.size();
        let (l, hosts) = (self.local_size, self.global.len());
        let block = l * count * es;
        let gathered = self.scratch(0, block)?;
        // SAFETY: `send` holds `count`, `gathered` l × count elements.
        unsafe {
            self.local_call(
                Collective::AllGather,
                send,
                gathered,
                count,
                dt,
                ReduceOp::Sum,
                stream,
            )?;
        }
        let mut mine = vec![0u8; block];
        // SAFETY: both hold `block` bytes; synchronised before `mine` is read.
        unsafe {
            self.copy(
                mine.as_mut_ptr() as *mut c_void,
                gathered,
                block,
                CopyKind::DeviceToHost,
                stream,
            )?;
            self.sync(stream)?;
        }
        let mut all = vec![0u8; hosts * block];
        self.cross_call(
            Collective::AllGather,
            &mut mine,
            Some(&mut all),
            l * count,
            dt,
            ReduceOp::Sum,
            "",
        )?;
        for (h, ranks) in self.global.iter().enumerate() {
            for (j, &g) in ranks.iter().enumerate() {
                let src = &all[h * block + j * count * es..][..count * es];
                // SAFETY: rank `g`'s block lies within `recv`'s world × count elements;
                // `all` outlives the copy (synchronised below).
                unsafe {
                    self.copy(
                        (recv as *mut u8).add(g * count * es) as *mut c_void,
                        src.as_ptr() as *const c_void,
                        count * es,
                        CopyKind::HostToDevice,
                        stream,
                    )?;
                }
            }
        }
        // SAFETY: live stream; `all` must outlive the copies.
        unsafe { self.sync(stream) }
    }

    /// Reduces `send` (world × count, chunk `r` for rank `r`) over every rank; this rank's
    /// chunk of the result goes to `recv` (`count` elements).
    ///
    /// # Safety
    /// As [`DeviceComm::all_reduce`], with `send` of world × `count` elements.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn reduce_scatter(
        &mut self,
        send: DeviceBuffer,
        recv: DeviceBuffer,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        stream: RawStream,
    ) -> Result<()> {
        let send = self.addr(send, "sendbuff")? as *const c_void;
        let recv = self.addr(recv, "recvbuff")?;
        let es = dt.size();
        let sum_op = if op == ReduceOp::Avg {
            ReduceOp::Sum
        } else {
            op
        };
        let (l, hosts) = (self.local_size, self.global.len());
        let c = count * es;
        // Local rank j's block holds, host by host, the chunks of ranks (h, j).
        let arranged = self.scratch(0, self.world * c)?;
        let partial = self.scratch(1, hosts * c)?;
        for j in 0..l {
            for h in 0..hosts {
                let g = self.global[h][j];
                // SAFETY: chunk `g` of `send` and slot (j, h) of `arranged` hold `c` bytes.
                unsafe {
                    self.copy(
                        (arranged as *mut u8).add((j * hosts + h) * c) as *mut c_void,
                        (send as *const u8).add(g * c) as *const c_void,
                        c,
                        CopyKind::DeviceToDevice,
                        stream,
                    )?;
                }
            }
        }
        // SAFETY: `arranged` holds l × (hosts × count), `partial` hosts × count elements.
        unsafe {
            self.local_call(
                Collective::ReduceScatter,
                arranged,
                partial,
                hosts * count,
                dt,
                sum_op,
                stream,
            )?;
        }
        let mut staged = vec![0u8; hosts * c];
        // SAFETY: both hold hosts × c bytes; synchronised before `staged` is read.
        unsafe {
            self.copy(
                staged.as_mut_ptr() as *mut c_void,
                partial,
                hosts * c,
                CopyKind::DeviceToHost,
                stream,
            )?;
            self.sync(stream)?;
        }
        let mut mine = vec![0u8; c];
        self.cross_call(
            Collective::ReduceScatter,
            &mut staged,
            Some(&mut mine),
            count,
            dt,
            op,
            "",
        )?;
        if op == ReduceOp::Avg {
            scale(&mut mine, dt, self.world);
        }
        // SAFETY: `recv` holds `count` elements; `mine` outlives the copy (synchronised).
        unsafe {
            self.copy(
                recv,
                mine.as_ptr() as *const c_void,
                c,
                CopyKind::HostToDevice,
                stream,
            )?;
            self.sync(stream)
        }
    }
}
