"""ferrocoll from Python: collectives on NumPy arrays over the C ABI (libferrocoll.so).

    import numpy as np, ferrocoll
    comm = ferrocoll.init()            # launcher variables: torchrun, mpirun, srun, FERROCOLL_*
    grads = np.ones(1 << 20, np.float32)
    comm.all_reduce(grads, ferrocoll.ReduceOp.AVG)   # in place; op="avg" works too
    work = comm.all_reduce(grads, async_op=True)      # returns at once: a Work
    work.wait()                                       # grads, once the collective is done

Buffers are NumPy arrays or anything NumPy can view without copying (``__array_interface__``,
the buffer protocol); they must be C-contiguous, and writable where written. bfloat16 and fp8
(e4m3fn, e5m2) arrays need ``ml_dtypes``. A reduce operator is a :class:`ReduceOp`, its name
(``"sum"``, ``"max"``, any case), or torch's ``torch.distributed.ReduceOp``. Failures raise
:class:`FerrocollError` subclasses that carry the C result code and a message; a bad argument
is named in it, with what was expected and what was given.

Surviving a failed rank (the job's store must outlive it: ``FERROCOLL_STORE=file:DIR``)::

    try:
        comm.all_reduce(grads)
    except ferrocoll.RevokedError:      # a peer died; every survivor gets this
        comm = comm.shrink()            # a communicator of the survivors
"""

import contextlib
import ctypes
import enum
import os
import sys
import threading
from typing import (
    Any, Callable, Dict, Generic, Iterable, Iterator, Literal, Mapping, Optional, TypeVar, Union,
    overload,
)

import numpy as np

from . import _lib
from ._errors import (  # noqa: F401  (re-exported)
    CommTimeoutError,
    ExcludedError,
    FerrocollError,
    InternalError,
    InvalidArgumentError,
    InvalidReduceOpError,
    InvalidUsageError,
    RemoteError,
    RevokedError,
    SystemFailureError,
    error_for,
)

__all__ = [
    "Communicator", "ReduceOp", "init", "get_unique_id", "group", "version",
    "FerrocollError", "InvalidArgumentError", "InvalidUsageError", "RemoteError",
    "CommTimeoutError", "SystemFailureError", "InternalError", "SPLIT_NOCOLOR",
    "RevokedError", "ExcludedError", "join", "SHRINK_DEFAULT", "SHRINK_ABORT",
    "InvalidReduceOpError", "BufferLike", "ReduceOpLike", "Work",
]

_LIB = _lib.load()
SPLIT_NOCOLOR = _lib.SPLIT_NOCOLOR
SHRINK_DEFAULT = _lib.SHRINK_DEFAULT
SHRINK_ABORT = _lib.SHRINK_ABORT


class ReduceOp(enum.IntEnum):
    """Reduction operators (the C ABI's fcRedOp_t numbers). Wherever one is taken, its name
    as a string (``"sum"``, ``"prod"``/``"product"``, ``"max"``, ``"min"``, ``"avg"``, any
    case) and torch's ``torch.distributed.ReduceOp`` (SUM, PRODUCT, MAX, MIN, AVG) are
    accepted too."""

    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    AVG = 4


#: A buffer the collectives read or write: a NumPy array, or any object NumPy can view
#: without copying (``__array_interface__``, the buffer protocol: memoryview, bytearray, a
#: CPU torch tensor, ...), C-contiguous.
BufferLike = Any

#: A reduce operator: a :class:`ReduceOp` (or its number), its name as a string, or a
#: ``torch.distributed.ReduceOp`` (not named here: torch is an optional dependency).
ReduceOpLike = Union[ReduceOp, str, int, Any]

_B = TypeVar("_B")
_R = TypeVar("_R")

_OP_NAMES = {
    "sum": ReduceOp.SUM,
    "prod": ReduceOp.PROD,
    "product": ReduceOp.PROD,
    "max": ReduceOp.MAX,
    "min": ReduceOp.MIN,
    "avg": ReduceOp.AVG,
}
# torch.distributed.ReduceOp's names for the operators ferrocoll has.
_TORCH_OPS = {
    "SUM": ReduceOp.SUM,
    "PRODUCT": ReduceOp.PROD,
    "MAX": ReduceOp.MAX,
    "MIN": ReduceOp.MIN,
    "AVG": ReduceOp.AVG,
}
_ACCEPTED_OPS = (
    "accepted: ferrocoll.ReduceOp.{SUM, PROD, MAX, MIN, AVG} (or its number 0-4), "
    "torch.distributed.ReduceOp.{SUM, PRODUCT, MAX, MIN, AVG}, or a string: "
    + ", ".join(repr(k) for k in _OP_NAMES)
    + " (any case)"
)


def _bad_op(op: Any, why: str = "is not a reduce operator") -> InvalidReduceOpError:
    return InvalidReduceOpError(7004, f"op={op!r} {why}; {_ACCEPTED_OPS}")


def _torch_op(op: Any) -> Optional[ReduceOp]:
    """``op`` as a ReduceOp if it is torch's ReduceOp (or its RedOpType), else None. Looks
    only when torch.distributed is already imported: never imports torch."""
    dist = sys.modules.get("torch.distributed")
    torch_op = getattr(dist, "ReduceOp", None)
    if torch_op is None or not isinstance(torch_op, type):
        return None
    red_op_type = getattr(torch_op, "RedOpType", None)
    if red_op_type is None:
        return None
    # (torch's metaclass makes RedOpType values instances of ReduceOp too.)
    if not isinstance(op, red_op_type):
        if not isinstance(op, torch_op):
            return None
        op = getattr(op, "op", None)  # the RedOpType a ReduceOp object wraps
    name = getattr(op, "name", None)
    if name in _TORCH_OPS:
        return _TORCH_OPS[name]
    raise _bad_op(op, f"(torch.distributed.ReduceOp.{name}) has no ferrocoll counterpart")


def _reduce_op(op: ReduceOpLike) -> ReduceOp:
    """``op`` as a :class:`ReduceOp`, or :class:`InvalidReduceOpError` listing the accepted
    values."""
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str):
        found = _OP_NAMES.get(op.strip().lower())
        if found is None:
            raise _bad_op(op, "is not the name of a reduce operator")
        return found
    from_torch = _torch_op(op)
    if from_torch is not None:
        return from_torch
    if isinstance(op, (int, np.integer)) and not isinstance(op, (bool, np.bool_)):
        try:
            return ReduceOp(int(op))
        except ValueError:
            raise _bad_op(op, "is not the number of a reduce operator") from None
    raise _bad_op(op)


def _dtype_codes() -> Dict[np.dtype, int]:
    codes: Dict[np.dtype, int] = {
        np.dtype(np.int8): 0,
        np.dtype(np.uint8): 1,
        np.dtype(np.int32): 2,
        np.dtype(np.uint32): 3,
        np.dtype(np.int64): 4,
        np.dtype(np.uint64): 5,
        np.dtype(np.float16): 6,
        np.dtype(np.float32): 7,
        np.dtype(np.float64): 8,
    }
    try:
        import ml_dtypes  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return codes
    codes[np.dtype(ml_dtypes.bfloat16)] = 9
    codes[np.dtype(ml_dtypes.float8_e4m3fn)] = 10
    codes[np.dtype(ml_dtypes.float8_e5m2)] = 11
    return codes


_CODES = _dtype_codes()
# bfloat16, when ml_dtypes is installed (and with it fp8)
_LOW_PRECISION = next((d for d, code in _CODES.items() if code == 9), None)
_DTYPE_NAMES = ", ".join(str(d) for d in _CODES)


def _error(rc: int) -> FerrocollError:
    """The exception for result ``rc`` of the C call this thread just made."""
    msg = _LIB.fcGetLastError(None)
    return error_for(rc, msg.decode("utf-8", "replace") if msg else "")


def _check(rc: int) -> None:
    if rc != 0:
        raise _error(rc)


class Work(Generic[_R]):
    """A call in flight, from a collective called with ``async_op=True``: the call was
    issued and runs in the background (calls on one communicator complete in issue order).
    The buffers must not be touched until it has completed; the Work keeps them alive.
    Dropping a Work waits for its call."""

    def __init__(self, handle: Optional[int], keep: tuple, result: _R) -> None:
        self._h: Optional[int] = handle
        self._keep = keep
        self._result = result
        self._error: Optional[FerrocollError] = None

    def _finish(self, rc: int) -> None:
        self._error = _error(rc) if rc != 0 else None
        h, self._h = self._h, None
        if h:
            _LIB.fcWorkFree(h)
        self._keep = ()

    def is_completed(self) -> bool:
        """Whether the call has completed (successfully or not). Never blocks."""
        if self._h is None:
            return True
        done = ctypes.c_int()
        rc = _LIB.fcWorkTest(self._h, ctypes.byref(done))
        if done.value or rc != 0:
            self._finish(rc)
            return True
        return False

    def wait(self, timeout: Optional[float] = None) -> _R:
        """Waits for the call (at most ``timeout`` seconds; None: no limit) and returns what
        the blocking call returns, or raises its error. Raises ``TimeoutError`` when the
        timeout passes first; the call goes on (wait again)."""
        if self._h is not None:
            ms = -1 if timeout is None else max(0, int(timeout * 1000))
            rc = _LIB.fcWorkWait(self._h, ms)
            if rc == _lib.IN_PROGRESS:
                raise TimeoutError(f"ferrocoll: the call is not complete after {timeout} s; it "
                                   "goes on (wait again)")
            self._finish(rc)
        if self._error is not None:
            raise self._error
        return self._result

    def __del__(self) -> None:
        h, self._h = getattr(self, "_h", None), None
        if h:
            _LIB.fcWorkFree(h)  # waits for the call: its buffers are in use until then


def version() -> str:
    """The C library's version, ``major.minor.patch``."""
    v = ctypes.c_int()
    _check(_LIB.fcGetVersion(ctypes.byref(v)))
    return f"{v.value // 10000}.{v.value // 100 % 100}.{v.value % 100}"


def get_unique_id() -> bytes:
    """A new unique id (128 bytes) for :meth:`Communicator.init_rank`; this process serves
    the job's rendezvous store (call it in rank 0's process and send the bytes to the others)."""
    uid = _lib.UniqueIdStruct()
    _check(_LIB.fcGetUniqueId(ctypes.byref(uid)))
    return ctypes.string_at(ctypes.addressof(uid), _lib.UNIQUE_ID_BYTES)


def _bad_arg(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(7004, message)


def _view(buf: BufferLike, writable: bool, what: str) -> np.ndarray:
    """`buf` as an ndarray over the same memory (never a copy). Every refusal names the
    argument (`what`), what it must be and what it is."""
    arr = buf if isinstance(buf, np.ndarray) else np.asarray(buf)
    if arr.dtype == object and arr is not buf:  # NumPy wrapped an object it cannot view
        raise _bad_arg(
            f"{what} must be a NumPy array or a buffer (memoryview, bytearray, any object "
            f"with __array_interface__), got {type(buf).__name__}"
        )
    if writable and arr is not buf and arr.flags.owndata:
        # NumPy had to copy (a list, say): results written there would be lost.
        raise _bad_arg(
            f"{what} must be a buffer NumPy can view in place, to hold the results (a NumPy "
            f"array, a writable buffer), got a {type(buf).__name__}, which NumPy can only copy"
        )
    if not arr.flags.c_contiguous:
        raise _bad_arg(
            f"{what} must be C-contiguous, got an array of shape {arr.shape} with strides "
            f"{arr.strides} (a slice or transpose; np.ascontiguousarray makes a contiguous "
            f"copy{', then copy the result back' if writable else ''})"
        )
    if writable and not arr.flags.writeable:
        raise _bad_arg(f"{what} must be writable, got a read-only {type(buf).__name__}")
    if arr.dtype not in _CODES:
        hint = ""
        if arr.dtype.kind == "V" and _LOW_PRECISION is None:
            hint = " (install ml_dtypes for bfloat16/fp8)"
        raise _bad_arg(
            f"{what} has unsupported dtype {arr.dtype}{hint}; expected one of {_DTYPE_NAMES}"
        )
    return arr


_TLS = threading.local()


def _keep(*arrays: np.ndarray) -> None:
    """Inside a group, keeps the arrays of a queued call alive until the group ends."""
    kept = getattr(_TLS, "kept", None)
    if kept is not None:
        kept.extend(arrays)


def _ptr(arr: np.ndarray) -> Optional[ctypes.c_void_p]:
    return ctypes.c_void_p(arr.ctypes.data) if arr.size else None


def _same_type(a: np.ndarray, b: np.ndarray) -> None:
    if a.dtype != b.dtype:
        raise _bad_arg(f"out has dtype {b.dtype}, expected {a.dtype} (the dtype of buf)")


def _room(out: np.ndarray, needed: int, why: str) -> None:
    """`out` holds at least `needed` elements."""
    if out.size < needed:
        raise _bad_arg(f"out has {out.size} elements, expected at least {needed} ({why})")


def _ranks(n: int) -> str:
    return f"{n} rank" if n == 1 else f"{n} ranks"


def _splits(buf: np.ndarray, ranks: int) -> int:
    """The block size when `buf` splits into `ranks` equal blocks."""
    if buf.size % ranks:
        raise _bad_arg(
            f"buf has {buf.size} elements, expected a multiple of {ranks}, the number of "
            "ranks (one equal block per rank)"
        )
    return buf.size // ranks


# -- launcher variables: checked here, so that a missing one is named as missing ------------

# The families the C library reads (src/config/launcher.rs), in its order: the first whose
# rank or world-size variable is set is used, and then needs both.
_LAUNCHERS = (
    ("FERROCOLL_*", "FERROCOLL_RANK", "FERROCOLL_WORLD_SIZE"),
    ("torchrun", "RANK", "WORLD_SIZE"),
    ("Open MPI mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI", "PMI_RANK", "PMI_SIZE"),
    ("Slurm srun", "SLURM_PROCID", "SLURM_NTASKS"),
)
_STORE_FORMS = "host:port, tcp://host:port, etcd://host:port/prefix or file:DIR"


def _launch_env_error(env: Mapping[str, str]) -> Optional[str]:
    """What is missing or empty among the launcher variables of `env`, or None when the C
    library has what it needs to start (it checks the values themselves)."""
    for launcher, rank_var, world_var in _LAUNCHERS:
        rank, world = env.get(rank_var), env.get(world_var)
        if rank is None and world is None:
            continue
        for var, val, other in ((rank_var, rank, world_var), (world_var, world, rank_var)):
            if val is None:
                return (
                    f"{var} is missing: {other} is set, so this process reads the "
                    f"{launcher} launcher variables, which need both {rank_var} and {world_var}"
                )
            if not val.strip():
                return f"{var} is set but empty, expected a non-negative integer"
        store = env.get("FERROCOLL_STORE")
        if store is not None:
            if not store.strip():
                return f"FERROCOLL_STORE is set but empty, expected {_STORE_FORMS}"
            return None
        addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
        if addr is None and port is None:
            return (
                f"FERROCOLL_STORE is missing, and so are MASTER_ADDR and MASTER_PORT (its "
                f"fallback): the ranks ({rank_var}, {world_var} from {launcher}) need a place "
                f"to meet, FERROCOLL_STORE={_STORE_FORMS}"
            )
        for var, val in (("MASTER_ADDR", addr), ("MASTER_PORT", port)):
            if val is None:
                return f"{var} is missing: MASTER_ADDR and MASTER_PORT go together"
            if not val.strip():
                return f"{var} is set but empty"
        return None
    return (
        "no launcher variables are set: FERROCOLL_RANK, FERROCOLL_WORLD_SIZE and "
        "FERROCOLL_STORE are missing, and so are those of torchrun (RANK, WORLD_SIZE, "
        "MASTER_ADDR, MASTER_PORT), Open MPI's mpirun (OMPI_COMM_WORLD_RANK, "
        "OMPI_COMM_WORLD_SIZE), PMI (PMI_RANK, PMI_SIZE) and Slurm's srun (SLURM_PROCID, "
        "SLURM_NTASKS). Start the program under one of these launchers, set the FERROCOLL_* "
        "variables, or use Communicator.init_rank with an id from get_unique_id()"
    )


class Communicator:
    """One rank's handle on a group of ranks. Calls on a communicator must be made in the same
    order on every rank; they block until this rank's part is done, or, with
    ``async_op=True``, return a :class:`Work` at once."""

    def __init__(self, handle: Optional[int]) -> None:
        self._h = ctypes.c_void_p(handle)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_env(cls) -> "Communicator":
        """This process's rank from launcher variables (torchrun, mpirun, srun, or
        FERROCOLL_RANK / FERROCOLL_WORLD_SIZE / FERROCOLL_STORE). A missing variable raises
        :class:`InvalidArgumentError` naming it."""
        problem = _launch_env_error(os.environ)
        if problem is not None:
            raise _bad_arg(f"ferrocoll.init: {problem}")
        h = ctypes.c_void_p()
        _check(_LIB.fcCommInitFromEnv(ctypes.byref(h)))
        return cls(h.value)

    @classmethod
    def init_rank(cls, nranks: int, unique_id: bytes, rank: int) -> "Communicator":
        """Rank ``rank`` of ``nranks`` meeting through ``unique_id`` (:func:`get_unique_id`)."""
        if len(unique_id) != _lib.UNIQUE_ID_BYTES:
            raise _bad_arg(
                f"unique_id has {len(unique_id)} bytes, expected {_lib.UNIQUE_ID_BYTES} "
                "(from get_unique_id())"
            )
        uid = _lib.UniqueIdStruct.from_buffer_copy(bytes(unique_id))
        h = ctypes.c_void_p()
        _check(_LIB.fcCommInitRank(ctypes.byref(h), nranks, uid, rank))
        return cls(h.value)

    def split(self, color: Optional[int], key: int = 0) -> Optional["Communicator"]:
        """Ranks passing the same ``color`` form a new communicator ordered by ``key``;
        ``SPLIT_NOCOLOR`` (or None) joins none and returns None. Collective."""
        h = ctypes.c_void_p()
        c = SPLIT_NOCOLOR if color is None else color
        _check(_LIB.fcCommSplit(self._h, c, key, ctypes.byref(h)))
        return Communicator(h.value) if h.value else None

    @classmethod
    def join(cls) -> "Communicator":
        """A replacement process joins a running job: the job's store comes from
        ``FERROCOLL_STORE`` (the other ``FERROCOLL_*`` variables as the members had them).
        Blocks, up to ``FERROCOLL_TIMEOUT``, until the members call :meth:`grow`; returns this
        process's rank of the grown communicator."""
        store = os.environ.get("FERROCOLL_STORE")
        if not store or not store.strip():
            state = "missing" if store is None else "set but empty"
            raise _bad_arg(
                f"ferrocoll.join: FERROCOLL_STORE is {state}: a replacement joins through "
                f"the running job's store ({_STORE_FORMS}, as the job's ranks have it)"
            )
        h = ctypes.c_void_p()
        _check(_LIB.fcCommJoin(ctypes.byref(h)))
        return cls(h.value)

    # -- surviving failures ----------------------------------------------------------------
    def revoke(self) -> None:
        """Revokes the communicator on every rank: the call in progress (in another thread)
        and every later one raise :class:`RevokedError`, here at once and on the other ranks
        within the heartbeat period (``FERROCOLL_HEARTBEAT_TIMEOUT``). Never blocks. The
        handle stays valid for :meth:`shrink`."""
        _check(_LIB.fcCommRevoke(self._h, 0))

    def shrink(self, exclude: Optional[Iterable[int]] = None, abort: bool = False) -> "Communicator":
        """A new communicator of part of this one (NCCL's ``ncclCommShrink``); this one stays
        valid (destroy it when done).

        ``exclude`` None or empty: after a failure, every rank still alive calls it; they
        agree on who survived and the new communicator spans them (ranks renumbered densely,
        in the old order). Otherwise every rank not in ``exclude`` calls it with the same
        ranks. ``abort=True`` revokes this communicator first (``FC_SHRINK_ABORT``), failing
        calls still running on it. Raises :class:`ExcludedError` on a rank that is not part of
        the new communicator, :class:`InvalidArgumentError` for ranks out of range or listed
        twice, :class:`InvalidUsageError` when the ranks' lists differ."""
        ranks = [] if exclude is None else [int(r) for r in exclude]
        arr = (ctypes.c_int * len(ranks))(*ranks) if ranks else None
        h = ctypes.c_void_p()
        flags = SHRINK_ABORT if abort else SHRINK_DEFAULT
        _check(_LIB.fcCommShrink(self._h, arr, len(ranks), ctypes.byref(h), None, flags))
        return Communicator(h.value)

    def joiners_waiting(self) -> int:
        """How many replacement processes wait to join (:func:`join`). Read by each rank on
        its own: agree on it (e.g. an all-reduce with MAX) before every rank calls
        :meth:`grow`."""
        v = ctypes.c_int()
        _check(_LIB.fcCommJoinersWaiting(self._h, ctypes.byref(v)))
        return v.value

    def grow(self) -> Optional["Communicator"]:
        """Admits the waiting replacements, collectively (every rank calls it at the same
        point): returns a communicator of this one's ranks (same numbers) followed by the
        replacements, or None on every rank when nobody was waiting."""
        h = ctypes.c_void_p()
        _check(_LIB.fcCommGrow(self._h, ctypes.byref(h)))
        return Communicator(h.value) if h.value else None

    # -- lifecycle -------------------------------------------------------------------------
    def destroy(self) -> None:
        """Frees the communicator; later calls raise InvalidUsageError."""
        _check(_LIB.fcCommDestroy(self._h))

    def abort(self) -> None:
        """Fails the call in progress (from another thread) and every later one; frees it."""
        _check(_LIB.fcCommAbort(self._h))

    def __enter__(self) -> "Communicator":
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(InvalidUsageError):
            self.destroy()

    @property
    def rank(self) -> int:
        v = ctypes.c_int()
        _check(_LIB.fcCommUserRank(self._h, ctypes.byref(v)))
        return v.value

    @property
    def size(self) -> int:
        v = ctypes.c_int()
        _check(_LIB.fcCommCount(self._h, ctypes.byref(v)))
        return v.value

    @property
    def async_error(self) -> Optional[int]:
        """None while healthy, else the fcResult_t code of the failure that stopped it."""
        v = ctypes.c_int()
        _check(_LIB.fcCommGetAsyncError(self._h, ctypes.byref(v)))
        return v.value or None

    # -- collectives -----------------------------------------------------------------------
    # Every collective takes ``async_op``: False (default) returns when this rank's part is
    # done; True returns a :class:`Work` at once (one asynchronous group of the C ABI), whose
    # ``wait()`` gives what the blocking call returns.
    def _run(self, arrays: tuple, call: Callable[[], int], result: _R,
             async_op: bool) -> Union[_R, "Work[_R]"]:
        if not async_op:
            _keep(*arrays)
            _check(call())
            return result
        if getattr(_TLS, "kept", None) is not None:
            raise InvalidUsageError(
                7005,
                "async_op=True inside `with ferrocoll.group():`: the group's end issues its "
                "calls (use async_op=False there)",
            )
        _check(_LIB.fcGroupStart())
        rc = call()
        failed = _error(rc) if rc != 0 else None
        h = ctypes.c_void_p()
        end = _LIB.fcGroupEndAsync(ctypes.byref(h))
        if failed is not None:
            if end == 0 and h.value:
                _LIB.fcWorkFree(h)
            raise failed
        _check(end)
        return Work(h.value, arrays, result)

    @overload
    def all_reduce(self, buf: _B, op: ReduceOpLike = ..., out: None = ...,
                   *, async_op: Literal[False] = ...) -> _B: ...

    @overload
    def all_reduce(self, buf: BufferLike, op: ReduceOpLike, out: BufferLike,
                   *, async_op: Literal[False] = ...) -> np.ndarray: ...

    @overload
    def all_reduce(self, buf: BufferLike, *, out: BufferLike,
                   async_op: Literal[False] = ...) -> np.ndarray: ...

    @overload
    def all_reduce(self, buf: _B, op: ReduceOpLike = ..., out: None = ...,
                   *, async_op: Literal[True]) -> "Work[_B]": ...

    @overload
    def all_reduce(self, buf: BufferLike, op: ReduceOpLike = ..., *, out: BufferLike,
                   async_op: Literal[True]) -> "Work[np.ndarray]": ...

    def all_reduce(self, buf: Any, op: ReduceOpLike = ReduceOp.SUM, out: Any = None,
                   *, async_op: bool = False) -> Any:
        """Reduces ``buf`` over all ranks into ``out`` (in place when ``out`` is None);
        returns ``buf`` (in place) or the array view of ``out``."""
        o = _reduce_op(op)
        x = _view(buf, out is None, "buf")
        y = x if out is None else _view(out, True, "out")
        _same_type(x, y)
        _room(y, x.size, "as many as buf")
        return self._run(
            (x, y),
            lambda: _LIB.fcAllReduce(_ptr(x), _ptr(y), x.size, _CODES[x.dtype], int(o), self._h, None),
            y if out is not None else buf, async_op)

    @overload
    def all_gather(self, buf: BufferLike, out: Optional[BufferLike] = ...,
                   *, async_op: Literal[False] = ...) -> np.ndarray: ...

    @overload
    def all_gather(self, buf: BufferLike, out: Optional[BufferLike] = ...,
                   *, async_op: Literal[True]) -> "Work[np.ndarray]": ...

    def all_gather(self, buf: BufferLike, out: Optional[BufferLike] = None,
                   *, async_op: bool = False) -> Any:
        """Every rank's ``buf`` in rank order: ``out`` (new, shape ``(size, *buf.shape)``,
        when None) holds ``size × buf.size`` elements."""
        x = _view(buf, False, "buf")
        p = self.size
        y = np.empty((p,) + x.shape, x.dtype) if out is None else _view(out, True, "out")
        _same_type(x, y)
        _room(y, x.size * p, f"buf's {x.size} from each of {_ranks(p)}")
        return self._run(
            (x, y),
            lambda: _LIB.fcAllGather(_ptr(x), _ptr(y), x.size, _CODES[x.dtype], self._h, None),
            y, async_op)

    @overload
    def reduce_scatter(self, buf: BufferLike, op: ReduceOpLike = ...,
                       out: Optional[BufferLike] = ...,
                       *, async_op: Literal[False] = ...) -> np.ndarray: ...

    @overload
    def reduce_scatter(self, buf: BufferLike, op: ReduceOpLike = ...,
                       out: Optional[BufferLike] = ...,
                       *, async_op: Literal[True]) -> "Work[np.ndarray]": ...

    def reduce_scatter(self, buf: BufferLike, op: ReduceOpLike = ReduceOp.SUM,
                       out: Optional[BufferLike] = None, *, async_op: bool = False) -> Any:
        """Block ``rank`` of the reduction of every rank's ``buf`` (``size`` equal blocks)."""
        o = _reduce_op(op)
        x = _view(buf, False, "buf")
        p = self.size
        n = _splits(x, p)
        y = np.empty(n, x.dtype) if out is None else _view(out, True, "out")
        _same_type(x, y)
        _room(y, n, f"one block of buf over {_ranks(p)}")
        return self._run(
            (x, y),
            lambda: _LIB.fcReduceScatter(_ptr(x), _ptr(y), n, _CODES[x.dtype], int(o), self._h, None),
            y, async_op)

    @overload
    def broadcast(self, buf: _B, root: int = ..., *, async_op: Literal[False] = ...) -> _B: ...

    @overload
    def broadcast(self, buf: _B, root: int = ..., *, async_op: Literal[True]) -> "Work[_B]": ...

    def broadcast(self, buf: Any, root: int = 0, *, async_op: bool = False) -> Any:
        """Every rank's ``buf`` becomes ``root``'s (in place)."""
        x = _view(buf, True, "buf")
        return self._run(
            (x,),
            lambda: _LIB.fcBroadcast(_ptr(x), _ptr(x), x.size, _CODES[x.dtype], root, self._h, None),
            buf, async_op)

    @overload
    def reduce(
        self, buf: _B, op: ReduceOpLike = ..., root: int = ..., out: None = ...,
        *, async_op: Literal[False] = ...
    ) -> _B: ...

    @overload
    def reduce(
        self, buf: BufferLike, op: ReduceOpLike, root: int, out: BufferLike,
        *, async_op: Literal[False] = ...
    ) -> np.ndarray: ...

    @overload
    def reduce(
        self, buf: BufferLike, op: ReduceOpLike = ..., root: int = ..., *, out: BufferLike,
        async_op: Literal[False] = ...
    ) -> np.ndarray: ...

    @overload
    def reduce(
        self, buf: _B, op: ReduceOpLike = ..., root: int = ..., out: None = ...,
        *, async_op: Literal[True]
    ) -> "Work[_B]": ...

    @overload
    def reduce(
        self, buf: BufferLike, op: ReduceOpLike = ..., root: int = ..., *, out: BufferLike,
        async_op: Literal[True]
    ) -> "Work[np.ndarray]": ...

    def reduce(
        self, buf: Any, op: ReduceOpLike = ReduceOp.SUM, root: int = 0, out: Any = None,
        *, async_op: bool = False
    ) -> Any:
        """``root``'s ``out`` (``buf`` in place when None) becomes the reduction of all ranks'
        ``buf``; other ranks' output is untouched."""
        o = _reduce_op(op)
        x = _view(buf, out is None, "buf")
        y = x if out is None else _view(out, True, "out")
        _same_type(x, y)
        _room(y, x.size, "as many as buf")
        return self._run(
            (x, y),
            lambda: _LIB.fcReduce(_ptr(x), _ptr(y), x.size, _CODES[x.dtype], int(o), root, self._h, None),
            y if out is not None else buf, async_op)

    @overload
    def all_to_all(self, buf: BufferLike, out: Optional[BufferLike] = ...,
                   *, async_op: Literal[False] = ...) -> np.ndarray: ...

    @overload
    def all_to_all(self, buf: BufferLike, out: Optional[BufferLike] = ...,
                   *, async_op: Literal[True]) -> "Work[np.ndarray]": ...

    def all_to_all(self, buf: BufferLike, out: Optional[BufferLike] = None,
                   *, async_op: bool = False) -> Any:
        """Block ``j`` of ``buf`` goes to rank ``j``, which stores it as block ``rank``."""
        x = _view(buf, False, "buf")
        p = self.size
        n = _splits(x, p)
        y = np.empty_like(x) if out is None else _view(out, True, "out")
        _same_type(x, y)
        _room(y, x.size, "as many as buf")
        return self._run(
            (x, y),
            lambda: _LIB.fcAllToAll(_ptr(x), _ptr(y), n, _CODES[x.dtype], self._h, None),
            y, async_op)

    @overload
    def send(self, buf: BufferLike, peer: int, *, async_op: Literal[False] = ...) -> None: ...

    @overload
    def send(self, buf: BufferLike, peer: int, *, async_op: Literal[True]) -> "Work[None]": ...

    def send(self, buf: BufferLike, peer: int, *, async_op: bool = False) -> Any:
        """Sends ``buf`` to ``peer`` (matched by its :meth:`recv`)."""
        x = _view(buf, False, "buf")
        return self._run(
            (x,),
            lambda: _LIB.fcSend(_ptr(x), x.size, _CODES[x.dtype], peer, self._h, None),
            None, async_op)

    @overload
    def recv(self, buf: _B, peer: int, *, async_op: Literal[False] = ...) -> _B: ...

    @overload
    def recv(self, buf: _B, peer: int, *, async_op: Literal[True]) -> "Work[_B]": ...

    def recv(self, buf: Any, peer: int, *, async_op: bool = False) -> Any:
        """Receives into ``buf`` from ``peer``; returns ``buf``."""
        x = _view(buf, True, "buf")
        return self._run(
            (x,),
            lambda: _LIB.fcRecv(_ptr(x), x.size, _CODES[x.dtype], peer, self._h, None),
            buf, async_op)

    @overload
    def barrier(self, *, async_op: Literal[False] = ...) -> None: ...

    @overload
    def barrier(self, *, async_op: Literal[True]) -> "Work[None]": ...

    def barrier(self, *, async_op: bool = False) -> Any:
        """Returns once every rank has entered the barrier."""
        return self._run((), lambda: _LIB.fcBarrier(self._h, None), None, async_op)

    def all_reduce_compressed(self, buf: _B, key: str, codec: Optional[str] = None) -> _B:
        """Lossy sum over all ranks of the float32 array ``buf``, in place, compressed with
        ``codec`` (a ``FERROCOLL_COMPRESSION`` spelling: ``"fp16"``, ``"bf16"``, ``"fp8"``,
        ``"fp8e5m2"``, ``"topk:0.01"``, ``"onebit"``, ``"none"``, ``"auto"``; None: the
        environment). The compression error of tensor ``key`` is carried to its next call
        (error feedback); every rank passes the same key and codec. Returns ``buf``.
        PowerSGD (``"powersgd:R"``) raises InvalidArgumentError: it needs a gradient's
        matrix shape, which a flat array does not carry (Rust API only)."""
        x = _view(buf, True, "buf")
        if x.dtype != np.float32:
            raise _bad_arg(f"buf has dtype {x.dtype}, expected float32 (compressed all-reduce)")
        c = None if codec is None else str(codec).encode()
        _check(_LIB.fcAllReduceCompressed(_ptr(x), x.size, _CODES[x.dtype], str(key).encode(), c, self._h, None))
        return buf

    def reset_compression(self, key: Optional[str] = None) -> None:
        """Forgets the carried compression error of ``key`` (None: of every key)."""
        _check(_LIB.fcCompressionReset(self._h, None if key is None else str(key).encode()))


def init() -> Communicator:
    """:meth:`Communicator.from_env`."""
    return Communicator.from_env()


def join() -> Communicator:
    """:meth:`Communicator.join`: a replacement process joins the running job whose store
    ``FERROCOLL_STORE`` names."""
    return Communicator.join()


@contextlib.contextmanager
def group() -> Iterator[None]:
    """Calls made inside ``with ferrocoll.group():`` (on this thread) are issued together when
    it exits (fcGroupStart/fcGroupEnd): sends and receives between ranks then never deadlock.
    Results (and arrays returned by the calls) are valid once the block has ended; the
    package keeps every array of a queued call alive until then."""
    outer = getattr(_TLS, "kept", None) is None
    if outer:
        _TLS.kept = []
    try:
        _check(_LIB.fcGroupStart())
        try:
            yield
        finally:
            _check(_LIB.fcGroupEnd())
    finally:
        if outer:
            _TLS.kept = None
