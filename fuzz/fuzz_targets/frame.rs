//! The op frame header (src/exec/frame.rs): round trip, and every byte the decoder reads survives it.
//! The decoder and its invariants: `ferrocoll::fuzzing::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::frame(data));
