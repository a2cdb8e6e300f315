"""The pod-VM backend on a pod's network, with the real guest image under TCG: the VM
gets the pod's address, and a workload container's image is pulled in the guest over
that network and its output reaches containerd's FIFO."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from agent.events import TOPICS
from agent.network.pod import TAP_NAME
from agent.sandbox.config import INITDATA_ANNOTATION
from agent.sandbox.vm_backend import PodVmBackend
from api.containerd.task.v2 import shim_pb2
from devkit.forward import Forward
from devkit.registry import Registry
from devkit.topology import PEER_IP, POD_IP, in_ns, ip, pod_topology
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.network.test_vm_workload import REGISTRY_PORT, registry
from tests.integration.shim.podvm import (
    ICMP_ECHO,
    NETWORK_POLICY,
    container_bundle,
    pause_bundle,
    qemus_under,
    write_config,
)
from tests.integration.vm.conftest import guest_image
from tests.unit.shim.harness import running

pytestmark = pytest.mark.vm
__all__ = ["guest_image", "registry"]  # fixtures shared with the VM and network tests


async def test_sandbox_vm_joins_the_pods_network(guest_image: GuestImage, sockets: Path) -> None:
    """A pod with a CNI-style netns: the VM gets the pod's address (a peer on the pod
    network pings it, the guest answers), and removing the pod leaves no tap and no
    qdisc of ours in the netns."""
    require_programs("ip", "tc")
    doc = document.create({document.POLICY_NAME: NETWORK_POLICY}, "sha384")
    initdata = {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)}
    with pod_topology() as topo:
        bundle = pause_bundle(sockets, initdata, netns=topo.path(topo.pod))
        async with running(sockets, PodVmBackend()) as daemon:
            write_config(guest_image, daemon.config_path)
            await daemon.register("pod1")
            request = shim_pb2.CreateTaskRequest(
                id="pod1", bundle=str(bundle), options=daemon.options()
            )
            await daemon.task.Create(request)
            await daemon.task.Start(shim_pb2.StartRequest(id="pod1"))
            assert TAP_NAME in ip("-n", topo.pod, "link")
            pinged = await asyncio.to_thread(
                subprocess.run,
                in_ns(topo.peer, ["/usr/bin/python3", "-c", ICMP_ECHO, POD_IP]),
                capture_output=True, text=True, timeout=90, check=False,
            )  # fmt: skip
            assert pinged.stdout.strip() == f"reply from {POD_IP}", pinged.stdout + pinged.stderr
            await daemon.task.Kill(shim_pb2.KillRequest(id="pod1", signal=signal.SIGKILL))
            await daemon.task.Wait(shim_pb2.WaitRequest(id="pod1"))
            await daemon.task.Delete(shim_pb2.DeleteRequest(id="pod1"))
        assert TAP_NAME not in ip("-n", topo.pod, "link")
        qdiscs = subprocess.run(
            ["tc", "-n", topo.pod, "qdisc", "show", "dev", "eth0"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        assert "ingress" not in qdiscs
        assert qemus_under(sockets) == []


async def test_workload_container_output_reaches_containerds_fifo(
    guest_image: GuestImage, sockets: Path, registry: tuple[Registry, str]
) -> None:
    """The pod's workload container: its image pulled in the guest from a registry on
    the pod network, its output through the FIFO containerd hands over, its exit
    status and events as CRI expects them."""
    require_programs("ip", "tc")
    reg, digest = registry
    host = f"{PEER_IP}:{REGISTRY_PORT}"
    data = {
        document.POLICY_NAME: NETWORK_POLICY,
        "imagepull.toml": f'[registries."{host}"]\ninsecure = true\n',
    }
    initdata = {INITDATA_ANNOTATION: codec.encode_annotation(document.create(data, "sha384").raw)}
    port = int(reg.host.rsplit(":", 1)[1])
    with (
        pod_topology() as topo,
        Forward(topo.path(topo.peer), (PEER_IP, REGISTRY_PORT), ("127.0.0.1", port)),
    ):
        pause = pause_bundle(sockets, initdata, netns=topo.path(topo.pod))
        app = container_bundle(
            sockets, f"{host}/test/busybox@{digest}",
            ["/bin/sh", "-c", "echo hello from the workload; exit 3"],
        )  # fmt: skip
        fifo = sockets / "app-stdout"
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            async with running(sockets, PodVmBackend()) as daemon:
                write_config(guest_image, daemon.config_path)
                for task_id, bundle in (("pod1", pause), ("app", app)):
                    await daemon.register(task_id)
                    await daemon.task.Create(
                        shim_pb2.CreateTaskRequest(
                            id=task_id, bundle=str(bundle), options=daemon.options(),
                            stdout=str(fifo) if task_id == "app" else "",
                        ),
                        timeout=600,
                    )  # fmt: skip
                    await daemon.task.Start(shim_pb2.StartRequest(id=task_id))
                waited = await daemon.task.Wait(shim_pb2.WaitRequest(id="app"))
                assert waited.exit_status == 3
                await daemon.task.Delete(shim_pb2.DeleteRequest(id="app"))
                await daemon.task.Kill(shim_pb2.KillRequest(id="pod1", signal=signal.SIGKILL))
                await daemon.task.Wait(shim_pb2.WaitRequest(id="pod1"))
                await daemon.task.Delete(shim_pb2.DeleteRequest(id="pod1"))
                envelopes = await daemon.sink.wait_for(8)
            assert os.read(reader, 4096) == b"hello from the workload\n"
        finally:
            os.close(reader)
    by_topic = {topic: kind for kind, topic in TOPICS.items()}
    app_events = [
        e.topic
        for e in envelopes
        if by_topic[e.topic].FromString(e.event.value).container_id == "app"  # type: ignore[attr-defined]
    ]
    assert app_events == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    assert qemus_under(sockets) == []
