"""Binding protobuf service descriptors to handlers (server) and to stubs (client).

A service implementation is any object with one coroutine method per RPC, named as
the RPC: ``async def Create(self, request, ctx) -> CreateTaskResponse``. Request and
response classes come from the descriptor. RPCs the object lacks answer
UNIMPLEMENTED, exactly like RPCs of a service nobody registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from ttrpc.context import CallContext, MetadataArg

if TYPE_CHECKING:
    from ttrpc.client import Client

Handler = Callable[[Message, CallContext], Awaitable[Message]]
"""A bound RPC implementation: request and context in, response out."""


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC as the server dispatches it."""

    service: str
    name: str
    request_type: type[Message]
    response_type: type[Message]
    # None: the implementation does not have this RPC (answered UNIMPLEMENTED).
    handler: Handler | None
    # Client or server streaming; this server answers those UNIMPLEMENTED.
    streaming: bool
    # A call that only waits (for output, an exit, an event) and gives up without
    # consuming anything when cancelled: cancelled when its client goes (Server.register).
    waits: bool = False


def _message_types(method: MethodDescriptor) -> tuple[type[Message], type[Message]]:
    return (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )


def bind_service(
    descriptor: ServiceDescriptor, impl: object, name: str | None = None
) -> dict[str, Method]:
    """The methods of ``descriptor`` served by ``impl``, keyed by RPC name.

    ``name`` overrides the service name (default ``descriptor.full_name``). Raises
    TypeError when ``impl`` has an attribute named like an RPC that is not a coroutine
    function: a typo there would otherwise surface only as a failed call.
    """
    service = name or descriptor.full_name
    methods: dict[str, Method] = {}
    for method in descriptor.methods:
        request_type, response_type = _message_types(method)
        handler = getattr(impl, method.name, None)
        if handler is not None and not inspect.iscoroutinefunction(handler):
            raise TypeError(
                f"{type(impl).__name__}.{method.name} must be an async method "
                f"(request, ctx) -> {method.output_type.full_name}"
            )
        methods[method.name] = Method(
            service=service,
            name=method.name,
            request_type=request_type,
            response_type=response_type,
            handler=handler,
            streaming=method.client_streaming or method.server_streaming,
        )
    return methods


class UnaryStubMethod:
    """One RPC of a :class:`ServiceStub`: ``await stub.Connect(request)``."""

    __slots__ = ("_client", "_method", "_request_name", "_response_type", "_service")

    def __init__(self, client: Client, service: str, method: MethodDescriptor) -> None:
        self._client = client
        self._service = service
        self._method = method.name
        self._request_name = method.input_type.full_name
        self._response_type = message_factory.GetMessageClass(method.output_type)

    async def __call__(
        self,
        request: Message,
        *,
        timeout: float | None = None,
        metadata: MetadataArg | None = None,
    ) -> Message:
        """Call the RPC; raises what :meth:`ttrpc.Client.call` raises, and TypeError
        for a request of the wrong message type."""
        if request.DESCRIPTOR.full_name != self._request_name:
            raise TypeError(
                f"{self._service}/{self._method} takes {self._request_name}, "
                f"not {request.DESCRIPTOR.full_name}"
            )
        return await self._client.call(
            self._service,
            self._method,
            request,
            self._response_type,
            timeout=timeout,
            metadata=metadata,
        )


class ServiceStub:
    """A client for one service, with an attribute per RPC.

    ``stub = ServiceStub(client, task_pb2.DESCRIPTOR.services_by_name["Task"])`` then
    ``await stub.Connect(ConnectRequest(id=...))``. ``name`` overrides the service
    name sent on the wire. Streaming RPCs are not offered (AttributeError).
    """

    def __init__(
        self, client: Client, descriptor: ServiceDescriptor, name: str | None = None
    ) -> None:
        service = name or descriptor.full_name
        self._service = service
        self._methods: Mapping[str, UnaryStubMethod] = {
            method.name: UnaryStubMethod(client, service, method)
            for method in descriptor.methods
            if not (method.client_streaming or method.server_streaming)
        }

    def __getattr__(self, name: str) -> UnaryStubMethod:
        try:
            return self._methods[name]
        except KeyError:
            raise AttributeError(f"service {self._service} has no unary RPC {name!r}") from None
