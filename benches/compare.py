#!/usr/bin/env python3
"""ferrocoll side by side with Open MPI and torch's Gloo, in one run (issue 5).

For every configuration (ranks x transport) and repetition, the three libraries run one
after the other (alternating, so drifting machine load hits them alike), then the table shows
medians (min-max) and ratios. Measured: 8 B all-reduce latency (us) and bus bandwidth (GB/s,
nccl-tests definition) at 1, 16, 64, 256 MiB for all-reduce, all-gather, reduce-scatter; f32
sum, out-of-place, time = max over ranks of the mean per-call time (all three drivers agree).
The machine's memcpy / a+b bandwidth and loopback TCP stream rate are measured in the same run
(`memlimit`) and each case's bound is printed beside it (derivations in PERFORMANCE.md).

    bash benches/setup_peers.sh          # once: Open MPI, torch (Gloo), the drivers
    python3 benches/compare.py [--reps 3] [--ranks 2,4] [--transports shm,tcp]
                               [--sizes 1M,16M,64M,256M] [--md FILE] [--json FILE]

The drivers' sources are in benches/peers/ (mpi_coll.c, torch_gloo_coll.py, memlimit.c);
setup_peers.sh builds them into target/peers/, and a missing binary is built here from its
source when mpicc / gcc are present. A peer that is not installed (no mpirun, no torch) is
skipped with a message. The raw run (every repetition's value, the limits, the targets) is
written as JSON to benches/results/<date>-compare.json unless --json names another file
(--json '' writes none). Exit status 1 when a target ratio of issue 5 fails.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_BUILD = os.path.join(ROOT, "target", "peers")  # where benches/setup_peers.sh builds the drivers
PEERS_VENV = (os.environ.get("PEERS_VENV") or os.environ.get("FERROCOLL_VENV")
              or os.path.expanduser("~/.cache/ferrocoll/venv"))
COLLS = [("all_reduce", "allreduce"), ("all_gather", "allgather"), ("reduce_scatter", "reducescatter")]


def size_arg(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1].upper()] if s[-1].upper() in mult else int(s)


def human(b):
    for unit, m in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if b >= m and b % m == 0:
            return f"{b // m}{unit}"
    return f"{b}B"


def run(cmd, env=None, timeout=900):
    e = dict(os.environ)
    e.update(env or {})
    t0 = time.time()
    p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.stderr.write(f"! {' '.join(cmd)} failed ({p.returncode}, {time.time()-t0:.0f}s):\n{p.stdout[-2000:]}{p.stderr[-2000:]}\n")
        return None
    return p.stdout


def parse_peer_table(text):
    """Rows of mpi_coll / torch_gloo_coll: {(op, size): (time_us, busbw)}."""
    out, op = {}, None
    for line in text.splitlines():
        m = re.match(r"#\s*op=(\w+)", line)
        if m:
            op = m.group(1)
            continue
        if line.startswith("#") or not line.strip() or op is None:
            continue
        f = line.split()
        try:
            out[(op, int(f[0]))] = (float(f[4]), float(f[6]))
        except (ValueError, IndexError):
            pass
    return out


class Bench:
    def __init__(self, a):
        self.a = a
        self.sizes = [size_arg(s) for s in a.sizes.split(",")]
        self.results = {}  # (lib, transport, n, metric) -> [values]
        self.skipped = []
        self.tmp = tempfile.mkdtemp(prefix="fc-compare-")
        self.started = time.gmtime()
        self.probe = a.probe or os.path.join(ROOT, "target", "release", "ferrocoll-probe")
        self.mpi = self.find_mpi()
        self.gloo = self.find_gloo()

    def find_mpi(self):
        if not shutil.which("mpirun"):
            self.skipped.append("Open MPI: mpirun not installed (run bash benches/setup_peers.sh)")
            return None
        exe = os.path.join(PEER_BUILD, "mpi_coll")
        if os.access(exe, os.X_OK):
            return exe
        src = os.path.join(self.a.peers, "mpi_coll.c")
        if shutil.which("mpicc") and os.path.exists(src):
            exe = os.path.join(self.tmp, "mpi_coll")
            if subprocess.run(["mpicc", "-O2", "-o", exe, src]).returncode == 0:
                return exe
        self.skipped.append(f"Open MPI: no mpi_coll binary or source under {self.a.peers}")
        return None

    def find_gloo(self):
        script = os.path.join(self.a.peers, "torch_gloo_coll.py")
        for venv in (PEERS_VENV, os.environ.get("FERROCOLL_VENV")):
            py = venv and os.path.join(venv, "bin", "python")
            if py and os.access(py, os.X_OK) and os.path.exists(script):
                if subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0:
                    return (py, script)
        self.skipped.append(f"Gloo: no Python with torch in {PEERS_VENV} (run bash benches/setup_peers.sh) or no torch_gloo_coll.py")
        return None

    def add(self, lib, t, n, metric, v):
        if v is not None and v > 0:
            self.results.setdefault((lib, t, n, metric), []).append(v)

    # ---- the three drivers -------------------------------------------------------------
    def ferro(self, t, n):
        env = {"FERROCOLL_TRANSPORT": t, "FERROCOLL_TIMEOUT": "120"}
        js = os.path.join(self.tmp, "f.json")
        common = [self.probe]
        # -a 3: the slowest rank's time, as the peers' drivers report it.
        np_ = ["--np", str(n), "-a", "3"]
        # About 0.3 s of calls, like the peers' drivers (a few thousand 2 µs calls measure
        # the first calls' cache and wake-up misses, not the steady state).
        lat_iters = self.a.lat_iters or (150000 if t == "shm" else 15000)
        if run(common + ["all_reduce"] + np_ + ["-b", "8", "-e", "8", "-n", str(lat_iters), "-w", "1000", "-c", "1", "--json", js], env):
            rows = json.load(open(js))["rows"]
            self.add("ferrocoll", t, n, "lat8", rows[0]["out_of_place"]["time_us"])
        for coll, name in COLLS:
            for s in self.sizes:
                # About as many calls as the peers make in their 0.3 s target (few calls
                # measure start-up effects, not the steady state).
                iters = max(5, min(1000, int(3e9 / s)))
                if run(common + [coll] + np_ + ["-b", str(s), "-e", str(s), "-n", str(iters), "-w", "2", "-c", "1", "--json", js], env):
                    row = json.load(open(js))["rows"][0]
                    self.add("ferrocoll", t, n, (name, s), row["out_of_place"]["busbw_gbps"])

    def peer_sizes(self):
        return ",".join(["8"] + [str(s) for s in self.sizes])

    def record_peer(self, lib, t, n, table):
        for (op, size), (us, busbw) in table.items():
            if op == "allreduce" and size == 8:
                self.add(lib, t, n, "lat8", us)
            elif size in self.sizes:
                self.add(lib, t, n, (op, size), busbw)

    def run_mpi(self, t, n):
        btl = ["--mca", "btl", "vader,self"] if t == "shm" else ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]
        cmd = ["mpirun", "--allow-run-as-root", "-n", str(n)] + (["--oversubscribe"] if n > 2 else [])
        cmd += btl + ["--mca", "oob_tcp_if_include", "lo", self.mpi, "-s", self.peer_sizes(), "-t", str(self.a.target)]
        out = run(cmd, {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
        if out:
            self.record_peer("Open MPI", t, n, parse_peer_table(out))

    def run_gloo(self, n):
        py, script = self.gloo
        out = run([py, script, "-n", str(n), "-s", self.peer_sizes(), "-t", str(self.a.target)], {"OMP_NUM_THREADS": "1"})
        if out:
            self.record_peer("Gloo", "tcp", n, parse_peer_table(out))

    def limits(self):
        lim = {}
        exe = os.path.join(PEER_BUILD, "memlimit")
        src = os.path.join(self.a.peers, "memlimit.c")
        if not os.access(exe, os.X_OK) and shutil.which("gcc") and os.path.exists(src):
            # Not built by setup_peers.sh: build it here, as setup_peers.sh would.
            exe = os.path.join(self.tmp, "memlimit")
            if subprocess.run(["gcc", "-O3", "-march=native", "-pthread", "-o", exe, src]).returncode != 0:
                exe = ""
        if not exe or not os.access(exe, os.X_OK):
            self.skipped.append("memlimit: not built and no source to build it from (bash benches/setup_peers.sh builds it)")
            return lim
        out = run([exe, "mem", "256", "5"]) or ""
        for key, pat in (("memcpy", r"memcpy 1 thread\s+\S+\s+(\S+)"), ("memcpy2", r"memcpy 2 threads\s+\S+\s+(\S+)"),
                         ("add", r"a\+b 1 thread\s+\S+\s+(\S+)"), ("add2", r"a\+b 2 threads\s+\S+\s+(\S+)")):
            m = re.search(pat, out)
            if m:
                lim[key] = float(m.group(1))
        out = run([exe, "tcp", "1024"]) or ""
        m = re.search(r"single connection: (\S+) GB/s", out)
        if m:
            lim["tcp"] = float(m.group(1))
        return lim

    def go(self):
        if not os.access(self.probe, os.X_OK):
            subprocess.run(["cargo", "build", "--release", "--bin", "ferrocoll-probe"], cwd=ROOT, check=True)
        self.lim = self.limits()
        confs = [(n, t) for n in map(int, self.a.ranks.split(",")) for t in self.a.transports.split(",")]
        for rep in range(self.a.reps):
            for n, t in confs:
                print(f"[{time.strftime('%H:%M:%S')}] rep {rep + 1}/{self.a.reps}: {n} ranks {t}", file=sys.stderr, flush=True)
                self.ferro(t, n)
                if self.mpi:
                    self.run_mpi(t, n)
                if self.gloo and t == "tcp":
                    self.run_gloo(n)
        return confs

    # ---- report ------------------------------------------------------------------------
    def med(self, lib, t, n, metric):
        v = self.results.get((lib, t, n, metric))
        return (statistics.median(v), min(v), max(v)) if v else None

    def bound(self, t, n, metric):
        """Upper bound on busbw from the limits measured in this run (derivation in PERFORMANCE.md).

        shm, the whole machine (2 cores, one memory system; 2-thread rates a2, m2):
          all-reduce: (n-1)S element additions and (n-1)S copied bytes in all -> 2/n / (1/a2 + 1/m2)
          all-gather: n*S bytes written (out-of-place output)                -> (n-1)/n^2 * m2
          reduce-scatter: (n-1)S additions                                   -> a2 / n
        tcp: busbw equals the rate at which each rank sends; n senders share the one-stream
          loopback rate measured by memlimit                                  -> tcp * min(1, 2/n)
        """
        lim = self.lim
        if metric == "lat8":
            return None
        op, _ = metric
        if t == "tcp":
            return lim.get("tcp") and lim["tcp"] * min(1.0, 2.0 / n)
        a2, m2 = lim.get("add2"), lim.get("memcpy2")
        if not a2 or not m2:
            return None
        if op == "allreduce":
            return 2.0 / n / (1.0 / a2 + 1.0 / m2)
        if op == "allgather":
            return (n - 1) / n**2 * m2
        return a2 / n

    def table(self, confs):
        fmt = lambda m: "–" if m is None else (f"{m[0]:.2f} ({m[1]:.2f}–{m[2]:.2f})")
        lines = [f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {self.a.reps} repetitions, "
                 f"machine: {os.uname().nodename} {os.cpu_count()} CPUs, kernel {os.uname().release}",
                 "", "Physical limits measured in this run (GB/s, median of 5): " + ", ".join(f"{k} {v:.2f}" for k, v in self.lim.items()),
                 "", "| ranks | transport | metric | ferrocoll | Open MPI | Gloo | × MPI | × Gloo | bound | % of bound |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        metrics = ["lat8"] + [(op, s) for _, op in COLLS for s in self.sizes]
        for n, t in confs:
            for metric in metrics:
                f, m, g = (self.med(lib, t, n, metric) for lib in ("ferrocoll", "Open MPI", "Gloo"))
                lat = metric == "lat8"
                name = "all-reduce 8 B latency (µs)" if lat else f"{metric[0]} {human(metric[1])} busbw (GB/s)"
                ratio = lambda p: "–" if (f is None or p is None) else f"{(p[0] / f[0] if lat else f[0] / p[0]):.2f}"
                b = self.bound(t, n, metric)
                pct = "–" if (b is None or f is None) else f"{100 * f[0] / b:.0f}%"
                lines.append(f"| {n} | {t} | {name} | {fmt(f)} | {fmt(m)} | {fmt(g)} | {ratio(m)} | {ratio(g)} | "
                             f"{'–' if b is None else f'{b:.2f}'} | {pct} |")
        return lines

    def targets(self):
        """Issue 5's ratios: (description, holds?)."""
        def r(lib, t, n, metric):
            f, p = self.med("ferrocoll", t, n, metric), self.med(lib, t, n, metric)
            return None if f is None or p is None else f[0] / p[0]
        M = 1 << 20
        checks = [("shm all-reduce 2 ranks 64 MiB ≥ 3.0× Open MPI", r("Open MPI", "shm", 2, ("allreduce", 64 * M)), 3.0),
                  ("shm all-reduce 2 ranks 1 MiB ≥ 1.2× Open MPI", r("Open MPI", "shm", 2, ("allreduce", M)), 1.2),
                  ("shm all-gather 2 ranks 64 MiB ≥ 1.5× Open MPI", r("Open MPI", "shm", 2, ("allgather", 64 * M)), 1.5),
                  ("shm reduce-scatter 2 ranks 64 MiB ≥ 1.5× Open MPI", r("Open MPI", "shm", 2, ("reducescatter", 64 * M)), 1.5),
                  ("tcp all-reduce 2 ranks 64 MiB ≥ 1.15× Gloo", r("Gloo", "tcp", 2, ("allreduce", 64 * M)), 1.15),
                  ("tcp all-reduce 2 ranks 64 MiB ≥ 1.5× Open MPI", r("Open MPI", "tcp", 2, ("allreduce", 64 * M)), 1.5),
                  ("shm all-reduce 4 ranks 64 MiB ≥ 2× Open MPI", r("Open MPI", "shm", 4, ("allreduce", 64 * M)), 2.0)]
        out = [(d, v, v is not None and v >= goal) for d, v, goal in checks]
        lat = self.med("ferrocoll", "shm", 2, "lat8")
        out.append(("shm all-reduce 2 ranks 8 B latency ≤ 2 µs", lat and lat[0], lat is not None and lat[0] <= 2.0))
        return out

    def raw(self, confs):
        """The run as data (format of benches/results/*.json, described in PERFORMANCE.md)."""
        def entry(lib, t, n, metric):
            v = self.results.get((lib, t, n, metric))
            if not v:
                return None
            return {"median": statistics.median(v), "min": min(v), "max": max(v), "values": v}
        rows = []
        metrics = ["lat8"] + [(op, s) for _, op in COLLS for s in self.sizes]
        for n, t in confs:
            for metric in metrics:
                lat = metric == "lat8"
                row = {"ranks": n, "transport": t,
                       "collective": "allreduce" if lat else metric[0],
                       "size_bytes": 8 if lat else metric[1],
                       "metric": "latency_us" if lat else "busbw_gbps"}
                b = self.bound(t, n, metric)
                if b is not None:
                    row["bound_gbps"] = b
                for key, lib in (("ferrocoll", "ferrocoll"), ("open_mpi", "Open MPI"), ("gloo", "Gloo")):
                    e = entry(lib, t, n, metric)
                    if e is not None:
                        row[key] = e
                rows.append(row)
        try:
            commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                                    text=True).stdout.strip() or None
        except OSError:
            commit = None
        doc = {"format": "ferrocoll-compare/1",
               "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", self.started),
               "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": " ".join(["python3"] + sys.argv),
               "machine": {"nodename": os.uname().nodename, "cpus": os.cpu_count(), "kernel": os.uname().release},
               "repetitions": self.a.reps,
               "limits_gbps": self.lim,
               "rows": rows,
               "targets": [{"target": d, "value": v, "pass": bool(h)} for d, v, h in self.targets()],
               "skipped": self.skipped}
        if commit:
            doc["commit"] = commit
        return doc


def default_json_path():
    """benches/results/<UTC date>-compare.json; -2, -3, ... when that name is taken."""
    d = os.path.join(ROOT, "benches", "results")
    os.makedirs(d, exist_ok=True)
    base = os.path.join(d, time.strftime("%Y-%m-%d", time.gmtime()) + "-compare")
    path, k = base + ".json", 2
    while os.path.exists(path):
        path, k = f"{base}-{k}.json", k + 1
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default=os.path.join(ROOT, "benches", "peers"),
                   help="folder of the peers' driver sources (default benches/peers)")
    p.add_argument("--probe", help="ferrocoll-probe binary (default: target/release, built if missing)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ranks", default="2,4")
    p.add_argument("--transports", default="shm,tcp")
    p.add_argument("--sizes", default="1M,16M,64M,256M")
    p.add_argument("--lat-iters", type=int, default=None,
                   help="8 B all-reduce calls timed (default about 0.3 s: 150000 on shm, 15000 on tcp)")
    p.add_argument("--target", type=float, default=0.3, help="peer drivers: seconds per size")
    p.add_argument("--md", help="also write the table (markdown) to this file")
    p.add_argument("--json", default=None,
                   help="raw run as JSON (default benches/results/<date>-compare.json; '' for none)")
    a = p.parse_args()
    b = Bench(a)
    for s in b.skipped:
        print(f"SKIP {s}", file=sys.stderr)
    confs = b.go()
    lines = b.table(confs)
    lines += ["", "Targets (issue 5), medians of this run:"]
    ok = True
    for d, v, holds in b.targets():
        ok &= holds
        lines.append(f"- {'PASS' if holds else 'FAIL'} {d}: {'n/a' if v is None else f'{v:.2f}'}")
    if b.skipped:
        lines += ["", "Skipped: " + "; ".join(b.skipped)]
    text = "\n".join(lines)
    print(text)
    if a.md:
        open(a.md, "w").write(text + "\n")
    path = default_json_path() if a.json is None else a.json
    if path:
        with open(path, "w") as f:
            json.dump(b.raw(confs), f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"raw results: {os.path.relpath(path)}", file=sys.stderr)
    shutil.rmtree(b.tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
