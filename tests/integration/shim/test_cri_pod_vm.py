"""containerd 1.6's CRI with a CNI network into a pod-VM (TCG): RunPodSandbox through
the installer-written handler brings the pod up READY in its VM on the pod network
(a peer reaches its address), Stop and Remove leave no QEMU, tap, veth or state.

containerd runs in the test's node netns and its CNI plugin keeps the host end of the
pod's veth there, so the machine's own network is never touched."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.containerd.cri.runtime.v1 import api_pb2
from devkit.containerd import Containerd, sandboxed_config
from devkit.cri import Cri
from devkit.topology import (
    GATEWAY,
    PREFIX,
    SUBNET,
    Topology,
    in_ns,
    ip,
    pod_topology,
)
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.shim.image import write_image
from tests.integration.shim.node import Node, node_env
from tests.integration.shim.test_containerd import ctr
from tests.integration.shim.test_cri import HANDLER, PAUSE, containerd_config_with_handler
from tests.integration.shim.test_pod_vm import ICMP_ECHO, NETWORK_POLICY, qemus_under, write_config
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]

POD_ADDRESS = f"{SUBNET}.20"
PLUGIN = Path(__file__).with_name("cni_plugin.py")


def cni_setup(work: Path, topo: Topology) -> None:
    (work / "cni").mkdir(parents=True)
    (work / "cni" / "10-contrast.conf").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "contrast-test", "type": "contrast-test",
        "node_netns": topo.node, "bridge": "cni0",
        "address": f"{POD_ADDRESS}/{PREFIX}", "gateway": GATEWAY,
    }))  # fmt: skip
    bins = work / "cni-bin"
    bins.mkdir()
    wrapper = bins / "contrast-test"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {PLUGIN} "$@"\n')
    wrapper.chmod(0o755)
    (bins / "loopback").symlink_to("/usr/lib/cni/loopback")


def start_containerd(
    config_text: str, work: Path, netns: str
) -> tuple[Containerd, subprocess.Popen[bytes]]:
    config = work / "containerd.toml"
    config.write_text(sandboxed_config(config_text, work))
    socket = work / "c.sock"
    log = work / "containerd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            in_ns(netns, ["containerd", "--config", str(config), "--root", str(work / "root"),
                          "--state", str(work / "state"), "--address", str(socket)]),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    containerd = Containerd(socket, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"containerd exited: {log.read_text()[-3000:]}")
        try:
            containerd.cri_status(timeout=2)
            return containerd, proc
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"containerd's CRI did not answer: {log.read_text()[-3000:]}")


@pytest.fixture
def cri_node(
    guest_image: GuestImage, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Node, Cri, Containerd, Topology]]:
    require_programs("containerd", "ctr", "ip")
    with node_env("pod-vm") as node, pod_topology() as topo:
        for key, value in node.env.items():
            if key != "TTRPC_ADDRESS":
                monkeypatch.setenv(key, value)
        config = node.root / "runtime.toml"
        write_config(guest_image, config)
        work = node.root / "ctd"
        cni_setup(work, topo)
        write_image(node.root / "pause.tar", PAUSE, {"pause": b"#!/bin/sh\n"})
        containerd, proc = start_containerd(containerd_config_with_handler(config), work, topo.node)
        try:
            imported = ctr(containerd, "-n", "k8s.io", "images", "import", "--snapshotter",
                           "native", str(node.root / "pause.tar"))  # fmt: skip
            assert imported.returncode == 0, imported.stderr
            yield node, Cri(containerd.socket), containerd, topo
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_pod_sandbox_runs_in_a_pod_vm_on_its_cni_network(
    cri_node: tuple[Node, Cri, Containerd, Topology],
) -> None:
    node, cri, _, topo = cri_node
    doc = document.create({document.POLICY_NAME: NETWORK_POLICY}, "sha384")
    annotations = {
        "io.katacontainers.config.hypervisor.cc_init_data": codec.encode_annotation(doc.raw)
    }
    pod_id = cri.run_pod("web", HANDLER, annotations, network=api_pb2.POD).pod_sandbox_id
    try:
        pods = {p.id: p for p in cri.pods()}
        assert pods[pod_id].state == api_pb2.SANDBOX_READY
        assert len(qemus_under(node.root)) == 1
        pinged = subprocess.run(
            in_ns(topo.peer, ["/usr/bin/python3", "-c", ICMP_ECHO, POD_ADDRESS]),
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert pinged.stdout.strip() == f"reply from {POD_ADDRESS}", pinged.stdout + pinged.stderr
    finally:
        cri.call("StopPodSandbox", api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                 api_pb2.StopPodSandboxResponse)  # fmt: skip
        cri.call("RemovePodSandbox", api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                 api_pb2.RemovePodSandboxResponse)  # fmt: skip
    assert cri.pods() == []
    assert qemus_under(node.root) == []
    assert list(node.state_dir.rglob("*.json")) == []
    bridged = ip("-n", topo.node, "-o", "link", "show", "master", "cni0")
    names = {line.split(":")[1].strip().split("@")[0] for line in bridged.splitlines()}
    assert names == {"vethpod", "vethpeer"}  # the pod's veth went with it (CNI DEL)
