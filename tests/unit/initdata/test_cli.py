from __future__ import annotations

import json
from pathlib import Path

import pytest

from guest.initdata import codec, disk, document
from guest.initdata.cli import load_any, main
from tests.unit.initdata import vectors

POLICY = "package agent_policy\n\ndefault CreateContainerRequest := true\n"


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.rego"
    path.write_text(POLICY)
    return path


def test_create_toml(policy_file: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["create", "--policy", str(policy_file), "--algorithm", "sha256"]) == 0
    raw = capsysbinary.readouterr().out
    doc = document.parse(raw)
    assert doc.algorithm == "sha256" and dict(doc.data) == {"policy.rego": POLICY}


def test_create_annotation_and_disk(
    tmp_path: Path, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aa = tmp_path / "aa.toml"
    aa.write_text("[token_configs]\n")
    image = tmp_path / "initdata.img"
    args = ["create", "--policy", str(policy_file), "--data", f"aa.toml={aa}"]
    assert main([*args, "--annotation", "--disk", str(image)]) == 0
    value = capsys.readouterr().out.strip()
    doc = document.parse(codec.decode_annotation(value))
    assert doc.algorithm == "sha384"
    assert dict(doc.data) == {"policy.rego": POLICY, "aa.toml": "[token_configs]\n"}
    assert disk.read(image) == doc.raw


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "noequals"], "--data wants NAME=FILE"),
        (["--data", "policy.rego=/dev/null"], "--data 'policy.rego' given twice"),
        (["--data", "../x=/dev/null"], "not a plain relative path"),
        (["--data", "x=/nonexistent/file"], "cannot read /nonexistent/file"),
    ],
)
def test_create_errors(
    policy_file: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["create", "--policy", str(policy_file), *extra]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "name",
    [
        "kata-default-initdata.toml",
        "caa-docs-initdata-example.annotation.b64",
        "caa-docs-initdata-example.toml",
    ],
)
def test_inspect(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(vectors.DATA / name)]) == 0
    summary = json.loads(capsys.readouterr().out)
    if name.startswith("kata"):
        assert summary["digest"] == vectors.KATA_DEFAULT_SHA256
        assert summary["snp_host_data_base64"] == vectors.KATA_DEFAULT_HOST_DATA_B64
        assert summary["tdx_mrconfigid"] == vectors.KATA_DEFAULT_SHA256 + "00" * 16
    else:
        assert summary["digest"] == vectors.CAA_SHA384
        assert summary["snp_host_data_base64"] == vectors.CAA_HOST_DATA_B64
        assert sorted(summary["data"]) == ["aa.toml", "cdh.toml", "policy.rego"]


def test_load_any_formats() -> None:
    raw = vectors.read("trustee-init-data-with-policy.toml")
    for blob in (raw, codec.compress(raw), disk.encode(raw), codec.encode_annotation(raw).encode()):
        assert load_any(blob).raw == raw


def test_inspect_kata_img_is_not_toml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(vectors.DATA / "kata-agent-initdata.img")]) == 1
    assert "not valid TOML" in capsys.readouterr().err


def test_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(vectors.DATA / "kata-default-initdata.toml")
    assert main(["verify", toml, "--digest", vectors.KATA_DEFAULT_SHA256]) == 0
    assert "ok" in capsys.readouterr().out
    # The real SNP report has an all-zero HOST_DATA: nothing was bound at its launch.
    report = str(vectors.DATA / "go-sev-guest-attestation.bin")
    assert main(["verify", toml, "--snp-report", report]) == 1
    err = capsys.readouterr().err
    assert "initdata digest mismatch" in err and "all zero" in err
    # A report whose HOST_DATA is the document's digest verifies.
    blob = bytearray(vectors.read("go-sev-guest-attestation.bin"))
    blob[0xC0:0xE0] = bytes.fromhex(vectors.KATA_DEFAULT_SHA256)
    bound = tmp_path / "report.bin"
    bound.write_bytes(bytes(blob))
    assert main(["verify", toml, "--snp-report", str(bound)]) == 0
    quote = str(vectors.DATA / "trustee-tdx_quote_6.dat")
    assert main(["verify", toml, "--tdx-quote", quote]) == 1
    assert "889abf4718f037e3" in capsys.readouterr().err


def test_process_entry(tmp_path: Path, policy_file: Path) -> None:
    if any(Path(p).exists() for p in ("/dev/sev-guest", "/dev/tdx_guest", "/dev/tdx-guest")):
        pytest.skip("this machine has a TEE: the insecure channel is (rightly) not used")
    image = tmp_path / "vdb"
    assert (
        main(["create", "--policy", str(policy_file), "--disk", str(image), "-o", "/dev/null"]) == 0
    )
    doc = document.parse(disk.read(image))
    cmdline = tmp_path / "cmdline"
    out = tmp_path / "measured-cfg"
    base = ["process", "--output", str(out), "--dev-dir", str(tmp_path / "nodev")]
    # This host has no /dev/sev-guest or /dev/tdx_guest, so the insecure channel applies.
    cmdline.write_text(f"contrast.platform=insecure contrast.initdata_digest={doc.digest.hex()}\n")
    assert main([*base, "--disk", str(image), "--cmdline", str(cmdline)]) == 0
    assert (out / "policy.rego").read_text() == POLICY
    cmdline.write_text(f"contrast.initdata_digest={doc.digest.hex()}\n")
    assert main([*base, "--disk", str(image), "--cmdline", str(cmdline)]) == 1
    assert "does not mark the platform insecure" in (out / "policy.rego").read_text()
    (tmp_path / "nodev").mkdir()
    assert main([*base, "--cmdline", str(cmdline)]) == 1
    assert "no initdata disk is attached" in (out / "policy.rego").read_text()
    assert main(["process", "--output", str(policy_file / "x"), "--disk", str(image)]) == 2
