//! A doorbell (event count) that lives in shared memory and parks on a process-shared futex.
//!
//! Same protocol as [`crate::doorbell::Doorbell`]: ringers increment the sequence word and
//! call `FUTEX_WAKE` only when the sleeper count says someone may be parked; sleepers
//! announce themselves in the sleeper count, re-check the word and park with `FUTEX_WAIT`,
//! which the kernel only enters while the word still holds the expected value. Both sides use
//! sequentially consistent operations, so either the ringer sees the sleeper or the sleeper
//! sees the new sequence value: no wake-up is lost.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::segment::Mapping;

/// The shared-memory words of one doorbell, one per cache line pair (128 bytes) so bells of
/// different ranks never share a line.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct BellWords {
    /// The ring count: the futex word.
    seq: AtomicU32,
    /// How many threads may be parked on `seq` (a crashed sleeper leaves it too high, which
    /// only costs spurious `FUTEX_WAKE` calls).
    sleepers: AtomicU32,
}

/// `FUTEX_WAIT` on `word` while it holds `expected`, for at most `timeout`.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned 32-bit word for the duration of the call (it is
    // borrowed), `ts` is a valid timespec on our stack, and the unused uaddr2/val3 arguments
    // are ignored by FUTEX_WAIT. The operation is shared (no FUTEX_PRIVATE_FLAG) because the
    // word is in a MAP_SHARED mapping used by several processes. Errors (EAGAIN when the
    // value already changed, EINTR, ETIMEDOUT) all mean "return and let the caller re-check".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// `FUTEX_WAKE` every thread parked on `word`, in any process.
fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 32-bit word (borrowed for the call); FUTEX_WAKE only
    // uses the address as a key and ignores the timeout/uaddr2/val3 arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// A handle to one rank's doorbell in a shared-memory segment. Cheap to clone, `Send` and
/// `Sync`: another transport (e.g. a TCP poller thread) can ring it so that one
/// [`ShmBell::wait`] covers both.
#[derive(Clone)]
pub struct ShmBell {
    words: *const BellWords,
    _map: Arc<Mapping>,
}

// SAFETY: `words` points into the mapping kept alive by `_map`, and `BellWords` holds only
// atomics, so sharing the pointer between threads cannot race.
unsafe impl Send for ShmBell {}
// SAFETY: as for Send: every access goes through atomics.
unsafe impl Sync for ShmBell {}

impl ShmBell {
    /// Wraps the bell at `words`.
    ///
    /// # Safety
    /// `words` must point to a `BellWords` (128-byte aligned) inside `map`'s mapping.
    pub(crate) unsafe fn new(words: *const BellWords, map: Arc<Mapping>) -> Self {
        Self { words, _map: map }
    }

    fn words(&self) -> &BellWords {
        // SAFETY: constructor contract: the pointer is aligned, inside the live mapping held
        // by `_map`, and the words are only accessed atomically (zeroed memory is valid).
        unsafe { &*self.words }
    }

    /// The current ring count. Read it before polling, pass it to [`ShmBell::wait`].
    pub fn token(&self) -> u64 {
        u64::from(self.words().seq.load(Ordering::SeqCst))
    }

    /// Signals a change and wakes the bell's sleepers if any announced themselves.
    pub fn ring(&self) {
        let w = self.words();
        w.seq.fetch_add(1, Ordering::SeqCst);
        if w.sleepers.load(Ordering::SeqCst) > 0 {
            futex_wake_all(&w.seq);
        }
    }

    /// Spins up to `spin`, then parks until the ring count differs from `token` or `timeout`
    /// passes (whichever first; spurious early returns are possible). Returns whether the
    /// count changed.
    pub fn wait(&self, token: u64, spin: Duration, timeout: Duration) -> bool {
        let start = Instant::now();
        let w = self.words();
        let expected = token as u32;
        let spin = spin.min(timeout);
        let mut i = 0u32;
        loop {
            if w.seq.load(Ordering::Acquire) != expected {
                return true;
            }
            i = i.wrapping_add(1);
            if i & 63 == 0 && start.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
        let Some(rest) = timeout.checked_sub(start.elapsed()) else {
            return false;
        };
        w.sleepers.fetch_add(1, Ordering::SeqCst);
        if w.seq.load(Ordering::SeqCst) == expected {
            futex_wait(&w.seq, expected, rest);
        }
        w.sleepers.fetch_sub(1, Ordering::SeqCst);
        w.seq.load(Ordering::Acquire) != expected
    }
}
