"""A pod's QEMU in the pod's cgroup (the sandbox container's ``linux.cgroupsPath``), on
this host's real hierarchies (v1 controllers, the named systemd one, the v2 unified one).

Every cgroup of these tests lies below this process's own memory cgroup path, so what the
VMs use stays accounted where the test runner's is; the same path is used (and created,
then removed) in the other hierarchies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from google.protobuf import any_pb2

from agent.sandbox import podcgroup
from agent.sandbox.allowlist import vm_settings
from agent.sandbox.backend import SandboxSpec
from agent.sandbox.config import INITDATA_ANNOTATION
from agent.sandbox.guest import GuestSandbox
from agent.sandbox.state import VmRecord
from agent.sandbox.vm_backend import PodVmBackend
from agent.sandbox.vm_process import kill_orphan
from agent.vm.errors import SpawnSetupError
from agent.vm.process import QemuProcess
from api.containerd.task.v2 import shim_pb2
from api.containerd.types.task import task_pb2 as types
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from shim.task import SERVICE
from tests.integration.guestagent.requests import ALLOW_ALL
from tests.integration.shim.node import node_env
from tests.integration.shim.podvm import pause_bundle, qemus_under, write_config
from tests.integration.vm.conftest import guest_image
from tests.unit.shim.harness import NamespacedStub
from ttrpc import Client, ServiceStub

__all__ = ["guest_image"]


def own_memory_cgroup() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path.rstrip("/")
    pytest.skip("no v1 memory hierarchy here")


def cgroup_of(pid: int) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` as {controllers (or "unified"): path}."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {(line.split(":", 2)[1] or "unified"): line.split(":", 2)[2] for line in lines}


def procs(hierarchies: tuple[podcgroup.Hierarchy, ...], path: str) -> set[int]:
    found: set[int] = set()
    for hierarchy in hierarchies:
        with contextlib.suppress(FileNotFoundError):
            text = (hierarchy.mount / path.lstrip("/") / "cgroup.procs").read_text()
            found |= {int(pid) for pid in text.split()}
    return found


@pytest.fixture
def test_cgroup() -> Iterator[str]:
    """A fresh cgroup path for the test (not created yet), removed with everything
    below it in every hierarchy afterwards (processes left in it are killed)."""
    if not Path("/sys/fs/cgroup/memory/cgroup.procs").exists():
        pytest.skip("this test expects the v1 hierarchies of this host")
    path = f"{own_memory_cgroup()}/contrast-test-{uuid.uuid4().hex[:8]}"
    hierarchies = podcgroup.mounted()
    # Our memory cgroup's path does not exist in the other hierarchies: whatever part of
    # it a test creates there goes again at the end.
    missing = [
        h.mount / parent
        for h in hierarchies
        for parent in reversed(PurePosixPath(path.lstrip("/")).parents)
        if str(parent) != "." and not (h.mount / parent).exists()
    ]
    yield path
    for pid in procs(hierarchies, path):  # nothing of ours lives here by now
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for hierarchy in hierarchies:
        top = hierarchy.mount / path.lstrip("/")
        if not top.exists():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        deadline = time.monotonic() + 10
        while top.exists() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                top.rmdir()
            time.sleep(0.1)
    for directory in reversed(missing):
        with contextlib.suppress(OSError):
            directory.rmdir()


def leaves_exist(path: str) -> list[bool]:
    return [(h.mount / path.lstrip("/")).is_dir() for h in podcgroup.mounted()]


async def test_qemu_process_joins_the_pod_cgroup_before_exec(
    test_cgroup: str, tmp_path: Path
) -> None:
    """The spawn path of every pod-VM (QemuProcess), with sleep standing in for QEMU:
    the child is in the pod's cgroup in every hierarchy, and was from its first
    instruction on (it is moved before exec: its own memory charge is there)."""
    path = f"{test_cgroup}/kubepods/besteffort/pod{uuid.uuid4()}/{'ab' * 32}"
    hierarchies = podcgroup.mounted()
    placement = podcgroup.prepare(path, hierarchies)
    assert all(leaves_exist(path))
    process = QemuProcess("cgroup-test", tmp_path / "console.log")
    await process.start(["sleep", "60"], [], placement.join)
    try:
        podcgroup.verify(process.pid, placement)
        seen = cgroup_of(process.pid)
        assert seen["memory"] == path
        assert seen["cpu"] == seen["cpuset"] == seen["name=systemd"] == seen["unified"] == path
        assert seen == {key: path for key in seen}  # every hierarchy, none left behind
        assert procs(hierarchies, path) == {process.pid}
        memory = hierarchies[[h.controllers for h in hierarchies].index(("memory",))]
        charged = int((memory.mount / path.lstrip("/") / "memory.usage_in_bytes").read_text())
        assert charged > 0  # sleep's own pages were charged to the pod, not to us
    finally:
        process.expect_exit()
        process.signal(signal.SIGKILL)
        await process.wait(10)
    await podcgroup.remove(placement.created)
    assert not any(leaves_exist(test_cgroup))  # everything we created, nothing else


async def test_a_failed_join_leaves_no_process(test_cgroup: str, tmp_path: Path) -> None:
    path = f"{test_cgroup}/pod1/x"
    placement = podcgroup.prepare(path, podcgroup.mounted())
    # The cgroup vanishes between prepare and spawn, in one hierarchy only (the last):
    # the child has joined the others when the write fails.
    placement.leaves[-1].rmdir()
    process = QemuProcess("cgroup-test", tmp_path / "console.log")
    marker = f"contrast-cgroup-fail-{uuid.uuid4().hex}"
    with pytest.raises(SpawnSetupError):
        await process.start(["sleep", "60", marker], [], placement.join)
    await asyncio.sleep(0.2)
    assert procs(podcgroup.mounted(), path) == set()
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cmdline_has(p, marker)]
    await podcgroup.remove(placement.created)


def test_shim_delete_without_daemon_removes_the_pod_cgroup(
    test_cgroup: str, tmp_path: Path
) -> None:
    """The shim's daemon-less ``delete`` (kill_orphan from the state record): the VM is
    killed and the cgroup directories its record says we created are removed; the
    parent that existed before stays."""
    hierarchies = podcgroup.mounted()
    podcgroup.prepare(test_cgroup, hierarchies)
    path = f"{test_cgroup}/pod{uuid.uuid4()}/{'bb' * 32}"
    placement = podcgroup.prepare(path, hierarchies)
    console = tmp_path / "console.log"  # a stand-in QEMU names it, as ours does
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(console)],
        preexec_fn=placement.join,  # noqa: PLW1509 (what QemuProcess does, in a test)
    )
    try:
        record = VmRecord(
            "pod-vm", stand_in.pid, {"console_log": str(console), **placement.details()}
        )
        assert cgroup_of(stand_in.pid)["memory"] == path
        assert kill_orphan(record)
        assert stand_in.wait(10) == -signal.SIGKILL
        assert not any(leaves_exist(path))
        assert all(leaves_exist(test_cgroup))
    finally:
        stand_in.kill()
        stand_in.wait(10)


def _cmdline_has(proc: Path, marker: str) -> bool:
    try:
        return marker.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.vm
async def test_pod_vm_runs_in_the_pod_cgroup(
    guest_image: GuestImage, sockets: Path, test_cgroup: str
) -> None:
    path = f"{test_cgroup}/kubepods/besteffort/pod{uuid.uuid4()}/{'cd' * 32}"
    config = write_config(guest_image, sockets / "runtime.toml")
    doc = document.create({document.POLICY_NAME: ALLOW_ALL}, "sha384")
    annotations = {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)}
    spec = SandboxSpec(
        "k8s.io", "pod1", config, vm_settings(annotations, config), sockets / "run", None,
        "pod1", cgroups_path=path,
    )  # fmt: skip
    backend = PodVmBackend()
    sandbox = await backend.create(spec)
    try:
        assert isinstance(sandbox, GuestSandbox)
        pid = sandbox.record.pid
        seen = cgroup_of(pid)
        assert seen["memory"] == path, seen
        assert seen == {key: path for key in seen}, seen
        assert procs(podcgroup.mounted(), path) == {pid}  # QEMU only
        leaf = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        charged = int((leaf / "memory.usage_in_bytes").read_text())
        assert charged > 32 << 20  # the guest's memory is the pod's
        assert sandbox.record.details[podcgroup.CGROUPS_PATH_KEY] == path
        assert podcgroup.created_dirs(sandbox.record.details)
    finally:
        await backend.destroy(sandbox)
    assert qemus_under(sockets) == []
    assert not any(leaves_exist(path))
    assert not any(leaves_exist(test_cgroup))  # created by the backend, removed by it


@pytest.mark.vm
async def test_a_cgroup_qemu_cannot_join_fails_the_sandbox(
    guest_image: GuestImage, sockets: Path, test_cgroup: str
) -> None:
    """A pod cgroup that exists but takes no process (a v1 cpuset group without cpus,
    not ours to fix): QEMU never runs, the sandbox fails naming the cgroup, and only
    the directories the backend created are removed again."""
    path = f"{test_cgroup}/pod1/{'aa' * 32}"
    hierarchies = podcgroup.mounted()
    podcgroup.prepare(test_cgroup, hierarchies)
    cpuset = next(h for h in hierarchies if h.controllers == ("cpuset",))
    broken = cpuset.mount / path.lstrip("/")
    broken.mkdir(parents=True)  # cpuset.cpus stays empty: joining it is ENOSPC
    config = write_config(guest_image, sockets / "runtime.toml")
    spec = SandboxSpec(
        "k8s.io", "pod1", config, vm_settings({}, config), sockets / "run", None, "pod1",
        cgroups_path=path,
    )  # fmt: skip
    with pytest.raises(podcgroup.CgroupError) as caught:
        await PodVmBackend().create(spec)
    assert f"QEMU could not join its pod cgroup {path}" in str(caught.value)
    assert str(broken) in str(caught.value)
    assert qemus_under(sockets) == []
    assert procs(hierarchies, path) == set()
    assert [h.mount for h in hierarchies if (h.mount / path.lstrip("/")).exists()] == [
        cpuset.mount
    ]  # the backend's own directories are gone, the one it found is kept


@pytest.mark.vm
async def test_daemon_container_dies_pod_vm_survives(
    guest_image: GuestImage, test_cgroup: str
) -> None:
    """The DaemonSet's failure mode: the daemon runs in a cgroup of its own (its
    container); when the container dies the runtime kills every process of that cgroup.
    The pod with a cgroupsPath keeps its VM (QEMU is in the pod's cgroup) and the next
    daemon reattaches to it; a pod without one (today's behaviour) loses its VM."""
    doc = document.create({document.POLICY_NAME: ALLOW_ALL}, "sha384")
    initdata = {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)}
    daemon_cgroup = f"{test_cgroup}/daemon-container"
    pod_cgroup = f"{test_cgroup}/kubepods/pod{uuid.uuid4()}/{'ef' * 32}"
    hierarchies = podcgroup.mounted()
    podcgroup.prepare(test_cgroup, hierarchies)  # the kubepods parent is not the daemon's
    container = podcgroup.prepare(daemon_cgroup, hierarchies)
    with node_env("pod-vm") as node:
        try:
            config = node.root / "runtime.toml"
            write_config(guest_image, config)
            options = any_pb2.Any(
                type_url="runtimeoptions.v1.Options",
                value=runtimeoptions.Options(config_path=str(config)).SerializeToString(),
            )
            bundles = {}
            for pod in ("pod1", "pod2"):
                bundles[pod] = pause_bundle(node.root, initdata, pod)
            spec_file = bundles["pod1"] / "config.json"
            spec = json.loads(spec_file.read_text())
            spec["linux"]["cgroupsPath"] = pod_cgroup
            spec_file.write_text(json.dumps(spec))

            for pod in ("pod1", "pod2"):
                started = node.shim("-id", pod, "start", cwd=bundles[pod])
                assert started.returncode == 0, started.stderr
            address = started.stdout.decode().removeprefix("unix://")
            first = node.daemon_pid()
            assert first is not None
            # Into its "container" before it runs any pod (its threads move with it).
            for leaf in container.leaves:
                (leaf / "cgroup.procs").write_text(str(first))
            assert cgroup_of(first)["memory"] == daemon_cgroup

            async with await Client.connect_unix(address) as client:
                task = NamespacedStub(ServiceStub(client, SERVICE), "default")
                for pod in ("pod1", "pod2"):
                    request = shim_pb2.CreateTaskRequest(
                        id=pod, bundle=str(bundles[pod]), options=options
                    )
                    await task.Create(request)
                    await task.Start(shim_pb2.StartRequest(id=pod))
            vms = {int(line.split()[0]): line for line in qemus_under(node.root)}
            assert len(vms) == 2
            placed = [pid for pid in vms if cgroup_of(pid)["memory"] == pod_cgroup]
            assert len(placed) == 1, {pid: cgroup_of(pid) for pid in vms}
            (survivor,) = placed
            (victim,) = set(vms) - {survivor}
            assert cgroup_of(victim)["memory"] == daemon_cgroup  # no cgroupsPath: ours
            assert procs(hierarchies, daemon_cgroup) >= {first, victim}

            killed = kill_cgroup(hierarchies, daemon_cgroup)  # what runc does
            assert {first, victim} <= killed
            assert survivor not in killed
            assert Path(f"/proc/{survivor}").exists()
            assert [int(line.split()[0]) for line in qemus_under(node.root)] == [survivor]

            again = node.shim("-id", "pod1", "start", cwd=bundles["pod1"])  # kubelet's restart
            assert again.returncode == 0, again.stderr + node.daemon_log().encode()
            second = node.daemon_pid()
            assert second not in (None, first)
            async with await Client.connect_unix(address) as client:
                task = NamespacedStub(ServiceStub(client, SERVICE), "default")
                state = await task.State(shim_pb2.StateRequest(id="pod1"))
                assert state.status == types.RUNNING, node.daemon_log()
                lost = await task.State(shim_pb2.StateRequest(id="pod2"))
                assert lost.status == types.STOPPED  # its VM died with the daemon
                for pod in ("pod1", "pod2"):
                    if pod == "pod1":
                        await task.Kill(shim_pb2.KillRequest(id=pod, signal=signal.SIGKILL))
                    await task.Wait(shim_pb2.WaitRequest(id=pod))
                    await task.Delete(shim_pb2.DeleteRequest(id=pod))
            assert qemus_under(node.root) == []
            assert not any(leaves_exist(pod_cgroup))
            assert not any(leaves_exist(f"{test_cgroup}/kubepods"))  # the daemon's, removed
            assert list(node.state_dir.rglob("*.json")) == []
        finally:
            for line in qemus_under(node.root):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[0]), signal.SIGKILL)


def kill_cgroup(hierarchies: tuple[podcgroup.Hierarchy, ...], path: str) -> set[int]:
    """SIGKILL every process in ``path`` until it is empty; the pids killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + 30
    while pids := procs(hierarchies, path):
        assert time.monotonic() < deadline, f"{path} keeps {pids}"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.1)
    return killed
