"""The pod-VM backend with the real guest image under TCG: a sandbox's VM boots with
its initdata bound, the guest agent answers, and nothing outlives the sandbox. The
pod's network and workload containers: test_pod_vm_network.py."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from agent.sandbox import config as runtime_config
from agent.sandbox.allowlist import vm_settings
from agent.sandbox.backend import SandboxSpec
from agent.sandbox.config import INITDATA_ANNOTATION
from agent.sandbox.errors import BackendError
from agent.sandbox.guest import GuestSandbox
from agent.sandbox.vm_backend import PodVmBackend
from api.containerd.cgroups.v2 import metrics_pb2
from api.containerd.task.v2 import shim_pb2
from api.containerd.types.task import task_pb2 as types
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.integration.guestagent.requests import ALLOW_ALL
from tests.integration.network.test_vm_workload import registry
from tests.integration.shim.podvm import (
    ICMP_ECHO,
    NETWORK_POLICY,
    container_bundle,
    pause_bundle,
    qemus_under,
    write_config,
)
from tests.integration.vm.conftest import guest_image
from tests.unit.shim.harness import Harness, running
from ttrpc import PermissionDenied

pytestmark = pytest.mark.vm
# Fixtures shared with the VM and network tests, and the helpers other test modules
# (and bench/pod_bench.py) import from here.
__all__ = [
    "ICMP_ECHO",
    "NETWORK_POLICY",
    "container_bundle",
    "guest_image",
    "pause_bundle",
    "qemus_under",
    "registry",
    "write_config",
]


async def test_sandbox_vm_with_bound_initdata(guest_image: GuestImage, sockets: Path) -> None:
    config = write_config(guest_image, sockets / "runtime.toml")
    doc = document.create({document.POLICY_NAME: ALLOW_ALL}, "sha384")
    annotations = {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)}
    spec = SandboxSpec(
        "k8s.io", "pod1", config, vm_settings(annotations, config), sockets / "run", None, "pod1"
    )
    backend = PodVmBackend()
    sandbox = await backend.create(spec)
    try:
        assert isinstance(sandbox, GuestSandbox)
        assert qemus_under(sockets)
        features = sandbox.agent.features(await sandbox.agent.guest_details())
        assert features["block.vdb"].startswith("serial:initdata")  # the initdata disk
        assert sandbox.record.details["console_log"] == str(sockets / "run" / "console.log")
    finally:
        await backend.destroy(sandbox)
    assert qemus_under(sockets) == []
    assert not (sockets / "run" / "qmp.sock").exists()


async def test_a_guest_not_ready_in_time_fails_the_sandbox_and_leaves_no_vm(
    guest_image: GuestImage, sockets: Path
) -> None:
    """The boot's budget runs out (1 s: no guest is ready by then, even under KVM): the
    backend stops the VM it launched and names the sandbox and why."""
    path = sockets / "runtime.toml"
    write_config(guest_image, path)
    path.write_text(path.read_text().replace("boot_seconds = 300", "boot_seconds = 1"))
    config = runtime_config.load(path)
    spec = SandboxSpec(
        "k8s.io", "pod1", config, vm_settings({}, config), sockets / "run", None, "pod1"
    )
    with pytest.raises(BackendError, match=r"sandbox pod1: .*guest not ready after 1 s"):
        await PodVmBackend().create(spec)
    assert qemus_under(sockets) == []


async def test_task_create_without_initdata_is_denied_by_the_guest(
    guest_image: GuestImage, sockets: Path
) -> None:
    """No initdata: the guest enforces deny-all; containerd gets the guest's reason and
    the VM is gone again."""
    async with running(sockets, PodVmBackend()) as daemon:
        write_config(guest_image, daemon.config_path)
        await daemon.register("pod1")
        bundle = daemon.bundle("pod1")
        request = shim_pb2.CreateTaskRequest(
            id="pod1", bundle=str(bundle), options=daemon.options()
        )
        with pytest.raises(PermissionDenied) as err:
            await daemon.task.Create(request)
        assert "guest agent CreateSandbox: CreateSandboxRequest is blocked by policy" in str(
            err.value
        )
        assert "initdata" in str(err.value)
        assert qemus_under(sockets) == []
    assert daemon.store.load_all() == ([], [])


async def exec_in(daemon: Harness, folder: Path) -> bytes:
    """Exec ``echo`` in the pause container with stdout on a FIFO, as containerd does;
    what the FIFO received."""
    fifo = folder / "e1-stdout"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # containerd opens its end first
    process = {
        "args": ["/busybox", "echo", "hello from the pod-VM"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
    }
    spec = any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
        value=json.dumps(process).encode(),
    )
    await daemon.task.Exec(
        shim_pb2.ExecProcessRequest(id="pod1", exec_id="e1", stdout=str(fifo), spec=spec)
    )
    await daemon.task.Start(shim_pb2.StartRequest(id="pod1", exec_id="e1"))
    waited = await daemon.task.Wait(shim_pb2.WaitRequest(id="pod1", exec_id="e1"))
    assert waited.exit_status == 0
    state = await daemon.task.State(shim_pb2.StateRequest(id="pod1", exec_id="e1"))
    assert state.status == types.STOPPED
    await daemon.task.Delete(shim_pb2.DeleteRequest(id="pod1", exec_id="e1"))
    try:
        return os.read(reader, 4096)
    finally:
        os.close(reader)


async def test_sandbox_task_lifecycle_in_a_pod_vm(guest_image: GuestImage, sockets: Path) -> None:
    """Create, Start, State, Kill, Wait, Delete of a CRI sandbox (pause) container: the
    pause process runs in the pod-VM, containerd hears create, start, exit, delete in
    that order, and afterwards no QEMU and no state are left."""
    policy = ALLOW_ALL + "default ListProcessesRequest := true\n"  # Task.Pids
    doc = document.create({document.POLICY_NAME: policy}, "sha384")
    bundle = pause_bundle(sockets, {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)})
    async with running(sockets, PodVmBackend()) as daemon:
        write_config(guest_image, daemon.config_path)
        await daemon.register("pod1")
        created = await daemon.task.Create(
            shim_pb2.CreateTaskRequest(id="pod1", bundle=str(bundle), options=daemon.options())
        )
        assert qemus_under(sockets)
        assert created.pid > 0  # the pod-VM's QEMU
        started = await daemon.task.Start(shim_pb2.StartRequest(id="pod1"))
        assert started.pid == created.pid
        state = await daemon.task.State(shim_pb2.StateRequest(id="pod1"))
        assert state.status == types.RUNNING
        assert daemon.store.load("k8s.io", "pod1") is not None  # persisted while it runs
        output = await exec_in(daemon, sockets)
        assert output == b"hello from the pod-VM\n"
        resources = any_pb2.Any(
            type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
            value=json.dumps({"cpu": {"shares": 512}}).encode(),
        )
        await daemon.task.Update(shim_pb2.UpdateTaskRequest(id="pod1", resources=resources))
        # Stats: the pause container's cgroup v2 figures from the guest, as containerd decodes them.
        stats = (await daemon.task.Stats(shim_pb2.StatsRequest(id="pod1"))).stats
        assert stats.type_url == "io.containerd.cgroups.v2.Metrics"
        metrics = metrics_pb2.Metrics.FromString(stats.value)
        assert metrics.memory.usage > 0
        assert metrics.pids.current >= 1
        # Pids: guest pids of the pause container's cgroup (at least the pause process).
        pids = await daemon.task.Pids(shim_pb2.PidsRequest(id="pod1"))
        assert len(pids.processes) == metrics.pids.current
        assert all(p.pid > 0 for p in pids.processes)
        await daemon.task.Kill(shim_pb2.KillRequest(id="pod1", signal=signal.SIGKILL))
        waited = await daemon.task.Wait(shim_pb2.WaitRequest(id="pod1"))
        assert waited.exit_status == 128 + signal.SIGKILL
        deleted = await daemon.task.Delete(shim_pb2.DeleteRequest(id="pod1"))
        assert deleted.exit_status == 128 + signal.SIGKILL
        envelopes = await daemon.sink.wait_for(7)
        assert [e.topic for e in envelopes] == [
            "/tasks/create", "/tasks/start",
            "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit",  # the exec
            "/tasks/exit", "/tasks/delete",
        ]  # fmt: skip
        assert qemus_under(sockets) == []
    assert daemon.store.load_all() == ([], [])


async def test_restarted_daemon_reattaches_to_a_running_pod_vm(
    guest_image: GuestImage, sockets: Path
) -> None:
    """The daemon goes away while the pod runs (its state is on disk after every change,
    as after a SIGKILL); the next daemon finds the VM, and the pod is stopped and
    removed normally through it."""
    doc = document.create({document.POLICY_NAME: ALLOW_ALL}, "sha384")
    bundle = pause_bundle(sockets, {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)})
    async with running(sockets, PodVmBackend()) as first:
        write_config(guest_image, first.config_path)
        await first.register("pod1")
        request = shim_pb2.CreateTaskRequest(id="pod1", bundle=str(bundle), options=first.options())
        created = await first.task.Create(request)
        await first.task.Start(shim_pb2.StartRequest(id="pod1"))
    assert qemus_under(sockets)  # the first daemon is gone, its pod-VM is not

    async with running(sockets, PodVmBackend()) as second:
        write_config(guest_image, second.config_path)
        state = await second.task.State(shim_pb2.StateRequest(id="pod1"))
        assert (state.status, state.pid) == (types.RUNNING, created.pid)
        connect = await second.task.Connect(shim_pb2.ConnectRequest(id="pod1"))
        assert connect.task_pid == created.pid
        await second.task.Kill(shim_pb2.KillRequest(id="pod1", signal=signal.SIGKILL))
        waited = await second.task.Wait(shim_pb2.WaitRequest(id="pod1"))
        assert waited.exit_status == 128 + signal.SIGKILL
        await second.task.Delete(shim_pb2.DeleteRequest(id="pod1"))
        envelopes = await second.sink.wait_for(2)
        assert [e.topic for e in envelopes] == ["/tasks/exit", "/tasks/delete"]
        assert qemus_under(sockets) == []
    assert second.store.load_all() == ([], [])
