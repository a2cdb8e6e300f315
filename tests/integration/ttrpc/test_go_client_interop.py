"""Interop the other way round: containerd's Go `ctr shim` calls our ttrpc server.

`ctr shim --id ID state` dials the shim socket containerd 1.6 derives from namespace and
id (an abstract unix socket `@/containerd-shim/<ns>/<id>/shim.sock`, with a trailing NUL)
and prints the decoded StateResponse, or the gRPC-style error it got.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

import ttrpc
from api.containerd.task.v2 import shim_pb2
from api.containerd.types.task import task_pb2
from tests.conftest import require_programs

TASK = shim_pb2.DESCRIPTOR.services_by_name["Task"]


class OneTask:
    """Knows exactly one task, `known`, running as pid 4242."""

    async def State(
        self, request: shim_pb2.StateRequest, ctx: ttrpc.CallContext
    ) -> shim_pb2.StateResponse:
        if request.id != "known":
            raise ttrpc.NotFound(f"task {request.id} not found")
        return shim_pb2.StateResponse(
            id="known", bundle="/run/bundle/known", pid=4242, status=task_pb2.RUNNING
        )


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    require_programs("ctr")
    ns = f"contrast-{uuid.uuid4().hex[:8]}"
    server = ttrpc.Server()
    server.register(TASK, OneTask())
    for task_id in ("known", "missing"):
        await server.serve_unix(f"@/containerd-shim/{ns}/{task_id}/shim.sock\0")
    yield ns
    await server.close()


async def ctr_shim_state(namespace: str, task_id: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ctr",
        "--namespace",
        namespace,
        "shim",
        "--id",
        task_id,
        "state",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": os.environ["PATH"]},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_go_client_reads_our_state_response(namespace: str) -> None:
    rc, out = await ctr_shim_state(namespace, "known")
    assert rc == 0, out
    assert '"pid": 4242' in out
    assert '"bundle": "/run/bundle/known"' in out
    assert '"status": 2' in out  # RUNNING


async def test_go_client_gets_our_status_code(namespace: str) -> None:
    rc, out = await ctr_shim_state(namespace, "missing")
    assert rc != 0
    assert "NotFound" in out
    assert "task missing not found" in out
