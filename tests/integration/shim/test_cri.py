"""containerd 1.6's CRI into our runtime handler, as the installer writes it: the pod's
sandbox reaches the daemon, whose allow-list and guest agent answer what CRI reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from devkit.containerd import Containerd, running_containerd
from devkit.cri import Cri
from devkit.crinode import HANDLER, containerd_config_with_handler
from tests.integration.shim.image import write_image
from tests.integration.shim.node import Node
from tests.integration.shim.test_containerd import RUNTIME_CONFIG, ctr

PAUSE = "registry.k8s.io/pause:3.6"


@pytest.fixture
def cri(node_with_agent: Node, tmp_path: Path) -> Iterator[tuple[Cri, Containerd]]:
    config = tmp_path / "runtime.toml"
    config.write_text(RUNTIME_CONFIG)
    archive = tmp_path / "pause.tar"
    write_image(archive, PAUSE, {"pause": b"#!/bin/sh\nsleep 1000\n"})
    text = containerd_config_with_handler(config, sandbox_image=PAUSE)
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
