"""The secure image store and block-device hotplug in a booted pod-VM (TCG).

One VM for the module. Host loop devices (``losetup``) over sparse files are attached
to the running VM over QMP (agent.vm.hotplug) and found by the guest by serial; the
guest formats one as the image store (``api.SecureMountService/SecureMount``, which
the agent serves behind its policy) and pulls an image onto it. On the host, the
backing file is inspected and tampered with:

- ``cryptsetup luksDump`` shows LUKS2, aes-xts-plain64, hmac(sha256), 4096-byte
  sectors; the header the host wrote first, with a key it knows, is gone;
- a marker stored in one of the image's layers appears nowhere in the raw file;
- bytes flipped under the guest make its reads of those blocks fail (EILSEQ or EIO);
- a device too small fails naming the device and the step; a character device, a
  regular file and a missing path are refused before QEMU hears of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import ttrpc
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm import console, hotplug
from agent.vm.argv import hotplug_port
from agent.vm.errors import HotplugError
from agent.vm.manager import VM
from agent.vm.qmp import Monitor
from api.guest import securemount_pb2
from api.kata import agent_pb2, types_pb2
from devkit import ocibuild as ob
from devkit.registry import Registry
from guest.image.manifest import GuestImage
from tests.conftest import require_programs
from tests.integration.guestagent import requests as rq
from tests.integration.guestagent.conftest import AGENT_SERVICE
from tests.integration.vm.conftest import (
    ALLOW_ALL,
    guest_image,
    pod_vm_config,
    registry_initdata,
)

__all__ = ["guest_image"]  # fixtures used here

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="module")]

SECURE_MOUNT = securemount_pb2.DESCRIPTOR.services_by_name["SecureMountService"]
BOOT_TIMEOUT = 300.0
MAC = "52:54:00:12:34:57"
STORE_BYTES = 256 << 20
SMALL_BYTES = 32 << 20
BLOCK = 4096
# In a layer of the pulled image: must never reach the disk in the clear.
MARKER = b"contrast-securemount-marker-7f3a9c"
HOST_KEY = b"the host knows this key, the guest must never use its header\n"


def run(
    *args: str, data: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        args, input=data, capture_output=True, timeout=120, check=check,
        stdin=None if data is not None else subprocess.DEVNULL,
    )  # fmt: skip


def image_with_marker() -> ob.Image:
    """busybox (one layer) plus a layer holding the marker, many times over."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    entries = [ob.directory("bin"), ob.file("bin/busybox", busybox, 0o755)]
    entries += [ob.symlink(f"bin/{n}", "busybox") for n in ("sh", "dd", "sleep", "cat", "echo")]
    entries += [ob.directory(d) for d in ("etc", "proc", "sys", "dev", "tmp")]
    marked = [ob.directory("data"), ob.file("data/marker.txt", (MARKER + b"\n") * 2000)]
    return ob.build_image([ob.Layer(ob.layer_tar(entries)), ob.Layer(ob.layer_tar(marked))])


@dataclass
class Node:
    vm: VM
    agent: Any  # ttrpc stub of AgentService
    mount: Any  # ttrpc stub of SecureMountService
    client: AgentClient
    image: str
    store_file: Path
    store_loop: Path
    small_loop: Path
    work: Path


def losetup(path: Path) -> Path:
    return Path(run("losetup", "--find", "--show", str(path)).stdout.decode().strip())


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("loop devices and QEMU need root")
    require_programs("losetup", "cryptsetup", "docker-registry", "busybox")
    # Short, under /tmp: unix socket paths are limited to 107 bytes.
    directory = Path(os.path.realpath("/tmp")) / f"sm-{os.getpid()}"
    directory.mkdir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(guest_image: GuestImage, work: Path) -> AsyncIterator[Node]:
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(Registry(work / "registry"))
        image = image_with_marker()
        digest = registry.upload(image.blobs, image.manifest, "test/marked", "v1")
        guest_registry = f"10.0.2.2:{registry.port}"

        store_file, small_file = work / "store.img", work / "small.img"
        for path, size in ((store_file, STORE_BYTES), (small_file, SMALL_BYTES)):
            with path.open("wb") as f:
                f.truncate(size)
        # The host prepares a LUKS2 header with a key it knows: the guest must not use it.
        run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
            "--pbkdf-force-iterations", "1000", "--key-file", "-", str(store_file),
            data=HOST_KEY)  # fmt: skip
        loops = []
        for path in (store_file, small_file):
            loops.append(losetup(path))
            stack.callback(run, "losetup", "--detach", str(loops[-1]), check=False)

        config = pod_vm_config(
            guest_image, work, "securemount", registry_initdata(ALLOW_ALL, guest_registry), MAC
        )
        vm = await VM.launch(config)
        try:
            await vm.wait_ready(BOOT_TIMEOUT)
            client = await connect(config.transport)
            try:
                yield Node(
                    vm, ttrpc.ServiceStub(client, AGENT_SERVICE),
                    ttrpc.ServiceStub(client, SECURE_MOUNT), AgentClient(client),
                    f"{guest_registry}/test/marked@{digest}", store_file, loops[0], loops[1],
                    work,
                )  # fmt: skip
            finally:
                await client.close()
        finally:
            print(f"--- pod-VM console tail ---\n{console.tail(config.console_log, 16384)}")
            await vm.stop()


async def guest_disk(node: Node, serial: str, present: bool = True) -> tuple[str, str]:
    """(name, major:minor) of the guest's disk with ``serial``, once it is (not) there."""
    facts: dict[str, str] = {}
    for _ in range(150):
        facts = AgentClient.features(await node.client.guest_details())
        found = [k.removeprefix("block.") for k, v in facts.items()
                 if k.startswith("block.") and v.startswith(f"serial:{serial},")]  # fmt: skip
        if bool(found) == present:
            return (found[0], facts[f"block.{found[0]}.dev"]) if found else ("", "")
        await asyncio.sleep(0.2)
    raise AssertionError(f"disk {serial} {'never appeared' if present else 'stayed'}: {facts}")


def qemu_holds(node: Node, device: Path) -> bool:
    fds = Path(f"/proc/{node.vm.process.pid}/fd")
    return any(os.path.realpath(fd) == str(device) for fd in fds.iterdir())


def request(device_id: str, mount_point: str = "/run/contrast/images") -> Any:
    return securemount_pb2.SecureMountRequest(
        volume_type="block-device",
        options={"deviceId": device_id, "encryptionType": "luks2", "dataIntegrity": "true"},
        mount_point=mount_point,
    )


async def test_hotplug_refuses_what_is_not_a_block_device(node: Node) -> None:
    before = await node.vm.monitor.peripherals()
    regular = node.work / "regular.img"
    regular.write_bytes(bytes(1 << 20))
    cases = [(Path("/dev/null"), "is a character device"),
             (regular, "is a regular file"), (node.work / "missing", "No such file")]  # fmt: skip
    for path, reason in cases:
        with pytest.raises(HotplugError, match=reason) as refused:
            await hotplug.attach(node.vm, hotplug.HostBlockDevice("bad", path, "bad"))
        assert str(path) in str(refused.value)
    assert await node.vm.monitor.peripherals() == before


async def test_too_small_device_fails_naming_device_and_step(node: Node) -> None:
    await hotplug.attach(node.vm, hotplug.HostBlockDevice("small", node.small_loop, "sm-small"))
    name, dev = await guest_disk(node, "sm-small")
    assert qemu_holds(node, node.small_loop)
    with pytest.raises(ttrpc.FailedPrecondition) as failed:
        await node.mount.SecureMount(request(dev), timeout=120)
    message = failed.value.message
    assert f"/dev/{name} ({dev})" in message
    assert "size check failed" in message
    assert f"{SMALL_BYTES} bytes" in message

    await hotplug.detach(node.vm, "small")
    await guest_disk(node, "sm-small", present=False)
    assert not qemu_holds(node, node.small_loop)  # nothing of it left in QEMU


async def test_the_guests_own_disks_are_refused(node: Node) -> None:
    name, dev = await guest_disk(node, "contrast-root")  # attached read-only
    read_only = rf"/dev/{name} \({dev}\): device check failed: it is read-only"
    with pytest.raises(ttrpc.FailedPrecondition, match=read_only):
        await node.mount.SecureMount(request(dev), timeout=60)
    name, dev = await guest_disk(node, "initdata")  # read-only, and 512 bytes
    with pytest.raises(ttrpc.FailedPrecondition, match=rf"/dev/{name} \({dev}\): size check"):
        await node.mount.SecureMount(request(dev), timeout=60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mounted(node: Node) -> tuple[str, str, Any]:
    assert run("cryptsetup", "open", "--test-passphrase", "--key-file", "-",
               str(node.store_file), data=HOST_KEY, check=False).returncode == 0  # fmt: skip
    await hotplug.attach(node.vm, hotplug.HostBlockDevice("store", node.store_loop, "image-store"))
    name, dev = await guest_disk(node, "image-store")
    reply = await node.mount.SecureMount(request(dev), timeout=600)
    return name, dev, reply


async def test_store_is_formatted_afresh_with_integrity(
    node: Node, mounted: tuple[str, str, Any]
) -> None:
    _, dev, reply = mounted
    assert reply.mount_path == "/run/contrast/images"
    dump = run("cryptsetup", "luksDump", str(node.store_file)).stdout.decode()
    assert "Version:       \t2" in dump
    assert "cipher: aes-xts-plain64" in dump
    assert "integrity: hmac(sha256)" in dump
    assert "sector: 4096 [bytes]" in dump
    # Its aes is the CPU's (AES-NI; TCG's max CPU has it too), loaded for the format.
    facts = AgentClient.features(await node.client.guest_details())
    assert facts["crypto.aes"] == "aes-aesni", facts
    # The host's header (and key) are gone.
    opened = run("cryptsetup", "open", "--test-passphrase", "--key-file", "-",
                 str(node.store_file), data=HOST_KEY, check=False)  # fmt: skip
    assert opened.returncode != 0, opened
    # Asked again for the same device: the mounted store; elsewhere: refused.
    again = await node.mount.SecureMount(request(dev), timeout=60)
    assert again.mount_path == "/run/contrast/images"
    with pytest.raises(ttrpc.InvalidArgument, match="is not the image store"):
        await node.mount.SecureMount(request(dev, "/run/measured-cfg"), timeout=60)


async def read_stream(node: Node, cid: str, exec_id: str, stderr: bool = False) -> bytes:
    call = node.agent.ReadStderr if stderr else node.agent.ReadStdout
    data = b""
    while reply := await call(
        agent_pb2.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=65536), timeout=120
    ):
        if not reply.data:
            return data
        data += reply.data
    return data


async def exec_in(node: Node, exec_id: str, args: list[str]) -> tuple[int, bytes, bytes]:
    await node.agent.ExecProcess(
        agent_pb2.ExecProcessRequest(
            container_id="work", exec_id=exec_id, process=rq.process(args)
        ),
        timeout=120,
    )
    out = await read_stream(node, "work", exec_id)
    err = await read_stream(node, "work", exec_id, stderr=True)
    waited = await node.agent.WaitProcess(
        agent_pb2.WaitProcessRequest(container_id="work", exec_id=exec_id), timeout=300
    )
    return waited.status, out, err


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def workload(node: Node, mounted: tuple[str, str, Any]) -> Node:
    """A long-running container of the marked image, pulled onto the store."""
    await node.agent.UpdateInterface(
        agent_pb2.UpdateInterfaceRequest(interface=types_pb2.Interface(
            name="eth0", hwAddr=MAC, mtu=1500,
            IPAddresses=[types_pb2.IPAddress(address="10.0.2.15", mask="24")])),
        timeout=60,
    )  # fmt: skip
    await node.agent.UpdateRoutes(
        agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(
            Routes=[types_pb2.Route(dest="", gateway="10.0.2.2", device="eth0")])),
        timeout=60,
    )  # fmt: skip
    await node.agent.CreateSandbox(
        agent_pb2.CreateSandboxRequest(hostname="sm-pod", sandbox_id="s"), timeout=60
    )
    await node.agent.CreateContainer(rq.create_pause("pause"), timeout=120)
    await node.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="pause"))
    await node.agent.CreateContainer(
        rq.create_container("work", ["sleep", "100000"], node.image), timeout=300
    )
    await node.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="work"))
    return node


def raw_contains(path: Path, needle: bytes) -> bool:
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
    return False


async def test_pulled_image_is_on_the_encrypted_disk(workload: Node) -> None:
    node = workload
    status, out, _ = await exec_in(node, "marker", ["cat", "/data/marker.txt"])
    assert status == 0
    assert out.count(MARKER) == 2000
    # The layers were written to the disk (its allocated size grew by more than the
    # image), and not in the clear.
    assert os.stat(node.store_file).st_blocks * 512 > 4 << 20
    assert not raw_contains(node.store_file, MARKER)
    assert not raw_contains(node.store_file, b"BusyBox v")
    status, mounts, _ = await exec_in(node, "mounts", ["cat", "/proc/mounts"])
    assert status == 0
    assert b"/run/contrast/images/" in mounts  # the rootfs overlay's layers are on the store


def block_hashes(path: Path) -> list[bytes]:
    hashes = []
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            hashes.append(hashlib.blake2b(block, digest_size=16).digest())
    return hashes


def changed_runs(before: list[bytes], after: list[bytes], minimum: int) -> list[range]:
    """Runs of at least ``minimum`` consecutive changed blocks."""
    runs, start = [], None
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if a != b and start is None:
            start = i
        elif a == b and start is not None:
            if i - start >= minimum:
                runs.append(range(start, i))
            start = None
    if start is not None and len(after) - start >= minimum:
        runs.append(range(start, len(after)))
    return runs


async def test_flipped_bytes_fail_the_guests_reads(workload: Node) -> None:
    node = workload
    before = block_hashes(node.store_file)
    write = ["dd", "if=/dev/zero", "of=/big", "bs=65536", "count=128", "conv=fsync"]
    status, _, err = await exec_in(node, "write", write)
    assert status == 0, err
    read = ["dd", "if=/big", "of=/dev/null", "bs=4096", "iflag=direct"]
    status, _, err = await exec_in(node, "read-ok", read)
    assert status == 0, err
    runs = changed_runs(before, block_hashes(node.store_file), minimum=64)
    # 8 MiB of file data (plus journal-free metadata, smaller runs, left alone).
    assert sum(len(r) for r in runs) >= 2048, runs
    with node.store_file.open("r+b") as f:
        for run_ in runs:
            for block in run_:
                f.seek(block * BLOCK + 123)
                byte = f.read(1)
                f.seek(block * BLOCK + 123)
                f.write(bytes([byte[0] ^ 0xFF]))
    status, out, err = await exec_in(node, "read-bad", read)
    assert status != 0
    # dm-crypt fails the read as a protection error: EILSEQ from this kernel's block
    # layer (BLK_STS_PROTECTION), EIO from others. Never the altered data.
    assert any(os.strerror(e).encode() in err for e in (errno.EIO, errno.EILSEQ)), err
    assert out == b""
    assert "INTEGRITY AEAD ERROR" in console.tail(node.vm.config.console_log, 16384)


async def test_detach_after_a_daemon_restart(node: Node) -> None:
    """A restarted daemon has no VM object: its own QMP session finds what is attached
    (from QEMU, not from state) and detaches it, leaving nothing in QEMU."""
    await hotplug.attach(node.vm, hotplug.HostBlockDevice("again", node.small_loop, "sm-again"))
    await guest_disk(node, "sm-again")
    await node.vm.monitor.close()  # the daemon is gone, and its QMP session with it
    monitor = Monitor("restarted")
    await monitor.connect(node.vm.config.qmp_socket, 15)
    node.vm.monitor = monitor  # the module's teardown stops the VM through it
    assert "again" in await hotplug.attached(monitor)
    await hotplug.detach_on(monitor, "securemount", "again")
    await guest_disk(node, "sm-again", present=False)
    assert not qemu_holds(node, node.small_loop)
    assert "again" not in await hotplug.attached(monitor)
    with pytest.raises(HotplugError, match="no block device again is attached"):
        await hotplug.detach_on(monitor, "securemount", "again")
    # And a new device on a port QEMU shows free (the store keeps its own).
    ports = [hotplug_port(i) for i in range(node.vm.config.hotplug_slots)]
    device = hotplug.HostBlockDevice("later", node.small_loop, "sm-later")
    port = await hotplug.attach_on(monitor, "securemount", device, ports)
    assert port != await monitor.bus_of("store")
    await guest_disk(node, "sm-later")
    assert qemu_holds(node, node.small_loop)
    await hotplug.detach_on(monitor, "securemount", "later")
    await guest_disk(node, "sm-later", present=False)
    assert not qemu_holds(node, node.small_loop)
