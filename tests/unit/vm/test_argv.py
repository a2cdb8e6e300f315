"""The QEMU argument lists, compared with the expected lists in full."""

import base64
import dataclasses
import json
from pathlib import Path

from agent.vm.argv import PassedFds, build_argv
from agent.vm.config import (
    Accel,
    Disk,
    Platform,
    SnpLaunch,
    TdxLaunch,
    VMConfig,
    VsockTransport,
)
from agent.vm.qemuopts import split

ROOT_BLOCKDEV = (
    '{"driver":"raw","file":{"driver":"file","filename":"/img/root.img","read-only":true},'
    '"node-name":"root","read-only":true}'
)
ROOT_DEVICE = '{"drive":"root","driver":"virtio-blk-pci","id":"root","serial":"contrast-root"}'
COMMON_TAIL = [
    "-kernel", "/img/vmlinuz",
    "-initrd", "/img/initrd.img",
    "-append", "console=ttyS0 contrast.verity.roothash=ab12",
    "-blockdev", ROOT_BLOCKDEV,
    "-device", ROOT_DEVICE,
]  # fmt: skip
HOTPLUG = [
    "-device", "pcie-root-port,id=hp0,bus=pcie.0,chassis=1",
    "-device", "pcie-root-port,id=hp1,bus=pcie.0,chassis=2",
]  # fmt: skip


def head(machine: str, cpu: str) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-name", "pod1",
        "-machine", machine,
        "-cpu", cpu,
        "-smp", "2",
        "-m", "1024M",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-chardev", "file,id=console,path=/run/vm/console.log",
        "-serial", "chardev:console",
        "-chardev", "socket,id=qmp,fd=3,server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
    ]  # fmt: skip


def test_insecure_tcg_with_virtio_serial(base_config: VMConfig) -> None:
    argv = build_argv(base_config, PassedFds(qmp=3, agent=4))
    assert argv == [
        *head("q35,accel=tcg", "max"),
        *COMMON_TAIL,
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", "socket,id=agent,fd=4,server=on,wait=off",
        "-device", "virtserialport,bus=vser0.0,chardev=agent,name=agent.channel.0",
        *HOTPLUG,
    ]  # fmt: skip


def test_snp(base_config: VMConfig) -> None:
    host_data = bytes(range(32))
    config = dataclasses.replace(
        base_config,
        platform=Platform.SNP,
        accel=Accel.KVM,
        firmware=Path("/opt/contrast/OVMF.fd"),
        snp=SnpLaunch(host_data=host_data),
        transport=VsockTransport(guest_cid=7),
    )
    b64 = base64.b64encode(host_data).decode()
    assert build_argv(config, PassedFds(qmp=3)) == [
        *head(
            "q35,accel=kvm,confidential-guest-support=sev0,memory-backend=ram0,vmport=off",
            "EPYC-v4",
        ),
        "-object", "memory-backend-memfd,id=ram0,size=1024M,share=on",
        "-object", "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,"
        f"host-data={b64},policy=0x30000",
        "-bios", "/opt/contrast/OVMF.fd",
        *COMMON_TAIL,
        "-device", "vhost-vsock-pci,id=vsock0,guest-cid=7",
        *HOTPLUG,
    ]  # fmt: skip


def test_tdx(base_config: VMConfig) -> None:
    mrconfigid = bytes(range(48))
    config = dataclasses.replace(
        base_config,
        platform=Platform.TDX,
        accel=Accel.KVM,
        firmware=Path("/opt/contrast/OVMF.inteltdx.fd"),
        tdx=TdxLaunch(mrconfigid=mrconfigid),
        transport=VsockTransport(guest_cid=9),
    )
    b64 = base64.b64encode(mrconfigid).decode()
    assert build_argv(config, PassedFds(qmp=3)) == [
        *head(
            "q35,accel=kvm,kernel-irqchip=split,confidential-guest-support=tdx0,"
            "memory-backend=ram0,hpet=off",
            "host",
        ),
        "-object", "memory-backend-ram,id=ram0,size=1024M",
        "-object", f"tdx-guest,id=tdx0,mrconfigid={b64}",
        "-bios", "/opt/contrast/OVMF.inteltdx.fd",
        *COMMON_TAIL,
        "-device", "vhost-vsock-pci,id=vsock0,guest-cid=9",
        *HOTPLUG,
    ]  # fmt: skip


def test_comma_in_console_path_cannot_add_chardev_options(base_config: VMConfig) -> None:
    evil = Path("/run/vm/x,server=on,path=/etc/shadow/console.log")
    config = dataclasses.replace(base_config, console_log=evil)
    argv = build_argv(config, PassedFds(qmp=3, agent=4))
    chardev = argv[argv.index("-serial") - 1]
    assert split(chardev) == [("", "file"), ("id", "console"), ("path", str(evil))]


def test_comma_in_disk_path_stays_one_filename(base_config: VMConfig) -> None:
    disk = Disk("data", Path("/data/a,file.driver=ssh"), serial="data")
    config = dataclasses.replace(base_config, disks=(disk,))
    argv = build_argv(config, PassedFds(qmp=3, agent=4))
    blockdevs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-blockdev"]
    assert blockdevs[1]["file"] == {
        "driver": "file",
        "filename": "/data/a,file.driver=ssh",
        "read-only": False,
    }
