"""The cache key: a hash over everything that decides the image's content."""

from __future__ import annotations

import hashlib
from pathlib import Path

from guest.image import rootfs
from guest.image.kernel import (
    INITRD_MODULES,
    INITRD_OPTIONAL_MODULES,
    OPTIONAL_ROOT_MODULES,
    ROOT_MODULES,
    Kernel,
)

# Bump to force a rebuild when the recipe's behaviour changes in a way its files do not show.
RECIPE_VERSION = "1"


def recipe_files(repo: Path) -> list[Path]:
    """The recipe's and the init scripts' own files, relative to the repository."""
    files = []
    for folder in ("guest/image", "guest/init"):
        for path in sorted((repo / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files.append(path.relative_to(repo))
    return files


def cache_key(repo: Path, kernel: Kernel, sources: list[str]) -> str:
    """SHA-256 (hex) over recipe, package list, guest sources, Python dists, kernel, mirror.

    What the mirror serves for the same package list is not part of it (the snapshot
    is not pinned); delete the cache to pick up new package versions.
    """
    h = hashlib.sha256()

    def add(label: str, value: bytes) -> None:
        h.update(label.encode() + b"\0" + len(value).to_bytes(8, "little") + value)

    add("recipe-version", RECIPE_VERSION.encode())
    for rel in [*recipe_files(repo), *rootfs.our_source_files(repo)]:
        add(f"file:{rel.as_posix()}", (repo / rel).read_bytes())
    add("packages", "\n".join(rootfs.PACKAGES).encode())
    for name in rootfs.PYTHON_DISTRIBUTIONS:
        version, files = rootfs.distribution_files(name)
        add(f"dist:{name}", version.encode())
        for path in files:
            add(f"dist-file:{name}:{path.name}", hashlib.sha256(path.read_bytes()).digest())
    add("kernel", f"{kernel.version}:{kernel.digest()}".encode())
    add(
        "modules",
        "\n".join(
            (*INITRD_MODULES, *INITRD_OPTIONAL_MODULES, *ROOT_MODULES, *OPTIONAL_ROOT_MODULES)
        ).encode(),
    )
    add("sources", "\n".join(sources).encode())
    return h.hexdigest()
