"""The pod-VM backend with the real guest image under TCG: a sandbox's VM boots with
its initdata bound, the guest agent answers, and nothing outlives the sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from agent.events import TOPICS
from agent.network.pod import TAP_NAME
from agent.sandbox import config as runtime_config
from agent.sandbox.allowlist import vm_settings
from agent.sandbox.backend import SandboxSpec
from agent.sandbox.config import INITDATA_ANNOTATION
from agent.sandbox.guest import GuestSandbox
from agent.sandbox.vm_backend import PodVmBackend
from api.containerd.task.v2 import shim_pb2
from api.containerd.types.task import task_pb2 as types
from devkit.forward import Forward
from devkit.registry import Registry
from devkit.topology import PEER_IP, POD_IP, in_ns, ip, pod_topology
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.guestagent.requests import ALLOW_ALL
from tests.integration.network.test_vm_workload import REGISTRY_PORT, registry
from tests.integration.vm.conftest import guest_image
from tests.unit.shim.harness import Harness, running
from ttrpc import PermissionDenied, Unimplemented

pytestmark = pytest.mark.vm
__all__ = ["guest_image", "registry"]  # fixtures shared with the VM and network tests


def write_config(image: GuestImage, path: Path) -> runtime_config.RuntimeConfig:
    path.write_text(
        f"""
platform = "qemu-insecure"
[guest]
kernel = "{image.kernel}"
initrd = "{image.initrd}"
rootfs = "{image.root}"
manifest = "{image.directory / "manifest.json"}"
[timeouts]
boot_seconds = 300
"""
    )
    return runtime_config.load(path)


def qemus_under(folder: Path) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-a", "qemu-system"], capture_output=True, text=True, check=False
    )
    return [line for line in found.stdout.splitlines() if str(folder) in line]


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


def pause_bundle(
    folder: Path, annotations: dict[str, str], pod_id: str = "pod1", netns: Path | None = None
) -> Path:
    """The sandbox container's bundle as containerd's CRI writes it (trimmed)."""
    bundle = folder / "bundles" / pod_id
    bundle.mkdir(parents=True)
    spec = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 65535, "gid": 65535},
            "args": ["/pause"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": pod_id,
        "mounts": [
            {
                "destination": "/proc",
                "type": "proc",
                "source": "proc",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": pod_id,
            **annotations,
        },
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore"],
        },
    }
    if netns is not None:
        spec["linux"]["namespaces"].append({"type": "network", "path": str(netns)})  # type: ignore[index]
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


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
    doc = document.create({document.POLICY_NAME: ALLOW_ALL}, "sha384")
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
        # Not mapped yet: a clear UNIMPLEMENTED, never an empty success.
        with pytest.raises(Unimplemented, match="Stats: mapping StatsContainer"):
            await daemon.task.Stats(shim_pb2.StatsRequest(id="pod1"))
        with pytest.raises(Unimplemented, match="Pids: the Kata agent protocol"):
            await daemon.task.Pids(shim_pb2.PidsRequest(id="pod1"))
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


# An ICMP echo request (no ping(8) on our machines), retried until a reply comes.
ICMP_ECHO = """
import socket, struct, sys, time
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + b"contrast"
packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    s.sendto(packet, (sys.argv[1], 0))
    try:
        while True:
            data, (source, _) = s.recvfrom(1024)
            icmp = data[(data[0] & 0x0F) * 4:]
            if source == sys.argv[1] and icmp[0] == 0 and icmp[4:6] == b"BB":
                print("reply from", source)
                sys.exit(0)
    except TimeoutError:
        continue
print("no reply")
"""

NETWORK_POLICY = ALLOW_ALL + "".join(
    f"default {name} := true\n"
    for name in ("UpdateInterfaceRequest", "UpdateRoutesRequest", "AddARPNeighborsRequest")
)


async def test_sandbox_vm_joins_the_pods_network(guest_image: GuestImage, sockets: Path) -> None:
    """A pod with a CNI-style netns: the VM gets the pod's address (a peer on the pod
    network pings it, the guest answers), and removing the pod leaves no tap and no
    qdisc of ours in the netns."""
    require_programs("ip", "tc")
    doc = document.create({document.POLICY_NAME: NETWORK_POLICY}, "sha384")
    initdata = {INITDATA_ANNOTATION: codec.encode_annotation(doc.raw)}
    with pod_topology() as topo:
        bundle = pause_bundle(sockets, initdata, netns=topo.path(topo.pod))
        async with running(sockets, PodVmBackend()) as daemon:
            write_config(guest_image, daemon.config_path)
            await daemon.register("pod1")
            request = shim_pb2.CreateTaskRequest(
                id="pod1", bundle=str(bundle), options=daemon.options()
            )
            await daemon.task.Create(request)
            await daemon.task.Start(shim_pb2.StartRequest(id="pod1"))
            assert TAP_NAME in ip("-n", topo.pod, "link")
            pinged = await asyncio.to_thread(
                subprocess.run,
                in_ns(topo.peer, ["/usr/bin/python3", "-c", ICMP_ECHO, POD_IP]),
                capture_output=True, text=True, timeout=90, check=False,
            )  # fmt: skip
            assert pinged.stdout.strip() == f"reply from {POD_IP}", pinged.stdout + pinged.stderr
            await daemon.task.Kill(shim_pb2.KillRequest(id="pod1", signal=signal.SIGKILL))
            await daemon.task.Wait(shim_pb2.WaitRequest(id="pod1"))
            await daemon.task.Delete(shim_pb2.DeleteRequest(id="pod1"))
        assert TAP_NAME not in ip("-n", topo.pod, "link")
        qdiscs = subprocess.run(
            ["tc", "-n", topo.pod, "qdisc", "show", "dev", "eth0"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        assert "ingress" not in qdiscs
        assert qemus_under(sockets) == []


def container_bundle(folder: Path, image: str, args: list[str]) -> Path:
    """A workload container's bundle as CRI writes it (trimmed), in sandbox pod1."""
    bundle = folder / "bundles" / "app"
    bundle.mkdir(parents=True)
    spec = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
        ],
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "pod1",
            "io.kubernetes.cri.image-name": image,
        },
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                                 {"type": "mount"}]},
    }  # fmt: skip
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


async def test_workload_container_output_reaches_containerds_fifo(
    guest_image: GuestImage, sockets: Path, registry: tuple[Registry, str]
) -> None:
    """The pod's workload container: its image pulled in the guest from a registry on
    the pod network, its output through the FIFO containerd hands over, its exit
    status and events as CRI expects them."""
    require_programs("ip", "tc")
    reg, digest = registry
    host = f"{PEER_IP}:{REGISTRY_PORT}"
    data = {
        document.POLICY_NAME: NETWORK_POLICY,
        "imagepull.toml": f'[registries."{host}"]\ninsecure = true\n',
    }
    initdata = {INITDATA_ANNOTATION: codec.encode_annotation(document.create(data, "sha384").raw)}
    port = int(reg.host.rsplit(":", 1)[1])
    with (
        pod_topology() as topo,
        Forward(topo.path(topo.peer), (PEER_IP, REGISTRY_PORT), ("127.0.0.1", port)),
    ):
        pause = pause_bundle(sockets, initdata, netns=topo.path(topo.pod))
        app = container_bundle(
            sockets, f"{host}/test/busybox@{digest}",
            ["/bin/sh", "-c", "echo hello from the workload; exit 3"],
        )  # fmt: skip
        fifo = sockets / "app-stdout"
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            async with running(sockets, PodVmBackend()) as daemon:
                write_config(guest_image, daemon.config_path)
                for task_id, bundle in (("pod1", pause), ("app", app)):
                    await daemon.register(task_id)
                    await daemon.task.Create(
                        shim_pb2.CreateTaskRequest(
                            id=task_id, bundle=str(bundle), options=daemon.options(),
                            stdout=str(fifo) if task_id == "app" else "",
                        ),
                        timeout=600,
                    )  # fmt: skip
                    await daemon.task.Start(shim_pb2.StartRequest(id=task_id))
                waited = await daemon.task.Wait(shim_pb2.WaitRequest(id="app"))
                assert waited.exit_status == 3
                await daemon.task.Delete(shim_pb2.DeleteRequest(id="app"))
                await daemon.task.Kill(shim_pb2.KillRequest(id="pod1", signal=signal.SIGKILL))
                await daemon.task.Wait(shim_pb2.WaitRequest(id="pod1"))
                await daemon.task.Delete(shim_pb2.DeleteRequest(id="pod1"))
                envelopes = await daemon.sink.wait_for(8)
            assert os.read(reader, 4096) == b"hello from the workload\n"
        finally:
            os.close(reader)
    by_topic = {topic: kind for kind, topic in TOPICS.items()}
    app_events = [
        e.topic
        for e in envelopes
        if by_topic[e.topic].FromString(e.event.value).container_id == "app"  # type: ignore[attr-defined]
    ]
    assert app_events == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    assert qemus_under(sockets) == []
