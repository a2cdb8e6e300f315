"""The guest image (built once per input hash, shared with the bench) and VM configs."""

import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.initdata.launch import prepare
from agent.initdata.pod import from_toml
from agent.vm import console
from agent.vm.config import Disk, UserNet, VirtioSerialTransport, VMConfig
from guest.image.build import ensure_image
from guest.image.manifest import GuestImage
from guest.initdata.binding import insecure_cmdline
from guest.initdata.disk import encode
from guest.initdata.document import POLICY_NAME, create
from tests.conftest import call_failed, require_programs


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    require_programs("mmdebstrap", "mkfs.erofs", "veritysetup", "qemu-system-x86_64")
    if os.geteuid() != 0:
        pytest.skip("building the guest image needs root")
    return ensure_image()


@pytest.fixture
def vm_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    # A comma in the directory name: every path QEMU gets must survive its option syntax.
    # Short, under /tmp: unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="vm,") as tmp:
        yield Path(tmp)
        if call_failed(request):
            print_consoles(Path(tmp))


CONSOLE_TAIL = 32768


def print_consoles(directory: Path) -> None:
    """Print the tail of every console log under ``directory`` (the guest kernel's and
    agent's own account of a failure: pytest shows it under "Captured stdout teardown")."""
    for log in sorted(directory.rglob("*console*.log")):
        print(f"----- {log} (last {CONSOLE_TAIL} bytes) -----")
        print(console.tail(log, CONSOLE_TAIL))


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


def registry_initdata(policy: str, registry_host: str) -> bytes:
    """An initdata TOML document: ``policy`` and a puller config trusting ``registry_host``
    over plain HTTP (the tests' loopback registry, seen from the guest)."""
    registries = f'[registries."{registry_host}"]\ninsecure = true\n'
    return (
        'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n'
        f"\"policy.rego\" = '''\n{policy}'''\n"
        f"\"imagepull.toml\" = '''\n{registries}'''\n"
    ).encode()


def pod_vm_config(
    image: GuestImage, directory: Path, name: str, initdata: bytes, mac: str
) -> VMConfig:
    """A pod-VM config as the daemon launches one: ``initdata`` (a TOML document) prepared
    for the base config's platform under ``directory/pod`` replaces the allow-all one
    vm_config attaches (disk and cmdline), user networking with ``mac``, 768 MiB."""
    base = vm_config(image, directory, name)
    (directory / "pod").mkdir()
    launch = prepare(from_toml(initdata), base.platform, directory / "pod")
    return dataclasses.replace(
        base,
        cmdline=(*image.manifest.cmdline, *launch.kernel_cmdline()),
        disks=(launch.disk(),),
        user_net=UserNet(mac=mac),
        memory_mib=768,
    )
