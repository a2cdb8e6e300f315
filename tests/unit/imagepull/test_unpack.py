"""Layer extraction: overlayfs form of OCI whiteouts, metadata, and refusal of escapes."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from devkit import ocibuild as ob
from guest.imagepull.errors import UnsafeLayerError
from guest.imagepull.unpack import OPAQUE_XATTR, Limits, unpack

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted.*)")


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "layer"
    d.mkdir()
    return d


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the layer that hostile layers try to reach."""
    o = tmp_path / "outside"
    o.mkdir()
    (o / "victim").write_text("original")
    return o


def snapshot(path: Path) -> dict[str, tuple[int, bytes]]:
    found = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        found[str(p.relative_to(path))] = (st.st_mode, data)
    return found


def extract(entries: list[ob.Entry], dest: Path, limits: Limits | None = None) -> None:
    unpack(io.BytesIO(ob.layer_tar(entries)), str(dest), limits or Limits())


def test_files_dirs_links_and_modes(dest: Path) -> None:
    extract(
        [
            ob.directory("usr", 0o755),
            ob.directory("usr/bin", 0o750),
            ob.file("usr/bin/tool", b"#!/bin/sh\n", 0o4755),
            ob.hardlink("usr/bin/alias", "usr/bin/tool"),
            ob.symlink("bin", "usr/bin"),
            ob.symlink("abs", "/etc/passwd"),
            ob.file("deep/implicit/parents", b"x"),
        ],
        dest,
    )
    tool = dest / "usr/bin/tool"
    assert tool.read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o4755
    assert stat.S_IMODE((dest / "usr/bin").stat().st_mode) == 0o750
    assert (dest / "usr/bin/alias").stat().st_ino == tool.stat().st_ino
    assert os.readlink(dest / "bin") == "usr/bin"
    assert os.readlink(dest / "abs") == "/etc/passwd"
    assert (dest / "deep/implicit/parents").read_bytes() == b"x"
    assert tool.stat().st_mtime == ob.MTIME


@root_only
def test_owner_and_xattrs_kept(dest: Path) -> None:
    extract(
        [
            ob.directory("home", 0o700, uid=1000, gid=1001),
            ob.file("home/f", b"data", 0o2750, uid=1000, gid=1001, xattrs={"user.note": "hi"}),
            ob.symlink("home/l", "f", uid=1002, gid=1003),
        ],
        dest,
    )
    st = (dest / "home/f").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o2750)
    assert os.getxattr(dest / "home/f", "user.note") == b"hi"
    lst = (dest / "home/l").lstat()
    assert (lst.st_uid, lst.st_gid) == (1002, 1003)


@root_only
def test_whiteouts_become_overlay_form(dest: Path) -> None:
    extract(
        [
            ob.directory("etc"),
            ob.whiteout("etc/removed"),
            ob.directory("var/cache"),
            ob.opaque("var/cache"),
            ob.file("var/cache/kept", b"k"),
        ],
        dest,
    )
    st = (dest / "etc/removed").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (dest / "etc/.wh.removed").exists()
    assert os.getxattr(dest / "var/cache", OPAQUE_XATTR) == b"y"
    assert not (dest / "var/cache/.wh..wh..opq").exists()
    assert (dest / "var/cache/kept").read_bytes() == b"k"


@root_only
def test_whiteout_does_not_hide_same_layer_entry(dest: Path) -> None:
    extract([ob.file("a", b"1"), ob.whiteout("a"), ob.whiteout("b"), ob.file("b", b"2")], dest)
    assert (dest / "a").read_bytes() == b"1"
    assert (dest / "b").read_bytes() == b"2"


def test_later_entry_replaces_symlink_instead_of_writing_through_it(
    dest: Path, outside: Path
) -> None:
    before = snapshot(outside)
    extract(
        [
            ob.symlink("a", str(outside / "victim")),
            ob.file("a", b"replaced"),
            ob.symlink("d", str(outside)),
            ob.directory("d", 0o700),
        ],
        dest,
    )
    assert (dest / "a").read_bytes() == b"replaced" and not (dest / "a").is_symlink()
    assert (dest / "d").is_dir() and not (dest / "d").is_symlink()
    assert snapshot(outside) == before


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([ob.file("../escape", b"x")], "'..' components are refused"),
        ([ob.file("a/../../escape", b"x")], "'..' components are refused"),
        ([ob.file("/abs", b"x")], "absolute paths are refused"),
        ([ob.hardlink("h", "../outside/victim")], "'..' components are refused"),
        ([ob.hardlink("h", "/etc/passwd")], "absolute paths are refused"),
        ([ob.hardlink("h", "missing")], "target is not in this layer"),
        ([ob.directory("d"), ob.hardlink("h", "d")], "target is a directory"),
        ([ob.file(".wh.", b"")], "whiteout of ''"),
        ([ob.chardev("dev/sda", 8, 0)], "device 8:0 is refused"),
        ([ob.Entry("dev/disk", "block", dev=(8, 0))], "block device 8:0 is refused"),
    ],
)
def test_escapes_refused(
    entries: list[ob.Entry], message: str, dest: Path, outside: Path, tmp_path: Path
) -> None:
    before = snapshot(outside)
    with pytest.raises(UnsafeLayerError, match=message.replace("(", r"\(").replace(".", r"\.")):
        extract(entries, dest)
    assert snapshot(outside) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer", "outside"]


def test_symlink_parent_is_never_followed(dest: Path, outside: Path) -> None:
    before = snapshot(outside)
    for entries in (
        [ob.symlink("evil", str(outside)), ob.file("evil/victim", b"pwned")],
        [ob.symlink("rel", "../outside"), ob.file("rel/new", b"pwned")],
        [ob.symlink("s", str(outside)), ob.hardlink("h", "s/victim")],
        [ob.file("x", b"1"), ob.symlink("s", str(outside)), ob.hardlink("s/h", "x")],
        [ob.symlink("o", str(outside)), ob.opaque("o")],
        [ob.symlink("w", str(outside)), ob.whiteout("w/victim")],
    ):
        with pytest.raises(UnsafeLayerError, match="is a symlink or not a directory"):
            extract(entries, dest)
        for child in dest.iterdir():
            child.unlink()
    assert snapshot(outside) == before


def test_absurd_entry_size_refused_before_reading(dest: Path) -> None:
    data = ob.layer_tar([ob.file("small", b"x")])
    # A header claiming a petabyte with no data behind it: the check comes before reading.
    import tarfile

    info = tarfile.TarInfo("big")
    info.size = 1 << 50
    header = info.tobuf(tarfile.PAX_FORMAT)
    with pytest.raises(UnsafeLayerError, match="exceeds the per-entry limit"):
        unpack(io.BytesIO(header + data), str(dest), Limits(max_entry_size=1 << 30))
    assert not (dest / "big").exists()


def test_entry_count_bomb(dest: Path) -> None:
    entries = [ob.file(f"f{i}", b"") for i in range(50)]
    with pytest.raises(UnsafeLayerError, match="more than 20 entries"):
        extract(entries, dest, Limits(max_entries=20))


def test_total_size_bomb(dest: Path) -> None:
    entries = [ob.file(f"f{i}", b"z" * 4000) for i in range(5)]
    with pytest.raises(UnsafeLayerError, match="exceeds 10000 bytes"):
        extract(entries, dest, Limits(max_total_size=10000))
    total = sum(p.stat().st_size for p in dest.iterdir())
    assert total <= 10000


def test_truncated_tar_is_an_error(dest: Path) -> None:
    data = ob.layer_tar([ob.file("f", b"y" * 5000)])
    with pytest.raises(UnsafeLayerError, match=r"truncated|malformed"):
        unpack(io.BytesIO(data[:2048]), str(dest))


def test_entry_replacing_directory_removes_it(dest: Path) -> None:
    extract([ob.directory("d"), ob.file("d/f", b"1"), ob.file("d", b"now a file")], dest)
    assert (dest / "d").read_bytes() == b"now a file"
