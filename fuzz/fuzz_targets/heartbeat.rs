//! The failure detector's datagrams (src/ft/wire.rs): round trip.
//! The decoder and its invariants: `ferrocoll::fuzzing::heartbeat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::heartbeat(data));
