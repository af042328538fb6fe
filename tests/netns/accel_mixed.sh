#!/usr/bin/env bash
# One communicator over three emulated hosts with different accelerators (issue 24), run by
# tests/accel_doubles.rs: host A "NVIDIA" (the NCCL + CUDA runtime TEST DOUBLE), host B
# "Ascend" (the HCCL + ACL TEST DOUBLE), host C CPU only; 2 ranks each (network + UTS
# namespaces, see lib.sh). Every rank runs the composed collectives, checks them against the
# exact result, and reports a digest of every result; all six must be equal.
#
#   tests/netns/accel_mixed.sh TEST_BINARY NCCL_DOUBLE.so HCCL_DOUBLE.so
# Exit: 0 pass, 1 fail, 77 skipped (cannot create namespaces; the reason is printed).
set -u
BIN=${1:?usage: accel_mixed.sh TEST_BINARY NCCL_DOUBLE HCCL_DOUBLE}
NCCL=${2:?}
HCCL=${3:?}
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
if ! netns_supported; then echo "SKIP accel_mixed: $NETNS_WHY"; exit 77; fi
OUT=$(mktemp -d)
trap 'netns_down; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
netns_up 3 || { echo "FAIL: could not create the namespaces"; exit 1; }
PORT=$(($(netns_port_base) + 2))
HOSTS=(nvidiaA ascendB cpuC)
DEVICES=(cuda npu cpu)
pids=()
for r in 0 1 2 3 4 5; do
  h=$((r / 2))
  netns_exec $h "${HOSTS[$h]}" env FC_ACCEL=mixed FC_ACCEL_OUT="$OUT" FC_ACCEL_DEVICE="${DEVICES[$h]}" \
    FERROCOLL_NCCL_LIBRARY="$NCCL" FERROCOLL_CUDART_LIBRARY="$NCCL" \
    FERROCOLL_HCCL_LIBRARY="$HCCL" FERROCOLL_ACL_LIBRARY="$HCCL" \
    RANK=$r WORLD_SIZE=6 LOCAL_RANK=$((r % 2)) LOCAL_WORLD_SIZE=2 \
    MASTER_ADDR="$(netns_ip 0)" MASTER_PORT=$PORT FERROCOLL_SOCKET_IFNAME=up0 FERROCOLL_TIMEOUT=60 \
    timeout 180 "$BIN" >"$OUT/log.$r" 2>&1 &
  pids+=($!)
done
fail=0
for r in 0 1 2 3 4 5; do
  wait "${pids[$r]}" || { fail=1; echo "FAIL rank $r:"; tail -5 "$OUT/log.$r"; }
done
[ $fail = 0 ] || exit 1
cat "$OUT"/rank-*
if [ "$(cut -d' ' -f3- "$OUT"/rank-* | awk '{print $NF}' | sort -u | wc -l)" = 1 ]; then
  echo "ok   identical results on all 6 ranks (NCCL double, HCCL double, CPU)"
else
  echo "FAIL: the ranks' results differ"; exit 1
fi
