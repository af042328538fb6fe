#!/usr/bin/env python3
"""A/B of two ferrocoll-probe builds over the speed cases of PERFORMANCE.md.

Usage: python3 benches/ab_probe.py BEFORE_PROBE AFTER_PROBE [--rounds 5] [--json FILE]

Builds a commit into a second target directory first, for example:
    git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release --bin ferrocoll-probe)
    cargo build --release --bin ferrocoll-probe
    python3 benches/ab_probe.py /tmp/before/target/release/ferrocoll-probe target/release/ferrocoll-probe

Each round runs every case with both builds back to back (the order alternating between
rounds), so the machine's drift falls on both alike. The figure of a case is the probe's
own: the 8-byte all-reduce's time (lower is better) or the bus bandwidth (higher is better),
out of place, the slowest rank's (-a 3). The ratio is after/before in speed (a time ratio is
inverted), per round; the table quotes each side's median and the median, minimum and
maximum of the per-round ratios. Raw figures go to benches/results/<date>-ab.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, transport, ranks, collective, bytes, iterations)
CASES = [
    ("all_reduce 8 B latency (us)", "shm", 2, "all_reduce", 8, 150000),
    ("all_reduce 1 MiB busbw (GB/s)", "shm", 2, "all_reduce", 1 << 20, 1000),
    ("all_reduce 64 MiB busbw (GB/s)", "shm", 2, "all_reduce", 64 << 20, 44),
    ("all_gather 64 MiB busbw (GB/s)", "shm", 2, "all_gather", 64 << 20, 44),
    ("reduce_scatter 64 MiB busbw (GB/s)", "shm", 2, "reduce_scatter", 64 << 20, 44),
    ("tcp all_reduce 64 MiB busbw (GB/s)", "tcp", 2, "all_reduce", 64 << 20, 20),
    ("4 ranks all_reduce 64 MiB busbw (GB/s)", "shm", 4, "all_reduce", 64 << 20, 20),
]


def measure(probe, case, tmp):
    """The probe's figure for `case`, or None when the run failed."""
    name, transport, ranks, coll, size, iters = case
    out = os.path.join(tmp, "row.json")
    cmd = [probe, coll, "--np", str(ranks), "-a", "3", "-b", str(size), "-e", str(size),
           "-n", str(iters), "-w", "1000" if size == 8 else "2", "-c", "1", "--json", out]
    env = dict(os.environ, FERROCOLL_TRANSPORT=transport, FERROCOLL_TIMEOUT="120")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.stderr.write(f"! {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}\n")
        return None
    row = json.load(open(out))["rows"][0]["out_of_place"]
    return row["time_us"] if size == 8 else row["busbw_gbps"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="where to write the raw run (default benches/results/<date>-ab.json; '' for none)")
    a = ap.parse_args()
    raw = {c[0]: {"before": [], "after": [], "ratio": []} for c in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for case in CASES:
                order = [("before", a.before), ("after", a.after)]
                if r % 2:
                    order.reverse()
                got = {}
                for side, probe in order:
                    got[side] = measure(probe, case, tmp)
                if None in got.values():
                    continue
                d = raw[case[0]]
                d["before"].append(got["before"])
                d["after"].append(got["after"])
                lower_better = case[4] == 8
                d["ratio"].append(got["before"] / got["after"] if lower_better else got["after"] / got["before"])
                print(f"[{time.strftime('%H:%M:%S')}] round {r + 1}/{a.rounds} {case[0]}: "
                      f"before {got['before']:.3f} after {got['after']:.3f}", file=sys.stderr, flush=True)
    print("| case | before (median) | after (median) | after/before speed: median (min–max) | rounds |")
    print("|---|---|---|---|---|")
    ok = True
    for name, d in raw.items():
        if not d["ratio"]:
            print(f"| {name} | – | – | no complete round | 0 |")
            ok = False
            continue
        m = statistics.median(d["ratio"])
        ok &= m >= 0.95
        print(f"| {name} | {statistics.median(d['before']):.3f} | {statistics.median(d['after']):.3f} | "
              f"{m:.3f} ({min(d['ratio']):.3f}–{max(d['ratio']):.3f}) | {len(d['ratio'])} |")
    print(f"\nEvery case's median ratio >= 0.95: {'yes' if ok else 'no'}")
    path = a.json
    if path is None:
        path = os.path.join(ROOT, "benches", "results", time.strftime("%Y-%m-%d") + "-ab.json")
    if path:
        doc = {"kind": "ab_probe", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": {"node": os.uname().nodename, "cpus": os.cpu_count(), "kernel": os.uname().release},
               "before": a.before, "after": a.after, "rounds": a.rounds,
               "cases": [{"name": c[0], "transport": c[1], "ranks": c[2], "collective": c[3], "bytes": c[4],
                          "iterations": c[5], **raw[c[0]]} for c in CASES]}
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"raw figures: {path}")


if __name__ == "__main__":
    main()
