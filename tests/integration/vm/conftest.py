"""The guest image (built once per input hash, shared with the bench) and VM configs."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.vm.config import Disk, VirtioSerialTransport, VMConfig
from guest.image.build import ensure_image
from guest.image.manifest import GuestImage
from guest.initdata.binding import insecure_cmdline
from guest.initdata.disk import encode
from guest.initdata.document import POLICY_NAME, create
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


# These tests are about the VM, not the policy: every agent request is allowed.
ALLOW_ALL = """package agent_policy

default AllowRequestsFailingPolicy := true

default GuestDetailsRequest := true
"""


def initdata_disk(directory: Path) -> tuple[Disk, tuple[str, ...]]:
    """An initdata disk carrying ALLOW_ALL, and the insecure platform's cmdline words."""
    document = create({POLICY_NAME: ALLOW_ALL})
    path = directory / "initdata.img"
    path.write_bytes(encode(document.raw))
    return Disk("initdata", path, read_only=True, serial="initdata"), insecure_cmdline(
        document.digest
    )


def vm_config(image: GuestImage, directory: Path, name: str, root: Path | None = None) -> VMConfig:
    initdata, words = initdata_disk(directory)
    return VMConfig(
        name=name,
        kernel=image.kernel,
        initrd=image.initrd,
        root=Disk("root", root or image.root, read_only=True, serial="contrast-root"),
        disks=(initdata,),
        cmdline=(*image.manifest.cmdline, *words),
        console_log=directory / "console.log",
        qmp_socket=directory / "qmp.sock",
        transport=VirtioSerialTransport(directory / "agent.sock"),
        vcpus=2,
        memory_mib=512,
    )
