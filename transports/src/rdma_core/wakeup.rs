//! Sleeping on a fabric's completion fd together with an eventfd that any thread can signal.
//!
//! Both fabrics ([`crate::ofi`] when built, `rdma` when built) sleep the same way in
//! [`super::Fabric::wait`]: `poll(2)` on the provider's wait object (libfabric's CQ wait fd,
//! the verbs completion channel) and on an eventfd that [`super::Fabric::waker`] writes, so
//! that `abort` and the composite endpoint can end the sleep from another thread. This type
//! owns that eventfd and does the poll; the fabric re-arms its own wait object.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::FabricError;

/// An eventfd that wakes [`Wakeup::sleep`], from any thread, through [`Wakeup::waker`].
#[derive(Debug)]
pub struct Wakeup {
    fd: Arc<OwnedFd>,
}

impl Wakeup {
    /// A fresh, non-blocking, close-on-exec eventfd.
    pub fn new() -> Result<Wakeup, FabricError> {
        // SAFETY: eventfd(2) with valid flags; the fd is owned below only when valid.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(FabricError::other(
                e.raw_os_error().unwrap_or(0),
                format!("eventfd: {e}"),
            ));
        }
        Ok(Wakeup {
            // SAFETY: a fresh fd that nothing else owns.
            fd: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
        })
    }

    /// A function that ends the current or next [`Wakeup::sleep`].
    pub fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        let fd = self.fd.clone();
        Arc::new(move || {
            let one = 1u64;
            // SAFETY: writes 8 bytes from `one` to an eventfd this closure keeps alive (a
            // full counter just fails: it is already signalled).
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        })
    }

    /// Sleeps until `other` (the fabric's wait fd, when it has one) is readable, the waker
    /// is called, or `timeout` passes; clears the waker's signal. Returns whether `other`
    /// was readable. An interrupted poll returns early (the caller polls again).
    pub fn sleep(&self, other: Option<RawFd>, timeout: Duration) -> Result<bool, FabricError> {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: other.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let nfds = if other.is_some() { 2 } else { 1 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` holds `nfds` valid entries.
        if unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(FabricError::other(
                e.raw_os_error().unwrap_or(0),
                format!("poll: {e}"),
            ));
        }
        if fds[0].revents != 0 {
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into `v` from our non-blocking eventfd.
            unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        }
        Ok(other.is_some() && fds[1].revents != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_waker_ends_a_sleep_and_is_cleared_by_it() {
        let w = Wakeup::new().unwrap();
        let wake = w.waker();
        let t0 = Instant::now();
        wake();
        assert!(!w.sleep(None, Duration::from_secs(5)).unwrap());
        assert!(t0.elapsed() < Duration::from_secs(2));
        // Cleared: the next sleep lasts its timeout.
        let t0 = Instant::now();
        w.sleep(None, Duration::from_millis(50)).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn a_readable_fd_ends_a_sleep_and_is_reported() {
        let w = Wakeup::new().unwrap();
        let other = Wakeup::new().unwrap();
        other.waker()();
        assert!(w
            .sleep(Some(other.fd.as_raw_fd()), Duration::from_secs(5))
            .unwrap());
        let from = std::thread::spawn({
            let wake = w.waker();
            move || {
                std::thread::sleep(Duration::from_millis(20));
                wake()
            }
        });
        let quiet = Wakeup::new().unwrap();
        assert!(!w
            .sleep(Some(quiet.fd.as_raw_fd()), Duration::from_secs(5))
            .unwrap());
        from.join().unwrap();
    }
}
