"""Network namespaces need root; the topology helpers need ``ip`` and ``tc``. The
guest image and short VM directory fixtures are the pod-VM tests' own."""

import os
from collections.abc import Iterator

import pytest

from devkit.topology import Topology, pod_topology
from tests.conftest import require_programs
from tests.integration.vm.conftest import guest_image, vm_dir

__all__ = ["guest_image", "topo", "vm_dir"]


@pytest.fixture
def topo() -> Iterator[Topology]:
    require_programs("ip", "tc")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with pod_topology() as topology:
        yield topology
