"""Host block devices attached to a running pod-VM over QMP, and detached again.

A block volume (a ``volumeDevices`` entry, the secure image store's disk) is a block
device node on the host. It reaches the VM as a virtio-blk disk on one of the VM's
free PCIe root ports: we open the device and pass the fd to QEMU (``add-fd``), then
``blockdev-add`` (QEMU's ``host_device`` driver on ``/dev/fdset/<id>``, O_DIRECT so
neither QEMU nor the host's page cache keeps a copy) and ``device_add`` with a
serial, which the guest finds in ``/sys/block/<name>/serial``. Detaching is
``device_del``, the guest's release (DEVICE_DELETED), ``blockdev-del``, ``remove-fd``.

Only block devices: the path must exist and resolve to a block device node; a
character device, a regular file or anything else is refused naming it, before QEMU
hears of it. The id and serial are checked as a :class:`~agent.vm.config.Disk`'s are
(strict patterns); QEMU gets no path at all, only the fd we opened after checking the
node (and checked again through the fd); everything goes to QMP as JSON values.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from agent.vm.argv import device_json
from agent.vm.blockdev import blockdev_json, check_block_device, open_block_device
from agent.vm.config import Disk, HostBlockDevice
from agent.vm.errors import HotplugError, QemuError
from agent.vm.manager import VM
from agent.vm.qmp import Monitor

log = logging.getLogger(__name__)
__all__ = [
    "HostBlockDevice", "attach", "attach_on", "attached", "check_block_device", "detach",
    "detach_on",
]  # fmt: skip


async def attach(vm: VM, device: HostBlockDevice) -> Path:
    """Attach ``device`` to ``vm`` as a virtio-blk disk; return the resolved host path.

    We open the device and pass the fd to QEMU, which never opens a path of ours.
    Raises HotplugError (not a block device, QEMU refused, no free port); nothing is
    left half attached.
    """
    fd, resolved = open_block_device(device.path, device.read_only)
    try:
        fdset = await vm.monitor.add_fd(fd, device.id)
    except QemuError as err:
        raise HotplugError(f"{device.path}: cannot attach to {vm.config.name}: {err}") from err
    finally:
        os.close(fd)  # QEMU holds its own copy now
    disk = Disk(device.id, resolved, device.read_only, device.serial)
    try:
        await vm.hotplug_disk(disk, blockdev=blockdev_json(device, fdset))
    except QemuError as err:
        with contextlib.suppress(QemuError):
            await vm.monitor.remove_fdset(fdset)
        raise HotplugError(f"{device.path}: cannot attach to {vm.config.name}: {err}") from err
    log.info("%s: block device %s attached as %s (serial %s, fd set %d)",
             vm.config.name, resolved, device.id, device.serial, fdset)  # fmt: skip
    return resolved


async def detach(vm: VM, device_id: str, timeout: float = 30.0) -> None:
    """Detach a device attached with :func:`attach` and check QEMU holds nothing of it.

    Raises HotplugError when the guest does not release it in ``timeout`` seconds, QEMU
    refuses, or its device, block node or fd set is still there afterwards.
    """
    try:
        await vm.unplug_disk(device_id, timeout)
        await _release_fds(vm.monitor, device_id)
    except QemuError as err:
        raise HotplugError(f"{vm.config.name}: cannot detach {device_id}: {err}") from err
    await _check_gone(vm.monitor, vm.config.name, device_id)


async def attached(monitor: Monitor) -> list[str]:
    """Ids of the block devices :func:`attach` left in QEMU (their fd sets name them):
    what a restarted daemon finds on a VM it reattaches to, whatever its state says."""
    devices = set(await monitor.peripherals())
    opaques = {o for found in (await monitor.fdsets()).values() for o in found}
    return sorted(devices & opaques)


async def attach_on(
    monitor: Monitor, vm_name: str, device: HostBlockDevice, ports: Sequence[str]
) -> str:
    """:func:`attach` for a VM this process did not launch (after a daemon restart),
    through a QMP session of its own: on the first of ``ports`` (the VM's hotplug root
    ports, ``argv.hotplug_port(i)``) QEMU shows no device on. Returns that port.

    Raises HotplugError (not a block device, no free port, QEMU refused); nothing is
    left half attached.
    """
    try:
        others = [d for d in await monitor.peripherals() if d not in ports]
        if device.id in others:
            raise HotplugError(f"{vm_name}: a device {device.id} is already attached")
        used = {await monitor.bus_of(d) for d in others}
    except QemuError as err:
        raise HotplugError(f"{device.path}: cannot attach to {vm_name}: {err}") from err
    free = [p for p in ports if p not in used]
    if not free:
        raise HotplugError(f"{device.path}: no free hotplug port on {vm_name}")
    fd, resolved = open_block_device(device.path, device.read_only)
    try:
        fdset = await monitor.add_fd(fd, device.id)
    except QemuError as err:
        raise HotplugError(f"{device.path}: cannot attach to {vm_name}: {err}") from err
    finally:
        os.close(fd)
    disk = Disk(device.id, resolved, device.read_only, device.serial)
    try:
        await monitor.execute("blockdev-add", blockdev_json(device, fdset))
        try:
            await monitor.execute("device_add", device_json(disk, bus=free[0]))
        except QemuError:
            await monitor.execute("blockdev-del", {"node-name": device.id})
            raise
    except QemuError as err:
        with contextlib.suppress(QemuError):
            await monitor.remove_fdset(fdset)
        raise HotplugError(f"{device.path}: cannot attach to {vm_name}: {err}") from err
    log.info("%s: block device %s attached as %s on %s (serial %s, fd set %d)",
             vm_name, resolved, device.id, free[0], device.serial, fdset)  # fmt: skip
    return free[0]


async def detach_on(monitor: Monitor, vm_name: str, device_id: str, timeout: float = 30.0) -> None:
    """:func:`detach` for a VM this process did not launch (after a daemon restart):
    through a QMP session of its own to the running QEMU. Raises HotplugError."""
    if device_id not in await attached(monitor):
        raise HotplugError(f"{vm_name}: no block device {device_id} is attached")
    try:
        await monitor.remove_device(device_id, device_id, timeout)
        await _release_fds(monitor, device_id)
    except QemuError as err:
        raise HotplugError(f"{vm_name}: cannot detach {device_id}: {err}") from err
    await _check_gone(monitor, vm_name, device_id)


async def _release_fds(monitor: Monitor, device_id: str) -> None:
    for fdset, opaques in (await monitor.fdsets()).items():
        if device_id in opaques:
            await monitor.remove_fdset(fdset)


async def _check_gone(monitor: Monitor, vm_name: str, device_id: str) -> None:
    try:
        left = [n for n in await monitor.block_nodes() if n == device_id]
        left += [d for d in await monitor.peripherals() if d == device_id]
        left += [f"fd set {i}" for i, o in (await monitor.fdsets()).items() if device_id in o]
    except QemuError as err:
        raise HotplugError(f"{vm_name}: cannot check {device_id} is gone: {err}") from err
    if left:
        raise HotplugError(f"{vm_name}: {device_id} still attached after detach: {left}")
