"""Host block devices attached to a running pod-VM over QMP, and detached again.

A block volume (a ``volumeDevices`` entry, the secure image store's disk) is a block
device node on the host. It reaches the VM as a virtio-blk disk on one of the VM's
free PCIe root ports: ``blockdev-add`` (QEMU's ``host_device`` driver, O_DIRECT so
neither QEMU nor the host's page cache keeps a copy) then ``device_add`` with a
serial, which the guest finds in ``/sys/block/<name>/serial``. Detaching is
``device_del``, the guest's release (DEVICE_DELETED), ``blockdev-del``.

Only block devices: the path must exist and resolve to a block device node; a
character device, a regular file or anything else is refused naming it, before QEMU
hears of it. The id and serial are checked as a :class:`~agent.vm.config.Disk`'s are
(strict patterns), the path is the resolved one, and everything goes to QMP as JSON
values, never spliced into a string.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.vm.config import Disk
from agent.vm.errors import ConfigError, HotplugError, QemuError
from agent.vm.manager import VM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostBlockDevice:
    """A host block device to attach: ``id`` names it in QEMU, ``serial`` in the guest."""

    id: str
    path: Path
    serial: str
    read_only: bool = False

    def __post_init__(self) -> None:
        try:
            Disk(self.id, self.path, self.read_only, self.serial)
        except ConfigError as err:
            raise HotplugError(f"block device {self.path}: {err}") from err


def check_block_device(path: Path) -> Path:
    """The resolved path of ``path``, which must be a block device node.

    Raises HotplugError naming the path: missing, a character device, or anything
    else that is not a block device.
    """
    resolved = Path(os.path.realpath(path))
    try:
        mode = resolved.stat().st_mode
    except OSError as err:
        raise HotplugError(f"{path}: cannot attach: {err.strerror}") from err
    if stat.S_ISBLK(mode):
        return resolved
    if stat.S_ISCHR(mode):
        kind = "a character device"
    elif stat.S_ISREG(mode):
        kind = "a regular file"
    elif stat.S_ISDIR(mode):
        kind = "a directory"
    else:
        kind = "not a device"
    shown = f"{path} ({resolved})" if resolved != path else str(path)
    raise HotplugError(f"{shown} is {kind}, not a block device: only block devices attach")


def blockdev_json(device: HostBlockDevice, resolved: Path) -> dict[str, object]:
    """The blockdev-add argument: a raw node over the host_device protocol node."""
    return {
        "driver": "raw",
        "node-name": device.id,
        "read-only": device.read_only,
        "cache": {"direct": True},
        "file": {
            "driver": "host_device",
            "filename": str(resolved),
            "read-only": device.read_only,
            "cache": {"direct": True},
        },
    }


async def attach(vm: VM, device: HostBlockDevice) -> Path:
    """Attach ``device`` to ``vm`` as a virtio-blk disk; return the resolved host path.

    Raises HotplugError (not a block device, QEMU refused, no free port); nothing is
    left half attached.
    """
    resolved = check_block_device(device.path)
    disk = Disk(device.id, resolved, device.read_only, device.serial)
    try:
        await vm.hotplug_disk(disk, blockdev=blockdev_json(device, resolved))
    except QemuError as err:
        raise HotplugError(f"{device.path}: cannot attach to {vm.config.name}: {err}") from err
    log.info("%s: block device %s attached as %s (serial %s)",
             vm.config.name, resolved, device.id, device.serial)  # fmt: skip
    return resolved


async def detach(vm: VM, device_id: str, timeout: float = 30.0) -> None:
    """Detach a device attached with :func:`attach` and check QEMU holds nothing of it.

    Raises HotplugError when the guest does not release it in ``timeout`` seconds, QEMU
    refuses, or its device or block node is still there afterwards.
    """
    try:
        await vm.unplug_disk(device_id, timeout)
        left = [n for n in await vm.monitor.block_nodes() if n == device_id]
        left += [d for d in await vm.monitor.peripherals() if d == device_id]
    except QemuError as err:
        raise HotplugError(f"{vm.config.name}: cannot detach {device_id}: {err}") from err
    if left:
        raise HotplugError(f"{vm.config.name}: {device_id} still attached after detach")
