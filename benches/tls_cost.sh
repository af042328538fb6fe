#!/usr/bin/env bash
# What TLS on the TCP links costs (FERROCOLL_TLS=1 against plain TCP, issue 25):
#
#   cargo build --release --features tls --bin ferrocoll-probe
#   bash benches/tls_cost.sh target/release/ferrocoll-probe [ROUNDS] [JSON]
#
# 1. The 1 Gbit link: 2 emulated hosts × 1 rank (network namespaces, tests/netns/lib.sh, tbf
#    1 Gbit on the veth), a 64 MiB f32 all-reduce over tcp with and without TLS, alternating
#    (which goes first alternates by round), next to what one TCP stream carries across the
#    link, measured in the same run.
# 2. Loopback: 2 ranks forked on this host over tcp, all-reduce of 8 B (time), 1 MiB and
#    64 MiB (bus bandwidth), with and without TLS, alternating per round.
#
# Every run checks its results (-c 1). Prints, per case, both medians and the per-round ratio
# TLS/plain in speed (median, minimum, maximum); raw figures go to JSON (default
# benches/results/<date>-tls.json). Part 1 needs root and is skipped, saying so, without it.
# There is no target: the table in PERFORMANCE.md reports the cost.
set -u
PROBE=$(realpath "${1:?usage: tls_cost.sh PATH/TO/ferrocoll-probe [ROUNDS] [JSON]}")
ROUNDS=${2:-5}
HERE="$(cd "$(dirname "$0")" && pwd)"
JSON=${3:-$HERE/results/$(date +%F)-tls.json}
# shellcheck source=../tests/netns/lib.sh
. "$HERE/../tests/netns/lib.sh"
OUT=$(mktemp -d)
trap 'netns_down 2>/dev/null; rm -rf "$OUT"' EXIT
RAW="$OUT/raw.tsv" # part, variant, case, round, figure
: >"$RAW"
fail=0

# field FILE KEY: the first number after "KEY": in a JSON file.
field() { grep -o "\"$2\": *[-0-9.eE+]*" "$1" | head -1 | sed 's/.*: *//'; }
tls_of() { [ "$1" = tls ] && echo 1 || echo 0; }

if ! FERROCOLL_TLS=1 "$PROBE" all_reduce --np 2 --transport tcp -b 8 -e 8 -n 1 -w 0 >"$OUT/try" 2>&1; then
  echo "error: this probe cannot run TLS (build it with --features tls):"; tail -2 "$OUT/try"; exit 1
fi

# ---- part 1: across the 1 Gbit link ---------------------------------------------------------
link_run() { # link_run VARIANT ROUND: 2 ranks, one per host; appends rank 0's busbw
  local v=$1 round=$2 r pids=() ok=1 j="$OUT/link-$1-$2.json"
  PORT=$((PORT + 2))
  for r in 0 1; do
    netns_exec $r "host$r" env RANK=$r WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 \
      MASTER_ADDR="$(netns_ip 0)" MASTER_PORT=$PORT FERROCOLL_SOCKET_IFNAME=up0 \
      FERROCOLL_TRANSPORT=tcp FERROCOLL_TLS="$(tls_of "$v")" FERROCOLL_TIMEOUT=120 \
      timeout 600 "$PROBE" all_reduce -b 64M -e 64M -n 5 -w 1 -c 1 -a 3 \
      --json "$j" >"$OUT/link.$r" 2>"$OUT/link.$r.err" &
    pids+=($!)
  done
  for r in 0 1; do wait "${pids[$r]}" || ok=0; done
  if [ $ok = 0 ] || ! grep -q '"ok": true' "$j"; then
    echo "FAIL link $v round $round:"; tail -3 "$OUT"/link.*.err; fail=1; return
  fi
  printf "link\t%s\t64M busbw\t%s\t%s\n" "$v" "$round" "$(field "$j" busbw_gbps)" >>"$RAW"
}

LINK_TCP=""
if netns_supported; then
  netns_up 2 1gbit || { echo "FAIL: could not create the namespaces"; exit 1; }
  PORT=$(netns_port_base)
  LINK_TCP=$(netns_tcp_rate 0 1) || LINK_TCP=""
  echo "link: 1 Gbit/s tbf; one TCP stream carries ${LINK_TCP:-?} GB/s of payload (measured now)"
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="tls plain"; else order="plain tls"; fi
    for v in $order; do link_run "$v" "$round"; done
  done
  netns_down
else
  echo "SKIP part 1 (the 1 Gbit link): $NETNS_WHY"
fi

# ---- part 2: loopback ---------------------------------------------------------------------
loop_run() { # loop_run VARIANT ROUND SIZE ITERS
  local v=$1 round=$2 size=$3 iters=$4 j="$OUT/loop-$1-$3-$2.json" key=busbw_gbps
  [ "$size" = 8 ] && key=time_us
  if ! FERROCOLL_TLS="$(tls_of "$v")" FERROCOLL_TIMEOUT=120 timeout 600 "$PROBE" all_reduce \
      --np 2 --transport tcp -b "$size" -e "$size" -n "$iters" -w 20 -c 1 -a 3 --json "$j" \
      >"$OUT/loop.out" 2>&1 || ! grep -q '"ok": true' "$j"; then
    echo "FAIL loopback $v $size round $round:"; tail -3 "$OUT/loop.out"; fail=1; return
  fi
  printf "loop\t%s\t%s %s\t%s\t%s\n" "$v" "$size" "$key" "$round" "$(field "$j" $key)" >>"$RAW"
}
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="tls plain"; else order="plain tls"; fi
  for v in $order; do
    loop_run "$v" "$round" 8 5000
    loop_run "$v" "$round" 1M 200
    loop_run "$v" "$round" 64M 10
  done
done

# ---- summary and JSON -----------------------------------------------------------------------
(cd "$HERE" && python3 - "$RAW" "$JSON" "${LINK_TCP:-}" "$ROUNDS") <<'EOF' || fail=1
import json, statistics as st, sys, subprocess, datetime
raw, out, link, rounds = sys.argv[1:5]
fig = {}
for l in open(raw):
    if l.strip():
        part, v, case, rnd, x = l.rstrip("\n").split("\t")
        fig.setdefault((part, case), {}).setdefault(v, {})[int(rnd)] = float(x)
res = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
       "command": "bash benches/tls_cost.sh PROBE %s" % rounds,
       "link_tcp_stream_gbps": float(link) if link else None, "cases": []}
res["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                               text=True).stdout.strip() or None
med = lambda xs: st.median(xs) if xs else float("nan")
print("\n%-5s %-16s %12s %12s %26s" % ("part", "case", "tls median", "plain median", "tls/plain speed (min-max)"))
for (part, case), by in sorted(fig.items()):
    t, p = by.get("tls", {}), by.get("plain", {})
    both = sorted(set(t) & set(p))
    time_like = case.endswith("time_us")
    ratios = [(p[r] / t[r]) if time_like else (t[r] / p[r]) for r in both]
    c = {"part": part, "case": case, "tls": [t[r] for r in sorted(t)],
         "plain": [p[r] for r in sorted(p)], "tls_over_plain_speed": ratios}
    print("%-5s %-16s %12.4f %12.4f %12.3f (%.3f-%.3f)" % (part, case, med(c["tls"]), med(c["plain"]),
          med(ratios), min(ratios, default=float("nan")), max(ratios, default=float("nan"))))
    if part == "link" and link:
        c["tls_over_link"] = [x / float(link) for x in c["tls"]]
        print("      tls ÷ link %.3f, plain ÷ link %.3f" % (med(c["tls_over_link"]),
              med([x / float(link) for x in c["plain"]])))
    res["cases"].append(c)
json.dump(res, open(out, "w"), indent=1)
print("raw figures:", out)
EOF
exit $fail
