"""ferrocoll from Python: collectives on NumPy arrays over the C ABI (libferrocoll.so).

    import numpy as np, ferrocoll
    comm = ferrocoll.init()            # launcher variables: torchrun, mpirun, srun, FERROCOLL_*
    grads = np.ones(1 << 20, np.float32)
    comm.all_reduce(grads, ferrocoll.ReduceOp.AVG)   # in place

Buffers are NumPy arrays or anything NumPy can view without copying (``__array_interface__``,
the buffer protocol); they must be C-contiguous, and writable where written. bfloat16 and fp8
(e4m3fn, e5m2) arrays need ``ml_dtypes``. Failures raise :class:`FerrocollError` subclasses
that carry the C result code and the library's message.
"""

import contextlib
import ctypes
import enum
import threading

import numpy as np

from . import _lib
from ._errors import (  # noqa: F401  (re-exported)
    CommTimeoutError,
    FerrocollError,
    InternalError,
    InvalidArgumentError,
    InvalidUsageError,
    RemoteError,
    SystemFailureError,
    error_for,
)

__all__ = [
    "Communicator", "ReduceOp", "init", "get_unique_id", "group", "version",
    "FerrocollError", "InvalidArgumentError", "InvalidUsageError", "RemoteError",
    "CommTimeoutError", "SystemFailureError", "InternalError", "SPLIT_NOCOLOR",
]

_LIB = _lib.load()
SPLIT_NOCOLOR = _lib.SPLIT_NOCOLOR


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
