"""A real pod-VM under TCG: boot, agent over virtio-serial, hotplug, stop, failures."""

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.accel import probe
from agent.vm.config import Accel, Disk
from agent.vm.errors import QemuError, VerityError
from agent.vm.manager import VM
from guest.image.manifest import GuestImage
from tests.integration.vm.conftest import vm_config

BOOT_TIMEOUT = 300.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def device_with_serial(facts: dict[str, str], serial: str) -> tuple[str, str] | None:
    """(name, details) of the block device the guest lists with ``serial``."""
    for key, value in facts.items():
        if key.startswith("block.") and value.startswith(f"serial:{serial},"):
            return key.removeprefix("block."), value
    return None


async def wait_for_disk(agent: AgentClient, serial: str, present: bool) -> str:
    for _ in range(100):
        facts = AgentClient.features(await agent.guest_details())
        found = device_with_serial(facts, serial)
        if (found is not None) == present:
            return found[1] if found else ""
        await asyncio.sleep(0.2)
    raise AssertionError(f"{serial} {'never appeared' if present else 'never went away'}: {facts}")


async def test_boot_agent_hotplug_and_stop(guest_image: GuestImage, vm_dir: Path) -> None:
    config = vm_config(guest_image, vm_dir, "boot")
    vm = await VM.launch(config)
    pid = vm.process.pid
    agent = AgentClient(await connect(config.transport))
    try:
        assert await vm.status() == "running"
        assert isinstance(vm.qemu_version["qemu"], dict)  # from the QMP greeting
        await vm.wait_ready(BOOT_TIMEOUT)
        assert await agent.check()

        facts = AgentClient.features(await agent.guest_details())
        # The root is the device-mapper device the initrd set up with the image's
        # root hash on top of the root disk, not the plain disk.
        assert facts["root.device"] == "/dev/mapper/root"
        assert facts["root.fstype"] == "erofs"
        assert facts["root.dm-name"] == "root"
        assert facts["root.dm-uuid"] == f"CONTRAST-VERITY-{guest_image.manifest.root_hash}"
        root_disk = device_with_serial(facts, "contrast-root")
        assert root_disk is not None
        assert facts["root.dm-slaves"] == root_disk[0]
        # The initrd loaded the CPU's sha256 before the verity table (TCG's max CPU has
        # AVX2, a node's SHA-NI).
        assert facts["crypto.sha256"] != "sha256-generic", facts

        with pytest.raises(QemuError, match="blockdev-add"):  # refused, nothing half attached
            await vm.hotplug_disk(Disk("missing", vm_dir / "missing.img"))
        data = vm_dir / "data.img"
        data.write_bytes(b"\0" * (2 << 20))
        await vm.hotplug_disk(Disk("data1", data, serial="hotplug-data1"))
        seen = await wait_for_disk(agent, "hotplug-data1", present=True)
        assert seen == f"serial:hotplug-data1,bytes:{2 << 20}"

        await vm.unplug_disk("data1")
        await wait_for_disk(agent, "hotplug-data1", present=False)
    finally:
        await agent.close()
        info = await vm.stop()
    assert info.expected
    assert info.returncode == 0, info  # the guest powered itself off on the ACPI button
    assert "guest services exited with status 0; powering off" in info.console_tail
    assert not alive(pid)
    assert sorted(p.name for p in vm_dir.iterdir()) == ["console.log", "data.img", "initdata.img"]


async def test_flipped_byte_in_root_fails_verity(guest_image: GuestImage, vm_dir: Path) -> None:
    root = vm_dir / "root.img"
    shutil.copyfile(guest_image.root, root)
    with root.open("r+b") as f:  # inside the erofs superblock, which every mount reads
        f.seek(1024 + 8)
        byte = f.read(1)
        f.seek(1024 + 8)
        f.write(bytes([byte[0] ^ 0x01]))
    config = vm_config(guest_image, vm_dir, "tampered", root=root)
    vm = await VM.launch(config)
    try:
        with pytest.raises(VerityError) as caught:
            await vm.wait_ready(BOOT_TIMEOUT)
    finally:
        await vm.stop()
    message = str(caught.value)
    assert "dm-verity check of the root image failed" in message
    assert "verity" in caught.value.console_tail
    assert "corrupted" in message  # quoted from the kernel's console line
    assert "contrast-guest-agent: ready" not in caught.value.console_tail


async def test_qemu_killed_from_outside_is_reported_at_once(
    guest_image: GuestImage, vm_dir: Path
) -> None:
    config = vm_config(guest_image, vm_dir, "victim")
    vm = await VM.launch(config)
    reported: list[float] = []
    vm.process.on_exit(lambda _info: reported.append(time.monotonic()))
    await asyncio.sleep(1.0)  # let it boot a little
    killed_at = time.monotonic()
    os.kill(vm.process.pid, signal.SIGKILL)
    info = await asyncio.wait_for(asyncio.shield(vm.exited), 5.0)
    await vm.stop()
    assert info.reason == "killed by signal SIGKILL"
    assert not info.expected
    # The requirement: the death is noticed within a second.
    assert reported and reported[0] - killed_at < 1.0
    assert not (vm_dir / "qmp.sock").exists()
    assert not (vm_dir / "agent.sock").exists()


def test_tcg_probe_really_boots() -> None:
    assert probe("qemu-system-x86_64", Accel.TCG)
