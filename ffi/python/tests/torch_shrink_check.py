"""The torch backend survives a failed rank: 3 ranks (backend "ferrocoll") all-reduce, rank 2
kills itself with SIGKILL, the survivors' next all_reduce raises ferrocoll.RevokedError,
ferrocoll.torch.shrink_group() makes the 2 survivors the new default group, and
dist.all_reduce runs on it. Needs torch; test_elastic.py runs it. Exits 0 on success."""

import os
import signal
import socket
import sys
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ferrocoll
import ferrocoll.torch as fct

WORLD = 3
VICTIM = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank, port, q):
    try:
        dist.init_process_group("ferrocoll", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=WORLD)
        t = torch.ones(4)
        dist.all_reduce(t)
        assert torch.equal(t, torch.full((4,), float(WORLD))), t
        dist.barrier()
        if rank == VICTIM:
            os.kill(os.getpid(), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "no failure within 20 s"
            try:
                dist.all_reduce(torch.ones(1 << 16))
            except ferrocoll.RevokedError:
                break
        pg = fct.shrink_group()
        assert dist.group.WORLD is pg
        assert (dist.get_rank(), dist.get_world_size()) == (rank, WORLD - 1)
        t = torch.full((5,), float(rank + 1))
        dist.all_reduce(t)
        assert torch.equal(t, torch.full((5,), 3.0)), t  # ranks 0 and 1: 1 + 2
        dist.barrier()
        pg.abort()
        pg.abort()  # idempotent
        dist.destroy_process_group()
        q.put((rank, None))
    except BaseException:
        q.put((rank, traceback.format_exc()))


def main():
    os.environ.setdefault("FERROCOLL_SOCKET_IFNAME", "lo")
    os.environ.setdefault("FERROCOLL_HEARTBEAT_TIMEOUT", "1")
    os.environ.setdefault("FERROCOLL_TIMEOUT", "30")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=rank_main, args=(r, port, q)) for r in range(WORLD)]
    for p in procs:
        p.start()
    errors = {}
    try:
        for _ in range(WORLD - 1):
            r, err = q.get(timeout=120)
            errors[r] = err
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    bad = {r: e for r, e in errors.items() if e}
    for r, e in sorted(bad.items()):
        print(f"rank {r}:\n{e}", file=sys.stderr)
    if bad or sorted(errors) != [0, 1] or procs[VICTIM].exitcode != -signal.SIGKILL:
        print(f"failed: {errors}, victim exit code {procs[VICTIM].exitcode}", file=sys.stderr)
        return 1
    print("survivors shrank and all-reduced: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
