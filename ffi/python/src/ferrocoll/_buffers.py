"""Buffers as the C calls take them: NumPy views (never copies), dtype codes, and the checks
that name a bad argument."""

import ctypes
import threading
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ._errors import InvalidArgumentError

#: A buffer the collectives read or write: a NumPy array, or any object NumPy can view
#: without copying (``__array_interface__``, the buffer protocol: memoryview, bytearray, a
#: CPU torch tensor, ...), C-contiguous.
BufferLike = Any

#: Per-rank element counts or displacements: one non-negative integer per rank.
Counts = Sequence[int]


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

def _root(root: int, p: int) -> int:
    """``root``, checked to be a rank of a communicator of ``p``."""
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < p:
        raise _bad_arg(f"root={root!r} is not a rank: expected an integer from 0 to {p - 1}")
    return int(root)


def _counts(values: Counts, p: int, what: str) -> np.ndarray:
    """Per-rank counts or displacements as int64, checked: ``p`` non-negative integers."""
    try:
        n = len(values)
    except TypeError:
        raise _bad_arg(f"{what} must be a sequence of {p} integers (one per rank), got "
                       f"{type(values).__name__}") from None
    if n != p:
        raise _bad_arg(f"{what} has {n} entries, expected {p} (one per rank)")
    out = np.empty(p, np.int64)
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise _bad_arg(f"{what}[{i}] is {v!r}, expected a non-negative integer (elements)")
        if v < 0:
            raise _bad_arg(f"{what}[{i}] is {v}, expected a non-negative integer (elements)")
        out[i] = v
    return out


def _extent(counts: np.ndarray, displs: Optional[np.ndarray]) -> int:
    """Elements a buffer needs for every block (at its displacement, or packed)."""
    if displs is None:
        return int(counts.sum())
    return int((counts + displs).max()) if counts.size else 0


def _i64(arr: Optional[np.ndarray]) -> Any:
    return None if arr is None else arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
