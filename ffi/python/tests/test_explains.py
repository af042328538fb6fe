"""Errors that explain themselves: reduce operators in any accepted spelling (and a TypeError
listing them otherwise), buffer errors naming the argument with what was expected and what
was given, missing launcher variables named as missing, ``import ferrocoll.torch`` without
torch, and the type hints of the public API."""

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

import ferrocoll
from test_ferrocoll import _free_port, run_ranks

# -- reduce operators -------------------------------------------------------------------------


def ops_by_name(comm, r, p):
    x = np.arange(6, dtype=np.float32) + r  # rank r: [r, r+1, ...]
    # Names in any case, with spaces around, and the ReduceOp numbers.
    for op, want in (
        ("max", x - r + p - 1),
        ("MIN", x - r),
        (" Sum ", (x - r) * p + p * (p - 1) / 2),
        ("avg", x - r + (p - 1) / 2),
        ("prod", np.prod([x - r + k for k in range(p)], axis=0)),
        ("product", np.prod([x - r + k for k in range(p)], axis=0)),
        (2, x - r + p - 1),
    ):
        np.testing.assert_array_equal(comm.all_reduce(x.copy(), op=op), want, err_msg=repr(op))
    big = np.arange(2 * p, dtype=np.int64) * (r + 1)
    np.testing.assert_array_equal(
        comm.reduce_scatter(big, "MAX"), (np.arange(2 * p) * p)[2 * r:2 * r + 2]
    )
    got = comm.reduce(np.full(3, r + 1, np.int32), op="Max", root=0, out=np.zeros(3, np.int32))
    np.testing.assert_array_equal(got, np.full(3, p if r == 0 else 0))


def test_reduce_op_as_a_string():
    run_ranks(ops_by_name, 2)


def torch_ops(comm, r, p):
    import torch.distributed as dist

    x = np.array([1.0, 2.0, 3.0], np.float64) * (r + 1)
    np.testing.assert_array_equal(comm.all_reduce(x.copy(), dist.ReduceOp.MAX), x / (r + 1) * p)
    np.testing.assert_array_equal(comm.all_reduce(x.copy(), dist.ReduceOp.MIN), x / (r + 1))
    np.testing.assert_array_equal(comm.all_reduce(x.copy(), dist.ReduceOp.SUM), x / (r + 1) * 3)
    np.testing.assert_array_equal(comm.all_reduce(x.copy(), dist.ReduceOp.AVG), x / (r + 1) * 1.5)
    # A ReduceOp object (what torch hands a backend), not only its RedOpType value.
    prod = dist.ReduceOp(dist.ReduceOp.PRODUCT)
    np.testing.assert_array_equal(comm.all_reduce(x.copy(), prod), (x / (r + 1)) ** 2 * 2)
    with pytest.raises(TypeError, match="BAND"):
        comm.all_reduce(x.copy(), dist.ReduceOp.BAND)


def test_reduce_op_from_torch():
    pytest.importorskip("torch", reason="torch is not installed")
    run_ranks(torch_ops, 2)


def test_importing_ferrocoll_does_not_import_torch():
    code = (
        "import sys, numpy as np, ferrocoll\n"
        "ferrocoll._reduce_op('max'); ferrocoll._reduce_op(ferrocoll.ReduceOp.SUM)\n"
        "try:\n"
        "    ferrocoll._reduce_op(object())\n"
        "except TypeError:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


ACCEPTED = ("ReduceOp", "SUM", "PROD", "MAX", "MIN", "AVG", "'sum'", "'max'", "'avg'",
            "torch.distributed.ReduceOp")


@pytest.mark.parametrize("op", ["maximum", "", "sum,max", 9, -1, True, 1.5, None, b"max", object()])
def test_any_other_reduce_op_is_a_type_error_listing_the_accepted(solo, op):
    x = np.ones(4, np.float32)
    for call in (
        lambda: solo.all_reduce(x, op=op),
        lambda: solo.reduce(x, op=op),
        lambda: solo.reduce_scatter(x, op=op),
    ):
        with pytest.raises(TypeError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"op={op!r} "), msg
        for accepted in ACCEPTED:
            assert accepted in msg, (accepted, msg)
        # Also the package's argument error, like every other refusal here.
        assert isinstance(e.value, ferrocoll.InvalidArgumentError) and e.value.code == 7004
    # Refused before anything was sent: the communicator is still healthy.
    assert solo.async_error is None
    np.testing.assert_array_equal(solo.all_reduce(x.copy(), op="max"), x)


# -- buffers: the argument named, with what was expected and what was given --------------------


@pytest.fixture
def solo(monkeypatch):
    monkeypatch.setenv("FERROCOLL_RANK", "0")
    monkeypatch.setenv("FERROCOLL_WORLD_SIZE", "1")
    monkeypatch.setenv("FERROCOLL_STORE", f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv("FERROCOLL_SOCKET_IFNAME", "lo")
    comm = ferrocoll.init()
    yield comm
    comm.__exit__(None, None, None)


def _refused(call, *fragments):
    with pytest.raises(ferrocoll.InvalidArgumentError) as e:
        call()
    for f in fragments:
        assert f in e.value.message, (f, e.value.message)
    return e.value.message


F32 = np.ones(4, np.float32)
STRIDED = np.ones((4, 4), np.float32)[:, 1]  # shape (4,), strides (16,)


def test_wrong_dtype_names_the_argument(solo):
    _refused(lambda: solo.all_reduce(np.ones(2, np.complex64)),
             "buf has unsupported dtype complex64", "expected one of", "float32", "int64")
    _refused(lambda: solo.send(np.ones(2, bool), 0), "buf has unsupported dtype bool")
    _refused(lambda: solo.all_reduce(F32, out=np.ones(4)),
             "out has dtype float64, expected float32 (the dtype of buf)")
    _refused(lambda: solo.all_gather(F32, out=np.ones(4, np.int32)),
             "out has dtype int32, expected float32")
    _refused(lambda: solo.all_reduce(np.ones(2, np.complex64), out=np.ones(2, np.complex64)),
             "buf has unsupported dtype")
    _refused(lambda: solo.all_reduce_compressed(np.ones(3), key="k"),
             "buf has dtype float64, expected float32")
    _refused(lambda: solo.broadcast(None), "buf must be a NumPy array or a buffer", "NoneType")


def test_non_contiguous_names_the_argument(solo):
    for call, name in (
        (lambda: solo.all_reduce(STRIDED.copy()[::2]), "buf"),
        (lambda: solo.all_reduce(STRIDED), "buf"),
        (lambda: solo.all_gather(STRIDED), "buf"),
        (lambda: solo.all_reduce(F32, out=STRIDED), "out"),
        (lambda: solo.reduce(F32, out=STRIDED), "out"),
        (lambda: solo.recv(STRIDED, 0), "buf"),
    ):
        msg = _refused(call, f"{name} must be C-contiguous", "got an array of shape (")
        assert "strides" in msg


def test_wrong_size_names_the_argument(solo):
    _refused(lambda: solo.all_reduce(F32, out=np.ones(3, np.float32)),
             "out has 3 elements, expected at least 4")
    _refused(lambda: solo.reduce(F32, out=np.ones(2, np.float32)),
             "out has 2 elements, expected at least 4")
    _refused(lambda: solo.all_gather(F32, out=np.ones(3, np.float32)),
             "out has 3 elements, expected at least 4")
    _refused(lambda: solo.reduce_scatter(F32, out=np.ones(0, np.float32)),
             "out has 0 elements, expected at least 4")
    _refused(lambda: solo.all_to_all(F32, out=np.ones(1, np.float32)),
             "out has 1 elements, expected at least 4")
    _refused(lambda: ferrocoll.Communicator.init_rank(1, b"x" * 7, 0),
             "unique_id has 7 bytes, expected 128")


def uneven_blocks(comm, r, p):
    for call in (lambda: comm.reduce_scatter(np.ones(5, np.float32)),
                 lambda: comm.all_to_all(np.ones(5, np.float32))):
        with pytest.raises(ferrocoll.InvalidArgumentError) as e:
            call()
        assert "buf has 5 elements, expected a multiple of 2" in e.value.message
    with pytest.raises(ferrocoll.InvalidArgumentError) as e:
        comm.all_gather(np.ones(3, np.int8), out=np.ones(5, np.int8))
    assert "out has 5 elements, expected at least 6 (buf's 3 from each of 2 ranks)" in str(e.value)
    comm.barrier()  # nothing was sent: still in step


def test_buffers_that_do_not_split_over_the_ranks():
    run_ranks(uneven_blocks, 2)


def test_read_only_and_copies_name_the_argument(solo):
    ro = np.ones(3, np.float32)
    ro.flags.writeable = False
    _refused(lambda: solo.broadcast(ro), "buf must be writable, got a read-only ndarray")
    _refused(lambda: solo.all_reduce(F32, out=ro), "out must be writable")
    _refused(lambda: solo.all_reduce([1.0, 2.0]), "buf must be a buffer NumPy can view in place",
             "got a list")
    _refused(lambda: solo.all_reduce(np.ones(16, np.uint8), out=memoryview(bytes(16))),
             "out must be writable, got a read-only memoryview")
    _refused(lambda: solo.all_reduce(F32, out=bytes(16)), "out must be a buffer NumPy can view",
             "got a bytes")
    assert solo.async_error is None


# -- launcher variables -----------------------------------------------------------------------

LAUNCHER_VARS = (
    "FERROCOLL_RANK", "FERROCOLL_WORLD_SIZE", "FERROCOLL_STORE", "FERROCOLL_LOCAL_RANK",
    "FERROCOLL_LOCAL_WORLD_SIZE", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
    "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK", "PMI_SIZE",
    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
)


@pytest.fixture
def no_launcher(monkeypatch):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FERROCOLL_SOCKET_IFNAME", "lo")
    return monkeypatch


@pytest.mark.parametrize("env, says", [
    ({}, ["no launcher variables are set", "FERROCOLL_RANK, FERROCOLL_WORLD_SIZE and "
          "FERROCOLL_STORE are missing", "torchrun (RANK, WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
          "PMI_RANK", "SLURM_PROCID", "init_rank"]),
    ({"FERROCOLL_RANK": "0"}, ["FERROCOLL_WORLD_SIZE is missing", "FERROCOLL_RANK is set"]),
    ({"FERROCOLL_WORLD_SIZE": "2"}, ["FERROCOLL_RANK is missing", "FERROCOLL_WORLD_SIZE is set"]),
    ({"FERROCOLL_RANK": "0", "FERROCOLL_WORLD_SIZE": "2"},
     ["FERROCOLL_STORE is missing", "MASTER_ADDR and MASTER_PORT", "host:port", "file:DIR"]),
    ({"FERROCOLL_RANK": "", "FERROCOLL_WORLD_SIZE": "2"},
     ["FERROCOLL_RANK is set but empty, expected a non-negative integer"]),
    ({"FERROCOLL_RANK": "0", "FERROCOLL_WORLD_SIZE": "1", "FERROCOLL_STORE": " "},
     ["FERROCOLL_STORE is set but empty"]),
    ({"RANK": "0"}, ["WORLD_SIZE is missing", "torchrun"]),
    ({"RANK": "1", "WORLD_SIZE": "2"},
     ["FERROCOLL_STORE is missing", "(RANK, WORLD_SIZE from torchrun)"]),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, ["MASTER_PORT is missing"]),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "29500"}, ["MASTER_ADDR is missing"]),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, ["OMPI_COMM_WORLD_RANK is missing", "Open MPI"]),
    ({"PMI_RANK": "0"}, ["PMI_SIZE is missing"]),
    ({"SLURM_PROCID": "3"}, ["SLURM_NTASKS is missing", "Slurm"]),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, ["FERROCOLL_STORE is missing"]),
])
def test_a_missing_launcher_variable_is_named_as_missing(no_launcher, env, says):
    for k, v in env.items():
        no_launcher.setenv(k, v)
    with pytest.raises(ferrocoll.InvalidArgumentError) as e:
        ferrocoll.init()
    msg = e.value.message
    assert msg.startswith("ferrocoll.init: "), msg
    for fragment in says:
        assert fragment in msg, (fragment, msg)
    assert '=""' not in msg


def test_first_launcher_family_wins_as_in_the_library(no_launcher):
    # FERROCOLL_* complete: torchrun's half-set RANK is not looked at (nor by the library).
    no_launcher.setenv("FERROCOLL_RANK", "0")
    no_launcher.setenv("FERROCOLL_WORLD_SIZE", "1")
    no_launcher.setenv("FERROCOLL_STORE", f"127.0.0.1:{_free_port()}")
    no_launcher.setenv("RANK", "5")
    with ferrocoll.init() as comm:
        assert (comm.rank, comm.size) == (0, 1)
    # MASTER_ADDR/MASTER_PORT stand in for FERROCOLL_STORE (Open MPI's variables here).
    for var in ("FERROCOLL_RANK", "FERROCOLL_WORLD_SIZE", "FERROCOLL_STORE", "RANK"):
        no_launcher.delenv(var)
    no_launcher.setenv("OMPI_COMM_WORLD_RANK", "0")
    no_launcher.setenv("OMPI_COMM_WORLD_SIZE", "1")
    no_launcher.setenv("MASTER_ADDR", "127.0.0.1")
    no_launcher.setenv("MASTER_PORT", str(_free_port()))
    with ferrocoll.init() as comm:
        assert (comm.rank, comm.size) == (0, 1)


def test_bad_values_are_still_the_library_s_to_name(no_launcher):
    no_launcher.setenv("FERROCOLL_RANK", "two")
    no_launcher.setenv("FERROCOLL_WORLD_SIZE", "4")
    no_launcher.setenv("FERROCOLL_STORE", "127.0.0.1:1")
    with pytest.raises(ferrocoll.InvalidArgumentError, match='FERROCOLL_RANK="two"'):
        ferrocoll.init()


def test_join_names_a_missing_store(no_launcher):
    with pytest.raises(ferrocoll.InvalidArgumentError) as e:
        ferrocoll.join()
    assert "FERROCOLL_STORE is missing" in e.value.message and '=""' not in e.value.message
    no_launcher.setenv("FERROCOLL_STORE", "")
    with pytest.raises(ferrocoll.InvalidArgumentError, match="FERROCOLL_STORE is set but empty"):
        ferrocoll.join()


# -- ferrocoll.torch without torch --------------------------------------------------------------


def test_import_ferrocoll_torch_without_torch_says_to_install_the_extra():
    # sys.modules["torch"] = None makes `import torch` fail as if it were not installed.
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import ferrocoll\n"
        "try:\n"
        "    import ferrocoll.torch\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('imported')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pip install 'ferrocoll[torch]'" in r.stdout, r.stdout
    assert "pip install './ffi/python[torch]'" in r.stdout, r.stdout


def test_pyproject_has_the_torch_extra():
    tomllib = pytest.importorskip("tomllib", reason="Python < 3.11")
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["optional-dependencies"]["torch"] == ["torch"]


# -- type hints ---------------------------------------------------------------------------------


def test_public_api_is_typed():
    pkg = Path(ferrocoll.__file__).parent
    assert (pkg / "py.typed").is_file()
    hints_of = []
    for name in ("init", "join", "group", "get_unique_id", "version"):
        hints_of.append(getattr(ferrocoll, name))
    for name, member in vars(ferrocoll.Communicator).items():
        if name.startswith("_") and name not in ("__init__", "__enter__", "__exit__"):
            continue
        if isinstance(member, property):
            hints_of.append(member.fget)
        elif isinstance(member, (classmethod, staticmethod)):
            hints_of.append(member.__func__)
        elif inspect.isfunction(member):
            hints_of.append(member)
    for fn in hints_of:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)  # also: every annotation resolves
        unannotated = [p for p in sig.parameters
                       if p not in ("self", "cls", "exc") and p not in hints]
        assert not unannotated, f"{fn.__qualname__}: {unannotated} without a type hint"
        assert "return" in hints, f"{fn.__qualname__} has no return type"
