"""The torch backend: collectives on CPU tensors, then DistributedDataParallel on 2 ranks
trained from the same seed with backend "ferrocoll" and with "gloo"; the losses must agree
to 1e-6 at every step. Needs torch. Run under torchrun
(`torchrun --standalone --nproc-per-node 2 torch_ddp_check.py`, what
test_ferrocoll.py::test_torch_backend_ddp_matches_gloo does), or plainly, in which case it
starts its 2 ranks itself. Exits 0 on success; rank 0 prints the losses."""

import os
import socket
import sys
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

import ferrocoll.torch  # noqa: F401  (registers the backend)

WORLD = 2
STEPS = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_collectives(rank, world):
    t = torch.full((5,), float(rank + 1))
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((5,), float(world * (world + 1) // 2))), t
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    col = torch.ones(4, 4)[:, 1]  # not contiguous
    dist.all_reduce(col)
    assert torch.equal(col, torch.full((4,), float(world))), col
    outs = [torch.empty(3) for _ in range(world)]
    dist.all_gather(outs, torch.full((3,), float(rank)))
    assert all(torch.equal(o, torch.full((3,), float(q))) for q, o in enumerate(outs)), outs
    out = torch.empty(world * 3, dtype=torch.int64)
    dist.all_gather_into_tensor(out, torch.full((3,), rank, dtype=torch.int64))
    assert torch.equal(out, torch.arange(world).repeat_interleave(3)), out
    rs = torch.empty(2)
    dist.reduce_scatter(rs, [torch.full((2,), float(rank + j)) for j in range(world)])
    assert torch.equal(rs, torch.full((2,), float(sum(q + rank for q in range(world))))), rs
    rst = torch.empty(2)
    dist.reduce_scatter_tensor(rst, torch.arange(world * 2, dtype=torch.float32))
    assert torch.equal(rst, torch.arange(world * 2, dtype=torch.float32)[rank * 2:][:2] * world), rst
    b = torch.full((4,), float(rank), dtype=torch.bfloat16)
    dist.broadcast(b, src=world - 1)
    assert torch.equal(b, torch.full((4,), float(world - 1), dtype=torch.bfloat16)), b
    a2a = torch.empty(world * 2)
    dist.all_to_all_single(a2a, torch.full((world * 2,), float(rank)))
    assert torch.equal(a2a, torch.arange(world).float().repeat_interleave(2)), a2a
    # A batch of 6 MiB sends and receives to every peer: issued one by one, the sends would
    # fill the links and wait for each other; coalesced (fcGroupStart/End) they cannot.
    n = 3 << 19
    outs = {q: torch.full((n,), float(10 * rank + q)) for q in range(world) if q != rank}
    ins = {q: torch.empty(n) for q in outs}
    ops = [dist.P2POp(dist.isend, t, q) for q, t in outs.items()]
    ops += [dist.P2POp(dist.irecv, t, q) for q, t in ins.items()]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    assert all(torch.equal(t, torch.full((n,), float(10 * q + rank))) for q, t in ins.items())
    dist.barrier()
    if rank == 0:
        dist.send(torch.arange(6.0), dst=1)
    elif rank == 1:
        r = torch.empty(6)
        dist.recv(r, src=0)
        assert torch.equal(r, torch.arange(6.0)), r


def train(backend, rank, world, port):
    # Under torchrun: env:// (the agent's store); else a TCP store of our own.
    init = "env://" if port is None else f"tcp://127.0.0.1:{port}"
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world)
    if backend == "ferrocoll":
        check_collectives(rank, world)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1000 + rank)
    losses = []
    for _ in range(STEPS):
        x = torch.randn(64, 8, generator=gen)
        y = x.sum(1, keepdim=True).sin()
        opt.zero_grad()
        loss = ((ddp(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        g = loss.detach().clone()
        dist.all_reduce(g)
        losses.append(g.item() / world)
    dist.destroy_process_group()
    return losses


def worker(rank, world, ports, q):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("FERROCOLL_SOCKET_IFNAME", "lo")
    os.environ.setdefault("FERROCOLL_TIMEOUT", "60")
    try:
        res = {b: train(b, rank, world, ports[b]) for b in ("gloo", "ferrocoll")}
        q.put((rank, res, None))
    except BaseException:
        q.put((rank, None, traceback.format_exc()))


def compare(res, verbose=True):
    """0 when the losses of the two backends agree to 1e-6 at every step, else 1."""
    gloo, fc = res["gloo"], res["ferrocoll"]
    worst = max((abs(a - b) for a, b in zip(gloo, fc)), default=float("inf"))
    ok = len(gloo) == len(fc) == STEPS and worst <= 1e-6
    if verbose:
        for step, (a, b) in enumerate(zip(gloo, fc)):
            print(f"step {step}: gloo {a:.9f} ferrocoll {b:.9f}")
        print(f"max |loss difference| = {worst:.3g}: {'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def under_torchrun():
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("FERROCOLL_SOCKET_IFNAME", "lo")
    os.environ.setdefault("FERROCOLL_TIMEOUT", "60")
    res = {b: train(b, rank, world, None) for b in ("gloo", "ferrocoll")}
    # Every rank checks (the all-reduced losses are the same everywhere); rank 0 prints.
    return compare(res, verbose=rank == 0)


def main():
    if "TORCHELASTIC_RUN_ID" in os.environ or "RANK" in os.environ:
        return under_torchrun()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ports = {"gloo": free_port(), "ferrocoll": free_port()}
    procs = [ctx.Process(target=worker, args=(r, WORLD, ports, q)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, res, err = q.get(timeout=300)
        if err:
            print(f"rank {rank} failed:\n{err}", file=sys.stderr)
            return 1
        results[rank] = res
    for p in procs:
        p.join(timeout=30)
    if results[1] != results[0]:
        print("ranks disagree on the losses", file=sys.stderr)
        return 1
    return compare(results[0])


if __name__ == "__main__":
    sys.exit(main())
