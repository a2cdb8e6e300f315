"""connect_serving: a reattaching daemon tries Health on fresh connections until the bound,
so one call the guest never answers (its old connection still being torn down) does not
hold the daemon for the whole bound.

No test hinges on a wall-clock margin: the bound is either far away (a regression fails
at it, a pass never nears it) or measured on a clock the test advances itself.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.transport import reconnect
from agent.transport.client import HEALTH_SERVICE
from agent.transport.errors import AgentTransportError
from agent.transport.reconnect import connect_serving
from agent.vm.config import VirtioSerialTransport
from api.kata import health_pb2
from tests.unit.shim.sinks import socket_dir
from ttrpc import CallContext, Server


class Clock:
    """connect_serving's clock in these tests: it moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class Health:
    """Leaves the first ``silent`` Checks unanswered, then reports ``status``; each
    Check moves ``clock`` (if given) by ``step`` seconds."""

    def __init__(
        self,
        silent: int,
        status: health_pb2.HealthCheckResponse.ServingStatus = (
            health_pb2.HealthCheckResponse.SERVING
        ),
        clock: Clock | None = None,
        step: float = 0.0,
    ) -> None:
        self.silent = silent
        self.status = status
        self.clock = clock
        self.step = step
        self.calls = 0
        self.abandoned = asyncio.Event()

    async def Check(self, request: Any, ctx: CallContext) -> health_pb2.HealthCheckResponse:
        self.calls += 1
        if self.clock is not None:
            self.clock.now += self.step
        if self.calls <= self.silent:
            try:
                await asyncio.Event().wait()  # never answered
            finally:
                self.abandoned.set()  # its connection was closed
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
    # Waiting out the whole bound on the silent call (the regression) fails at the
    # bound; the fix answers on a later attempt, however slow the machine is.
    health = Health(silent=1)
    async for socket in serving(health, folder):
        agent = await connect_serving(
            VirtioSerialTransport(socket=socket), bound=120, attempt_seconds=1.0
        )
        assert await agent.check()
        await agent.close()
        assert health.calls >= 2
        await health.abandoned.wait()  # the silent call's connection was given up


async def test_an_agent_that_never_serves_fails_at_the_bound_naming_why(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound is 100 s on a clock each Check moves by 40 s: exactly three attempts,
    # each with a real call timeout of 20 s or more, which an answer never nears.
    clock = Clock()
    monkeypatch.setattr(reconnect, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    health = Health(
        silent=0, status=health_pb2.HealthCheckResponse.NOT_SERVING, clock=clock, step=40
    )
    async for socket in serving(health, folder):
        with pytest.raises(AgentTransportError, match="within 100 s: the guest agent is not"):
            transport = VirtioSerialTransport(socket=socket)
            await connect_serving(transport, bound=100, attempt_seconds=30)
        assert health.calls == 3


async def test_nobody_listening_is_named(folder: Path) -> None:
    with pytest.raises(AgentTransportError, match="cannot reach the guest agent"):
        await connect_serving(VirtioSerialTransport(socket=folder / "none.sock"), bound=0.6)
