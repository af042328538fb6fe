//! The TCP store's request bodies (src/bootstrap/wire.rs): an accepted request encodes back to its body.
//! The decoder and its invariants: `ferrocoll::fuzzing::store_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::store_request(data));
