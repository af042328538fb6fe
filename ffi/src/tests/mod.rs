//! Tests of the C ABI called as Rust functions: the boundary (every bad input has its code)
//! and real communicators of several ranks run as threads of this process.

mod boundary;
mod elastic;
mod ranks;
mod uneven;
mod work;

use std::ffi::{c_void, CStr};
use std::os::raw::c_int;
use std::sync::Once;

use crate::*;

/// Loopback and a short deadline for every test: set once, before any test reads them. And
/// the library's log lines (warnings, as its default) through the test harness's capture, so
/// that they show with a failing test only: installed first, this subscriber is the one the
/// library's own `init_logging` (stderr) then finds in place.
pub(crate) fn test_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("FERROCOLL_SOCKET_IFNAME", "lo");
        std::env::set_var("FERROCOLL_TIMEOUT", "20");
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
            .with_ansi(false)
            .with_test_writer()
            .try_init();
    });
}

/// This thread's last error message.
pub(crate) fn last_error() -> String {
    // SAFETY: fcGetLastError returns a NUL-terminated thread-local string valid until the
    // next failing call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(fcGetLastError(std::ptr::null_mut())) }
        .to_string_lossy()
        .into_owned()
}

pub(crate) fn unique_id() -> fcUniqueId {
    test_env();
    let mut id = fcUniqueId {
        internal: [0; FC_UNIQUE_ID_BYTES],
    };
    // SAFETY: `id` is a valid out-pointer.
    assert_eq!(unsafe { fcGetUniqueId(&mut id) }, fcResult_t::fcSuccess);
    id
}

pub(crate) fn init(n: usize, id: fcUniqueId, rank: usize) -> fcComm_t {
    let mut c: fcComm_t = std::ptr::null_mut();
    // SAFETY: `c` is a valid out-pointer.
    let r = unsafe { fcCommInitRank(&mut c, n as c_int, id, rank as c_int) };
    assert_eq!(r, fcResult_t::fcSuccess, "{}", last_error());
    assert!(!c.is_null());
    c
}

/// Runs `f(rank, comm)` on `n` threads that form one communicator, then destroys it.
pub(crate) fn world<T: Send>(n: usize, f: impl Fn(usize, fcComm_t) -> T + Sync) -> Vec<T> {
    let id = unique_id();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|r| {
                let f = &f;
                s.spawn(move || {
                    let c = init(n, id, r);
                    let out = f(r, c);
                    assert_eq!(fcCommDestroy(c), fcResult_t::fcSuccess);
                    out
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `fcAllReduce` on slices (lengths checked by the caller's choice of `count`).
pub(crate) fn all_reduce_f32(
    send: &[f32],
    recv: &mut [f32],
    op: fcRedOp_t,
    comm: fcComm_t,
) -> fcResult_t {
    assert!(recv.len() >= send.len());
    // SAFETY: both slices hold `send.len()` elements and are borrowed for the whole call.
    unsafe {
        fcAllReduce(
            send.as_ptr().cast(),
            recv.as_mut_ptr().cast(),
            send.len(),
            fcFloat32,
            op,
            comm,
            std::ptr::null_mut::<c_void>(),
        )
    }
}
