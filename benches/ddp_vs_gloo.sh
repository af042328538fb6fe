#!/usr/bin/env bash
# DDP step time with the "ferrocoll" torch backend against gloo, and the overlap of its
# communication with backward (issue 26; method in PERFORMANCE.md). Builds the release
# library, then runs benches/ddp_vs_gloo.py with the Python of the test suite's venv
# (FERROCOLL_VENV, default ~/.cache/ferrocoll/venv, which has torch):
#
#   bash benches/ddp_vs_gloo.sh [--ranks 2 4] [--rounds 6] [--steps 5] [--layers 8 --hidden 1536]
#
# About two minutes on a 2-core machine. Raw results go to benches/results/<date>-ddp.json.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FERROCOLL_VENV:-$HOME/.cache/ferrocoll/venv}
cargo build --release -p ferrocoll-ffi
export FERROCOLL_LIBRARY="$PWD/target/release/libferrocoll.so"
export PYTHONPATH="$PWD/ffi/python/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/python" benches/ddp_vs_gloo.py "$@"
