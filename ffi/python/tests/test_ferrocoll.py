"""The Python package across 2-4 processes: each test starts its ranks with multiprocessing
(spawn) and FERROCOLL_* launcher variables; every rank checks its own results."""

import os
import socket
import traceback
import multiprocessing as mp

import numpy as np
import pytest

import ferrocoll
from ferrocoll import ReduceOp

try:
    import ml_dtypes
except ImportError:  # bfloat16/fp8 tests skip
    ml_dtypes = None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn, rank, world, store, q):
    os.environ.update(
        FERROCOLL_RANK=str(rank),
        FERROCOLL_WORLD_SIZE=str(world),
        FERROCOLL_STORE=store,
        FERROCOLL_SOCKET_IFNAME="lo",
        FERROCOLL_TIMEOUT="30",
    )
    try:
        with ferrocoll.init() as comm:  # destroyed on exit (unless the body aborted it)
            fn(comm, rank, world)
        q.put((rank, None))
    except BaseException:
        q.put((rank, traceback.format_exc()))


def run_ranks(fn, world, timeout=90):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    store = f"127.0.0.1:{_free_port()}"
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, store, q)) for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in procs:
            rank, err = q.get(timeout=timeout)
            results[rank] = err
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    failed = {r: e for r, e in results.items() if e}
    assert not failed, "\n".join(f"rank {r}:\n{e}" for r, e in sorted(failed.items()))
    assert sorted(results) == list(range(world))


# -- rank bodies (module level so that spawn can import them) --------------------------------


def every_collective(comm, r, p):
    assert (comm.rank, comm.size) == (r, p)
    n = 1001
    x = np.arange(n, dtype=np.float32) * (r + 1)
    tri = p * (p + 1) // 2
    out = comm.all_reduce(x, ReduceOp.SUM, out=np.empty_like(x))
    np.testing.assert_array_equal(out, np.arange(n, dtype=np.float32) * tri)
    y = x.copy()
    assert comm.all_reduce(y, ReduceOp.MAX) is y
    np.testing.assert_array_equal(y, np.arange(n, dtype=np.float32) * p)

    mine = np.full((2, 3), r, np.int64)
    g = comm.all_gather(mine)
    assert g.shape == (p, 2, 3)
    np.testing.assert_array_equal(g, np.arange(p).repeat(6).reshape(p, 2, 3))

    big = np.arange(p * 5, dtype=np.int32) + r
    rs = comm.reduce_scatter(big, ReduceOp.SUM)
    np.testing.assert_array_equal(rs, (np.arange(p * 5, dtype=np.int32) * p + tri - p)[r * 5:(r + 1) * 5])

    b = np.full(7, r, np.float64)
    comm.broadcast(b, root=p - 1)
    np.testing.assert_array_equal(b, np.full(7, p - 1.0))

    v = np.full(4, r + 1, np.float64)
    res = comm.reduce(v, ReduceOp.PROD, root=0, out=np.zeros(4))
    want = np.full(4, float(np.prod(np.arange(1, p + 1)))) if r == 0 else np.zeros(4)
    np.testing.assert_array_equal(res, want)

    a = np.array([10 * r + j for j in range(p)], np.uint8).repeat(3)
    t = comm.all_to_all(a)
    np.testing.assert_array_equal(t, np.array([10 * j + r for j in range(p)], np.uint8).repeat(3))

    avg = comm.all_reduce(np.full(3, 2 * (r + 1), np.float16), ReduceOp.AVG)
    np.testing.assert_array_equal(avg, np.full(3, p + 1, np.float16))
    comm.barrier()
    assert comm.async_error is None


@pytest.mark.parametrize("world", [2, 3])
def test_every_collective(world):
    run_ranks(every_collective, world)


def ring_exchange(comm, r, p):
    n = 1 << 20  # 4 MiB of float32 each way: more than a link buffers
    out = np.full(n, r, np.float32)
    got = np.empty(n, np.float32)
    with ferrocoll.group():
        comm.send(out, (r + 1) % p)
        comm.recv(got, (r - 1) % p)
    np.testing.assert_array_equal(got, np.full(n, (r - 1) % p, np.float32))
    with ferrocoll.group():
        comm.send(np.full(1000, r + 0.5), (r + 1) % p)  # a temporary: the package keeps it
        got2 = comm.recv(np.empty(1000), (r - 1) % p)
        junk = [np.zeros(1000) for _ in range(20)]  # would reuse the temporary's memory
    np.testing.assert_array_equal(got2, np.full(1000, (r - 1) % p + 0.5))
    del junk
    if r == 0:
        comm.send(np.arange(5, dtype=np.int64), 1)
    elif r == 1:
        np.testing.assert_array_equal(comm.recv(np.empty(5, np.int64), 0), np.arange(5))


def test_send_recv_in_a_group_with_four_ranks():
    run_ranks(ring_exchange, 4)


def split_halves(comm, r, p):
    sub = comm.split(color=r % 2, key=-r)
    assert sub.size == 2 and sub.rank == (1 if r < 2 else 0)
    np.testing.assert_array_equal(sub.all_reduce(np.full(2, r, np.int32)), np.full(2, r % 2 + (r % 2 + 2)))
    sub.destroy()
    assert comm.split(None) is None


def test_split():
    run_ranks(split_halves, 4)


def low_precision(comm, r, p):
    for dt in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
        x = np.full(9, 0.5 * (r + 1), dt)
        comm.all_reduce(x, ReduceOp.SUM)
        np.testing.assert_array_equal(x.astype(np.float32), np.full(9, 0.5 * p * (p + 1) / 2, np.float32))


@pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed")
def test_bfloat16_and_fp8():
    run_ranks(low_precision, 2)


def compressed(comm, r, p):
    # Values exact in fp16: the compressed sum equals the exact one.
    g = (np.arange(1000) % 7 + r).astype(np.float32)
    comm.all_reduce_compressed(g, key="w0", codec="fp16")
    np.testing.assert_array_equal(g, (np.arange(1000) % 7) * p + p * (p - 1) / 2)
    # fp8 with error feedback: lossy, but close.
    x = np.linspace(-1, 1, 4096, dtype=np.float32) * (r + 1)
    comm.all_reduce_compressed(x, key="w1", codec="fp8")
    exact = np.linspace(-1, 1, 4096, dtype=np.float32) * (p * (p + 1) / 2)
    assert np.max(np.abs(x - exact)) <= 0.1 * np.max(np.abs(exact))
    with pytest.raises(ferrocoll.InvalidArgumentError):
        comm.all_reduce_compressed(np.zeros(3, np.float64), key="w2", codec="fp16")
    with pytest.raises(ferrocoll.InvalidArgumentError):
        comm.all_reduce_compressed(np.zeros(3, np.float32), key="w2", codec="zip")
    # PowerSGD compresses a 2-D matrix: a flat buffer (the C ABI, this call) is refused on
    # every rank before anything is sent, and the communicator stays usable.
    with pytest.raises(ferrocoll.InvalidArgumentError, match="PowerSGD compresses one 2-D gradient matrix"):
        comm.all_reduce_compressed(np.ones(64, np.float32), key="w3", codec="powersgd:4")
    comm.all_reduce_compressed(g, key="w0", codec="fp16")
    comm.reset_compression("w1")
    comm.reset_compression()


def test_compressed_all_reduce():
    run_ranks(compressed, 3)


def one_rank_aborts(comm, r, p):
    comm.all_reduce(np.ones(10, np.float32))
    if r == 1:
        comm.abort()
        return
    with pytest.raises((ferrocoll.RemoteError, ferrocoll.SystemFailureError)) as e:
        comm.all_reduce(np.ones(1 << 16, np.float32))
    assert e.value.code in (7002, 7006) and e.value.message
    assert comm.async_error == e.value.code


def test_a_failed_peer_raises_instead_of_hanging():
    run_ranks(one_rank_aborts, 2)


def async_calls(comm, r, p):
    import time

    big = np.full(1 << 22, r + 1, np.float32)  # 16 MiB
    if r == 1:
        time.sleep(1.0)  # rank 0's call cannot complete before rank 1 enters
    t0 = time.monotonic()
    w = comm.all_reduce(big, async_op=True)
    if r == 0:
        assert time.monotonic() - t0 < 0.3
        assert not w.is_completed()
        with pytest.raises(TimeoutError, match="not complete"):
            w.wait(timeout=0.05)
    assert w.wait() is big and w.is_completed()
    np.testing.assert_array_equal(big, np.full(1 << 22, p * (p + 1) / 2, np.float32))
    # Every collective has the form; issue order is completion order.
    g = comm.all_gather(np.array([r], np.int64), async_op=True)
    rs = comm.reduce_scatter(np.arange(2 * p, dtype=np.int32), "max", async_op=True)
    b = comm.broadcast(np.full(3, r, np.float64), root=p - 1, async_op=True)
    red = comm.reduce(np.ones(2, np.int64), root=0, async_op=True)
    a2a = comm.all_to_all(np.full(p, r, np.uint8), async_op=True)
    bar = comm.barrier(async_op=True)
    assert bar.wait() is None and g.is_completed() and a2a.is_completed()
    np.testing.assert_array_equal(g.wait().ravel(), np.arange(p))
    np.testing.assert_array_equal(rs.wait(), np.arange(2 * p)[2 * r:2 * r + 2])
    np.testing.assert_array_equal(b.wait(), np.full(3, p - 1.0))
    np.testing.assert_array_equal(red.wait(), np.full(2, p if r == 0 else 1))
    np.testing.assert_array_equal(a2a.wait(), np.arange(p, dtype=np.uint8))
    s = comm.send(np.full(4, r, np.int32), (r + 1) % p, async_op=True) if r % 2 == 0 else None
    got = comm.recv(np.empty(4, np.int32), (r - 1) % p, async_op=True)
    if r % 2:
        s = comm.send(np.full(4, r, np.int32), (r + 1) % p, async_op=True)
    np.testing.assert_array_equal(got.wait(), np.full(4, (r - 1) % p))
    assert s.wait() is None
    with pytest.raises(ferrocoll.InvalidUsageError, match="inside `with ferrocoll.group"):
        with ferrocoll.group():
            comm.barrier(async_op=True)
    # An error of the call itself is raised by wait().
    bad = comm.send(np.ones(2), r, async_op=True)
    with pytest.raises(ferrocoll.InvalidArgumentError, match="itself"):
        bad.wait()


def test_async_op_returns_at_once_and_completes_with_the_collective():
    run_ranks(async_calls, 2)


# -- errors, in this process with a world of one ---------------------------------------------


@pytest.fixture
def solo(monkeypatch):
    monkeypatch.setenv("FERROCOLL_RANK", "0")
    monkeypatch.setenv("FERROCOLL_WORLD_SIZE", "1")
    monkeypatch.setenv("FERROCOLL_STORE", f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv("FERROCOLL_SOCKET_IFNAME", "lo")
    comm = ferrocoll.init()
    yield comm
    comm.__exit__(None, None, None)


def test_errors_carry_code_and_message(solo):
    x = np.ones(4, np.float32)
    with pytest.raises(ferrocoll.InvalidArgumentError) as e:
        solo.all_reduce(x, op=9)
    assert e.value.code == 7004 and "operator" in e.value.message
    assert isinstance(e.value, ValueError)
    with pytest.raises(ferrocoll.InvalidArgumentError, match="root"):
        solo.broadcast(x, root=3)
    with pytest.raises(ferrocoll.InvalidArgumentError, match="itself"):
        solo.send(x, 0)
    with pytest.raises(ferrocoll.InvalidArgumentError, match="unsupported dtype"):
        solo.all_reduce(np.ones(2, np.complex64))
    with pytest.raises(ferrocoll.InvalidArgumentError, match="contiguous"):
        solo.all_reduce(np.ones((4, 4), np.float32)[:, 1])
    with pytest.raises(ferrocoll.InvalidArgumentError, match="read-only"):
        ro = np.ones(3, np.float32)
        ro.flags.writeable = False
        solo.all_reduce(ro)
    with pytest.raises(ferrocoll.InvalidArgumentError, match="in place"):
        solo.all_reduce([1.0, 2.0])
    with pytest.raises(ferrocoll.InvalidArgumentError):
        solo.split(-5)
    with pytest.raises(ferrocoll.InvalidArgumentError):
        ferrocoll.Communicator.init_rank(1, b"x" * 128, 0)
    # Still healthy after all of that.
    assert solo.async_error is None
    np.testing.assert_array_equal(solo.all_reduce(x.copy()), x)


class _Exposed:
    """Neither an ndarray nor a buffer: only a data pointer and a dtype."""

    def __init__(self, arr):
        self._arr = arr  # keeps the memory alive
        self.__array_interface__ = arr.__array_interface__


def test_any_buffer_object_and_empty_arrays(solo):
    backing = np.arange(6, dtype=np.float64)
    exposed = _Exposed(backing)
    solo.all_reduce(exposed, ReduceOp.SUM)
    solo.broadcast(exposed, root=0)
    np.testing.assert_array_equal(backing, np.arange(6))
    np.testing.assert_array_equal(solo.all_gather(exposed).ravel(), np.arange(6))
    dst = np.zeros(6)
    solo.all_reduce(np.arange(6.0), out=_Exposed(dst))  # written through the exposed pointer
    np.testing.assert_array_equal(dst, np.arange(6.0))
    raw = bytearray(4)
    solo.all_reduce(np.array([1, 2, 3, 4], np.uint8), out=raw)
    assert raw == bytearray(b"\x01\x02\x03\x04")
    b = bytearray(b"\x01\x02\x03")
    solo.broadcast(b, root=0)
    assert b == bytearray(b"\x01\x02\x03")
    m = memoryview(np.arange(4, dtype=np.int32))
    assert list(solo.all_reduce(m)) == [0, 1, 2, 3]
    assert solo.all_reduce(np.empty(0, np.float64)).size == 0


def test_destroyed_communicator_is_invalid_usage(solo):
    solo.destroy()
    with pytest.raises(ferrocoll.InvalidUsageError, match="destroyed") as e:
        solo.barrier()
    assert e.value.code == 7005


def test_unique_id_and_version(monkeypatch):
    monkeypatch.setenv("FERROCOLL_SOCKET_IFNAME", "lo")
    uid = ferrocoll.get_unique_id()
    assert len(uid) == 128 and uid[:4] == b"FCID"
    with ferrocoll.Communicator.init_rank(1, uid, 0) as c:
        assert (c.rank, c.size) == (0, 1)
    assert ferrocoll.version() == "0.1.0"


# -- torch.distributed backend ---------------------------------------------------------------


def _torch_python():
    """A Python with torch: FERROCOLL_TORCH_PYTHON, this one, or the peers' venv."""
    import subprocess
    import sys
    from pathlib import Path

    candidates = [os.environ.get("FERROCOLL_TORCH_PYTHON"), sys.executable,
                  str(Path.home() / ".peers-venv" / "bin" / "python")]
    for py in filter(None, candidates):
        if Path(py).exists() and subprocess.run(
            [py, "-c", "import torch, numpy"], capture_output=True
        ).returncode == 0:
            return py
    return None


def test_torch_backend_ddp_matches_gloo(tmp_path):
    import subprocess
    from pathlib import Path

    py = _torch_python()
    if py is None:
        pytest.skip("torch is not installed (set FERROCOLL_TORCH_PYTHON to a Python that has it)")
    pkg = Path(ferrocoll.__file__).resolve().parent
    # Only this package on the path: not the rest of this interpreter's site-packages.
    (tmp_path / "ferrocoll").symlink_to(pkg, target_is_directory=True)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), FERROCOLL_SOCKET_IFNAME="lo")
    if not os.environ.get("FERROCOLL_LIBRARY") and (pkg / "libferrocoll.so").exists():
        env["FERROCOLL_LIBRARY"] = str(pkg / "libferrocoll.so")
    script = Path(__file__).with_name("torch_ddp_check.py")
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    r = subprocess.run(torchrun + [str(script)], env=env, capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "max |loss difference|" in r.stdout and ": ok" in r.stdout, r.stdout


# -- the DDP compression hook (in this process; needs torch, not DDP) ------------------------


def test_compression_hook_refuses_powersgd(monkeypatch):
    pytest.importorskip("torch", reason="torch is not installed")
    import ferrocoll.torch as fct

    for codec in ("powersgd:4", " PowerSGD:2 ", "powersgd"):
        with pytest.raises(ValueError, match="cannot use PowerSGD"):
            fct.compression_hook(codec)
    monkeypatch.setenv("FERROCOLL_COMPRESSION", "powersgd:4")
    with pytest.raises(ValueError, match="FERROCOLL_COMPRESSION='powersgd:4'"):
        fct.compression_hook(None)
    monkeypatch.setenv("FERROCOLL_COMPRESSION", "fp8")
    assert callable(fct.compression_hook(None))
    assert callable(fct.compression_hook("onebit"))


class _Bucket:
    """What the hook uses of torch's GradBucket: index, flat gradient buffer, parameters."""

    def __init__(self, index, params, grads):
        self._index, self._params, self._buf = index, params, grads

    def index(self):
        return self._index

    def buffer(self):
        return self._buf

    def parameters(self):
        return self._params


def test_compression_hook_gives_a_rebuilt_bucket_fresh_state(monkeypatch):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    import torch.distributed as dist
    import ferrocoll.torch as fct

    monkeypatch.setenv("FERROCOLL_SOCKET_IFNAME", "lo")
    monkeypatch.delenv("FERROCOLL_COMPRESSION", raising=False)
    pg = fct.ProcessGroupFerrocoll(dist.HashStore(), 0, 1)
    try:
        gen = torch.Generator().manual_seed(5)
        a, b, c = (torch.nn.Parameter(torch.zeros(n)) for n in (100, 60, 60))

        def call(hook, params):
            grads = torch.randn(sum(p.numel() for p in params), generator=gen)
            out = hook(pg, _Bucket(0, params, grads.clone())).value()
            return grads, out

        hook = fct.compression_hook("onebit")  # lossy: leaves a residual for the next call
        call(hook, [a])
        call(hook, [a])
        # DDP rebuilt bucket 0 with more elements: fresh state, no FeedbackMismatch. Then
        # the same length but other parameters: fresh state too, not [a, b]'s residual,
        # so the result is what a new hook gives for the same gradients.
        call(hook, [a, b])
        grads, out = call(hook, [a, c])
        fresh = fct.compression_hook("onebit")(pg, _Bucket(0, [a, c], grads.clone())).value()
        assert torch.equal(out, fresh)
        # With the same layout again, the carried residual does change the result.
        grads2, again = call(hook, [a, c])
        first = fct.compression_hook("onebit")(pg, _Bucket(0, [a, c], grads2.clone())).value()
        assert not torch.equal(again, first)
    finally:
        pg.shutdown()
