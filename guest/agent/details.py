"""Facts about the running guest that GetGuestDetails reports.

They travel in ``AgentDetails.extra_features`` as ``key=value`` strings (the Kata
message has no field for them): the root mount and its device-mapper identity, which
proves the root is the dm-verity device, the virtio block devices the guest sees
(serial, size and device number), and which kernel implementations of the algorithms
guarding the pod's data are in use (dm-verity's sha256 over the root, the secure image
store's aes and sha256): generic C code or the CPU's instructions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BlockDevice:
    name: str
    serial: str
    size_bytes: int
    dev: str = ""  # major:minor, what SecureMount's deviceId names


@dataclass(frozen=True)
class RootMount:
    device: str
    fstype: str
    options: str
    dm_name: str
    dm_uuid: str
    dm_slaves: str


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def root_mount(proc: Path = Path("/proc"), sys: Path = Path("/sys")) -> RootMount | None:
    """The file system mounted on / (the last such entry), with its dm name and uuid."""
    found = None
    for line in _read(proc / "mounts").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "/" and fields[0] != "rootfs":
            found = fields
    if found is None:
        return None
    device, fstype, options = found[0], found[2], found[3]
    dm_name = dm_uuid = slaves = ""
    # Without udev /dev/mapper/root is a device node, not a symlink to dm-N: go by number.
    try:
        rdev = Path(device).stat().st_rdev if device.startswith("/dev/") else 0
    except OSError:
        rdev = 0
    if rdev:
        block = sys / "dev/block" / f"{os.major(rdev)}:{os.minor(rdev)}"
        dm_name, dm_uuid = _read(block / "dm/name"), _read(block / "dm/uuid")
        if (block / "slaves").is_dir():
            slaves = ",".join(sorted(p.name for p in (block / "slaves").iterdir()))
    return RootMount(device, fstype, options, dm_name, dm_uuid, slaves)


def block_devices(sys: Path = Path("/sys")) -> list[BlockDevice]:
    """The virtio block devices (vd*) with serial and size."""
    devices = []
    for entry in sorted((sys / "block").glob("vd*")):
        sectors = _read(entry / "size")
        size = int(sectors) * 512 if sectors.isdigit() else 0
        devices.append(BlockDevice(entry.name, _read(entry / "serial"), size, _read(entry / "dev")))
    return devices


# The kernel gives a new user of an algorithm (dm-verity's table, dm-crypt's xts(aes)
# and hmac(sha256)) its registered implementation of highest priority.
CRYPTO_ALGORITHMS = ("aes", "sha256")


def crypto_drivers(proc: Path = Path("/proc")) -> dict[str, str]:
    """For each of CRYPTO_ALGORITHMS, the driver of highest priority in /proc/crypto
    (internal ones and ones whose self-test did not pass left out)."""
    best: dict[str, tuple[int, str]] = {}
    for block in _read(proc / "crypto").split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        name, driver = fields.get("name", ""), fields.get("driver", "")
        priority = fields.get("priority", "")
        if name not in CRYPTO_ALGORITHMS or not driver or not priority.isdigit():
            continue
        if fields.get("internal") == "yes" or fields.get("selftest", "passed") != "passed":
            continue
        if name not in best or int(priority) > best[name][0]:
            best[name] = (int(priority), driver)
    return {name: driver for name, (_, driver) in sorted(best.items())}


def as_features(
    root: RootMount | None, devices: list[BlockDevice], crypto: dict[str, str] | None = None
) -> list[str]:
    """The facts as ``key=value`` strings, in a stable order."""
    features = []
    if root is not None:
        features += [
            f"root.device={root.device}",
            f"root.fstype={root.fstype}",
            f"root.options={root.options}",
            f"root.dm-name={root.dm_name}",
            f"root.dm-uuid={root.dm_uuid}",
            f"root.dm-slaves={root.dm_slaves}",
        ]
    for dev in devices:
        features.append(f"block.{dev.name}=serial:{dev.serial},bytes:{dev.size_bytes}")
        if dev.dev:
            features.append(f"block.{dev.name}.dev={dev.dev}")
    features += [f"crypto.{name}={driver}" for name, driver in (crypto or {}).items()]
    return features
