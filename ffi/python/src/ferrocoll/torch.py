"""``torch.distributed`` backend ``"ferrocoll"``: ``import ferrocoll.torch`` registers it, then

    dist.init_process_group("ferrocoll")      # e.g. under torchrun

runs all_reduce (SUM, PRODUCT, MIN, MAX, AVG), all_gather(_into_tensor), reduce_scatter(_tensor),
broadcast, reduce, all_to_all(_single) with even splits, barrier, send/recv/isend/irecv and
batch_isend_irecv through the C ABI, on CPU tensors, and on CUDA tensors with
``FERROCOLL_DEVICE=cuda`` (the library's NCCL backend). The ranks meet through the store torch
passes in: rank 0 makes a unique id (its process serves ferrocoll's rendezvous store, on
``FERROCOLL_SOCKET_IFNAME`` or the first non-loopback interface) and publishes it there.

Calls are asynchronous: each returns at once, and its Work (and Future) completes when the
collective has, so DistributedDataParallel overlaps its gradient all-reduce with the backward
pass. ``init_process_group(timeout=…)`` bounds every call (on expiry the call fails and the
communicator is aborted). Gather, scatter, uneven all-to-all/all-gather/reduce-scatter and
premul-sum raise NotImplementedError naming what the C ABI lacks.

Surviving a failed rank (the store ``FERROCOLL_STORE`` names must outlive it, e.g.
``file:DIR``; ``FERROCOLL_HEARTBEAT_TIMEOUT`` bounds detection): every survivor's pending and
later calls raise ``ferrocoll.RevokedError``; :func:`shrink_group` then makes a group of the
survivors (the new default group when the default one shrinks), as
``torch.distributed.shrink_group`` does for NCCL.
"""

import collections
import contextlib
import ctypes
import datetime
import itertools
import os
import threading
import time
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

import numpy as np

try:
    import torch
except ModuleNotFoundError as _e:  # torch is an optional dependency: the `torch` extra
    if _e.name != "torch":
        raise
    raise ImportError(
        "ferrocoll.torch needs PyTorch, which is not installed: install ferrocoll with its "
        "`torch` extra, pip install 'ferrocoll[torch]' (from a checkout: "
        "pip install './ffi/python[torch]'), or pip install torch",
        name="torch",
    ) from _e
import torch.distributed as dist

import ferrocoll
from ferrocoll import _LIB, Communicator, _check
from ferrocoll._errors import CommTimeoutError, InvalidUsageError, error_for

__all__ = ["ProcessGroupFerrocoll", "shrink_group", "compression_hook"]

_DTYPES = {
    torch.int8: 0,
    torch.uint8: 1,
    torch.int32: 2,
    torch.int64: 4,
    torch.float16: 6,
    torch.float32: 7,
    torch.float64: 8,
    torch.bfloat16: 9,
}
for _name, _code in (("uint32", 3), ("uint64", 5), ("float8_e4m3fn", 10), ("float8_e5m2", 11)):
    if hasattr(torch, _name):
        _DTYPES[getattr(torch, _name)] = _code

_OPS = {
    "SUM": ferrocoll.ReduceOp.SUM,
    "PRODUCT": ferrocoll.ReduceOp.PROD,
    "MAX": ferrocoll.ReduceOp.MAX,
    "MIN": ferrocoll.ReduceOp.MIN,
    "AVG": ferrocoll.ReduceOp.AVG,
}

# The calls torch can ask for that the C ABI has no collective for yet: what is missing.
_MISSING = {
    "PREMUL_SUM": "the premul-sum reduce operator (fcRedOpCreatePreMulSum)",
    "gather": "a gather collective (fcGather)",
    "scatter": "a scatter collective (fcScatter)",
    "alltoallv": "an all-to-all with uneven splits (all-to-all-v)",
    "allgatherv": "an all-gather with uneven sizes (all-gather-v)",
    "reducescatterv": "a reduce-scatter with uneven sizes (reduce-scatter-v)",
}


def _missing(what: str, key: str) -> NotImplementedError:
    return NotImplementedError(
        f"ferrocoll: {what} needs {_MISSING[key]}, which ferrocoll's C ABI does not have yet; "
        "use a backend that has it (e.g. gloo) for this call"
    )


def _opts_op(opts: Any, what: str) -> int:
    """The fcRedOp_t number of ``opts.reduceOp`` (SUM when there are no options)."""
    op = getattr(opts, "reduceOp", None)
    if op is None:
        return int(ferrocoll.ReduceOp.SUM)
    kind = getattr(op, "op", op)  # a ReduceOp object wraps its RedOpType
    name = getattr(kind, "name", None)
    if name in _OPS:
        return int(_OPS[name])
    if name == "PREMUL_SUM":
        raise _missing(what, "PREMUL_SUM")
    raise ValueError(
        f"ferrocoll: {what} with reduce op {name or op} is not supported; ferrocoll has "
        "SUM, PRODUCT, MAX, MIN and AVG"
    )


def _p(t: torch.Tensor) -> Optional[ctypes.c_void_p]:
    return ctypes.c_void_p(t.data_ptr()) if t.numel() else None


def _seconds(t: Any) -> Optional[float]:
    """A torch timeout (timedelta, or milliseconds) in seconds; None when unset (negative)
    or zero."""
    if t is None:
        return None
    s = t.total_seconds() if isinstance(t, datetime.timedelta) else float(t) / 1000.0
    return s if s > 0 else None


def _nccl_library() -> str:
    return os.environ.get("FERROCOLL_NCCL_LIBRARY") or "libnccl.so.2"


_NCCL_LOADABLE: dict = {}


def _nccl_problem() -> Optional[str]:
    """Why NCCL cannot be loaded in this process (None: it can)."""
    name = _nccl_library()
    if name not in _NCCL_LOADABLE:
        try:
            ctypes.CDLL(name)
            _NCCL_LOADABLE[name] = None
        except OSError as e:
            _NCCL_LOADABLE[name] = str(e)
    return _NCCL_LOADABLE[name]


class _Work(dist.Work):
    """torch's handle on one call: complete when the collective is (and its results are
    copied back), not before. ``wait`` raises the call's error."""

    def __init__(self, fut: torch.futures.Future) -> None:
        super().__init__()
        self._fut = fut

    def wait(self, timeout: Any = None) -> bool:
        limit = _seconds(timeout)
        if limit is not None and not self._fut.done():
            end = time.monotonic() + limit
            pause = 1e-4
            while not self._fut.done():
                if time.monotonic() >= end:
                    raise CommTimeoutError(
                        7100, f"ferrocoll: Work.wait: not complete within {limit} s (the call "
                        "goes on)")
                time.sleep(pause)
                pause = min(2 * pause, 0.01)
        self._fut.wait()  # lets the GIL go; raises the call's error
        return True

    def is_completed(self) -> bool:
        return self._fut.done()

    def is_success(self) -> bool:
        return self._fut.done() and self.exception() is None

    def exception(self) -> Optional[BaseException]:
        if not self._fut.done():
            return None
        try:
            self._fut.wait()
        except BaseException as e:  # noqa: BLE001 - reported, not raised
            return e
        return None

    def get_future(self) -> torch.futures.Future:
        return self._fut

    def result(self) -> Any:
        self.wait()
        return self._fut.value()

    def synchronize(self) -> None:
        self.wait()


def _work() -> Tuple[_Work, torch.futures.Future]:
    fut: torch.futures.Future = torch.futures.Future()
    return _Work(fut), fut


class _Call:
    """One torch call being prepared: its C calls, the tensors (and staging copies) to keep
    alive until it completes, and what to do on completion (copy-backs)."""

    def __init__(self, pg: "ProcessGroupFerrocoll", what: str) -> None:
        self.pg = pg
        self.what = what
        self.calls: List[Tuple[Callable[..., int], tuple]] = []
        self.keep: List[torch.Tensor] = []
        self.finish: List[Callable[[], Any]] = []
        self.device: Optional[str] = None
        self.stream: Optional[ctypes.c_void_p] = None

    def tensor(self, t: torch.Tensor, name: str, written: bool) -> torch.Tensor:
        """``t`` checked (device, dtype), as a contiguous tensor the C call can use; a
        written non-contiguous tensor gets its result copied back on completion."""
        self.on(t.device, name)
        if t.dtype not in _DTYPES:
            raise ValueError(
                f"ferrocoll: {self.what}: {name} has unsupported dtype {t.dtype}; supported: "
                + ", ".join(str(d) for d in _DTYPES)
            )
        c = t if t.is_contiguous() else t.contiguous()
        self.keep.append(t)
        if c is not t:
            self.keep.append(c)
            if written:
                self.finish.append(lambda t=t, c=c: t.copy_(c))
        return c

    def on(self, device: torch.device, name: str) -> None:
        """The call's tensors are on ``device`` (all on one kind)."""
        kind = device.type
        if kind not in ("cpu", "cuda"):
            raise ValueError(
                f"ferrocoll: {self.what}: {name} is on device '{device}'; the ferrocoll "
                "backend takes CPU tensors, and CUDA tensors with FERROCOLL_DEVICE=cuda"
            )
        if self.device is None:
            if kind == "cuda":
                self.stream = self.pg._cuda_stream(self.what, device)
            self.device = kind
        elif self.device != kind:
            raise ValueError(
                f"ferrocoll: {self.what}: {name} is on {kind}, other tensors of the call on "
                f"{self.device}: one call takes tensors of one device kind"
            )

    def staging(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        s = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
        self.keep.append(s)
        return s

    def call(self, fn: Callable[..., int], *args: Any) -> None:
        """Queues ``fn(*args, comm, stream)``."""
        self.calls.append((fn, args))

    def dtype(self, t: torch.Tensor) -> int:
        return _DTYPES[t.dtype]


class _Pending:
    """An issued torch call (or coalesced batch) until its completion."""

    __slots__ = ("handle", "keep", "finish", "outs", "deadline", "timeout", "what",
                 "timed_out", "issued", "completed")

    def __init__(self, handle: Optional[int], call: _Call,
                 outs: List[Tuple[torch.futures.Future, Any]],
                 timeout: Optional[float]) -> None:
        self.handle = handle
        self.keep = call.keep
        self.finish = call.finish
        self.outs = outs
        self.what = call.what
        self.issued = time.perf_counter()
        self.completed: Optional[float] = None
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timed_out = False


def _complete(outs: List[Tuple[torch.futures.Future, Any]],
              error: Optional[BaseException]) -> None:
    for fut, value in outs:
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)


class ProcessGroupFerrocoll(dist.ProcessGroup):
    """A ``torch.distributed`` process group over one ferrocoll communicator.

    Every call is issued as one asynchronous group of the C ABI (``fcGroupStart``, the
    calls, ``fcGroupEndAsync``) and returns at once; a completion thread per group waits for
    the works in issue order, copies results back where a staging copy was used (a
    non-contiguous tensor, a list of outputs), then completes the call's Work and Future
    (with the error, if the call failed). The tensors stay referenced until then. A call
    torch waits for at once (``async_op=False``, e.g. ``dist.all_reduce(t)``) while nothing
    is in flight runs on the calling thread instead: the same result without the thread
    hand-offs, which would add about 100 µs to a small call.

    ``timeout`` (``init_process_group(timeout=…)``, or a call's own option) bounds each call
    from its issue: a call still running then fails with :class:`ferrocoll.CommTimeoutError`
    and the communicator is aborted, as NCCL's watchdog does; later calls raise that error.
    It is also the communicator's ``FERROCOLL_TIMEOUT`` unless that variable is set.

    Coalescing (``start_coalescing``/``end_coalescing``, ``batch_isend_irecv``,
    ``_coalescing_manager``, ``allreduce_coalesced``): the calls of a batch form one group,
    issued together when it ends, so a batch of sends and receives never deadlocks.

    CUDA tensors run on the library's NCCL backend (``FERROCOLL_DEVICE=cuda`` when the group
    is created, NCCL loadable): the C calls get the tensors' device pointers and
    ``torch.cuda.current_stream()``; the work is queued on that stream when the Work
    completes."""

    def __init__(self, store: Any, rank: int, size: int, timeout: Any = None,
                 comm: Optional[Communicator] = None) -> None:
        self._timeout = _seconds(timeout)
        self._device_kind = os.environ.get("FERROCOLL_DEVICE", "cpu").strip().lower() or "cpu"
        if comm is not None:
            # A group over an existing communicator (shrink_group): no rendezvous.
            super().__init__(comm.rank, comm.size)
            self._comm = comm
        else:
            super().__init__(rank, size)
            # torchrun's agent store outlives a group (a re-created default group sees the
            # same keys): each creation adds `size` joins to a counter, so the generation of
            # this one is the same on every rank and its unique id never one of a destroyed
            # group.
            generation = (store.add("ferrocoll/joins", 1) - 1) // size
            key = f"ferrocoll/unique_id/{generation}"
            if rank == 0:
                uid = ferrocoll.get_unique_id()
                store.set(key, uid)
            else:
                uid = bytes(store.get(key))
            with _ferrocoll_timeout(self._timeout):
                self._comm = Communicator.init_rank(size, uid, rank)
        self._h = self._comm._h
        # While coalescing: the batch being collected (its C group is open on this thread).
        self._batch: Optional[_Call] = None
        self._batch_outs: List[Tuple[torch.futures.Future, Any]] = []
        # Issued calls, oldest first, and the threads that complete them (started lazily).
        self._cond = threading.Condition()
        self._queue: Deque[_Pending] = collections.deque()
        self._inline: Optional[_Pending] = None  # a blocking call in progress (timed too)
        self._threads: List[threading.Thread] = []
        self._stopping = False
        self._closed = False
        self._failure: Optional[BaseException] = None
        # None, or a list that receives (what, issued, completed) perf_counter times of every
        # completed call (benches/ddp_vs_gloo.py reads it to measure overlap).
        self.trace: Optional[List[Tuple[str, float, float]]] = None

    def getBackendName(self) -> str:
        return "ferrocoll"

    # torch's ProcessGroup reads its name from its registered backends, and this group (a
    # Python subclass) registers none: it keeps its name itself, so that a group made by
    # dist.new_group can be destroyed on its own.
    def _set_group_name(self, name: str) -> None:
        self._group_name = name
        super()._set_group_name(name)

    @property
    def group_name(self) -> str:
        return getattr(self, "_group_name", "")

    # -- issuing and completing ----------------------------------------------------------
    def _cuda_stream(self, what: str, device: torch.device) -> ctypes.c_void_p:
        """The current CUDA stream, once the library's NCCL backend is known to be there."""
        if self._device_kind != "cuda":
            raise RuntimeError(
                f"ferrocoll: {what}: CUDA tensors need FERROCOLL_DEVICE=cuda in the environment "
                "when the process group is created (with NCCL: libnccl.so.2, or the file "
                "FERROCOLL_NCCL_LIBRARY names); this group was created with FERROCOLL_DEVICE="
                f"{self._device_kind}. Set it before init_process_group, or move the tensors "
                "to the CPU"
            )
        problem = _nccl_problem()
        if problem is not None:
            raise RuntimeError(
                f"ferrocoll: {what}: CUDA tensors need NCCL, and {_nccl_library()} cannot be "
                f"loaded ({problem}); install it (the torch CUDA wheel ships it under "
                "site-packages/nvidia/nccl/lib) or set FERROCOLL_NCCL_LIBRARY to its path"
            )
        return ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)

    def _usable(self, what: str) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise InvalidUsageError(7005, f"ferrocoll: {what} on a process group that was shut down")

    def _start(self, what: str) -> _Call:
        self._usable(what)
        return _Call(self, what)

    def _timeout_of(self, opts: Any) -> Optional[float]:
        own = _seconds(getattr(opts, "timeout", None))
        return own if own is not None else self._timeout

    def _submit(self, c: _Call, value: Any = None, opts: Any = None) -> _Work:
        """Issues the calls of ``c`` and returns its Work; in a batch, queues them in the
        batch's group and returns a Work that completes with the batch."""
        work, fut = _work()
        stream = c.stream
        if self._batch is not None:
            b = self._batch
            if b.device is not None and c.device is not None and b.device != c.device:
                raise ValueError("ferrocoll: one coalesced batch takes tensors of one device kind")
            b.device = b.device or c.device
            for fn, args in c.calls:
                _check(fn(*args, self._h, stream))
            b.keep += c.keep
            b.finish += c.finish
            self._batch_outs.append((fut, value))
            return work
        if c.device == "cuda":
            # Queued on the current stream when the calls return: complete now.
            if len(c.calls) == 1:
                fn, args = c.calls[0]
                _check(fn(*args, self._h, stream))
            else:
                self._group(c, stream, blocking=True)
            for f in c.finish:
                f()
            _complete([(fut, value)], None)
            return work
        timeout = self._timeout_of(opts)
        if getattr(opts, "asyncOp", True) is False and not self._queue:
            # A call the caller waits for at once (dist.all_reduce(t) without async_op), with
            # nothing in flight: run it on this thread, without the completion thread's
            # hand-offs (they cost small calls ~100 µs); the watchdog still times it.
            self._blocking(c, _Pending(None, c, [(fut, value)], timeout))
            return work
        handle = self._group(c, None, blocking=False)
        self._enqueue(_Pending(handle, c, [(fut, value)], timeout))
        return work

    def _blocking(self, c: _Call, p: _Pending) -> None:
        if p.deadline is not None:
            # Seen by the watchdog within a quarter of the timeout (it is not woken: that
            # would cost small calls two thread switches).
            self._start_threads()
            self._inline = p
        error: Optional[ferrocoll.FerrocollError] = None
        try:
            if len(c.calls) == 1:
                fn, args = c.calls[0]
                _check(fn(*args, self._h, None))
            else:
                self._group(c, None, blocking=True)
        except ferrocoll.FerrocollError as e:
            error = e
        finally:
            self._inline = None
        if p.timed_out:
            error = self._failure
        if error is not None:
            raise error  # the caller was about to wait for it: raised by the call itself
        for f in p.finish:
            f()
        p.completed = time.perf_counter()
        if self.trace is not None:
            self.trace.append((p.what, p.issued, p.completed))
        _complete(p.outs, None)

    def _group(self, c: _Call, stream: Optional[ctypes.c_void_p], blocking: bool) -> Optional[int]:
        """Runs the calls of ``c`` as one group: blocking, or returning its fcWork_t."""
        _check(_LIB.fcGroupStart())
        failed: Optional[BaseException] = None
        try:
            for fn, args in c.calls:
                _check(fn(*args, self._h, stream))
        except BaseException as e:  # noqa: BLE001 - the group is ended first
            failed = e
        if blocking:
            rc = _LIB.fcGroupEnd()
            if failed is not None:
                raise failed
            _check(rc)
            return None
        h = ctypes.c_void_p()
        rc = _LIB.fcGroupEndAsync(ctypes.byref(h))
        if failed is not None:
            if rc == 0 and h.value:
                # The calls queued before the failing one were issued: they use the buffers.
                _LIB.fcWorkWait(h, -1)
                _LIB.fcWorkFree(h)
            raise failed
        _check(rc)
        return h.value

    def _start_threads(self) -> None:
        with self._cond:
            if not self._threads:
                for target, name in ((self._complete_loop, "completion"),
                                     (self._watchdog_loop, "watchdog")):
                    t = threading.Thread(target=target, name=f"ferrocoll-{name}", daemon=True)
                    t.start()
                    self._threads.append(t)

    def _enqueue(self, p: _Pending) -> None:
        self._start_threads()
        with self._cond:
            self._queue.append(p)
            self._cond.notify_all()

    def _complete_loop(self) -> None:
        """Completes the issued calls in issue order (the order they complete in)."""
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                p = self._queue[0]
            error: Optional[BaseException] = None
            if p.handle:
                rc = _LIB.fcWorkWait(p.handle, -1)  # ctypes lets the GIL go meanwhile
                if rc != 0:
                    msg = _LIB.fcGetLastError(None)
                    error = error_for(rc, f"ferrocoll: {p.what}: "
                                      + (msg.decode("utf-8", "replace") if msg else ""))
                _LIB.fcWorkFree(p.handle)
            with self._cond:
                self._queue.popleft()
                if p.timed_out:
                    error = self._failure
                self._cond.notify_all()
            if error is None:
                try:
                    for f in p.finish:
                        f()
                except BaseException as e:  # noqa: BLE001 - the call's error
                    error = e
            p.completed = time.perf_counter()
            if self.trace is not None:
                self.trace.append((p.what, p.issued, p.completed))
            p.keep = []
            _complete(p.outs, error)

    def _watchdog_loop(self) -> None:
        """Aborts the communicator when the oldest call outlives its timeout."""
        while True:
            with self._cond:
                if self._stopping and not self._queue:
                    return
                head = self._queue[0] if self._queue else self._inline
                if head is None or head.deadline is None:
                    # Idle, or a blocking call may start: look again within a quarter of
                    # the timeout, so that none outlives it by more.
                    self._cond.wait(None if self._timeout is None else self._timeout / 4)
                    continue
                left = head.deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                head.timed_out = True
                self._failure = CommTimeoutError(
                    7100,
                    f"ferrocoll: {head.what} did not complete within the timeout of "
                    f"{head.timeout:g} s (init_process_group(timeout=...)); the communicator "
                    "was aborted, and this group's later calls fail with this error",
                )
            self._kill()
            return

    def _kill(self) -> None:
        """Revokes (the peers' calls fail too) and aborts the communicator: the call in
        progress ends, and so does every later one."""
        with contextlib.suppress(ferrocoll.FerrocollError):
            self._comm.revoke()
        with contextlib.suppress(ferrocoll.FerrocollError):
            self._comm.abort()

    def _stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            threads = list(self._threads)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join()

    # -- coalescing ----------------------------------------------------------------------
    @property
    def supports_coalescing(self) -> bool:
        return True

    def _get_backend(self, device: Any) -> "ProcessGroupFerrocoll":
        # This group is its own (only) backend: torch asks it whether it coalesces.
        return self

    def start_coalescing(self, device: Any = None) -> None:
        self._usable("start_coalescing")
        if self._batch is not None:
            raise ValueError("ferrocoll: coalescing blocks do not nest")
        _check(_LIB.fcGroupStart())
        self._batch, self._batch_outs = _Call(self, "a coalesced batch"), []

    def end_coalescing(self, device: Any = None) -> _Work:
        batch, outs = self._batch, self._batch_outs
        if batch is None:
            raise ValueError("ferrocoll: end_coalescing without start_coalescing")
        self._batch, self._batch_outs = None, []
        work, fut = _work()
        outs = outs + [(fut, None)]
        if batch.device == "cuda":
            _check(_LIB.fcGroupEnd())
            for f in batch.finish:
                f()
            _complete(outs, None)
            return work
        h = ctypes.c_void_p()
        _check(_LIB.fcGroupEndAsync(ctypes.byref(h)))
        self._enqueue(_Pending(h.value, batch, outs, self._timeout))
        return work

    _start_coalescing = start_coalescing
    _end_coalescing = end_coalescing

    # -- collectives (each list holds one tensor per device; CPU means one) ----------------
    def allreduce(self, tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        return self.allreduce_coalesced(tensors, opts, "all_reduce")

    def allreduce_coalesced(self, tensors: List[torch.Tensor], opts: Any = None,
                            what: str = "all_reduce_coalesced") -> _Work:
        c = self._start(what)
        op = _opts_op(opts, what)
        for i, t in enumerate(tensors):
            x = c.tensor(t, f"tensor {i}", True)
            c.call(_LIB.fcAllReduce, _p(x), _p(x), x.numel(), c.dtype(x), op)
        return self._submit(c, tensors, opts)

    def allgather(self, output_tensor_lists: List[List[torch.Tensor]],
                  input_tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        c = self._start("all_gather")
        p = self.size()
        for outs, inp in zip(output_tensor_lists, input_tensors):
            if len(outs) != p:
                raise ValueError(f"ferrocoll: all_gather: {len(outs)} output tensors, expected "
                                 f"{p} (one per rank)")
            if any(o.numel() != inp.numel() for o in outs):
                raise _missing("all_gather with tensors of different sizes", "allgatherv")
            x = c.tensor(inp, "input", False)
            for o in outs:
                c.on(o.device, "output")
            flat = c.staging((p,) + tuple(x.shape), x)
            c.call(_LIB.fcAllGather, _p(x), _p(flat), x.numel(), c.dtype(x))
            c.finish.append(lambda outs=outs, flat=flat: [o.copy_(f.reshape(o.shape)) for o, f in
                                                           zip(outs, flat)])
        return self._submit(c, output_tensor_lists, opts)

    def allgather_coalesced(self, output_tensor_lists: List[List[torch.Tensor]],
                            input_tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        return self.allgather(output_tensor_lists, input_tensors, opts)

    def _allgather_base(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:
        return self.allgather_into_tensor_coalesced([output], [input], opts, "all_gather_into_tensor")

    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:
        return self._allgather_base(output, input, opts)

    def allgather_into_tensor_coalesced(self, outputs: List[torch.Tensor],
                                        inputs: List[torch.Tensor], opts: Any = None,
                                        what: str = "all_gather_into_tensor_coalesced") -> _Work:
        c = self._start(what)
        for o, i in zip(outputs, inputs):
            if o.numel() != i.numel() * self.size():
                raise ValueError(f"ferrocoll: {what}: output has {o.numel()} elements, expected "
                                 f"world_size × input = {self.size()} × {i.numel()}")
            x, y = c.tensor(i, "input", False), c.tensor(o, "output", True)
            c.call(_LIB.fcAllGather, _p(x), _p(y), x.numel(), c.dtype(x))
        return self._submit(c, outputs, opts)

    all_gather_single_coalesced = allgather_into_tensor_coalesced

    def reduce_scatter(self, output_tensors: List[torch.Tensor],
                       input_tensor_lists: List[List[torch.Tensor]], opts: Any = None) -> _Work:
        c = self._start("reduce_scatter")
        op = _opts_op(opts, "reduce_scatter")
        p = self.size()
        for out, ins in zip(output_tensors, input_tensor_lists):
            if len(ins) != p:
                raise ValueError(f"ferrocoll: reduce_scatter: {len(ins)} input tensors, "
                                 f"expected {p} (one per rank)")
            if any(t.numel() != out.numel() for t in ins):
                raise _missing("reduce_scatter with tensors of different sizes", "reducescatterv")
            y = c.tensor(out, "output", True)
            for t in ins:
                c.on(t.device, "input")
            flat = c.tensor(torch.cat([t.reshape(-1) for t in ins]), "input", False)
            c.call(_LIB.fcReduceScatter, _p(flat), _p(y), y.numel(), c.dtype(y), op)
        return self._submit(c, output_tensors, opts)

    def _reduce_scatter_base(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:
        return self.reduce_scatter_tensor_coalesced([output], [input], opts, "reduce_scatter_tensor")

    def reduce_scatter_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:
        return self._reduce_scatter_base(output, input, opts)

    def reduce_scatter_tensor_coalesced(self, outputs: List[torch.Tensor],
                                        inputs: List[torch.Tensor], opts: Any = None,
                                        what: str = "reduce_scatter_tensor_coalesced") -> _Work:
        c = self._start(what)
        op = _opts_op(opts, what)
        for o, i in zip(outputs, inputs):
            if i.numel() != o.numel() * self.size():
                raise ValueError(f"ferrocoll: {what}: input has {i.numel()} elements, expected "
                                 f"world_size × output = {self.size()} × {o.numel()}")
            x, y = c.tensor(i, "input", False), c.tensor(o, "output", True)
            c.call(_LIB.fcReduceScatter, _p(x), _p(y), y.numel(), c.dtype(y), op)
        return self._submit(c, outputs, opts)

    reduce_scatter_single_coalesced = reduce_scatter_tensor_coalesced

    def broadcast(self, tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        c = self._start("broadcast")
        root = opts.rootRank if opts is not None else 0
        for i, t in enumerate(tensors):
            x = c.tensor(t, f"tensor {i}", True)
            c.call(_LIB.fcBroadcast, _p(x), _p(x), x.numel(), c.dtype(x), root)
        return self._submit(c, tensors, opts)

    def reduce(self, tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        c = self._start("reduce")
        op, root = _opts_op(opts, "reduce"), opts.rootRank if opts is not None else 0
        for i, t in enumerate(tensors):
            x = c.tensor(t, f"tensor {i}", True)
            c.call(_LIB.fcReduce, _p(x), _p(x), x.numel(), c.dtype(x), op, root)
        return self._submit(c, tensors, opts)

    def _even_splits(self, what: str, n: int, splits: Sequence[int], name: str) -> None:
        p = self.size()
        if splits:
            if len(splits) != p:
                raise ValueError(f"ferrocoll: {what}: {name} has {len(splits)} entries, "
                                 f"expected {p} (one per rank)")
            if len(set(splits)) > 1:
                raise _missing(f"{what} with uneven {name} {list(splits)}", "alltoallv")
        elif n % p:
            raise ValueError(f"ferrocoll: {what}: {n} rows do not split evenly over {p} ranks; "
                             f"uneven splits need {_MISSING['alltoallv']}")

    def alltoall_base(self, output: torch.Tensor, input: torch.Tensor,
                      output_split_sizes: List[int], input_split_sizes: List[int],
                      opts: Any = None) -> _Work:
        what = "all_to_all_single"
        rows_in = input.shape[0] if input.dim() else 1
        rows_out = output.shape[0] if output.dim() else 1
        self._even_splits(what, rows_in, input_split_sizes, "input_split_sizes")
        self._even_splits(what, rows_out, output_split_sizes, "output_split_sizes")
        if input.numel() != output.numel():
            raise ValueError(f"ferrocoll: {what}: input has {input.numel()} elements, output "
                             f"{output.numel()}: an even all-to-all needs as many")
        c = self._start(what)
        x, y = c.tensor(input, "input", False), c.tensor(output, "output", True)
        n = x.numel() // self.size()
        c.call(_LIB.fcAllToAll, _p(x), _p(y), n, c.dtype(x))
        return self._submit(c, output, opts)

    def all_to_all_single(self, output: torch.Tensor, input: torch.Tensor,
                          output_split_sizes: List[int], input_split_sizes: List[int],
                          opts: Any = None) -> _Work:
        return self.alltoall_base(output, input, output_split_sizes, input_split_sizes, opts)

    def alltoall(self, output_tensors: List[torch.Tensor], input_tensors: List[torch.Tensor],
                 opts: Any = None) -> _Work:
        what = "all_to_all"
        p = self.size()
        if len(output_tensors) != p or len(input_tensors) != p:
            raise ValueError(f"ferrocoll: {what}: {len(input_tensors)} inputs and "
                             f"{len(output_tensors)} outputs, expected {p} of each (one per rank)")
        sizes = {t.numel() for t in list(input_tensors) + list(output_tensors)}
        if len(sizes) > 1:
            raise _missing(f"{what} with tensors of different sizes", "alltoallv")
        c = self._start(what)
        for t in list(input_tensors) + list(output_tensors):
            c.on(t.device, "tensor")
        flat_in = torch.cat([t.reshape(-1) for t in input_tensors])
        c.keep.append(flat_in)
        flat_out = c.staging((flat_in.numel(),), flat_in)
        c.tensor(flat_in, "input", False)
        c.call(_LIB.fcAllToAll, _p(flat_in), _p(flat_out), flat_in.numel() // p, c.dtype(flat_in))
        c.finish.append(lambda: [o.copy_(f.reshape(o.shape)) for o, f in
                                 zip(output_tensors, flat_out.chunk(p))])
        return self._submit(c, output_tensors, opts)

    def gather(self, output_tensors: Any, input_tensors: Any, opts: Any = None) -> _Work:
        raise _missing("gather", "gather")

    def gather_single(self, output: Any, input: Any, opts: Any = None) -> _Work:
        raise _missing("gather", "gather")

    def scatter(self, output_tensors: Any, input_tensors: Any, opts: Any = None) -> _Work:
        raise _missing("scatter", "scatter")

    def barrier(self, opts: Any = None) -> _Work:
        c = self._start("barrier")
        c.call(_LIB.fcBarrier)
        return self._submit(c, None, opts)

    def send(self, tensors: List[torch.Tensor], dst: int, tag: int = 0) -> _Work:
        c = self._start("send")
        for t in tensors:
            x = c.tensor(t, "tensor", False)
            c.call(_LIB.fcSend, _p(x), x.numel(), c.dtype(x), dst)
        return self._submit(c, tensors)

    def recv(self, tensors: List[torch.Tensor], src: int, tag: int = 0) -> _Work:
        c = self._start("recv")
        for t in tensors:
            x = c.tensor(t, "tensor", True)
            c.call(_LIB.fcRecv, _p(x), x.numel(), c.dtype(x), src)
        return self._submit(c, tensors)

    def recv_anysource(self, tensors: List[torch.Tensor], tag: int = 0) -> _Work:
        raise NotImplementedError("ferrocoll: recv from any source is not supported; name the "
                                  "source rank (src=...)")

    # -- lifecycle -------------------------------------------------------------------------
    def _wait_for_pending_works(self) -> None:
        with self._cond:
            while self._queue:
                self._cond.wait()

    def shutdown(self) -> None:
        """Waits for the calls in flight (each bounded by its timeout), stops the group's
        threads and destroys the communicator. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop()
        with contextlib.suppress(ferrocoll.FerrocollError):
            self._comm.destroy()

    # -- failures --------------------------------------------------------------------------
    def revoke(self) -> None:
        """Revokes the communicator on every rank: pending and later calls on this group
        raise ``ferrocoll.RevokedError`` everywhere (within the heartbeat period on the other
        ranks). The group stays usable for :func:`shrink_group`."""
        self._comm.revoke()

    def abort(self) -> None:
        """Revokes the communicator (the peers' calls on it fail too) and frees it: the
        calls in flight fail (their Works raise), the group's threads stop, later calls
        raise. Idempotent; the group is unusable afterwards (torch's abort path; to go on
        with the survivors use :func:`shrink_group` instead)."""
        if self._failure is None:
            self._failure = ferrocoll.SystemFailureError(
                7002, "ferrocoll: the process group was aborted")
        already = self._closed
        self._closed = True
        self._kill()
        if not already:
            self._stop()

    def shrink(self, exclude: Optional[Sequence[int]] = None,
               abort: bool = False) -> "ProcessGroupFerrocoll":
        """A new :class:`ProcessGroupFerrocoll` over part of this group (see
        :meth:`ferrocoll.Communicator.shrink`): with ``exclude`` None, the survivors agreed
        after a failure; otherwise every rank but ``exclude``. Not registered with
        ``torch.distributed``: :func:`shrink_group` does that."""
        comm = self._comm.shrink(exclude, abort=abort)
        timeout = None if self._timeout is None else datetime.timedelta(seconds=self._timeout)
        return ProcessGroupFerrocoll(None, 0, 0, timeout, comm=comm)


@contextlib.contextmanager
def _ferrocoll_timeout(seconds: Optional[float]) -> Any:
    """``FERROCOLL_TIMEOUT`` = ``seconds`` while a communicator is created, unless set."""
    if seconds is None or "FERROCOLL_TIMEOUT" in os.environ:
        yield
        return
    os.environ["FERROCOLL_TIMEOUT"] = f"{seconds:g}"
    try:
        yield
    finally:
        os.environ.pop("FERROCOLL_TIMEOUT", None)


def _backend(pg=None):
    """The ferrocoll process group behind ``pg`` (default: the world group)."""
    pg = pg if pg is not None else dist.group.WORLD
    if isinstance(pg, ProcessGroupFerrocoll):
        return pg
    try:
        b = pg._get_backend(torch.device("cpu"))
    except Exception:  # noqa: BLE001 - any failure means "not ours"
        b = None
    if isinstance(b, ProcessGroupFerrocoll):
        return b
    raise RuntimeError("compression_hook needs a process group of backend 'ferrocoll'")


def _refuse_powersgd(codec):
    """Raises ValueError if ``codec`` (a ``FERROCOLL_COMPRESSION`` spelling; None: that
    variable) names PowerSGD, which the hook cannot run (see :func:`compression_hook`)."""
    spelling = codec if codec is not None else os.environ.get("FERROCOLL_COMPRESSION", "")
    name = str(spelling).strip().lower().split(":", 1)[0]
    if name == "powersgd":
        where = repr(codec) if codec is not None else f"FERROCOLL_COMPRESSION={spelling!r}"
        raise ValueError(
            f"ferrocoll: compression_hook cannot use PowerSGD ({where}): a DDP bucket is a flat "
            "vector of many gradients, and PowerSGD compresses one 2-D gradient matrix at a time "
            "(ferrocoll's all_reduce_compressed_2d, Rust API only). Use a 1-D codec (fp16, bf16, "
            "fp8, topk:0.01, onebit), or torch's own PowerSGD hook, which runs over this backend "
            "(torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook.powerSGD_hook)")


_HOOKS = itertools.count()


def compression_hook(codec="fp16"):
    """A DistributedDataParallel communication hook that all-reduces each gradient bucket
    compressed with ``codec`` (a ``FERROCOLL_COMPRESSION`` spelling: ``"fp16"``, ``"bf16"``,
    ``"fp8"``, ``"fp8e5m2"``, ``"topk:0.01"``, ``"onebit"``, ``"none"``, ``"auto"``; None: the
    environment variable), carrying each bucket's compression error to its next step (error
    feedback), then averages::

        ddp.register_comm_hook(None, ferrocoll.torch.compression_hook("fp8"))

    PowerSGD (``"powersgd:R"``) is refused here with a ValueError: it compresses one 2-D
    gradient matrix at a time, and a bucket is a flat vector of many gradients (the C ABI's
    ``fcAllReduceCompressed``, which the hook calls, refuses it too). For PowerSGD under DDP
    use torch's ``powerSGD_hook`` (``torch.distributed.algorithms.ddp_comm_hooks``), which
    runs its all-reduces over this backend.

    The state argument of the hook is the process group (None: the world group). Buckets
    that are not float32 are all-reduced exactly."""
    _refuse_powersgd(codec)
    # Error feedback keeps one residual per key, of the key's first length; a residual
    # belongs to the exact gradients it was computed from. DDP may rebuild its buckets (after
    # the first iteration, in gradient-ready order): the same bucket index can then hold
    # other parameters, or another number of elements (which the C ABI refuses as a
    # FeedbackMismatch). So the key names this hook (two DDP models on one process group
    # must not share residuals), the bucket index, its element count and its parameters'
    # identities (a reordered bucket of the same length must not inherit another
    # parameter's residual): a rebuilt bucket starts from fresh state, and the residual of
    # the layout it replaced is dropped. Only float32 buckets use a key, so the dtype is
    # always float32 there. Keys are local to each rank: nothing about them is exchanged.
    hook_id = next(_HOOKS)
    keys = {}  # bucket index -> key of its current layout

    def key_of(pg, bucket, numel):
        try:
            params = tuple((p.data_ptr(), p.numel()) for p in bucket.parameters())
        except Exception:  # noqa: BLE001 - older torch or no parameter list: length only
            params = ()
        key = f"ddp{hook_id}-bucket{bucket.index()}-n{numel}-p{hash(params) & (2**64 - 1):016x}"
        old = keys.get(bucket.index())
        if old != key:
            if old is not None:
                pg._comm.reset_compression(old)  # free the replaced layout's residual
            keys[bucket.index()] = key
        return key

    def hook(state, bucket):
        pg = _backend(state)
        t = bucket.buffer()
        dense = t if t.is_contiguous() else t.contiguous()
        arr = dense.detach().numpy()
        if dense.dtype == torch.float32:
            key = key_of(pg, bucket, dense.numel())
            pg._comm.all_reduce_compressed(arr, key=key, codec=codec)
        else:
            pg._comm.all_reduce(arr)
        dense.div_(pg.size())
        if dense is not t:
            t.copy_(dense)
        fut = torch.futures.Future()
        fut.set_result(t)
        return fut

    return hook


def shrink_group(exclude=None, group=None, abort=False):
    """The ferrocoll equivalent of ``torch.distributed.shrink_group`` (which drives NCCL's
    communicators only): returns a new process group over the ranks of ``group`` (None: the
    default group) that remain, and frees the old one.

    ``exclude`` None (or empty): after a failure, every surviving rank calls it and the
    group spans the survivors the ranks agree on (``ferrocoll.RevokedError`` told them of the
    failure); torch's own function needs the failed ranks listed instead. Otherwise every rank
    not in ``exclude`` calls it with the same list. ``abort=True`` (torch's ``SHRINK_ABORT``)
    revokes the old group first, failing calls still running on it. Ranks are renumbered
    densely in the old order. When the default group shrinks, the new group becomes the
    default (``dist.all_reduce(t)`` then runs on it) and the other groups are destroyed, as
    torch does. Raises ``ferrocoll.ExcludedError`` on a rank left out."""
    old = _backend(group)
    new = old.shrink(exclude, abort=abort)
    # The old ranks of the members, in new-rank order (the agreed survivors are known only
    # to the communicator).
    olds = new._comm.all_gather(np.array([old.rank()], np.int64)).reshape(-1).tolist()
    c10d = dist.distributed_c10d
    world = getattr(c10d, "_world", None)
    target = dist.group.WORLD if group is None else group
    default = target is dist.group.WORLD
    if world is not None and target in getattr(world, "pg_map", {}):
        backend_name, store = world.pg_map[target]
        if default:
            for pg in [pg for pg in list(world.pg_map) if pg is not target]:
                with contextlib.suppress(Exception):
                    dist.destroy_process_group(pg)
        name = f"ferrocoll_shrunk_{'_'.join(map(str, olds))}_{next(_SHRINKS)}"
        with contextlib.suppress(Exception):
            c10d._cleanup_process_group_global_state(target)
        if hasattr(c10d, "_register_pg_in_world"):
            c10d._register_pg_in_world(new, backend_name, store, name, "",
                                       {g: r for r, g in enumerate(olds)})
            new._set_group_name(name)
        if default and hasattr(c10d, "_update_default_pg"):
            c10d._update_default_pg(new)
    old.shutdown()
    return new


_SHRINKS = itertools.count()


def _create(store, rank, size, timeout):
    return ProcessGroupFerrocoll(store, rank, size, timeout)


dist.Backend.register_backend("ferrocoll", _create, devices=["cpu", "cuda"])
