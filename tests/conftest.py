"""Test tiers and the unit tier's guard against touching the host.

Tiers by folder: ``tests/unit`` (hermetic), ``tests/integration`` (real programs, marked
``integration``), ``tests/e2e`` (marked ``e2e``). Tests under the slow folders are marked
automatically, so a plain ``pytest`` stays fast and ``pytest -m ""`` runs everything.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).parent
SHARED_VECTORS = TESTS.parent.parent / "shared" / "vectors"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if (TESTS / "integration") in path.parents:
            item.add_marker(pytest.mark.integration)
        elif (TESTS / "e2e") in path.parents:
            item.add_marker(pytest.mark.e2e)


FAILED_CALL = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Record on the item whether its test body failed, for fixtures that print
    diagnostics (a VM's console) at teardown only then: see :func:`call_failed`."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED_CALL] = True
    return report


def call_failed(request: pytest.FixtureRequest) -> bool:
    """Whether the requesting test's body failed (for use in fixture teardown)."""
    return bool(request.node.stash.get(FAILED_CALL, False))


class SubprocessForbidden(RuntimeError):
    """A unit test tried to run a program it did not declare with allow_programs."""


def _program_name(args: Any) -> str:
    first = args if isinstance(args, (str, bytes, os.PathLike)) else next(iter(args))
    return os.path.basename(os.fsdecode(first)).split()[0]


@pytest.fixture(autouse=True)
def _guard_subprocesses(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """In the unit tier any real subprocess fails unless the test names the program."""
    if (TESTS / "unit") not in Path(str(request.node.path)).parents:
        yield
        return
    marker = request.node.get_closest_marker("allow_programs")
    allowed = set(marker.args) if marker else set()

    def check(args: Any) -> None:
        name = _program_name(args)
        if name not in allowed:
            raise SubprocessForbidden(
                f"unit test ran {name!r}; declare it with @pytest.mark.allow_programs({name!r})"
            )

    real_popen_init = subprocess.Popen.__init__

    def guarded_popen_init(self: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
        check(args)
        real_popen_init(self, args, *a, **kw)

    real_exec = asyncio.create_subprocess_exec

    async def guarded_exec(program: Any, *args: Any, **kw: Any) -> asyncio.subprocess.Process:
        check([program])
        return await real_exec(program, *args, **kw)

    def guarded_shell(*_a: Any, **_kw: Any) -> None:
        raise SubprocessForbidden("unit tests never run a shell")

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_popen_init)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", guarded_exec)
    monkeypatch.setattr(asyncio, "create_subprocess_shell", guarded_shell)
    monkeypatch.setattr(os, "system", guarded_shell)
    yield


def require_programs(*names: str) -> None:
    """Skip the calling test when a program it needs is not installed.

    In CI (``CI=true``) a missing program is a failure instead: CI installs everything.
    """
    missing = [n for n in names if shutil.which(n) is None and not Path(n).exists()]
    if not missing:
        return
    message = f"programs not installed: {', '.join(missing)}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must install them: see scripts/dev.sh)")
    pytest.skip(message)


def shared_vectors(*parts: str) -> Path:
    """A file under ../shared/vectors, skipping the test when the folder is absent."""
    path = SHARED_VECTORS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (shared test vectors are read, never copied)")
    return path
