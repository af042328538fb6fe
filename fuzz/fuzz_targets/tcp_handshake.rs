//! The TCP link handshake (transports/src/tcp/setup.rs) as the accepting rank runs it, over loopback.
//! The decoder and its invariants: `ferrocoll_transports::fuzzing::tcp_handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll_transports::fuzzing::tcp_handshake(data));
