"""The guest's side of a kept-current volume (the kubelet's atomic-writer layout arriving
by CopyFile): the ``..data`` swap is one rename, the old timestamped directory goes,
a reader through ``..data`` never sees a mix; the termination message read back."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from api.kata import agent_pb2
from guest.agent import copyfile, termination
from guest.agent.errors import InvalidRequest, NotFound

UID, GID = os.getuid(), os.getgid()
DIR = stat.S_IFDIR | 0o755
LINK = stat.S_IFLNK | 0o777


def put(base: Path, path: Path, mode: int, data: bytes = b"") -> None:
    size = len(data) if stat.S_IFMT(mode) == stat.S_IFREG else 0
    request = agent_pb2.CopyFileRequest(
        path=str(path), file_mode=mode, dir_mode=0o755, uid=UID, gid=GID,
        file_size=size, data=data,
    )  # fmt: skip
    copyfile.copy_file(request, base)


def version(base: Path, volume: Path, stamp: str, files: dict[str, bytes]) -> None:
    """What the host sends for one version: the directory, its files, then ``..data``."""
    put(base, volume / stamp, DIR)
    for name, data in files.items():
        put(base, volume / stamp / name, stat.S_IFREG | 0o644, data)
    put(base, volume / "..data", LINK, stamp.encode())
    for name in files:
        put(base, volume / name, LINK, f"..data/{name}".encode())


def test_data_swap_removes_the_old_version_only(tmp_path: Path) -> None:
    volume = tmp_path / ("a" * 64 + "-0123456789abcdef-config")
    version(tmp_path, volume, "..2026_12_01_10_00_00.1", {"a": b"1", "b": b"1"})
    (volume / "..keep").mkdir()  # not what ..data pointed at: stays
    version(tmp_path, volume, "..2026_12_01_10_00_05.2", {"a": b"2", "b": b"2"})
    assert (volume / "a").read_bytes() == b"2"
    assert os.readlink(volume / "..data") == "..2026_12_01_10_00_05.2"
    names = sorted(p.name for p in volume.iterdir())
    assert names == ["..2026_12_01_10_00_05.2", "..data", "..keep", "a", "b"]


def test_symlink_swap_never_removes_outside_the_volume(tmp_path: Path) -> None:
    volume = tmp_path / "c1-x-config"
    outside = tmp_path / "c1-other"
    outside.mkdir()
    put(tmp_path, volume, DIR)
    # A ..data that pointed out of the volume: swapping it never removes that target.
    (volume / "..data").symlink_to("../c1-other")
    put(tmp_path, volume / "..data", LINK, b"..2026")
    assert outside.is_dir()
    put(tmp_path, volume / "..2026x", DIR)
    with pytest.raises(InvalidRequest, match="directory is in the symlink's place"):
        put(tmp_path, volume / "..2026x", LINK, b"y")


def test_reader_through_data_never_sees_a_mix(tmp_path: Path) -> None:
    volume = tmp_path / "c1-x-config"
    version(tmp_path, volume, "..v0", {"a": b"0", "b": b"0"})
    seen: set[tuple[bytes, bytes]] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                fd = os.open(volume / "..data", os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                pair = []
                for name in ("a", "b"):
                    with open(os.open(name, os.O_RDONLY, dir_fd=fd), "rb") as f:
                        pair.append(f.read())
                seen.add((pair[0], pair[1]))
            except FileNotFoundError:
                pass  # the version was removed under us (the kubelet's semantics too)
            finally:
                os.close(fd)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 200):
            value = str(n).encode()
            version(tmp_path, volume, f"..v{n}", {"a": value, "b": value})
    finally:
        stop.set()
        thread.join()
    assert seen and all(a == b for a, b in seen), sorted(seen)[:5]
    assert sorted(p.name for p in volume.iterdir()) == ["..data", "..v199", "a", "b"]


def test_copies_of_a_container_removed(tmp_path: Path) -> None:
    put(tmp_path, tmp_path / "c1-x-config", DIR)
    put(tmp_path, tmp_path / "c1-y-hosts", stat.S_IFREG | 0o644, b"h")
    put(tmp_path, tmp_path / "c10-y-hosts", stat.S_IFREG | 0o644, b"h")
    copyfile.remove_copies("c1", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c10-y-hosts"]


def bundle_with(tmp_path: Path, sources: list[str]) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    mounts = [{"destination": f"/m{i}", "source": s, "type": "bind"} for i, s in enumerate(sources)]
    (bundle / "config.json").write_text(json.dumps({"mounts": mounts}))
    return bundle


def test_termination_message_is_the_containers_own_copy(tmp_path: Path) -> None:
    base = tmp_path / "shared"
    base.mkdir()
    log = base / "c1-0123456789abcdef-termination-log"
    log.write_bytes(b"x" * 5000)
    other = base / "c2-0123456789abcdef-termination-log"  # another container's
    other.write_bytes(b"no")
    bundle = bundle_with(tmp_path, [str(other.with_name("c1-secret")), str(log), "/etc/passwd"])
    found = termination.message_file("c1", bundle, base)
    assert found == log
    assert termination.read_message(found) == b"x" * termination.MAX_MESSAGE  # the head


def test_termination_message_refusals(tmp_path: Path) -> None:
    base = tmp_path / "shared"
    base.mkdir()
    with pytest.raises(NotFound, match="mounts no termination-log"):
        termination.message_file("c1", bundle_with(tmp_path, ["/etc/passwd"]), base)
    link = base / "c1-0123456789abcdef-termination-log"
    link.symlink_to("/etc/passwd")
    with pytest.raises(InvalidRequest):
        termination.read_message(link)
