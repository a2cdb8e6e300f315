"""Finding the device: major:minor through a fake sysfs, serials, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guest.agent import details
from guest.securemount import device
from guest.securemount.errors import DeviceError, InvalidRequest


def fake_sys(tmp_path: Path, name: str, dev: str, sectors: int = 2048, serial: str = "") -> Path:
    sys = tmp_path / "sys"
    block = sys / "class/block" / name
    block.mkdir(parents=True, exist_ok=True)
    (block / "size").write_text(f"{sectors}\n")
    (block / "dev").write_text(f"{dev}\n")
    (block / "serial").write_text(f"{serial}\n")
    (sys / "block").mkdir(exist_ok=True)
    (sys / "block" / name).symlink_to(block)
    (sys / "dev/block").mkdir(parents=True, exist_ok=True)
    (sys / "dev/block" / dev).symlink_to(f"../../devices/virtual/block/{name}")
    return sys


def a_host_block_device() -> Path | None:
    for entry in sorted(Path("/sys/dev/block").iterdir()):
        node = Path("/dev") / entry.resolve().name
        if node.exists() and not (entry / "partition").exists():
            return node
    return None


@pytest.mark.parametrize("text", ["", "254", "254:", ":1", "a:b", "254:16:1", "-1:2", " 254:16"])
def test_malformed_device_id_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="is not major:minor"):
        device.parse_device_id(text)


def test_unknown_device_number(tmp_path: Path) -> None:
    sys = fake_sys(tmp_path, "vdb", "254:16")
    with pytest.raises(DeviceError, match="no block device 254:32 in this guest"):
        device.resolve("254:32", sys, tmp_path / "dev")


def test_node_missing_or_not_that_block_device(tmp_path: Path) -> None:
    sys = fake_sys(tmp_path, "vdb", "254:16")
    dev = tmp_path / "dev"
    dev.mkdir()
    with pytest.raises(DeviceError, match="no node"):
        device.resolve("254:16", sys, dev)
    (dev / "vdb").write_bytes(b"")  # a regular file where the node should be
    with pytest.raises(DeviceError, match=r"vdb is not block device 254:16"):
        device.resolve("254:16", sys, dev)


def test_partition_is_refused(tmp_path: Path) -> None:
    sys = fake_sys(tmp_path, "vdb1", "254:17")
    (sys / "class/block/vdb1/partition").write_text("1\n")
    with pytest.raises(DeviceError, match="is a partition"):
        device.resolve("254:17", sys, tmp_path / "dev")


def test_resolves_a_real_block_device_node(tmp_path: Path) -> None:
    node = a_host_block_device()
    if node is None:
        pytest.skip("this host has no block device node")
    rdev = node.stat().st_rdev
    number = f"{os.major(rdev)}:{os.minor(rdev)}"
    sys = fake_sys(tmp_path, node.name, number, sectors=4096)
    found = device.resolve(number, sys, Path("/dev"))
    assert (found.path, found.device_id, found.size_bytes) == (node, number, 4096 * 512)
    assert str(found) == f"{node} ({number})"


def test_find_by_serial(tmp_path: Path) -> None:
    sys = fake_sys(tmp_path, "vdb", "254:16", serial="image-store")
    fake_sys(tmp_path, "vdc", "254:32", serial="other")
    assert device.find_by_serial("image-store", sys) == "254:16"
    with pytest.raises(DeviceError, match="0 disks with serial 'missing'"):
        device.find_by_serial("missing", sys)
    fake_sys(tmp_path, "vdd", "254:48", serial="other")
    with pytest.raises(DeviceError, match="2 disks with serial 'other'"):
        device.find_by_serial("other", sys)


def test_guest_details_report_the_device_number(tmp_path: Path) -> None:
    sys = fake_sys(tmp_path, "vdb", "254:16", serial="image-store")
    features = details.as_features(None, details.block_devices(sys))
    assert features == ["block.vdb=serial:image-store,bytes:1048576", "block.vdb.dev=254:16"]


def test_read_only_or_held_devices_are_refused(tmp_path: Path) -> None:
    sys = fake_sys(tmp_path, "vdb", "254:16")
    vdb = device.BlockDevice("vdb", Path("/dev/vdb"), 254, 16, 1 << 30)
    device.check_unused(vdb, sys)
    block = sys / "class/block/vdb"
    (block / "ro").write_text("1\n")
    failed = r"secure mount of /dev/vdb \(254:16\): device check failed: it is"
    with pytest.raises(DeviceError, match=failed + " read-only"):
        device.check_unused(vdb, sys)
    (block / "ro").write_text("0\n")
    (block / "holders/dm-0").mkdir(parents=True)
    with pytest.raises(DeviceError, match=failed + " in use by dm-0"):
        device.check_unused(vdb, sys)
