"""packaging/systemd units pass `systemd-analyze verify` without a single warning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_programs

UNITS = Path(__file__).parents[3] / "packaging" / "systemd"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def verify(tmp: Path, unit: Path, text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Verify ``unit`` inside a scratch root holding the host's stock units and our binary.

    The root keeps the check from depending on whether this machine has the daemon
    installed: systemd-analyze checks that ExecStart= points at an executable.
    """
    root = tmp / "root"
    if not root.exists():
        shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
        for name in ("contrast-node-daemon", "contrast-node-relay"):
            program = root / "usr/local/bin" / name
            program.parent.mkdir(parents=True, exist_ok=True)
            program.write_text("#!/bin/sh\n")
            program.chmod(0o755)
        (root / "etc/systemd/system").mkdir(parents=True)
    target = root / "etc/systemd/system" / unit.name
    target.write_text(unit.read_text() if text is None else text)
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{unit.name}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_unit_verifies_cleanly(tmp_path: Path, unit: Path) -> None:
    require_programs("systemd-analyze")
    done = verify(tmp_path, unit)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""


def test_verify_does_report_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    require_programs("systemd-analyze")
    unit = UNITS / "contrast-node-daemon.service"
    broken = unit.read_text().replace("WatchdogSec=", "WatchdogSecs=")
    done = verify(tmp_path, unit, broken)
    assert "Unknown key 'WatchdogSecs'" in done.stderr
