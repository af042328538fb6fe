"""The machinery of the torch backend (:mod:`ferrocoll.torch`): torch's Work over a Future,
the calls being prepared, and the issuing, completion thread and timeout watchdog that
:class:`ferrocoll.torch.ProcessGroupFerrocoll` runs its calls through (:class:`_Issuing`)."""

import contextlib
import ctypes
import datetime
import os
import threading
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist

import ferrocoll
from ferrocoll import _LIB, _check
from ferrocoll._lib import SCALAR_HOST_IMMEDIATE
from ferrocoll._errors import CommTimeoutError, InvalidUsageError, error_for

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
        # Run once the calls are over, whatever the outcome (frees premul-sum operators).
        self.after: List[Callable[[], Any]] = []

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

    def host_only(self, kind: str) -> None:
        """Refuses CUDA tensors for a call the C ABI runs on host buffers only."""
        if self.device == "cuda":
            raise ValueError(
                f"ferrocoll: {self.what}: {kind} takes CPU tensors only (the C ABI runs it on "
                "host buffers); move the tensors to the CPU")

    def counts(self, values: Sequence[int]) -> Any:
        """Per-rank element counts as the C ABI takes them (int64), kept alive with the call."""
        arr = np.asarray(list(values), np.int64)
        self.keep.append(arr)  # type: ignore[arg-type]
        return arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))

    def red_op(self, op: Union[int, "ferrocoll.PreMulSum"], like: torch.Tensor) -> int:
        """The fcRedOp_t for ``op`` (a number, or a premul-sum made now for ``like``'s dtype,
        with its factor; freed once the call is over)."""
        if isinstance(op, int):
            return op
        self.host_only("premul-sum")
        scalar = torch.tensor([op.factor], dtype=like.dtype)
        code = ctypes.c_int()
        _check(_LIB.fcRedOpCreatePreMulSum(ctypes.byref(code), ctypes.c_void_p(scalar.data_ptr()),
                                           _DTYPES[like.dtype], SCALAR_HOST_IMMEDIATE, self.pg._h))
        h, n = self.pg._h, code.value
        self.after.append(lambda: _LIB.fcRedOpDestroy(n, h))
        return n


def _run_after(after: List[Callable[[], Any]]) -> None:
    """Runs (once) what waits for a call to be over."""
    while after:
        after.pop()()


class _Pending:
    """An issued torch call (or coalesced batch) until its completion."""

    __slots__ = ("handle", "keep", "finish", "after", "outs", "deadline", "timeout", "what",
                 "timed_out", "issued", "completed")

    def __init__(self, handle: Optional[int], call: _Call,
                 outs: List[Tuple[torch.futures.Future, Any]],
                 timeout: Optional[float]) -> None:
        self.handle = handle
        self.keep = call.keep
        self.finish = call.finish
        self.after = call.after
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



class _Issuing:
    """How a :class:`ferrocoll.torch.ProcessGroupFerrocoll` issues and completes its calls
    (see its docstring). Expects ``_comm``, ``_h``, ``_timeout``, ``_device_kind`` and the
    state its ``__init__`` sets up (``_batch``, ``_queue``, ``_cond``, ...)."""

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
            b.after += c.after  # freed when the batch is over
            if b.device is not None and c.device is not None and b.device != c.device:
                raise ValueError("ferrocoll: one coalesced batch takes tensors of one device kind")
            b.device = b.device or c.device
            for fn, args in c.calls:
                _check(fn(*args, self._h, stream))
            b.keep += c.keep
            b.finish += c.finish
            self._batch_outs.append((fut, value))
            return work
        try:
            return self._issue(c, work, fut, value, opts)
        except BaseException:
            _run_after(c.after)  # nothing of the call is in flight any more
            raise

    def _issue(self, c: _Call, work: _Work, fut: torch.futures.Future, value: Any,
               opts: Any) -> _Work:
        stream = c.stream
        if c.device == "cuda":
            # Queued on the current stream when the calls return: complete now.
            if len(c.calls) == 1:
                fn, args = c.calls[0]
                _check(fn(*args, self._h, stream))
            else:
                self._group(c, stream, blocking=True)
            _run_after(c.after)
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
            _run_after(p.after)
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
            _run_after(p.after)
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
            rc = _LIB.fcGroupEnd()
            _run_after(batch.after)
            _check(rc)
            for f in batch.finish:
                f()
            _complete(outs, None)
            return work
        h = ctypes.c_void_p()
        rc = _LIB.fcGroupEndAsync(ctypes.byref(h))
        if rc != 0:
            _run_after(batch.after)
        _check(rc)
        self._enqueue(_Pending(h.value, batch, outs, self._timeout))
        return work

    _start_coalescing = start_coalescing
    _end_coalescing = end_coalescing
