"""Exceptions carrying ferrocoll's result code and message."""

SUCCESS = 0
SYSTEM_ERROR = 7002
INTERNAL_ERROR = 7003
INVALID_ARGUMENT = 7004
INVALID_USAGE = 7005
REMOTE_ERROR = 7006
TIMEOUT = 7100


class FerrocollError(Exception):
    """A failed ferrocoll call: `code` is the C ABI's fcResult_t, `message` what went wrong."""

    code_name = "fcError"

    def __init__(self, code: int, message: str):
        super().__init__(f"{message} [{self.code_name} = {code}]")
        self.code = code
        self.message = message


class InvalidArgumentError(FerrocollError, ValueError):
    """fcInvalidArgument: a bad argument (type, count, rank, buffer)."""

    code_name = "fcInvalidArgument"


class InvalidReduceOpError(InvalidArgumentError, TypeError):
    """A reduce operator that is none of the accepted ones (see :class:`ferrocoll.ReduceOp`).
    A ``TypeError``, and also an :class:`InvalidArgumentError` (fcInvalidArgument) like the
    package's other argument errors; the message lists the accepted values."""

    code_name = "fcInvalidArgument"


class InvalidUsageError(FerrocollError):
    """fcInvalidUsage: a destroyed communicator, mismatched calls, unsupported combination."""

    code_name = "fcInvalidUsage"


class RemoteError(FerrocollError):
    """fcRemoteError: another rank failed."""

    code_name = "fcRemoteError"


class RevokedError(RemoteError):
    """fcRemoteError from a revoked communicator: a peer failed (found by the heartbeat
    detector or a broken link) or a rank called :meth:`Communicator.revoke`. Every pending and
    later call on it raises this; :meth:`Communicator.shrink` makes a communicator of the
    survivors."""

    code_name = "fcRemoteError"


class ExcludedError(RemoteError):
    """fcRemoteError from :meth:`Communicator.shrink`: this rank is not part of the new
    communicator (it excluded itself, or the survivors agreed without it). It should leave
    the job, or come back as a replacement (:func:`ferrocoll.join`)."""

    code_name = "fcRemoteError"


class CommTimeoutError(FerrocollError, TimeoutError):
    """fcTimeout: no progress within FERROCOLL_TIMEOUT."""

    code_name = "fcTimeout"


class SystemFailureError(FerrocollError):
    """fcSystemError: the OS or a link failed, or the communicator was aborted."""

    code_name = "fcSystemError"


class InternalError(FerrocollError):
    """fcInternalError: a bug in ferrocoll."""

    code_name = "fcInternalError"


BY_CODE = {
    INVALID_ARGUMENT: InvalidArgumentError,
    INVALID_USAGE: InvalidUsageError,
    REMOTE_ERROR: RemoteError,
    TIMEOUT: CommTimeoutError,
    SYSTEM_ERROR: SystemFailureError,
    INTERNAL_ERROR: InternalError,
}


# How the C library's messages name the two remote failures that a program handles apart
# (ffi/src/tests/elastic.rs checks that the library still says so).
_REVOKED = "communicator revoked"
_EXCLUDED = "left out of the survivors"


def error_for(code: int, message: str) -> FerrocollError:
    """The exception for result ``code`` with the library's ``message``."""
    if code == REMOTE_ERROR and _EXCLUDED in message:
        return ExcludedError(code, message)
    if code == REMOTE_ERROR and _REVOKED in message:
        return RevokedError(code, message)
    return BY_CODE.get(code, FerrocollError)(code, message)
