"""Host block-device hotplug: what is refused before QEMU hears of it, and what QMP gets."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from agent.vm import hotplug
from agent.vm.argv import PassedFds, build_argv
from agent.vm.config import HostBlockDevice, VirtioSerialTransport, VMConfig
from agent.vm.errors import ConfigError, HotplugError, QemuError
from agent.vm.manager import VM


def a_host_block_device() -> Path | None:
    for entry in sorted(Path("/sys/dev/block").iterdir()):
        node = Path("/dev") / entry.resolve().name
        if node.exists():
            return node
    return None


class FakeMonitor:
    """add-fd/remove-fd as QEMU answers them; records what fd it was handed."""

    def __init__(self) -> None:
        self.passed: list[tuple[int, str]] = []  # (st_rdev of the fd, opaque)
        self.removed: list[int] = []

    async def add_fd(self, fd: int, opaque: str) -> int:
        self.passed.append((os.fstat(fd).st_rdev, opaque))
        return 7

    async def remove_fdset(self, fdset_id: int) -> None:
        self.removed.append(fdset_id)


class FakeVM:
    """Records hotplug_disk; raises if a refused device reaches it."""

    def __init__(self, refuse: str = "") -> None:
        self.added: list[tuple[Any, dict[str, object] | None]] = []
        self.refuse = refuse
        self.config = type("C", (), {"name": "pod"})()
        self.monitor = FakeMonitor()

    async def hotplug_disk(self, disk: Any, blockdev: dict[str, object] | None = None) -> None:
        if self.refuse:
            raise QemuError(self.refuse)
        self.added.append((disk, blockdev))


def test_character_device_file_directory_and_missing_path_are_refused(tmp_path: Path) -> None:
    regular = tmp_path / "disk.img"
    regular.write_bytes(b"")
    link = tmp_path / "null-link"
    link.symlink_to("/dev/null")
    cases = [
        (Path("/dev/null"), "/dev/null is a character device, not a block device"),
        (link, f"{link} (/dev/null) is a character device"),
        (regular, f"{regular} is a regular file, not a block device"),
        (tmp_path, f"{tmp_path} is a directory, not a block device"),
        (tmp_path / "missing", f"{tmp_path / 'missing'}: cannot attach: No such file"),
    ]
    for path, message in cases:
        with pytest.raises(HotplugError) as refused:
            hotplug.check_block_device(path)
        assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    ("device_id", "serial", "path"),
    [
        ("store", "bad,serial", "/dev/loop0"),
        ("store", "x" * 21, "/dev/loop0"),
        ("bad id", "ok", "/dev/loop0"),
        ("store", "ok", "relative/loop0"),
        ("store", "ok", "/dev/loop0\n,x=y"),
    ],
)
def test_ids_serials_and_paths_are_checked(device_id: str, serial: str, path: str) -> None:
    with pytest.raises(ConfigError, match="block device"):
        hotplug.HostBlockDevice(device_id, Path(path), serial)


async def test_refused_device_never_reaches_the_vm() -> None:
    vm = FakeVM()
    with pytest.raises(HotplugError, match="character device"):
        await hotplug.attach(vm, hotplug.HostBlockDevice("n", Path("/dev/null"), "n"))  # type: ignore[arg-type]
    assert vm.added == [] and vm.monitor.passed == []


async def test_block_device_goes_to_qmp_as_json_values() -> None:
    node = a_host_block_device()
    if node is None:
        pytest.skip("this host has no block device node")
    vm = FakeVM()
    device = hotplug.HostBlockDevice("store", node, "image-store", read_only=True)
    assert await hotplug.attach(vm, device) == Path(os.path.realpath(node))  # type: ignore[arg-type]
    disk, blockdev = vm.added[0]
    assert (disk.id, disk.serial, disk.read_only) == ("store", "image-store", True)
    # QEMU got an fd on that very device, and a blockdev naming only its fd set.
    assert vm.monitor.passed == [(node.stat().st_rdev, "store")]
    assert blockdev == {
        "driver": "raw", "node-name": "store", "read-only": True, "cache": {"direct": True},
        "file": {"driver": "host_device", "filename": "/dev/fdset/7",
                 "read-only": True, "cache": {"direct": True}},
    }  # fmt: skip
    refusing = FakeVM("no free slot")
    with pytest.raises(HotplugError, match=f"{node}: cannot attach to pod: no free slot"):
        await hotplug.attach(refusing, device)  # type: ignore[arg-type]
    assert refusing.monitor.removed == [7]  # QEMU's copy of the fd closed again


class QemuState:
    """Just the query answers attached() reads."""

    def __init__(self, devices: list[str], fdsets: dict[int, list[str]]) -> None:
        self.devices, self.sets = devices, fdsets

    async def peripherals(self) -> list[str]:
        return self.devices

    async def fdsets(self) -> dict[int, list[str]]:
        return self.sets


async def test_attached_are_the_devices_with_our_fd_sets() -> None:
    # "initdata" is cold-plugged (no fd set); fd set 2 lost its device (not attached).
    fdsets = {0: ["store"], 1: ["vol1"], 2: ["gone"]}
    state = QemuState(["initdata", "store", "vol1", "hp0"], fdsets)
    assert await hotplug.attached(state) == ["store", "vol1"]  # type: ignore[arg-type]


def test_cold_plugged_block_device_is_passed_by_fd(base_config: VMConfig) -> None:
    device = HostBlockDevice("store", Path("/dev/loop7"), "image-store")
    config = dataclasses.replace(base_config, block_devices=(device,))
    argv = build_argv(config, PassedFds(qmp=3, agent=4, block=(9,)))
    at = argv.index("-add-fd")
    assert argv[at : at + 6] == [
        "-add-fd", "fd=9,set=1000,opaque=store",
        "-blockdev", '{"cache":{"direct":true},"driver":"raw","file":{"cache":{"direct":true},'
        '"driver":"host_device","filename":"/dev/fdset/1000","read-only":false},'
        '"node-name":"store","read-only":false}',
        "-device",
        '{"drive":"store","driver":"virtio-blk-pci","id":"store","serial":"image-store"}',
    ]  # fmt: skip
    assert "/dev/loop7" not in " ".join(argv)  # QEMU gets the fd, never the path
    with pytest.raises(ValueError, match="1 block devices need as many open fds"):
        build_argv(config, PassedFds(qmp=3, agent=4))
    with pytest.raises(ConfigError, match="disk ids must be unique"):
        dataclasses.replace(base_config, block_devices=(HostBlockDevice("root", device.path, "x"),))


async def test_launch_refuses_a_cold_plugged_character_device(
    base_config: VMConfig, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        base_config,
        console_log=tmp_path / "console.log",
        qmp_socket=tmp_path / "qmp.sock",
        transport=VirtioSerialTransport(tmp_path / "agent.sock"),
        block_devices=(HostBlockDevice("vol", Path("/dev/null"), "vol"),),
    )
    with pytest.raises(HotplugError, match="/dev/null is a character device"):
        await VM.launch(config)  # no QEMU started: the unit tier's guard would refuse it
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # sockets removed again


class RestartedMonitor:
    """A QMP session to a VM some earlier daemon launched: root ports hp0, hp1; the
    store on hp0; records the commands; ``refuse`` fails that command."""

    def __init__(self, refuse: str = "") -> None:
        self.buses = {"hp0": "pcie.0", "hp1": "pcie.0", "root": "pcie.0", "store": "hp0"}
        self.commands: list[str] = []
        self.refuse = refuse
        self.removed: list[int] = []

    async def peripherals(self) -> list[str]:
        return list(self.buses)

    async def bus_of(self, device_id: str) -> str:
        return self.buses[device_id]

    async def add_fd(self, fd: int, opaque: str) -> int:
        return 3

    async def remove_fdset(self, fdset_id: int) -> None:
        self.removed.append(fdset_id)

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        self.commands.append(command if command != "device_add" else f"device_add {arguments}")
        if command == self.refuse:
            raise QemuError(f"QMP {command} failed: refused")


async def test_attach_on_a_restarted_daemons_vm_picks_a_free_port() -> None:
    node = a_host_block_device()
    if node is None:
        pytest.skip("this host has no block device node")
    device = HostBlockDevice("vol1", node, "vol1", read_only=True)
    monitor: Any = RestartedMonitor()
    assert await hotplug.attach_on(monitor, "pod", device, ["hp0", "hp1"]) == "hp1"
    assert monitor.commands[0] == "blockdev-add"
    assert "'bus': 'hp1'" in monitor.commands[1] and "'serial': 'vol1'" in monitor.commands[1]
    with pytest.raises(HotplugError, match="no free hotplug port on pod"):
        await hotplug.attach_on(monitor, "pod", device, ["hp0"])
    refusing: Any = RestartedMonitor(refuse="device_add")
    with pytest.raises(HotplugError, match="device_add failed: refused"):
        await hotplug.attach_on(refusing, "pod", device, ["hp0", "hp1"])
    assert refusing.commands[-1] == "blockdev-del" and refusing.removed == [3]  # undone
    with pytest.raises(HotplugError, match="a device store is already attached"):
        await hotplug.attach_on(monitor, "pod", HostBlockDevice("store", node, "x"), ["hp0"])
