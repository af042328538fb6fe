//! The agreement's decision (src/ft/agree.rs): round trip, members ascending and in the world.
//! The decoder and its invariants: `ferrocoll::fuzzing::decision`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::decision(data));
