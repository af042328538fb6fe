#!/usr/bin/env bash
# The ofi transport's speed against TCP (issue 23), three parts in one run:
#
#   cargo build --release --features ofi --bin ferrocoll-probe
#   bash benches/ofi_link.sh target/release/ferrocoll-probe [ROUNDS] [JSON]
#
# 1. The 1 Gbit link: 2 emulated hosts × 1 rank (network namespaces, tests/netns/lib.sh, tbf
#    1 Gbit on the veth), a 64 MiB f32 all-reduce over `ofi` and over `tcp`, alternating
#    (which goes first alternates by round). "The link" is what one TCP stream carries across
#    it, measured in the same run (netns_tcp_rate). Target: ofi's median ≥ 95% of the link.
# 2. Loopback: 2 ranks forked on this host, FERROCOLL_TRANSPORT=ofi against tcp, all-reduce of
#    8 B (time), 1 MiB and 64 MiB (bus bandwidth), alternating per round; the per-round ratio
#    ofi/tcp in speed, its median, minimum and maximum.
# 3. The registration cache: 1,000 timed 1 MiB all-gathers over ofi on the same buffers after
#    the warm-up (a collective that moves data by single copy, RDMA read from the sender's
#    registered buffer; reductions go through the staging slots); the probe counts the
#    registrations made during them (target: none).
#
# Needs root (namespaces) for part 1; without it part 1 is skipped and said so. The libfabric
# provider is FERROCOLL_OFI_PROVIDER's (default `tcp;ofi_rxm`). Raw figures go to JSON
# (default benches/results/<date>-ofi.json). Exit 0 when the targets hold, 1 otherwise.
set -u
PROBE=$(realpath "${1:?usage: ofi_link.sh PATH/TO/ferrocoll-probe [ROUNDS] [JSON]}")
ROUNDS=${2:-5}
HERE="$(cd "$(dirname "$0")" && pwd)"
JSON=${3:-$HERE/results/$(date +%F)-ofi.json}
# shellcheck source=../tests/netns/lib.sh
. "$HERE/../tests/netns/lib.sh"
OUT=$(mktemp -d)
trap 'netns_down 2>/dev/null; rm -rf "$OUT"' EXIT
RAW="$OUT/raw.tsv" # part, transport, case, round, figure
: >"$RAW"
fail=0

# field FILE KEY: the first number after "KEY": in a JSON file.
field() { grep -o "\"$2\": *[-0-9.eE+]*" "$1" | head -1 | sed 's/.*: *//'; }
# ran_over FILE TRANSPORT: the probe's JSON says its rank 0 reached its peer over TRANSPORT only.
ran_over() { tr -d ' \n' <"$1" | grep -q "\"transports\":\[\"$2\"\]"; }

# ---- part 1: across the 1 Gbit link ---------------------------------------------------------
link_run() { # link_run TRANSPORT ROUND: 2 ranks, one per host; appends rank 0's busbw
  local t=$1 round=$2 r pids=() ok=1
  PORT=$((PORT + 2))
  for r in 0 1; do
    netns_exec $r "host$r" env RANK=$r WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 \
      MASTER_ADDR="$(netns_ip 0)" MASTER_PORT=$PORT FERROCOLL_SOCKET_IFNAME=up0 \
      FERROCOLL_TRANSPORT="$t" FERROCOLL_TIMEOUT=120 \
      timeout 600 "$PROBE" all_reduce -b 64M -e 64M -n 5 -w 1 -c 1 -a 3 \
      --json "$OUT/link-$t-$round.json" >"$OUT/link.$r" 2>"$OUT/link.$r.err" &
    pids+=($!)
  done
  for r in 0 1; do wait "${pids[$r]}" || ok=0; done
  if [ $ok = 0 ] || ! grep -q '"ok": true' "$OUT/link-$t-$round.json"; then
    echo "FAIL link $t round $round:"; tail -3 "$OUT"/link.*.err; fail=1; return
  fi
  ran_over "$OUT/link-$t-$round.json" "$t" || { echo "FAIL link $t round $round: the probe did not run over $t"; fail=1; return; }
  printf "link\t%s\t64M busbw\t%s\t%s\n" "$t" "$round" "$(field "$OUT/link-$t-$round.json" busbw_gbps)" >>"$RAW"
}

LINK_TCP=""
if netns_supported; then
  netns_up 2 1gbit || { echo "FAIL: could not create the namespaces"; exit 1; }
  PORT=$(netns_port_base)
  LINK_TCP=$(netns_tcp_rate 0 1) || LINK_TCP=""
  echo "link: 1 Gbit/s tbf; one TCP stream carries ${LINK_TCP:-?} GB/s of payload (measured now)"
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="ofi tcp"; else order="tcp ofi"; fi
    for t in $order; do link_run "$t" "$round"; done
  done
  netns_down
else
  echo "SKIP part 1 (the 1 Gbit link): $NETNS_WHY"
fi

# ---- part 2: loopback ---------------------------------------------------------------------
loop_run() { # loop_run TRANSPORT ROUND SIZE ITERS
  local t=$1 round=$2 size=$3 iters=$4 j="$OUT/loop-$1-$3-$2.json" key=busbw_gbps
  [ "$size" = 8 ] && key=time_us
  if ! FERROCOLL_TIMEOUT=120 timeout 600 "$PROBE" all_reduce --np 2 --transport "$t" \
      -b "$size" -e "$size" -n "$iters" -w 20 -c 1 -a 3 --json "$j" >"$OUT/loop.out" 2>&1 \
      || ! grep -q '"ok": true' "$j"; then
    echo "FAIL loopback $t $size round $round:"; tail -3 "$OUT/loop.out"; fail=1; return
  fi
  ran_over "$j" "$t" || { echo "FAIL loopback $t: the probe did not run over $t"; fail=1; return; }
  printf "loop\t%s\t%s %s\t%s\t%s\n" "$t" "$size" "$key" "$round" "$(field "$j" $key)" >>"$RAW"
}
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="ofi tcp"; else order="tcp ofi"; fi
  for t in $order; do
    loop_run "$t" "$round" 8 20000
    loop_run "$t" "$round" 1M 300
    loop_run "$t" "$round" 64M 10
  done
done

# ---- part 3: the registration cache ---------------------------------------------------------
REG="$OUT/reg.json"
if FERROCOLL_TIMEOUT=120 timeout 600 "$PROBE" all_gather --np 2 --transport ofi -b 1M -e 1M \
    -n 1000 -w 5 -c 1 --json "$REG" >"$OUT/reg.out" 2>&1 && grep -q '"ok": true' "$REG"; then
  grep "Registration cache" "$OUT/reg.out" || { echo "FAIL: the probe printed no registration counts"; fail=1; }
else
  echo "FAIL registration-cache run:"; tail -3 "$OUT/reg.out"; fail=1
fi

# ---- summary and JSON -----------------------------------------------------------------------
(cd "$HERE" && python3 - "$RAW" "$REG" "$JSON" "${LINK_TCP:-}" "$ROUNDS" "$PROBE") <<'EOF' || fail=1
import json, statistics as st, sys, subprocess, datetime, os
raw, reg, out, link, rounds, probe = sys.argv[1:7]
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
fig = {}
for part, t, case, rnd, v in rows:
    fig.setdefault((part, case), {}).setdefault(t, {})[int(rnd)] = float(v)
ok = True
res = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
       "command": "bash benches/ofi_link.sh PROBE %s" % rounds,
       "provider": os.environ.get("FERROCOLL_OFI_PROVIDER", "tcp;ofi_rxm"),
       "link_tcp_stream_gbps": float(link) if link else None, "cases": []}
try:
    res["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                   text=True).stdout.strip() or None
except OSError:
    pass
print("\n%-6s %-18s %14s %14s %22s" % ("part", "case", "ofi median", "tcp median", "ofi/tcp speed (min-max)"))
for (part, case), by in sorted(fig.items()):
    o, t = by.get("ofi", {}), by.get("tcp", {})
    both = sorted(set(o) & set(t))
    time_like = case.endswith("time_us")
    ratios = [(t[r] / o[r]) if time_like else (o[r] / t[r]) for r in both]
    c = {"part": part, "case": case, "ofi": [o[r] for r in sorted(o)], "tcp": [t[r] for r in sorted(t)],
         "ofi_over_tcp_speed": ratios}
    med = lambda xs: st.median(xs) if xs else float("nan")
    print("%-6s %-18s %14.4f %14.4f %10.3f (%.3f-%.3f)" % (part, case, med(c["ofi"]), med(c["tcp"]),
          med(ratios), min(ratios, default=float("nan")), max(ratios, default=float("nan"))))
    if part == "link" and link:
        c["ofi_over_link"] = [v / float(link) for v in c["ofi"]]
        c["tcp_over_link"] = [v / float(link) for v in c["tcp"]]
        m = med(c["ofi_over_link"])
        print("       ofi ÷ link %.3f (%.3f-%.3f), tcp ÷ link %.3f" % (m, min(c["ofi_over_link"]),
              max(c["ofi_over_link"]), med(c["tcp_over_link"])))
        if not m >= 0.95:
            print("MISS ofi busbw / link %.3f < 0.95" % m); ok = False
        else:
            print("ok   ofi busbw / link %.3f >= 0.95" % m)
    res["cases"].append(c)
try:
    halves = [h for r in json.load(open(reg))["rows"] for h in (r["out_of_place"], r.get("in_place")) if h]
    regs = [h["registration"] for h in halves if h.get("registration")]
    res["registration_cache"] = regs
    new = sum(r["new_registrations"] for r in regs)
    calls = sum(r["calls"] for r in regs)
    if not regs or new != 0:
        print("MISS registration cache: %s" % (regs or "not used")); ok = False
    else:
        print("ok   registration cache: 0 new registrations over %d timed calls (%d hits)"
              % (calls, sum(r["hits"] for r in regs)))
except (OSError, ValueError, KeyError) as e:
    print("MISS registration cache: %s" % e); ok = False
json.dump(res, open(out, "w"), indent=1)
print("raw figures:", out)
sys.exit(0 if ok else 1)
EOF
exit $fail
