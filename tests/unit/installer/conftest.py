"""The installer tests' fakes of systemctl, nsenter and containerd (tests.unit.installer.fakes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.installer.fakes import Fakes, install_fakes


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    return install_fakes(tmp_path, monkeypatch)
