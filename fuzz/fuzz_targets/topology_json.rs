//! Topology files (src/topology/json.rs): a file that loads is consistent, its dump loads back to it, its ring placement is a permutation.
//! The decoder and its invariants: `ferrocoll::fuzzing::topology_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::topology_json(data));
