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
# "The link" is what one TCP stream carries across it, measured in the same run
# (netns_tcp_rate: payload bytes, as iperf3 reports): tbf counts whole Ethernet frames, so
# TCP payload tops out near 1448/1514 of the nominal 1 Gbit. The nominal fraction is printed
# too. When a Python with torch is found (PEERS_VENV, FERROCOLL_VENV or
# ~/.cache/ferrocoll/venv; `bash benches/setup_peers.sh` installs it), Gloo's all-reduce
# runs on the same link in the same run (benches/peers/torch_gloo_coll.py), for comparison.
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
PORT=$(netns_port_base)
HOSTS=(hostA hostB)
LINK_TCP=$(netns_tcp_rate 0 1) || LINK_TCP=""
echo "link: nominal 1 Gbit/s = $LINK_GBPS GB/s; one TCP stream carries ${LINK_TCP:-?} GB/s of payload (measured now)"

# run_codec CODEC: 2 ranks, one per host; rank 0's JSON in $OUT/CODEC.json.
run_codec() {
  local codec=$1 pids=() r rc=0
  PORT=$((PORT + 2))
  for r in 0 1; do
    netns_exec $r "${HOSTS[$r]}" env RANK=$r WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 \
      MASTER_ADDR="$(netns_ip 0)" MASTER_PORT=$PORT FERROCOLL_SOCKET_IFNAME=up0 FERROCOLL_TIMEOUT=120 \
      timeout 600 "$PROBE" all_reduce --compression "$codec" -b "$SIZE" -e "$SIZE" -n "$ITERS" -w 1 -c 1 -a 3 \
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

# Gloo on the same link, when torch and the peers' driver are there: prints its busbw or "".
gloo_busbw() {
  local peers=$HERE/../../benches/peers py="" v
  for v in "${PEERS_VENV:-}" "${FERROCOLL_VENV:-}" "$HOME/.cache/ferrocoll/venv"; do
    [ -n "$v" ] && "$v/bin/python" -c 'import torch' 2>/dev/null && { py="$v/bin/python"; break; }
  done
  [ -n "$py" ] && [ -f "$peers/torch_gloo_coll.py" ] || return 1
  PORT=$((PORT + 2))
  local bytes r pids=()
  bytes=$(awk -v s="$SIZE" 'BEGIN { m = 1; u = toupper(substr(s, length(s)));
    if (u == "K") m = 1024; else if (u == "M") m = 1048576; else if (u == "G") m = 1073741824;
    if (m > 1) s = substr(s, 1, length(s) - 1); printf "%d", s * m }')
  for r in 0 1; do
    netns_exec $r "${HOSTS[$r]}" env RANK=$r WORLD_SIZE=2 MASTER_ADDR="$(netns_ip 0)" MASTER_PORT=$PORT \
      GLOO_SOCKET_IFNAME=up0 OMP_NUM_THREADS=1 timeout 300 "$py" "$peers/torch_gloo_coll.py" \
      -o allreduce -s "$SIZE" -m "$ITERS" -t 1.0 -w 1 >"$OUT/gloo.$r" 2>"$OUT/gloo.$r.err" &
    pids+=($!)
  done
  wait "${pids[0]}" && wait "${pids[1]}" || return 1
  awk -v b="$bytes" '$1 == b { print $7; exit }' "$OUT/gloo.0"
}

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
GLOO=$(gloo_busbw) || GLOO=""
if [ -n "$GLOO" ]; then
  printf "%-10s %12s %12.4f   (torch Gloo all_reduce, same link, same run)\n" gloo "" "$GLOO"
else
  echo "gloo: not run (no Python with torch; bash benches/setup_peers.sh installs it)"
fi
if [ -n "${TIME[none]:-}" ]; then
  bw_none=$(field "$OUT/none.json" busbw_gbps)
  echo "uncompressed: $(awk -v b="$bw_none" -v l=$LINK_GBPS 'BEGIN { printf "%.1f", 100 * b / l }')% of the nominal 1 Gbit/s"
  [ -n "$GLOO" ] && echo "uncompressed / Gloo: $(awk -v b="$bw_none" -v g="$GLOO" 'BEGIN { printf "%.3f", b / g }')"
  if [ -n "$LINK_TCP" ]; then
    check "uncompressed busbw / link (one TCP stream's payload rate)" \
      "$(awk -v b="$bw_none" -v l="$LINK_TCP" 'BEGIN { printf "%.3f", b / l }')" 0.95
  else
    check "uncompressed busbw / nominal link (the TCP stream could not be measured)" \
      "$(awk -v b="$bw_none" -v l=$LINK_GBPS 'BEGIN { printf "%.3f", b / l }')" 0.95
  fi
  for pair in fp16:1.8 fp8:3.5 onebit:12 topk:0.01:10; do
    codec=${pair%:*}; want=${pair##*:}
    [ -n "${TIME[$codec]:-}" ] || continue
    check "speed-up $codec" "$(awk -v a="${TIME[none]}" -v b="${TIME[$codec]}" 'BEGIN { printf "%.2f", a / b }')" "$want"
  done
fi
exit $fail
