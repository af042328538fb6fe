#!/usr/bin/env bash
# Measured proof of issue 7 on emulated hosts (network + UTS namespaces, tests/netns/lib.sh),
# every inter-host link shaped to 1 Gbit/s with tbf, ranks started with torchrun-style
# variables, times from ferrocoll-probe's JSON (max over ranks, the better of in-place and
# out-of-place; median over ROUNDS alternating rounds).
#
#   1. 2 hosts x 2 ranks placed cyclically (ranks 0,2 on host 0; 1,3 on host 1), f32
#      all-reduce of SIZE (64 MiB): rank-order ring vs topology-ordered ring vs hierarchical,
#      in the same run. Targets: topology ring >= 1.8x and hierarchical >= 2.5x faster than the
#      rank-order ring, hierarchical >= 1.3x faster than the topology ring.
#   2. Tuner regret: topologies {1 host x 4, 2 hosts x 2 (cyclic), 4 hosts x 1}, sizes 8 B
#      ... 32 MiB in x4 steps and 64 MiB: every all-reduce algorithm and `auto` measured in
#      the same rounds; regret = time of the tuner's choice / fastest - 1 (target <= 10%; the
#      choice is read from `auto`'s JSON and timed in its forced entry, so every algorithm is
#      timed the same way; the `auto` entry's own regret is printed beside it); the model's
#      prediction for the chosen algorithm (ferrocoll-probe simulate) against the measured
#      time at >= 1 MiB (target within 25%), on the calibration the tuner chose with and on
#      the links measured through the run.
#
#   benches/topo_proof.sh [--short] [PATH/TO/ferrocoll-probe]
# --short (CI): SIZE 8 MiB, fewer sizes, 1 round, few iterations. In short mode only part 1's
# ratios decide the exit status; part 2's figures are printed without a verdict (no ok or
# MISS: with so few iterations its regret is mostly this machine's noise). TOPO_PROOF_PARTS="1" runs part 1 only (default "1 2");
# TOPO_PROOF_HOSTS="1" runs part 2 on some of its placements only (default "1 2 4").
# SPIN_US (default 0: idle ranks sleep at once) is passed as FERROCOLL_SPIN_US: with more
# ranks than cores, spinning ranks steal the CPU of the rank that has work.
# PIN_1HOST (default "none"): how the one-host placement's 4 ranks are bound to this
# machine's cores, as a launcher would bind them (`taskset`): "block" puts consecutive ranks
# on one core (2 cores: ranks 0,1 on core 0 and 2,3 on core 1), "cyclic" deals them
# round-robin (ranks 0,2 on core 0), "none" leaves them to the scheduler. Bound either way,
# the order of the algorithms is steadier between runs, but the model does not see which
# ranks share a core and prices both bindings alike (4 ranks, 2 MiB all-reduce, `--compare`:
# bound "block", halving-doubling measured fastest in every run; bound "cyclic", the ring
# did); so the proof leaves them unbound and measures the scheduler's spread instead, in
# JOBS independent jobs (below). Binding applies only when
# the machine has fewer than 4 CPUs (otherwise the ranks are not oversubscribed) and uses
# CPU ids 0 … nproc-1, so it assumes those are the ones this process may run on.
# Exit: 0 every target met, 1 a target missed or a run failed, 77 skipped (no namespaces).
set -u
SHORT=0
if [ "${1:-}" = --short ]; then SHORT=1; shift; fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PROBE=${1:-$ROOT/target/release/ferrocoll-probe}
[ -x "$PROBE" ] || { echo "no probe at $PROBE (cargo build --release --bin ferrocoll-probe)"; exit 1; }
# shellcheck source=../tests/netns/lib.sh
. "$ROOT/tests/netns/lib.sh"
if ! netns_supported; then echo "SKIP topo_proof: $NETNS_WHY"; exit 77; fi
OUT=$(mktemp -d)
trap 'netns_down; rm -rf "$OUT"' EXIT
export RATE_ALL=1
PARTS=${TOPO_PROOF_PARTS:-1 2}
# TOPO_PROOF_SIZE overrides part 1's all-reduce size (bytes); TOPO_PROOF_TARGETS its three
# targets (default the issue's "1.8 2.5 1.3"; the debug-build CI test uses lower floors).
TARGETS=${TOPO_PROOF_TARGETS:-1.8 2.5 1.3}
SPIN_US=${SPIN_US:-0}
PIN_1HOST=${PIN_1HOST:-none}
case $PIN_1HOST in block|cyclic|none) ;; *) echo "PIN_1HOST must be block, cyclic or none"; exit 1 ;; esac
NCPU=$(nproc)
# SMALL / LARGE: the probe's size flags below and above 1 MiB; EXTRA: one more size measured
# on its own (64 MiB is not 8 x 4^k); SIZES: all of them, for the simulator and the tables.
if [ $SHORT = 1 ]; then
  SIZE=$((8 << 20)); ITERS=2; ROUNDS=1; SMALL_ITERS=10; HOST1_ROUNDS=3; HOST1_ITERS=10
  SMALL_ROUNDS=3
  SMALL="-b 8 -e 32K -f 64"; LARGE="-b 2M -e 8M -f 4"; EXTRA=""
  SIZES="8 512 32768 2097152 8388608"
else
  # Small sizes take microseconds to milliseconds a call: 200 calls a round (20 left the
  # same algorithm measured twice 20% apart at 8 B), and the median of SMALL_ROUNDS (9)
  # rounds (with 3, two entries of one algorithm still differed by 20% at 8 B on 4 x 1).
  SIZE=$((64 << 20)); ITERS=2; ROUNDS=${ROUNDS:-3}; SMALL_ITERS=200; HOST1_ROUNDS=9; HOST1_ITERS=40
  SMALL_ROUNDS=${SMALL_ROUNDS:-9}
  SMALL="-b 8 -e 512K -f 4"; LARGE="-b 2M -e 32M -f 4"; EXTRA=67108864
  SIZES="8 32 128 512 2048 8192 32768 131072 524288 2097152 8388608 33554432 67108864"
fi
SIZE=${TOPO_PROOF_SIZE:-$SIZE}
# Part 2 measures each placement's rounds in JOBS separate jobs (rounds split evenly, at
# least one each) and pools them: 4 ranks on 2 cores settle differently in every job (which
# ranks share a core, in which order they wake), and that moves the algorithms' times
# against each other more than the rounds inside one job do — the ring and hierarchical,
# one schedule on one host, measured 12% apart in one job. Pooling several jobs' rounds
# samples that spread instead of drawing it once.
JOBS=${JOBS:-3}
[ $SHORT = 1 ] && JOBS=1
PORT=$(netns_port_base)
NAMES=(hostA hostB hostC hostD)

# topo_file HOSTS: the topology of 4 ranks dealt cyclically over HOSTS hosts (rank r on host
# r mod HOSTS), 1 Gbit between hosts, shared memory inside.
topo_file() {
  local h=$1 f="$OUT/topo$1.json"
  python3 - "$h" "$f" <<'EOF'
import json, sys
h, path = int(sys.argv[1]), sys.argv[2]
hosts = [{"name": f"host{chr(65 + i)}", "ranks": [r for r in range(4) if r % h == i]} for i in range(h)]
json.dump({"format": "ferrocoll-topology", "version": 1,
           "source": "benches/topo_proof.sh: netns hosts, tbf 1gbit on every veth, shm inside a host",
           "world_size": 4,
           "intra_host": {"latency_us": 2, "bandwidth_gbit_s": 40},
           "inter_host": {"latency_us": 60, "bandwidth_gbit_s": 1},
           "nic_gbit_s": 1, "hosts": hosts}, open(path, "w"), indent=1)
EOF
  echo "$f"
}

# run_job HOSTS TAG ENV… -- PROBE-ARGS…: 4 ranks, rank r on host r mod HOSTS; rank r's output
# in $OUT/TAG.r.
run_job() {
  local hosts=$1 tag=$2; shift 2
  local envs=() pids=() r rc=0
  while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
  PORT=$((PORT + 2))
  for r in 0 1 2 3; do
    local h=$((r % hosts)) bind=()
    if [ "$hosts" = 1 ] && [ "$PIN_1HOST" != none ] && [ "$NCPU" -lt 4 ]; then
      if [ "$PIN_1HOST" = block ]; then bind=(taskset -c $((r * NCPU / 4))); else bind=(taskset -c $((r % NCPU))); fi
    fi
    netns_exec $h "${NAMES[$h]}" "${bind[@]}" env RANK=$r WORLD_SIZE=4 LOCAL_RANK=$((r / hosts)) \
      LOCAL_WORLD_SIZE=$((4 / hosts)) MASTER_ADDR="$(netns_ip 0)" MASTER_PORT=$PORT \
      FERROCOLL_SOCKET_IFNAME=up0 FERROCOLL_TIMEOUT=120 FERROCOLL_SPIN_US="$SPIN_US" "${envs[@]}" \
      timeout 900 "$PROBE" "$@" >"$OUT/$tag.$r" 2>"$OUT/$tag.$r.err" &
    pids+=($!)
  done
  for r in 0 1 2 3; do
    wait "${pids[$r]}" || { rc=1; echo "rank $r of '$tag' failed:"; tail -5 "$OUT/$tag.$r.err"; }
  done
  return $rc
}

# links_job HOSTS K: one measurement of that placement's links (ferrocoll-probe links
# --save), saved as $OUT/measured$HOSTS.json.K.
links_job() {
  local h=$1 k=$2 bw=4M n=5
  # Inside one host the copies are cheap to measure and noisy: bigger messages, more calls.
  [ "$h" = 1 ] && { bw=16M; n=20; }
  run_job "$h" "links.$h.$k" FERROCOLL_TOPO_FILE="$(topo_file "$h")" -- links --bw-bytes $bw -n $n \
    -w 2 --save "$OUT/measured$h.json.$k" >&2
}

# merge_links HOSTS OUTFILE LABEL: the median of every figure over all of the placement's
# link measurements saved so far, written to OUTFILE as a topology file; prints what it kept.
merge_links() {
  python3 - "$OUT/measured$1.json" "$1" "$(nproc)" "$2" "$3" >&2 <<'EOF'
import glob, json, statistics, sys
base, hosts, cores, path, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{base}.*"), key=lambda f: int(f.rsplit(".", 1)[1]))]
d = runs[0]
for part in ("intra_host", "inter_host"):
    for key in ("latency_us", "bandwidth_gbit_s"):
        if all(key in r.get(part, {}) for r in runs):
            d[part][key] = statistics.median(r[part][key] for r in runs)
# Per host pair likewise (the same pairs in the same order in every run), and each host's
# loaded rate (every rank sending at once).
for i, link in enumerate(d.get("host_links", [])):
    for key in ("latency_us", "bandwidth_gbit_s"):
        link[key] = statistics.median(r["host_links"][i][key] for r in runs)
for i, host in enumerate(d["hosts"]):
    got = [r["hosts"][i]["intra_total_gbit_s"] for r in runs if "intra_total_gbit_s" in r["hosts"][i]]
    if got:
        host["intra_total_gbit_s"] = statistics.median(got)
# The emulated hosts share this machine's cores, but each namespace's ranks discover the
# whole affinity mask, so the saved file says every host has all of them. Declare each
# host's share instead (2 hosts on 2 cores: 1 core for 2 ranks, so the model prices the
# hand-offs that 4 ranks on 2 cores cost; 4 hosts: at least 1).
if hosts > 1:
    for host in d["hosts"]:
        host["cores"] = max(1, cores // hosts)
json.dump(d, open(path, "w"), indent=1)
i, o = d["intra_host"], d["inter_host"]
def loaded(r):
    got = [h["intra_total_gbit_s"] for h in r["hosts"] if "intra_total_gbit_s" in h]
    return f" ({'/'.join(f'{g:.0f}' for g in got)} all at once)" if got else ""
print(f"   {label}, {len(runs)} measurement(s): " + "; ".join(
    f"{r['intra_host']['latency_us']:.1f} us {r['intra_host']['bandwidth_gbit_s']:.1f} Gbit/s inside{loaded(r)}, "
    f"{r['inter_host']['latency_us']:.1f} us {r['inter_host']['bandwidth_gbit_s']:.2f} Gbit/s between"
    for r in runs))
print(f"   {label}, medians: inside a host {i['latency_us']:.1f} us {i['bandwidth_gbit_s']:.2f} Gbit/s{loaded(d)}; "
      f"between hosts {o['latency_us']:.1f} us {o['bandwidth_gbit_s']:.2f} Gbit/s; "
      f"cores per host {[x.get('cores') for x in d['hosts']]}")
EOF
}

# calibrate HOSTS: measure the links of that placement three times and print the path of a
# topology file with the medians inside and between hosts, which carry this machine's real
# per-message costs into the cost model. Three, because single measurements of 4 ranks on
# 2 cores gave 75 to 143 Gbit/s inside a host, and the model inherits that spread.
calibrate() {
  local h=$1 k
  for k in 0 1 2; do links_job "$h" $k || return 1; done
  merge_links "$h" "$OUT/measured$h.json" calibration || return 1
  echo "$OUT/measured$h.json"
}

netns_up 4 1gbit || { echo "FAIL: could not create the namespaces"; exit 1; }
fail=0

if [[ " $PARTS " == *" 1 "* ]]; then
echo "== 1. 2 hosts x 2 ranks (cyclic), 1 Gbit, all-reduce of $SIZE bytes, $ROUNDS round(s)"
T2=$(calibrate 2) || { echo "FAIL: link calibration"; exit 1; }
for ((k = 0; k < ROUNDS; k++)); do
  for v in rank topology hierarchical; do
    case $v in
      rank) e=(FERROCOLL_RING_ORDER=rank); a=ring ;;
      topology) e=(FERROCOLL_RING_ORDER=topology); a=ring ;;
      hierarchical) e=(FERROCOLL_RING_ORDER=topology); a=hierarchical ;;
    esac
    run_job 2 "p1.$v.$k" FERROCOLL_TOPO_FILE="$T2" "${e[@]}" -- all_reduce -b $SIZE -e $SIZE \
      -n $ITERS -w 1 -c 1 -a 3 --algo $a --json "$OUT/p1.$v.$k.json" || fail=1
  done
done
python3 - "$OUT" "$ROUNDS" "$TARGETS" <<'EOF' || fail=1
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
need = [float(x) for x in sys.argv[3].split()]
def t(tag):
    d = json.load(open(f"{out}/{tag}.json"))
    assert d["ok"], f"{tag}: wrong results"
    r = d["rows"][0]
    return min(h["time_us"] for h in (r["out_of_place"], r["in_place"]) if h) / 1e6
m = {v: statistics.median(t(f"p1.{v}.{k}") for k in range(rounds)) for v in ("rank", "topology", "hierarchical")}
for v, s in m.items():
    print(f"   {v:>13}: {s:8.3f} s")
checks = [("topology ring vs rank ring", m["rank"] / m["topology"], need[0]),
          ("hierarchical vs rank ring", m["rank"] / m["hierarchical"], need[1]),
          ("hierarchical vs topology ring", m["topology"] / m["hierarchical"], need[2])]
bad = 0
for name, x, need in checks:
    ok = x >= need
    bad |= not ok
    print(f"{'ok  ' if ok else 'MISS'} {name}: {x:.2f}x (target >= {need}x)")
sys.exit(bad)
EOF

fi

if [[ " $PARTS " == *" 2 "* ]]; then
echo "== 2. tuner regret and model error (all-reduce, sizes: $SIZES)"
[ $SHORT = 1 ] && echo "   short mode: a round or three of few calls per size; the figures below are printed, not judged (the full proof holds them to the targets)"
# Every algorithm and `auto` run in one job per placement and size range (`--compare`):
# each size is measured in rounds that visit every algorithm in turn, so all of them meet
# the machine's same fast and slow spells (separate jobs per algorithm measured the same
# algorithm up to 20% apart on one host). Small sizes: many calls, SMALL_ROUNDS rounds (cheap);
# large sizes: across 1 Gbit ROUNDS rounds of one call (a 64 MiB direct all-reduce takes
# seconds per call); inside one host calls take milliseconds and 4 ranks sharing 2 cores
# are noisy: HOST1_ROUNDS (9, at least ROUNDS) rounds of HOST1_ITERS (40) calls.
#
# Two more steps, both because 4 ranks on 2 cores are noisy (a round of 40 calls of the same
# 2 MiB all-reduce took 0.77 to 1.87 ms, and the ring / halving-doubling ratio of one
# round 0.53 to 1.39 within one job):
# - Refinement: after the first pass, every size where two or more algorithms came within
#   CONTEND (20%) of the fastest, or the choice is not the fastest, gets REFINE (2) times its
#   first pass's rounds again, for those algorithms only, pooled with the first pass. The
#   rule looks at the first pass's medians only, not at whether the choice met its target,
#   and every contender gets the same rounds: it buys precision where the comparison is
#   close, the way one would settle any close benchmark.
# - Links measured during the run: after every first-pass job the links are measured once
#   more. The tuner chooses on the calibration made before (as a job would, from a topology
#   file measured beforehand); the model's error is judged on the median of all the link
#   measurements of the placement, which describe the machine over the minutes the
#   collectives ran, not over the few seconds before them (single calibrations on one host
#   ranged 77-143 Gbit/s between runs while the collectives moved the other way). The error
#   of the tuner's own prediction, on the calibration alone, is printed beside it, and both
#   are held to the target.
P2_HOSTS=${TOPO_PROOF_HOSTS:-1 2 4}
ALGOS=auto,ring,tree,halving_doubling,direct,hierarchical
CONTEND=${CONTEND:-0.20}
REFINE=${REFINE:-2}
# Short mode refines once (the path is exercised; its few calls settle nothing).
[ $SHORT = 1 ] && REFINE=1
# The analysis, shared by the refinement step and the final table.
cat >"$OUT/p2.py" <<'EOF'
import glob, json, statistics, sys
ALGOS = ["ring", "tree", "halving_doubling", "direct", "hierarchical"]
def rows(out, hosts):
    # Every row of the placement's compared runs (first pass and refinement), by (entry,
    # size), the rounds of all its jobs pooled. Every job loads the same topology file, so
    # `auto` must choose alike in all.
    got = {}
    for path in sorted(glob.glob(f"{out}/p2[slxr].{hosts}.*json")):
        for r in json.load(open(path))["rows"]:
            k = (r["entry"], r["size"])
            if k not in got:
                got[k] = r
                continue
            assert got[k]["algorithm"] == r["algorithm"], f"{k}: jobs chose differently"
            for side in ("out_of_place", "in_place"):
                got[k][side]["rounds_us"] += r[side]["rounds_us"]
    return got
def secs(r):
    # Per round the better of out-of-place and in-place; the median over the rounds.
    o, i = r["out_of_place"]["rounds_us"], r["in_place"]["rounds_us"]
    return statistics.median(min(a, b) for a, b in zip(o, i)) / 1e6
def medians(got):
    med = {}
    for (entry, size), r in got.items():
        med.setdefault(size, {})[entry] = secs(r)
    chosen = {size: r["algorithm"] for (entry, size), r in got.items() if entry == "auto"}
    return med, chosen
def contenders(out, hosts, contend):
    # "SIZE ALGO,ALGO…" for every size whose comparison is close (module comment above).
    med, chosen = medians(rows(out, hosts))
    for size in sorted(med):
        m = {a: med[size][a] for a in ALGOS if a in med[size]}
        best = min(m.values())
        close = [a for a in ALGOS if a in m and (m[a] <= best * (1 + contend) or a == chosen[size])]
        if len(close) > 1:
            print(size, ",".join(close))
def predictions(path):
    # Predicted seconds per (size, algorithm) from a simulator table.
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
    pred = {}
    for line in open(path):
        if line.lstrip().startswith("#") or not line.strip():
            continue
        f = line.split()
        cells, vals, i = f[1:], [], 0
        for _ in ALGOS:
            if cells[i] == "-":
                vals.append(None); i += 1
            else:
                vals.append(float(cells[i]) * unit[cells[i + 1]]); i += 2
        pred[int(f[0])] = dict(zip(ALGOS, vals))
    return pred
def report(out, sizes, placements, short):
    # The full proof judges each figure against its target (ok / MISS, and the exit status);
    # short mode prints the figures alone: with so few calls they are this machine's noise.
    def verdict(ok):
        return "     " if short else ("ok   " if ok else "MISS ")
    def target(t):
        return f"the full proof's target {t}" if short else f"target {t}"
    bad = 0
    worst_regret, worst_err, worst_pre, worst_auto = 0.0, 0.0, 0.0, 0.0
    for hosts in placements:
        pred, pre = predictions(f"{out}/sim{hosts}.run.txt"), predictions(f"{out}/sim{hosts}.txt")
        med, chosen = medians(rows(out, hosts))
        print(f"-- {hosts} host(s) x {4 // hosts} rank(s)")
        print(f"   {'size':>9} {'auto (choice)':>17} " + " ".join(f"{a:>16}" for a in ALGOS)
              + "   regret  (auto)  model (calib.)")
        for s in sizes:
            m = med[s]
            best = min(m[a] for a in ALGOS)
            c = chosen[s]
            # Regret of the choice: the chosen algorithm's time against the fastest, all from
            # the forced entries of the same rounds. The `auto` entry itself is printed beside.
            regret = m[c] / best - 1
            auto_regret = m["auto"] / best - 1
            worst_regret = max(worst_regret, regret)
            worst_auto = max(worst_auto, auto_regret)
            err = ""
            if s >= 1 << 20:
                e, e0 = pred[s][c] / m[c] - 1, pre[s][c] / m[c] - 1
                worst_err, worst_pre = max(worst_err, abs(e)), max(worst_pre, abs(e0))
                err = f"{e:+.0%} ({e0:+.0%})"
                bad |= abs(e) > 0.25 or abs(e0) > 0.25
            bad |= regret > 0.10
            cells = " ".join(f"{m[a] * 1e6:16.1f}" for a in ALGOS)
            print(f"   {s:>9} {c:>8}{m['auto'] * 1e6:9.1f} {cells} {regret:7.1%} {auto_regret:7.1%} {err:>14}")
    print(f"{verdict(worst_regret <= 0.10)}worst tuner regret {worst_regret:.1%} ({target('<= 10%')})")
    print(f"     worst regret of the auto entry {worst_auto:.1%} (not gated: the same algorithm as its choice, measured again)")
    print(f"{verdict(worst_err <= 0.25)}worst model error at >= 1 MiB {worst_err:.0%} ({target('<= 25%')};"
          f" links measured through the run)")
    print(f"{verdict(worst_pre <= 0.25)}worst model error at >= 1 MiB on the calibration"
          f" before the run (the tuner's own prediction) {worst_pre:.0%} ({target('<= 25%')})")
    return 0 if short else bad
if sys.argv[1] == "contenders":
    contenders(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
else:
    sys.exit(report(sys.argv[2], [int(s) for s in sys.argv[3].split()], [int(h) for h in sys.argv[4].split()],
                    sys.argv[5] == "1"))
EOF
# measure HOSTS TAG ROUNDS ENTRIES PROBE-ARGS…: ENTRIES compared over ROUNDS rounds, split
# over JOBS jobs whose JSON files are $OUT/TAG.J.json. With RECAL=1 the links are measured
# after every job (LINKS_K numbers the saved files).
measure() {
  local hosts=$1 tag=$2 rounds=$3 entries=$4 j per rc=0; shift 4
  per=$(( (rounds + JOBS - 1) / JOBS ))
  for ((j = 0; j < JOBS; j++)); do
    run_job "$hosts" "$tag.$j" FERROCOLL_TOPO_FILE="$T" -- all_reduce "$@" -c 0 -a 3 \
      --compare "$entries" --rounds $per --json "$OUT/$tag.$j.json" || rc=1
    if [ "${RECAL:-0}" = 1 ]; then links_job "$hosts" $LINKS_K || rc=1; LINKS_K=$((LINKS_K + 1)); fi
  done
  return $rc
}
for hosts in $P2_HOSTS; do
  T=$(calibrate $hosts) || { fail=1; continue; }
  # shellcheck disable=SC2086
  "$PROBE" simulate --topo "$T" all_reduce $SIZES >"$OUT/sim$hosts.txt" || fail=1
  sed 's/^/   /' "$OUT/sim$hosts.txt"
  RECAL=1; LINKS_K=3
  # shellcheck disable=SC2086
  measure $hosts p2s.$hosts $SMALL_ROUNDS $ALGOS $SMALL -n $SMALL_ITERS -w 2 || fail=1
  if [ "$hosts" = 1 ]; then
    lrounds=$((ROUNDS > HOST1_ROUNDS ? ROUNDS : HOST1_ROUNDS)); liters=$HOST1_ITERS
  else
    # Across 1 Gbit a large call takes 0.1-2 s: few calls, but ROUNDS rounds (one round
    # measured the ring and hierarchical, the same schedule on 4 hosts x 1, 15% apart).
    lrounds=$ROUNDS; liters=1
  fi
  # shellcheck disable=SC2086
  measure $hosts p2l.$hosts $lrounds $ALGOS $LARGE -n $liters -w 1 || fail=1
  if [ -n "$EXTRA" ]; then
    measure $hosts p2x.$hosts $lrounds $ALGOS -b $EXTRA -e $EXTRA -n $liters -w 1 || fail=1
  fi
  RECAL=0
  if [ "$REFINE" -gt 0 ]; then
    # Read first: the jobs below must not inherit the list as their standard input.
    mapfile -t close_sizes < <(python3 "$OUT/p2.py" contenders "$OUT" $hosts "$CONTEND")
    for line in "${close_sizes[@]}"; do
      read -r s close <<<"$line"
      if [ "$s" -lt $((1 << 20)) ]; then r=$((REFINE * SMALL_ROUNDS)); it=$SMALL_ITERS; w=2
      else r=$((REFINE * lrounds)); it=$liters; w=1; fi
      echo "   refining $s B: $close, $r more rounds"
      measure $hosts p2r.$hosts.$s $r "$close" -b "$s" -e "$s" -n $it -w $w || fail=1
    done
  fi
  merge_links $hosts "$OUT/measured$hosts.run.json" "links through the run" || fail=1
  # shellcheck disable=SC2086
  "$PROBE" simulate --topo "$OUT/measured$hosts.run.json" all_reduce $SIZES >"$OUT/sim$hosts.run.txt" || fail=1
done
python3 "$OUT/p2.py" report "$OUT" "$SIZES" "$P2_HOSTS" $SHORT || fail=1
fi
exit $fail
