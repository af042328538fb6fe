#!/usr/bin/env bash
# The accelerator check on a real NVIDIA GPU (issue 24), a few minutes on any machine that
# has one (H100/H200 class; one GPU is enough):
#
#   bash benches/gpu_check.sh [MiB] [ITERATIONS]
#
# Two processes share GPU 0, each the only rank of its own NCCL communicator, with ferrocoll
# between them from host staging buffers (examples/gpu_check.rs): device buffers, exact
# results checked, and the composed all-reduce's median time printed next to raw NCCL's on
# the same buffers. NCCL and the CUDA runtime are FERROCOLL_NCCL_LIBRARY and
# FERROCOLL_CUDART_LIBRARY when set; else the ones of a Python environment that has them
# (torch's wheel, or `pip install nvidia-nccl-cu12 nvidia-cuda-runtime-cu12`), found with
# PYTHON (default python3). The result line also goes to benches/results/<date>-gpu.json.
# Then the torch step (benches/gpu_torch_check.py, when PYTHON has torch with CUDA): the
# "ferrocoll" torch backend all-reduces and all-gathers CUDA tensors on 2 ranks sharing the GPU
# (FERROCOLL_DEVICE=cuda), checked exactly.
# Exit 0 when the results are exact, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-64}
ITERS=${2:-20}
PY=${PYTHON:-python3}
find_lib() { # find_lib PATTERN: the first file under site-packages/nvidia matching PATTERN
  "$PY" - "$1" <<'PYEOF' 2>/dev/null || true
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    hits = sorted(glob.glob(os.path.join(r, "nvidia", "**", sys.argv[1]), recursive=True))
    if hits:
        print(hits[0]); break
PYEOF
}
export FERROCOLL_NCCL_LIBRARY=${FERROCOLL_NCCL_LIBRARY:-$(find_lib 'libnccl.so.2')}
export FERROCOLL_CUDART_LIBRARY=${FERROCOLL_CUDART_LIBRARY:-$(find_lib 'libcudart.so.1[0-9]*')}
echo "NCCL: ${FERROCOLL_NCCL_LIBRARY:-(default search)}"
echo "CUDA runtime: ${FERROCOLL_CUDART_LIBRARY:-(default search)}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
cargo build --release --example gpu_check
out=$(mktemp)
if ! target/release/examples/gpu_check "$MIB" "$ITERS" | tee "$out"; then
  echo "FAIL: the composed all-reduce on the GPU did not complete exactly"; exit 1
fi
mkdir -p benches/results
json="benches/results/$(date +%F)-gpu.json"
tail -1 "$out" >"$json"
echo "ok: exact; raw line in $json"
if "$PY" -c "import numpy, torch; assert torch.cuda.is_available()" 2>/dev/null; then
  cargo build --release -p ferrocoll-ffi
  if ! FERROCOLL_LIBRARY="$PWD/target/release/libferrocoll.so" \
      PYTHONPATH="$PWD/ffi/python/src${PYTHONPATH:+:$PYTHONPATH}" "$PY" benches/gpu_torch_check.py; then
    echo "FAIL: the torch backend on CUDA tensors"; exit 1
  fi
else
  echo "SKIPPED: the torch step: $PY has no torch that sees a CUDA device"
fi
