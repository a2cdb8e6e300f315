"""The guest image (built once per input hash, shared with the bench) and VM configs."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.vm.config import Disk, VirtioSerialTransport, VMConfig
from guest.image.build import ensure_image
from guest.image.manifest import GuestImage
from tests.conftest import require_programs


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    require_programs("mmdebstrap", "mkfs.erofs", "veritysetup", "qemu-system-x86_64")
    if os.geteuid() != 0:
        pytest.skip("building the guest image needs root")
    return ensure_image()


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    # A comma in the directory name: every path QEMU gets must survive its option syntax.
    # Short, under /tmp: unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="vm,") as tmp:
        yield Path(tmp)


def vm_config(image: GuestImage, directory: Path, name: str, root: Path | None = None) -> VMConfig:
    return VMConfig(
        name=name,
        kernel=image.kernel,
        initrd=image.initrd,
        root=Disk("root", root or image.root, read_only=True, serial="contrast-root"),
        cmdline=image.manifest.cmdline,
        console_log=directory / "console.log",
        qmp_socket=directory / "qmp.sock",
        transport=VirtioSerialTransport(directory / "agent.sock"),
        vcpus=2,
        memory_mib=512,
    )
