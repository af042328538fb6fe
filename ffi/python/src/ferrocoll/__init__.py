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
(``"sum"``, ``"max"``, any case), a :class:`PreMulSum` (each rank's input times its own
factor, summed), or torch's ``torch.distributed.ReduceOp``. Besides the even collectives there
are ``gather``, ``scatter`` and the uneven ``all_gather_v``, ``reduce_scatter_v`` and
``all_to_all_v`` (per-rank counts, optional displacements, in elements). Failures raise
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
import os
from typing import Any, Callable, Iterable, Iterator, Literal, Optional, Tuple, TypeVar, Union, overload

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
from ._buffers import (  # noqa: F401
    _CODES, _DTYPE_NAMES, _LOW_PRECISION, _TLS, BufferLike, Counts, _bad_arg, _counts, _extent,
    _i64, _keep, _ptr, _ranks, _room, _root, _same_type, _splits, _view,
)
from ._launch import _STORE_FORMS, _launch_env_error  # noqa: F401
from ._ops import (  # noqa: F401  (re-exported)
    PreMulSum, ReduceOp, ReduceOpLike, _bad_op, _reduce_op, _torch_op,
)
from ._work import _LIB, Work, _check, _error

__all__ = [
    "Communicator", "ReduceOp", "init", "get_unique_id", "group", "version",
    "FerrocollError", "InvalidArgumentError", "InvalidUsageError", "RemoteError",
    "CommTimeoutError", "SystemFailureError", "InternalError", "SPLIT_NOCOLOR",
    "RevokedError", "ExcludedError", "join", "SHRINK_DEFAULT", "SHRINK_ABORT",
    "InvalidReduceOpError", "BufferLike", "ReduceOpLike", "Work", "PreMulSum",
]

SPLIT_NOCOLOR = _lib.SPLIT_NOCOLOR
SHRINK_DEFAULT = _lib.SHRINK_DEFAULT
SHRINK_ABORT = _lib.SHRINK_ABORT


_B = TypeVar("_B")
_R = TypeVar("_R")


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
             async_op: bool, after: Optional[Callable[[], None]] = None) -> Union[_R, "Work[_R]"]:
        """Issues ``call``; ``after`` (freeing a premul-sum operator) runs once it is over."""
        in_group = getattr(_TLS, "kept", None) is not None
        if not async_op:
            _keep(*arrays)
            if after is not None and in_group:
                _TLS.after.append(after)  # the group's end issues the call
                after = None
            try:
                _check(call())
            finally:
                if after is not None:
                    after()
            return result
        try:
            if in_group:
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
        except BaseException:
            if after is not None:
                after()
            raise
        return Work(h.value, arrays, result, after)

    def _op_code(self, o: Union[ReduceOp, PreMulSum],
                 dtype: np.dtype) -> Tuple[int, Optional[Callable[[], None]]]:
        """The fcRedOp_t of ``o`` for buffers of ``dtype``, and what frees it (a premul-sum
        operator is created for the call, destroyed once it is over)."""
        if isinstance(o, ReduceOp):
            return int(o), None
        try:
            factor = np.array([o.factor], dtype=dtype)
        except (TypeError, ValueError, OverflowError) as e:
            raise _bad_op(o, f"has a factor that does not convert to {dtype} ({e})") from None
        code = ctypes.c_int()
        _check(_LIB.fcRedOpCreatePreMulSum(ctypes.byref(code), ctypes.c_void_p(factor.ctypes.data),
                                           _CODES[dtype], _lib.SCALAR_HOST_IMMEDIATE, self._h))
        h, n = self._h, code.value
        return n, lambda: _LIB.fcRedOpDestroy(n, h) and None

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
        code, after = self._op_code(o, x.dtype)
        return self._run(
            (x, y),
            lambda: _LIB.fcAllReduce(_ptr(x), _ptr(y), x.size, _CODES[x.dtype], code, self._h, None),
            y if out is not None else buf, async_op, after)

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
        code, after = self._op_code(o, x.dtype)
        return self._run(
            (x, y),
            lambda: _LIB.fcReduceScatter(_ptr(x), _ptr(y), n, _CODES[x.dtype], code, self._h, None),
            y, async_op, after)

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
        code, after = self._op_code(o, x.dtype)
        return self._run(
            (x, y),
            lambda: _LIB.fcReduce(_ptr(x), _ptr(y), x.size, _CODES[x.dtype], code, root, self._h, None),
            y if out is not None else buf, async_op, after)

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

    # -- gather, scatter and the uneven collectives ----------------------------------------
    # The uneven ("-v") calls take one count per rank, in elements, and optionally one
    # displacement per rank (where each rank's block lies; None: packed in rank order). Their
    # new outputs are flat (1-D) arrays. CPU (host) buffers only.
    def gather(self, buf: BufferLike, root: int = 0, out: Optional[BufferLike] = None,
               *, async_op: bool = False) -> Union[Optional[np.ndarray], "Work[Optional[np.ndarray]]"]:
        """Every rank's ``buf`` (the same size everywhere) in rank order, on ``root``: its
        ``out`` (new, shape ``(size, *buf.shape)``, when None) holds ``size × buf.size``
        elements. Returns the array view of ``out`` on ``root``, None on the other ranks
        (their ``out`` is not used)."""
        x = _view(buf, False, "buf")
        p = self.size
        y: Optional[np.ndarray] = None
        if self.rank == _root(root, p):
            y = np.empty((p,) + x.shape, x.dtype) if out is None else _view(out, True, "out")
            _same_type(x, y)
            _room(y, x.size * p, f"buf's {x.size} from each of {_ranks(p)}")
        keep = (x,) if y is None else (x, y)
        return self._run(
            keep,
            lambda: _LIB.fcGather(_ptr(x), None if y is None else _ptr(y), x.size,
                                  _CODES[x.dtype], root, self._h, None),
            y, async_op)

    def scatter(self, buf: Optional[BufferLike], root: int = 0, out: Optional[BufferLike] = None,
                *, async_op: bool = False) -> Union[np.ndarray, "Work[np.ndarray]"]:
        """Block ``r`` of ``root``'s ``buf`` (``size`` equal blocks) goes to rank ``r``'s
        ``out``. On ``root``, ``out`` is new when None (shape ``buf.shape[1:]`` when
        ``buf.shape[0]`` is the number of ranks, else flat); on the other ranks ``buf`` is not
        used (None is fine) and ``out`` is required: it says how many elements arrive."""
        p = self.size
        is_root = self.rank == _root(root, p)
        x: Optional[np.ndarray] = None
        if is_root:
            if buf is None:
                raise _bad_arg(f"buf is None on the root (rank {root}): it holds the blocks "
                               "to scatter")
            x = _view(buf, False, "buf")
            n = _splits(x, p)
            if out is None:
                y = np.empty(x.shape[1:] if x.ndim > 1 and x.shape[0] == p else (n,), x.dtype)
            else:
                y = _view(out, True, "out")
            _same_type(x, y)
            _room(y, n, f"one block of buf over {_ranks(p)}")
        else:
            if out is None:
                raise _bad_arg(f"out is None on rank {self.rank}: ranks other than the root "
                               f"({root}) pass the array that receives their block")
            y = _view(out, True, "out")
            n = y.size
        keep = (y,) if x is None else (x, y)
        return self._run(
            keep,
            lambda: _LIB.fcScatter(None if x is None else _ptr(x), _ptr(y), n,
                                   _CODES[y.dtype], root, self._h, None),
            y, async_op)

    def all_gather_v(self, buf: BufferLike, counts: Counts, out: Optional[BufferLike] = None,
                     displs: Optional[Counts] = None,
                     *, async_op: bool = False) -> Union[np.ndarray, "Work[np.ndarray]"]:
        """Rank ``r``'s ``buf`` (``counts[r]`` elements) lands at element ``displs[r]`` of
        every rank's ``out`` (packed in rank order when ``displs`` is None); ``out`` (new and
        flat when None) holds every block. Elements outside the blocks are not written."""
        x = _view(buf, False, "buf")
        p = self.size
        c = _counts(counts, p, "counts")
        d = None if displs is None else _counts(displs, p, "displs")
        r = self.rank
        if c[r] != x.size:
            raise _bad_arg(f"buf has {x.size} elements, but counts[{r}] (this rank's) is {c[r]}")
        extent = _extent(c, d)
        y = np.empty(extent, x.dtype) if out is None else _view(out, True, "out")
        _same_type(x, y)
        _room(y, extent, "every rank's block at its displacement")
        return self._run(
            (x, y, c) if d is None else (x, y, c, d),
            lambda: _LIB.fcAllGatherV(_ptr(x), x.size, _ptr(y), _i64(c), _i64(d),
                                      _CODES[x.dtype], self._h, None),
            y, async_op)

    def reduce_scatter_v(self, buf: BufferLike, counts: Counts, op: ReduceOpLike = ReduceOp.SUM,
                         out: Optional[BufferLike] = None, displs: Optional[Counts] = None,
                         *, async_op: bool = False) -> Union[np.ndarray, "Work[np.ndarray]"]:
        """Rank ``r``'s ``out`` (``counts[r]`` elements; new when None) becomes the reduction
        of block ``r`` of every rank's ``buf``, which lies at element ``displs[r]`` (packed in
        rank order when ``displs`` is None)."""
        o = _reduce_op(op)
        x = _view(buf, False, "buf")
        p = self.size
        c = _counts(counts, p, "counts")
        d = None if displs is None else _counts(displs, p, "displs")
        extent = _extent(c, d)
        if x.size < extent:
            raise _bad_arg(f"buf has {x.size} elements, expected at least {extent} (every "
                           "rank's block at its displacement)")
        n = int(c[self.rank])
        y = np.empty(n, x.dtype) if out is None else _view(out, True, "out")
        _same_type(x, y)
        _room(y, n, f"counts[{self.rank}], this rank's block")
        code, after = self._op_code(o, x.dtype)
        return self._run(
            (x, y, c) if d is None else (x, y, c, d),
            lambda: _LIB.fcReduceScatterV(_ptr(x), _ptr(y), _i64(c), _i64(d), _CODES[x.dtype],
                                          code, self._h, None),
            y, async_op, after)

    def all_to_all_v(self, buf: BufferLike, send_counts: Counts, recv_counts: Counts,
                     out: Optional[BufferLike] = None, send_displs: Optional[Counts] = None,
                     recv_displs: Optional[Counts] = None,
                     *, async_op: bool = False) -> Union[np.ndarray, "Work[np.ndarray]"]:
        """``send_counts[j]`` elements of ``buf`` (at ``send_displs[j]``) go to rank ``j``;
        ``recv_counts[j]`` elements from rank ``j`` land in ``out`` at ``recv_displs[j]``
        (displacements None: packed in rank order). ``out`` is new and flat when None. Rank
        ``j``'s ``recv_counts[i]`` must equal rank ``i``'s ``send_counts[j]``: where they differ
        (one of them zero included), rank ``j``'s call raises ``InvalidUsageError``."""
        x = _view(buf, False, "buf")
        p = self.size
        sc = _counts(send_counts, p, "send_counts")
        rc = _counts(recv_counts, p, "recv_counts")
        sd = None if send_displs is None else _counts(send_displs, p, "send_displs")
        rd = None if recv_displs is None else _counts(recv_displs, p, "recv_displs")
        sext, rext = _extent(sc, sd), _extent(rc, rd)
        if x.size < sext:
            raise _bad_arg(f"buf has {x.size} elements, expected at least {sext} (every block "
                           "of send_counts at its displacement)")
        y = np.empty(rext, x.dtype) if out is None else _view(out, True, "out")
        _same_type(x, y)
        _room(y, rext, "every block of recv_counts at its displacement")
        keep = tuple(a for a in (x, y, sc, rc, sd, rd) if a is not None)
        return self._run(
            keep,
            lambda: _LIB.fcAllToAllV(_ptr(x), _i64(sc), _i64(sd), _ptr(y), _i64(rc), _i64(rd),
                                     _CODES[x.dtype], self._h, None),
            y, async_op)

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
        _TLS.kept, _TLS.after = [], []
    try:
        _check(_LIB.fcGroupStart())
        try:
            yield
        finally:
            _check(_LIB.fcGroupEnd())
    finally:
        if outer:
            afters, _TLS.kept, _TLS.after = _TLS.after, None, None
            for after in afters:
                after()
