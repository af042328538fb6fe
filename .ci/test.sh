#!/usr/bin/env bash
# The whole test suite, from a fresh machine of the project's kind (Debian, Rust toolchain
# present). Installs what it needs, then checks formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages some tests use: iproute2 (network namespaces for the multi-host tests),
# Open MPI (launcher test under mpirun). Installed only when missing and when we can.
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v mpirun >/dev/null || need+=(openmpi-bin)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})) && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# A cached Python venv with torch (default PyPI wheel, used on the CPU: torchrun launcher test,
# torch backend), numpy and pytest. Created once; later runs reuse it.
export FERROCOLL_VENV=${FERROCOLL_VENV:-$HOME/.cache/ferrocoll/venv}
if [ ! -x "$FERROCOLL_VENV/bin/python" ]; then
    python3 -m venv "$FERROCOLL_VENV" || echo "warning: cannot create $FERROCOLL_VENV; Python tests will skip"
fi
if [ -x "$FERROCOLL_VENV/bin/python" ]; then
    for mod in torch numpy pytest ml_dtypes; do
        "$FERROCOLL_VENV/bin/python" -c "import $mod" 2>/dev/null \
            || "$FERROCOLL_VENV/bin/pip" install -q "$mod" \
            || echo "warning: pip could not install $mod; tests that need it will skip"
    done
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
cargo test --workspace --doc

echo "note: no GPU or RDMA device is used by this suite; vendor-library (NCCL/HCCL) and verbs paths are not built yet."
