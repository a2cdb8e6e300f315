"""The node daemon SIGKILLed while two pods run in pod-VMs, then started again by the
next shim ``start``: both pods keep running, are stopped and removed through the new
daemon, and no QEMU is orphaned."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from agent.sandbox.config import INITDATA_ANNOTATION
from api.containerd.task.v2 import shim_pb2
from api.containerd.types.task import task_pb2 as types
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from shim.task import SERVICE
from tests.integration.guestagent.requests import ALLOW_ALL
from tests.integration.shim.node import node_env
from tests.integration.shim.test_pod_vm import pause_bundle, qemus_under, write_config
from tests.integration.vm.conftest import guest_image
from tests.unit.shim.harness import NamespacedStub
from ttrpc import Client, ServiceStub

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return  # a zombie of ours: dead
        except OSError:
            return
        time.sleep(0.05)


async def test_sigkilled_daemon_comes_back_to_its_pods(guest_image: GuestImage) -> None:
    doc = document.create({document.POLICY_NAME: ALLOW_ALL}, "sha384")
    initdata = {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)}
    with node_env("pod-vm") as node:
        config = node.root / "runtime.toml"
        write_config(guest_image, config)
        options = any_pb2.Any(
            type_url="runtimeoptions.v1.Options",
            value=runtimeoptions.Options(config_path=str(config)).SerializeToString(),
        )
        pods = ("pod1", "pod2")
        bundles = {}
        for pod in pods:
            bundles[pod] = pause_bundle(node.root, initdata, pod)
            started = node.shim("-id", pod, "start", cwd=bundles[pod])
            assert started.returncode == 0, started.stderr
        address = started.stdout.decode().removeprefix("unix://")
        first = node.daemon_pid()
        assert first is not None

        async with await Client.connect_unix(address) as client:
            task = NamespacedStub(ServiceStub(client, SERVICE), "default")
            for pod in pods:
                request = shim_pb2.CreateTaskRequest(
                    id=pod, bundle=str(bundles[pod]), options=options
                )
                await task.Create(request)
                await task.Start(shim_pb2.StartRequest(id=pod))
        vms = qemus_under(node.root)
        assert len(vms) == 2

        os.kill(first, signal.SIGKILL)
        wait_gone(first)
        assert len(qemus_under(node.root)) == 2  # the pods outlive their daemon

        again = node.shim("-id", "pod1", "start", cwd=bundles["pod1"])  # containerd's next call
        assert again.returncode == 0, again.stderr + node.daemon_log().encode()
        assert node.daemon_pid() not in (None, first)

        async with await Client.connect_unix(address) as client:
            task = NamespacedStub(ServiceStub(client, SERVICE), "default")
            for pod in pods:
                state = await task.State(shim_pb2.StateRequest(id=pod))
                assert state.status == types.RUNNING, node.daemon_log()
            for pod in pods:
                await task.Kill(shim_pb2.KillRequest(id=pod, signal=signal.SIGKILL))
                waited = await task.Wait(shim_pb2.WaitRequest(id=pod))
                assert waited.exit_status == 128 + signal.SIGKILL
                await task.Delete(shim_pb2.DeleteRequest(id=pod))
        assert qemus_under(node.root) == []
        assert list(node.state_dir.rglob("*.json")) == []
