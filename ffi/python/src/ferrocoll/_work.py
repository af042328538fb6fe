"""The loaded C library, its result codes as exceptions, and :class:`Work`: a call issued with
``async_op=True``."""

import ctypes
from typing import Callable, Generic, Optional, TypeVar

from . import _lib
from ._errors import FerrocollError, error_for

_LIB = _lib.load()
_R = TypeVar("_R")


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

    def __init__(self, handle: Optional[int], keep: tuple, result: _R,
                 after: Optional[Callable[[], None]] = None) -> None:
        self._h: Optional[int] = handle
        self._keep = keep
        self._result = result
        self._error: Optional[FerrocollError] = None
        self._after = after  # run once the call is over (frees a premul-sum operator)

    def _finish(self, rc: int) -> None:
        self._error = _error(rc) if rc != 0 else None
        h, self._h = self._h, None
        if h:
            _LIB.fcWorkFree(h)
        self._keep = ()
        self._done()

    def _done(self) -> None:
        after, self._after = self._after, None
        if after is not None:
            after()

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
        if getattr(self, "_after", None) is not None:
            self._done()

