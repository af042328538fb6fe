"""ferrocoll from Python: collectives on NumPy arrays over the C ABI (libferrocoll.so).

    import numpy as np, ferrocoll
    comm = ferrocoll.init()            # launcher variables: torchrun, mpirun, srun, FERROCOLL_*
    grads = np.ones(1 << 20, np.float32)
    comm.all_reduce(grads, ferrocoll.ReduceOp.AVG)   # in place

Buffers are NumPy arrays or anything NumPy can view without copying (``__array_interface__``,
the buffer protocol); they must be C-contiguous, and writable where written. bfloat16 and fp8
(e4m3fn, e5m2) arrays need ``ml_dtypes``. Failures raise :class:`FerrocollError` subclasses
that carry the C result code and the library's message.

Surviving a failed rank (the job's store must outlive it: ``FERROCOLL_STORE=file:DIR``)::

    try:
        comm.all_reduce(grads)
    except ferrocoll.RevokedError:      # a peer died; every survivor gets this
        comm = comm.shrink()            # a communicator of the survivors
"""

import contextlib
import ctypes
import enum
import threading
from typing import Iterable, Optional

import numpy as np

from . import _lib
from ._errors import (  # noqa: F401  (re-exported)
    CommTimeoutError,
    ExcludedError,
    FerrocollError,
    InternalError,
    InvalidArgumentError,
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
]

_LIB = _lib.load()
SPLIT_NOCOLOR = _lib.SPLIT_NOCOLOR
SHRINK_DEFAULT = _lib.SHRINK_DEFAULT
SHRINK_ABORT = _lib.SHRINK_ABORT


class ReduceOp(enum.IntEnum):
    """Reduction operators (the C ABI's fcRedOp_t numbers)."""

    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    AVG = 4


def _dtype_codes():
    codes = {
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
        import ml_dtypes
    except ImportError:
        return codes
    codes[np.dtype(ml_dtypes.bfloat16)] = 9
    codes[np.dtype(ml_dtypes.float8_e4m3fn)] = 10
    codes[np.dtype(ml_dtypes.float8_e5m2)] = 11
    return codes


_CODES = _dtype_codes()


def _check(rc: int) -> None:
    if rc != 0:
        msg = _LIB.fcGetLastError(None)
        raise error_for(rc, msg.decode("utf-8", "replace") if msg else "")


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


def _view(buf, writable: bool, what: str) -> np.ndarray:
    """`buf` as an ndarray over the same memory (never a copy)."""
    arr = buf if isinstance(buf, np.ndarray) else np.asarray(buf)
    if writable and arr is not buf and arr.flags.owndata:
        # NumPy had to copy (a list, say): results written there would be lost.
        raise InvalidArgumentError(7004, f"{what} is not a buffer NumPy can view in place")
    if not arr.flags.c_contiguous:
        raise InvalidArgumentError(7004, f"{what} is not C-contiguous")
    if writable and not arr.flags.writeable:
        raise InvalidArgumentError(7004, f"{what} is read-only")
    if arr.dtype not in _CODES:
        hint = " (install ml_dtypes for bfloat16/fp8)" if arr.dtype.kind == "V" else ""
        raise InvalidArgumentError(7004, f"{what} has unsupported dtype {arr.dtype}{hint}")
    return arr


_TLS = threading.local()


def _keep(*arrays) -> None:
    """Inside a group, keeps the arrays of a queued call alive until the group ends."""
    kept = getattr(_TLS, "kept", None)
    if kept is not None:
        kept.extend(arrays)


def _ptr(arr: np.ndarray):
    return ctypes.c_void_p(arr.ctypes.data) if arr.size else None


def _same_type(a: np.ndarray, b: np.ndarray) -> None:
    if a.dtype != b.dtype:
        raise InvalidArgumentError(7004, f"input is {a.dtype} but output is {b.dtype}")


class Communicator:
    """One rank's handle on a group of ranks. Calls on a communicator must be made in the same
    order on every rank; they block until this rank's part is done."""

    def __init__(self, handle: int):
        self._h = ctypes.c_void_p(handle)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_env(cls) -> "Communicator":
        """This process's rank from launcher variables (torchrun, mpirun, srun, or
        FERROCOLL_RANK / FERROCOLL_WORLD_SIZE / FERROCOLL_STORE)."""
        h = ctypes.c_void_p()
        _check(_LIB.fcCommInitFromEnv(ctypes.byref(h)))
        return cls(h.value)

    @classmethod
    def init_rank(cls, nranks: int, unique_id: bytes, rank: int) -> "Communicator":
        """Rank ``rank`` of ``nranks`` meeting through ``unique_id`` (:func:`get_unique_id`)."""
        if len(unique_id) != _lib.UNIQUE_ID_BYTES:
            raise InvalidArgumentError(7004, f"a unique id has {_lib.UNIQUE_ID_BYTES} bytes")
        uid = _lib.UniqueIdStruct.from_buffer_copy(bytes(unique_id))
        h = ctypes.c_void_p()
        _check(_LIB.fcCommInitRank(ctypes.byref(h), nranks, uid, rank))
        return cls(h.value)

    def split(self, color: int, key: int = 0):
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
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
    def async_error(self):
        """None while healthy, else the fcResult_t code of the failure that stopped it."""
        v = ctypes.c_int()
        _check(_LIB.fcCommGetAsyncError(self._h, ctypes.byref(v)))
        return v.value or None

    # -- collectives -----------------------------------------------------------------------
    def all_reduce(self, buf, op=ReduceOp.SUM, out=None):
        """Reduces ``buf`` over all ranks into ``out`` (in place when ``out`` is None)."""
        x = _view(buf, out is None, "buf")
        y = x if out is None else _view(out, True, "out")
        _same_type(x, y)
        if y.size < x.size:
            raise InvalidArgumentError(7004, f"out holds {y.size} elements, {x.size} needed")
        _keep(x, y)
        _check(_LIB.fcAllReduce(_ptr(x), _ptr(y), x.size, _CODES[x.dtype], int(op), self._h, None))
        return y if out is not None else buf

    def all_gather(self, buf, out=None):
        """Every rank's ``buf`` in rank order: ``out`` (new, shape ``(size, *buf.shape)``,
        when None) holds ``size × buf.size`` elements."""
        x = _view(buf, False, "buf")
        y = np.empty((self.size,) + x.shape, x.dtype) if out is None else _view(out, True, "out")
        _same_type(x, y)
        if y.size < x.size * self.size:
            raise InvalidArgumentError(7004, f"out holds {y.size} elements, {x.size * self.size} needed")
        _keep(x, y)
        _check(_LIB.fcAllGather(_ptr(x), _ptr(y), x.size, _CODES[x.dtype], self._h, None))
        return y

    def reduce_scatter(self, buf, op=ReduceOp.SUM, out=None):
        """Block ``rank`` of the reduction of every rank's ``buf`` (``size`` equal blocks)."""
        x = _view(buf, False, "buf")
        p = self.size
        if x.size % p:
            raise InvalidArgumentError(7004, f"buf of {x.size} elements does not split over {p} ranks")
        n = x.size // p
        y = np.empty(n, x.dtype) if out is None else _view(out, True, "out")
        _same_type(x, y)
        if y.size < n:
            raise InvalidArgumentError(7004, f"out holds {y.size} elements, {n} needed")
        _keep(x, y)
        _check(_LIB.fcReduceScatter(_ptr(x), _ptr(y), n, _CODES[x.dtype], int(op), self._h, None))
        return y

    def broadcast(self, buf, root=0):
        """Every rank's ``buf`` becomes ``root``'s (in place)."""
        x = _view(buf, True, "buf")
        _keep(x)
        _check(_LIB.fcBroadcast(_ptr(x), _ptr(x), x.size, _CODES[x.dtype], root, self._h, None))
        return buf

    def reduce(self, buf, op=ReduceOp.SUM, root=0, out=None):
        """``root``'s ``out`` (``buf`` in place when None) becomes the reduction of all ranks'
        ``buf``; other ranks' output is untouched."""
        x = _view(buf, out is None, "buf")
        y = x if out is None else _view(out, True, "out")
        _same_type(x, y)
        if y.size < x.size:
            raise InvalidArgumentError(7004, f"out holds {y.size} elements, {x.size} needed")
        _keep(x, y)
        _check(_LIB.fcReduce(_ptr(x), _ptr(y), x.size, _CODES[x.dtype], int(op), root, self._h, None))
        return y if out is not None else buf

    def all_to_all(self, buf, out=None):
        """Block ``j`` of ``buf`` goes to rank ``j``, which stores it as block ``rank``."""
        x = _view(buf, False, "buf")
        p = self.size
        if x.size % p:
            raise InvalidArgumentError(7004, f"buf of {x.size} elements does not split over {p} ranks")
        y = np.empty_like(x) if out is None else _view(out, True, "out")
        _same_type(x, y)
        if y.size < x.size:
            raise InvalidArgumentError(7004, f"out holds {y.size} elements, {x.size} needed")
        _keep(x, y)
        _check(_LIB.fcAllToAll(_ptr(x), _ptr(y), x.size // p, _CODES[x.dtype], self._h, None))
        return y

    def send(self, buf, peer):
        """Sends ``buf`` to ``peer`` (matched by its :meth:`recv`)."""
        x = _view(buf, False, "buf")
        _keep(x)
        _check(_LIB.fcSend(_ptr(x), x.size, _CODES[x.dtype], peer, self._h, None))

    def recv(self, buf, peer):
        """Receives into ``buf`` from ``peer``; returns ``buf``."""
        x = _view(buf, True, "buf")
        _keep(x)
        _check(_LIB.fcRecv(_ptr(x), x.size, _CODES[x.dtype], peer, self._h, None))
        return buf

    def barrier(self):
        """Returns once every rank has entered the barrier."""
        _check(_LIB.fcBarrier(self._h, None))

    def all_reduce_compressed(self, buf, key: str, codec=None):
        """Lossy sum over all ranks of the float32 array ``buf``, in place, compressed with
        ``codec`` (a ``FERROCOLL_COMPRESSION`` spelling: ``"fp16"``, ``"bf16"``, ``"fp8"``,
        ``"fp8e5m2"``, ``"topk:0.01"``, ``"onebit"``, ``"none"``, ``"auto"``; None: the
        environment). The compression error of tensor ``key`` is carried to its next call
        (error feedback); every rank passes the same key and codec. Returns ``buf``.
        PowerSGD (``"powersgd:R"``) raises InvalidArgumentError: it needs a gradient's
        matrix shape, which a flat array does not carry (Rust API only)."""
        x = _view(buf, True, "buf")
        if x.dtype != np.float32:
            raise InvalidArgumentError(7004, f"compressed all-reduce takes float32, not {x.dtype}")
        c = None if codec is None else str(codec).encode()
        _check(_LIB.fcAllReduceCompressed(_ptr(x), x.size, _CODES[x.dtype], str(key).encode(), c, self._h, None))
        return buf

    def reset_compression(self, key=None) -> None:
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
def group():
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
