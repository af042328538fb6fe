"""Finding libferrocoll.so and declaring its C functions for ctypes."""

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Iterator

UNIQUE_ID_BYTES = 128
SPLIT_NOCOLOR = -1
SHRINK_DEFAULT = 0
SHRINK_ABORT = 1
IN_PROGRESS = 7007  # fcInProgress: fcWorkWait's timeout passed
SCALAR_HOST_IMMEDIATE = 1  # fcScalarHostImmediate: a premul-sum factor read at creation


class UniqueIdStruct(ctypes.Structure):
    """`fcUniqueId`: 128 opaque bytes."""

    _fields_ = [("internal", ctypes.c_char * UNIQUE_ID_BYTES)]


def _candidates() -> Iterator[Path]:
    given = os.environ.get("FERROCOLL_LIBRARY")
    if given:
        yield Path(given)
        return
    here = Path(__file__).resolve().parent
    yield here / "libferrocoll.so"
    # Used from a checkout (PYTHONPATH=ffi/python/src): the library cargo built there.
    repo = here.parents[3] if len(here.parents) > 3 else None
    if repo is not None and (repo / "Cargo.toml").is_file():
        for profile in ("release", "debug"):
            yield repo / "target" / profile / "libferrocoll.so"
    found = ctypes.util.find_library("ferrocoll")
    if found:
        yield Path(found)


def load() -> ctypes.CDLL:
    tried = []
    for path in _candidates():
        tried.append(str(path))
        if path.is_file() or not path.is_absolute():
            try:
                return _declare(ctypes.CDLL(str(path)))
            except OSError as e:
                tried[-1] += f" ({e})"
    raise ImportError(
        "cannot find libferrocoll.so; build it with `cargo build --release -p ferrocoll-ffi` "
        "or set FERROCOLL_LIBRARY. Tried: " + ", ".join(tried)
    )


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    c_int, c_size_t, c_void_p = ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p
    p_int = ctypes.POINTER(c_int)
    p_i64 = ctypes.POINTER(ctypes.c_int64)
    comm_t = c_void_p
    p_comm = ctypes.POINTER(c_void_p)
    work_t = c_void_p
    sig = {
        "fcGetVersion": [p_int],
        "fcGetUniqueId": [ctypes.POINTER(UniqueIdStruct)],
        "fcCommInitRank": [p_comm, c_int, UniqueIdStruct, c_int],
        "fcCommInitFromEnv": [p_comm],
        "fcCommSplit": [comm_t, c_int, c_int, p_comm],
        "fcCommDestroy": [comm_t],
        "fcCommAbort": [comm_t],
        "fcCommGetAsyncError": [comm_t, p_int],
        "fcCommCount": [comm_t, p_int],
        "fcCommUserRank": [comm_t, p_int],
        "fcAllReduce": [c_void_p, c_void_p, c_size_t, c_int, c_int, comm_t, c_void_p],
        "fcAllGather": [c_void_p, c_void_p, c_size_t, c_int, comm_t, c_void_p],
        "fcReduceScatter": [c_void_p, c_void_p, c_size_t, c_int, c_int, comm_t, c_void_p],
        "fcBroadcast": [c_void_p, c_void_p, c_size_t, c_int, c_int, comm_t, c_void_p],
        "fcReduce": [c_void_p, c_void_p, c_size_t, c_int, c_int, c_int, comm_t, c_void_p],
        "fcAllToAll": [c_void_p, c_void_p, c_size_t, c_int, comm_t, c_void_p],
        "fcGather": [c_void_p, c_void_p, c_size_t, c_int, c_int, comm_t, c_void_p],
        "fcScatter": [c_void_p, c_void_p, c_size_t, c_int, c_int, comm_t, c_void_p],
        "fcAllGatherV": [c_void_p, c_size_t, c_void_p, p_i64, p_i64, c_int, comm_t, c_void_p],
        "fcReduceScatterV": [c_void_p, c_void_p, p_i64, p_i64, c_int, c_int, comm_t, c_void_p],
        "fcAllToAllV": [c_void_p, p_i64, p_i64, c_void_p, p_i64, p_i64, c_int, comm_t, c_void_p],
        "fcRedOpCreatePreMulSum": [p_int, c_void_p, c_int, c_int, comm_t],
        "fcRedOpDestroy": [c_int, comm_t],
        "fcSend": [c_void_p, c_size_t, c_int, c_int, comm_t, c_void_p],
        "fcRecv": [c_void_p, c_size_t, c_int, c_int, comm_t, c_void_p],
        "fcBarrier": [comm_t, c_void_p],
        "fcAllReduceCompressed": [c_void_p, c_size_t, c_int, ctypes.c_char_p, ctypes.c_char_p, comm_t, c_void_p],
        "fcCompressionReset": [comm_t, ctypes.c_char_p],
        "fcCommRevoke": [comm_t, c_int],
        "fcCommShrink": [comm_t, p_int, c_int, p_comm, c_void_p, c_int],
        "fcCommJoinersWaiting": [comm_t, p_int],
        "fcCommGrow": [comm_t, p_comm],
        "fcCommJoin": [p_comm],
        "fcGroupStart": [],
        "fcGroupEnd": [],
        "fcGroupEndAsync": [ctypes.POINTER(work_t)],
        "fcWorkTest": [work_t, p_int],
        "fcWorkWait": [work_t, ctypes.c_int64],
        "fcWorkFree": [work_t],
    }
    for name, args in sig.items():
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = c_int
    lib.fcGetErrorString.argtypes = [c_int]
    lib.fcGetErrorString.restype = ctypes.c_char_p
    lib.fcGetLastError.argtypes = [comm_t]
    lib.fcGetLastError.restype = ctypes.c_char_p
    return lib
