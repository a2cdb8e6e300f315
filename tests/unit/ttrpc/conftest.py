"""Fixtures for the ttrpc tests: a server with the Echo service on a unix socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import ttrpc
from tests.unit.ttrpc.echo_service import DESCRIPTOR, EchoImpl


@pytest.fixture
def impl() -> EchoImpl:
    return EchoImpl()


@pytest.fixture
async def server(impl: EchoImpl) -> AsyncIterator[ttrpc.Server]:
    srv = ttrpc.Server()
    srv.register(DESCRIPTOR, impl)
    yield srv
    await srv.close(timeout=1.0)


@pytest.fixture
async def socket_path(server: ttrpc.Server, tmp_path: Path) -> Path:
    path = tmp_path / "ttrpc.sock"
    await server.serve_unix(path)
    return path


@pytest.fixture
async def client(socket_path: Path) -> AsyncIterator[ttrpc.Client]:
    c = await ttrpc.Client.connect_unix(socket_path)
    yield c
    await c.close()
