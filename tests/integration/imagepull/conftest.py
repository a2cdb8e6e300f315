"""Fixtures: a plain loopback registry shared by a module, root and program checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.registry import Registry
from tests.conftest import require_programs


def require_root() -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("the image puller's integration tests need root (overlay mounts, mknod)")
    pytest.skip("needs root (overlay mounts, mknod, chown)")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_root()
    require_programs("docker-registry", "skopeo")
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"
