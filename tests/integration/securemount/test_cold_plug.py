"""A host block device cold-plugged at launch: passed to QEMU by fd, found by serial."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.config import HostBlockDevice
from agent.vm.manager import VM
from guest.image.manifest import GuestImage
from tests.conftest import require_programs
from tests.integration.vm.conftest import guest_image, vm_config, vm_dir

__all__ = ["guest_image", "vm_dir"]  # fixtures used here

pytestmark = pytest.mark.vm
SIZE = 48 << 20


async def test_cold_plugged_loop_device(guest_image: GuestImage, vm_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    require_programs("losetup")
    backing = vm_dir / "vol.img"
    with backing.open("wb") as f:
        f.truncate(SIZE)
    loop = subprocess.run(("losetup", "--find", "--show", str(backing)), capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()  # fmt: skip
    try:
        config = dataclasses.replace(
            vm_config(guest_image, vm_dir, "cold"),
            block_devices=(HostBlockDevice("vol", Path(loop), "cold-vol"),),
        )
        vm = await VM.launch(config)
        agent = AgentClient(await connect(config.transport))
        try:
            cmdline = Path(f"/proc/{vm.process.pid}/cmdline").read_bytes()
            assert loop.encode() not in cmdline  # an fd, never the path
            assert b"/dev/fdset/" in cmdline
            await vm.wait_ready(300)
            facts: dict[str, str] = {}
            for _ in range(50):
                facts = AgentClient.features(await agent.guest_details(timeout=120))
                if any(v == f"serial:cold-vol,bytes:{SIZE}" for v in facts.values()):
                    break
                await asyncio.sleep(0.2)
            assert f"serial:cold-vol,bytes:{SIZE}" in facts.values(), facts
        finally:
            await agent.close()
            await vm.stop()
    finally:
        subprocess.run(("losetup", "--detach", loop), check=False, timeout=60)
