"""CopyFile: how a host without a shared file system hands files to the guest (Kata).

Service-account tokens, ConfigMaps and Secrets mounted into containers arrive as
CopyFile calls under ``/run/kata-containers/shared/containers/``; the container's
spec then bind-mounts them from there (see spec.SHARED_PREFIXES). What may be copied
is the policy's decision (CopyFileRequest); here only the place is fixed: nothing
outside SHARED_DIR, no ``..``, no path through a symlink.

A regular file comes in chunks (``offset``, ``data``) into ``<path>.tmp`` and is
renamed into place, with ``file_mode`` and owner, once it has ``file_size`` bytes. A
directory (S_IFDIR in ``file_mode``) is created; a symlink (S_IFLNK) points at
``data``, made beside as ``<path>.tmp`` and renamed over the old one, so a reader
resolves either the old or the new target, never nothing.

Kept-current volumes (the kubelet's atomic writer: ConfigMaps, Secrets, projected
tokens) arrive in the kubelet's own layout: the host copies a new timestamped
directory ``..<time>`` completely, then the symlink ``..data`` pointing at it. Once
``..data`` has been swapped, the directory it pointed at before (a sibling named
``..*``) is removed, as the kubelet removes it: readers through ``..data`` see the
old set or the new set of files, never a mix.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from api.kata import agent_pb2
from guest.agent.errors import InvalidRequest

SHARED_DIR = Path("/run/kata-containers/shared/containers")
MAX_FILE_SIZE = 64 * 1024 * 1024


def _target(path: str, base: Path) -> Path:
    target = Path(path)
    if not target.is_absolute() or ".." in target.parts or target == base:
        raise InvalidRequest(f"CopyFile path {path!r} must be absolute, without '..'")
    if not target.is_relative_to(base):
        raise InvalidRequest(f"CopyFile path {path!r} is not under {base}")
    # No component between base and the target may be a symlink (a planted one
    # would redirect the write anywhere in the guest).
    current = base
    for part in target.relative_to(base).parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise InvalidRequest(f"CopyFile path {path!r} goes through a symlink")
    return target


def _mkdirs(directory: Path, base: Path, mode: int, uid: int, gid: int) -> None:
    missing = []
    current = directory
    while not current.exists() and current != base:
        missing.append(current)
        current = current.parent
    base.mkdir(parents=True, exist_ok=True)
    for folder in reversed(missing):
        folder.mkdir(mode=mode & 0o7777 or 0o755)
        os.chown(folder, uid, gid)


def copy_file(request: agent_pb2.CopyFileRequest, base: Path = SHARED_DIR) -> None:
    """Apply one CopyFile chunk. Raises InvalidRequest; OSError for write failures."""
    target = _target(request.path, base)
    if not 0 <= request.file_size <= MAX_FILE_SIZE:
        raise InvalidRequest(f"CopyFile {request.path}: size {request.file_size} out of range")
    kind = stat.S_IFMT(request.file_mode)
    beyond = request.offset < 0 or request.offset + len(request.data) > request.file_size
    if beyond and kind in (0, stat.S_IFREG):
        raise InvalidRequest(f"CopyFile {request.path}: chunk beyond file_size")
    uid, gid = request.uid, request.gid
    _mkdirs(target.parent, base, request.dir_mode, uid, gid)
    if kind == stat.S_IFDIR:
        if not target.is_dir():
            target.mkdir(mode=request.file_mode & 0o7777)
        os.chown(target, uid, gid)
        return
    if kind == stat.S_IFLNK:
        _swap_symlink(target, os.fsdecode(request.data), uid, gid)
        return
    if kind not in (0, stat.S_IFREG):
        raise InvalidRequest(f"CopyFile {request.path}: unsupported file type {kind:#o}")
    temp = target.with_name(target.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    if request.offset == 0:
        flags |= os.O_TRUNC
    fd = os.open(temp, flags, 0o600)
    try:
        os.pwrite(fd, request.data, request.offset)
        if os.fstat(fd).st_size != request.file_size:
            return  # more chunks to come
        os.fchmod(fd, request.file_mode & 0o7777)
        os.fchown(fd, uid, gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    temp.rename(target)


DATA_LINK = "..data"


def _swap_symlink(target: Path, points_to: str, uid: int, gid: int) -> None:
    """``target`` -> ``points_to``, replacing an existing link in one rename. For the
    atomic writer's ``..data``: the timestamped directory it left is removed after."""
    if target.is_dir() and not target.is_symlink():
        raise InvalidRequest(f"CopyFile {target}: a directory is in the symlink's place")
    before = str(target.readlink()) if target.is_symlink() else None
    temp = target.with_name(target.name + ".tmp")
    if temp.is_symlink() or temp.exists():
        temp.unlink()
    temp.symlink_to(points_to)
    os.chown(temp, uid, gid, follow_symlinks=False)
    temp.rename(target)
    if target.name != DATA_LINK or before is None or before == points_to:
        return
    old = target.parent / before
    # Only a timestamped sibling directory of the writer's own layout, never a path
    # through a symlink or out of this volume.
    if (
        "/" not in before
        and before.startswith("..")
        and before not in ("..", DATA_LINK)
        and old.is_dir()
        and not old.is_symlink()
    ):
        shutil.rmtree(old)


def remove_copies(container_id: str, base: Path = SHARED_DIR) -> None:
    """Remove what was copied for ``container_id`` (``<base>/<id>-*``, the host's
    names), at RemoveContainer. ``container_id`` is a checked plain name."""
    if not base.is_dir():
        return
    for entry in base.glob(f"{container_id}-*"):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)




def policy_input(request: agent_pb2.CopyFileRequest) -> dict[str, Any]:
    """The policy's ``input`` for a CopyFile request, Kata's ``PolicyCopyFileRequest``:
    every field but ``data`` (a chunk of up to a MiB as a JSON array of numbers would
    make each evaluation take seconds; a policy decides where a file lands, not what it
    holds), plus ``file_type`` (``Regular``, ``Directory``, ``Symlink``, else
    ``Other``) and ``symlink_target`` (the link's target, else "")."""
    kind = stat.S_IFMT(request.file_mode)
    file_type = {0: "Regular", stat.S_IFREG: "Regular", stat.S_IFDIR: "Directory",
                 stat.S_IFLNK: "Symlink"}.get(kind, "Other")  # fmt: skip
    target = os.fsdecode(request.data) if kind == stat.S_IFLNK else ""
    return {
        "path": request.path,
        "file_size": request.file_size,
        "file_mode": request.file_mode,
        "dir_mode": request.dir_mode,
        "uid": request.uid,
        "gid": request.gid,
        "offset": request.offset,
        "file_type": file_type,
        "symlink_target": target,
    }
