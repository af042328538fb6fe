"""Gather, scatter, the uneven collectives (all-gather-v, reduce-scatter-v, all-to-all-v) and
the premul-sum operator of the Python package, on 2-3 processes against expected values
(blocking, async_op=True, inside a group), and their argument errors in a world of one."""

import numpy as np
import pytest

import ferrocoll
from test_ferrocoll import run_ranks, solo  # noqa: F401  (solo: a fixture)


def _counts(p):
    """Uneven per-rank counts with an empty block: rank r has r elements (rank 0 none) ..."""
    return [(r * 2) % 3 for r in range(p)]  # p=2: [0, 2]; p=3: [0, 2, 1]


def uneven_calls(comm, r, p):
    # gather: root gets every rank's block in rank order; the others None
    got = comm.gather(np.full(3, r, np.int32), root=p - 1)
    if r == p - 1:
        np.testing.assert_array_equal(got, np.repeat(np.arange(p, dtype=np.int32), 3).reshape(p, 3))
    else:
        assert got is None
    # scatter: rank j gets root's block j; out required off the root
    src = np.arange(2 * p, dtype=np.float64).reshape(p, 2) if r == 0 else None
    out = comm.scatter(src, root=0, out=None if r == 0 else np.empty(2))
    np.testing.assert_array_equal(out, [2.0 * r, 2.0 * r + 1])

    # all-gather-v, packed and with displacements (gaps untouched)
    counts = _counts(p)
    mine = np.full(counts[r], r + 1, np.int64)
    want = np.concatenate([np.full(c, q + 1, np.int64) for q, c in enumerate(counts)])
    np.testing.assert_array_equal(comm.all_gather_v(mine, counts), want)
    displs = [3 * q for q in range(p)]
    out = np.full(3 * p, -1, np.int64)
    comm.all_gather_v(mine, counts, out=out, displs=displs)
    for q, c in enumerate(counts):
        np.testing.assert_array_equal(out[3 * q:3 * q + c], np.full(c, q + 1))
        np.testing.assert_array_equal(out[3 * q + c:3 * q + 3], -1)

    # reduce-scatter-v: rank r gets the sum of everyone's block r
    total = sum(counts)
    buf = np.arange(total, dtype=np.float32) + r
    got = comm.reduce_scatter_v(buf, counts)
    start = sum(counts[:r])
    want = p * np.arange(start, start + counts[r], dtype=np.float32) + sum(range(p))
    np.testing.assert_array_equal(got, want)
    got = comm.reduce_scatter_v(np.full(3 * p, r + 1, np.int32), [1] * p, op="max",
                                displs=[3 * q + 2 for q in range(p)])
    np.testing.assert_array_equal(got, [p])

    # all-to-all-v: rank r sends (j + 1) copies of its rank to rank j ... and zero to rank 0
    send = [0 if j == 0 else j + r for j in range(p)]
    recv = [0 if r == 0 else r + i for i in range(p)]
    buf = np.concatenate([np.full(c, 10 * r + j, np.int64) for j, c in enumerate(send)])
    got = comm.all_to_all_v(buf, send, recv)
    want = np.concatenate([np.full(c, 10 * i + r, np.int64) for i, c in enumerate(recv)])
    np.testing.assert_array_equal(got, want)

    # premul-sum: each rank its own factor, with every reducing call
    f = float(r + 1)
    x = np.full(4, 2.0, np.float64)
    comm.all_reduce(x, ferrocoll.PreMulSum(f))
    np.testing.assert_array_equal(x, np.full(4, 2.0 * p * (p + 1) / 2))
    y = comm.reduce(np.ones(2, np.float32), ferrocoll.PreMulSum(np.array([f])), root=0,
                    out=np.zeros(2, np.float32))
    if r == 0:
        np.testing.assert_array_equal(y, np.full(2, p * (p + 1) / 2))
    z = comm.reduce_scatter(np.ones(2 * p, np.float32), ferrocoll.PreMulSum(f))
    np.testing.assert_array_equal(z, np.full(2, p * (p + 1) / 2))
    z = comm.reduce_scatter_v(np.ones(total, np.float64), counts, ferrocoll.PreMulSum(f))
    np.testing.assert_array_equal(z, np.full(counts[r], p * (p + 1) / 2))

    # async_op=True: Works, completed in issue order; the premul-sum op lives until then
    ws = [
        comm.gather(np.array([r], np.int64), root=0, async_op=True),
        comm.scatter(np.arange(p, dtype=np.int64) if r == 0 else None, root=0,
                     out=np.empty(1, np.int64), async_op=True),
        comm.all_gather_v(mine, counts, async_op=True),
        comm.reduce_scatter_v(np.ones(total, np.float32), counts, async_op=True),
        comm.all_to_all_v(buf, send, recv, async_op=True),
        comm.all_reduce(np.ones(1 << 16, np.float32), ferrocoll.PreMulSum(0.5), async_op=True),
    ]
    g, s, ag, rs, a2a, pm = (w.wait() for w in ws)
    if r == 0:
        np.testing.assert_array_equal(g.ravel(), np.arange(p))
    np.testing.assert_array_equal(s, [r])
    np.testing.assert_array_equal(ag, np.concatenate([np.full(c, q + 1) for q, c in enumerate(counts)]))
    np.testing.assert_array_equal(rs, np.full(counts[r], p))
    np.testing.assert_array_equal(a2a, want)
    np.testing.assert_array_equal(pm, np.full(1 << 16, 0.5 * p, np.float32))

    # inside a group: queued, issued (and the premul-sum op freed) when it ends
    x = np.ones(3, np.float32)
    with ferrocoll.group():
        comm.all_reduce(x, ferrocoll.PreMulSum(3.0))
        v = comm.all_gather_v(mine, counts)
    np.testing.assert_array_equal(x, np.full(3, 3.0 * p))
    np.testing.assert_array_equal(v, np.concatenate([np.full(c, q + 1) for q, c in enumerate(counts)]))


@pytest.mark.parametrize("world", [2, 3])
def test_gather_scatter_uneven_and_premul_sum(world):
    run_ranks(uneven_calls, world)


def test_uneven_argument_errors(solo):  # noqa: F811
    comm = solo
    bad = ferrocoll.InvalidArgumentError
    with pytest.raises(bad, match=r"counts has 2 entries, expected 1 \(one per rank\)"):
        comm.all_gather_v(np.ones(1), [1, 1])
    with pytest.raises(bad, match=r"counts\[0\] is -1, expected a non-negative"):
        comm.reduce_scatter_v(np.ones(1), [-1])
    with pytest.raises(bad, match=r"displs has 0 entries"):
        comm.all_gather_v(np.ones(1), [1], displs=[])
    with pytest.raises(bad, match=r"send_counts has 3 entries"):
        comm.all_to_all_v(np.ones(3), [1, 1, 1], [1])
    with pytest.raises(bad, match=r"recv_displs\[0\] is -2"):
        comm.all_to_all_v(np.ones(1), [1], [1], recv_displs=[-2])
    with pytest.raises(bad, match=r"recv_counts\[0\] is 1.5"):
        comm.all_to_all_v(np.ones(1), [1], [1.5])
    with pytest.raises(bad, match=r"buf has 2 elements, but counts\[0\]"):
        comm.all_gather_v(np.ones(2), [3])
    with pytest.raises(bad, match=r"buf has 1 elements, expected at least 4"):
        comm.reduce_scatter_v(np.ones(1), [1], displs=[3])
    with pytest.raises(bad, match=r"out has 1 elements, expected at least 2"):
        comm.all_to_all_v(np.ones(2), [2], [2], out=np.empty(1))
    with pytest.raises(bad, match=r"root=1 is not a rank"):
        comm.gather(np.ones(1), root=1)
    with pytest.raises(bad, match=r"buf is None on the root"):
        comm.scatter(None)
    with pytest.raises(ferrocoll.InvalidReduceOpError, match="PreMulSum factor"):
        ferrocoll.PreMulSum(np.ones(2))
    with pytest.raises(ferrocoll.InvalidReduceOpError, match="PreMulSum"):
        comm.all_reduce(np.ones(1), op="premul")
    # a world of one: the calls themselves, and a premul-sum with an empty buffer
    np.testing.assert_array_equal(comm.all_to_all_v(np.arange(3.0), [3], [3]), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(comm.all_reduce(np.full(2, 3.0), ferrocoll.PreMulSum(2)), [6.0, 6.0])
    assert comm.reduce_scatter_v(np.ones(0, np.float32), [0], ferrocoll.PreMulSum(2)).size == 0
