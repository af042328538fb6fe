//! The TCP store server fed a client's frames (src/bootstrap/tcp_server.rs): every answer is a plain map's.
//! The decoder and its invariants: `ferrocoll::fuzzing::store_server`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::store_server(data));
