"""One unary call to containerd's own gRPC API (not CRI), as the daemon makes them: the
image pinning (``Images/Get``) and the sandbox collector (``Containers/Get``).

containerd picks the namespace from the ``containerd-namespace`` gRPC metadata.

The call is grpcio's *blocking* client on a worker thread of our own, not ``grpc.aio``
on the daemon's event loop. ``grpc.aio`` hands its completions to the loop through a
socket the loop polls: when that polling breaks (issue 14: the loop's selector kept a
stale key for the fd number the socket then got), every call waits forever, its gRPC
deadline included, since the deadline is reported through the same socket. A blocking
call on a thread depends on nothing of the loop; grpc's deadline ends it in the thread,
and the await here is bounded by ``asyncio.wait_for`` on the loop's own clock
(``timeout`` + :data:`GRACE_SECONDS`) even if grpcio never returns, so a Task request
waiting on it always gets an answer. It also means no gRPC thread is inside a call while
the daemon forks QEMU (``grpc.aio``'s poller always was: "Other threads are currently
calling into gRPC, skipping fork() handlers" at every launch), unless a lookup runs at
that moment; QEMU's child only joins its cgroup and execs, it never uses gRPC.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from typing import TypeVar

import grpc
from google.protobuf.message import Message

NAMESPACE_HEADER = "containerd-namespace"
# How much longer than grpc's own deadline the await may take before we give up on it.
GRACE_SECONDS = 5.0
# Calls in flight at once; more wait for a thread (within their own bound).
WORKERS = 4

R = TypeVar("R", bound=Message)

_executor = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="containerd-grpc")


class ContainerdCallError(Exception):
    """A call to containerd failed or went unanswered; ``code`` is the gRPC status
    (DEADLINE_EXCEEDED when no answer came in time), ``details`` its message."""

    def __init__(self, method: str, address: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method} on {address}: {code.name}: {details}")
        self.method = method
        self.address = address
        self.code = code
        self.details = details


def _blocking_unary(
    target: str, namespace: str, method: str, request: Message, response: type[R], *, timeout: float
) -> R:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        reply: R = call(request, metadata=((NAMESPACE_HEADER, namespace),), timeout=timeout)
        return reply


async def unary(
    address: str,
    namespace: str,
    method: str,
    request: Message,
    response: type[R],
    *,
    timeout: float,
) -> R:
    """``method`` (``/package.Service/Method``) on containerd at ``address`` (a socket
    path, with or without ``unix://``) in ``namespace``, answered or failed within
    ``timeout`` + :data:`GRACE_SECONDS` seconds whatever grpcio does. Raises
    ContainerdCallError."""
    target = address if address.startswith("unix://") else f"unix://{address}"
    loop = asyncio.get_running_loop()
    blocking = functools.partial(
        _blocking_unary, target, namespace, method, request, response, timeout=timeout
    )
    call = loop.run_in_executor(_executor, blocking)
    try:
        return await asyncio.wait_for(call, timeout + GRACE_SECONDS)
    except TimeoutError as err:
        raise ContainerdCallError(
            method, address, grpc.StatusCode.DEADLINE_EXCEEDED,
            f"no answer within {timeout + GRACE_SECONDS:g} s",
        ) from err  # fmt: skip
    except grpc.RpcError as err:
        # grpcio's blocking errors are also grpc.Call (code, details); its typing says not.
        code_of, details_of = getattr(err, "code", None), getattr(err, "details", None)
        code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
        details = (details_of() if callable(details_of) else None) or str(err)
        raise ContainerdCallError(method, address, code, details) from err
