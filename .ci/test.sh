#!/usr/bin/env bash
# The whole test suite, from a fresh machine of the project's kind (Debian, Rust toolchain
# present). Installs what it needs, then checks formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages some tests use (network namespaces for the multi-host tests of later
# issues, valgrind for the C ABI). Installed only when missing and when we can.
need=()
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})) && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
cargo test --workspace --doc

echo "note: no GPU or RDMA device is used by this suite; vendor-library (NCCL/HCCL) and verbs paths are not built yet."
