"""Announced block devices in the guest: the disk found by serial, the spec's device
and cgroup rule rewritten to the guest's numbers, anything else refused naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.kata import agent_pb2
from guest.agent import devices
from guest.agent import spec as specs
from guest.agent.errors import FailedPrecondition, InvalidRequest


def _disk(sys: Path, name: str, serial: str, number: str) -> None:
    block = sys / "block" / name
    block.mkdir(parents=True)
    (block / "serial").write_text(serial + "\n")
    (block / "dev").write_text(number + "\n")


def _request(*announced: agent_pb2.Device, rule: bool = True) -> agent_pb2.CreateContainerRequest:
    request = agent_pb2.CreateContainerRequest(container_id="c1", devices=announced)
    request.OCI.Process.Args.append("sh")
    request.OCI.Linux.Devices.add(Path="/dev/image_store", Type="b", Major=7, Minor=3)
    request.OCI.Linux.Devices.add(Path="/dev/data", Type="b", Major=7, Minor=4)
    request.OCI.Linux.Resources.Devices.add(Allow=False, Access="rwm")
    if rule:
        request.OCI.Linux.Resources.Devices.add(
            Allow=True, Type="b", Major=7, Minor=3, Access="rw"
        )
    return request


def _blk(serial: str, path: str) -> agent_pb2.Device:
    return agent_pb2.Device(id=serial, type="blk", container_path=path)


async def test_found_by_serial_and_rewritten(tmp_path: Path) -> None:
    _disk(tmp_path, "vdb", "ctr-aaaa", "254:16")
    _disk(tmp_path, "vdc", "ctr-bbbb", "254:32")
    request = _request(_blk("ctr-aaaa", "/dev/image_store"), _blk("ctr-bbbb", "/dev/data"))
    provided = await devices.provide(request, tmp_path, timeout=0)
    assert [(p.container_path, p.device_id) for p in provided] == [
        ("/dev/image_store", "254:16"),
        ("/dev/data", "254:32"),
    ]
    assert devices.image_store(provided) == provided[0]
    linux = request.OCI.Linux
    assert [(d.Path, d.Major, d.Minor) for d in linux.Devices] == [
        ("/dev/image_store", 254, 16),
        ("/dev/data", 254, 32),
    ]
    rules = [(r.Allow, r.Type, r.Major, r.Minor, r.Access) for r in linux.Resources.Devices]
    # The host's rule rewritten (its access kept), a rule added for the device without one.
    assert rules == [
        (False, "", 0, 0, "rwm"),
        (True, "b", 254, 16, "rw"),
        (True, "b", 254, 32, "rwm"),
    ]
    # The runtime creates both nodes, though no such paths exist in the guest.
    ctx = specs.GuestContext(
        container_id="c1",
        exists=lambda _: False,
        devices=frozenset(p.container_path for p in provided),
    )
    config = specs.adapt(request.OCI, ctx).config
    assert [(d["path"], d["major"], d["minor"]) for d in config["linux"]["devices"]] == [
        ("/dev/image_store", 254, 16),
        ("/dev/data", 254, 32),
    ]
    assert {"allow": True, "access": "rw", "type": "b", "major": 254, "minor": 16} in config[
        "linux"
    ]["resources"]["devices"]


async def test_unannounced_devices_missing_in_the_guest_are_still_dropped(
    tmp_path: Path,
) -> None:
    config = specs.adapt(
        _request().OCI, specs.GuestContext(container_id="c1", exists=lambda _: False)
    ).config
    assert "devices" not in config["linux"]


@pytest.mark.parametrize(
    ("device", "error", "message"),
    [
        (agent_pb2.Device(id="02/00", type="vfio", container_path="/dev/data"), InvalidRequest,
         "'/dev/data': type 'vfio' is not supported"),
        (_blk("ctr-aaaa", "/dev/other"), InvalidRequest,
         "'/dev/other': not a block device of the container's spec"),
        (_blk("ctr-none", "/dev/data"), FailedPrecondition,
         "/dev/data: disk lookup failed: 0 disks with serial 'ctr-none'"),
    ],
)  # fmt: skip
async def test_refused_naming_the_device(
    tmp_path: Path, device: agent_pb2.Device, error: type[Exception], message: str
) -> None:
    _disk(tmp_path, "vdb", "ctr-aaaa", "254:16")
    request = _request(device)
    with pytest.raises(error, match=message):
        await devices.provide(request, tmp_path, timeout=0)
    assert request.OCI.Linux.Devices[1].Major == 7  # nothing rewritten


async def test_announced_twice_is_refused(tmp_path: Path) -> None:
    _disk(tmp_path, "vdb", "ctr-aaaa", "254:16")
    request = _request(_blk("ctr-aaaa", "/dev/data"), _blk("ctr-aaaa", "/dev/data"))
    with pytest.raises(InvalidRequest, match="/dev/data: announced twice"):
        await devices.provide(request, tmp_path, timeout=0)


async def test_a_disk_appearing_late_is_waited_for(tmp_path: Path) -> None:
    import asyncio

    async def later() -> None:
        await asyncio.sleep(0.3)
        _disk(tmp_path, "vdb", "ctr-aaaa", "254:16")

    task = asyncio.ensure_future(later())
    provided = await devices.provide(_request(_blk("ctr-aaaa", "/dev/data")), tmp_path, 30)
    await task
    assert provided[0].device_id == "254:16"
