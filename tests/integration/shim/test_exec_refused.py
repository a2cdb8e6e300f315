"""An exec the pod's policy refuses, through the daemon's Task API on the real guest
agent (on this host, runc): Start fails with the policy's reason, and the exec counts
as ended at once, as with runc's shim. containerd's CRI ExecSync Waits for it before
Delete; a Wait that never returned held every refused ExecSync for a minute."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import any_pb2

import ttrpc
from agent.sandbox.local_backend import LocalAgentBackend
from api.containerd.task.v2 import shim_pb2
from api.containerd.types.task import task_pb2 as types
from tests.integration.guestagent.conftest import Pushed, agent_dir, pushed, start_agent, stop_agent
from tests.integration.guestagent.requests import ALLOW_ALL
from tests.integration.guestagent.test_task_api import CRI_SANDBOX_ID, CRI_TYPE, create, oci_config
from tests.unit.shim.harness import Harness, running
from tests.unit.shim.sinks import socket_dir

__all__ = ["agent_dir", "pushed"]

REASON = "test policy: no exec"
POLICY = (
    ALLOW_ALL.replace("default ExecProcessRequest := true", "default ExecProcessRequest := false")
    + f'policy_reason := "{REASON}"\n'
)
SANDBOX = "pod1"


@pytest.fixture
async def daemon(pushed: Pushed, agent_dir: Path) -> AsyncIterator[Harness]:
    proc = start_agent(pushed, POLICY, agent_dir)
    try:
        with socket_dir() as sockets:
            async with running(sockets, LocalAgentBackend(proc.socket, call_timeout=120)) as h:
                yield h
    finally:
        stop_agent(proc)


async def test_a_refused_exec_has_ended_at_once(daemon: Harness, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\n")
    annotations = {CRI_TYPE: "sandbox", CRI_SANDBOX_ID: SANDBOX}
    await create(daemon, SANDBOX, oci_config(["/pause"], annotations, resolv))
    task = daemon.task
    try:
        process = {"args": ["cat", "/etc/shadow"], "cwd": "/", "user": {"uid": 0, "gid": 0}}
        spec = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                           value=json.dumps(process).encode())  # fmt: skip
        await task.Exec(shim_pb2.ExecProcessRequest(id=SANDBOX, exec_id="e1", spec=spec))
        # containerd Waits before it Starts.
        waiting = asyncio.ensure_future(task.Wait(shim_pb2.WaitRequest(id=SANDBOX, exec_id="e1")))
        with pytest.raises(ttrpc.PermissionDenied, match=f"blocked by policy: {REASON}"):
            await task.Start(shim_pb2.StartRequest(id=SANDBOX, exec_id="e1"))
        waited = await asyncio.wait_for(waiting, 30)
        assert waited.exit_status == 255
        state = await task.State(shim_pb2.StateRequest(id=SANDBOX, exec_id="e1"))
        assert state.status == types.STOPPED
        with pytest.raises(ttrpc.NotFound, match="already finished"):  # containerd's kill
            await task.Kill(shim_pb2.KillRequest(id=SANDBOX, exec_id="e1", signal=9))
        deleted = await task.Delete(shim_pb2.DeleteRequest(id=SANDBOX, exec_id="e1"))
        assert deleted.exit_status == 255
        await daemon.sink.wait_for(3)  # create, start, exec-added
        await asyncio.sleep(0.5)  # what else was sent arrives too
        topics = [t for t in daemon.sink.topics() if "exec" in t or "exit" in t]
        assert topics == ["/tasks/exec-added"]  # never started: no exec-started, no exit
    finally:
        await task.Kill(shim_pb2.KillRequest(id=SANDBOX, signal=9))
        await asyncio.wait_for(task.Wait(shim_pb2.WaitRequest(id=SANDBOX)), 60)
        await task.Delete(shim_pb2.DeleteRequest(id=SANDBOX))
