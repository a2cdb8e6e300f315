"""The one place where sandbox-layer errors become ttrpc statuses for containerd.

containerd 1.6 turns the status code back into its errdefs (NotFound,
FailedPrecondition, ...), which CRI relies on: e.g. Kill of an exited process must
be NotFound. NotImplementedError is left to the ttrpc server, which answers
UNIMPLEMENTED with its message.

An image reference that cannot be pinned is FAILED_PRECONDITION: containerd's
``errdefs.FromGRPC`` keeps our message for it (``<message>: failed precondition``)
and CRI's ``ToGRPC`` answers StartContainer with the same code and the whole chain,
so the kubelet sees the reference and why. INTERNAL (our default) becomes errdefs'
"unknown", which CRI passes on as UNKNOWN; NOT_FOUND would keep the message too, but
containerd and CRI read NotFound as "the task/container is gone" (their cleanup
paths ignore it), which a missing image record is not. A mount the pod-VM cannot
provide (VolumeError: refused, over the size cap, a copy the policy refused) is
FAILED_PRECONDITION for the same reason: CRI's StartContainer error names the mount.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from agent.sandbox.errors import (
    AnnotationError,
    GuestAgentError,
    ImageRefError,
    RuntimeConfigError,
    SandboxError,
    TaskStateError,
    UnknownTaskError,
    UnsupportedPodError,
)
from agent.stdio.fifo import FifoError
from agent.volumes.errors import VolumeError
from ttrpc import FailedPrecondition, Internal, InvalidArgument, NotFound, StatusError, status_error

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def to_status(err: Exception) -> StatusError:
    """The ttrpc status for an error of the sandbox layer."""
    if isinstance(err, UnknownTaskError):
        return NotFound(str(err))
    if isinstance(err, TaskStateError | ImageRefError | VolumeError):
        return FailedPrecondition(str(err))
    if isinstance(err, RuntimeConfigError | AnnotationError | UnsupportedPodError):
        return InvalidArgument(str(err))
    if isinstance(err, GuestAgentError):
        return status_error(err.code, str(err))
    return Internal(str(err))


def translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Decorate an RPC: sandbox, stdio and state errors leave as ttrpc statuses."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (SandboxError, FifoError) as err:
            status = to_status(err)
            log.info("%s: %s: %s", method.__name__, status.code.name, err)
            raise status from err

    return wrapper
