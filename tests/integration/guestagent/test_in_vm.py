"""The guest agent in a booted pod-VM (TCG): pulled image, stdio, signals, policy.

The VM gets an initdata disk whose policy pins the test image's digest and the
commands below, and a registry config naming the loopback registry, which the guest
reaches through QEMU's user-mode network as 10.0.2.2. The host configures the
guest's NIC with UpdateInterface/UpdateRoutes like the node daemon does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import ttrpc
from agent.transport.connect import connect
from agent.vm import console
from agent.vm.manager import VM
from api.kata import agent_pb2, types_pb2
from guest.image.manifest import GuestImage
from tests.integration.guestagent import requests as rq
from tests.integration.guestagent.conftest import AGENT_SERVICE, Pushed
from tests.integration.guestagent.test_containers import read_all, wait
from tests.integration.vm.conftest import guest_image, pod_vm_config, registry_initdata, vm_dir

__all__ = ["guest_image", "vm_dir"]  # fixtures used here

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 300.0
MAC = "52:54:00:12:34:56"


def policy(image: str) -> str:
    return f"""package agent_policy

import rego.v1

default CreateContainerRequest := false
default ExecProcessRequest := false
default SetPolicyRequest := false

policy_reason := "in-VM test policy: pinned image and commands only"

CreateSandboxRequest := true
DestroySandboxRequest := true
StartContainerRequest := true
RemoveContainerRequest := true
ReadStreamRequest := true
WriteStreamRequest := true
CloseStdinRequest := true
WaitProcessRequest := true
SignalProcessRequest := true
GetOOMEventRequest := true
StatsContainerRequest := true
GuestDetailsRequest := true
UpdateInterfaceRequest := true
UpdateRoutesRequest := true

allowed_commands := [
    ["echo", "hello from the pod-VM"],
    ["sleep", "1000"],
    ["sh", "-c", "x=a; while true; do x=$x$x; done"],
]

CreateContainerRequest if {{
    input.OCI.Annotations["io.kubernetes.cri.container-type"] == "sandbox"
}}

CreateContainerRequest if {{
    input.storages[0].driver == "image_guest_pull"
    input.storages[0].source == "{image}"
    input.OCI.Process.Args in allowed_commands
}}

ExecProcessRequest if {{ input.process.Args in [["echo", "exec in the VM"], ["cat"]] }}
"""


@pytest.fixture
async def vm_agent(
    guest_image: GuestImage, vm_dir: Path, pushed: Pushed
) -> AsyncIterator[tuple[Any, str]]:
    port = pushed.registry.port
    guest_registry = f"10.0.2.2:{port}"
    image = pushed.reference.replace(pushed.registry.host, guest_registry)
    config = pod_vm_config(
        guest_image, vm_dir, "agent", registry_initdata(policy(image), guest_registry), MAC
    )
    vm = await VM.launch(config)
    try:
        await vm.wait_ready(BOOT_TIMEOUT)
        client = await connect(config.transport)
        try:
            yield ttrpc.ServiceStub(client, AGENT_SERVICE), image
        finally:
            await client.close()
    finally:
        # Shown by pytest only when the test failed: the guest agent logs each request it
        # served, with its time, so a stalled call can be placed.
        print(f"--- pod-VM console tail ---\n{console.tail(config.console_log, 16384)}")
        await vm.stop()


async def test_pod_in_vm(vm_agent: tuple[Any, str]) -> None:
    stub, image = vm_agent
    await stub.UpdateInterface(
        agent_pb2.UpdateInterfaceRequest(
            interface=types_pb2.Interface(
                name="eth0", hwAddr=MAC, mtu=1500,
                IPAddresses=[types_pb2.IPAddress(address="10.0.2.15", mask="24")],
            )
        ),
        timeout=60,
    )  # fmt: skip
    await stub.UpdateRoutes(
        agent_pb2.UpdateRoutesRequest(
            routes=agent_pb2.Routes(
                Routes=[types_pb2.Route(dest="", gateway="10.0.2.2", device="eth0")]
            )
        ),
        timeout=60,
    )
    await stub.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="vm-pod", sandbox_id="s"))
    await stub.CreateContainer(rq.create_pause("pause"), timeout=120)
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="pause"), timeout=60)

    # echo from the pulled image: output and exit code through the stdio calls.
    await stub.CreateContainer(
        rq.create_container("echo", ["echo", "hello from the pod-VM"], image), timeout=300
    )
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="echo"), timeout=60)
    assert await read_all(stub, "echo") == b"hello from the pod-VM\n"
    assert await wait(stub, "echo") == 0
    await stub.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id="echo"), timeout=60)

    # A long-running container: exec output, stdin to cat, then SIGTERM -> 128+15.
    await stub.CreateContainer(
        rq.create_container("long", ["sleep", "1000"], image, sandbox_pidns=True), timeout=120
    )
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="long"), timeout=60)
    exec_echo = rq.process(["echo", "exec in the VM"])
    await stub.ExecProcess(
        agent_pb2.ExecProcessRequest(container_id="long", exec_id="e", process=exec_echo),
        timeout=60,
    )
    assert await read_all(stub, "long", "e") == b"exec in the VM\n"
    assert await wait(stub, "long", "e") == 0
    await stub.ExecProcess(
        agent_pb2.ExecProcessRequest(
            container_id="long", exec_id="cat", process=rq.process(["cat"])
        ),
        timeout=60,
    )
    await stub.WriteStdin(
        agent_pb2.WriteStreamRequest(container_id="long", exec_id="cat", data=b"stdin to cat\n")
    )
    await stub.CloseStdin(agent_pb2.CloseStdinRequest(container_id="long", exec_id="cat"))
    assert await read_all(stub, "long", "cat") == b"stdin to cat\n"
    assert await wait(stub, "long", "cat") == 0

    # The policy: another command, another image, an exec it does not list.
    with pytest.raises(ttrpc.PermissionDenied) as denied:
        await stub.CreateContainer(rq.create_container("sh", ["sh"], image))
    assert denied.value.message == (
        "CreateContainerRequest is blocked by policy: "
        "in-VM test policy: pinned image and commands only"
    )
    other = image.rsplit("@", 1)[0] + "@sha256:" + "1" * 64
    with pytest.raises(ttrpc.PermissionDenied, match="CreateContainerRequest is blocked"):
        await stub.CreateContainer(rq.create_container("o", ["sleep", "1000"], other))
    with pytest.raises(ttrpc.PermissionDenied, match="ExecProcessRequest is blocked by policy"):
        await stub.ExecProcess(
            agent_pb2.ExecProcessRequest(
                container_id="long", exec_id="x", process=rq.process(["ls"])
            )
        )

    await stub.SignalProcess(agent_pb2.SignalProcessRequest(container_id="long", signal=15))
    assert await wait(stub, "long") == 128 + 15

    # An OOM kill under the cgroup v2 memory limit is reported.
    oom = asyncio.ensure_future(stub.GetOOMEvent(agent_pb2.GetOOMEventRequest(), timeout=300))
    hog = ["sh", "-c", "x=a; while true; do x=$x$x; done"]
    await stub.CreateContainer(
        rq.create_container("hog", hog, image, memory_limit=32 << 20), timeout=120
    )
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="hog"), timeout=60)
    assert await wait(stub, "hog") == 128 + 9
    assert (await asyncio.wait_for(oom, 60)).container_id == "hog"

    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest(), timeout=120)
    details = await stub.GetGuestDetails(agent_pb2.GuestDetailsRequest())
    facts = details.agent_details.extra_features
    assert "contrast.mounts=0" in facts
    assert "contrast.children=0" in facts
