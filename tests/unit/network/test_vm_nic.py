"""The VM's virtio-net device on a tap passed by fd: argv and validation."""

import dataclasses
import json
from pathlib import Path

import pytest

from agent.vm.argv import PassedFds, build_argv
from agent.vm.config import Disk, NetDevice, VirtioSerialTransport, VMConfig
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


def test_nic_on_tap_fd() -> None:
    config = dataclasses.replace(CONFIG, net=NetDevice(mac="02:00:0a:d5:2f:02", mtu=1400))
    argv = build_argv(config, PassedFds(qmp=3, agent=4, tap=5))
    netdev = argv[argv.index("-netdev") + 1]
    assert split(netdev) == [("", "tap"), ("id", "net0"), ("fd", "5"), ("vhost", "off")]
    devices = [json.loads(a) for a in argv[1:] if a.startswith("{")]
    nics = [d for d in devices if d.get("driver") == "virtio-net-pci"]
    assert nics == [
        {"driver": "virtio-net-pci", "id": "net0-nic", "netdev": "net0",
         "mac": "02:00:0a:d5:2f:02", "host_mtu": 1400, "romfile": ""}
    ]  # fmt: skip


def test_no_nic_without_net() -> None:
    argv = build_argv(CONFIG, PassedFds(qmp=3, agent=4, tap=5))
    assert "-netdev" not in argv
    assert "virtio-net-pci" not in " ".join(argv)


def test_nic_needs_the_tap_fd() -> None:
    config = dataclasses.replace(CONFIG, net=NetDevice(mac="02:00:0a:d5:2f:02"))
    with pytest.raises(ValueError, match="needs the tap's fd"):
        build_argv(config, PassedFds(qmp=3, agent=4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mac": "02:00:0a:d5:2f:02,fd=7"}, "is not aa:bb"),
        ({"mac": "02:00:0A:D5:2F:02"}, "is not aa:bb"),
        ({"mac": "03:00:0a:d5:2f:02"}, "multicast"),
        ({"mac": "02:00:0a:d5:2f:02", "mtu": 67}, "MTU 67 out of range"),
        ({"mac": "02:00:0a:d5:2f:02", "mtu": 65536}, "out of range"),
        ({"mac": "02:00:0a:d5:2f:02", "id": "net0,x=y"}, "not a valid id"),
    ],
)
def test_nic_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NetDevice(**kwargs)  # type: ignore[arg-type]
