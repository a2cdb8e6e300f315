"""``ctr run --runtime io.containerd.contrast-cc.v2`` with real containerd 1.6 into a
pod-VM (TCG): the task runs (its pid is the VM's QEMU), is killed and removed through
containerd. A daemon crash under containerd is ``test_daemon_crash.py``."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.containerd import Containerd, running_containerd
from devkit.forward import Forward
from devkit.registry import Registry
from devkit.topology import PEER_IP, pod_topology
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.guestagent.requests import ALLOW_ALL
from tests.integration.network.test_vm_workload import REGISTRY_PORT, registry
from tests.integration.shim.image import write_image
from tests.integration.shim.node import Node, node_env
from tests.integration.shim.test_containerd import IMAGE, ctr
from tests.integration.shim.test_pod_vm import NETWORK_POLICY, qemus_under, write_config
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image", "registry"]


@pytest.fixture
def vm_node(
    guest_image: GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Node, Containerd, Path]]:
    require_programs("containerd", "ctr")
    with node_env("pod-vm") as node:
        for key, value in node.env.items():
            if key != "TTRPC_ADDRESS":
                monkeypatch.setenv(key, value)
        config = node.root / "runtime.toml"
        write_config(guest_image, config)
        write_image(tmp_path / "image.tar", IMAGE, {"hello": b"#!/bin/sh\necho hello\n"})
        with running_containerd("version = 2\n", tmp_path / "containerd") as containerd:
            imported = ctr(
                containerd,
                "images",
                "import",
                "--snapshotter",
                "native",
                str(tmp_path / "image.tar"),
            )
            assert imported.returncode == 0, imported.stderr
            yield node, containerd, config


def run_pause(containerd: Containerd, config: Path, name: str) -> subprocess.CompletedProcess[str]:
    """``ctr run -d`` of a pod's sandbox (pause) container with an allow-all policy."""
    doc = document.create({document.POLICY_NAME: ALLOW_ALL}, "sha384")
    initdata = codec.encode_annotation(doc.raw)
    return ctr(
        containerd, "run", "-d", "--snapshotter", "native",
        "--runtime", "io.containerd.contrast-cc.v2", "--runtime-config-path", str(config),
        "--annotation", "io.kubernetes.cri.container-type=sandbox",
        "--annotation", f"io.kubernetes.cri.sandbox-id={name}",
        "--annotation", f"io.katacontainers.config.hypervisor.cc_init_data={initdata}",
        IMAGE, name, "/pause",
        timeout=400,
    )  # fmt: skip


def task_line(containerd: Containerd, name: str) -> list[str]:
    listed = ctr(containerd, "tasks", "ls")
    return next((line.split() for line in listed.stdout.splitlines() if line.startswith(name)), [])


def test_ctr_runs_a_task_in_a_pod_vm(vm_node: tuple[Node, Containerd, Path]) -> None:
    node, containerd, config = vm_node
    run = run_pause(containerd, config, "c1")
    assert run.returncode == 0, run.stderr + node.daemon_log()
    line = task_line(containerd, "c1")
    assert line[2] == "RUNNING"
    assert any(line[1] in vm.split()[0] for vm in qemus_under(node.root))  # pid: the QEMU
    killed = ctr(containerd, "tasks", "kill", "-s", "KILL", "c1")
    assert killed.returncode == 0, killed.stderr
    deadline = time.monotonic() + 60
    while task_line(containerd, "c1")[2:3] != ["STOPPED"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert task_line(containerd, "c1")[2] == "STOPPED"
    assert ctr(containerd, "tasks", "rm", "c1").returncode == 0
    assert ctr(containerd, "containers", "rm", "c1").returncode == 0
    assert qemus_under(node.root) == []
    assert list(node.state_dir.rglob("*.json")) == []


def test_ctr_run_prints_the_workloads_output(
    vm_node: tuple[Node, Containerd, Path], registry: tuple[Registry, str]
) -> None:
    """``ctr run`` of a busybox image into a pod-VM on a pod network: the guest pulls the
    digest-pinned image from a registry on that network, and ctr prints the output and
    exits with the container's status."""
    require_programs("ip", "tc")
    node, containerd, config = vm_node
    reg, digest = registry
    host = f"{PEER_IP}:{REGISTRY_PORT}"
    data = {
        document.POLICY_NAME: NETWORK_POLICY,
        "imagepull.toml": f'[registries."{host}"]\ninsecure = true\n',
    }
    initdata = codec.encode_annotation(document.create(data, "sha384").raw)
    port = int(reg.host.rsplit(":", 1)[1])
    with (
        pod_topology() as topo,
        Forward(topo.path(topo.peer), (PEER_IP, REGISTRY_PORT), ("127.0.0.1", port)),
    ):
        run = ctr(
            containerd, "run", "--rm", "--snapshotter", "native",
            "--runtime", "io.containerd.contrast-cc.v2", "--runtime-config-path", str(config),
            "--with-ns", f"network:{topo.path(topo.pod)}",
            "--annotation", f"io.kubernetes.cri.image-name={host}/test/busybox@{digest}",
            "--annotation", f"io.katacontainers.config.hypervisor.cc_init_data={initdata}",
            IMAGE, "w1", "/bin/sh", "-c", "echo hello from ctr run; exit 7",
            timeout=600,
        )  # fmt: skip
        assert run.stdout == "hello from ctr run\n", run.stderr + node.daemon_log()[-3000:]
        assert run.returncode == 7
        assert qemus_under(node.root) == []
    assert list(node.state_dir.rglob("*.json")) == []
