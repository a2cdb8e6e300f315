"""A pod whose initdata policy crashes regopy, as a kubelet sees it: RunPodSandbox
fails with the guest agent's reason in the CRI error, and the pod-VM is gone.

Two ``default`` rules for one name make regopy 1.5 segfault at the first query of the
bundle it builds. Before the agent compiled untrusted Rego in a child process the
guest agent died, the VM powered off and the kubelet got no reason. One node
(Debian's containerd): the path through the shim is the same for every version.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from devkit.containerd import DEBIAN
from devkit.crinode import CriNode, cri_node
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.vm.conftest import guest_image
from tests.support.containerd_releases import require_release

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]

INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
CRASHING = """package agent_policy

default CreateSandboxRequest := false
default CreateSandboxRequest := true
"""
REASON = "is blocked by policy: policy.rego: policy does not compile: Multiple default rules"
POD_TIMEOUT = 900.0  # a VM boot under TCG on a loaded machine


@pytest.fixture(scope="module")
def node(guest_image: GuestImage) -> Iterator[CriNode]:
    require_programs("containerd", "ip", "nsenter", "docker-registry", "busybox", "pgrep")
    with cri_node(guest_image, containerd=require_release(DEBIAN)) as crinode:
        yield crinode


def test_a_policy_crashing_regopy_fails_the_pod_with_its_reason(node: CriNode) -> None:
    initdata = codec.encode_annotation(document.create({document.POLICY_NAME: CRASHING}).raw)
    pod = node.pod("hostile", {INITDATA: initdata})
    try:
        with pytest.raises(grpc.RpcError) as refused:
            node.cri.run_pod_spec(pod, node.handler, timeout=POD_TIMEOUT)
        details = refused.value.details() or ""
        assert REASON in details, details
        # containerd removed the failed sandbox: its pod-VM is gone.
        deadline = time.monotonic() + 120
        while node.qemus() and time.monotonic() < deadline:
            time.sleep(1)
        assert node.qemus() == []
    except BaseException:
        print(node.node.daemon_log()[-6000:])  # pytest shows it with the failure
        raise
