//! Transport address blobs (transports/src/plugin.rs, tcp/factory.rs): open only accepts its transport; TCP addresses round-trip.
//! The decoder and its invariants: `ferrocoll_transports::fuzzing::address_blob`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll_transports::fuzzing::address_blob(data));
