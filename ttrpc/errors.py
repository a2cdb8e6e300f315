"""Errors of the ttrpc package and the gRPC status codes carried on the wire.

Every error raised by this package is a :class:`TtrpcError`. A call that ends with a
non-OK status raises a :class:`StatusError`; each code has its own subclass, so a
caller can write ``except ttrpc.Unimplemented`` or look at ``err.code``. A handler
raises the same classes (or ``StatusError(code, message)``) to answer with that status.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import ClassVar

from google.protobuf import any_pb2


class Code(enum.IntEnum):
    """The gRPC status codes (google.rpc.Code), as ttrpc carries them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(Exception):
    """Root of every error raised by the ttrpc package."""


class TransportError(TtrpcError):
    """A transport could not be set up (address in use, unsupported file type, ...)."""


class StatusError(TtrpcError):
    """A call ended with a non-OK status, received from the peer or raised by a handler.

    Raising ``StatusError(code, message)`` in a handler answers with that status; the
    client always raises the subclass for the code (see :func:`status_error`).
    """

    def __init__(self, code: Code, message: str = "", details: Iterable[any_pb2.Any] = ()) -> None:
        if code == Code.OK:
            raise ValueError("a StatusError cannot carry the OK code")
        super().__init__(message)
        self.code = Code(code)
        self.message = message
        self.details = tuple(details)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}" if self.message else self.code.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"


class _Coded(StatusError):
    """A StatusError whose class fixes the code: constructed from the message alone."""

    CODE: ClassVar[Code]

    def __init__(self, message: str = "", details: Iterable[any_pb2.Any] = ()) -> None:
        super().__init__(self.CODE, message, details)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.details))


class Cancelled(_Coded):
    """CANCELLED: the operation was cancelled, typically by the caller."""

    CODE = Code.CANCELLED


class Unknown(_Coded):
    """UNKNOWN: an error without a more specific code."""

    CODE = Code.UNKNOWN


class InvalidArgument(_Coded):
    """INVALID_ARGUMENT: the request is malformed, whatever the state of the system."""

    CODE = Code.INVALID_ARGUMENT


class DeadlineExceeded(_Coded):
    """DEADLINE_EXCEEDED: the deadline expired before the operation completed."""

    CODE = Code.DEADLINE_EXCEEDED


class NotFound(_Coded):
    """NOT_FOUND: a requested entity does not exist."""

    CODE = Code.NOT_FOUND


class AlreadyExists(_Coded):
    """ALREADY_EXISTS: the entity to create already exists."""

    CODE = Code.ALREADY_EXISTS


class PermissionDenied(_Coded):
    """PERMISSION_DENIED: the caller may not do this."""

    CODE = Code.PERMISSION_DENIED


class ResourceExhausted(_Coded):
    """RESOURCE_EXHAUSTED: a limit was hit (for ttrpc: the 4 MiB message size)."""

    CODE = Code.RESOURCE_EXHAUSTED


class FailedPrecondition(_Coded):
    """FAILED_PRECONDITION: the system is not in a state that allows the operation."""

    CODE = Code.FAILED_PRECONDITION


class Aborted(_Coded):
    """ABORTED: the operation was aborted, typically by a concurrency conflict."""

    CODE = Code.ABORTED


class OutOfRange(_Coded):
    """OUT_OF_RANGE: the operation went past a valid range."""

    CODE = Code.OUT_OF_RANGE


class Unimplemented(_Coded):
    """UNIMPLEMENTED: the service or method is not implemented by the peer."""

    CODE = Code.UNIMPLEMENTED


class Internal(_Coded):
    """INTERNAL: an invariant broke inside the peer."""

    CODE = Code.INTERNAL


class Unavailable(_Coded):
    """UNAVAILABLE: the connection is closed or broken; retrying may work."""

    CODE = Code.UNAVAILABLE


class DataLoss(_Coded):
    """DATA_LOSS: unrecoverable data loss or corruption."""

    CODE = Code.DATA_LOSS


class Unauthenticated(_Coded):
    """UNAUTHENTICATED: the caller has no valid credentials."""

    CODE = Code.UNAUTHENTICATED


_BY_CODE: dict[Code, type[_Coded]] = {
    cls.CODE: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def status_error(code: int, message: str = "", details: Iterable[any_pb2.Any] = ()) -> StatusError:
    """The typed error for a non-OK status, as the client raises it.

    A code outside the 17 gRPC codes becomes ``Unknown`` with the number kept in the
    message (it is not silently dropped). Raises ValueError for code 0 (OK).
    """
    if code == Code.OK:
        raise ValueError("status code OK is not an error")
    try:
        known = Code(code)
    except ValueError:
        return Unknown(f"(status code {code}) {message}", details)
    return _BY_CODE[known](message, details)
