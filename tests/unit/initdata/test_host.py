"""Host side: the pod annotation, the launch binding for QEMU, the disk file."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from agent.initdata import ANNOTATION, InitdataError, from_annotation, from_annotations, prepare
from agent.initdata.launch import disk_image, write_disk
from agent.initdata.pod import from_toml
from agent.vm.config import Disk
from agent.vm.config import Platform as VmPlatform
from guest.initdata import codec, disk, document
from guest.initdata.binding import Platform
from tests.unit.initdata import vectors

POLICY = "package agent_policy\n\ndefault CreateContainerRequest := true\n"


def test_annotation_name() -> None:
    assert ANNOTATION == "io.katacontainers.config.hypervisor.cc_init_data"


def test_no_annotation_means_no_initdata() -> None:
    assert from_annotations({"io.kubernetes.cri.sandbox-id": "abc"}) is None


def test_caa_annotation_keeps_raw_bytes() -> None:
    value = vectors.read("caa-docs-initdata-example.annotation.b64").decode()
    pod = from_annotations({ANNOTATION: value})
    assert pod is not None
    assert pod.raw == vectors.read("caa-docs-initdata-example.toml")
    assert pod.digest.hex() == vectors.CAA_SHA384
    assert base64.b64encode(pod.bound_value(Platform.SNP)).decode() == vectors.CAA_HOST_DATA_B64
    assert pod.bound_value(Platform.TDX).hex() == vectors.CAA_SHA384


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "not standard base64"),
        (base64.b64encode(b"not gzip").decode(), "not gzip"),
        (codec.encode_annotation(b'version = "9"\nalgorithm = "sha256"\n'), "version '9'"),
        (codec.encode_annotation(vectors.read("kata-default-initdata.toml")), "no 'policy.rego'"),
        (
            base64.b64encode(codec.compress(bytes(8 * 1024 * 1024))).decode(),
            "gzip bomb refused",
        ),
    ],
)
def test_bad_annotations_name_the_annotation(value: str, message: str) -> None:
    with pytest.raises(InitdataError, match=message) as info:
        from_annotation(value)
    assert str(info.value).startswith(f"pod annotation {ANNOTATION}: ")


def test_from_toml() -> None:
    doc = document.create({"policy.rego": POLICY})
    assert from_toml(doc.raw).digest == doc.digest
    with pytest.raises(InitdataError, match=r"initdata document: .*not valid TOML"):
        from_toml(b"=")


def kata_default_with_policy() -> bytes:
    return vectors.read("kata-default-initdata.toml") + b'"policy.rego" = "package agent_policy"\n'


def test_snp_launch(tmp_path: Path) -> None:
    pod = from_toml(kata_default_with_policy())
    launch = prepare(pod, VmPlatform.SNP, tmp_path)
    snp = launch.snp(policy=0x30000)
    assert snp is not None and snp.host_data == pod.digest  # sha256 fills HOST_DATA exactly
    assert launch.tdx() is None
    assert launch.kernel_cmdline() == ()
    assert launch.disk() == Disk(
        id="initdata", path=tmp_path / "initdata.img", read_only=True, serial="initdata"
    )
    assert disk.read(launch.disk_path) == pod.raw


def test_tdx_launch_sha384(tmp_path: Path) -> None:
    pod = from_annotation(vectors.read("caa-docs-initdata-example.annotation.b64").decode())
    launch = prepare(pod, VmPlatform.TDX, tmp_path)
    tdx = launch.tdx()
    assert tdx is not None and tdx.mrconfigid.hex() == vectors.CAA_SHA384
    assert launch.snp() is None and launch.kernel_cmdline() == ()


def test_insecure_launch(tmp_path: Path) -> None:
    pod = from_toml(kata_default_with_policy())
    launch = prepare(pod, VmPlatform.INSECURE, tmp_path)
    assert launch.snp() is None and launch.tdx() is None
    assert launch.kernel_cmdline() == (
        "contrast.platform=insecure",
        f"contrast.initdata_digest={pod.digest.hex()}",
    )


def test_disk_file_is_written_atomically(tmp_path: Path) -> None:
    pod = from_toml(kata_default_with_policy())
    path = tmp_path / "initdata.img"
    path.write_bytes(b"old")
    write_disk(path, disk_image(pod))
    assert path.read_bytes() == disk.encode(pod.raw)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["initdata.img"]
    with pytest.raises(InitdataError, match="cannot write the initdata disk"):
        write_disk(tmp_path / "missing" / "initdata.img", b"x")
