"""The QEMU argument lists of SNP and TDX pod-VMs for a given document: the launch
binding and the initdata disk, as built by the VM manager from our typed pieces."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path

from agent.initdata import InitdataLaunch, from_annotation, prepare
from agent.initdata.pod import from_toml
from agent.vm.argv import PassedFds, build_argv
from agent.vm.config import Accel, Disk, VirtioSerialTransport, VMConfig
from agent.vm.config import Platform as VmPlatform
from agent.vm.qemuopts import split
from tests.unit.initdata import vectors


def vm_config(launch: InitdataLaunch, tmp_path: Path) -> VMConfig:
    hardware = launch.platform is not VmPlatform.INSECURE
    return VMConfig(
        name="pod0",
        kernel=Path("/opt/contrast/vmlinuz"),
        initrd=Path("/opt/contrast/initrd.img"),
        root=Disk(id="root", path=Path("/opt/contrast/root.img"), read_only=True),
        cmdline=("console=ttyS0", *launch.kernel_cmdline()),
        console_log=tmp_path / "console.log",
        qmp_socket=tmp_path / "qmp.sock",
        transport=VirtioSerialTransport(socket=tmp_path / "agent.sock"),
        platform=launch.platform,
        accel=Accel.KVM if hardware else Accel.TCG,
        firmware=Path("/opt/contrast/OVMF.fd") if hardware else None,
        snp=launch.snp(),
        tdx=launch.tdx(),
        disks=(launch.disk(),),
    )


def objects(argv: list[str], kind: str) -> list[dict[str, str]]:
    found = []
    for flag, option in itertools.pairwise(argv):
        if flag == "-object" and option.startswith(kind + ","):
            found.append(dict(split(option)[1:]))
    return found


def initdata_disk_args(argv: list[str]) -> list[dict[str, object]]:
    pairs = itertools.pairwise(argv)
    parsed = [
        json.loads(opt)
        for flag, opt in pairs
        if flag in ("-blockdev", "-device") and opt.startswith("{")
    ]
    return [
        p for p in parsed if isinstance(p, dict) and "initdata" in (p.get("node-name"), p.get("id"))
    ]


def test_snp_argv_for_the_trustee_document(tmp_path: Path) -> None:
    pod = from_toml(vectors.read("trustee-init-data-with-policy.toml"))
    argv = build_argv(
        vm_config(prepare(pod, VmPlatform.SNP, tmp_path), tmp_path), PassedFds(qmp=3, agent=4)
    )
    (snp,) = objects(argv, "sev-snp-guest")
    assert snp["host-data"] == vectors.TRUSTEE_HOST_DATA_B64
    assert objects(argv, "tdx-guest") == []
    assert initdata_disk_args(argv) == [
        {
            "driver": "raw",
            "node-name": "initdata",
            "read-only": True,
            "file": {
                "driver": "file",
                "filename": str(tmp_path / "initdata.img"),
                "read-only": True,
            },
        },
        {"driver": "virtio-blk-pci", "id": "initdata", "drive": "initdata", "serial": "initdata"},
    ]
    assert "contrast.platform=insecure" not in " ".join(argv)


def test_snp_argv_truncates_sha384(tmp_path: Path) -> None:
    pod = from_annotation(vectors.read("caa-docs-initdata-example.annotation.b64").decode())
    argv = build_argv(
        vm_config(prepare(pod, VmPlatform.SNP, tmp_path), tmp_path), PassedFds(qmp=3, agent=4)
    )
    (snp,) = objects(argv, "sev-snp-guest")
    assert snp["host-data"] == vectors.CAA_HOST_DATA_B64


def test_tdx_argv_for_the_caa_document(tmp_path: Path) -> None:
    pod = from_annotation(vectors.read("caa-docs-initdata-example.annotation.b64").decode())
    argv = build_argv(
        vm_config(prepare(pod, VmPlatform.TDX, tmp_path), tmp_path), PassedFds(qmp=3, agent=4)
    )
    (tdx,) = objects(argv, "tdx-guest")
    assert base64.b64decode(tdx["mrconfigid"]).hex() == vectors.CAA_SHA384
    assert objects(argv, "sev-snp-guest") == []
    assert len(initdata_disk_args(argv)) == 2


def test_tdx_argv_pads_sha256(tmp_path: Path) -> None:
    pod = from_toml(vectors.read("trustee-init-data-with-policy.toml"))
    argv = build_argv(
        vm_config(prepare(pod, VmPlatform.TDX, tmp_path), tmp_path), PassedFds(qmp=3, agent=4)
    )
    (tdx,) = objects(argv, "tdx-guest")
    assert base64.b64decode(tdx["mrconfigid"]).hex() == vectors.TRUSTEE_SHA256 + "00" * 16


def test_insecure_argv_carries_the_digest_on_the_cmdline(tmp_path: Path) -> None:
    pod = from_toml(vectors.read("trustee-init-data-with-policy.toml"))
    argv = build_argv(
        vm_config(prepare(pod, VmPlatform.INSECURE, tmp_path), tmp_path), PassedFds(qmp=3, agent=4)
    )
    append = argv[argv.index("-append") + 1].split()
    assert "contrast.platform=insecure" in append
    assert f"contrast.initdata_digest={vectors.TRUSTEE_SHA256}" in append
    assert objects(argv, "sev-snp-guest") == objects(argv, "tdx-guest") == []
