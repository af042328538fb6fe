//! Calls on device buffers, as NCCL takes them.
//!
//! With `FERROCOLL_DEVICE=cuda|npu` a call's buffers are device memory of that library
//! (`cuda`: NCCL and the CUDA runtime; `npu`: HCCL and ACL) when a stream is given, or when
//! the stream is NULL and the runtime says they are (the CUDA runtime's pointer query; NULL
//! is then the default stream). Host buffers with a NULL stream run on the host, unchanged.
//! Each communicator gets its composed communicator (`fc::accel::composed::DeviceComm`) at
//! its first device call, which every rank makes at the same point of its program, as with
//! any collective; its device is the rank's position among the ranks of its host. Every
//! collective and send/recv runs there; the work between hosts is done when the call
//! returns, the vendor's last part is queued on `stream`. Inside a group, device calls are
//! staged through host memory at `fcGroupEnd` and run with the group's host calls. With
//! `FERROCOLL_DEVICE` unset (`cpu`) a non-NULL stream is refused.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use fc::accel::composed::{Backend, DeviceComm};
use fc::accel::{DeviceBuffer, MemoryKind};
use fc::config::Device;
use fc::{Collective, Communicator, RawCall};

use crate::boundary::Failure;
use crate::group;
use crate::types::fcComm_t;

type Comms = HashMap<usize, Arc<Mutex<DeviceComm>>>;

fn comms() -> MutexGuard<'static, Comms> {
    static COMMS: OnceLock<Mutex<Comms>> = OnceLock::new();
    COMMS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The process's backend for `device` ("cuda", "npu"), loaded once.
fn backend(device: Device) -> Result<Backend, Failure> {
    static BACKENDS: OnceLock<Mutex<HashMap<String, Backend>>> = OnceLock::new();
    let mut all = BACKENDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let name = device.as_str();
    if let Some(b) = all.get(name) {
        return Ok(b.clone());
    }
    let b = Backend::load(name)?;
    all.insert(name.to_string(), b.clone());
    Ok(b)
}

/// Whether a call with a NULL stream is on device memory: `FERROCOLL_DEVICE` names a
/// library whose runtime finds one of `ptrs` in device memory.
pub(crate) fn detect(c: &Communicator, ptrs: &[*const c_void]) -> Result<bool, Failure> {
    let device = c.config().device;
    if device == Device::Cpu {
        return Ok(false);
    }
    let b = backend(device)?;
    for &p in ptrs.iter().filter(|p| !p.is_null()) {
        if let Some(MemoryKind::Cuda(_) | MemoryKind::Npu(_)) = b.memory_kind(p as usize)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The composed communicator of `h`, made now if this is its first device call.
fn device_comm(h: fcComm_t, c: &Communicator) -> Result<Arc<Mutex<DeviceComm>>, Failure> {
    if let Some(d) = comms().get(&h.addr()) {
        return Ok(d.clone());
    }
    let backend = backend(c.config().device)?;
    let index = c.topology().local_of(c.rank()) as u32;
    let d = Arc::new(Mutex::new(DeviceComm::new(c, backend, index, None)?));
    comms().insert(h.addr(), d.clone());
    Ok(d)
}

fn lock(d: &Mutex<DeviceComm>) -> MutexGuard<'_, DeviceComm> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `call` on device buffers queued on `stream` (see the module docs).
///
/// # Safety
/// The buffers are device memory of the configured library, valid for what the collective
/// reads and writes until `stream` has run the work queued; `stream` is a live stream (or
/// NULL, the default stream).
pub(crate) unsafe fn issue(
    h: fcComm_t,
    c: &Arc<Communicator>,
    call: RawCall,
    stream: *mut c_void,
) -> Result<(), Failure> {
    if c.config().device == Device::Cpu {
        return Err(Failure::arg(
            "stream must be NULL: buffers are host memory unless FERROCOLL_DEVICE=cuda|npu \
             names the library of the device memory the stream belongs to",
        ));
    }
    if group::active() {
        group::push_device(h, c.clone(), call, stream);
        return Ok(());
    }
    let d = device_comm(h, c)?;
    let mut d = lock(&d);
    let m = d.memory();
    let b = |p: *const c_void| DeviceBuffer {
        ptr: p as *mut c_void,
        memory: m,
    };
    let (i, o, n, t, op, root) = (
        call.input,
        call.output,
        call.count,
        call.dtype,
        call.op,
        call.root,
    );
    // SAFETY: every arm forwards the caller's contract.
    unsafe {
        match call.kind {
            Collective::AllReduce => d.all_reduce(b(i), b(o), n, t, op, stream)?,
            Collective::AllGather => d.all_gather(b(i), b(o), n, t, stream)?,
            Collective::ReduceScatter => d.reduce_scatter(b(i), b(o), n, t, op, stream)?,
            Collective::Broadcast => d.broadcast(b(i), b(o), n, t, root, stream)?,
            Collective::Reduce => d.reduce(b(i), b(o), n, t, op, root, stream)?,
            Collective::AllToAll => d.all_to_all(b(i), b(o), n, t, stream)?,
            // The core tells a send by its NULL output.
            Collective::SendRecv if o.is_null() => d.send(b(i), n, t, root, stream)?,
            Collective::SendRecv => d.recv(b(o), n, t, root, stream)?,
            _ => {
                // Gather and scatter: staged through host memory whole, as in a group.
                drop(d);
                let mut call = call;
                let staged = stage(h, c, &mut call, stream)?;
                c.collective_raw(call)?;
                return staged.finish();
            }
        }
    }
    Ok(())
}

/// A device call of a group, moved to host staging buffers until the group has run.
pub(crate) struct Staged {
    dc: Arc<Mutex<DeviceComm>>,
    /// Read by the host call (kept alive until then).
    _input: Vec<u8>,
    output: Vec<u8>,
    /// Where `output` goes back to (null: nothing comes back on this rank).
    dst: *mut c_void,
    stream: *mut c_void,
}

/// Copies `call`'s device input to host memory and points `call` at host staging buffers,
/// so that the group runs it with its host calls; [`Staged::finish`] brings its output back.
///
/// # Safety
/// As [`issue`]; the buffers stay valid until `fcGroupEnd` returns.
pub(crate) unsafe fn stage(
    h: fcComm_t,
    c: &Communicator,
    call: &mut RawCall,
    stream: *mut c_void,
) -> Result<Staged, Failure> {
    let d = device_comm(h, c)?;
    let (me, w) = (c.rank(), c.world_size());
    let n = call.count * call.dtype.size();
    let sending = call.kind == Collective::SendRecv && call.output.is_null();
    let (ins, outs) = match call.kind {
        Collective::AllReduce => (n, n),
        Collective::AllGather => (n, w * n),
        Collective::ReduceScatter => (w * n, n),
        Collective::Broadcast => (if me == call.root { n } else { 0 }, n),
        Collective::Reduce => (n, n),
        Collective::AllToAll => (w * n, w * n),
        Collective::SendRecv if sending => (n, 0),
        Collective::SendRecv => (0, n),
        Collective::Gather => (n, if me == call.root { w * n } else { 0 }),
        Collective::Scatter => (if me == call.root { w * n } else { 0 }, n),
        k => {
            return Err(Failure::usage(format!(
                "{} takes no buffers: call it with a NULL stream",
                k.name()
            )))
        }
    };
    // Only the root's reduce result is the caller's (elsewhere `recvbuff` may be NULL).
    let back = outs > 0 && (call.kind != Collective::Reduce || me == call.root);
    let (input, output, dst) = {
        let g = lock(&d);
        let m = g.memory();
        let src = DeviceBuffer {
            ptr: call.input as *mut c_void,
            memory: m,
        };
        // SAFETY: the caller's contract.
        let input = unsafe { g.stage_out(src, ins, stream)? };
        let mut input = input;
        input.resize(ins.max(n).max(1), 0);
        (input, vec![0u8; outs.max(1)], call.output)
    };
    let mut output = output;
    call.input = input.as_ptr() as *const c_void;
    call.output = if sending {
        std::ptr::null_mut()
    } else {
        output.as_mut_ptr() as *mut c_void
    };
    output.truncate(outs);
    Ok(Staged {
        dc: d,
        _input: input,
        output,
        dst: if back { dst } else { std::ptr::null_mut() },
        stream,
    })
}

impl Staged {
    /// Copies the output back to device memory (and waits for it).
    pub(crate) fn finish(self) -> Result<(), Failure> {
        if self.dst.is_null() || self.output.is_empty() {
            return Ok(());
        }
        let g = lock(&self.dc);
        let dst = DeviceBuffer {
            ptr: self.dst,
            memory: g.memory(),
        };
        // SAFETY: `dst` is the call's output, valid until fcGroupEnd returns (the caller's
        // contract at `stage`).
        unsafe { g.stage_in(dst, &self.output, self.stream)? };
        Ok(())
    }
}

/// Drops the composed communicator of a destroyed handle; with `abort`, stops the vendor's
/// work first (`fcCommAbort`).
pub(crate) fn forget(h: fcComm_t, abort: bool) {
    let Some(d) = comms().remove(&h.addr()) else {
        return;
    };
    if abort {
        if let Ok(m) = Arc::try_unwrap(d) {
            let d = m.into_inner().unwrap_or_else(|e| e.into_inner());
            // fcCommAbort has succeeded whatever the vendor says: its handle is gone, and
            // there is no one left to tell.
            let _ = d.abort();
        }
    }
}

/// The vendor's asynchronous error of `h`'s composed communicator, if it has one.
pub(crate) fn async_error(h: fcComm_t) -> Result<(), Failure> {
    let Some(d) = comms().get(&h.addr()).cloned() else {
        return Ok(());
    };
    // A call in progress holds the lock: its own result will carry any error.
    let Ok(d) = d.try_lock() else {
        return Ok(());
    };
    d.async_error().map_err(Failure::from)
}
