"""Shared VM configurations for the unit tests."""

from pathlib import Path

import pytest

from agent.vm.config import Disk, VirtioSerialTransport, VMConfig


@pytest.fixture
def base_config() -> VMConfig:
    return VMConfig(
        name="pod1",
        kernel=Path("/img/vmlinuz"),
        initrd=Path("/img/initrd.img"),
        root=Disk("root", Path("/img/root.img"), read_only=True, serial="contrast-root"),
        cmdline=("console=ttyS0", "contrast.verity.roothash=ab12"),
        console_log=Path("/run/vm/console.log"),
        qmp_socket=Path("/run/vm/qmp.sock"),
        transport=VirtioSerialTransport(Path("/run/vm/agent.sock")),
        vcpus=2,
        memory_mib=1024,
        hotplug_slots=2,
    )
