"""Turn a VMConfig into QEMU's argument list.

Paths and names come from the validated config; values inside key=value options go
through :mod:`agent.vm.qemuopts`; block devices and devices use QEMU's JSON option
syntax, where there is no separator to smuggle. The QMP and agent sockets are
created by the caller and handed over as listening file descriptors, so there is no
window between "QEMU started" and "QEMU listening".
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from agent.vm.blockdev import blockdev_json as host_blockdev_json
from agent.vm.config import (
    Accel,
    Disk,
    NetDevice,
    Platform,
    UserNet,
    VirtioSerialTransport,
    VMConfig,
    VsockTransport,
)
from agent.vm.qemuopts import opts, value

SNP_ID = "sev0"
TDX_ID = "tdx0"
MEMORY_ID = "ram0"
VSERIAL_ID = "vser0"
AGENT_CHARDEV = "agent"
CONSOLE_CHARDEV = "console"
QMP_CHARDEV = "qmp"


@dataclass(frozen=True)
class PassedFds:
    """Listening sockets the caller created, by fd number in QEMU's process."""

    qmp: int
    agent: int | None = None
    tap: int | None = None
    block: tuple[int, ...] = ()  # open fds of config.block_devices, in order


# Fd sets of cold-plugged block devices: far above those add-fd picks for hotplugs.
COLD_FDSET_BASE = 1000


def hotplug_port(index: int) -> str:
    """The id of the index-th PCIe root port kept free for hotplug."""
    return f"hp{index}"


def blockdev_json(disk: Disk) -> dict[str, object]:
    """The blockdev-add argument (also used on the command line) for ``disk``."""
    return {
        "driver": disk.format.value,
        "node-name": disk.id,
        "read-only": disk.read_only,
        "file": {"driver": "file", "filename": str(disk.path), "read-only": disk.read_only},
    }


def device_json(disk: Disk, bus: str | None = None) -> dict[str, object]:
    """The virtio-blk-pci device (for -device or device_add) for ``disk``."""
    device: dict[str, object] = {"driver": "virtio-blk-pci", "id": disk.id, "drive": disk.id}
    if disk.serial is not None:
        device["serial"] = disk.serial
    if bus is not None:
        device["bus"] = bus
    return device


def _json(obj: dict[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _machine(config: VMConfig) -> str:
    fields: dict[str, str | int | bool] = {"accel": config.accel.value}
    if config.platform is Platform.SNP:
        fields.update(confidential_guest_support=SNP_ID, memory_backend=MEMORY_ID, vmport=False)
    elif config.platform is Platform.TDX:
        fields.update(
            kernel_irqchip="split",
            confidential_guest_support=TDX_ID,
            memory_backend=MEMORY_ID,
            hpet=False,
        )
    return opts("q35", **fields)


def _cpu(config: VMConfig) -> str:
    if config.accel is Accel.TCG:
        return "max"
    if config.platform is Platform.SNP:
        return "EPYC-v4"
    return "host"


def _platform_args(config: VMConfig) -> list[str]:
    args: list[str] = []
    if config.platform is Platform.SNP and config.snp is not None:
        snp = config.snp
        args += [
            "-object",
            opts("memory-backend-memfd", id=MEMORY_ID, size=f"{config.memory_mib}M", share=True),
        ]
        args += [
            "-object",
            opts(
                "sev-snp-guest",
                id=SNP_ID,
                cbitpos=snp.cbitpos,
                reduced_phys_bits=snp.reduced_phys_bits,
                kernel_hashes=True,
                host_data=base64.b64encode(snp.host_data).decode(),
                policy=f"{snp.policy:#x}",
            ),
        ]
    elif config.platform is Platform.TDX and config.tdx is not None:
        args += ["-object", opts("memory-backend-ram", id=MEMORY_ID, size=f"{config.memory_mib}M")]
        args += [
            "-object",
            opts(
                "tdx-guest", id=TDX_ID, mrconfigid=base64.b64encode(config.tdx.mrconfigid).decode()
            ),
        ]
    if config.firmware is not None:
        args += ["-bios", str(config.firmware)]
    return args


def _transport_args(config: VMConfig, fds: PassedFds) -> list[str]:
    transport = config.transport
    if isinstance(transport, VirtioSerialTransport):
        if fds.agent is None:
            raise ValueError("a virtio-serial transport needs the agent socket's fd")
        return [
            "-device",
            opts("virtio-serial-pci", id=VSERIAL_ID),
            "-chardev",
            opts("socket", id=AGENT_CHARDEV, fd=fds.agent, server=True, wait=False),
            "-device",
            opts(
                "virtserialport",
                bus=f"{VSERIAL_ID}.0",
                chardev=AGENT_CHARDEV,
                name=transport.port_name,
            ),
        ]
    assert isinstance(transport, VsockTransport)
    return ["-device", opts("vhost-vsock-pci", id="vsock0", guest_cid=transport.guest_cid)]


def _net_args(net: NetDevice, fds: PassedFds) -> list[str]:
    if fds.tap is None:
        raise ValueError(f"network device {net.id} needs the tap's fd")
    # romfile "": no iPXE option ROM; we boot a kernel directly, never from the network.
    nic = {"driver": "virtio-net-pci", "id": f"{net.id}-nic", "netdev": net.id, "mac": net.mac,
           "host_mtu": net.mtu, "romfile": ""}  # fmt: skip
    return ["-netdev", opts("tap", id=net.id, fd=fds.tap, vhost=False), "-device", _json(nic)]


def _user_net_args(net: UserNet) -> list[str]:
    nic: dict[str, object] = {
        "driver": "virtio-net-pci",
        "id": f"{net.id}-nic",
        "netdev": net.id,
        "mac": net.mac,
        "romfile": "",
    }
    return ["-netdev", opts("user", id=net.id), "-device", _json(nic)]


def _block_device_args(config: VMConfig, fds: PassedFds) -> list[str]:
    if len(fds.block) != len(config.block_devices):
        raise ValueError(f"{len(config.block_devices)} block devices need as many open fds")
    args: list[str] = []
    for index, (device, fd) in enumerate(zip(config.block_devices, fds.block, strict=True)):
        fdset = COLD_FDSET_BASE + index
        disk = Disk(device.id, device.path, device.read_only, device.serial)
        args += ["-add-fd", opts("", fd=fd, set=fdset, opaque=device.id).lstrip(",")]
        args += ["-blockdev", _json(host_blockdev_json(device, fdset))]
        args += ["-device", _json(device_json(disk))]
    return args


def build_argv(config: VMConfig, fds: PassedFds) -> list[str]:
    """The complete QEMU command line for ``config``."""
    args = [
        config.qemu,
        "-name",
        config.name,
        "-machine",
        _machine(config),
        "-cpu",
        _cpu(config),
        "-smp",
        str(config.vcpus),
        "-m",
        f"{config.memory_mib}M",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-chardev",
        opts("file", id=CONSOLE_CHARDEV, path=value(str(config.console_log), "console log")),
        "-serial",
        f"chardev:{CONSOLE_CHARDEV}",
        "-chardev",
        opts("socket", id=QMP_CHARDEV, fd=fds.qmp, server=True, wait=False),
        "-mon",
        opts("", chardev=QMP_CHARDEV, mode="control").lstrip(","),
    ]
    args += _platform_args(config)
    args += [
        "-kernel",
        str(config.kernel),
        "-initrd",
        str(config.initrd),
        "-append",
        " ".join(config.cmdline),
    ]
    for disk in (config.root, *config.disks):
        args += ["-blockdev", _json(blockdev_json(disk)), "-device", _json(device_json(disk))]
    args += _block_device_args(config, fds)
    args += _transport_args(config, fds)
    if config.net is not None:
        args += _net_args(config.net, fds)
    if config.user_net is not None:
        args += _user_net_args(config.user_net)
    for index in range(config.hotplug_slots):
        args += [
            "-device",
            opts("pcie-root-port", id=hotplug_port(index), bus="pcie.0", chassis=index + 1),
        ]
    return args
