#!/usr/bin/env bash
# Installs and builds the peers that `benches/compare.py` measures ferrocoll against:
#   - Open MPI (Debian packages openmpi-bin, libopenmpi-dev) and a C compiler;
#   - a Python venv with torch's CPU wheel, for torch.distributed's Gloo backend;
#   - the three drivers in benches/peers/, built into target/peers/:
#       mpi_coll  (from mpi_coll.c: MPI_Allreduce / MPI_Allgather / MPI_Reduce_scatter_block)
#       memlimit  (from memlimit.c: memcpy, f32 a+b and loopback TCP rates, for the bounds)
#     torch_gloo_coll.py runs from benches/peers/ with the venv's Python.
#
#   bash benches/setup_peers.sh
#
# Idempotent: each step is skipped when its result is already there. Debian packages are
# installed only when missing, and only as root with apt-get (otherwise the script names
# them and stops). Environment:
#   PEERS_VENV      the venv (default: the test suite's, $FERROCOLL_VENV or
#                   ~/.cache/ferrocoll/venv, so torch is installed once; compare.py looks there)
#   TORCH_INDEX_URL where torch comes from (default: PyPI, whose wheel carries CUDA libraries
#                   Gloo does not use, ~5 GB; e.g. https://download.pytorch.org/whl/cpu for
#                   the CPU-only wheel where that host is reachable)
# Exit status: 0 when every peer is ready, 1 otherwise.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/benches/peers"
BUILD="$ROOT/target/peers"
VENV=${PEERS_VENV:-${FERROCOLL_VENV:-$HOME/.cache/ferrocoll/venv}}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
say() { echo "[setup_peers] $*"; }

# ---- 1. Debian packages ------------------------------------------------------------------
need=()
command -v mpirun >/dev/null || need+=(openmpi-bin)
# mpicc can be present without the headers (openmpi-bin alone): compile a probe.
echo '#include <mpi.h>' | mpicc -E -x c - >/dev/null 2>&1 || need+=(libopenmpi-dev)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "apt-get install ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        say "missing: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]}, then rerun)"
        exit 1
    fi
fi
say "$(mpirun --version 2>&1 | head -1)"

# ---- 2. the C drivers --------------------------------------------------------------------
mkdir -p "$BUILD"
if [ ! -x "$BUILD/mpi_coll" ] || [ "$SRC/mpi_coll.c" -nt "$BUILD/mpi_coll" ]; then
    mpicc -O2 -o "$BUILD/mpi_coll" "$SRC/mpi_coll.c"
    say "built target/peers/mpi_coll"
fi
if [ ! -x "$BUILD/memlimit" ] || [ "$SRC/memlimit.c" -nt "$BUILD/memlimit" ]; then
    gcc -O3 -march=native -pthread -o "$BUILD/memlimit" "$SRC/memlimit.c"
    say "built target/peers/memlimit"
fi

# ---- 3. torch (CPU wheel) in a venv, for Gloo ---------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating the venv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    say "installing torch from ${TORCH_INDEX_URL:-PyPI} into $VENV (a few minutes)"
    "$VENV/bin/pip" install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch
fi
# torch warns without numpy; the driver itself does not need it.
"$VENV/bin/python" -c 'import numpy' 2>/dev/null || "$VENV/bin/pip" install -q numpy
"$VENV/bin/python" - <<'EOF'
import torch, torch.distributed as dist
assert dist.is_gloo_available(), "this torch build has no Gloo backend"
print(f"[setup_peers] torch {torch.__version__}, Gloo available")
EOF

say "ready: python3 benches/compare.py"
