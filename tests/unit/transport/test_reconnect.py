"""connect_serving: a reattaching daemon tries Health on fresh connections until the bound,
so one call the guest never answers (its old connection still being torn down) does not
hold the daemon for the whole bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.transport.client import HEALTH_SERVICE
from agent.transport.errors import AgentTransportError
from agent.transport.reconnect import connect_serving
from agent.vm.config import VirtioSerialTransport
from api.kata import health_pb2
from tests.unit.shim.sinks import socket_dir
from ttrpc import CallContext, Server


class Health:
    """Leaves the first ``silent`` Checks unanswered, then reports ``status``."""

    def __init__(
        self,
        silent: int,
        status: health_pb2.HealthCheckResponse.ServingStatus = (
            health_pb2.HealthCheckResponse.SERVING
        ),
    ) -> None:
        self.silent = silent
        self.status = status
        self.calls = 0

    async def Check(self, request: Any, ctx: CallContext) -> health_pb2.HealthCheckResponse:
        self.calls += 1
        if self.calls <= self.silent:
            await asyncio.sleep(3600)
        return health_pb2.HealthCheckResponse(status=self.status)

    async def Version(self, request: Any, ctx: CallContext) -> health_pb2.VersionCheckResponse:
        return health_pb2.VersionCheckResponse()


async def serving(health: Health, folder: Path) -> AsyncIterator[Path]:
    server = Server()
    server.register(HEALTH_SERVICE, health)
    socket = folder / "agent.sock"
    await server.serve_unix(socket)
    try:
        yield socket
    finally:
        await server.close(timeout=0.1)


@pytest.fixture
def folder() -> Any:
    with socket_dir() as path:
        yield path


async def test_an_unanswered_health_is_retried_on_a_new_connection(folder: Path) -> None:
    health = Health(silent=1)
    async for socket in serving(health, folder):
        started = time.monotonic()
        agent = await connect_serving(
            VirtioSerialTransport(socket=socket), bound=30, attempt_seconds=0.3
        )
        await agent.close()
        assert health.calls == 2
        assert time.monotonic() - started < 10  # not the 30 s bound


async def test_an_agent_that_never_serves_fails_at_the_bound_naming_why(folder: Path) -> None:
    health = Health(silent=0, status=health_pb2.HealthCheckResponse.NOT_SERVING)
    async for socket in serving(health, folder):
        with pytest.raises(AgentTransportError, match="within 1 s: the guest agent is not"):
            transport = VirtioSerialTransport(socket=socket)
            await connect_serving(transport, bound=1, attempt_seconds=0.2)
        assert health.calls >= 2


async def test_nobody_listening_is_named(folder: Path) -> None:
    with pytest.raises(AgentTransportError, match="cannot reach the guest agent"):
        await connect_serving(VirtioSerialTransport(socket=folder / "none.sock"), bound=0.6)
