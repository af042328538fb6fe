//! All-to-all, send and recv on device buffers, staged through host memory: the data goes
//! to the host, ferrocoll carries it between the ranks (over shared memory inside a host,
//! its transports between hosts), and it comes back. The vendor's part is not used: these
//! calls move each byte once between two ranks, where the vendor's intra-host path would
//! save only the host copies. The staging helpers are public for callers that run device
//! calls through ferrocoll's own host collectives (the C ABI's groups).

use std::ffi::c_void;

use super::DeviceComm;
use crate::accel::{CopyKind, DeviceBuffer, RawStream};
use crate::{Collective, DataType, RawCall, ReduceOp, Result};

impl DeviceComm {
    /// Sends block `j` of `send` (world × `count` elements) to rank `j`, which stores it as
    /// its block `r` of `recv` (world × `count`; in place when the same buffer).
    ///
    /// # Safety
    /// `send` and `recv` hold world × `count` elements of `dt` in this rank's device memory
    /// (host memory on CPU hosts), valid until `stream` has run the work queued; `stream`
    /// is a live stream of this rank's device (null: the default stream).
    pub unsafe fn all_to_all(
        &mut self,
        send: DeviceBuffer,
        recv: DeviceBuffer,
        count: usize,
        dt: DataType,
        stream: RawStream,
    ) -> Result<()> {
        let bytes = self.world * count * dt.size();
        // SAFETY: the caller's contract.
        let input = unsafe { self.stage_out(send, bytes, stream)? };
        let mut output = vec![0u8; bytes];
        let call = RawCall {
            kind: Collective::AllToAll,
            input: input.as_ptr() as *const c_void,
            output: output.as_mut_ptr() as *mut c_void,
            count,
            dtype: dt,
            op: ReduceOp::Sum,
            root: 0,
        };
        // SAFETY: both hold world × `count` elements of `dt`.
        unsafe { self.whole.collective_raw(call)? };
        // SAFETY: the caller's contract.
        unsafe { self.stage_in(recv, &output, stream) }
    }

    /// Sends `count` elements of `buf` to rank `peer`, which receives them with
    /// [`DeviceComm::recv`] (or any ferrocoll receive on its rank).
    ///
    /// # Safety
    /// As [`DeviceComm::all_to_all`], `buf` holding `count` elements.
    pub unsafe fn send(
        &mut self,
        buf: DeviceBuffer,
        count: usize,
        dt: DataType,
        peer: usize,
        stream: RawStream,
    ) -> Result<()> {
        // SAFETY: the caller's contract.
        let data = unsafe { self.stage_out(buf, count * dt.size(), stream)? };
        let call = RawCall {
            kind: Collective::SendRecv,
            input: data.as_ptr() as *const c_void,
            output: std::ptr::null_mut(),
            count,
            dtype: dt,
            op: ReduceOp::Sum,
            root: peer,
        };
        // SAFETY: `data` holds `count` elements of `dt`.
        unsafe { self.whole.collective_raw(call) }
    }

    /// Receives `count` elements from rank `peer` into `buf`.
    ///
    /// # Safety
    /// As [`DeviceComm::send`].
    pub unsafe fn recv(
        &mut self,
        buf: DeviceBuffer,
        count: usize,
        dt: DataType,
        peer: usize,
        stream: RawStream,
    ) -> Result<()> {
        let bytes = count * dt.size();
        let mut data = vec![0u8; bytes.max(1)];
        let call = RawCall {
            kind: Collective::SendRecv,
            input: std::ptr::null(),
            output: data.as_mut_ptr() as *mut c_void,
            count,
            dtype: dt,
            op: ReduceOp::Sum,
            root: peer,
        };
        // SAFETY: `data` holds `count` elements of `dt`.
        unsafe { self.whole.collective_raw(call)? };
        // SAFETY: the caller's contract.
        unsafe { self.stage_in(buf, &data[..bytes], stream) }
    }

    /// `bytes` of `src` in host memory, once the work queued on `stream` before it has run
    /// (waits for the copy).
    ///
    /// # Safety
    /// `src` holds `bytes` in this rank's device memory until `stream` reaches the copy;
    /// `stream` is live.
    pub unsafe fn stage_out(
        &self,
        src: DeviceBuffer,
        bytes: usize,
        stream: RawStream,
    ) -> Result<Vec<u8>> {
        let mut host = vec![0u8; bytes];
        if bytes == 0 {
            return Ok(host);
        }
        let src = self.addr(src, "sendbuff")?;
        // SAFETY: the caller's contract; `host` holds `bytes` and outlives the wait.
        unsafe {
            self.copy(
                host.as_mut_ptr() as *mut c_void,
                src,
                bytes,
                CopyKind::DeviceToHost,
                stream,
            )?;
            self.sync(stream)?;
        }
        Ok(host)
    }

    /// Copies `data` to `dst` on `stream` and waits for the copy.
    ///
    /// # Safety
    /// `dst` holds `data.len()` bytes in this rank's device memory; `stream` is live.
    pub unsafe fn stage_in(&self, dst: DeviceBuffer, data: &[u8], stream: RawStream) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let dst = self.addr(dst, "recvbuff")?;
        // SAFETY: the caller's contract; `data` outlives the wait below.
        unsafe {
            self.copy(
                dst,
                data.as_ptr() as *const c_void,
                data.len(),
                CopyKind::HostToDevice,
                stream,
            )?;
            self.sync(stream)
        }
    }
}
