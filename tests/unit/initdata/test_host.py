"""Host side: the pod annotation, the launch binding for QEMU, the disk file."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from agent.initdata import ANNOTATION, InitdataError, from_annotation, from_annotations, prepare
from agent.initdata.launch import InitdataLaunch, disk_image, qemu_escape, write_disk
from agent.initdata.pod import from_toml
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
    launch = prepare(pod, Platform.SNP, tmp_path)
    host_data = base64.b64decode(launch.confidential_properties()["host-data"])
    assert host_data == pod.digest and len(host_data) == 32  # sha256 fills HOST_DATA exactly
    assert list(launch.confidential_properties()) == ["host-data"]
    assert launch.kernel_cmdline() == ()
    assert launch.disk_path == tmp_path / "initdata.img"
    assert launch.qemu_disk_args() == [
        "-drive",
        f"if=none,id=initdata,file={tmp_path}/initdata.img,format=raw,readonly=on",
        "-device",
        "virtio-blk-pci,drive=initdata,serial=initdata",
    ]
    assert disk.read(launch.disk_path) == pod.raw


def test_kata_default_binding_values() -> None:
    raw = vectors.read("kata-default-initdata.toml")
    digest = document.parse(raw).digest
    snp = InitdataLaunch(Platform.SNP, digest, digest, Path("/x"))
    assert snp.confidential_properties() == {"host-data": vectors.KATA_DEFAULT_HOST_DATA_B64}
    tdx = InitdataLaunch(Platform.TDX, digest, digest + bytes(16), Path("/x"))
    mrconfigid = base64.b64decode(tdx.confidential_properties()["mrconfigid"])
    assert mrconfigid.hex() == vectors.KATA_DEFAULT_SHA256 + "00" * 16


def test_tdx_launch_sha384(tmp_path: Path) -> None:
    pod = from_annotation(vectors.read("caa-docs-initdata-example.annotation.b64").decode())
    launch = prepare(pod, Platform.TDX, tmp_path)
    assert launch.confidential_properties() == {
        "mrconfigid": base64.b64encode(bytes.fromhex(vectors.CAA_SHA384)).decode()
    }
    assert launch.kernel_cmdline() == ()


def test_insecure_launch(tmp_path: Path) -> None:
    pod = from_toml(kata_default_with_policy())
    launch = prepare(pod, Platform.INSECURE, tmp_path)
    assert launch.confidential_properties() == {}
    assert launch.kernel_cmdline() == (
        "contrast.platform=insecure",
        f"contrast.initdata_digest={pod.digest.hex()}",
    )


def test_disk_path_commas_are_escaped(tmp_path: Path) -> None:
    state = tmp_path / "a,b=c"
    state.mkdir()
    launch = prepare(from_toml(kata_default_with_policy()), Platform.SNP, state)
    assert launch.qemu_disk_args()[1] == (
        f"if=none,id=initdata,file={tmp_path}/a,,b=c/initdata.img,format=raw,readonly=on"
    )
    assert qemu_escape("x,y,,z") == "x,,y,,,,z"


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
