"""The block devices the host announced in CreateContainer (Kata's ``Device``).

The host hotplugs each of a container's block devices as a virtio-blk disk with a
serial and announces it as ``Device(type="blk", id=<serial>, container_path=...)``
(Kata's ``blk`` names a PCI path in ``id``; ours names the serial, which stays the
same whichever hotplug port QEMU used). We find the disk by its serial (waiting for
the hotplug to reach the guest), then rewrite the OCI spec as Kata's agent does: the
``linux.devices`` entry at ``container_path`` gets the guest's major and minor (the
host's numbers mean nothing here), so does every cgroup device rule naming the
host's numbers; a device without a rule gets one allowing it (``rwm``). The runtime
then creates the node at the container's path.

Every announced device is provided or refused naming it: an unknown type, a serial
no disk has, a path the spec's ``linux.devices`` does not list all fail the container.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from api.kata import agent_pb2
from guest.agent.errors import FailedPrecondition, InvalidRequest
from guest.securemount.device import find_by_serial, parse_device_id
from guest.securemount.errors import DeviceError

log = logging.getLogger(__name__)

KATA_BLK = "blk"
# Contrast's contract: the block device at this path is the pod's secure image store.
IMAGE_STORE = "/dev/image_store"
APPEAR_SECONDS = 60.0  # a hotplugged disk reaches the guest in ms; TCG on a loaded host


@dataclass(frozen=True)
class Provided:
    container_path: str
    serial: str
    major: int
    minor: int

    @property
    def device_id(self) -> str:
        return f"{self.major}:{self.minor}"

    def __str__(self) -> str:
        return f"{self.container_path} (disk serial {self.serial}, {self.device_id})"


async def _find(serial: str, sys: Path, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return find_by_serial(serial, sys)
        except DeviceError:
            if loop.time() >= deadline:
                raise
        await asyncio.sleep(0.1)


async def provide(
    request: agent_pb2.CreateContainerRequest,
    sys: Path = Path("/sys"),
    timeout: float = APPEAR_SECONDS,
) -> list[Provided]:
    """Find each announced disk and rewrite ``request.OCI`` for the guest's numbers.

    Raises InvalidRequest (a type other than ``blk``, a path the spec does not list,
    a path announced twice) or FailedPrecondition (no disk with that serial), each
    naming the device.
    """
    linux = request.OCI.Linux
    entries = {d.Path: d for d in linux.Devices}
    found: list[Provided] = []
    for device in request.devices:
        path = device.container_path
        if device.type != KATA_BLK:
            raise InvalidRequest(
                f"device {path or device.id!r}: type {device.type!r} is not supported "
                f"(only {KATA_BLK!r}: a virtio-blk disk found by its serial)"
            )
        if path not in entries or entries[path].Type != "b":
            raise InvalidRequest(f"device {path!r}: not a block device of the container's spec")
        if any(p.container_path == path for p in found):
            raise InvalidRequest(f"device {path}: announced twice")
        try:
            number = await _find(device.id, sys, timeout)
        except DeviceError as err:
            raise FailedPrecondition(f"device {path}: disk lookup failed: {err}") from err
        major, minor = parse_device_id(number)
        found.append(Provided(path, device.id, major, minor))
    for item in found:
        entry = entries[item.container_path]
        host = (entry.Major, entry.Minor)
        entry.Major, entry.Minor = item.major, item.minor
        rules = [
            r
            for r in linux.Resources.Devices
            if r.Type == "b" and (r.Major, r.Minor) == host
        ]
        for rule in rules:
            rule.Major, rule.Minor = item.major, item.minor
        if not rules:
            linux.Resources.Devices.add(
                Allow=True, Type="b", Major=item.major, Minor=item.minor, Access="rwm"
            )
        log.info("container %s: device %s", request.container_id, item)
    return found


def image_store(provided: list[Provided]) -> Provided | None:
    """The device at :data:`IMAGE_STORE`, if the container has it."""
    return next((p for p in provided if p.container_path == IMAGE_STORE), None)
