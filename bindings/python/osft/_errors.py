"""``OsftError`` and one subclass per ``osft_status`` code."""

from __future__ import annotations

from typing import Dict, Type

from ._enums import STATUS
from ._lib import lib

#: Status names by value (``STATUS``, from :mod:`osft._enums`, is the reverse).
STATUS_NAME: Dict[int, str] = {v: k for k, v in STATUS.items()}


class OsftError(Exception):
    """A failed osft call.

    Attributes:
        status: the status name, e.g. ``"INVALID_SHAPE"`` (``OSFT_STATUS_INVALID_SHAPE``).
        code: the numeric ``osft_status`` value.
        message: the library's thread-local last-error message (or the binding's own message for
            errors found before calling the library, e.g. a tensor with negative strides).
        function: the C function (or Python check) that failed.
    """

    def __init__(self, status, message: str = "", function: str = ""):
        if isinstance(status, str):
            code = STATUS[status]
        else:
            code = int(status)
        self.code = code
        self.status = STATUS_NAME.get(code, f"UNKNOWN({code})")
        self.message = message
        self.function = function
        where = f"{function}: " if function else ""
        super().__init__(f"{where}{self.status}: {message}" if message else f"{where}{self.status}")

    def __reduce__(self):
        return (type(self), (self.code, self.message, self.function))


class NullPointerError(OsftError):
    """``OSFT_STATUS_NULL_POINTER``: a required argument is missing."""


class InvalidShapeError(OsftError, ValueError):
    """``OSFT_STATUS_INVALID_SHAPE``: wrong or inconsistent shapes."""


class InvalidStrideError(OsftError, ValueError):
    """``OSFT_STATUS_INVALID_STRIDE``: a layout the library cannot take (e.g. negative strides)."""


class OverlapError(OsftError, ValueError):
    """``OSFT_STATUS_OVERLAP``: arguments (or elements of one) share memory."""


class SizeOverflowError(OsftError, ValueError):
    """``OSFT_STATUS_OVERFLOW``: a size or offset overflows the address space."""


class MisalignedError(OsftError, ValueError):
    """``OSFT_STATUS_MISALIGNED``: a pointer is not aligned to its element size."""


class DtypeError(OsftError, TypeError):
    """``OSFT_STATUS_DTYPE_UNSUPPORTED``: unknown, unsupported or mismatched dtypes."""


class RankOutOfRangeError(OsftError, ValueError):
    """``OSFT_STATUS_RANK_OUT_OF_RANGE``: ``k`` outside ``[0, min(N, M)]``."""


class InvalidArgumentError(OsftError, ValueError):
    """``OSFT_STATUS_INVALID_ARGUMENT``: any other bad argument."""


class PreconditionError(OsftError):
    """``OSFT_STATUS_PRECONDITION``: an explicit SVD algorithm that cannot serve the call, or else
    a routine's precondition failed inside osft (a bug: please report it)."""


class NotConvergedError(OsftError):
    """``OSFT_STATUS_NOT_CONVERGED``: the SVD did not converge."""


class WorkspaceTooSmallError(OsftError):
    """``OSFT_STATUS_WORKSPACE_TOO_SMALL``: the caller workspace is too small."""


class DeviceMismatchError(OsftError, ValueError):
    """``OSFT_STATUS_DEVICE_MISMATCH``: a buffer is on another device than the context."""


class BackendUnavailableError(OsftError):
    """``OSFT_STATUS_BACKEND_UNAVAILABLE``: e.g. a CUDA context without a usable GPU."""


class AllocationFailedError(OsftError, MemoryError):
    """``OSFT_STATUS_ALLOCATION_FAILED``."""


class InternalError(OsftError):
    """``OSFT_STATUS_INTERNAL``: an internal error or a caught panic."""


class NonFiniteError(OsftError, ValueError):
    """``OSFT_STATUS_NON_FINITE``: a matrix to be factored (SVD, decompose) has NaN or Inf."""


#: The exception class of every failure status, by status name.
ERROR_CLASSES: Dict[str, Type[OsftError]] = {
    "NULL_POINTER": NullPointerError,
    "INVALID_SHAPE": InvalidShapeError,
    "INVALID_STRIDE": InvalidStrideError,
    "OVERLAP": OverlapError,
    "OVERFLOW": SizeOverflowError,
    "MISALIGNED": MisalignedError,
    "DTYPE_UNSUPPORTED": DtypeError,
    "RANK_OUT_OF_RANGE": RankOutOfRangeError,
    "INVALID_ARGUMENT": InvalidArgumentError,
    "PRECONDITION": PreconditionError,
    "NOT_CONVERGED": NotConvergedError,
    "WORKSPACE_TOO_SMALL": WorkspaceTooSmallError,
    "DEVICE_MISMATCH": DeviceMismatchError,
    "BACKEND_UNAVAILABLE": BackendUnavailableError,
    "ALLOCATION_FAILED": AllocationFailedError,
    "INTERNAL": InternalError,
    "NON_FINITE": NonFiniteError,
}
_BY_CODE: Dict[int, Type[OsftError]] = {STATUS[name]: cls for name, cls in ERROR_CLASSES.items()}


def error(status, message: str, function: str = "") -> OsftError:
    """The OsftError subclass for ``status`` (a name or a code)."""
    code = STATUS[status] if isinstance(status, str) else int(status)
    return _BY_CODE.get(code, OsftError)(code, message, function)


def last_error_message() -> str:
    """The calling thread's last-error message from libosft ("" after a successful call)."""
    raw = lib.osft_last_error_message()
    return raw.decode("utf-8", "replace") if raw else ""


def status_string(code: int) -> str:
    """libosft's human-readable name of a status code."""
    raw = lib.osft_status_string(int(code))
    return raw.decode("utf-8", "replace") if raw else ""


_OK = STATUS["OK"]


def check(code: int, function: str) -> None:
    """Raise the OsftError for a non-zero status, with the thread-local message."""
    if code != _OK:
        raise error(code, last_error_message(), function)
