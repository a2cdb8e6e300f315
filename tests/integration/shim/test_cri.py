"""containerd 1.6's CRI into our runtime handler, as the installer writes it: the pod's
sandbox reaches the daemon, whose allow-list and guest agent answer what CRI reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from api.containerd.cri.runtime.v1.api_pb2 import POD
from devkit.containerd import Containerd, running_containerd
from devkit.cri import Cri
from devkit.crinode import HANDLER, containerd_config_with_handler
from tests.integration.shim.image import write_image
from tests.integration.shim.node import Node
from tests.integration.shim.test_containerd import RUNTIME_CONFIG, ctr

PAUSE = "registry.k8s.io/pause:3.6"


# A pod network for CRI without touching the machine's own: a CNI plugin that answers
# ADD with an address for the netns containerd made and changes nothing (the pods here
# run on the local-agent backend, which uses no pod network), plus Debian's loopback
# (containerd's CRI sets up lo in every pod netns). Host-network pods are refused by our
# handler (agent/sandbox/hostns.py), so these pods need a network of their own.
NETWORK_ONLY_PLUGIN = """#!/bin/sh
case "$CNI_COMMAND" in
ADD)
    printf '{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"%s"}],' "$CNI_NETNS"
    printf '"ips":[{"version":"4","address":"10.254.0.2/24","interface":0}]}'
    ;;
VERSION) printf '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
esac
"""
LOOPBACK = Path("/usr/lib/cni/loopback")


def write_pod_network(work: Path) -> None:
    """CNI conf and bin dirs under containerd's ``work`` (devkit.containerd's layout)."""
    (work / "cni").mkdir(parents=True)
    (work / "cni-bin").mkdir(parents=True)
    plugin = work / "cni-bin" / "contrast-test-net"
    plugin.write_text(NETWORK_ONLY_PLUGIN)
    plugin.chmod(0o755)
    (work / "cni-bin" / "loopback").symlink_to(LOOPBACK)
    (work / "cni" / "10-test.conflist").write_text(
        '{"cniVersion": "0.4.0", "name": "test", "plugins": [{"type": "contrast-test-net"}]}'
    )


@pytest.fixture
def cri(node_with_agent: Node, tmp_path: Path) -> Iterator[tuple[Cri, Containerd]]:
    config = tmp_path / "runtime.toml"
    config.write_text(RUNTIME_CONFIG)
    archive = tmp_path / "pause.tar"
    write_image(archive, PAUSE, {"pause": b"#!/bin/sh\nsleep 1000\n"})
    text = containerd_config_with_handler(config, sandbox_image=PAUSE)
    if not LOOPBACK.is_file():
        pytest.skip(f"{LOOPBACK} missing (Debian's containernetworking-plugins)")
    write_pod_network(tmp_path / "containerd")
    with running_containerd(text, tmp_path / "containerd") as containerd:
        imported = ctr(
            containerd, "-n", "k8s.io", "images", "import", "--snapshotter", "native", str(archive)
        )
        assert imported.returncode == 0, imported.stderr
        yield Cri(containerd.socket), containerd


def test_pod_reaches_the_guest_agent_through_cri(
    cri: tuple[Cri, Containerd], node_with_agent: Node
) -> None:
    client, _ = cri
    with pytest.raises(grpc.RpcError) as err:
        client.run_pod(
            "web", HANDLER, {"io.katacontainers.config.hypervisor.default_vcpus": "2"}, POD
        )
    details = err.value.details() or ""
    assert "guest agent CreateSandbox: CreateSandboxRequest is blocked by policy" in details, (
        details + node_with_agent.daemon_log()
    )
    assert list(node_with_agent.state_dir.rglob("*.json")) == []
    assert all(pod.metadata.name != "web" or pod.state != 0 for pod in client.pods())


def test_annotation_outside_the_allow_list_is_refused_by_name(
    cri: tuple[Cri, Containerd], node_with_agent: Node
) -> None:
    client, _ = cri
    with pytest.raises(grpc.RpcError) as err:
        client.run_pod("evil", HANDLER, {"io.katacontainers.config.hypervisor.path": "/tmp/x"}, POD)
    details = err.value.details() or ""
    assert "annotation io.katacontainers.config.hypervisor.path is not allowed" in details, (
        details + node_with_agent.daemon_log()
    )
    assert "guest agent" not in details  # refused before any VM or agent call


def test_host_network_pod_is_refused_naming_the_option(
    cri: tuple[Cri, Containerd], node_with_agent: Node
) -> None:
    client, _ = cri
    with pytest.raises(grpc.RpcError) as err:
        client.run_pod("hostnet", HANDLER)  # devkit's default: NamespaceMode NODE
    details = err.value.details() or ""
    assert "hostNetwork is not supported by the contrast-cc runtime" in details, (
        details + node_with_agent.daemon_log()
    )
    assert "guest agent" not in details  # refused before any VM or agent call
    assert list(node_with_agent.state_dir.rglob("*.json")) == []
