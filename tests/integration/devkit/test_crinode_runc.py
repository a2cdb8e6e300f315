"""The CRI node's runc handler on each containerd (Debian's 1.6, 2.0.11 and 2.3.4 from
../shared/peers): a pod and a container run and leave nothing, the baseline the
conformance tier compares our handler with (on 2.0.11 with Debian's runc shim: see
``devkit.containerd``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit.cri import LogLine, read_log
from devkit.crinode import cri_node
from guest.image.manifest import GuestImage
from tests.conftest import require_programs
from tests.integration.vm.conftest import guest_image
from tests.support.containerd_releases import VERSIONS, require_release

__all__ = ["guest_image"]


@pytest.mark.parametrize("version", VERSIONS)
def test_runc_pod_runs_on_each_containerd(guest_image: GuestImage, version: str) -> None:
    require_programs("containerd", "runc", "ip", "nsenter", "docker-registry", "busybox")
    release = require_release(version)
    with cri_node(guest_image, containerd=release) as node:
        cri = node.cri
        pod = node.pod("runc")
        pod_id = cri.run_pod_spec(pod, node.runc_handler).pod_sandbox_id
        cri.pull_image(node.image)
        container = cri.create_container(
            pod_id, pod, "echo", image=node.image, command=["sh", "-c", "echo runc ok"]
        )
        cri.start_container(container)
        assert cri.wait_exited(container).exit_code == 0
        assert read_log(Path(pod.log_directory) / "echo.log") == [LogLine("stdout", "runc ok")]
        cri.stop_pod(pod_id)
        cri.remove_pod(pod_id)
        assert cri.pods() == []
        assert node.leftovers() == []
