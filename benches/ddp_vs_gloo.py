"""DDP step time with the "ferrocoll" torch backend against "gloo" on the same model, and the
share of ferrocoll's communication hidden behind the backward pass (issue 26, "Measured").

    python3 benches/ddp_vs_gloo.py [--ranks 2 4] [--rounds 6] [--steps 5] [--layers 4 --hidden 2048] [--json FILE]

(`benches/ddp_vs_gloo.sh` builds the release library and runs it in the test suite's venv.)

Per world size, the ranks are processes on this machine (multiprocessing, spawn). Each makes
two process groups, gloo (the default group) and ferrocoll (`dist.new_group`), and two
DistributedDataParallel copies of one MLP with identical weights, one per group. Rounds
alternate the backends (gloo first in even rounds, ferrocoll first in odd ones); each round
runs `--steps` timed training steps per backend after `--warmup` untimed ones at the start.
A step is forward, backward (DDP all-reduces the gradient buckets during it) and an SGD step;
its time is rank 0's wall time, and every step starts from a barrier. The same steps without
DDP (no communication) give the compute time, so the communication's share of a gloo step is
1 - compute/gloo. A third DDP copy whose communication hook returns each bucket untouched
("ddp_no_comm") gives what DDP itself costs around the communication (copying gradients into
its buckets, scaled by 1/world, and back): no backend's step can be shorter. Each step also
records the process's CPU time (every thread), which tells a step that waits from one that
computes.

Overlap (ferrocoll): the backend records when each bucket's all-reduce is issued and when it
completes (`ProcessGroupFerrocoll.trace`); hooks on the parameters' gradients record when
backward computes its last gradient. Per step, communication time is the union of the
all-reduce intervals, and the hidden part is its overlap with [backward start, last gradient];
the share hidden is the sum of hidden time over the sum of communication time.

Raw results go to benches/results/<UTC date>-ddp.json (`--json ''`: none)."""

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(args):
    import torch.nn as nn

    layers, width = [], args.input
    for _ in range(args.layers):
        layers += [nn.Linear(width, args.hidden), nn.ReLU()]
        width = args.hidden
    layers.append(nn.Linear(width, args.classes))
    return nn.Sequential(*layers)


def union(intervals):
    """The intervals' union as a sorted list of disjoint intervals."""
    out = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def overlap_of(comm, lo, hi):
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in comm)


def rank_main(rank, world, port, args, q):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("FERROCOLL_SOCKET_IFNAME", "lo")
    try:
        import torch
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP

        import ferrocoll.torch as fct

        torch.set_num_threads(args.threads)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
        gloo = dist.group.WORLD
        fc = dist.new_group(backend="ferrocoll")
        fc_pg = fct._backend(fc)
        torch.manual_seed(0)
        base = make_model(args)
        models = {"gloo": DDP(make_model(args), process_group=gloo),
                  "ferrocoll": DDP(make_model(args), process_group=fc),
                  "compute": make_model(args),
                  "ddp_no_comm": DDP(make_model(args), process_group=gloo)}

        def no_comm(_state, bucket):
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        models["ddp_no_comm"].register_comm_hook(None, no_comm)
        for m in models.values():
            m.load_state_dict(base.state_dict() if not isinstance(m, DDP) else
                              {"module." + k: v for k, v in base.state_dict().items()})
        opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()}
        nparams = sum(p.numel() for p in base.parameters())
        gen = torch.Generator().manual_seed(rank)
        x = torch.randn(args.batch, args.input, generator=gen)
        y = torch.randint(0, args.classes, (args.batch,), generator=gen)
        loss_fn = torch.nn.CrossEntropyLoss()

        # Backward's last gradient: hooks on every parameter of every model.
        marks = {"last_grad": 0.0}

        def mark(_g):
            marks["last_grad"] = time.perf_counter()

        for m in models.values():
            for p in m.parameters():
                p.register_hook(mark)

        def step(kind):
            m, opt = models[kind], opts[kind]
            dist.barrier(group=gloo)
            if kind == "ferrocoll":
                fc_pg.trace = []
            c0 = time.process_time()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(x), y)
            tb = time.perf_counter()
            loss.backward()
            opt.step()
            t1 = time.perf_counter()
            rec = {"step_s": t1 - t0, "cpu_s": time.process_time() - c0,
                   "backward_start": tb - t0,
                   "last_grad": marks["last_grad"] - t0}
            if kind == "ferrocoll":
                calls = [(a - t0, b - t0) for what, a, b in fc_pg.trace if what == "all_reduce"]
                fc_pg.trace = None
                comm = union(calls)
                rec["comm_s"] = sum(b - a for a, b in comm)
                rec["hidden_s"] = overlap_of(comm, rec["backward_start"], rec["last_grad"])
                rec["buckets"] = len(calls)
            return rec

        kinds = ("gloo", "ferrocoll", "compute", "ddp_no_comm")
        for kind in kinds:
            for _ in range(args.warmup):
                step(kind)
        # The gradient's all-reduce alone, once per backend (what DDP moves per step).
        flat = torch.ones(nparams)
        alone = {}
        for kind, g in (("gloo", gloo), ("ferrocoll", fc)):
            times = []
            for _ in range(3):
                dist.barrier(group=gloo)
                t0 = time.perf_counter()
                dist.all_reduce(flat, group=g)
                times.append(time.perf_counter() - t0)
            alone[kind] = statistics.median(times)
        steps = {k: [] for k in kinds}
        for rnd in range(args.rounds):
            order = ["gloo", "ferrocoll"] if rnd % 2 == 0 else ["ferrocoll", "gloo"]
            for kind in order + ["compute", "ddp_no_comm"]:
                for _ in range(args.steps):
                    steps[kind].append(step(kind))
        # The two DDP copies trained on the same data: their weights must agree.
        for (ka, pa), (kb, pb) in zip(models["gloo"].named_parameters(),
                                      models["ferrocoll"].named_parameters()):
            if not torch.allclose(pa, pb, rtol=1e-4, atol=1e-6):
                raise AssertionError(f"gloo and ferrocoll DDP diverged at {ka}")
        dist.destroy_process_group(fc)
        dist.destroy_process_group()
        q.put((rank, {"steps": steps, "alone_s": alone, "params": nparams}, None))
    except BaseException:
        q.put((rank, None, traceback.format_exc()))


def run_world(world, args):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=rank_main, args=(r, world, port, args, q)) for r in range(world)]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in procs:
            rank, res, err = q.get(timeout=1800)
            if err:
                raise RuntimeError(f"rank {rank} failed:\n{err}")
            got[rank] = res
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return got[0]


def summarize(world, res):
    steps = res["steps"]
    med = {k: statistics.median(r["step_s"] for r in v) for k, v in steps.items()}
    fc = steps["ferrocoll"]
    comm = sum(r["comm_s"] for r in fc)
    hidden = sum(r["hidden_s"] for r in fc)
    per_step = [r["hidden_s"] / r["comm_s"] for r in fc if r["comm_s"] > 0]
    return {
        "ranks": world,
        "params": res["params"],
        "gradient_bytes": res["params"] * 4,
        "median_step_s": med,
        "min_step_s": {k: min(r["step_s"] for r in v) for k, v in steps.items()},
        "median_cpu_s": {k: statistics.median(r["cpu_s"] for r in v) for k, v in steps.items()},
        "floor_ratio": med["ddp_no_comm"] / med["gloo"],
        "max_step_s": {k: max(r["step_s"] for r in v) for k, v in steps.items()},
        "ratio_ferrocoll_over_gloo": med["ferrocoll"] / med["gloo"],
        "gloo_comm_share": 1 - med["compute"] / med["gloo"],
        "ferrocoll_comm_share": 1 - med["compute"] / med["ferrocoll"],
        "all_reduce_alone_s": res["alone_s"],
        "overlap": {
            "comm_s_total": comm,
            "hidden_s_total": hidden,
            "hidden_share": hidden / comm if comm else None,
            "median_step_hidden_share": statistics.median(per_step) if per_step else None,
            "median_comm_s": statistics.median(r["comm_s"] for r in fc),
            "median_last_grad_s": statistics.median(r["last_grad"] - r["backward_start"]
                                                     for r in fc),
        },
        "steps": steps,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per backend per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads per rank")
    ap.add_argument("--input", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    default_json = (Path(__file__).resolve().parent / "results"
                    / f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}-ddp.json")
    ap.add_argument("--json", default=str(default_json))
    args = ap.parse_args()

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = list(os.getloadavg())
    rows = []
    for world in args.ranks:
        res = summarize(world, run_world(world, args))
        rows.append(res)
        m = res["median_step_s"]
        o = res["overlap"]
        print(f"{world} ranks: {res['params'] / 1e6:.1f} M parameters; median step gloo "
              f"{m['gloo'] * 1e3:.1f} ms, ferrocoll {m['ferrocoll'] * 1e3:.1f} ms, compute only "
              f"{m['compute'] * 1e3:.1f} ms, DDP without communication {m['ddp_no_comm'] * 1e3:.1f} ms; "
              f"ferrocoll/gloo {res['ratio_ferrocoll_over_gloo']:.3f} (floor {res['floor_ratio']:.3f}); "
              f"gloo's communication {100 * res['gloo_comm_share']:.0f}% of its step; "
              f"ferrocoll communication hidden behind backward {100 * o['hidden_share']:.0f}%",
              flush=True)
        c = res["median_cpu_s"]
        print(f"{world} ranks: median CPU time per step (all threads of rank 0's process): "
              + ", ".join(f"{k} {c[k] * 1e3:.1f} ms" for k in c), flush=True)
    goals = []
    for r in rows:
        goals.append({"goal": f"{r['ranks']} ranks: ferrocoll step <= 0.8 x gloo",
                      "value": r["ratio_ferrocoll_over_gloo"],
                      "pass": r["ratio_ferrocoll_over_gloo"] <= 0.8})
        goals.append({"goal": f"{r['ranks']} ranks: gloo all-reduce >= 30% of its step",
                      "value": r["gloo_comm_share"], "pass": r["gloo_comm_share"] >= 0.3})
        if r["ranks"] == 2:
            goals.append({"goal": "2 ranks: >= 50% of communication hidden behind backward",
                          "value": r["overlap"]["hidden_share"],
                          "pass": (r["overlap"]["hidden_share"] or 0) >= 0.5})
    for g in goals:
        print(f"{'PASS' if g['pass'] else 'FAIL'}: {g['goal']} ({g['value']:.3f})")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    import torch

    out = {
        "format": "ferrocoll-ddp/1",
        "started_utc": f"{started:%Y-%m-%dT%H:%M:%SZ}",
        "finished_utc": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}",
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "commit": commit,
        "machine": {"nodename": platform.node(), "cpus": os.cpu_count(),
                    "kernel": platform.release(), "loadavg_start": load_start,
                    "loadavg_end": list(os.getloadavg())},
        "torch": torch.__version__,
        "library": os.environ.get("FERROCOLL_LIBRARY", ""),
        "model": {"input": args.input, "hidden": args.hidden, "layers": args.layers,
                  "classes": args.classes, "batch": args.batch, "threads": args.threads},
        "rounds": args.rounds, "steps_per_round": args.steps, "warmup": args.warmup,
        "rows": rows,
        "goals": goals,
    }
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 2
        while path.exists():
            path = Path(args.json).with_name(f"{Path(args.json).stem}-{n}.json")
            n += 1
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"raw results: {path}")


if __name__ == "__main__":
    main()
