#!/usr/bin/env bash
# Measured proof of issue 8 on one machine: 2 emulated hosts × 1 rank (network + UTS
# namespaces, lib.sh), host 0's link shaped to 1 Gbit/s by tbf, a 64 MiB f32 all-reduce with
# each codec in the same run, through `ferrocoll-probe all_reduce --compression CODEC`.
#
#   cargo build --release --bin ferrocoll-probe
#   tests/netns/compression.sh target/release/ferrocoll-probe [SIZE] [ITERS]
#
# Prints, per codec: time per call, busbw in uncompressed bytes, speed-up over uncompressed,
# max relative error; then checks the issue's targets: uncompressed busbw ≥ 95% of the link,
# speed-up fp16 ≥ 1.8×, fp8 ≥ 3.5×, 1-bit ≥ 12×, top-k 1% ≥ 10×.
# With REPORT_ONLY=1 (the reduced CI form, tests/compress_netns.rs) missed targets are
# reported but do not fail; failed runs and ranks that disagree still do.
# Exit: 0 all targets met, 1 a target missed or a run failed, 77 skipped (no namespaces).
set -u
PROBE=${1:?usage: compression.sh PATH/TO/ferrocoll-probe [SIZE] [ITERS]}
SIZE=${2:-64M}
ITERS=${3:-3}
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
if ! netns_supported; then echo "SKIP compression: $NETNS_WHY"; exit 77; fi
OUT=$(mktemp -d)
trap 'netns_down; rm -rf "$OUT"' EXIT
LINK_GBPS=0.125 # 1 Gbit/s in GB/s
netns_up 2 1gbit || { echo "FAIL: could not create the namespaces"; exit 1; }
PORT=$((20000 + $$ % 20000))
HOSTS=(hostA hostB)

# run_codec CODEC: 2 ranks, one per host; rank 0's JSON in $OUT/CODEC.json.
run_codec() {
  local codec=$1 pids=() r rc=0
  PORT=$((PORT + 2))
  for r in 0 1; do
    netns_exec $r "${HOSTS[$r]}" env RANK=$r WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 \
      MASTER_ADDR="$(netns_ip 0)" MASTER_PORT=$PORT FERROCOLL_SOCKET_IFNAME=up0 FERROCOLL_TIMEOUT=120 \
      timeout 600 "$PROBE" all_reduce --compression "$codec" -b "$SIZE" -e "$SIZE" -n "$ITERS" -w 1 -c 1 \
      --json "$OUT/${codec/:/_}.json" >"$OUT/${codec/:/_}.$r" 2>"$OUT/${codec/:/_}.$r.err" &
    pids+=($!)
  done
  for r in 0 1; do
    wait "${pids[$r]}" || { rc=1; echo "rank $r of '$codec' failed:"; tail -5 "$OUT/${codec/:/_}.$r.err"; }
  done
  return $rc
}

# field FILE KEY: the first number after "KEY": in a JSON file.
field() { grep -o "\"$2\": *[-0-9.eE+]*" "$1" | head -1 | sed 's/.*: *//'; }

fail=0
declare -A TIME
printf "%-10s %12s %12s %9s %12s\n" codec "time (ms)" "busbw GB/s" speed-up "max rel err"
for codec in none fp16 fp8 onebit topk:0.01; do
  if ! run_codec "$codec"; then echo "FAIL $codec did not run"; fail=1; continue; fi
  j="$OUT/${codec/:/_}.json"
  t=$(field "$j" time_us); bw=$(field "$j" busbw_gbps); err=$(field "$j" max_rel_err)
  grep -q '"identical": true' "$j" || { echo "FAIL $codec: ranks differ"; fail=1; }
  TIME[$codec]=$t
  up=$(awk -v a="${TIME[none]}" -v b="$t" 'BEGIN { printf "%.2f", a / b }')
  printf "%-10s %12.1f %12.4f %8sx %12.3e\n" "$codec" "$(awk -v t="$t" 'BEGIN{print t/1000}')" "$bw" "$up" "$err"
done

check() { # check NAME VALUE MIN
  if awk -v v="$2" -v m="$3" 'BEGIN { exit !(v >= m) }'; then echo "ok   $1: $2 >= $3"
  else echo "MISS $1: $2 < $3"; [ "${REPORT_ONLY:-0}" = 1 ] || fail=1; fi
}
if [ -n "${TIME[none]:-}" ]; then
  check "uncompressed busbw / link" \
    "$(awk -v b="$(field "$OUT/none.json" busbw_gbps)" -v l=$LINK_GBPS 'BEGIN { printf "%.3f", b / l }')" 0.95
  for pair in fp16:1.8 fp8:3.5 onebit:12 topk:0.01:10; do
    codec=${pair%:*}; want=${pair##*:}
    [ -n "${TIME[$codec]:-}" ] || continue
    check "speed-up $codec" "$(awk -v a="${TIME[none]}" -v b="${TIME[$codec]}" 'BEGIN { printf "%.2f", a / b }')" "$want"
  done
fi
exit $fail
