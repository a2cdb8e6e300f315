"""CopyFile into a temp directory standing in for /run/kata-containers/shared/containers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from api.kata import agent_pb2
from guest.agent.copyfile import copy_file
from guest.agent.errors import InvalidRequest

UID, GID = os.getuid(), os.getgid()


def req(path: Path | str, **kw: object) -> agent_pb2.CopyFileRequest:
    fields: dict[str, object] = {"uid": UID, "gid": GID, "dir_mode": 0o750}
    fields.update(kw)
    return agent_pb2.CopyFileRequest(path=str(path), **fields)  # type: ignore[arg-type]


def test_file_in_chunks_published_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "c1-token" / "token"
    mode = stat.S_IFREG | 0o640
    copy_file(req(target, file_size=10, file_mode=mode, offset=0, data=b"01234"), tmp_path)
    assert not target.exists()  # half a file is never visible
    copy_file(req(target, file_size=10, file_mode=mode, offset=5, data=b"56789"), tmp_path)
    assert target.read_bytes() == b"0123456789"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o750
    assert sorted(p.name for p in target.parent.iterdir()) == ["token"]


def test_directory_and_symlink(tmp_path: Path) -> None:
    copy_file(req(tmp_path / "d", file_mode=stat.S_IFDIR | 0o755), tmp_path)
    assert (tmp_path / "d").is_dir()
    copy_file(
        req(tmp_path / "d" / "link", file_mode=stat.S_IFLNK | 0o777, data=b"..data/x"), tmp_path
    )
    assert os.readlink(tmp_path / "d" / "link") == "..data/x"


@pytest.mark.parametrize("path", ["/etc/passwd", "relative", "{base}/../escape", "{base}"])
def test_paths_outside_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(InvalidRequest):
        copy_file(req(path.format(base=tmp_path), file_size=1, data=b"x"), tmp_path)


def test_no_write_through_a_planted_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "shared"
    base.mkdir()
    (base / "evil").symlink_to(outside)
    with pytest.raises(InvalidRequest, match="symlink"):
        copy_file(req(base / "evil" / "f", file_size=1, data=b"x"), base)
    assert list(outside.iterdir()) == []


def test_chunk_beyond_size_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="beyond"):
        copy_file(req(tmp_path / "f", file_size=2, data=b"abc"), tmp_path)
