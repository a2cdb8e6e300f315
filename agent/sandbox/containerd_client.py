"""One unary call to containerd's own gRPC API (not CRI), as the daemon makes them: the
image pinning (``Images/Get``) and the sandbox collector (``Containers/Get``).

containerd picks the namespace from the ``containerd-namespace`` gRPC metadata.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message

NAMESPACE_HEADER = "containerd-namespace"

R = TypeVar("R", bound=Message)


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
    path, with or without ``unix://``) in ``namespace``; raises grpc.aio.AioRpcError."""
    target = address if address.startswith("unix://") else f"unix://{address}"
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        reply: R = await call(request, metadata=((NAMESPACE_HEADER, namespace),), timeout=timeout)
        return reply
