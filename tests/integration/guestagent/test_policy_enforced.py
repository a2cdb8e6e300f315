"""The policy in force in a running agent: a pinned workload, denials, SetPolicy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import ttrpc
from api.kata import agent_pb2
from tests.integration.guestagent import requests as rq
from tests.integration.guestagent.conftest import AGENT_SERVICE, Pushed, start_agent, stop_agent
from tests.integration.guestagent.test_containers import read_all, wait


def pinned_policy(reference: str) -> str:
    """One image digest and one command; exec only of "ls"; no SetPolicy."""
    return f"""package agent_policy

import rego.v1

default CreateContainerRequest := false
default ExecProcessRequest := false
default SetPolicyRequest := false

policy_reason := "only the pinned echo workload may run"

CreateSandboxRequest := true
StartContainerRequest := true
ReadStreamRequest := true
WaitProcessRequest := true
RemoveContainerRequest := true
DestroySandboxRequest := true

CreateContainerRequest if {{
    input.OCI.Annotations["io.kubernetes.cri.container-type"] == "sandbox"
}}

CreateContainerRequest if {{
    input.storages[0].driver == "image_guest_pull"
    input.storages[0].source == "{reference}"
    input.OCI.Process.Args == ["echo", "pinned"]
}}

ExecProcessRequest if {{ input.process.Args == ["ls"] }}
"""


async def connect(sock: Path) -> tuple[ttrpc.Client, Any]:
    client = await ttrpc.Client.connect_unix(str(sock))
    return client, ttrpc.ServiceStub(client, AGENT_SERVICE)


@pytest.fixture
async def pinned(pushed: Pushed, agent_dir: Path) -> AsyncIterator[Any]:
    proc = start_agent(pushed, pinned_policy(pushed.reference), agent_dir)
    client, stub = await connect(proc.socket)
    try:
        yield stub
    finally:
        await client.close()
        stop_agent(proc)


async def test_pinned_workload_runs_others_are_denied(pinned: Any, pushed: Pushed) -> None:
    stub = pinned
    await stub.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="h", sandbox_id="s"))
    await stub.CreateContainer(rq.create_pause("pause"))
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="pause"))

    await stub.CreateContainer(rq.create_container("ok", ["echo", "pinned"], pushed.reference))
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="ok"))
    assert await read_all(stub, "ok") == b"pinned\n"
    assert await wait(stub, "ok") == 0

    expected = "CreateContainerRequest is blocked by policy: only the pinned echo workload may run"
    with pytest.raises(ttrpc.PermissionDenied) as denied:
        await stub.CreateContainer(rq.create_container("cmd", ["sh"], pushed.reference))
    assert denied.value.message == expected
    other_image = pushed.reference.rsplit("@", 1)[0] + "@sha256:" + "0" * 64
    with pytest.raises(ttrpc.PermissionDenied) as denied:
        await stub.CreateContainer(rq.create_container("img", ["echo", "pinned"], other_image))
    assert denied.value.message == expected

    with pytest.raises(ttrpc.PermissionDenied, match="ExecProcessRequest is blocked by policy"):
        await stub.ExecProcess(
            agent_pb2.ExecProcessRequest(
                container_id="pause", exec_id="x", process=rq.process(["sh"])
            )
        )
    # SetPolicy is itself subject to the policy in force.
    with pytest.raises(ttrpc.PermissionDenied, match="SetPolicyRequest is blocked by policy"):
        await stub.SetPolicy(agent_pb2.SetPolicyRequest(policy=rq.ALLOW_ALL))
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())


async def test_broken_policy_denies_everything(pushed: Pushed, agent_dir: Path) -> None:
    proc = start_agent(pushed, "package agent_policy\nCreateSandboxRequest := {{{\n", agent_dir)
    client, stub = await connect(proc.socket)
    try:
        with pytest.raises(ttrpc.PermissionDenied, match="policy does not compile"):
            await stub.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="h"))
        with pytest.raises(ttrpc.PermissionDenied, match="GuestDetailsRequest is blocked"):
            await stub.GetGuestDetails(agent_pb2.GuestDetailsRequest())
    finally:
        await client.close()
        stop_agent(proc)


async def test_set_policy_replaces_the_policy(pushed: Pushed, agent_dir: Path) -> None:
    proc = start_agent(pushed, rq.ALLOW_ALL, agent_dir)
    client, stub = await connect(proc.socket)
    try:
        with pytest.raises(ttrpc.InvalidArgument, match="does not compile"):
            await stub.SetPolicy(agent_pb2.SetPolicyRequest(policy="package agent_policy\n{{"))
        await stub.GetGuestDetails(agent_pb2.GuestDetailsRequest())  # old policy still in force
        await stub.SetPolicy(agent_pb2.SetPolicyRequest(policy="package agent_policy\n"))
        with pytest.raises(ttrpc.PermissionDenied, match="GuestDetailsRequest is blocked"):
            await stub.GetGuestDetails(agent_pb2.GuestDetailsRequest())
    finally:
        await client.close()
        stop_agent(proc)
