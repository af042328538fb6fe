//! An event count: a cheap "something changed" signal that a thread can sleep on.
//!
//! Ringing costs one atomic increment, plus a lock and a notify only when someone sleeps.
//! Sleepers read [`Doorbell::token`] before they look for work and pass it to
//! [`Doorbell::wait`]; a ring in between makes the wait return at once, so no wake-up is lost.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Doorbell {
    seq: AtomicU64,
    sleepers: AtomicU32,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Doorbell {
    /// A doorbell nobody has rung.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current ring count.
    pub fn token(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Signals a change; wakes every sleeper.
    pub fn ring(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this notify after a sleeper's check of `seq`.
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.cv.notify_all();
        }
    }

    /// Sleeps until the ring count differs from `token` or `timeout` passes.
    pub fn wait(&self, token: u64, timeout: Duration) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.seq.load(Ordering::SeqCst) == token {
            let _ = self
                .cv
                .wait_timeout_while(guard, timeout, |_| self.seq.load(Ordering::SeqCst) == token);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn ring_before_wait_returns_at_once() {
        let bell = Doorbell::new();
        let t = bell.token();
        bell.ring();
        let start = Instant::now();
        bell.wait(t, Duration::from_secs(5));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn ring_from_other_thread_wakes_sleeper() {
        let bell = Arc::new(Doorbell::new());
        let t = bell.token();
        let b2 = bell.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b2.ring();
        });
        let start = Instant::now();
        bell.wait(t, Duration::from_secs(5));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_ne!(bell.token(), t);
        h.join().unwrap();
    }

    #[test]
    fn wait_times_out() {
        let bell = Doorbell::new();
        let start = Instant::now();
        bell.wait(bell.token(), Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(25));
    }
}
