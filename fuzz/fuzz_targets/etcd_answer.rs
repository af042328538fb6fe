//! The etcd store's readers of the gateway's JSON answers (src/bootstrap/etcd.rs): range
//! answers round-trip, transaction answers end one way or the other.
//! The decoder and its invariants: `ferrocoll::fuzzing::etcd_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::etcd_answer(data));
