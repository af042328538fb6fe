//! The live communicators, by handle.
//!
//! A handle (`fcComm_t`) is a token, never a real address: `BASE + 16 × n` for the n-th
//! communicator made by this process. Tokens are never reused, so a call with a destroyed
//! handle is always recognised (`fcInvalidUsage`) and one with a made-up value is refused
//! (`fcInvalidArgument`); neither is ever dereferenced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use fc::Communicator;

use crate::boundary::Failure;
use crate::types::{fcComm, fcComm_t};

const BASE: usize = 0xfc00_0000;
const STEP: usize = 16;

static NEXT: AtomicUsize = AtomicUsize::new(1);

fn live() -> MutexGuard<'static, HashMap<usize, Arc<Communicator>>> {
    static LIVE: OnceLock<Mutex<HashMap<usize, Arc<Communicator>>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Registers `comm` and returns its new handle.
pub(crate) fn insert(comm: Communicator) -> fcComm_t {
    let h = reserve();
    fill(h, comm);
    h
}

/// A new handle with no communicator yet (an init inside a group, until `fcGroupEnd`).
pub(crate) fn reserve() -> fcComm_t {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::ptr::without_provenance_mut::<fcComm>(BASE + STEP * n)
}

/// Gives the reserved handle `h` its communicator.
pub(crate) fn fill(h: fcComm_t, comm: Communicator) {
    live().insert(h.addr(), Arc::new(comm));
}

/// Why `h` names no live communicator.
fn not_live(h: fcComm_t) -> Failure {
    let token = h.addr();
    if h.is_null() {
        return Failure::arg("comm is NULL");
    }
    let issued = token > BASE
        && (token - BASE) % STEP == 0
        && (token - BASE) / STEP < NEXT.load(Ordering::Relaxed);
    if issued {
        Failure::usage(format!(
            "communicator {token:#x} was destroyed (fcCommDestroy/fcCommAbort), or its init \
             inside a group has not completed (it does at fcGroupEnd) or failed"
        ))
    } else {
        Failure::arg(format!("{token:#x} is not a communicator handle"))
    }
}

/// The communicator of `h`, kept alive for the caller even if another thread destroys the
/// handle meanwhile.
pub(crate) fn get(h: fcComm_t) -> Result<Arc<Communicator>, Failure> {
    live().get(&h.addr()).cloned().ok_or_else(|| not_live(h))
}

/// Unregisters `h`; the communicator is freed when the last call using it returns.
pub(crate) fn remove(h: fcComm_t) -> Result<Arc<Communicator>, Failure> {
    live().remove(&h.addr()).ok_or_else(|| not_live(h))
}
