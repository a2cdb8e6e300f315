"""The boot-time processor on the host: a fake TEE source through the protocol, a temp
dir standing in for /run/measured-cfg."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest
from regopy import Interpreter

from guest.initdata import disk, document
from guest.initdata.binding import Platform, bind
from guest.initdata.errors import InitdataError
from guest.initdata.processor import Outcome, process, refuse
from guest.initdata.tee import InsecureSource, LaunchValue

POLICY = "package agent_policy\n\ndefault CreateContainerRequest := true\n"
AA = "[token_configs]\n"


class Fixed:
    """A TEE source that reports a fixed launch value."""

    def __init__(self, platform: Platform, value: bytes) -> None:
        self.value = LaunchValue(platform, value, "fake TEE")
        self.reads = 0

    def read(self) -> LaunchValue:
        self.reads += 1
        return self.value


def good_doc() -> document.Initdata:
    return document.create({"policy.rego": POLICY, "sub/aa.toml": AA}, "sha384")


def write_disk(tmp_path: Path, image: bytes) -> Path:
    path = tmp_path / "vdb"
    path.write_bytes(image)
    return path


def deny_reason(out: Path) -> str:
    rego = Interpreter()
    rego.add_module("policy", (out / "policy.rego").read_text())
    # Keep each Output alive while reading its nodes: regopy frees them with the Output.
    allowed = rego.query("x := data.agent_policy.CreateContainerRequest")
    assert allowed.binding("x").json() == "false"
    out_reason = rego.query("x := data.agent_policy.policy_reason")
    reason = json.loads(out_reason.binding("x").json())
    assert isinstance(reason, str)
    return reason


@pytest.mark.parametrize("platform", list(Platform))
def test_valid_document_is_published(tmp_path: Path, platform: Platform) -> None:
    doc = good_doc()
    out = tmp_path / "run" / "measured-cfg"
    source = Fixed(platform, bind(doc.digest, platform))
    outcome = process(write_disk(tmp_path, disk.encode(doc.raw)), source, out)
    assert outcome == Outcome(True, "", doc.digest, ("policy.rego", "sub/aa.toml"))
    assert (out / "policy.rego").read_text() == POLICY
    assert (out / "sub" / "aa.toml").read_text() == AA
    assert sorted(p.name for p in out.parent.iterdir()) == ["measured-cfg"]  # no staging left
    assert (out / "policy.rego").stat().st_mode & 0o777 == 0o644


def test_existing_output_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "measured-cfg"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    doc = good_doc()
    process(write_disk(tmp_path, disk.encode(doc.raw)), Fixed(Platform.TDX, doc.digest), out)
    assert sorted(p.name for p in out.iterdir()) == ["policy.rego", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measured-cfg", "vdb"]


def _image(payload: bytes) -> bytes:
    blob = gzip.compress(payload)
    return b"initdata" + struct.pack("<Q", len(blob)) + blob


GOOD = good_doc()
CASES = {
    "bad magic": (b"LUKS" + bytes(508), "bad magic"),
    "truncated length": (b"initdata\x05", "truncated inside its length field"),
    "truncated gzip": (
        b"initdata" + struct.pack("<Q", 4096) + gzip.compress(GOOD.raw),
        "truncated: header says 4096",
    ),
    "gzip bomb": (_image(bytes(32 * 1024 * 1024)), "gzip bomb refused"),
    "bad toml": (_image(b"version = = 1\n"), "not valid TOML"),
    "wrong version": (_image(b'version = "0.2.0"\nalgorithm = "sha256"\n'), "version '0.2.0'"),
    "unknown algorithm": (
        _image(b'version = "0.1.0"\nalgorithm = "sm3"\n[data]\n"policy.rego" = "x"\n'),
        "unknown initdata algorithm 'sm3'",
    ),
    "no policy": (
        _image(b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"aa.toml" = "x"\n'),
        "no 'policy.rego' entry",
    ),
    "path escape": (
        _image(b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"../x" = "x"\n'),
        "not a plain relative path",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_disks_publish_deny_all(tmp_path: Path, case: str) -> None:
    image, message = CASES[case]
    out = tmp_path / "measured-cfg"
    source = Fixed(Platform.SNP, bind(GOOD.digest, Platform.SNP))
    outcome = process(write_disk(tmp_path, image), source, out)
    assert not outcome.trusted and message in outcome.reason
    assert outcome.files == ("policy.rego",)
    assert sorted(p.name for p in out.iterdir()) == ["policy.rego"]
    assert message in deny_reason(out)


def test_missing_disk(tmp_path: Path) -> None:
    out = tmp_path / "measured-cfg"
    outcome = process(None, Fixed(Platform.SNP, bytes(32)), out)
    assert not outcome.trusted
    assert "no initdata disk is attached" in deny_reason(out)


@pytest.mark.parametrize("platform", [Platform.SNP, Platform.TDX])
def test_digest_mismatch(tmp_path: Path, platform: Platform) -> None:
    doc = good_doc()
    other = document.create({"policy.rego": "package agent_policy\n"}, "sha384")
    out = tmp_path / "measured-cfg"
    source = Fixed(platform, bind(other.digest, platform))
    outcome = process(write_disk(tmp_path, disk.encode(doc.raw)), source, out)
    assert not outcome.trusted
    reason = deny_reason(out)
    assert "initdata digest mismatch" in reason
    assert bind(doc.digest, platform).hex() in reason
    assert bind(other.digest, platform).hex() in reason
    assert platform.field in reason


def test_nothing_bound_at_launch(tmp_path: Path) -> None:
    out = tmp_path / "measured-cfg"
    process(write_disk(tmp_path, disk.encode(GOOD.raw)), Fixed(Platform.SNP, bytes(32)), out)
    assert "all zero: no initdata was bound at launch" in deny_reason(out)


def test_insecure_digest_refused_without_insecure_cmdline(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"console=hvc0 contrast.initdata_digest={GOOD.digest.hex()}\n")
    out = tmp_path / "measured-cfg"
    outcome = process(write_disk(tmp_path, disk.encode(GOOD.raw)), InsecureSource(cmdline), out)
    assert not outcome.trusted
    assert "does not mark the platform insecure" in deny_reason(out)


def test_insecure_cmdline_accepted(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        f"console=hvc0 contrast.platform=insecure contrast.initdata_digest={GOOD.digest.hex()}\n"
    )
    out = tmp_path / "measured-cfg"
    outcome = process(write_disk(tmp_path, disk.encode(GOOD.raw)), InsecureSource(cmdline), out)
    assert outcome.trusted
    assert (out / "policy.rego").read_text() == POLICY


def test_tee_failure_denies(tmp_path: Path) -> None:
    class Broken:
        def read(self) -> LaunchValue:
            raise InitdataError("no TEE source answered: /dev/sev-guest: EIO")

    out = tmp_path / "measured-cfg"
    process(write_disk(tmp_path, disk.encode(GOOD.raw)), Broken(), out)
    assert "no TEE source answered" in deny_reason(out)


def test_conflicting_names_deny(tmp_path: Path) -> None:
    doc = document.create({"policy.rego": POLICY, "a": "file", "a/b": "nested"}, "sha256")
    out = tmp_path / "measured-cfg"
    outcome = process(
        write_disk(tmp_path, disk.encode(doc.raw)), Fixed(Platform.INSECURE, doc.digest), out
    )
    assert not outcome.trusted
    assert "cannot write initdata [data] entry 'a/b'" in deny_reason(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measured-cfg", "vdb"]


def test_refuse_writes_reason(tmp_path: Path) -> None:
    out = tmp_path / "measured-cfg"
    outcome = refuse("more than one disk carries the initdata magic", out)
    assert outcome.files == ("policy.rego",)
    assert deny_reason(out) == "initdata: more than one disk carries the initdata magic"


def test_unwritable_output_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InitdataError, match="cannot create a staging directory"):
        process(None, Fixed(Platform.SNP, bytes(32)), blocker / "measured-cfg")
