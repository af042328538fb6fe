#!/usr/bin/env bash
# Multi-host check on one machine (issue 3): 2 emulated hosts (network + UTS namespaces, see
# lib.sh), host 0's link shaped to 1 Gbit/s, 2 ranks per host started with torchrun-style
# variables. Every collective runs through `ferrocoll-probe -c 1` (results checked against
# the reference, exit code non-zero on any wrong element), then a ring all-reduce of known
# volume checks with the veth byte counters that inter-host traffic really crossed the link,
# and rank 0's report shows shm (same host) and tcp (other host) in use.
#
#   tests/netns/multihost.sh PATH/TO/ferrocoll-probe [TRANSPORTS CROSS]
# TRANSPORTS is FERROCOLL_TRANSPORT for every rank (default auto) and CROSS the transport that
# must carry the inter-host pairs (default tcp): `shm,ofi ofi` runs the same checks over
# libfabric between the hosts (a probe built with --features ofi).
# Exit: 0 pass, 1 fail, 77 skipped (cannot create namespaces; the reason is printed).
set -u
PROBE=${1:?usage: multihost.sh PATH/TO/ferrocoll-probe [TRANSPORTS CROSS]}
TRANSPORTS=${2:-auto}
CROSS=${3:-tcp}
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
if ! netns_supported; then echo "SKIP multihost: $NETNS_WHY"; exit 77; fi
OUT=$(mktemp -d)
trap 'netns_down; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
netns_up 2 1gbit || { echo "FAIL: could not create the namespaces"; exit 1; }
PORT=$(netns_port_base)
HOSTS=(hostA hostB)

# run_job TAG ARGS…: 4 ranks, ranks 0,1 on host 0 and 2,3 on host 1; rank 0's stdout in $OUT/TAG.
run_job() {
  local tag=$1; shift
  local pids=() r rc=0
  PORT=$((PORT + 2))
  for r in 0 1 2 3; do
    local h=$((r / 2))
    netns_exec $h "${HOSTS[$h]}" env RANK=$r WORLD_SIZE=4 LOCAL_RANK=$((r % 2)) LOCAL_WORLD_SIZE=2 \
      MASTER_ADDR="$(netns_ip 0)" MASTER_PORT=$PORT FERROCOLL_SOCKET_IFNAME=up0 FERROCOLL_TIMEOUT=60 FERROCOLL_TRANSPORT="$TRANSPORTS" \
      timeout 180 "$PROBE" "$@" >"$OUT/$tag.$r" 2>"$OUT/$tag.$r.err" &
    pids+=($!)
  done
  for r in 0 1 2 3; do
    wait "${pids[$r]}" || { rc=1; echo "rank $r of '$tag' failed:"; tail -5 "$OUT/$tag.$r.err"; }
  done
  return $rc
}

fail=0
for coll in all_reduce all_gather reduce_scatter broadcast reduce all_to_all sendrecv barrier; do
  if run_job "$coll" "$coll" -b 8 -e 1M -f 16 -n 2 -w 1 -c 1 -r 1 --json "$OUT/$coll.json" \
     && grep -q "Out of bounds values : 0 OK" "$OUT/$coll.0"; then
    echo "ok   $coll (4 ranks, 2 hosts)"
  else
    echo "FAIL $coll"; cat "$OUT/$coll.0"; fail=1
  fi
done
# Rank 0 reaches rank 1 over shm and ranks 2, 3 over $CROSS.
if grep -q '"shm"' "$OUT/all_reduce.json" && grep -q "\"$CROSS\"" "$OUT/all_reduce.json"; then
  echo "ok   transports: shm within a host, $CROSS across"
else
  echo "FAIL transports: $(grep -o '"transports":[^]]*]' "$OUT/all_reduce.json")"; fail=1
fi

# Volume: ring all-reduce of S bytes on 4 ranks sends 2(n-1)/n*S = 1.5 S from each rank to the
# next; with ranks 0,1 | 2,3 the edges 1->2 and 3->0 cross hosts, so each host sends at least
# 1.5 S per call. The probe makes 2*(warm-up + iters) = 6 calls (more with the check pass).
S=$((8 << 20))
tx0=$(netns_bytes 0 tx); tx1=$(netns_bytes 1 tx)
run_job volume all_reduce -b $S -e $S -n 2 -w 1 -c 0 --algo ring || fail=1
d0=$(($(netns_bytes 0 tx) - tx0)); d1=$(($(netns_bytes 1 tx) - tx1))
need=$((6 * S * 3 / 2))
echo "     inter-host bytes sent: host0 $d0, host1 $d1 (payload lower bound $need each)"
if [ "$d0" -ge "$need" ] && [ "$d1" -ge "$need" ]; then
  echo "ok   inter-host traffic crossed the shaped veth link"
else
  echo "FAIL inter-host traffic below the ring's volume"; fail=1
fi
grep -E '^ +[0-9]+ ' "$OUT/volume.0" | head -1
exit $fail
