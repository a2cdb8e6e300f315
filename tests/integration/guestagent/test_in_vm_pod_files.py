"""In a booted pod-VM (TCG), through the daemon's guest client (agent.sandbox.guest):
the pod's resolv.conf read on the host reaches a container, and Pids and Stats come
from the container's cgroup v2 group under crun."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import ttrpc
from agent.sandbox import resolv
from agent.sandbox.backend import ContainerSpec, Stream
from agent.sandbox.guest import GuestSandbox
from agent.sandbox.state import VmRecord
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.manager import VM
from api.containerd.cgroups.v2 import metrics_pb2
from api.kata import agent_pb2, types_pb2
from guest.image.manifest import GuestImage
from tests.integration.guestagent import requests as rq
from tests.integration.guestagent.conftest import Pushed
from tests.integration.guestagent.test_task_api import (
    CRI_IMAGE,
    CRI_SANDBOX_ID,
    CRI_TYPE,
    oci_config,
)
from tests.integration.vm.conftest import guest_image, pod_vm_config, registry_initdata, vm_dir

__all__ = ["guest_image", "vm_dir"]  # fixtures used here

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 300.0
MAC = "52:54:00:12:34:57"
# This test is about the pod's files and figures, not the policy.
POLICY = "package agent_policy\n\ndefault AllowRequestsFailingPolicy := true\n"


@pytest.fixture
async def vm_sandbox(
    guest_image: GuestImage, vm_dir: Path, pushed: Pushed
) -> AsyncIterator[tuple[GuestSandbox, str]]:
    guest_registry = f"10.0.2.2:{pushed.registry.port}"
    image = pushed.reference.replace(pushed.registry.host, guest_registry)
    config = pod_vm_config(
        guest_image, vm_dir, "podfiles", registry_initdata(POLICY, guest_registry), MAC
    )
    vm = await VM.launch(config)
    try:
        await vm.wait_ready(BOOT_TIMEOUT)
        client = await connect(config.transport)
        sandbox = GuestSandbox(AgentClient(client), VmRecord("test", 0), call_timeout=300)
        try:
            yield sandbox, image
        finally:
            await client.close()
    finally:
        await vm.stop()


async def network(agent: ttrpc.ServiceStub) -> None:
    """The guest's NIC on QEMU's user network (the registry is the host, 10.0.2.2)."""
    interface = types_pb2.Interface(
        name="eth0", hwAddr=MAC, mtu=1500,
        IPAddresses=[types_pb2.IPAddress(address="10.0.2.15", mask="24")],
    )  # fmt: skip
    await agent.UpdateInterface(agent_pb2.UpdateInterfaceRequest(interface=interface), timeout=60)
    route = types_pb2.Route(dest="", gateway="10.0.2.2", device="eth0")
    routes = agent_pb2.Routes(Routes=[route])
    await agent.UpdateRoutes(agent_pb2.UpdateRoutesRequest(routes=routes), timeout=60)


async def test_dns_pids_and_stats_in_the_vm(
    vm_sandbox: tuple[GuestSandbox, str], tmp_path: Path
) -> None:
    sandbox, image = vm_sandbox
    agent = sandbox.agent.agent
    await network(agent)
    # The host side: containerd's resolv.conf for the pod, named by the sandbox's mount.
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("# by containerd\nnameserver 10.96.0.10\nsearch ns1.svc.cluster.local\n")
    pause = oci_config(["/pause"], {CRI_TYPE: "sandbox", CRI_SANDBOX_ID: "s"}, resolv_conf)
    await sandbox.create_sandbox("vm-pod", "s", resolv.pod_dns(pause))
    await agent.CreateContainer(rq.create_pause("pause"), timeout=120)
    await agent.StartContainer(agent_pb2.StartContainerRequest(container_id="pause"), timeout=60)

    script = "cat /etc/resolv.conf; echo ready; dd if=/dev/zero of=/dev/null count=20000; "
    script += "sleep 1000 & wait"
    annotations = {CRI_TYPE: "container", CRI_SANDBOX_ID: "s", CRI_IMAGE: image}
    app = oci_config(["sh", "-c", script], annotations, resolv_conf)
    await sandbox.create_container(ContainerSpec("app", tmp_path, app, False, annotations))
    await sandbox.start_container("app")
    out = b""
    while b"ready\n" not in out:
        chunk = await sandbox.read_output("app", "", Stream.STDOUT, 4096)
        assert chunk, out
        out += chunk
    assert out.startswith(b"nameserver 10.96.0.10\nsearch ns1.svc.cluster.local\nready\n"), out

    # Pids: sh and its background sleep (pids of the guest's namespace).
    pids: list[int] = []
    for _ in range(600):
        pids = await sandbox.pids("app")
        metrics = metrics_pb2.Metrics.FromString(await sandbox.stats("app"))
        if len(pids) == 2 and metrics.pids.current == 2:
            break
        await asyncio.sleep(0.1)
    assert len(pids) == len(set(pids)) == 2 and all(p > 1 for p in pids), pids
    # Stats: the container's cgroup v2 group (crun), as containerd's v2 Metrics.
    assert metrics.pids.current == 2, metrics.pids
    assert 4096 < metrics.memory.usage < 2**30, metrics.memory
    assert 0 < metrics.memory.anon <= metrics.memory.usage, metrics.memory
    assert metrics.memory.usage_limit > metrics.memory.usage, metrics.memory
    assert 0 < metrics.cpu.usage_usec < 600 * 10**6, metrics.cpu
    assert metrics.cpu.user_usec + metrics.cpu.system_usec > 0, metrics.cpu

    await sandbox.destroy_sandbox()
