"""A node process started detached by a shim is not containerd's service: systemd's
variables describing containerd's unit do not reach it; everything else does."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent.daemon.lifecycle import SERVICE_MANAGER_ENV, spawn_detached

CHILD = """
import os
print(sorted(k for k in os.environ if k.startswith(("NOTIFY_", "WATCHDOG_", "JOURNAL_",
      "LISTEN_", "INVOCATION_")) or k == "CONTRAST_DAEMON_SUPERVISED"), flush=True)
"""


@pytest.mark.allow_programs(os.path.basename(sys.executable))
def test_systemds_service_variables_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "envchild.py").write_text(CHILD)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "pkg"))
    for name in SERVICE_MANAGER_ENV:
        monkeypatch.setenv(name, "from containerd's unit")
    monkeypatch.setenv("CONTRAST_DAEMON_SUPERVISED", "1")
    child = spawn_detached("envchild", tmp_path / "run", "relay.log")
    assert child.wait(timeout=60) == 0
    assert (tmp_path / "run" / "relay.log").read_text().strip() == "['CONTRAST_DAEMON_SUPERVISED']"
    assert "NOTIFY_SOCKET" in SERVICE_MANAGER_ENV
    assert "JOURNAL_STREAM" in SERVICE_MANAGER_ENV
