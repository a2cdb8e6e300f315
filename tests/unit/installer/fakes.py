"""Fake host programs on PATH that record how they were called (osbuild's way)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
case "$1 $2" in
  "show --property=LoadState")
    for unit in $FAKE_UNITS; do [ "$unit" = "$4" ] && { echo loaded; exit 0; }; done
    echo not-found ;;
  "show --property=ActiveEnterTimestamp") echo "$FAKE_ACTIVE_SINCE" ;;
  "restart "*) [ -n "$FAKE_RESTART_FAILS" ] && { echo "Job failed" >&2; exit 1; } ;;
esac
exit 0
"""
NSENTER = """#!/bin/sh
echo "nsenter $*" >> "$FAKE_LOG"
while [ "$1" != "--" ]; do shift; done
shift
exec "$@"
"""
CONTAINERD = """#!/bin/sh
echo "containerd $*" >> "$FAKE_LOG"
[ "$1 $2" = "config default" ] && cat "$FAKE_DEFAULT_CONFIG"
"""


@dataclass(frozen=True)
class Fakes:
    log: Path

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def install_fakes(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir()
    for name, script in (
        ("systemctl", SYSTEMCTL),
        ("nsenter", NSENTER),
        ("containerd", CONTAINERD),
    ):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    log = tmp / "calls.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_UNITS", "containerd.service")
    monkeypatch.setenv("FAKE_ACTIVE_SINCE", "@4102444800")  # 2100: after any write here
    return Fakes(log)
