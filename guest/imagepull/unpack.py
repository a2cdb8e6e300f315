"""Extract one layer tar into a directory in overlayfs form, refusing anything unsafe.

OCI whiteouts become what overlayfs understands: ``.wh.<name>`` a character device 0/0
named ``<name>``, ``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on its
directory. Owners, modes (set-id bits included), xattrs and mtimes are kept; hard links
must point at an entry already extracted from the same layer. Limits on entry count,
entry size and total size stop tar bombs before they fill the disk.

Layers are unpacked independently (in parallel, shared between images), so a parent
directory a layer does not list is created 0755 root:root, and in the overlay it then
shadows the attributes of the lower layer's directory (containerd, which unpacks each
layer onto its parents, keeps the lower attributes). Image builders always list parents.
Hard links may only point inside their own layer, as image builders write them.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from guest.imagepull.digest import Readable
from guest.imagepull.errors import UnsafeLayerError
from guest.imagepull.safefs import Parts, Tree, split_member

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
COPY_CHUNK = 1 << 20
# tarfile's stream reader re-slices its buffer on every header read: keep it modest.
TAR_BUFFER = 1 << 16
# Character devices a container image may carry: the harmless ones from /dev.
SAFE_DEVICES = frozenset(
    {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)}  # null zero full random
)  # urandom tty console ptmx
_XATTR_PREFIXES = ("user.", "security.capability", "system.posix_acl_")


@dataclass(frozen=True)
class Limits:
    """Bounds for one layer; the defaults allow any sane image."""

    max_entries: int = 1_000_000
    max_entry_size: int = 64 << 30
    max_total_size: int = 128 << 30
    max_name: int = 4096


@dataclass(frozen=True)
class UnpackResult:
    entries: int
    bytes: int


class _Unpacker:
    def __init__(self, tree: Tree, limits: Limits, preserve_owner: bool) -> None:
        self.tree = tree
        self.limits = limits
        self.preserve_owner = preserve_owner
        self.entries = 0
        self.bytes = 0
        self.dir_times: dict[Parts, int] = {}

    def check_limits(self, member: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeLayerError(f"more than {self.limits.max_entries} entries (tar bomb?)")
        if len(member.name) > self.limits.max_name or len(member.linkname) > self.limits.max_name:
            raise UnsafeLayerError(f"entry name longer than {self.limits.max_name} bytes")
        if member.size < 0 or member.size > self.limits.max_entry_size:
            raise UnsafeLayerError(
                f"entry {member.name!r}: size {member.size} exceeds the per-entry limit "
                f"of {self.limits.max_entry_size} bytes"
            )
        if member.isreg():
            self.bytes += member.size
            if self.bytes > self.limits.max_total_size:
                raise UnsafeLayerError(
                    f"layer content exceeds {self.limits.max_total_size} bytes (tar bomb?)"
                )

    def entry(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.check_limits(member)
        parts = split_member(member.name)
        if not parts:
            if member.isdir():  # "./": metadata of the layer root
                self.apply_dir_meta((), self.tree.directory((), False, member.name), member)
                return
            raise UnsafeLayerError(f"entry {member.name!r}: names the layer root")
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parts, member)
            return
        parent = self.tree.directory(parts[:-1], True, member.name)
        existing = self.tree.lstat(parent, base)
        if member.isdir():
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                self.tree.remove(parts, parent)
                existing = None
            if existing is None:
                os.mkdir(base, 0o700, dir_fd=parent)
            self.apply_dir_meta(parts, self.tree.directory(parts, False, member.name), member)
            return
        if existing is not None:
            self.tree.remove(parts, parent)
        if member.isreg():
            self.regular(archive, member, parent, base)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent)
            self.apply_link_meta(parent, base, member)
        elif member.islnk():
            self.hardlink(member, parts)
        elif member.ischr() or member.isblk():
            self.device(member, parent, base)
        elif member.isfifo():
            os.mkfifo(base, 0o600, dir_fd=parent)
            self.apply_link_meta(parent, base, member)
        else:
            raise UnsafeLayerError(f"entry {member.name!r}: unsupported tar type {member.type!r}")

    def whiteout(self, parts: Parts, member: tarfile.TarInfo) -> None:
        base = parts[-1]
        if base == OPAQUE:
            fd = self.tree.directory(parts[:-1], True, member.name)
            os.setxattr(fd, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            log.debug("ignoring reserved whiteout entry %s", member.name)
            return
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise UnsafeLayerError(f"entry {member.name!r}: whiteout of {target!r}")
        parent = self.tree.directory(parts[:-1], True, member.name)
        # A whiteout hides lower layers only: an entry of this same layer stays.
        if self.tree.lstat(parent, target) is None:
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)

    def regular(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, parent: int, base: str
    ) -> None:
        fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            source = archive.extractfile(member)
            remaining = member.size
            if source is not None:
                while remaining > 0:
                    chunk = source.read(min(COPY_CHUNK, remaining))
                    if not chunk:
                        raise UnsafeLayerError(f"entry {member.name!r}: truncated data")
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    remaining -= len(chunk)
            self.apply_fd_meta(fd, member)
        finally:
            os.close(fd)

    def hardlink(self, member: tarfile.TarInfo, parts: Parts) -> None:
        target = split_member(member.linkname, f"hard link {member.name!r} ->")
        if not target:
            raise UnsafeLayerError(f"hard link {member.name!r} points at the layer root")
        src_parent = os.dup(self.tree.directory(target[:-1], False, member.name))
        try:
            st = self.tree.lstat(src_parent, target[-1])
            if st is None:
                raise UnsafeLayerError(
                    f"hard link {member.name!r} -> {member.linkname!r}: target is not in this layer"
                )
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeLayerError(f"hard link {member.name!r}: target is a directory")
            dst_parent = self.tree.directory(parts[:-1], True, member.name)
            os.link(
                target[-1],
                parts[-1],
                src_dir_fd=src_parent,
                dst_dir_fd=dst_parent,
                follow_symlinks=False,
            )
        finally:
            os.close(src_parent)

    def device(self, member: tarfile.TarInfo, parent: int, base: str) -> None:
        numbers = (member.devmajor, member.devminor)
        if not member.ischr() or numbers not in SAFE_DEVICES:
            kind = "character" if member.ischr() else "block"
            raise UnsafeLayerError(
                f"entry {member.name!r}: {kind} device {numbers[0]}:{numbers[1]} is refused "
                "(only null, zero, full, random, urandom, tty, console, ptmx are allowed)"
            )
        os.mknod(base, stat.S_IFCHR | 0o600, os.makedev(*numbers), dir_fd=parent)
        self.apply_link_meta(parent, base, member)

    def xattrs(self, member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
        found = []
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr.") :]
            if not name.startswith(_XATTR_PREFIXES):
                log.debug("entry %s: skipping xattr %s", member.name, name)
                continue
            found.append((name, value.encode("utf-8", "surrogateescape")))
        return found

    def apply_fd_meta(self, fd: int, member: tarfile.TarInfo) -> None:
        if self.preserve_owner:
            os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears set-id bits
        for name, value in self.xattrs(member):
            os.setxattr(fd, name, value)
        mtime = int(member.mtime * 1e9)
        os.utime(fd, ns=(mtime, mtime))

    def apply_dir_meta(self, parts: Parts, fd: int, member: tarfile.TarInfo) -> None:
        if self.preserve_owner:
            os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        for name, value in self.xattrs(member):
            os.setxattr(fd, name, value)
        # Creating children changes a directory's mtime: set them all at the end.
        self.dir_times[parts] = int(member.mtime * 1e9)

    def apply_link_meta(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        if self.preserve_owner:
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if not member.issym():
            Path(self.tree.proc_path(parent, base)).chmod(member.mode & 0o7777)
        for name, value in self.xattrs(member):
            if member.issym() and name.startswith("user."):
                continue  # the kernel refuses user.* xattrs on symlinks
            os.setxattr(self.tree.proc_path(parent, base), name, value, follow_symlinks=False)
        mtime = int(member.mtime * 1e9)
        os.utime(base, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)

    def finish(self) -> None:
        for parts, mtime in sorted(self.dir_times.items(), key=lambda i: -len(i[0])):
            try:
                fd = self.tree.directory(parts, False, "/".join(parts))
            except UnsafeLayerError:
                continue  # replaced by a later entry of the same layer
            os.utime(fd, ns=(mtime, mtime))


def unpack(
    stream: Readable, dest: str, limits: Limits = Limits(), preserve_owner: bool | None = None
) -> UnpackResult:
    """Extract the uncompressed tar ``stream`` into the existing empty directory ``dest``.

    ``preserve_owner`` defaults to whether we run as root. Raises UnsafeLayerError for
    escapes, refused entries, limits and malformed tar data; OSError for I/O failures.
    The tar's trailing bytes are left in ``stream`` for the caller to drain and hash.
    """
    owner = os.geteuid() == 0 if preserve_owner is None else preserve_owner
    with Tree(dest) as tree:
        unpacker = _Unpacker(tree, limits, owner)
        try:
            with tarfile.open(
                fileobj=cast("IO[bytes]", stream),
                mode="r|",
                bufsize=TAR_BUFFER,
                errors="surrogateescape",
            ) as archive:
                for member in archive:
                    try:
                        unpacker.entry(archive, member)
                    except OSError as err:
                        if err.errno == errno.ENOSPC:
                            raise
                        raise UnsafeLayerError(
                            f"entry {member.name!r}: {os.strerror(err.errno or 0)}"
                        ) from err
        except tarfile.TarError as err:
            raise UnsafeLayerError(f"malformed layer tar: {err}") from err
        unpacker.finish()
        return UnpackResult(unpacker.entries, unpacker.bytes)
