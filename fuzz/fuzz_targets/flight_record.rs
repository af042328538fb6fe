//! Flight-recorder dumps (src/recorder/dump.rs) and the doctor's analysis of them.
//! The decoder and its invariants: `ferrocoll::fuzzing::flight_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::flight_record(data));
