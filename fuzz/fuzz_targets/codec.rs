//! Codec payloads (src/compress): every chunk codec's decoder never fails but on a bad top-k index, is pure, and decode_add adds what decode gives.
//! The decoder and its invariants: `ferrocoll::fuzzing::codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrocoll::fuzzing::codec(data));
