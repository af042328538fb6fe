"""Run by build_wheel.sh in a fresh venv holding only the installed wheel (and numpy), in
isolated mode (python -I: no source tree, no PYTHONPATH): the package and its library come
from the venv; 2 ranks all-reduce through it; ferrocoll.torch says to install the extra.

Usage: python -I wheel_smoke.py VENV
"""

import multiprocessing as mp
import os
import socket
import sys
import traceback
from pathlib import Path


def rank_main(rank, store, q):
    try:
        import numpy as np

        import ferrocoll

        os.environ.update(FERROCOLL_RANK=str(rank), FERROCOLL_WORLD_SIZE="2",
                          FERROCOLL_STORE=store, FERROCOLL_TIMEOUT="30")
        with ferrocoll.init() as comm:
            x = np.arange(1000, dtype=np.float32) * (rank + 1)
            comm.all_reduce(x)
            np.testing.assert_array_equal(x, np.arange(1000, dtype=np.float32) * 3)
            y = np.full(7, rank, np.int64)
            comm.all_reduce(y, op="max")
            np.testing.assert_array_equal(y, np.full(7, 1))
        q.put((rank, None))
    except BaseException:
        q.put((rank, traceback.format_exc()))


def main():
    venv = Path(sys.argv[1]).resolve()
    import ferrocoll

    pkg = Path(ferrocoll.__file__).resolve().parent
    lib = Path(ferrocoll._LIB._name).resolve()
    assert venv in pkg.parents, f"ferrocoll imported from {pkg}, not from {venv}"
    assert lib == pkg / "libferrocoll.so", f"library loaded from {lib}"
    assert (pkg / "py.typed").is_file()
    assert not any((Path(p) / "Cargo.toml").exists() for p in sys.path if p), sys.path
    print(f"ferrocoll {ferrocoll.version()} from {pkg}")

    try:
        import ferrocoll.torch  # noqa: F401
    except ImportError as e:
        assert "pip install 'ferrocoll[torch]'" in str(e), e
        print(f"import ferrocoll.torch without torch: {e}")
    else:
        raise AssertionError("ferrocoll.torch imported in a venv without torch")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        store = f"127.0.0.1:{s.getsockname()[1]}"
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, store, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=90) for _ in procs)
    for p in procs:
        p.join(timeout=10)
    failed = {r: e for r, e in results.items() if e}
    assert not failed, "\n".join(f"rank {r}:\n{e}" for r, e in failed.items())
    print("2 ranks: all_reduce (sum, 'max') through the installed wheel: ok")


if __name__ == "__main__":
    main()
