//! The TCP store's response bodies (src/bootstrap/wire.rs): round trip.
//! The decoder and its invariants: `ferrocoll::fuzzing::store_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::store_response(data));
