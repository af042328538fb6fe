//! Calls with a stream: device buffers, as NCCL takes them.
//!
//! A non-NULL `stream` means that the buffers are device memory of the library
//! `FERROCOLL_DEVICE` names (`cuda`: NCCL and the CUDA runtime; `npu`: HCCL and ACL), and the
//! stream is that runtime's. Each communicator gets its composed communicator
//! (`fc::accel::composed::DeviceComm`) at its first such call, which every rank makes at the
//! same point of its program, as with any collective; its device is the rank's position
//! among the ranks of its host. All-reduce, all-gather and reduce-scatter run there; the
//! work between hosts is done when the call returns, the vendor's last part is queued on
//! `stream`. With `FERROCOLL_DEVICE` unset (`cpu`) a non-NULL stream is refused.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use fc::accel::composed::{Backend, DeviceComm};
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

/// The composed communicator of `h`, made now if this is its first device call.
fn device_comm(h: fcComm_t, c: &Communicator) -> Result<Arc<Mutex<DeviceComm>>, Failure> {
    if let Some(d) = comms().get(&h.addr()) {
        return Ok(d.clone());
    }
    let backend = Backend::load(c.config().device.as_str())?;
    let index = c.topology().local_of(c.rank()) as u32;
    let d = Arc::new(Mutex::new(DeviceComm::new(c, backend, index, None)?));
    comms().insert(h.addr(), d.clone());
    Ok(d)
}

/// Runs `call` on device buffers queued on `stream` (see the module docs).
///
/// # Safety
/// The buffers are device memory of the configured library, valid for what the collective
/// reads and writes until `stream` has run the work queued; `stream` is a live stream.
pub(crate) unsafe fn issue(
    h: fcComm_t,
    c: &Communicator,
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
        return Err(Failure::usage(
            "device buffers inside fcGroupStart/fcGroupEnd are not supported yet",
        ));
    }
    let d = device_comm(h, c)?;
    let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
    let (i, o, n, t, op) = (call.input, call.output, call.count, call.dtype, call.op);
    match call.kind {
        // SAFETY: the caller's contract.
        Collective::AllReduce => unsafe { d.all_reduce(i, o, n, t, op, stream)? },
        // SAFETY: the caller's contract.
        Collective::AllGather => unsafe { d.all_gather(i, o, n, t, stream)? },
        // SAFETY: the caller's contract.
        Collective::ReduceScatter => unsafe { d.reduce_scatter(i, o, n, t, op, stream)? },
        k => {
            return Err(Failure::usage(format!(
                "{} on device buffers is not supported yet (all-reduce, all-gather and \
                 reduce-scatter are)",
                k.name()
            )))
        }
    }
    Ok(())
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
