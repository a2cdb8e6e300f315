"""An in-process ttrpc Events endpoint (what containerd serves at TTRPC_ADDRESS), recording
what it is sent. Used where the unit tier cannot start containerd; the integration tier
forwards to a real containerd."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from google.protobuf import empty_pb2

from api.containerd.services.events.ttrpc.v1 import events_pb2
from ttrpc import CallContext, Server

EVENTS = events_pb2.DESCRIPTOR.services_by_name["Events"]


class EventSink:
    def __init__(self) -> None:
        self.envelopes: list[events_pb2.Envelope] = []
        self.arrived = asyncio.Condition()

    async def Forward(
        self, request: events_pb2.ForwardRequest, ctx: CallContext
    ) -> empty_pb2.Empty:
        async with self.arrived:
            self.envelopes.append(request.envelope)
            self.arrived.notify_all()
        return empty_pb2.Empty()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[events_pb2.Envelope]:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.envelopes) >= count), timeout
            )
        return list(self.envelopes)

    def topics(self) -> list[str]:
        return [e.topic for e in self.envelopes]


@contextlib.asynccontextmanager
async def event_sink(path: Path) -> AsyncIterator[EventSink]:
    sink = EventSink()
    server = Server()
    server.register(EVENTS, sink)
    await server.serve_unix(path)
    try:
        yield sink
    finally:
        await server.close()


@contextlib.contextmanager
def socket_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="shim-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
