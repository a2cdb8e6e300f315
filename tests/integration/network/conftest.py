"""Network namespaces need root; the topology helpers need ``ip`` and ``tc``."""

import os
from collections.abc import Iterator

import pytest

from tests.conftest import require_programs
from tests.integration.network.topology import Topology, pod_topology


@pytest.fixture
def topo() -> Iterator[Topology]:
    require_programs("ip", "tc")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with pod_topology() as topology:
        yield topology
