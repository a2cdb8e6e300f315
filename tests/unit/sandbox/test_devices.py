"""A container's block devices: found from their numbers, refused naming them,
attached and recorded, detached at removal, teardown and after a daemon restart."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox import devices
from agent.sandbox.devices import DeviceError, PodDevices
from agent.sandbox.errors import BackendError
from agent.vm.config import HostBlockDevice
from agent.vm.errors import HotplugError


def _host(tmp_path: Path, name: str, major: int, minor: int, kind: int = stat.S_IFBLK) -> None:
    sys_dir = tmp_path / "sys" / "dev" / "block" / f"{major}:{minor}"
    sys_dir.mkdir(parents=True)
    (sys_dir / "uevent").write_text(f"MAJOR={major}\nMINOR={minor}\nDEVNAME={name}\n")
    (tmp_path / "dev").mkdir(exist_ok=True)
    os.mknod(tmp_path / "dev" / name, kind | 0o600, os.makedev(major, minor))


def _spec(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"linux": {"devices": list(entries)}}


def _blk(path: str, major: int, minor: int) -> dict[str, Any]:
    return {"path": path, "type": "b", "major": major, "minor": minor}


class FakeVM:
    def __init__(self, refuse: str = "") -> None:
        self.attached: list[HostBlockDevice] = []
        self.detached: list[str] = []
        self.refuse = refuse

    async def attach(self, device: HostBlockDevice) -> None:
        if device.path.name == self.refuse:
            raise HotplugError(f"{device.path}: QEMU refused")
        self.attached.append(device)

    async def detach(self, device_id: str) -> None:
        self.detached.append(device_id)

    async def close(self) -> None:
        pass


def test_block_devices_found_by_number(tmp_path: Path) -> None:
    _host(tmp_path, "loop3", 7, 3)
    found = devices.requested(
        "c1", _spec(_blk("/dev/data", 7, 3)), tmp_path / "sys", tmp_path / "dev"
    )
    assert [(f.container_path, f.host_path) for f in found] == [
        ("/dev/data", tmp_path / "dev" / "loop3")
    ]
    assert len(found[0].serial) == 20
    assert found[0].serial == devices.serial_of("c1", "/dev/data")
    assert devices.serial_of("c2", "/dev/data") != found[0].serial


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "/dev/tty0", "type": "c", "major": 4, "minor": 0}, "/dev/tty0: a character"),
        ({"path": "/dev/fifo", "type": "p"}, "/dev/fifo: a FIFO"),
        (_blk("/dev/missing", 7, 9), "/dev/missing: no block device 7:9"),
        (_blk("/etc/passwd", 7, 3), "not a path under /dev"),
        ({"path": "/dev/x", "type": "b", "major": "7", "minor": 3}, "/dev/x: major '7'"),
    ],
)
def test_other_devices_refused_naming_them(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    _host(tmp_path, "loop3", 7, 3)
    with pytest.raises(DeviceError, match=message):
        devices.requested("c1", _spec(entry), tmp_path / "sys", tmp_path / "dev")


def test_a_number_whose_node_is_a_character_device_is_refused(tmp_path: Path) -> None:
    _host(tmp_path, "sneaky", 7, 4, kind=stat.S_IFCHR)
    with pytest.raises(DeviceError, match="is not that block device"):
        devices.requested("c1", _spec(_blk("/dev/d", 7, 4)), tmp_path / "sys", tmp_path / "dev")


async def test_attached_recorded_and_detached(tmp_path: Path, monkeypatch: Any) -> None:
    _host(tmp_path, "loop3", 7, 3)
    _host(tmp_path, "loop4", 7, 4)
    real = devices.requested
    monkeypatch.setattr(
        devices, "requested", lambda cid, oci: real(cid, oci, tmp_path / "sys", tmp_path / "dev")
    )
    vm, state = FakeVM(), tmp_path / "devices.json"
    pod = PodDevices(vm, state)
    spec = _spec(_blk("/dev/image_store", 7, 3), _blk("/dev/data", 7, 4))
    announced = await pod.prepare("c1", spec)
    assert [(d.type, d.container_path) for d in announced] == [
        ("blk", "/dev/image_store"),
        ("blk", "/dev/data"),
    ]
    assert [d.id for d in announced] == [a.serial for a in vm.attached]
    assert [a.path.name for a in vm.attached] == ["loop3", "loop4"]
    recorded = json.loads(state.read_text())
    assert [d["id"] for d in recorded[""]] == [announced[0].id]  # the pod's store
    assert [d["id"] for d in recorded["c1"]] == [announced[1].id]
    # A restarted daemon reads the same record and detaches what was attached.
    again, later = FakeVM(), PodDevices(None, state)
    later.attacher = again
    assert sorted(later.attached()) == sorted(d.id for d in announced)
    await later.remove_all()
    assert sorted(again.detached) == sorted(d.id for d in announced)
    assert json.loads(state.read_text()) == {}


async def test_a_failed_attach_detaches_the_containers_others(
    tmp_path: Path, monkeypatch: Any
) -> None:
    _host(tmp_path, "loop3", 7, 3)
    _host(tmp_path, "loop4", 7, 4)
    real = devices.requested
    monkeypatch.setattr(
        devices, "requested", lambda cid, oci: real(cid, oci, tmp_path / "sys", tmp_path / "dev")
    )
    vm = FakeVM(refuse="loop4")
    pod = PodDevices(vm, tmp_path / "devices.json")
    with pytest.raises(BackendError, match=r"device /dev/data: .*QEMU refused"):
        await pod.prepare("c1", _spec(_blk("/dev/a", 7, 3), _blk("/dev/data", 7, 4)))
    assert vm.detached == [vm.attached[0].id]
    assert pod.attached() == []


async def test_removal_detaches_only_that_containers(tmp_path: Path, monkeypatch: Any) -> None:
    _host(tmp_path, "loop3", 7, 3)
    _host(tmp_path, "loop4", 7, 4)
    real = devices.requested
    monkeypatch.setattr(
        devices, "requested", lambda cid, oci: real(cid, oci, tmp_path / "sys", tmp_path / "dev")
    )
    vm = FakeVM()
    pod = PodDevices(vm, tmp_path / "devices.json")
    first = await pod.prepare("c1", _spec(_blk("/dev/a", 7, 3)))
    second = await pod.prepare("c2", _spec(_blk("/dev/b", 7, 4)))
    await pod.remove("c1")
    assert vm.detached == [first[0].id]
    assert pod.attached() == [second[0].id]


async def test_no_devices_needs_no_vm(tmp_path: Path) -> None:
    pod = PodDevices(None, None)
    assert await pod.prepare("c1", {"linux": {}}) == []
    with pytest.raises(DeviceError, match="/dev/tty0: a character device"):
        await pod.prepare("c1", _spec({"path": "/dev/tty0", "type": "c", "major": 4}))


async def test_the_image_store_stays_for_the_pod(tmp_path: Path, monkeypatch: Any) -> None:
    """Every container pulls onto the store: it is detached at the teardown only, and
    a second container naming the same disk shares it."""
    _host(tmp_path, "loop3", 7, 3)
    real = devices.requested
    monkeypatch.setattr(
        devices, "requested", lambda cid, oci: real(cid, oci, tmp_path / "sys", tmp_path / "dev")
    )
    vm = FakeVM()
    pod = PodDevices(vm, tmp_path / "devices.json")
    first = await pod.prepare("c1", _spec(_blk("/dev/image_store", 7, 3)))
    second = await pod.prepare("c2", _spec(_blk("/dev/image_store", 7, 3)))
    assert first[0].id == second[0].id == devices.store_serial(7, 3)
    assert len(vm.attached) == 1
    await pod.remove("c1")
    await pod.remove("c2")
    assert vm.detached == []
    await pod.remove_all()
    assert vm.detached == [first[0].id]
