"""Finding the block device: by ``major:minor`` (Kata's ``deviceId``) or by serial.

Kata's agent names the device by the guest's device number; the host attaches it with
a virtio-blk serial (``/sys/block/<name>/serial``; there is no udev in the guest, so
no ``/dev/disk/by-id``). Either way the node under ``/dev`` (devtmpfs) is checked to be
that very block device before anything is written to it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from guest.securemount.errors import DeviceError, InvalidRequest

_DEVICE_ID = re.compile(r"(\d{1,10}):(\d{1,10})\Z")
_NAME = re.compile(r"[a-z][a-z0-9]{0,31}\Z")
SECTOR = 512  # the unit of /sys/block/*/size, whatever the device's own sector size


@dataclass(frozen=True)
class BlockDevice:
    name: str  # kernel name, e.g. "vdc"
    path: Path  # its node, e.g. /dev/vdc
    major: int
    minor: int
    size_bytes: int

    @property
    def device_id(self) -> str:
        return f"{self.major}:{self.minor}"

    def __str__(self) -> str:
        return f"{self.path} ({self.device_id})"


def parse_device_id(text: str) -> tuple[int, int]:
    """``"major:minor"`` as numbers. Raises InvalidRequest naming the value."""
    match = _DEVICE_ID.match(text)
    if match is None:
        raise InvalidRequest(f"deviceId {text!r} is not major:minor")
    return int(match[1]), int(match[2])


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def resolve(device_id: str, sys: Path = Path("/sys"), dev: Path = Path("/dev")) -> BlockDevice:
    """The block device with number ``device_id``.

    Raises InvalidRequest for a malformed id, DeviceError when no such block device
    exists or its /dev node is not that block device.
    """
    major, minor = parse_device_id(device_id)
    entry = sys / "dev/block" / f"{major}:{minor}"
    try:
        name = entry.readlink().name
    except OSError as err:
        raise DeviceError(f"no block device {device_id} in this guest ({entry}: {err})") from err
    if not _NAME.match(name):
        raise DeviceError(f"block device {device_id} has an unexpected name {name!r}")
    if (sys / "class/block" / name / "partition").exists():
        raise DeviceError(f"block device {device_id} ({name}) is a partition, not a disk")
    path = dev / name
    try:
        st = path.stat()
    except OSError as err:
        raise DeviceError(f"block device {device_id}: no node {path}: {err}") from err
    if not stat.S_ISBLK(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (
        major,
        minor,
    ):
        raise DeviceError(f"{path} is not block device {device_id}")
    sectors = _read(sys / "class/block" / name / "size")
    if not sectors.isdigit():
        raise DeviceError(f"{path} ({device_id}): cannot read its size")
    return BlockDevice(name, path, major, minor, int(sectors) * SECTOR)


def check_unused(device: BlockDevice, sys: Path = Path("/sys")) -> None:
    """Refuse a disk the guest cannot write (the root's, the initdata disk) or already
    uses (held by device-mapper, e.g. under the verity root), before cryptsetup would
    touch it. Raises DeviceError."""
    block = sys / "class/block" / device.name
    failed = f"secure mount of {device}: device check failed"
    if _read(block / "ro") == "1":
        raise DeviceError(f"{failed}: it is read-only")
    holders = block / "holders"
    used_by = sorted(p.name for p in holders.iterdir()) if holders.is_dir() else []
    if used_by:
        raise DeviceError(f"{failed}: it is in use by {', '.join(used_by)}")


def find_by_serial(serial: str, sys: Path = Path("/sys")) -> str:
    """The ``major:minor`` of the virtio disk whose serial is ``serial``.

    Raises DeviceError when none or more than one disk has it.
    """
    found = []
    for entry in sorted((sys / "block").glob("vd*")):
        if _read(entry / "serial") == serial:
            found.append(_read(entry / "dev"))
    if len(found) != 1:
        raise DeviceError(f"{len(found)} disks with serial {serial!r} in this guest, not one")
    return found[0]
