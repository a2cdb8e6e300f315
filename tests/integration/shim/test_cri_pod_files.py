"""A pod through containerd 1.6's CRI into a pod-VM (TCG): the pod's DNS config
(PodSandboxConfig.dns_config, written by containerd into the pod's resolv.conf on the
host) is what the container reads in the guest; containerd's task ps (Task.Pids) and
task metrics (Task.Stats, decoded by containerd as io.containerd.cgroups.v2.Metrics)
show the container's processes and cgroup figures."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.cri import read_log
from devkit.crinode import CriNode, cri_node
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.shim.test_containerd import ctr
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]

INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
# This test is about the pod's files and figures, not the policy.
POLICY = "package agent_policy\n\ndefault AllowRequestsFailingPolicy := true\n"
COMMAND = ["sh", "-c", "cat /etc/resolv.conf; echo ready; sleep 3600 & wait"]
POD_TIMEOUT = 900.0  # a VM boot under TCG on a loaded machine, plus the guest's pull


@pytest.fixture
def node(guest_image: GuestImage) -> Iterator[CriNode]:
    require_programs("containerd", "ctr", "ip", "nsenter", "docker-registry", "busybox")
    with cri_node(guest_image) as crinode:
        yield crinode


def wait_for_log(path: Path, text: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [entry.text for entry in read_log(path)] if path.exists() else []
        if text in lines:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in {path} after {timeout:.0f} s: {lines}")
        time.sleep(0.5)


def test_pod_dns_pids_and_metrics_through_containerd(node: CriNode) -> None:
    cri = node.cri
    data = {document.POLICY_NAME: POLICY, "imagepull.toml": node.puller_settings()}
    initdata = codec.encode_annotation(document.create(data, "sha384").raw)
    pod = dataclasses.replace(
        node.pod("files", {INITDATA: initdata}), dns_servers=("10.96.0.10", "10.96.0.11")
    )
    pod_id = cri.run_pod_spec(pod, node.handler, timeout=POD_TIMEOUT).pod_sandbox_id
    try:
        assert cri.pull_image(node.image)
        cid = cri.create_container(
            pod_id, pod, "files", image=node.image, command=COMMAND, timeout=POD_TIMEOUT
        )
        cri.start_container(cid)
        lines = wait_for_log(Path(pod.log_directory) / "files.log", "ready", POD_TIMEOUT)
        assert lines[:3] == ["nameserver 10.96.0.10", "nameserver 10.96.0.11", "ready"], lines

        # Task.Pids: sh and its background sleep (pids of the guest).
        pids: list[str] = []
        for _ in range(120):
            listed = ctr(node.containerd, "-n", "k8s.io", "tasks", "ps", cid)
            assert listed.returncode == 0, listed.stderr
            pids = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
            if len(pids) == 2:
                break
            time.sleep(0.5)
        assert len(pids) == 2 and all(p.isdigit() for p in pids), listed.stdout

        # Task.Stats: containerd decodes our Any and prints the v2 figures.
        metrics = ctr(node.containerd, "-n", "k8s.io", "tasks", "metrics", "--format", "json", cid)
        assert metrics.returncode == 0, metrics.stderr
        figures = json.loads(metrics.stdout)
        assert figures["pids"]["current"] == 2, figures
        assert 4096 < figures["memory"]["usage"] < 2**30, figures
        assert figures["cpu"]["usage_usec"] > 0, figures
    except BaseException:
        print(node.node.daemon_log()[-6000:])  # pytest shows it with the failure
        raise
    finally:
        cri.stop_pod(pod_id)
        cri.remove_pod(pod_id)
    assert cri.pods() == []
    assert node.leftovers() == []
