"""The issue's must-show in a real pod-VM (TCG): a container in the VM fetches a page
from an HTTP server in another namespace, which sees the pod's IP as the source; the
server's namespace connects to a listener in a container. The container image itself
is pulled by the guest over the pod network (the test registry is reachable only at
a pod-network address). Afterwards the pod netns holds no tap and no qdisc of ours.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.network import pod
from agent.network.guest import configure_guest
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from api.kata import agent_pb2
from devkit import ocibuild as ob
from devkit.forward import Forward
from devkit.registry import Registry
from devkit.topology import PEER_IP, POD_IP, Topology, in_ns
from guest.image.manifest import GuestImage
from tests.conftest import require_programs
from tests.integration.guestagent import requests as rq
from tests.integration.network.relay import fetch_argv, server_argv
from tests.integration.network.test_vm import BOOT_TIMEOUT, POLICY, pod_vm

APPLETS = ("sh", "echo", "printf", "cat", "wget", "nc", "dd", "sleep", "true")
REGISTRY_PORT = 5000
REPLY = "HTTP/1.0 200 OK\\r\\nContent-Length: 14\\r\\n\\r\\nfrom the guest"


def busybox_image() -> ob.Image:
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    entries = [ob.directory("bin"), ob.file("bin/busybox", busybox, 0o755)]
    entries += [ob.symlink(f"bin/{name}", "busybox") for name in APPLETS]
    entries += [ob.directory(d) for d in ("etc", "proc", "sys", "dev", "tmp")]
    return ob.build_image([ob.Layer(ob.layer_tar(entries))])


@pytest.fixture
def registry() -> Iterator[tuple[Registry, str]]:
    require_programs("docker-registry", "busybox")
    with tempfile.TemporaryDirectory(prefix="netreg-") as tmp, Registry(Path(tmp)) as reg:
        image = busybox_image()
        digest = reg.upload(image.blobs, image.manifest, "test/busybox", "v1")
        yield reg, digest


CALL = 180.0  # seconds per agent call; an image pull under TCG is the slowest


async def read_all(stub: Any, cid: str) -> bytes:
    data = b""
    while True:
        request = agent_pb2.ReadStreamRequest(container_id=cid, len=4096)
        reply = await stub.ReadStdout(request, timeout=CALL)
        if not reply.data:
            return data
        data += reply.data


def fetch_retrying(ns: str, url: str, attempts: int = 30) -> subprocess.CompletedProcess[str]:
    for _ in range(attempts):
        result = subprocess.run(in_ns(ns, fetch_argv(url)), capture_output=True, text=True,
                                timeout=60, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        if result.returncode == 0:
            return result
        time.sleep(1)  # the container may not listen yet
    return result


async def test_container_in_vm_talks_http_with_peer(
    topo: Topology, guest_image: GuestImage, vm_dir: Path, registry: tuple[Registry, str]
) -> None:
    reg, digest = registry
    host = f"{PEER_IP}:{REGISTRY_PORT}"
    data = {"policy.rego": POLICY, "imagepull.toml": f'[registries."{host}"]\ninsecure = true\n'}
    port = int(reg.host.rsplit(":", 1)[1])
    peer_server = subprocess.Popen(
        in_ns(topo.peer, server_argv(PEER_IP, 8080, "peer")), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert peer_server.stdout is not None and peer_server.stdout.readline() == "listening\n"
        with Forward(topo.path(topo.peer), (PEER_IP, REGISTRY_PORT), ("127.0.0.1", port)):
            async with pod_vm(topo, guest_image, vm_dir, "netvm3", data) as (vm, config, net):
                await vm.wait_ready(BOOT_TIMEOUT)
                agent = AgentClient(await connect(config.transport))
                try:
                    await run_workloads(agent.agent, net, f"{host}/test/busybox@{digest}", topo)
                finally:
                    await agent.close()
    finally:
        peer_server.kill()
        peer_server.wait()


async def call(method: Any, request: Any) -> Any:
    return await method(request, timeout=CALL)


async def run_workloads(stub: Any, network: pod.PodNetwork, reference: str, topo: Topology) -> None:
    await configure_guest(stub, network, "sb-work", timeout=CALL)
    await call(stub.CreateSandbox, agent_pb2.CreateSandboxRequest(
        hostname="pod-host", dns=["nameserver 10.213.47.1"], sandbox_id="sandbox1"))  # fmt: skip
    await call(stub.CreateContainer, rq.create_pause("pause"))
    await call(stub.StartContainer, agent_pb2.StartContainerRequest(container_id="pause"))

    # Container -> peer: the server answers with the source address it saw.
    await call(stub.CreateContainer, rq.create_container(
        "fetch", ["wget", "-q", "-O", "-", f"http://{PEER_IP}:8080/"], reference))  # fmt: skip
    await call(stub.StartContainer, agent_pb2.StartContainerRequest(container_id="fetch"))
    assert await read_all(stub, "fetch") == f"peer {POD_IP}".encode()

    # Peer -> container: a one-shot listener in the container answers the peer.
    await call(stub.CreateContainer, rq.create_container(
        "serve", ["sh", "-c", f"printf '{REPLY}' | nc -l -p 8081"], reference))  # fmt: skip
    await call(stub.StartContainer, agent_pb2.StartContainerRequest(container_id="serve"))
    fetched = await asyncio.to_thread(fetch_retrying, topo.peer, f"http://{POD_IP}:8081/")
    assert fetched.stdout.strip() == "from the guest", fetched.stderr

    for cid in ("fetch", "serve"):
        await call(stub.WaitProcess, agent_pb2.WaitProcessRequest(container_id=cid))
        await call(stub.RemoveContainer, agent_pb2.RemoveContainerRequest(container_id=cid))
    await call(stub.DestroySandbox, agent_pb2.DestroySandboxRequest())
