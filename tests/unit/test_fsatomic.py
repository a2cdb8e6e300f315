"""guest.fsatomic on its own: the caller's error type, or the OSError, and no leftovers."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path
from typing import NoReturn

import pytest

from guest import fsatomic


class CallerError(Exception):
    pass


def caller_error(what: str, err: OSError) -> CallerError:
    return CallerError(f"{what}: {err}")


def full_disk(*args: object) -> NoReturn:
    raise OSError(28, "No space left on device")


def test_writes_with_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    fsatomic.write_file(target, b"new", prefix=".f.tmp-", mode=0o640)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_default_mode_is_private(tmp_path: Path) -> None:
    target = tmp_path / "f"
    fsatomic.write_file(target, b"x", prefix=".tmp-")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("step", "what", "new"),
    [
        ("sync_file", "writing the new content failed", False),
        ("publish", "renaming .f.tmp-", False),
        ("sync_dir", "written, but syncing", True),
    ],
)
def test_failing_step_raises_the_callers_error(
    tmp_path: Path, step: str, what: str, new: bool
) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    steps = dataclasses.replace(fsatomic.DEFAULT_STEPS, **{step: full_disk})
    with pytest.raises(CallerError, match="No space left on device") as info:
        fsatomic.write_file(target, b"new", prefix=".f.tmp-", error=caller_error, steps=steps)
    assert what in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert target.read_bytes() == (b"new" if new else b"old")
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_without_a_factory_the_oserror_propagates(tmp_path: Path) -> None:
    steps = dataclasses.replace(fsatomic.DEFAULT_STEPS, create_temp=full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        fsatomic.write_file(tmp_path / "f", b"new", prefix=".tmp-", steps=steps)
    assert list(tmp_path.iterdir()) == []


def test_exception_in_the_block_discards_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with (
        pytest.raises(ValueError, match="bad content"),
        fsatomic.replace_file(target, prefix=".f.tmp-", error=caller_error) as out,
    ):
        out.write(b"half")
        raise ValueError("bad content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
