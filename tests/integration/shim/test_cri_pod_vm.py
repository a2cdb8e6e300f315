"""containerd 1.6's CRI with a CNI network into a pod-VM (TCG): RunPodSandbox through
the installer-written handler brings the pod up READY in its VM on the pod network
(a peer reaches its address; kubectl port-forward's way in set up during the boot),
Stop and Remove leave no QEMU, tap, veth or state.

containerd runs in the node netns of a devkit.crinode node and its CNI plugin keeps the
host end of the pod's veth there, so the machine's own network is never touched."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from api.containerd.cri.runtime.v1 import api_pb2
from devkit.crinode import POD_ADDRESSES, CriNode, cri_node
from devkit.topology import SUBNET, in_ns
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.shim.test_pod_vm import ICMP_ECHO, NETWORK_POLICY
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]

POD_ADDRESS = f"{SUBNET}.{POD_ADDRESSES[0]}"  # the first pod's address


@pytest.fixture
def node(guest_image: GuestImage) -> Iterator[CriNode]:
    require_programs("containerd", "ctr", "ip", "docker-registry", "busybox")
    with cri_node(guest_image) as crinode:
        yield crinode


def test_pod_sandbox_runs_in_a_pod_vm_on_its_cni_network(node: CriNode) -> None:
    cri = node.cri
    doc = document.create({document.POLICY_NAME: NETWORK_POLICY}, "sha384")
    annotations = {
        "io.katacontainers.config.hypervisor.cc_init_data": codec.encode_annotation(doc.raw)
    }
    pod_id = cri.run_pod_spec(node.pod("web", annotations), node.handler).pod_sandbox_id
    try:
        pods = {p.id: p for p in cri.pods()}
        assert pods[pod_id].state == api_pb2.SANDBOX_READY
        assert len(node.qemus()) == 1
        pinged = subprocess.run(
            in_ns(node.topology.peer, ["/usr/bin/python3", "-c", ICMP_ECHO, POD_ADDRESS]),
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert pinged.stdout.strip() == f"reply from {POD_ADDRESS}", pinged.stdout + pinged.stderr
        # kubectl port-forward's way in is set up while the guest boots, not after.
        lines = node.node.daemon_log().splitlines()
        forward = [i for i, line in enumerate(lines) if "port-forward: localhost in" in line]
        created = [i for i, line in enumerate(lines) if "guest agent CreateSandbox took" in line]
        assert len(forward) == 1 and len(created) == 1, lines
        assert forward[0] < created[0], lines
    finally:
        cri.stop_pod(pod_id)
        cri.remove_pod(pod_id)
    assert cri.pods() == []
    assert node.leftovers() == []  # no QEMU, veth (CNI DEL), mount, state file
