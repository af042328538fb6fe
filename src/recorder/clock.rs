//! The recorder's clock: raw ticks on the hot path (the time-stamp counter on x86-64, a few
//! nanoseconds to read; elsewhere nanoseconds of `Instant`), turned into microseconds since
//! the communicator was made only when a dump is taken, by the rate observed between the
//! communicator's creation and the dump.

use std::time::Instant;

/// A communicator's clock.
pub(super) struct Clock {
    born: Instant,
    born_ticks: u64,
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn raw() -> u64 {
    // SAFETY: `rdtsc` reads the time-stamp counter; it has no preconditions and every x86-64
    // processor has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn raw() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl Clock {
    /// A clock that starts now.
    pub(super) fn new() -> Clock {
        Clock {
            born: Instant::now(),
            born_ticks: raw(),
        }
    }

    /// Ticks since the clock started (only [`Clock::micros`] gives them a unit).
    #[inline]
    pub(super) fn ticks(&self) -> u64 {
        raw().saturating_sub(self.born_ticks)
    }

    /// What turns ticks into microseconds since the clock started, with the rate measured
    /// from the start to now; and now, in microseconds.
    pub(super) fn micros(&self) -> (impl Fn(u64) -> u64, u64) {
        let ticks = self.ticks().max(1) as u128;
        let ns = self.born.elapsed().as_nanos().max(1);
        let now_us = (ns / 1000) as u64;
        (move |t: u64| (t as u128 * ns / ticks / 1000) as u64, now_us)
    }
}
