//! Serving a TCP store in a process of its own until it is told to stop (`ferrocoll-store`).

use std::io;
use std::net::SocketAddr;

use super::{StoreError, TcpStoreServer};

/// Serves a [`TcpStoreServer`] on `listen` (`host:port`; port 0 picks a free one), demanding
/// `secret` of clients when given, calls `ready` with the address it listens on, and returns
/// `Ok(())` once the process receives SIGTERM or SIGINT (the server is then stopped).
///
/// Call it before the process starts other threads: it blocks SIGTERM and SIGINT in the
/// calling thread (the server's threads inherit that) and waits for them with `sigwait`; a
/// thread started earlier keeps the default disposition, under which either signal ends the
/// process at once.
pub fn serve_until_signal(
    listen: &str,
    secret: Option<&[u8]>,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), StoreError> {
    let (set, old) = block_stop_signals()?;
    let served = TcpStoreServer::bind_with_secret(listen, secret);
    let result = served.map(|server| {
        ready(server.local_addr());
        let sig = wait_for(&set);
        tracing::info!(addr = %server.local_addr(), "store: signal {sig}, stopping");
        drop(server);
    });
    // SAFETY: `old` is the mask `pthread_sigmask` filled in above; restoring it touches only
    // this thread's signal mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    result
}

/// Blocks SIGTERM and SIGINT in this thread; returns that set and the mask before.
fn block_stop_signals() -> io::Result<(libc::sigset_t, libc::sigset_t)> {
    // SAFETY: `sigset_t` is plain data for which all zero bytes is a valid value; both sets
    // are initialised by `sigemptyset` / `pthread_sigmask` before they are read.
    let (mut set, mut old): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: `set` is a valid, exclusively borrowed `sigset_t`; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    // SAFETY: both pointers point at valid `sigset_t`s owned by this frame; this changes only
    // the calling thread's mask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok((set, old))
}

/// Waits until one of the signals of `set` (blocked in this thread) arrives; returns it.
fn wait_for(set: &libc::sigset_t) -> i32 {
    loop {
        let mut sig = 0;
        // SAFETY: `set` is a valid, initialised `sigset_t` and `sig` a valid out-pointer.
        if unsafe { libc::sigwait(set, &mut sig) } == 0 {
            return sig;
        }
    }
}
