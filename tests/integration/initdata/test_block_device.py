"""The boot entry ``python -m guest.initdata process`` as a real program, reading the
initdata disk from a real (loop) block device found by probing a /dev-like folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest.initdata import disk, document
from tests.conftest import require_programs

ROOT = Path(__file__).resolve().parents[3]
POLICY = "package agent_policy\n\ndefault CreateContainerRequest := true\n"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    """A read-only loop device holding a fresh initdata disk, and the document's digest."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    require_programs("losetup")
    policy = tmp_path / "policy.rego"
    policy.write_text(POLICY)
    image = tmp_path / "initdata.img"
    create = (sys.executable, "-m", "guest.initdata", "create", "--policy", str(policy))
    run(*create, "--disk", str(image), "-o", os.devnull)
    digest = document.parse(disk.read(image)).digest
    device = Path(run("losetup", "--find", "--show", "--read-only", str(image)).stdout.strip())
    try:
        yield device, digest
    finally:
        run("losetup", "--detach", str(device), check=False)


def process(tmp_path: Path, device: Path, cmdline: str) -> tuple[int, str, str]:
    dev = tmp_path / "dev"
    dev.mkdir(exist_ok=True)
    link = dev / "vdb"
    link.unlink(missing_ok=True)
    link.symlink_to(device)
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    out = tmp_path / "measured-cfg"
    entry = (sys.executable, "-m", "guest.initdata", "process")
    args = ("--dev-dir", str(dev), "--output", str(out), "--cmdline", str(tmp_path / "cmdline"))
    proc = run(*entry, *args, check=False)
    return proc.returncode, (out / "policy.rego").read_text(), proc.stderr


def test_block_device_with_bound_digest(tmp_path: Path, loop_disk: tuple[Path, bytes]) -> None:
    device, digest = loop_disk
    cmdline = f"console=hvc0 contrast.platform=insecure contrast.initdata_digest={digest.hex()}"
    rc, policy, stderr = process(tmp_path, device, cmdline)
    assert rc == 0, stderr
    assert policy == POLICY
    assert "verified" in stderr


def test_block_device_with_other_digest(tmp_path: Path, loop_disk: tuple[Path, bytes]) -> None:
    device, digest = loop_disk
    other = bytes(len(digest)).hex()
    cmdline = f"contrast.platform=insecure contrast.initdata_digest={other}"
    rc, policy, _ = process(tmp_path, device, cmdline)
    assert rc == 1
    assert "initdata digest mismatch" in policy
    assert "default CreateContainerRequest := false" in policy
