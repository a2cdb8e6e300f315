"""A real pod-VM (TCG) on the pod network: QEMU gets the tap by fd as virtio-net with
eth0's MAC; the guest agent is sent the netns's configuration; after the VM stops and
teardown runs, no tap and no qdisc of ours remain in the pod netns."""

import dataclasses
import os
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from agent.initdata import launch
from agent.initdata.pod import from_toml
from agent.network import pod
from agent.network.guest import configure_guest
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.config import Platform, VMConfig
from agent.vm.manager import VM
from api.kata import agent_pb2
from devkit.topology import MTU, POD_IP, POD_MAC, Topology, in_ns, ip
from guest.image.manifest import GuestImage
from guest.initdata import document
from tests.integration.network.relay import fetch_argv, ping_argv
from tests.integration.vm.conftest import vm_config

BOOT_TIMEOUT = 300.0
REQUESTS = (
    "CreateSandboxRequest", "DestroySandboxRequest", "CreateContainerRequest",
    "StartContainerRequest", "RemoveContainerRequest", "WaitProcessRequest",
    "ReadStreamRequest", "SignalProcessRequest", "GuestDetailsRequest",
    "UpdateInterfaceRequest", "UpdateRoutesRequest", "AddARPNeighborsRequest",
    "ListInterfacesRequest", "ListRoutesRequest",
)  # fmt: skip
# Allows what these tests send; the network requests go through the policy like any other.
POLICY = "package agent_policy\n\n" + "".join(f"default {r} := true\n" for r in REQUESTS)


def run_in(ns: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(in_ns(ns, argv), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def assert_nothing_of_ours(topo: Topology) -> None:
    assert pod.TAP_NAME not in ip("-n", topo.pod, "link")
    tc = subprocess.run(["tc", "-n", topo.pod, "qdisc", "show", "dev", "eth0"],
                        capture_output=True, text=True, check=True, timeout=10).stdout  # fmt: skip
    assert "ingress" not in tc


@asynccontextmanager
async def pod_vm(
    topo: Topology,
    image: GuestImage,
    directory: Path,
    name: str,
    data: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[VM, VMConfig, pod.PodNetwork]]:
    """A VM on the pod network with initdata ``data`` (default: POLICY); on exit the VM
    is stopped, the network torn down and checked for leftovers."""
    own = directory / "network-initdata"  # not the pod-VM tests' own initdata.img
    own.mkdir()
    initdata = launch.prepare(
        from_toml(document.create(data or {"policy.rego": POLICY}).raw), Platform.INSECURE, own
    )
    result = await pod.setup(topo.path(topo.pod), name)
    assert result is not None
    network, tap_fd = result
    # The pod-VM tests' config with our initdata instead of theirs (disk and cmdline).
    config = dataclasses.replace(
        vm_config(image, directory, name), net=network.nic(), disks=(initdata.disk(),),
        cmdline=image.manifest.cmdline + initdata.kernel_cmdline(), memory_mib=1024,
    )  # fmt: skip
    try:
        vm = await VM.launch(config, tap_fd=tap_fd)
    except BaseException:
        await pod.teardown(network, name)
        raise
    finally:
        os.close(tap_fd)  # QEMU holds its own copy now
    try:
        yield vm, config, network
    finally:
        await vm.stop()
        await pod.teardown(network, name)
    assert_nothing_of_ours(topo)


async def test_qemu_gets_the_tap_with_the_pod_mac(
    topo: Topology, guest_image: GuestImage, vm_dir: Path
) -> None:
    async with pod_vm(topo, guest_image, vm_dir, "netvm1") as (vm, _, _):
        rx = await vm.monitor.execute("query-rx-filter", {"name": "net0-nic"})
        assert rx[0]["main-mac"] == POD_MAC
        link = ip("-n", topo.pod, "-o", "link", "show", pod.TAP_NAME)
        assert "NO-CARRIER" not in link and "LOWER_UP" in link  # QEMU holds the tap
        await vm.wait_ready(BOOT_TIMEOUT)


async def test_guest_answers_at_the_pod_address(
    topo: Topology, guest_image: GuestImage, vm_dir: Path
) -> None:
    async with pod_vm(topo, guest_image, vm_dir, "netvm2") as (vm, config, network):
        await vm.wait_ready(BOOT_TIMEOUT)
        agent = AgentClient(await connect(config.transport))
        try:
            await configure_guest(agent.agent, network, "netvm2", timeout=120)
            request = agent_pb2.ListInterfacesRequest()
            listed = await agent.agent.ListInterfaces(request, timeout=120)
            assert isinstance(listed, agent_pb2.Interfaces)
            (eth0,) = [i for i in listed.Interfaces if i.hwAddr == POD_MAC]
            assert (eth0.name, eth0.mtu) == ("eth0", MTU)
            assert (POD_IP, "24") in [(a.address, a.mask) for a in eth0.IPAddresses]
            # Only the guest can answer at the pod's address: eth0's ingress goes to the tap.
            ping = run_in(topo.peer, ping_argv(POD_IP, 3))
            assert ping.stdout.strip() == "3", ping.stdout + ping.stderr
            # A port nobody listens on in the guest: the guest's kernel refuses it.
            refused = run_in(topo.peer, fetch_argv(f"http://{POD_IP}:9/"))
            assert "Connection refused" in refused.stderr, refused.stderr
        finally:
            await agent.close()
