"""containerd 1.6's CRI into our runtime handler, as the installer writes it: the pod's
sandbox reaches the daemon, whose allow-list and guest agent answer what CRI reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tomlkit

from devkit.containerd import Containerd, running_containerd
from devkit.cri import Cri
from installer import containerd_config
from tests.integration.shim.image import write_image
from tests.integration.shim.node import SHIM, Node
from tests.integration.shim.test_containerd import RUNTIME_CONFIG, ctr

HANDLER = "contrast-cc-qemu-insecure-0123abcd"
PAUSE = "registry.k8s.io/pause:3.6"


def containerd_config_with_handler(config_path: Path) -> str:
    """containerd's config with our handler entered by the installer's own code; the
    pause image is the test image (no registry) and the snapshotter works in /tmp."""
    doc = containerd_config.parse("version = 2\n", "test")
    entry = containerd_config.RuntimeEntry(HANDLER, str(SHIM), str(config_path))
    containerd_config.set_runtime(doc, 2, entry, "test")
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    cri["sandbox_image"] = PAUSE
    cri["containerd"]["snapshotter"] = "native"
    return tomlkit.dumps(doc)


@pytest.fixture
def cri(node_with_agent: Node, tmp_path: Path) -> Iterator[tuple[Cri, Containerd]]:
    config = tmp_path / "runtime.toml"
    config.write_text(RUNTIME_CONFIG)
    archive = tmp_path / "pause.tar"
    write_image(archive, PAUSE, {"pause": b"#!/bin/sh\nsleep 1000\n"})
    text = containerd_config_with_handler(config)
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
        client.run_pod("web", HANDLER, {"io.katacontainers.config.hypervisor.default_vcpus": "2"})
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
        client.run_pod("evil", HANDLER, {"io.katacontainers.config.hypervisor.path": "/tmp/x"})
    details = err.value.details() or ""
    assert "annotation io.katacontainers.config.hypervisor.path is not allowed" in details, (
        details + node_with_agent.daemon_log()
    )
    assert "guest agent" not in details  # refused before any VM or agent call
