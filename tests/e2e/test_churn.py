"""Issue 17's churn: pods created and removed through containerd's CRI, three at a
time, in one node daemon; afterwards nothing is left and the daemon holds what it held
before the first of them.

``CONTRAST_CHURN_CYCLES`` pods (6 by default, in rounds of three at once; the bench,
``bench/churn_bench.py``, runs 50) after a first pod that starts the relay and the
daemon, whose figures then are the start level. Each pod: pod-VM (256 MiB, TCG), a
container whose first line reaches its CRI log, an ExecSync, stop, remove.

Asserted after the last round (``devkit.churn``):

- nothing left: no QEMU of this node, no pod veth on the node's bridge, no pod netns,
  no cgroup directory of a pod or its container on any hierarchy, no mount under the
  node root, no sandbox state file, no pod address held, no new file in the daemon's
  run directory (sockets, FIFOs, a pod's console log and disks), no pod or container
  in containerd's CRI, logs within their rotation cap;
- the same daemon served every pod, and its open fds and live asyncio tasks are back at
  the start level (not one more; per coroutine none above its start count: a leaked
  task per pod would name itself), its RSS within ``RSS_GROWTH_MIB`` of the start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devkit import churn
from devkit.crinode import CriNode, cri_node
from guest.image.manifest import GuestImage
from tests.conftest import require_programs
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]

CYCLES = int(os.environ.get("CONTRAST_CHURN_CYCLES", "6"))
PARALLEL = 3
# The allocator's high-water mark after the first pods settles within this (the bench
# shows the plateau over 50 pods); a leak of the smallest per-pod object graph we keep
# (a sandbox record with its live state, ~0.5 MiB) passes it within ~40 pods.
RSS_GROWTH_MIB = 24


@pytest.fixture(scope="module")
def node(guest_image: GuestImage) -> Iterator[CriNode]:
    require_programs("containerd", "ip", "nsenter", "docker-registry", "busybox", "pgrep")
    with cri_node(guest_image) as crinode:
        churn.use_small_vms(crinode)
        yield crinode


def test_churn_leaves_nothing_and_the_daemon_back_at_its_start_level(node: CriNode) -> None:
    assert node.cri.pull_image(node.image)
    annotations = churn.allow_all_annotations(node)
    traces = [churn.pod_cycle(node, node.handler, "first", annotations)]
    start = churn.daemon_stats(node)
    files = churn.run_dir_files(node)
    print(f"\nstart: daemon {start.line()} {dict(start.tasks_by_coroutine)}")
    try:
        for first in range(0, CYCLES, PARALLEL):
            names = [f"churn-{i}" for i in range(first, min(first + PARALLEL, CYCLES))]
            traces += churn.churn_round(node, node.handler, names, PARALLEL, annotations)
            now = churn.settled(node, start, fd_slack=0)
            print(f"after {first + len(names)}: daemon {now.line()}", flush=True)
    except BaseException:
        print(node.node.daemon_log()[-8000:])
        raise
    end = churn.settled(node, start, fd_slack=0)
    assert end.pid == start.pid  # one daemon served them all
    assert end.fds <= start.fds, (start, end)
    assert (end.tasks or 0) <= (start.tasks or 0), (start, end)
    started = dict(start.tasks_by_coroutine)
    grown = {n: c for n, c in end.tasks_by_coroutine if c > started.get(n, 0)}
    assert grown == {}, grown
    assert end.rss_kib <= start.rss_kib + RSS_GROWTH_MIB * 1024, (start, end)
    assert churn.leftovers(node, files, traces) == []
