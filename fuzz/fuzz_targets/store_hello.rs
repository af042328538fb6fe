//! Both sides of the TCP store's hello (src/bootstrap/tcp_server.rs, tcp_client.rs): nobody gets in without the secret.
//! The decoder and its invariants: `ferrocoll::fuzzing::store_hello`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::store_hello(data));
