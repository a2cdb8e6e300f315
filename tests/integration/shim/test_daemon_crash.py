"""The node daemon SIGKILLed under real containerd 1.6 while two pods run in pod-VMs
(TCG): containerd's shim connections are held by the relay, which starts a new daemon;
containerd never notices. Both pods keep running with the same QEMU, and are killed and
removed normally afterwards; nothing is left. Also: a Wait in flight across the crash is
answered by the next daemon, and what a dead relay means."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from agent.sandbox.config import INITDATA_ANNOTATION
from api.containerd.cri.runtime.v1 import api_pb2
from api.containerd.task.v2 import shim_pb2
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from devkit.containerd import Containerd
from devkit.crinode import cri_node
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from shim.task import SERVICE
from tests.conftest import require_programs
from tests.integration.guestagent.requests import ALLOW_ALL
from tests.integration.shim.node import Node, node_env, relay_pid, stop_daemon, stop_relay
from tests.integration.shim.test_containerd import ctr
from tests.integration.shim.test_ctr_pod_vm import run_pause, task_line, vm_node
from tests.integration.shim.test_daemon_restart import wait_gone
from tests.integration.shim.test_pod_vm import (
    NETWORK_POLICY,
    pause_bundle,
    qemus_under,
    write_config,
)
from tests.integration.vm.conftest import guest_image
from tests.unit.shim.harness import NamespacedStub
from tests.unit.shim.sinks import event_sink
from ttrpc import Client, ServiceStub

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

    stop_relay(node)
    assert not Path(f"/proc/{relay}").exists()
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


async def test_a_wait_in_flight_is_answered_by_the_next_daemon(guest_image: GuestImage) -> None:
    """A Wait sent through the relay is in flight when the daemon is SIGKILLed, and the
    pod-VM dies while no daemon runs: the relay starts a daemon and replays the Wait;
    the new daemon finds the VM gone, publishes the TaskExit the old one never sent
    (after create and start, in order) and answers the Wait with 255."""
    doc = document.create({document.POLICY_NAME: ALLOW_ALL}, "sha384")
    initdata = {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)}
    with node_env("pod-vm") as node:
        config = node.root / "runtime.toml"
        write_config(guest_image, config)
        options = any_pb2.Any(
            type_url="runtimeoptions.v1.Options",
            value=runtimeoptions.Options(config_path=str(config)).SerializeToString(),
        )
        bundle = pause_bundle(node.root, initdata, "pod1")
        async with event_sink(Path(node.env["TTRPC_ADDRESS"])) as sink:
            started = node.shim("-id", "pod1", "start", cwd=bundle)
            assert started.returncode == 0, started.stderr
            address = started.stdout.decode().removeprefix("unix://")
            assert address == str(node.run_dir / "ns" / "default.sock")  # the relay's
            async with await Client.connect_unix(address) as client:
                task = NamespacedStub(ServiceStub(client, SERVICE), "default")
                request = shim_pb2.CreateTaskRequest(id="pod1", bundle=str(bundle), options=options)
                await task.Create(request)
                await task.Start(shim_pb2.StartRequest(id="pod1"))
                [vm] = qemus_under(node.root)
                wait = asyncio.ensure_future(task.Wait(shim_pb2.WaitRequest(id="pod1")))
                await asyncio.sleep(1.0)
                assert not wait.done()

                first = node.daemon_pid()
                assert first is not None
                os.kill(first, signal.SIGKILL)
                wait_gone(first)
                os.kill(int(vm.split()[0]), signal.SIGKILL)  # the pod dies meanwhile

                waited = await asyncio.wait_for(wait, 300)
                assert waited.exit_status == 255, node.daemon_log()[-3000:]
                assert node.daemon_pid() not in (None, first)
                envelopes = await sink.wait_for(3, timeout=60)
                topics = [e.topic for e in envelopes]
                assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit"]
                await task.Delete(shim_pb2.DeleteRequest(id="pod1"))
        assert qemus_under(node.root) == []
        assert list(node.state_dir.rglob("*.json")) == []


def test_a_cri_pod_stays_ready_across_a_daemon_crash(guest_image: GuestImage) -> None:
    """containerd's CRI keeps a Wait on every sandbox task; an error on it would mark
    the pod NOTREADY. Across a daemon SIGKILL the relay replays it to the next daemon:
    the pod stays READY in the same VM, and stops and is removed normally."""
    require_programs("containerd", "ctr", "ip", "docker-registry", "busybox")
    doc = document.create({document.POLICY_NAME: NETWORK_POLICY}, "sha384")
    annotations = {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)}
    with cri_node(guest_image) as crinode:
        cri, node = crinode.cri, crinode.node
        pod_id = cri.run_pod_spec(crinode.pod("web", annotations), crinode.handler).pod_sandbox_id
        try:
            vms = crinode.qemus()
            assert len(vms) == 1
            first = node.daemon_pid()
            assert first is not None
            os.kill(first, signal.SIGKILL)
            wait_gone(first)
            deadline = time.monotonic() + 300
            while node.daemon_pid() in (None, first) and time.monotonic() < deadline:
                time.sleep(0.5)  # the pid file is written once the new daemon serves
            assert node.daemon_pid() not in (None, first), node.daemon_log()[-3000:]
            time.sleep(2)  # time for a failed Wait to reach the CRI plugin
            [pod] = cri.pods()
            assert pod.state == api_pb2.SANDBOX_READY
            assert crinode.qemus() == vms
        finally:
            cri.stop_pod(pod_id)
            cri.remove_pod(pod_id)
        assert cri.pods() == []
        assert crinode.leftovers() == []
