"""Interop with real Go ttrpc: Debian's containerd-shim-runc-v2 answers our client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import ttrpc
from api.containerd.task.v2 import shim_pb2
from tests.conftest import require_programs
from tests.support.runc_shim import RuncShim, run_runc_shim

TASK = shim_pb2.DESCRIPTOR.services_by_name["Task"]


async def connect(client: ttrpc.Client, task_id: str) -> shim_pb2.ConnectResponse:
    return await client.call(
        TASK.full_name, "Connect", shim_pb2.ConnectRequest(id=task_id), shim_pb2.ConnectResponse
    )


@pytest.fixture
def runc_shim(tmp_path: Path) -> Iterator[RuncShim]:
    require_programs("containerd-shim-runc-v2")
    with run_runc_shim(tmp_path) as shim:
        yield shim


async def test_connect_returns_the_go_shims_pid(runc_shim: RuncShim) -> None:
    async with await ttrpc.Client.connect_unix(runc_shim.socket_path) as client:
        stub = ttrpc.ServiceStub(client, TASK)
        reply = await stub.Connect(shim_pb2.ConnectRequest(id="interop"), timeout=5)
    assert isinstance(reply, shim_pb2.ConnectResponse)
    assert reply.shim_pid == runc_shim.pid


async def test_unknown_method_is_our_typed_unimplemented(runc_shim: RuncShim) -> None:
    async with await ttrpc.Client.connect_unix(runc_shim.socket_path) as client:
        with pytest.raises(ttrpc.Unimplemented) as caught:
            await client.call(
                "containerd.task.v2.Task",
                "NoSuchMethod",
                shim_pb2.ConnectRequest(id="interop"),
                shim_pb2.ConnectResponse,
                timeout=5,
            )
        assert caught.value.code is ttrpc.Code.UNIMPLEMENTED
        # The connection is still good after the error.
        reply = await connect(client, "x")
        assert reply.shim_pid == runc_shim.pid


async def test_many_concurrent_calls_on_one_connection(runc_shim: RuncShim) -> None:
    async with await ttrpc.Client.connect_unix(runc_shim.socket_path) as client:
        replies = await asyncio.gather(*(connect(client, f"c{i}") for i in range(64)))
    assert {r.shim_pid for r in replies} == {runc_shim.pid}


async def test_go_shim_reports_unknown_task_as_not_found(runc_shim: RuncShim) -> None:
    # A status with a code other than UNIMPLEMENTED travels through as its own type too.
    async with await ttrpc.Client.connect_unix(runc_shim.socket_path) as client:
        stub = ttrpc.ServiceStub(client, TASK)
        with pytest.raises(ttrpc.StatusError) as caught:
            await stub.State(shim_pb2.StateRequest(id="no-such-task"), timeout=5)
    assert caught.value.code in (ttrpc.Code.NOT_FOUND, ttrpc.Code.FAILED_PRECONDITION)
    assert "no-such-task" in str(caught.value) or caught.value.message
