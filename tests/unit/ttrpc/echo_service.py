"""A test-only service, described at runtime from well-known types (no .proto file)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    empty_pb2,
    message_factory,
    wrappers_pb2,
)
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

import ttrpc

SERVICE = "ttrpc.test.Echo"

_POOL = descriptor_pool.DescriptorPool()
for _module in (wrappers_pb2, empty_pb2):
    _file = descriptor_pb2.FileDescriptorProto()
    _module.DESCRIPTOR.CopyToProto(_file)
    _POOL.Add(_file)

_echo = descriptor_pb2.FileDescriptorProto(
    name="ttrpc_test/echo.proto",
    package="ttrpc.test",
    dependency=["google/protobuf/wrappers.proto", "google/protobuf/empty.proto"],
    syntax="proto3",
)
_svc = _echo.service.add(name="Echo")
for _name, _in, _out, _stream in [
    ("Echo", "StringValue", "StringValue", False),
    ("Sleep", "DoubleValue", "Empty", False),
    ("Fail", "StringValue", "Empty", False),
    ("Meta", "Empty", "StringValue", False),
    ("Big", "Int64Value", "BytesValue", False),
    ("Wrong", "Empty", "Empty", False),
    ("Missing", "Empty", "Empty", False),
    ("Watch", "Empty", "StringValue", True),
]:
    _svc.method.add(
        name=_name,
        input_type=f".google.protobuf.{_in}",
        output_type=f".google.protobuf.{_out}",
        server_streaming=_stream,
    )
_POOL.Add(_echo)

DESCRIPTOR: ServiceDescriptor = _POOL.FindServiceByName(SERVICE)


def message(name: str) -> Any:
    """The message class for a google.protobuf well-known type, from our pool (Any: the
    stubs' Message takes no field keywords since types-protobuf 7.35.1.20261122)."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"google.protobuf.{name}"))


def typed(reply: Any) -> Message:
    """A message made by one of these classes, as the Message it is."""
    message: Message = reply
    return message


StringValue = message("StringValue")
DoubleValue = message("DoubleValue")
Int64Value = message("Int64Value")
BytesValue = message("BytesValue")
Empty = message("Empty")


async def until(condition: Callable[[], bool], what: str, bound: float = 30.0) -> None:
    """Wait, yielding to the loop, until ``condition()`` holds. The bound only turns a
    hang into a failure naming ``what``: no passing run comes near it."""
    deadline = asyncio.get_running_loop().time() + bound
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still waiting after {bound:g} s for {what}")
        await asyncio.sleep(0.005)


class EchoImpl:
    """Implements every RPC but Missing (and Watch, which is streaming)."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.cancelled = 0
        self.finished = 0
        self.contexts: list[ttrpc.CallContext] = []
        # Echo waits for the event registered under its value, if any: tests decide the
        # order in which concurrent calls complete.
        self.gates: dict[str, asyncio.Event] = {}
        self.completed: list[str] = []
        # Every Echo value that reached its handler, in order (tests wait on it).
        self.entered: list[str] = []

    async def Echo(self, request: Message, ctx: ttrpc.CallContext) -> Message:
        value = request.value  # type: ignore[attr-defined]
        self.entered.append(value)
        gate = self.gates.get(value)
        if gate is not None:
            await gate.wait()
        self.completed.append(value)
        return typed(StringValue(value=value))

    async def Sleep(self, request: Message, ctx: ttrpc.CallContext) -> Message:
        self.started.append(request.value)  # type: ignore[attr-defined]
        self.contexts.append(ctx)
        try:
            await asyncio.sleep(request.value)  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        return typed(Empty())

    async def Fail(self, request: Message, ctx: ttrpc.CallContext) -> Message:
        what = request.value  # type: ignore[attr-defined]
        if what == "notfound":
            raise ttrpc.NotFound("no such thing")
        if what == "precondition":
            raise ttrpc.StatusError(ttrpc.Code.FAILED_PRECONDITION, "not now")
        if what == "missing-file":
            raise FileNotFoundError(2, "No such file or directory", "/nonexistent")
        if what == "notimplemented":
            raise NotImplementedError("later")
        raise RuntimeError(what)

    async def Meta(self, request: Message, ctx: ttrpc.CallContext) -> Message:
        self.contexts.append(ctx)
        text = ";".join(f"{k}={','.join(v)}" for k, v in sorted(ctx.metadata.items()))
        return typed(StringValue(value=text))

    async def Big(self, request: Message, ctx: ttrpc.CallContext) -> Message:
        return typed(BytesValue(value=b"x" * request.value))  # type: ignore[attr-defined]

    async def Wrong(self, request: Message, ctx: ttrpc.CallContext) -> Message:
        return typed(StringValue(value="not an Empty"))

    async def Watch(self, request: Message, ctx: ttrpc.CallContext) -> Message:
        raise AssertionError("streaming methods are never dispatched")
