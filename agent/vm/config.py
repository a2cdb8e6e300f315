"""The typed VM configuration. Constructing one validates every field.

Nothing outside this module builds QEMU arguments from loose strings: whatever a
caller (ultimately a pod annotation) influences arrives here as a typed field and is
checked before :mod:`agent.vm.argv` turns it into an argument list.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path

from agent.vm.errors import ConfigError
from agent.vm.qemuopts import ident

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
_SERIAL = re.compile(r"[A-Za-z0-9_-]{1,20}\Z")  # virtio-blk serials are at most 20 bytes
_PORT_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,62}\Z")
_CMDLINE_PARAM = re.compile(r"[A-Za-z0-9_.,:/=+@-]+\Z")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")


class Platform(enum.Enum):
    """Where the guest runs: no TEE (development, CI), AMD SEV-SNP, Intel TDX."""

    INSECURE = "insecure"
    SNP = "snp"
    TDX = "tdx"


class Accel(enum.Enum):
    KVM = "kvm"
    TCG = "tcg"


class DiskFormat(enum.Enum):
    RAW = "raw"
    QCOW2 = "qcow2"


def _check_path(path: Path, what: str) -> None:
    text = str(path)
    if not path.is_absolute():
        raise ConfigError(f"{what}: {text!r} is not an absolute path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ConfigError(f"{what}: control character in {text!r}")


def _check_socket(path: Path, what: str) -> None:
    _check_path(path, what)
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise ConfigError(f"{what}: {str(path)!r} is longer than {MAX_SOCKET_PATH} bytes")


@dataclass(frozen=True)
class Disk:
    """A virtio-blk disk backed by a host file. ``id`` names it in QEMU and QMP."""

    id: str
    path: Path
    read_only: bool = False
    serial: str | None = None
    format: DiskFormat = DiskFormat.RAW

    def __post_init__(self) -> None:
        ident(self.id, "disk id")
        _check_path(self.path, f"disk {self.id} path")
        if self.serial is not None and not _SERIAL.match(self.serial):
            raise ConfigError(
                f"disk {self.id} serial: {self.serial!r} must be 1-20 of A-Z a-z 0-9 _ -"
            )


@dataclass(frozen=True)
class HostBlockDevice:
    """A host block device node given to the VM as a virtio-blk disk (a block volume,
    the secure image store's disk): ``id`` names it in QEMU, ``serial`` in the guest.
    QEMU gets an fd we open (:mod:`agent.vm.blockdev`), never the path."""

    id: str
    path: Path
    serial: str
    read_only: bool = False

    def __post_init__(self) -> None:
        ident(self.id, f"block device {self.path} id")
        _check_path(self.path, f"block device {self.id} path")
        if not _SERIAL.match(self.serial):
            raise ConfigError(
                f"block device {self.path} serial: {self.serial!r} must be 1-20 of "
                "A-Z a-z 0-9 _ -"
            )


@dataclass(frozen=True)
class VirtioSerialTransport:
    """ttrpc over a virtio-serial port; QEMU's end is a unix socket the host connects to."""

    socket: Path
    port_name: str = "agent.channel.0"

    def __post_init__(self) -> None:
        _check_socket(self.socket, "virtio-serial socket")
        if not _PORT_NAME.match(self.port_name):
            raise ConfigError(f"virtio-serial port name {self.port_name!r} is not allowed")


@dataclass(frozen=True)
class VsockTransport:
    """ttrpc over vsock (vhost-vsock on the host) to the guest agent's port."""

    guest_cid: int
    port: int = 1024

    def __post_init__(self) -> None:
        if not 3 <= self.guest_cid < 0xFFFFFFFF:
            raise ConfigError(f"vsock guest CID {self.guest_cid} out of range 3..2^32-2")
        if not 1 <= self.port < 0xFFFFFFFF:
            raise ConfigError(f"vsock port {self.port} out of range")


Transport = VirtioSerialTransport | VsockTransport


@dataclass(frozen=True)
class NetDevice:
    """A virtio-net NIC on a tap the caller opened (in the pod's netns) and hands to
    QEMU by fd. ``mac`` is the pod interface's address; ``mtu`` reaches the guest."""

    mac: str
    mtu: int = 1500
    id: str = "net0"

    def __post_init__(self) -> None:
        ident(self.id, "network device id")
        if not _MAC.match(self.mac):
            raise ConfigError(
                f"network device {self.id}: MAC {self.mac!r} is not aa:bb:cc:dd:ee:ff"
            )
        if int(self.mac[:2], 16) & 1:
            raise ConfigError(f"network device {self.id}: MAC {self.mac} is a multicast address")
        if not 68 <= self.mtu <= 65535:
            raise ConfigError(f"network device {self.id}: MTU {self.mtu} out of range 68..65535")


@dataclass(frozen=True)
class UserNet:
    """QEMU user-mode networking (slirp), for development and tests only: the guest
    reaches the host's loopback as 10.0.2.2 (e.g. a test registry). Insecure platform
    only; production pods get a NetDevice in their netns."""

    mac: str = "52:54:00:12:34:56"
    id: str = "user0"

    def __post_init__(self) -> None:
        ident(self.id, "user network id")
        if not _MAC.match(self.mac) or int(self.mac[:2], 16) & 1:
            raise ConfigError(f"user network {self.id}: MAC {self.mac!r} is not a unicast MAC")


@dataclass(frozen=True)
class SnpLaunch:
    """SEV-SNP launch parameters. ``host_data`` is bound into the attestation report."""

    host_data: bytes
    cbitpos: int = 51
    reduced_phys_bits: int = 1
    policy: int = 0x30000

    def __post_init__(self) -> None:
        if len(self.host_data) != 32:
            raise ConfigError(f"SNP host_data must be 32 bytes, got {len(self.host_data)}")
        if not 32 <= self.cbitpos <= 63:
            raise ConfigError(f"SNP cbitpos {self.cbitpos} out of range 32..63")
        if not 0 <= self.reduced_phys_bits <= 63:
            raise ConfigError(f"SNP reduced_phys_bits {self.reduced_phys_bits} out of range")
        if self.policy & (1 << 19):
            raise ConfigError("SNP policy must not allow debugging (bit 19)")
        if not 0 <= self.policy < 1 << 64:
            raise ConfigError(f"SNP policy {self.policy:#x} out of range")


@dataclass(frozen=True)
class TdxLaunch:
    """TDX launch parameters. ``mrconfigid`` is bound into the TD quote."""

    mrconfigid: bytes

    def __post_init__(self) -> None:
        if len(self.mrconfigid) != 48:
            raise ConfigError(f"TDX mrconfigid must be 48 bytes, got {len(self.mrconfigid)}")


@dataclass(frozen=True)
class VMConfig:
    """Everything QEMU is started with for one pod-VM."""

    name: str
    kernel: Path
    initrd: Path
    root: Disk
    cmdline: tuple[str, ...]
    console_log: Path
    qmp_socket: Path
    transport: Transport
    vcpus: int = 1
    memory_mib: int = 512
    platform: Platform = Platform.INSECURE
    accel: Accel = Accel.TCG
    firmware: Path | None = None
    snp: SnpLaunch | None = None
    tdx: TdxLaunch | None = None
    disks: tuple[Disk, ...] = field(default_factory=tuple)
    # Cold-plugged at launch (on the root bus: they stay until the VM ends).
    block_devices: tuple[HostBlockDevice, ...] = field(default_factory=tuple)
    net: NetDevice | None = None
    user_net: UserNet | None = None
    hotplug_slots: int = 4
    qemu: str = "qemu-system-x86_64"

    def __post_init__(self) -> None:
        ident(self.name, "VM name")
        for what, path in (("kernel", self.kernel), ("initrd", self.initrd)):
            _check_path(path, what)
        _check_path(self.console_log, "console log")
        _check_socket(self.qmp_socket, "QMP socket")
        if not 1 <= self.vcpus <= 240:
            raise ConfigError(f"vcpus {self.vcpus} out of range 1..240")
        if not 64 <= self.memory_mib <= 1 << 20:
            raise ConfigError(f"memory_mib {self.memory_mib} out of range 64..1048576")
        if not 0 <= self.hotplug_slots <= 32:
            raise ConfigError(f"hotplug_slots {self.hotplug_slots} out of range 0..32")
        for param in self.cmdline:
            if not _CMDLINE_PARAM.match(param):
                raise ConfigError(f"kernel command line parameter {param!r} is not allowed")
        ids = [self.root.id, *(d.id for d in self.disks), *(b.id for b in self.block_devices)]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"disk ids must be unique: {ids}")
        self._check_platform()

    def _check_platform(self) -> None:
        if self.firmware is not None:
            _check_path(self.firmware, "firmware")
        if self.user_net is not None and self.platform is not Platform.INSECURE:
            raise ConfigError("user-mode networking is for the insecure platform only")
        if self.platform is Platform.INSECURE:
            if self.snp or self.tdx:
                raise ConfigError("the insecure platform takes no SNP/TDX launch parameters")
            return
        if self.accel is not Accel.KVM:
            raise ConfigError(f"platform {self.platform.value} needs KVM, not TCG")
        if self.firmware is None:
            raise ConfigError(f"platform {self.platform.value} needs firmware (OVMF)")
        if self.platform is Platform.SNP and (self.snp is None or self.tdx is not None):
            raise ConfigError("platform snp needs SNP launch parameters (and no TDX ones)")
        if self.platform is Platform.TDX and (self.tdx is None or self.snp is not None):
            raise ConfigError("platform tdx needs TDX launch parameters (and no SNP ones)")
