"""A host file or directory read into CopyFile requests, within a size cap.

The tree is read without following symlinks: regular files (content read at once, so
what is counted is what is sent), directories and relative symlinks that stay inside
the tree; anything else (a device, a socket, a FIFO, a symlink out of the tree) is
refused naming it. Modes and owners are the host's (the kubelet applies
``defaultMode`` and ``fsGroup`` there).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.volumes.errors import VolumeError
from api.kata import agent_pb2

# Kata's CopyFile destination (genpolicy's $(cpath)); our guest accepts nothing else.
SHARED_DIR = PurePosixPath("/run/kata-containers/shared/containers")
# Per volume: Kubernetes caps a ConfigMap or Secret at 1 MiB; this leaves room for
# projected volumes of several sources while bounding the guest's memory (its shared
# directory is RAM).
MAX_VOLUME_BYTES = 8 << 20
# Under ttrpc's 4 MiB message limit with room for the request's other fields.
CHUNK = 1 << 20
DIR_MODE = 0o755


@dataclass(frozen=True)
class Entry:
    """One file system object of a tree; ``rel`` is "" for the tree's root."""

    rel: str
    mode: int  # st_mode, type bits included
    uid: int
    gid: int
    data: bytes = b""  # a file's content, a symlink's target


def read_tree(root: Path, what: str, cap: int = MAX_VOLUME_BYTES) -> list[Entry]:
    """``root`` (a file or directory) and everything below it, parents first. Raises
    VolumeError naming ``what`` (a mount's description) when the files exceed ``cap``
    bytes or hold something that cannot be copied; OSError when the tree changes or
    vanishes meanwhile."""
    entries: list[Entry] = []
    total = 0

    def add(path: Path, rel: str) -> None:
        nonlocal total
        info = path.lstat()
        kind = stat.S_IFMT(info.st_mode)
        if kind == stat.S_IFREG:
            total += info.st_size
            if total > cap:
                raise VolumeError(
                    f"{what}: more than {cap} bytes ({cap >> 20} MiB), the cap for a volume "
                    "copied into the pod-VM"
                )
            with open(path, "rb") as f:
                data = f.read(cap + 1)
            entries.append(Entry(rel, info.st_mode, info.st_uid, info.st_gid, data))
        elif kind == stat.S_IFDIR:
            entries.append(Entry(rel, info.st_mode, info.st_uid, info.st_gid))
            for child in sorted(c.name for c in path.iterdir()):
                add(path / child, posixpath.join(rel, child) if rel else child)
        elif kind == stat.S_IFLNK:
            target = str(path.readlink())
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            if posixpath.isabs(target) or resolved == ".." or resolved.startswith("../"):
                raise VolumeError(
                    f"{what}: symlink {rel or path.name} -> {target} leaves the volume"
                )
            entries.append(
                Entry(rel, info.st_mode, info.st_uid, info.st_gid, os.fsencode(target))
            )
        else:
            raise VolumeError(
                f"{what}: {rel or path.name} is not a file, directory or symlink "
                f"(mode {kind:#o}): it cannot be copied"
            )

    add(root, "")
    return entries


def requests(entries: list[Entry], guest: PurePosixPath) -> Iterator[agent_pb2.CopyFileRequest]:
    """The CopyFile requests putting ``entries`` at ``guest`` (a file or directory path
    under SHARED_DIR), in order: directories before what they hold, files in chunks."""
    for entry in entries:
        path = str(guest / entry.rel) if entry.rel else str(guest)
        base = agent_pb2.CopyFileRequest(
            path=path, file_mode=entry.mode, dir_mode=DIR_MODE, uid=entry.uid, gid=entry.gid
        )
        if not stat.S_ISREG(entry.mode):
            if stat.S_ISLNK(entry.mode):
                base.data = entry.data
            yield base
            continue
        size = len(entry.data)
        base.file_size = size
        for offset in range(0, size or 1, CHUNK):
            chunk = agent_pb2.CopyFileRequest()
            chunk.CopyFrom(base)
            chunk.offset = offset
            chunk.data = entry.data[offset : offset + CHUNK]
            yield chunk


def symlink(path: PurePosixPath, target: str) -> agent_pb2.CopyFileRequest:
    """A CopyFile request making ``path`` a symlink to ``target``."""
    return agent_pb2.CopyFileRequest(
        path=str(path), file_mode=stat.S_IFLNK | 0o777, dir_mode=DIR_MODE, data=os.fsencode(target)
    )
