//! UniqueId::from_bytes (src/comm/split.rs): an accepted id encodes back to its bytes.
//! The decoder and its invariants: `ferrocoll::fuzzing::unique_id`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::unique_id(data));
