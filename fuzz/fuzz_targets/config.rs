//! Configuration values (src/config): Config::from_vars and launcher::detect over arbitrary values; accepted values are in bounds and round-trip.
//! The decoder and its invariants: `ferrocoll::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::config(data));
