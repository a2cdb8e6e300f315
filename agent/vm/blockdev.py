"""Host block device nodes for QEMU: checked, opened by us, named only by fd set.

Shared by the cold plug at launch (:mod:`agent.vm.manager`, ``-add-fd``) and the
hotplug over QMP (:mod:`agent.vm.hotplug`, ``add-fd``). Only block devices: the path
must resolve to a block device node; a character device, a regular file or anything
else is refused naming it. We open the node (checked again through the fd) and QEMU
gets the fd, never a path: a node swapped after the check is not attached.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.vm.config import HostBlockDevice
from agent.vm.errors import HotplugError


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


def blockdev_json(device: HostBlockDevice, fdset_id: int) -> dict[str, object]:
    """The blockdev-add argument: a raw node over a host_device node that QEMU opens
    from the fd set we passed (``/dev/fdset/<id>``), not from a path."""
    return {
        "driver": "raw",
        "node-name": device.id,
        "read-only": device.read_only,
        "cache": {"direct": True},
        "file": {
            "driver": "host_device",
            "filename": f"/dev/fdset/{fdset_id}",
            "read-only": device.read_only,
            "cache": {"direct": True},
        },
    }


def open_block_device(path: Path, read_only: bool) -> tuple[int, Path]:
    """An open fd on the block device ``path`` and its resolved path.

    The node is checked before and, through the open fd, after the open, so a path
    swapped in between is not attached. Raises HotplugError naming the path.
    """
    resolved = check_block_device(path)
    flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(resolved, flags)
    except OSError as err:
        raise HotplugError(f"{path}: cannot attach: {err.strerror}") from err
    if not stat.S_ISBLK(os.fstat(fd).st_mode):
        os.close(fd)
        raise HotplugError(f"{path} changed while being opened: not a block device any more")
    return fd, resolved
