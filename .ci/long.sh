#!/usr/bin/env bash
# The long checks kept out of the regular suite (#[ignore]d there): the exhaustive fp8/bf16
# encoder check over all 2^32 f32 patterns, and the shared-memory bandwidth/latency
# measurement, and the resident-set check over 1,000 64 MiB all-reduces. Release build; a few
# minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p ferrocoll --lib -- --ignored --nocapture encoders_exhaustive
cargo test --release -p ferrocoll-transports --lib -- --ignored --nocapture shm_bench
# FC_SHOW_RANKS=1: the ranks' resident-set figures are printed though the test passes.
FC_MEM_CALLS=1000 FC_SHOW_RANKS=1 cargo test --release --test memory
