"""Invalid configurations are refused with a message naming the field."""

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from agent.vm.config import (
    Accel,
    Disk,
    Platform,
    SnpLaunch,
    TdxLaunch,
    VirtioSerialTransport,
    VMConfig,
    VsockTransport,
)
from agent.vm.errors import ConfigError


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "pod,1"}, "VM name"),
        ({"kernel": Path("relative/vmlinuz")}, "kernel"),
        ({"cmdline": ("init=/bin/sh panic=0",)}, "command line"),
        ({"cmdline": ('a="b"',)}, "command line"),
        ({"vcpus": 0}, "vcpus"),
        ({"memory_mib": 16}, "memory_mib"),
        ({"qmp_socket": Path("/" + "s" * 120)}, "longer than"),
        ({"disks": (Disk("root", Path("/x")),)}, "unique"),
        ({"platform": Platform.SNP}, "needs KVM"),
        ({"platform": Platform.SNP, "accel": Accel.KVM}, "firmware"),
        (
            {"platform": Platform.TDX, "accel": Accel.KVM, "firmware": Path("/fw")},
            "TDX launch parameters",
        ),
        ({"snp": SnpLaunch(host_data=b"\0" * 32)}, "insecure platform"),
    ],
)
def test_invalid_config(base_config: VMConfig, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(base_config, **change)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Disk("d", Path("/x"), serial="has space"), "serial"),
        (lambda: Disk("d", Path("/x"), serial="s" * 21), "serial"),
        (lambda: Disk("d,x", Path("/x")), "disk id"),
        (lambda: Disk("d", Path("/x\n")), "control character"),
        (lambda: SnpLaunch(host_data=b"\0" * 31), "32 bytes"),
        (lambda: SnpLaunch(host_data=b"\0" * 32, policy=0x30000 | 1 << 19), "debugging"),
        (lambda: TdxLaunch(mrconfigid=b"\0" * 32), "48 bytes"),
        (lambda: VsockTransport(guest_cid=2), "CID"),
        (lambda: VirtioSerialTransport(Path("/a"), port_name="Agent,x"), "port name"),
    ],
)
def test_invalid_parts(factory: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        factory()
