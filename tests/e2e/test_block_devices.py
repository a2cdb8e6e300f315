"""Issue 15's must-show for block devices, as a kubelet drives them through containerd
1.6's CRI (``volumeDevices``: CRI ``Device`` entries): two loop devices on the host,
one at ``/dev/image_store`` (the pod's secure image store), one a plain block volume.

- The workload image (busybox plus a layer holding a marker string) is pulled onto
  the encrypted store: the guest's log says the store is on that disk, and on the
  host the backing file is LUKS2 with hmac-sha256 integrity, holds at least the
  image's bytes beyond its header, and the marker appears nowhere in it.
- The host had prepared that file with a LUKS header under a key it knows: the guest
  formatted afresh, and the host's key no longer opens it.
- The second device reaches the container as a block device node it reads (what the
  host wrote) and writes (the host reads it back).
- A character device (``/dev/null`` as a volumeDevice) fails CreateContainer naming it.
- After the container's removal QEMU no longer holds the block volume (the store stays
  for the pod); after the pod nothing of it is left on the host, the loops detach.
- A store too small fails the pod's first container naming the device and the step,
  with nothing pulled into RAM instead.
- Across a daemon SIGKILL, the next daemon detaches and attaches block volumes through
  a QMP session of its own.
- Bytes of the store flipped under the running pod: the guest's direct reads fail
  (EILSEQ), never return altered data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from api.containerd.cri.runtime.v1 import api_pb2
from devkit import ocibuild as ob
from devkit.cri import PodSpec, read_log
from devkit.crinode import REGISTRY_HOST, CriNode, cri_node
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]

INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
POD_TIMEOUT = 900.0  # a VM boot under TCG on a loaded machine, the store's format, the pull
ALLOW_ALL = "package agent_policy\n\ndefault AllowRequestsFailingPolicy := true\n"
STORE_BYTES = 256 << 20
DATA_BYTES = 16 << 20
HOST_KEY = b"the host knows this key"
HOST_DATA = b"written by the host\n"
GUEST_DATA = b"written by the guest"
APPLETS = ("sh", "echo", "cat", "dd", "head", "sleep", "sync", "true", "ls")
MAIN = f"""
echo "marker $(cat /marker.txt | head -c 40)"
[ -b /dev/image_store ] && echo "store is a block device"
[ -b /dev/data ] && echo "data is a block device"
echo "data read $(head -c {len(HOST_DATA) - 1} /dev/data)"
printf '{GUEST_DATA.decode()}' | dd of=/dev/data bs=4096 seek=1 conv=notrunc,fsync 2>/dev/null
sync
echo "data back $(dd if=/dev/data bs=4096 skip=1 count=1 2>/dev/null | head -c {len(GUEST_DATA)})"
echo done
sleep 3600
"""


def run(*argv: str, data: bytes | None = None, check: bool = True) -> str:
    done = subprocess.run(
        argv, input=data, capture_output=True, timeout=120, check=False
    )  # fmt: skip
    if check and done.returncode:
        raise AssertionError(f"{argv}: exit {done.returncode}: {done.stderr.decode()}")
    return done.stdout.decode()


def marker_image(marker: str) -> ob.Image:
    """busybox (a few applets) and a second layer with ``/marker.txt``."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    entries = [ob.directory("bin"), ob.file("bin/busybox", busybox, 0o755)]
    entries += [ob.symlink(f"bin/{name}", "busybox") for name in APPLETS]
    entries += [ob.directory(d) for d in ("etc", "proc", "sys", "dev", "tmp")]
    text = (marker + "\n").encode() * 4096  # 1+ MiB of it, unpacked on the store
    marked = ob.layer_tar([ob.file("marker.txt", text)])
    layers = [ob.Layer(ob.layer_tar(entries)), ob.Layer(marked)]
    return ob.build_image(layers)


@pytest.fixture(scope="module")
def node(guest_image: GuestImage) -> Iterator[CriNode]:
    require_programs("containerd", "ip", "nsenter", "docker-registry", "busybox", "losetup",
                     "cryptsetup")  # fmt: skip
    with cri_node(guest_image) as crinode:
        yield crinode


@pytest.fixture
def loops() -> Iterator[tuple[Path, Path, Path, Path]]:
    """(store file, store loop device, data file, data loop device), detached after."""
    with tempfile.TemporaryDirectory(prefix="blockdev-") as tmp:
        store, data = Path(tmp) / "store.img", Path(tmp) / "data.img"
        store.write_bytes(b"")
        os.truncate(store, STORE_BYTES)
        with data.open("wb") as f:
            f.write(HOST_DATA)
            f.truncate(DATA_BYTES)
        # The host prepares a LUKS header under a key it knows: the guest must not use it.
        run("cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
            "--pbkdf-force-iterations", "1000", "--key-file", "-", str(store),
            data=HOST_KEY)  # fmt: skip
        devices: list[Path] = []
        try:
            for backing in (store, data):
                devices.append(Path(run("losetup", "-f", "--show", str(backing)).strip()))
            yield store, devices[0], data, devices[1]
        finally:
            for device in devices:
                run("losetup", "-d", str(device), check=False)


def qemu_pids(node: CriNode) -> list[int]:
    return [int(line.split()[0]) for line in node.qemus()]


def held_by_qemu(node: CriNode, device: Path) -> bool:
    for pid in qemu_pids(node):
        with_fds = Path(f"/proc/{pid}/fd")
        try:
            if any(os.path.realpath(fd) == str(device) for fd in with_fds.iterdir()):
                return True
        except OSError:
            continue
    return False


def create(
    node: CriNode, pod_id: str, pod: PodSpec, name: str, image: str,
    devices: list[api_pb2.Device],
) -> str:  # fmt: skip
    """CRI CreateContainer as the kubelet sends it for ``volumeDevices``."""
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        command=["sh", "-c", MAIN],
        log_path=f"{name}.log",
        devices=devices,
    )
    request = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=config, sandbox_config=pod.config()
    )
    reply = node.cri.call("CreateContainer", request, api_pb2.CreateContainerResponse, POD_TIMEOUT)
    return reply.container_id


def wait_line(log: Path, wanted: str, timeout: float) -> list[str]:
    started = time.monotonic()
    while True:
        lines = [e.text for e in read_log(log)] if log.exists() else []
        if wanted in lines:
            return lines
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{wanted!r} not in {log}: {lines[-20:]}")
        time.sleep(0.5)


def console_logs(node: CriNode, skip: frozenset[Path] = frozenset()) -> str:
    """The pod-VMs' consoles (the guest agent logs there), but those in ``skip``."""
    found = set(node.node.root.rglob("console.log")) - skip
    return "\n".join(p.read_text(errors="replace") for p in sorted(found))


def test_image_store_and_block_volume_through_cri(
    node: CriNode, loops: tuple[Path, Path, Path, Path]
) -> None:
    store_file, store_dev, data_file, data_dev = loops
    started = time.monotonic()
    marker = f"contrast-e2e-marker-{uuid.uuid4().hex}"
    image = marker_image(marker)
    digest = node.registry.upload(image.blobs, image.manifest, "test/marker", "v1")
    reference = f"{REGISTRY_HOST}/test/marker@{digest}"
    assert node.cri.pull_image(reference)
    data = {document.POLICY_NAME: ALLOW_ALL, "imagepull.toml": node.puller_settings()}
    annotations = {INITDATA: codec.encode_annotation(document.create(data, "sha384").raw)}
    pod = node.pod("blockdev", annotations)
    pod_id = node.cri.run_pod_spec(pod, node.handler, timeout=POD_TIMEOUT).pod_sandbox_id
    booted = time.monotonic()
    try:
        # A character device is refused, naming it; nothing of it reaches the VM.
        null = [api_pb2.Device(container_path="/dev/mynull", host_path="/dev/null",
                               permissions="rwm")]  # fmt: skip
        with pytest.raises(grpc.RpcError) as refused:
            cid = create(node, pod_id, pod, "chardev", reference, null)
            node.cri.start_container(cid, timeout=POD_TIMEOUT)
        assert "/dev/mynull" in (refused.value.details() or "")
        assert "character device" in (refused.value.details() or "")

        devices = [
            api_pb2.Device(container_path="/dev/image_store", host_path=str(store_dev),
                           permissions="rwm"),
            api_pb2.Device(container_path="/dev/data", host_path=str(data_dev),
                           permissions="rwm"),
        ]  # fmt: skip
        cid = create(node, pod_id, pod, "main", reference, devices)
        node.cri.start_container(cid, timeout=POD_TIMEOUT)
        log = Path(pod.log_directory) / "main.log"
        lines = wait_line(log, "done", POD_TIMEOUT)
        ran = time.monotonic()
        assert f"marker {marker[:40]}" in lines, lines
        assert "store is a block device" in lines
        assert "data is a block device" in lines
        assert f"data read {HOST_DATA.decode().strip()}" in lines, lines
        assert f"data back {GUEST_DATA.decode()}" in lines, lines
        assert held_by_qemu(node, store_dev) and held_by_qemu(node, data_dev)

        # The guest wrote through to the host's device.
        with data_file.open("rb") as f:
            f.seek(4096)
            assert f.read(len(GUEST_DATA)) == GUEST_DATA
        # The store: LUKS2 with hmac-sha256 integrity, formatted in the guest.
        dump = run("cryptsetup", "luksDump", str(store_file))
        assert "Version:       \t2" in dump, dump
        assert "hmac(sha256)" in dump, dump
        assert "aes-xts-plain64" in dump, dump
        # The host's key no longer opens it: the guest never used the host's header.
        opened = subprocess.run(
            ["cryptsetup", "open", "--test-passphrase", "--key-file", "-", str(store_file)],
            input=HOST_KEY, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        assert opened.returncode != 0, "the host's key still opens the store"
        # The image is on the disk (its bytes written there), and only as ciphertext.
        raw = store_file.read_bytes()
        assert marker.encode() not in raw
        payload = raw[16 << 20 :]  # past the LUKS2 header and keyslots
        written = sum(
            1 for i in range(0, len(payload), 4096) if payload[i : i + 4096].count(0) < 4096
        )
        layer_bytes = sum(len(blob) for _, blob in image.layers)
        assert written * 4096 > layer_bytes, (written, layer_bytes)
        # The guest agent's log (on the console): the store mounted, then the pull.
        guest_log = console_logs(node).splitlines()
        mounted = [i for i, x in enumerate(guest_log) if "image store on /dev/vd" in x]
        pulled = [i for i, x in enumerate(guest_log) if f"pulled {reference}" in x]
        assert mounted and pulled and mounted[0] < pulled[0], guest_log[-40:]
        assert "hmac-sha256, ext4, mounted at /run/contrast/images" in guest_log[mounted[0]]
        print(f"\nguest: {guest_log[mounted[0]].strip()}\nguest: {guest_log[pulled[0]].strip()}")
        print(f"store: {written * 4096 >> 20} MiB written beyond the header; "
              f"boot {booted - started:.1f} s, container {ran - booted:.1f} s")  # fmt: skip

        # Removal detaches the block volume; the image store stays for the pod's other
        # containers (their images are on it) until the teardown.
        node.cri.stop_container(cid, grace=1)
        node.cri.remove_container(cid)
        assert not held_by_qemu(node, data_dev)
        assert held_by_qemu(node, store_dev)
    finally:
        node.cri.stop_pod(pod_id)
        node.cri.remove_pod(pod_id)
    assert node.leftovers() == []
    for device in (store_dev, data_dev):
        holders = list(Path(f"/sys/block/{device.name}/holders").iterdir())
        assert holders == [], holders
    print(f"test took {time.monotonic() - started:.1f} s")


def test_an_image_store_too_small_fails_the_container_naming_it(node: CriNode) -> None:
    """A store that cannot be formatted fails the container with the device and the
    step; the image is not pulled into RAM instead."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="blockdev-") as tmp:
        small = Path(tmp) / "small.img"
        small.write_bytes(b"")
        os.truncate(small, 32 << 20)  # the store needs 64 MiB
        device = Path(run("losetup", "-f", "--show", str(small)).strip())
        try:
            assert node.cri.pull_image(node.image)
            data = {document.POLICY_NAME: ALLOW_ALL, "imagepull.toml": node.puller_settings()}
            annotations = {INITDATA: codec.encode_annotation(document.create(data, "sha384").raw)}
            pod = node.pod("smallstore", annotations)
            earlier = frozenset(node.node.root.rglob("console.log"))
            pod_id = node.cri.run_pod_spec(pod, node.handler, timeout=POD_TIMEOUT).pod_sandbox_id
            try:
                store = [api_pb2.Device(container_path="/dev/image_store",
                                        host_path=str(device), permissions="rwm")]  # fmt: skip
                with pytest.raises(grpc.RpcError) as failed:
                    cid = create(node, pod_id, pod, "main", node.image, store)
                    node.cri.start_container(cid, timeout=POD_TIMEOUT)
                details = failed.value.details() or ""
                assert "secure image store on /dev/image_store" in details, details
                assert "size check failed" in details, details
                guest_log = console_logs(node, earlier)
                assert "size check failed" in guest_log  # this pod's console, read
                pulls = [x for x in guest_log.splitlines() if "pulled " in x]
                assert pulls == [], pulls  # no fallback to the RAM store
            finally:
                node.cri.stop_pod(pod_id)
                node.cri.remove_pod(pod_id)
            assert node.leftovers() == []
            assert not held_by_qemu(node, device)
        finally:
            run("losetup", "-d", str(device), check=False)
    print(f"\ntest took {time.monotonic() - started:.1f} s")


READER = f"""
[ -b /dev/data ] && echo "data is a block device"
echo "data read $(head -c {len(HOST_DATA) - 1} /dev/data)"
echo done
sleep 3600
"""


def test_block_volumes_across_a_daemon_crash(node: CriNode) -> None:
    """The daemon SIGKILLed while a container has a block volume: the next daemon
    (started by the relay) detaches it at the container's removal through a QMP
    session of its own, from the sandbox's record, and attaches a new container's."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="blockdev-") as tmp:
        loops: list[Path] = []
        try:
            for name in ("a.img", "b.img"):
                backing = Path(tmp) / name
                with backing.open("wb") as f:
                    f.write(HOST_DATA)
                    f.truncate(DATA_BYTES)
                loops.append(Path(run("losetup", "-f", "--show", str(backing)).strip()))
            assert node.cri.pull_image(node.image)
            data = {document.POLICY_NAME: ALLOW_ALL, "imagepull.toml": node.puller_settings()}
            annotations = {INITDATA: codec.encode_annotation(document.create(data, "sha384").raw)}
            pod = node.pod("crash", annotations)
            pod_id = node.cri.run_pod_spec(pod, node.handler, timeout=POD_TIMEOUT).pod_sandbox_id
            try:
                first = create_reader(node, pod_id, pod, "first", loops[0])
                wait_line(Path(pod.log_directory) / "first.log", "done", POD_TIMEOUT)
                assert held_by_qemu(node, loops[0])
                killed = node.node.daemon_pid()
                assert killed is not None
                os.kill(killed, signal.SIGKILL)
                deadline = time.monotonic() + POD_TIMEOUT
                while node.node.daemon_pid() in (None, killed) and time.monotonic() < deadline:
                    time.sleep(0.5)  # the relay starts the next one
                assert node.node.daemon_pid() not in (None, killed), node.node.daemon_log()[-3000:]
                # The next daemon detaches the first container's volume at its removal...
                node.cri.stop_container(first, grace=1)
                node.cri.remove_container(first)
                assert not held_by_qemu(node, loops[0]), node.node.daemon_log()[-3000:]
                # ... and attaches a new container's on a free port.
                second = create_reader(node, pod_id, pod, "second", loops[1])
                lines = wait_line(Path(pod.log_directory) / "second.log", "done", POD_TIMEOUT)
                assert f"data read {HOST_DATA.decode().strip()}" in lines, lines
                assert held_by_qemu(node, loops[1])
                node.cri.stop_container(second, grace=1)
                node.cri.remove_container(second)
                assert not held_by_qemu(node, loops[1])
            finally:
                node.cri.stop_pod(pod_id)
                node.cri.remove_pod(pod_id)
            assert node.leftovers() == []
        finally:
            for device in loops:
                run("losetup", "-d", str(device), check=False)
    print(f"\ntest took {time.monotonic() - started:.1f} s")


def create_reader(node: CriNode, pod_id: str, pod: PodSpec, name: str, device: Path) -> str:
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=node.image),
        command=["sh", "-c", READER],
        log_path=f"{name}.log",
        devices=[
            api_pb2.Device(container_path="/dev/data", host_path=str(device), permissions="rw")
        ],
    )
    request = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=config, sandbox_config=pod.config()
    )
    reply = node.cri.call("CreateContainer", request, api_pb2.CreateContainerResponse, POD_TIMEOUT)
    node.cri.start_container(reply.container_id, timeout=POD_TIMEOUT)
    return reply.container_id


SLEEPER = "echo done\nsleep 3600\n"
DIRECT_READ = ["dd", "if=/marker.txt", "of=/dev/stdout", "bs=4096", "iflag=direct"]


def test_altered_store_blocks_fail_the_guests_reads(node: CriNode) -> None:
    """Bytes of the store's backing file flipped under the running pod: the guest's
    reads of those blocks (O_DIRECT, past its page cache) fail, never return the
    altered data, and the exec's error says so; dm-crypt logs the integrity error."""
    started = time.monotonic()
    marker = f"contrast-e2e-integrity-{uuid.uuid4().hex}"
    image = marker_image(marker)
    digest = node.registry.upload(image.blobs, image.manifest, "test/integrity", "v1")
    reference = f"{REGISTRY_HOST}/test/integrity@{digest}"
    with tempfile.TemporaryDirectory(prefix="blockdev-") as tmp:
        backing = Path(tmp) / "store.img"
        backing.write_bytes(b"")
        os.truncate(backing, STORE_BYTES)
        device = Path(run("losetup", "-f", "--show", str(backing)).strip())
        try:
            assert node.cri.pull_image(reference)
            data = {document.POLICY_NAME: ALLOW_ALL, "imagepull.toml": node.puller_settings()}
            annotations = {INITDATA: codec.encode_annotation(document.create(data, "sha384").raw)}
            pod = node.pod("integrity", annotations)
            earlier = frozenset(node.node.root.rglob("console.log"))
            pod_id = node.cri.run_pod_spec(pod, node.handler, timeout=POD_TIMEOUT).pod_sandbox_id
            try:
                config = api_pb2.ContainerConfig(
                    metadata=api_pb2.ContainerMetadata(name="main"),
                    image=api_pb2.ImageSpec(image=reference),
                    command=["sh", "-c", SLEEPER],
                    log_path="main.log",
                    devices=[api_pb2.Device(container_path="/dev/image_store",
                                            host_path=str(device), permissions="rwm")],
                )  # fmt: skip
                request = api_pb2.CreateContainerRequest(
                    pod_sandbox_id=pod_id, config=config, sandbox_config=pod.config()
                )
                cid = node.cri.call(
                    "CreateContainer", request, api_pb2.CreateContainerResponse, POD_TIMEOUT
                ).container_id
                node.cri.start_container(cid, timeout=POD_TIMEOUT)
                wait_line(Path(pod.log_directory) / "main.log", "done", POD_TIMEOUT)
                # Direct reads reach the disk and verify while it is intact.
                intact = node.cri.exec_sync(cid, DIRECT_READ, timeout=300)
                assert intact.exit_code == 0, intact.stderr
                assert marker.encode() in intact.stdout
                # The host flips a byte in every written sector past the LUKS2 header.
                flipped = 0
                with backing.open("r+b") as f:
                    for offset in range(16 << 20, STORE_BYTES, 4096):
                        f.seek(offset)
                        sector = f.read(4096)
                        if sector.count(0) < 4096:
                            f.seek(offset + 100)
                            f.write(bytes([sector[100] ^ 0xFF]))
                            flipped += 1
                    f.flush()
                    os.fsync(f.fileno())
                assert flipped > 0
                altered = node.cri.exec_sync(cid, DIRECT_READ, timeout=300)
                error = altered.stderr.decode(errors="replace")
                assert altered.exit_code != 0, error
                assert altered.stdout == b"", altered.stdout[:200]
                assert any(os.strerror(e) in error for e in (5, 84)), error  # EIO, EILSEQ
                guest_log = console_logs(node, earlier)
                assert "INTEGRITY AEAD ERROR" in guest_log, guest_log[-3000:]
                print(f"\n{flipped} sectors flipped; the guest's read: {error.strip()}")
            finally:
                node.cri.stop_pod(pod_id)
                node.cri.remove_pod(pod_id)
            assert node.leftovers() == []
        finally:
            run("losetup", "-d", str(device), check=False)
    print(f"test took {time.monotonic() - started:.1f} s")
