"""File operations confined to one directory tree, without following symlinks.

Every operation is relative to a directory file descriptor obtained by walking the
path one component at a time with ``O_NOFOLLOW | O_DIRECTORY``: a symlink (or a file)
where a directory is expected stops the walk with UnsafeLayerError instead of being
followed, so an entry extracted earlier can never redirect a later one out of the tree.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from guest.imagepull.errors import UnsafeLayerError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 256
MAX_CACHED = 128

Parts = tuple[str, ...]


def split_member(name: str, what: str = "entry") -> Parts:
    """Split a tar member name into components, refusing absolute paths and ``..``.

    ``./a//b/`` becomes ``("a", "b")``; the root itself is the empty tuple.
    """
    if name.startswith("/"):
        raise UnsafeLayerError(f"{what} {name!r}: absolute paths are refused")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeLayerError(f"{what} {name!r}: '..' components are refused")
    if len(parts) > MAX_DEPTH:
        raise UnsafeLayerError(f"{what} {name[:200]!r}: deeper than {MAX_DEPTH} levels")
    return parts


class Tree:
    """A directory tree we write into; holds directory fds keyed by their path."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._root_fd = os.open(root, _DIR_FLAGS)
        self._cache: dict[Parts, int] = {}

    def close(self) -> None:
        self.forget(())
        os.close(self._root_fd)

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def forget(self, prefix: Parts) -> None:
        """Drop cached fds at or below ``prefix`` (after it was removed or replaced)."""
        for key in [k for k in self._cache if k[: len(prefix)] == prefix]:
            os.close(self._cache.pop(key))

    def directory(self, parts: Parts, create: bool, name: str) -> int:
        """An fd of directory ``parts`` (borrowed: do not close), walking without symlinks.

        Missing directories are created (0755, owned by us) when ``create``. Raises
        UnsafeLayerError when a component is a symlink or not a directory, or is missing.
        """
        if not parts:
            return self._root_fd
        cached = self._cache.get(parts)
        if cached is not None:
            return cached
        parent = self.directory(parts[:-1], create, name)
        component = parts[-1]
        try:
            fd = os.open(component, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise UnsafeLayerError(
                    f"entry {name!r}: {'/'.join(parts)!r} does not exist in this layer"
                ) from None
            os.mkdir(component, 0o755, dir_fd=parent)
            fd = os.open(component, _DIR_FLAGS, dir_fd=parent)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeLayerError(
                    f"entry {name!r}: {'/'.join(parts)!r} is a symlink or not a directory; "
                    "refusing to follow it"
                ) from err
            raise
        if len(self._cache) >= MAX_CACHED:
            self.forget(())
        self._cache[parts] = fd
        return fd

    def lstat(self, parent: int, component: str) -> os.stat_result | None:
        try:
            return os.stat(component, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def remove(self, parts: Parts, parent: int) -> None:
        """Remove whatever is at ``parts`` (a whole directory tree too), never following links."""
        st = self.lstat(parent, parts[-1])
        if st is None:
            return
        self.forget(parts)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(parts[-1], dir_fd=parent)
        else:
            os.unlink(parts[-1], dir_fd=parent)

    def proc_path(self, parent: int, component: str) -> str:
        """A path naming ``component`` under fd ``parent`` for calls lacking ``dir_fd``."""
        return f"/proc/self/fd/{parent}/{component}"
