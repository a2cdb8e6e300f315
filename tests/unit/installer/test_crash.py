"""The installer killed or failing at any step of a write: old file or new, never partial."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from installer import assets, atomicfile
from installer.cli import main
from installer.manifest import load_manifest
from tests.unit.installer.nodes import Node, make_node

STEPS = ("create_temp", "sync_file", "publish", "sync_dir")


def install(node: Node) -> int:
    return main(node.args("install", "--no-restart"), out=io.StringIO())


def expected_config(tmp: Path) -> bytes:
    clean = make_node(tmp / "clean")
    assert install(clean) == 0
    return clean.config.read_bytes()


def node_with_assets(tmp: Path) -> Node:
    """A node whose assets are in place already, so only config writes remain."""
    node = make_node(tmp)
    bundle = assets.resolve(load_manifest(node.manifest))
    assets.install_assets(bundle, node.root, dry_run=False)
    return node


def killed_in_child(node: Node, patch: Callable[[], None]) -> None:
    """Run an install in a forked child that ``patch`` arranges to die part-way."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns into pytest
        try:
            patch()
            install(node)
        finally:
            os._exit(0)  # reached only when the kill point was never hit
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 137, "the kill point was not reached"


def kill_at(step: str, occurrence: int, before: bool) -> Callable[[], None]:
    def patch() -> None:
        real = getattr(atomicfile, step)
        calls = 0

        def wrapper(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == occurrence and before:
                os._exit(137)
            result = real(*args)
            if calls == occurrence:
                os._exit(137)
            return result

        setattr(atomicfile, step, wrapper)

    return patch


def kill_mid_write() -> None:
    """Die after half of the new config reached the temp file."""
    real_fdopen = os.fdopen

    class Half:
        def __init__(self, f: Any) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            if b"contrast-cc" in data:
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                os._exit(137)
            return int(self.f.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

        def __enter__(self) -> Half:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    os.fdopen = lambda *a, **k: Half(real_fdopen(*a, **k))  # type: ignore[assignment]


# Two atomic writes per install: the backup, then the config itself.
KILL_POINTS = [
    pytest.param(kill_at(step, n, before), id=f"{'before' if before else 'after'}-{step}-{n}")
    for n in (1, 2)
    for step in STEPS
    for before in (True, False)
] + [pytest.param(kill_mid_write, id="mid-write")]


@pytest.mark.parametrize("patch", KILL_POINTS)
def test_killed_install_leaves_old_or_new_and_rerun_completes(
    tmp_path: Path, patch: Callable[[], None]
) -> None:
    new = expected_config(tmp_path)
    node = node_with_assets(tmp_path / "node")
    old = node.config.read_bytes()

    killed_in_child(node, patch)

    assert node.config.read_bytes() in (old, new)
    for backup in node.config.parent.glob("config.toml.*.bak"):
        assert backup.read_bytes() == old  # a backup is complete or absent
    assert install(node) == 0
    assert node.config.read_bytes() == new
    leftovers = [p.name for p in node.config.parent.iterdir() if atomicfile.TEMP_MARK in p.name]
    assert leftovers == []
    mtime = node.config.stat().st_mtime_ns
    assert install(node) == 0
    assert node.config.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("occurrence", [1, 2])
def test_failing_step_reports_error_and_changes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    step: str,
    occurrence: int,
) -> None:
    new = expected_config(tmp_path)
    node = node_with_assets(tmp_path / "node")
    old = node.config.read_bytes()
    real = getattr(atomicfile, step)
    calls = 0

    def failing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == occurrence:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(atomicfile, step, failing)
    capsys.readouterr()
    assert install(node) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "config.toml" in err
    if step == "sync_dir" and occurrence == 2:
        assert node.config.read_bytes() == new  # renamed already; only durability unsure
    else:
        assert node.config.read_bytes() == old
    assert not [p for p in node.config.parent.iterdir() if atomicfile.TEMP_MARK in p.name]

    monkeypatch.setattr(atomicfile, step, real)
    assert install(node) == 0
    assert node.config.read_bytes() == new


@pytest.mark.parametrize("occurrence", [1, 2, 3])
@pytest.mark.parametrize("step", STEPS)
def test_killed_asset_copy_never_publishes_a_partial_file(
    tmp_path: Path, step: str, occurrence: int
) -> None:
    clean = make_node(tmp_path / "clean")
    assert install(clean) == 0
    node = make_node(tmp_path / "node")

    killed_in_child(node, kill_at(step, occurrence, before=step != "sync_dir"))

    installed = {
        p.relative_to(node.root): p.read_bytes()
        for p in (node.root / "opt/contrast").rglob("*")
        if p.is_file() and atomicfile.TEMP_MARK not in p.name
    }
    for path, content in installed.items():
        assert content == (clean.root / path).read_bytes()
    assert install(node) == 0
    for path in (clean.root / "opt/contrast").rglob("*"):
        if path.is_file():
            assert (node.root / path.relative_to(clean.root)).read_bytes() == path.read_bytes()
    assert not [p for p in node.root.rglob("*") if atomicfile.TEMP_MARK in p.name]


def test_temps_of_an_earlier_backup_are_swept(tmp_path: Path) -> None:
    """A kill while writing a backup of another second leaves a temp of another name."""
    node = node_with_assets(tmp_path)
    stale = node.config.parent / f".config.toml.1000.bak{atomicfile.TEMP_MARK}abcd"
    stale.write_text("half a backup")
    foreign = node.config.parent / "config.toml.1000.bak"
    foreign.write_text("a user's own file")
    assert install(node) == 0
    assert not stale.exists()
    assert foreign.read_text() == "a user's own file"
