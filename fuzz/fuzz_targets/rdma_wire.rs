//! The RDMA core's hello, immediate data and announcements (transports/src/rdma_core/wire.rs).
//! The decoder and its invariants: `ferrocoll_transports::fuzzing::rdma_wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll_transports::fuzzing::rdma_wire(data));
