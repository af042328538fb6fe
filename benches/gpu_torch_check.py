"""The torch backend on CUDA tensors (issue 24), the torch step of `benches/gpu_check.sh`:

    FERROCOLL_LIBRARY=target/release/libferrocoll.so python3 benches/gpu_torch_check.py

Two processes share GPU 0; each poses as its own host (`FERROCOLL_HOSTNAME`), so each has a
1-rank NCCL communicator on the device and ferrocoll carries the all-reduce between them
(`FERROCOLL_DEVICE=cuda`). Each rank all-reduces CUDA tensors through
`dist.all_reduce` (sum of a 16 MiB float32 tensor, an average, a non-contiguous view) and an
all-gather, on torch's current stream, and checks the results exactly. Exit 0 when every
result is exact on both ranks, 1 otherwise (the error says why)."""

import os
import socket
import sys
import traceback

WORLD = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank, port, q):
    os.environ.update(FERROCOLL_DEVICE="cuda", FERROCOLL_HOSTNAME=f"gpu-torch-{rank}")
    os.environ.setdefault("FERROCOLL_SOCKET_IFNAME", "lo")
    os.environ.setdefault("FERROCOLL_TIMEOUT", "120")
    try:
        import torch
        import torch.distributed as dist

        import ferrocoll.torch  # noqa: F401  (registers the backend)

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        torch.cuda.set_device(0)
        dist.init_process_group("ferrocoll", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=WORLD)
        n = 4 << 20  # 16 MiB of float32
        t = torch.arange(n, device="cuda", dtype=torch.float32) % 1000 + rank
        dist.all_reduce(t)
        want = (torch.arange(n, device="cuda", dtype=torch.float32) % 1000) * WORLD + 1
        assert torch.equal(t, want), "all_reduce sum of a CUDA tensor is not exact"
        a = torch.full((1000,), 2.0 * (rank + 1), device="cuda")
        dist.all_reduce(a, op=dist.ReduceOp.AVG)
        assert torch.equal(a, torch.full((1000,), 3.0, device="cuda")), "average not exact"
        col = torch.ones(64, 64, device="cuda")[:, 3]  # not contiguous
        dist.all_reduce(col)
        assert torch.equal(col, torch.full((64,), float(WORLD), device="cuda")), "view not exact"
        out = torch.empty(WORLD * 8, device="cuda", dtype=torch.int64)
        dist.all_gather_into_tensor(out, torch.full((8,), rank, device="cuda", dtype=torch.int64))
        assert torch.equal(out, torch.arange(WORLD, device="cuda").repeat_interleave(8)), out
        torch.cuda.synchronize()
        dist.destroy_process_group()
        q.put((rank, None))
    except BaseException:
        q.put((rank, traceback.format_exc()))


def main():
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=rank_main, args=(r, port, q)) for r in range(WORLD)]
    for p in procs:
        p.start()
    failed = False
    try:
        for _ in procs:
            rank, err = q.get(timeout=300)
            if err:
                failed = True
                print(f"rank {rank} failed:\n{err}", file=sys.stderr)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    if failed:
        print("FAIL: the torch backend on CUDA tensors")
        return 1
    print("ok: torch backend, CUDA tensors on 2 ranks (all_reduce sum/avg/view, all_gather): exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
