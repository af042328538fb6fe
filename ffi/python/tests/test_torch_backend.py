"""The torch.distributed backend "ferrocoll": every call torch makes against expected values
on 2-3 CPU ranks, asynchronous Works that complete when the collective does, timeouts that
abort, abort and shutdown, and the errors for tensors it cannot take (CUDA without
FERROCOLL_DEVICE=cuda or NCCL, other devices). Each test starts its ranks with
multiprocessing (spawn); every rank checks its own results."""

import datetime
import multiprocessing as mp
import os
import time
import traceback
import types

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
import torch.distributed as dist  # noqa: E402

import ferrocoll  # noqa: E402
from test_ferrocoll import _free_port  # noqa: E402


def _rank_main(fn, rank, world, port, q):
    os.environ.update(FERROCOLL_SOCKET_IFNAME="lo", GLOO_SOCKET_IFNAME="lo")
    os.environ.setdefault("FERROCOLL_TIMEOUT", "30")
    try:
        import ferrocoll.torch  # noqa: F401  (registers the backend)

        dist.init_process_group("ferrocoll", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=world)
        fn(rank, world)
        q.put((rank, None))
    except BaseException:
        q.put((rank, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a failed check may leave it unusable
                pass


def run_ranks(fn, world, wait=120):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, port, q))
             for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in procs:
            rank, err = q.get(timeout=wait)
            results[rank] = err
    finally:
        for p in procs:
            p.join(timeout=20)
            if p.is_alive():
                p.kill()
    failed = {r: e for r, e in results.items() if e}
    assert not failed, "\n".join(f"rank {r}:\n{e}" for r, e in sorted(failed.items()))
    assert sorted(results) == list(range(world))


# -- every call, against expected values ---------------------------------------------------------


def every_call(r, p):
    tri = p * (p + 1) // 2
    # all_reduce: every op, in place, non-contiguous, integers
    t = torch.full((5,), float(r + 1))
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((5,), float(tri))), t
    t = torch.full((4,), float(2 * (r + 1)), dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    assert torch.equal(t, torch.full((4,), float(p + 1), dtype=torch.float64)), t
    for op, want in ((dist.ReduceOp.MAX, p), (dist.ReduceOp.MIN, 1),
                     (dist.ReduceOp.PRODUCT, int(torch.arange(1, p + 1).prod()))):
        t = torch.full((3,), r + 1, dtype=torch.int64)
        dist.all_reduce(t, op=op)
        assert torch.equal(t, torch.full((3,), want, dtype=torch.int64)), (op, t)
    col = torch.ones(4, 4)[:, 1]  # not contiguous: reduced in a copy, copied back
    dist.all_reduce(col)
    assert torch.equal(col, torch.full((4,), float(p))), col
    t = torch.ones(2)
    dist.all_reduce(t, op=dist._make_nccl_premul_sum(2.0))
    assert torch.equal(t, torch.full((2,), 2.0 * p)), t
    with pytest.raises(ValueError, match="BAND"):
        dist.all_reduce(torch.ones(2, dtype=torch.int32), op=dist.ReduceOp.BAND)

    # all_gather (list) and all_gather_into_tensor
    outs = [torch.empty(2, 3) for _ in range(p)]
    dist.all_gather(outs, torch.full((2, 3), float(r)))
    assert all(torch.equal(o, torch.full((2, 3), float(q))) for q, o in enumerate(outs)), outs
    out = torch.empty(p * 3, dtype=torch.int64)
    dist.all_gather_into_tensor(out, torch.full((3,), r, dtype=torch.int64))
    assert torch.equal(out, torch.arange(p).repeat_interleave(3)), out
    out2 = torch.empty(p, 3, dtype=torch.bfloat16)
    dist.all_gather_into_tensor(out2, torch.full((3,), r, dtype=torch.bfloat16))
    assert torch.equal(out2.float(), torch.arange(p).float()[:, None].expand(p, 3)), out2

    # reduce_scatter (list, with an op) and reduce_scatter_tensor
    rs = torch.empty(2)
    dist.reduce_scatter(rs, [torch.full((2,), float(r + j)) for j in range(p)])
    assert torch.equal(rs, torch.full((2,), float(sum(q + r for q in range(p))))), rs
    rs = torch.empty(2)
    dist.reduce_scatter(rs, [torch.full((2,), float(r * j)) for j in range(p)],
                        op=dist.ReduceOp.MAX)
    assert torch.equal(rs, torch.full((2,), float((p - 1) * r))), rs
    rst = torch.empty(2)
    dist.reduce_scatter_tensor(rst, torch.arange(p * 2, dtype=torch.float32))
    assert torch.equal(rst, torch.arange(p * 2, dtype=torch.float32)[r * 2:][:2] * p), rst
    rst = torch.empty(2)
    dist.reduce_scatter_tensor(rst, torch.arange(p * 2, dtype=torch.float32) * (r + 1),
                               op=dist.ReduceOp.AVG)
    assert torch.allclose(rst, torch.arange(p * 2, dtype=torch.float32)[r * 2:][:2] * (p + 1) / 2)

    # broadcast and reduce
    b = torch.full((4,), float(r), dtype=torch.bfloat16)
    dist.broadcast(b, src=p - 1)
    assert torch.equal(b, torch.full((4,), float(p - 1), dtype=torch.bfloat16)), b
    v = torch.full((3,), float(r + 1))
    dist.reduce(v, dst=1, op=dist.ReduceOp.SUM)
    assert torch.equal(v, torch.full((3,), float(tri) if r == 1 else float(r + 1))), v

    # all_to_all_single (even; explicit equal splits) and all_to_all (lists)
    a2a = torch.empty(p * 2)
    dist.all_to_all_single(a2a, torch.arange(p * 2, dtype=torch.float32) + 100 * r)
    want = torch.tensor([100 * q + 2 * r + k for q in range(p) for k in range(2)], dtype=torch.float32)
    assert torch.equal(a2a, want), a2a
    a2a = torch.empty(p * 2, 3)
    dist.all_to_all_single(a2a, torch.full((p * 2, 3), float(r)), [2] * p, [2] * p)
    assert torch.equal(a2a, torch.arange(p).float().repeat_interleave(2)[:, None].expand(p * 2, 3))
    outs = [torch.empty(2, dtype=torch.int32) for _ in range(p)]
    dist.all_to_all(outs, [torch.full((2,), 10 * r + j, dtype=torch.int32) for j in range(p)])
    assert all(torch.equal(o, torch.full((2,), 10 * q + r, dtype=torch.int32))
               for q, o in enumerate(outs)), outs

    # send/recv, isend/irecv (to the next rank, from the previous one)
    nxt, prv = (r + 1) % p, (r - 1) % p
    if r % 2 == 0:
        dist.send(torch.full((6,), float(r)), dst=nxt)
        got = torch.empty(6)
        dist.recv(got, src=prv)
    else:
        got = torch.empty(6)
        dist.recv(got, src=prv)
        dist.send(torch.full((6,), float(r)), dst=nxt)
    assert torch.equal(got, torch.full((6,), float(prv))), got
    if r == 0:
        w = dist.isend(torch.arange(5, dtype=torch.int64), dst=1)
        w.wait()
    elif r == 1:
        got = torch.empty(5, dtype=torch.int64)
        dist.irecv(got, src=0).wait()
        assert torch.equal(got, torch.arange(5)), got

    # batch_isend_irecv: one group, 6 MiB to and from every peer
    n = 3 << 19
    outs = {q: torch.full((n,), float(10 * r + q)) for q in range(p) if q != r}
    ins = {q: torch.empty(n) for q in outs}
    ops = [dist.P2POp(dist.isend, t, q) for q, t in outs.items()]
    ops += [dist.P2POp(dist.irecv, t, q) for q, t in ins.items()]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    assert all(torch.equal(t, torch.full((n,), float(10 * q + r))) for q, t in ins.items())

    # coalescing: a batch of all-reduces and all-gathers as one group
    from torch.distributed.distributed_c10d import _coalescing_manager

    ts = [torch.full((k + 1,), float(r + k)) for k in range(3)]
    with _coalescing_manager(async_ops=True) as cm:
        for t in ts:
            dist.all_reduce(t)
    cm.wait()
    for k, t in enumerate(ts):
        assert torch.equal(t, torch.full((k + 1,), float(tri - p + k * p))), (k, t)
    pg = dist.group.WORLD
    ts = [torch.full((2,), float(r)), torch.full((3,), 1.0)]
    pg.allreduce_coalesced(ts).wait()
    assert torch.equal(ts[0], torch.full((2,), float(tri - p))) and torch.equal(ts[1], torch.full((3,), float(p)))
    outs = [torch.empty(p * 2) for _ in range(2)]
    with _coalescing_manager(async_ops=True) as cm:
        for k, o in enumerate(outs):
            dist.all_gather_into_tensor(o, torch.full((2,), float(10 * k + r)))
    cm.wait()
    for k, o in enumerate(outs):
        assert torch.equal(o, (torch.arange(p).float() + 10 * k).repeat_interleave(2)), o

    # async_op: Works that wait, futures with the tensors
    t = torch.full((7,), float(r))
    w = dist.all_reduce(t, async_op=True)
    assert w.get_future().wait()[0] is t
    w.wait()
    assert w.is_completed() and torch.equal(t, torch.full((7,), float(tri - p)))
    dist.barrier()

    # gather, scatter
    outs = [torch.empty(2) for _ in range(p)] if r == 0 else None
    dist.gather(torch.full((2,), float(r)), outs, dst=0)
    if r == 0:
        assert all(torch.equal(o, torch.full((2,), float(q))) for q, o in enumerate(outs)), outs
    t = torch.empty(2, dtype=torch.int32)
    dist.scatter(t, [torch.full((2,), q, dtype=torch.int32) for q in range(p)] if r == 0 else None,
                 src=0)
    assert torch.equal(t, torch.full((2,), r, dtype=torch.int32)), t

    # devices it cannot take: clear errors, no hang
    with pytest.raises(ValueError, match="device 'meta'"):
        dist.all_reduce(torch.empty(3, device="meta"))
    # Still in step after the refusals.
    t = torch.ones(3)
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((3,), float(p)))


@pytest.mark.parametrize("world", [2, 3])
def test_every_call_against_expected_values(world):
    run_ranks(every_call, world)


# -- timeouts, abort, shutdown (two ranks in this process; rank 1 never joins the calls) -----------


def _two_ranks(monkeypatch, timeout_s):
    """Ranks 0 and 1 of one job as two process groups of this process (threads make them)."""
    import threading

    import ferrocoll.torch as fct

    monkeypatch.setenv("FERROCOLL_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("FERROCOLL_TIMEOUT", "30")  # the library's own limit: far away
    store, pgs = dist.HashStore(), {}

    def make(r):
        pgs[r] = fct.ProcessGroupFerrocoll(store, r, 2, datetime.timedelta(seconds=timeout_s))

    makers = [threading.Thread(target=make, args=(r,)) for r in range(2)]
    for t in makers:
        t.start()
    for t in makers:
        t.join(30)
    assert sorted(pgs) == [0, 1]
    return pgs[0], pgs[1]


@pytest.mark.parametrize("async_op", [True, False])
def test_a_call_past_the_timeout_fails_and_aborts(monkeypatch, async_op):
    pg, other = _two_ranks(monkeypatch, 0.5)
    opts = dist.AllreduceOptions()
    opts.asyncOp = async_op  # False: what dist.all_reduce(t) passes, run on this thread
    t0 = time.monotonic()
    try:
        with pytest.raises(ferrocoll.CommTimeoutError, match="timeout of 0.5 s") as e:
            pg.allreduce([torch.ones(1 << 16)], opts).wait()
        assert 0.4 < time.monotonic() - t0 < 3, time.monotonic() - t0
        assert isinstance(e.value, TimeoutError)
        # The communicator was aborted: later calls fail at once with the same error.
        with pytest.raises(ferrocoll.CommTimeoutError, match="was aborted"):
            pg.barrier()
    finally:
        other.abort()
        pg.shutdown()
    assert not [t for t in pg._threads if t.is_alive()]


def test_abort_fails_the_calls_in_flight(monkeypatch):
    pg, other = _two_ranks(monkeypatch, 60)
    try:
        works = [pg.allreduce([torch.ones(1 << 16)]) for _ in range(3)]
        time.sleep(0.2)
        assert not works[0].is_completed()
        t0 = time.monotonic()
        pg.abort()
        for w in works:
            with pytest.raises(ferrocoll.FerrocollError):
                w.wait()
            assert w.is_completed() and isinstance(w.exception(), ferrocoll.FerrocollError)
        assert time.monotonic() - t0 < 2
        assert not [t for t in pg._threads if t.is_alive()]
        with pytest.raises(ferrocoll.SystemFailureError, match="aborted"):
            pg.allreduce([torch.ones(2)])
        pg.abort()  # idempotent
    finally:
        other.abort()


# -- asynchronous: complete when the collective is -----------------------------------------------

LATE_S = 1.0


def test_a_large_all_reduce_completes_after_the_call_returns(monkeypatch):
    import threading

    pg, other = _two_ranks(monkeypatch, 60)
    n = 1 << 22  # 16 MiB
    big, theirs = torch.full((n,), 1.0), torch.full((n,), 2.0)

    def late():  # rank 1 enters LATE_S later: rank 0's all-reduce cannot complete before
        time.sleep(LATE_S)
        other.allreduce([theirs]).wait()

    peer = threading.Thread(target=late)
    try:
        peer.start()
        t0 = time.monotonic()
        w = pg.allreduce([big])
        assert time.monotonic() - t0 < LATE_S / 3, "the call did not return at once"
        assert not w.is_completed() and not w.get_future().done()
        assert big[0].item() == 1.0  # untouched yet
        w.wait()
        assert time.monotonic() - t0 > LATE_S / 2  # it waited for rank 1
        assert w.is_completed() and w.get_future().done() and w.exception() is None
        assert torch.equal(big, torch.full((n,), 3.0))
        assert w.get_future().value()[0] is big
        peer.join(30)
        assert torch.equal(theirs, big)
        # In issue order: a later call's Work completes after an earlier one's.
        a, b = torch.ones(1 << 20), torch.ones(3)
        wa, wb = pg.allreduce([a]), pg.allreduce([b])
        other.allreduce([torch.ones(1 << 20)])
        other.allreduce([torch.ones(3)]).wait()
        wb.wait()
        assert wa.is_completed() and torch.equal(a, torch.full((1 << 20,), 2.0))
    finally:
        peer.join(30)
        pg.shutdown()
        other.shutdown()


# -- in this process (a world of one) -------------------------------------------------------------


@pytest.fixture
def pg1(monkeypatch):
    import ferrocoll.torch as fct

    monkeypatch.setenv("FERROCOLL_SOCKET_IFNAME", "lo")
    monkeypatch.delenv("FERROCOLL_DEVICE", raising=False)
    pg = fct.ProcessGroupFerrocoll(dist.HashStore(), 0, 1, datetime.timedelta(seconds=60))
    yield pg
    pg.shutdown()


def test_shutdown_completes_the_calls_in_flight_then_refuses(pg1):
    t = torch.arange(6.0)
    w = pg1.allreduce([t])
    pg1.shutdown()
    assert w.is_completed() and torch.equal(t, torch.arange(6.0))
    assert not [th for th in pg1._threads if th.is_alive()]
    with pytest.raises(ferrocoll.InvalidUsageError, match="shut down"):
        pg1.allreduce([t])
    pg1.shutdown()  # idempotent


def test_the_timeout_becomes_the_communicator_s(monkeypatch):
    import ferrocoll.torch as fct

    monkeypatch.setenv("FERROCOLL_SOCKET_IFNAME", "lo")
    monkeypatch.delenv("FERROCOLL_TIMEOUT", raising=False)
    seen = []
    real = ferrocoll.Communicator.init_rank

    def init_rank(*a):
        seen.append(os.environ.get("FERROCOLL_TIMEOUT"))
        return real(*a)

    monkeypatch.setattr(ferrocoll.Communicator, "init_rank", init_rank)
    fct.ProcessGroupFerrocoll(dist.HashStore(), 0, 1, datetime.timedelta(seconds=42)).shutdown()
    monkeypatch.setenv("FERROCOLL_TIMEOUT", "7")
    fct.ProcessGroupFerrocoll(dist.HashStore(), 0, 1, datetime.timedelta(seconds=42)).shutdown()
    assert seen == ["42", "7"]  # the variable, when set, wins
    assert os.environ["FERROCOLL_TIMEOUT"] == "7"


def _cuda_tensor():
    """What the backend reads of a CUDA tensor before using it (no GPU here)."""
    return types.SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float32)


def test_cuda_tensors_need_ferrocoll_device_cuda(pg1):
    with pytest.raises(RuntimeError, match="FERROCOLL_DEVICE=cuda") as e:
        pg1.allreduce([_cuda_tensor()])
    assert "libnccl.so.2" in str(e.value) and "FERROCOLL_NCCL_LIBRARY" in str(e.value)
    # Still usable.
    t = torch.ones(2)
    pg1.allreduce([t]).wait()
    assert torch.equal(t, torch.ones(2))


def test_cuda_tensors_need_nccl(monkeypatch):
    import ferrocoll.torch as fct

    monkeypatch.setenv("FERROCOLL_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("FERROCOLL_DEVICE", "cuda")
    monkeypatch.setenv("FERROCOLL_NCCL_LIBRARY", "/nonexistent/libnccl.so.2")
    pg = fct.ProcessGroupFerrocoll(dist.HashStore(), 0, 1)
    try:
        with pytest.raises(RuntimeError, match="/nonexistent/libnccl.so.2 cannot be loaded") as e:
            pg.broadcast([_cuda_tensor()], dist.BroadcastOptions())
        assert "FERROCOLL_NCCL_LIBRARY" in str(e.value)
    finally:
        pg.shutdown()


def test_other_devices_are_named(pg1):
    with pytest.raises(ValueError, match="device 'meta'"):
        pg1.allreduce([torch.empty(2, device="meta")])
    with pytest.raises(ValueError, match="unsupported dtype torch.complex64"):
        pg1.allreduce([torch.ones(2, dtype=torch.complex64)])



def test_gather_and_scatter_name_a_wrong_tensor_list(pg1):
    """The root's one-per-rank list: a wrong count or a tensor of the wrong size is a
    ValueError naming it; a right list still works afterwards."""
    x = torch.arange(4.0)
    with pytest.raises(ValueError, match="gather: 2 output tensors on the root, expected 1"):
        pg1.gather([[torch.empty(4), torch.empty(4)]], [x])
    with pytest.raises(ValueError, match="gather: output tensor 0 has 3 elements, expected 4"):
        pg1.gather([[torch.empty(3)]], [x])
    with pytest.raises(ValueError, match="scatter: 0 input tensors on the root, expected 1"):
        pg1.scatter([torch.empty(4)], [[]])
    with pytest.raises(ValueError, match="scatter: input tensor 0 has 5 elements, expected 4"):
        pg1.scatter([torch.empty(4)], [[torch.empty(5)]])
    out = torch.empty(4)
    pg1.gather([[out]], [x]).wait()
    assert torch.equal(out, x)

def test_registered_for_cpu_and_cuda():
    import ferrocoll.torch  # noqa: F401

    assert set(dist.Backend.backend_capability["ferrocoll"]) == {"cpu", "cuda"}


# -- gather, scatter, uneven sizes and premul-sum ------------------------------------------------


def uneven_calls(r, p):
    tri = p * (p + 1) // 2
    # premul-sum: each rank its own factor (a number, or a one-element tensor), every reducing call
    t = torch.ones(3)
    dist.all_reduce(t, op=dist._make_nccl_premul_sum(float(r + 1)))
    assert torch.equal(t, torch.full((3,), float(tri))), t
    t = torch.full((2,), 2.0, dtype=torch.float64)
    dist.all_reduce(t, op=dist._make_nccl_premul_sum(torch.tensor([float(r + 1)])))
    assert torch.equal(t, torch.full((2,), 2.0 * tri, dtype=torch.float64)), t
    t = torch.ones(2)
    dist.reduce(t, dst=0, op=dist._make_nccl_premul_sum(0.5))
    if r == 0:
        assert torch.equal(t, torch.full((2,), 0.5 * p)), t
    out = torch.empty(2)
    dist.reduce_scatter_tensor(out, torch.ones(2 * p), op=dist._make_nccl_premul_sum(float(r)))
    assert torch.equal(out, torch.full((2,), float(tri - p))), out

    # all_to_all_single with uneven splits, zero-size blocks included: rank r sends j rows to
    # rank j (none to rank 0), rows of 2
    send = [j for j in range(p)]
    recv = [r] * p
    inp = torch.cat([torch.full((n, 2), float(10 * r + j)) for j, n in enumerate(send)])
    out = torch.empty(sum(recv), 2)
    dist.all_to_all_single(out, inp, recv, send)
    want = torch.cat([torch.full((n, 2), float(10 * i + r)) for i, n in enumerate(recv)])
    assert torch.equal(out, want), out
    # all_to_all with tensors of different sizes
    ins = [torch.full((j + r,), r * 10 + j, dtype=torch.int64) for j in range(p)]
    outs = [torch.empty(r + i, dtype=torch.int64) for i in range(p)]
    dist.all_to_all(outs, ins)
    assert all(torch.equal(o, torch.full((r + i,), i * 10 + r, dtype=torch.int64))
               for i, o in enumerate(outs)), outs
    # all_gather and reduce_scatter with tensors of different sizes (rank q: q elements)
    outs = [torch.empty(q) for q in range(p)]
    dist.all_gather(outs, torch.full((r,), float(r)))
    assert all(torch.equal(o, torch.full((q,), float(q))) for q, o in enumerate(outs)), outs
    out = torch.empty(r)
    dist.reduce_scatter(out, [torch.full((q,), float(r + 1)) for q in range(p)])
    assert torch.equal(out, torch.full((r,), float(tri))), out

    # asynchronous: Works complete with the collective
    ins = [torch.full((j + 1,), float(r)) for j in range(p)]
    a2a_out = [torch.empty(r + 1) for _ in range(p)]
    ag_out = [torch.empty(q + 1) for q in range(p)]
    g_out = [torch.empty(3) for _ in range(p)] if r == p - 1 else None
    pm = torch.ones(1 << 16)
    works = [
        dist.all_to_all(a2a_out, ins, async_op=True),
        dist.all_gather(ag_out, torch.full((r + 1,), float(r)), async_op=True),
        dist.gather(torch.full((3,), float(r)), g_out, dst=p - 1, async_op=True),
        dist.all_reduce(pm, op=dist._make_nccl_premul_sum(0.25), async_op=True),
    ]
    for w in works:
        w.wait()
    assert all(torch.equal(o, torch.full((r + 1,), float(i))) for i, o in enumerate(a2a_out))
    assert all(torch.equal(o, torch.full((q + 1,), float(q))) for q, o in enumerate(ag_out))
    if g_out is not None:
        assert all(torch.equal(o, torch.full((3,), float(q))) for q, o in enumerate(g_out))
    assert torch.equal(pm, torch.full((1 << 16,), 0.25 * p))

    # bad splits: named, before anything is issued (every rank refuses alike)
    with pytest.raises(ValueError, match=r"input_split_sizes has 1 entries, expected"):
        dist.all_to_all_single(torch.empty(p), torch.empty(p), None, [p])
    with pytest.raises(ValueError, match=r"output_split_sizes\[0\] is -1"):
        dist.all_to_all_single(torch.empty(p), torch.empty(p), [-1] + [1] * (p - 2) + [2], None)
    with pytest.raises(ValueError, match=r"input_split_sizes \[.*\] sums to"):
        dist.all_to_all_single(torch.empty(p), torch.empty(p), None, [2] * p)
    # still in step
    t = torch.ones(2)
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((2,), float(p)))


def test_gather_scatter_uneven_and_premul_sum():
    run_ranks(uneven_calls, 3)  # 3 ranks: uneven blocks, and an empty one on every call


def test_the_ddp_benchmark_runs(tmp_path):
    """benches/ddp_vs_gloo.py end to end on a tiny model: both backends train, agree, and
    the JSON has the step times and the overlap (the script is run by hand for the tables,
    so this keeps it working)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    script = repo / "benches" / "ddp_vs_gloo.py"
    out = tmp_path / "ddp.json"
    env = dict(os.environ)
    src = str(Path(ferrocoll.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run(
        [sys.executable, str(script), "--ranks", "2", "--rounds", "1", "--steps", "2",
         "--warmup", "1", "--layers", "2", "--hidden", "64", "--input", "32",
         "--json", str(out)],
        capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 ranks:" in run.stdout, run.stdout
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["ranks"] == 2
    for kind in ("gloo", "ferrocoll", "compute", "ddp_no_comm"):
        assert row["median_step_s"][kind] > 0, row
        assert row["median_cpu_s"][kind] > 0, row
    assert 0 < row["floor_ratio"], row
    assert row["overlap"]["comm_s_total"] > 0, row
