"""A container's block devices (OCI ``linux.devices``) attached to its pod-VM.

containerd's CRI puts each CRI ``Device`` (the kubelet's ``volumeDevices``) into the
container's OCI spec as a ``linux.devices`` entry: the path in the container, type
``b``, the host node's major and minor. The host path itself is not in the spec: we
find the node from its number (``/sys/dev/block/MAJ:MIN``, its ``DEVNAME``) and check
it (:mod:`agent.vm.blockdev`: only block devices, opened by us, passed to QEMU by fd).

Every entry is provided or refused naming it, never dropped: a character device, a
FIFO, an entry without a number or a number with no block device behind it fails the
container before anything is attached. Each device is hotplugged as virtio-blk with a
serial derived from the container id and its path (nothing of the spec reaches QMP but
checked numbers), announced in CreateContainer as a Kata ``Device`` (type ``blk``,
``id`` the serial: the guest finds the disk by it, not by a PCI path) and recorded in
``devices.json`` of the sandbox's run directory, so that removal, teardown and a
restarted daemon detach exactly what was attached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.sandbox.errors import BackendError, UnsupportedPodError
from agent.vm import hotplug
from agent.vm.argv import hotplug_port
from agent.vm.config import HostBlockDevice
from agent.vm.errors import QemuError, VMError
from agent.vm.manager import VM
from agent.vm.qmp import Monitor
from api.kata import agent_pb2

log = logging.getLogger(__name__)

STATE_FILE = "devices.json"
# Contrast's contract: the block device at this path is the pod's secure image store.
# Every container of the pod pulls onto it, so it stays attached until the teardown
# (recorded under POD), and a second container naming the same disk shares it.
IMAGE_STORE = "/dev/image_store"
POD = ""
# The Kata agent's driver type of a virtio-blk disk (its DRIVER_BLK_PCI_TYPE).
KATA_BLK = "blk"
DETACH_SECONDS = 30.0


class DeviceError(UnsupportedPodError):
    """A container's device cannot be given to the pod-VM; names the device."""


@dataclass(frozen=True)
class Requested:
    """One ``linux.devices`` entry of type ``b``, its host node found."""

    container_path: str
    major: int
    minor: int
    host_path: Path
    serial: str

    @property
    def id(self) -> str:
        return self.serial


def _sys_name(major: int, minor: int, sys: Path) -> str:
    try:
        uevent = (sys / "dev" / "block" / f"{major}:{minor}" / "uevent").read_text()
    except OSError as err:
        raise DeviceError(f"no block device {major}:{minor} on the host ({err.strerror})") from err
    for line in uevent.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return value
    raise DeviceError(f"block device {major}:{minor}: its uevent names no DEVNAME")


def host_node(major: int, minor: int, sys: Path = Path("/sys"), dev: Path = Path("/dev")) -> Path:
    """The host's device node of block device ``major:minor``, checked to be it.

    Raises DeviceError when there is none, or the node is not that block device.
    """
    name = _sys_name(major, minor, sys)
    node = dev / name
    if ".." in Path(name).parts:
        raise DeviceError(f"block device {major}:{minor}: DEVNAME {name!r} is not allowed")
    try:
        st = node.stat()
    except OSError as err:
        raise DeviceError(f"block device {major}:{minor}: {node}: {err.strerror}") from err
    if not stat.S_ISBLK(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (
        major,
        minor,
    ):
        raise DeviceError(f"block device {major}:{minor}: {node} is not that block device")
    return node


def serial_of(container_id: str, container_path: str) -> str:
    """The disk's serial (and QEMU id): 20 characters from the container and path."""
    digest = hashlib.sha256(f"{container_id}\0{container_path}".encode()).hexdigest()
    return f"ctr-{digest[:16]}"


def store_serial(major: int, minor: int) -> str:
    """The image store's serial: the pod's, from the host disk (shared by containers)."""
    digest = hashlib.sha256(f"{IMAGE_STORE}\0{major}:{minor}".encode()).hexdigest()
    return f"pod-{digest[:16]}"


def _number(entry: dict[str, Any], key: str, path: str) -> int:
    value = entry.get(key)
    if type(value) is not int or value < 0:
        raise DeviceError(f"device {path}: {key} {value!r} is not a device number")
    return value


def requested(
    container_id: str, oci: dict[str, Any], sys: Path = Path("/sys"), dev: Path = Path("/dev")
) -> list[Requested]:
    """The block devices of the container's OCI spec, each host node found.

    Raises DeviceError naming the first entry that is not a block device (type ``c``,
    ``u``, ``p``) or has no block device behind its number.
    """
    entries = (oci.get("linux") or {}).get("devices") or []
    found: list[Requested] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            raise DeviceError(f"linux.devices entry {entry!r:.100} is not an object")
        path = entry.get("path")
        if not isinstance(path, str) or not path.startswith("/dev/") or ".." in path.split("/"):
            raise DeviceError(f"device path {path!r:.100}: not a path under /dev")
        kind = entry.get("type")
        if kind != "b":
            what = {"c": "a character device", "u": "a character device", "p": "a FIFO"}
            raise DeviceError(
                f"device {path}: {what.get(str(kind), f'type {kind!r}')} is not supported: "
                "only block devices reach the pod-VM"
            )
        if path in seen:
            raise DeviceError(f"device {path}: named twice")
        seen.add(path)
        major, minor = _number(entry, "major", path), _number(entry, "minor", path)
        try:
            node = host_node(major, minor, sys, dev)
        except DeviceError as err:
            raise DeviceError(f"device {path}: {err}") from err
        store = path == IMAGE_STORE
        serial = store_serial(major, minor) if store else serial_of(container_id, path)
        found.append(Requested(path, major, minor, node, serial))
    return found


class Attacher(Protocol):
    """How a pod-VM gets and loses a host block device."""

    async def attach(self, device: HostBlockDevice) -> None: ...

    async def detach(self, device_id: str) -> None: ...

    async def close(self) -> None: ...


class LaunchedVM:
    """The VM this daemon launched (its QMP session and port bookkeeping)."""

    def __init__(self, vm: VM) -> None:
        self.vm = vm

    async def attach(self, device: HostBlockDevice) -> None:
        await hotplug.attach(self.vm, device)

    async def detach(self, device_id: str) -> None:
        await hotplug.detach(self.vm, device_id, DETACH_SECONDS)

    async def close(self) -> None:
        return None

    async def monitor(self) -> Monitor:
        """Its QMP session (for :mod:`agent.sandbox.outputkeep`)."""
        return self.vm.monitor


class ReattachedVM:
    """A VM of an earlier daemon: a QMP session of our own, opened at first use."""

    def __init__(self, qmp_socket: Path, name: str, slots: int = 4) -> None:
        self.qmp_socket = qmp_socket
        self.name = name
        self.ports = [hotplug_port(i) for i in range(slots)]
        self._monitor: Monitor | None = None

    async def _connected(self) -> Monitor:
        if self._monitor is None:
            monitor = Monitor(self.name)
            await monitor.connect(self.qmp_socket, 15.0)
            self._monitor = monitor
        return self._monitor

    async def monitor(self) -> Monitor:
        """Our QMP session, opened at first use (for :mod:`agent.sandbox.outputkeep`)."""
        return await self._connected()

    async def attach(self, device: HostBlockDevice) -> None:
        await hotplug.attach_on(await self._connected(), self.name, device, self.ports)

    async def detach(self, device_id: str) -> None:
        monitor = await self._connected()
        await hotplug.detach_on(monitor, self.name, device_id, DETACH_SECONDS)

    async def close(self) -> None:
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            await monitor.close()


class PodDevices:
    """The block devices attached to one pod-VM, by container, kept in ``state``."""

    def __init__(self, attacher: Attacher | None, state: Path | None) -> None:
        self.attacher = attacher
        self.state = state
        self._by_container: dict[str, list[dict[str, str]]] = self._load()

    def _load(self) -> dict[str, list[dict[str, str]]]:
        if self.state is None or not self.state.exists():
            return {}
        try:
            data = json.loads(self.state.read_text())
        except (OSError, ValueError) as err:
            log.warning("%s: cannot read the attached devices: %s", self.state, err)
            return {}
        return {str(k): list(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self) -> None:
        if self.state is None:
            return
        tmp = self.state.with_name(self.state.name + ".tmp")
        tmp.write_text(json.dumps(self._by_container, sort_keys=True))
        tmp.replace(self.state)

    def attached(self, container_id: str | None = None) -> list[str]:
        """Ids of the devices attached (for one container, or all)."""
        groups = (
            [self._by_container.get(container_id, [])]
            if container_id is not None
            else list(self._by_container.values())
        )
        return [d["id"] for group in groups for d in group]

    async def prepare(
        self, container_id: str, oci: dict[str, Any], vm_name: str = "pod-VM"
    ) -> list[agent_pb2.Device]:
        """Attach the container's block devices; return their CreateContainer entries.

        Raises DeviceError (refused: names the device) or BackendError (QEMU refused);
        what was attached for this container before the failure is detached again.
        """
        wanted = requested(container_id, oci)
        if not wanted:
            return []
        if self.attacher is None:
            raise DeviceError(
                f"device {wanted[0].container_path}: block devices need the pod-VM backend"
            )
        done: list[Requested] = []
        try:
            for item in wanted:
                if item.id in self.attached(POD):  # the image store, attached already
                    done.append(item)
                    continue
                try:
                    device = HostBlockDevice(item.id, item.host_path, item.serial)
                    await self.attacher.attach(device)
                except VMError as err:
                    raise BackendError(f"device {item.container_path}: {err}") from err
                done.append(item)
                owner = POD if item.container_path == IMAGE_STORE else container_id
                self._by_container.setdefault(owner, []).append(
                    {"id": item.id, "host": str(item.host_path), "path": item.container_path}
                )
                self._save()
        except BaseException:
            await self.remove(container_id)
            raise
        shown = ", ".join(f"{d.host_path} as {d.container_path}" for d in done)
        log.info("container %s: block devices attached to %s: %s", container_id, vm_name, shown)
        return [
            agent_pb2.Device(id=d.serial, type=KATA_BLK, container_path=d.container_path)
            for d in done
        ]

    async def remove(self, container_id: str) -> None:
        """Detach the container's devices (after the guest removed the container; the
        image store stays, see :data:`IMAGE_STORE`). Failures are logged and the
        device stays recorded for the teardown."""
        group = self._by_container.get(container_id, [])
        left = []
        for device in group:
            if not await self._detach(device["id"]):
                left.append(device)
        if left:
            self._by_container[container_id] = left
        else:
            self._by_container.pop(container_id, None)
        if group:
            self._save()

    async def _detach(self, device_id: str) -> bool:
        if self.attacher is None:
            return True
        try:
            await self.attacher.detach(device_id)
        except (VMError, QemuError, OSError) as err:
            log.warning("block device %s: detach failed: %s", device_id, err)
            return False
        log.info("block device %s detached", device_id)
        return True

    async def remove_all(self) -> None:
        """At teardown, before the VM stops: every recorded device detached."""
        for container_id in list(self._by_container):
            await self.remove(container_id)
        self._by_container.clear()
        self._save()

    async def close(self) -> None:
        if self.attacher is not None:
            await self.attacher.close()
