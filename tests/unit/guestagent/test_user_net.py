"""The development/test-only user-mode network option of VMConfig (used by the in-VM
agent test so the guest reaches a loopback registry as 10.0.2.2)."""

import dataclasses
import json
from pathlib import Path

import pytest

from agent.vm.argv import PassedFds, build_argv
from agent.vm.config import Accel, Disk, Platform, UserNet, VirtioSerialTransport, VMConfig
from agent.vm.errors import ConfigError
from agent.vm.qemuopts import split

CONFIG = VMConfig(
    name="pod1",
    kernel=Path("/img/vmlinuz"),
    initrd=Path("/img/initrd.img"),
    root=Disk("root", Path("/img/root.img"), read_only=True),
    cmdline=("console=ttyS0",),
    console_log=Path("/run/vm/console.log"),
    qmp_socket=Path("/run/vm/qmp.sock"),
    transport=VirtioSerialTransport(Path("/run/vm/agent.sock")),
)


def test_user_net_argv() -> None:
    argv = build_argv(dataclasses.replace(CONFIG, user_net=UserNet()), PassedFds(qmp=3, agent=4))
    netdev = argv[argv.index("-netdev") + 1]
    assert split(netdev) == [("", "user"), ("id", "user0")]
    devices = [json.loads(a) for a in argv if a.startswith("{")]
    nics = [d for d in devices if d.get("driver") == "virtio-net-pci"]
    assert nics == [
        {"driver": "virtio-net-pci", "id": "user0-nic", "netdev": "user0",
         "mac": "52:54:00:12:34:56", "romfile": ""}
    ]  # fmt: skip


def test_user_net_refused_on_confidential_platforms() -> None:
    with pytest.raises(ConfigError, match="insecure platform only"):
        dataclasses.replace(CONFIG, user_net=UserNet(), platform=Platform.SNP, accel=Accel.KVM)


@pytest.mark.parametrize("mac", ["52:54:00:12:34:56,hostfwd=tcp::22-:22", "01:00:00:00:00:01"])
def test_user_net_mac_checked(mac: str) -> None:
    with pytest.raises(ConfigError, match="unicast MAC"):
        UserNet(mac=mac)
