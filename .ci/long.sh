#!/usr/bin/env bash
# The long checks kept out of the regular suite (#[ignore]d or reduced there): the exhaustive
# fp8/bf16 encoder check over all 2^32 f32 patterns, the shared-memory bandwidth/latency
# measurement, the resident-set check over 1,000 64 MiB all-reduces, and the soak of 10,000
# random calls on 4 ranks (about 10 minutes). Release build; about a quarter of an hour on 2
# cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p ferrocoll --lib -- --ignored --nocapture encoders_exhaustive
cargo test --release -p ferrocoll-transports --lib -- --ignored --nocapture shm_bench
# FC_SHOW_RANKS=1: the ranks' resident-set figures are printed though the test passes.
FC_MEM_CALLS=1000 FC_SHOW_RANKS=1 cargo test --release --test memory
# The soak prints each rank's figures (resident set, descriptors, /dev/shm, seconds, seed).
FC_SOAK_CALLS=10000 cargo test --release --test soak
