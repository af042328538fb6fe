//! Values ranks read from the store: rendezvous records, counters, grow decisions, admissions.
//! The decoder and its invariants: `ferrocoll::fuzzing::store_values`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::store_values(data));
