#!/usr/bin/env bash
# Recovery time across two emulated hosts: `train_dp --elastic` on 4 ranks (ranks 0,1 on
# host 0, ranks 2,3 on host 1, host 0's link shaped to 1 Gbit/s), the store served by
# `ferrocoll-store` on host 0. One rank is SIGKILLed (or SIGSTOPped) at step 300; the time
# from the signal (the victim's `fail:` line) to each survivor's first completed collective on
# the shrunk communicator (its `recovered:` line) is the recovery time. Every case runs
# ROUNDS times; the JSON has each run and the medians.
#
#   bash benches/elastic_recovery.sh [ROUNDS] [OUT.json]     (build first:
#   cargo build --release --example train_dp --bin ferrocoll-store)
# Needs root (network namespaces). Default heartbeat timeout (FERROCOLL_HEARTBEAT_TIMEOUT
# unset: 3 s) unless the environment sets one.
set -u
ROUNDS=${1:-5}
OUT=${2:-benches/results/$(date +%F)-elastic-recovery.json}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TRAIN="$ROOT/target/release/examples/train_dp"
STORE="$ROOT/target/release/ferrocoll-store"
for b in "$TRAIN" "$STORE"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release --example train_dp --bin ferrocoll-store"; exit 1; }
done
# shellcheck source=../tests/netns/lib.sh
. "$ROOT/tests/netns/lib.sh"
netns_supported || { echo "cannot create namespaces: $NETNS_WHY"; exit 1; }
trap 'netns_down' EXIT
netns_up 2 1gbit || exit 1
PORT=$(netns_port_base)
HOSTS=(hostA hostB)
LOGS=$(mktemp -d)
RUNS=()

# run KIND VICTIM ROUND: one job; appends a JSON object to RUNS.
run() {
  local kind=$1 victim=$2 round=$3 r pids=() dir="$LOGS/$1-$2-$3"
  mkdir -p "$dir"
  PORT=$((PORT + 1))
  netns_exec 0 "${HOSTS[0]}" "$STORE" --listen "$(netns_ip 0):$PORT" >"$dir/store" 2>&1 &
  local store=$!
  sleep 0.3
  for r in 0 1 2 3; do
    local h=$((r / 2))
    netns_exec $h "${HOSTS[$h]}" env RANK=$r WORLD_SIZE=4 LOCAL_RANK=$((r % 2)) LOCAL_WORLD_SIZE=2 \
      FERROCOLL_STORE="tcp://$(netns_ip 0):$PORT" FERROCOLL_SOCKET_IFNAME=up0 FERROCOLL_TIMEOUT=60 \
      "$TRAIN" --elastic --steps 600 --eval-every 100000 --fail "$kind:$victim@300" \
      >"$dir/out-$r" 2>"$dir/err-$r" &
    pids+=($!)
  done
  for r in 0 1 2 3; do
    if [ "$r" = "$victim" ] && [ "$kind" = stop ]; then continue; fi
    wait "${pids[$r]}"
  done
  if [ "$kind" = stop ]; then
    pkill -KILL -f "^$TRAIN --elastic" 2>/dev/null; wait "${pids[$victim]}" 2>/dev/null
  fi
  pkill -TERM -P "$store" 2>/dev/null; kill -TERM "$store" 2>/dev/null; wait "$store" 2>/dev/null
  RUNS+=("$(python3 - "$dir" "$kind" "$victim" "$round" <<'PY'
import json, re, sys, glob
d, kind, victim, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t_fail, rec = None, []
for f in sorted(glob.glob(d + "/out-*")):
    for line in open(f):
        m = re.match(r"fail: .* at step \d+ at ([0-9.]+)", line)
        if m: t_fail = float(m.group(1))
        m = re.match(r"recovered: world (\d+) -> (\d+) in ([0-9.]+) s at step (\d+) \(at ([0-9.]+)\)", line)
        if m: rec.append((int(m.group(2)), float(m.group(5))))
ok = t_fail is not None and len(rec) == 3 and all(w == 3 for w, _ in rec)
secs = sorted(t - t_fail for _, t in rec) if ok else []
print(json.dumps({"kind": kind, "victim": victim, "round": rnd, "ok": ok,
                  "recovery_s": secs, "max_s": max(secs) if secs else None}))
PY
)")
  echo "${RUNS[-1]}"
}

for round in $(seq 1 "$ROUNDS"); do
  for victim in 0 2; do run kill "$victim" "$round"; done
  run stop 2 "$round"
done
printf '%s\n' "${RUNS[@]}" >"$LOGS/runs"
python3 - "$OUT" "${FERROCOLL_HEARTBEAT_TIMEOUT:-3}" "$LOGS/runs" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
out = {"bench": "elastic recovery, 4 ranks on 2 namespace hosts (1 Gbit/s), train_dp --elastic",
       "heartbeat_timeout_s": float(sys.argv[2]), "runs": runs, "median_max_s": {}}
for key in sorted({(r["kind"], r["victim"]) for r in runs}):
    xs = [r["max_s"] for r in runs if (r["kind"], r["victim"]) == key and r["ok"]]
    out["median_max_s"][f"{key[0]} rank {key[1]}"] = {
        "median": statistics.median(xs) if xs else None,
        "min": min(xs) if xs else None, "max": max(xs) if xs else None,
        "ok_runs": len(xs), "runs": sum(1 for r in runs if (r["kind"], r["victim"]) == key)}
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps(out["median_max_s"], indent=1))
PY
rm -rf "$LOGS"
