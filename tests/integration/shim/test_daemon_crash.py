"""The node daemon SIGKILLed under real containerd 1.6 while two pods run in pod-VMs
(TCG): containerd's shim connections are held by the relay, which starts a new daemon;
containerd never notices. Both pods keep running with the same QEMU, and are killed and
removed normally afterwards; nothing is left."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from devkit.containerd import Containerd
from tests.integration.shim.node import Node, relay_pid, stop_daemon, stop_relay
from tests.integration.shim.test_containerd import ctr
from tests.integration.shim.test_ctr_pod_vm import run_pause, task_line, vm_node
from tests.integration.shim.test_daemon_restart import wait_gone
from tests.integration.shim.test_pod_vm import qemus_under
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image", "vm_node"]

PODS = ("p1", "p2")


def wait_status(containerd: Containerd, name: str, status: str, seconds: float = 120) -> list[str]:
    deadline = time.monotonic() + seconds
    line = task_line(containerd, name)
    while line[2:3] != [status] and time.monotonic() < deadline:
        time.sleep(0.5)
        line = task_line(containerd, name)
    return line


def test_pods_outlive_a_sigkilled_daemon(vm_node: tuple[Node, Containerd, Path]) -> None:
    node, containerd, config = vm_node
    for pod in PODS:
        run = run_pause(containerd, config, pod)
        assert run.returncode == 0, run.stderr + node.daemon_log()[-3000:]
    before = {pod: task_line(containerd, pod) for pod in PODS}
    for pod in PODS:
        assert before[pod][2] == "RUNNING", before
    vms = qemus_under(node.root)
    assert len(vms) == 2
    assert {line[1] for line in before.values()} == {vm.split()[0] for vm in vms}
    relay = relay_pid(node)
    assert relay is not None

    first = node.daemon_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_gone(first)
    assert len(qemus_under(node.root)) == 2  # the pods outlive their daemon

    # containerd's State calls wait in the relay for the daemon it starts (which
    # reattaches both VMs first): ctr gets an answer, both tasks still RUNNING.
    listed = ctr(containerd, "tasks", "ls", timeout=400)
    assert listed.returncode == 0, listed.stderr
    after = {pod: task_line(containerd, pod) for pod in PODS}
    assert after == before, node.daemon_log()[-3000:]
    second = node.daemon_pid()
    assert second not in (None, first)
    assert relay_pid(node) == relay  # the same relay held containerd's connections
    relay_log = (node.run_dir / "relay.log").read_text()
    assert "no node daemon answers" in relay_log  # and started the new daemon
    log = containerd.log.read_text()
    assert "cleaning up after shim disconnected" not in log
    assert len(qemus_under(node.root)) == 2

    for pod in PODS:
        killed = ctr(containerd, "tasks", "kill", "-s", "KILL", pod)
        assert killed.returncode == 0, killed.stderr
    for pod in PODS:
        assert wait_status(containerd, pod, "STOPPED")[2:3] == ["STOPPED"]
        removed = ctr(containerd, "tasks", "rm", pod)
        assert removed.returncode == 0, removed.stderr
        assert ctr(containerd, "containers", "rm", pod).returncode == 0
    assert qemus_under(node.root) == []
    assert list(node.state_dir.rglob("*.json")) == []

    assert stop_relay(node)
    assert stop_daemon(node) == 0
    assert list(node.run_dir.rglob("*.sock")) == []
    assert not (node.run_dir / "relay.pid").exists()
    assert not (node.run_dir / "daemon.pid").exists()


def test_a_dead_relay_releases_the_pod_and_leaks_nothing(
    vm_node: tuple[Node, Containerd, Path],
) -> None:
    """Without the relay, containerd's connections close and containerd 1.6 does what it
    does for a dead shim: it runs our ``delete``, which has the daemon kill the pod-VM
    and drop its state. The pod is gone, nothing is orphaned."""
    node, containerd, config = vm_node
    run = run_pause(containerd, config, "p3")
    assert run.returncode == 0, run.stderr + node.daemon_log()[-3000:]
    assert len(qemus_under(node.root)) == 1
    relay = relay_pid(node)
    assert relay is not None
    os.kill(relay, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (qemus_under(node.root) or task_line(containerd, "p3")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert task_line(containerd, "p3") == []
    assert qemus_under(node.root) == []
    assert list(node.state_dir.rglob("*.json")) == []
    assert "cleaning up after shim disconnected" in containerd.log.read_text()
