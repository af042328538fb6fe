"""Surviving failures from Python: a rank killed with SIGKILL, the survivors catch
RevokedError, shrink and all-reduce; a replacement joins and the world grows back; the
argument errors of revoke/shrink/join. Ranks are real processes (multiprocessing, spawn)
meeting through a directory store (``FERROCOLL_STORE=file:DIR``), which outlives any rank."""

import os
import signal
import time
import traceback
import multiprocessing as mp

import numpy as np
import pytest

import ferrocoll
from ferrocoll import ReduceOp

HEARTBEAT = "1"  # seconds: FERROCOLL_HEARTBEAT_TIMEOUT of every job here


def _env(store, rank=None, world=None):
    env = dict(
        FERROCOLL_STORE=store,
        FERROCOLL_SOCKET_IFNAME="lo",
        FERROCOLL_TIMEOUT="30",
        FERROCOLL_HEARTBEAT_TIMEOUT=HEARTBEAT,
    )
    if rank is not None:
        env.update(FERROCOLL_RANK=str(rank), FERROCOLL_WORLD_SIZE=str(world))
    return env


def _works(comm):
    """An all-reduce of ones sums to the size of ``comm``."""
    x = np.ones(4096, np.float32)
    comm.all_reduce(x)
    np.testing.assert_array_equal(x, np.full_like(x, comm.size))


def _until_revoked(comm):
    """All-reduces until one raises; returns that exception (it must be RevokedError)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            comm.all_reduce(np.ones(1 << 16, np.float32))
        except ferrocoll.RevokedError as e:
            return e
    raise AssertionError("no failure within 20 s")


def _victim_rank(rank, world, store, grow, q):
    """Rank 2 dies by SIGKILL after one all-reduce; the others shrink, and with ``grow``
    wait for a replacement and grow back, then broadcast the state to it."""
    os.environ.update(_env(store, rank, world))
    try:
        comm = ferrocoll.init()
        _works(comm)
        comm.barrier()
        if rank == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        err = _until_revoked(comm)
        assert isinstance(err, ferrocoll.RemoteError) and err.code == 7006, err
        assert comm.async_error == 7006
        small = comm.shrink()
        assert (small.rank, small.size) == (rank, world - 1)
        _works(small)
        out = f"ok {small.size}"
        if grow:
            deadline = time.monotonic() + 30
            while True:
                waiting = np.array([small.joiners_waiting()], np.int64)
                small.all_reduce(waiting, ReduceOp.MAX)
                if waiting[0] > 0:
                    break
                assert time.monotonic() < deadline, "no replacement came"
                time.sleep(0.02)
            big = small.grow()
            assert big is not None and big.size == world, big
            big.broadcast(np.full(8, 42.0, np.float32), root=0)
            _works(big)
            out = f"ok grown {big.size}"
            big.destroy()
        small.destroy()
        comm.destroy()
        q.put((rank, out))
    except BaseException:
        q.put((rank, traceback.format_exc()))


def _joiner(store, q):
    os.environ.update(_env(store))
    try:
        comm = ferrocoll.join()
        state = np.zeros(8, np.float32)
        comm.broadcast(state, root=0)
        assert state[0] == 42.0, state
        _works(comm)
        q.put(("joiner", f"ok joined {comm.rank} {comm.size}"))
        comm.destroy()
    except BaseException:
        q.put(("joiner", traceback.format_exc()))


def _run_victim_job(tmp_path, grow):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    store = f"file:{tmp_path / 'store'}"
    (tmp_path / "store").mkdir()
    world = 3
    procs = [ctx.Process(target=_victim_rank, args=(r, world, store, grow, q))
             for r in range(world)]
    for p in procs:
        p.start()
    extra = []
    try:
        if grow:
            procs[2].join(timeout=60)
            assert procs[2].exitcode == -signal.SIGKILL, procs[2].exitcode
            j = ctx.Process(target=_joiner, args=(store, q))
            j.start()
            extra.append(j)
        results = {}
        for _ in range(2 + len(extra)):
            who, out = q.get(timeout=90)
            results[who] = out
    finally:
        for p in procs + extra:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert procs[2].exitcode == -signal.SIGKILL, procs[2].exitcode
    return results


def test_survivors_of_a_killed_rank_shrink_and_all_reduce(tmp_path):
    got = _run_victim_job(tmp_path, grow=False)
    assert got == {0: "ok 2", 1: "ok 2"}, "\n".join(map(str, got.values()))


def test_a_replacement_joins_and_the_world_grows_back(tmp_path):
    got = _run_victim_job(tmp_path, grow=True)
    want = {0: "ok grown 3", 1: "ok grown 3", "joiner": "ok joined 2 3"}
    assert got == want, "\n".join(map(str, got.values()))


# -- errors, in this process with a world of one ---------------------------------------------


@pytest.fixture
def solo(monkeypatch, tmp_path):
    (tmp_path / "store").mkdir()
    for k, v in _env(f"file:{tmp_path / 'store'}", 0, 1).items():
        monkeypatch.setenv(k, v)
    comm = ferrocoll.init()
    yield comm
    comm.__exit__(None, None, None)


def test_shrink_arguments_are_checked(solo):
    with pytest.raises(ferrocoll.InvalidArgumentError, match="not a rank"):
        solo.shrink(exclude=[3])
    with pytest.raises(ferrocoll.InvalidArgumentError, match="not a rank"):
        solo.shrink(exclude=[-1])
    with pytest.raises(ferrocoll.InvalidArgumentError, match="more than"):
        solo.shrink(exclude=[0, 0])
    with pytest.raises(ferrocoll.ExcludedError) as e:
        solo.shrink(exclude=[0])
    assert e.value.code == 7006 and isinstance(e.value, ferrocoll.RemoteError)
    with pytest.raises(ValueError):
        solo.shrink(exclude=["x"])
    _works(solo)  # nothing above touched it


def test_revoke_then_calls_raise_revoked_and_shrink_recovers(solo):
    assert solo.joiners_waiting() == 0
    assert solo.grow() is None
    solo.revoke()
    with pytest.raises(ferrocoll.RevokedError, match="revoked"):
        _works(solo)
    assert solo.async_error == 7006
    with solo.shrink() as fresh:
        assert (fresh.rank, fresh.size) == (0, 1)
        _works(fresh)


def test_join_without_a_store_is_an_invalid_argument(monkeypatch):
    monkeypatch.delenv("FERROCOLL_STORE", raising=False)
    with pytest.raises(ferrocoll.InvalidArgumentError, match="FERROCOLL_STORE"):
        ferrocoll.join()


# -- the torch backend (needs torch; runs in a Python that has it) ---------------------------


def test_torch_survivors_shrink_group_and_all_reduce(tmp_path):
    import subprocess
    from pathlib import Path

    from test_ferrocoll import _torch_python

    py = _torch_python()
    if py is None:
        pytest.skip("torch is not installed (set FERROCOLL_TORCH_PYTHON to a Python that has it)")
    pkg = Path(ferrocoll.__file__).resolve().parent
    # Only this package on the path: not the rest of this interpreter's site-packages.
    (tmp_path / "ferrocoll").symlink_to(pkg, target_is_directory=True)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), FERROCOLL_SOCKET_IFNAME="lo",
               FERROCOLL_HEARTBEAT_TIMEOUT=HEARTBEAT)
    if not os.environ.get("FERROCOLL_LIBRARY") and (pkg / "libferrocoll.so").exists():
        env["FERROCOLL_LIBRARY"] = str(pkg / "libferrocoll.so")
    script = Path(__file__).with_name("torch_shrink_check.py")
    r = subprocess.run([py, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "survivors shrank and all-reduced: ok" in r.stdout, r.stdout
