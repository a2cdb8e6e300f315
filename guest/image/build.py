"""Build the guest image once per set of inputs, into a cache shared by tests and benches."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from guest.image import initrd, rootfs, verity
from guest.image.inputs import cache_key
from guest.image.kernel import Kernel, find_kernel
from guest.image.manifest import (
    INITRD,
    KERNEL,
    ROOT,
    GuestImage,
    Manifest,
    load,
    write_manifest,
)
from guest.image.sources import debian_sources

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
# The kernel command line without the verity parameters. panic=1 with QEMU's
# -no-reboot turns any guest panic (a verity failure included) into QEMU exiting.
# no_timer_check (as Kata's QEMU guests): the boot's timer-IRQ check counts ticks in a
# short busy loop; a vCPU starved on a loaded host (TCG, pods starting at once) misses
# them and the kernel panics "IO-APIC + timer doesn't work!", seen in an e2e run here.
BASE_CMDLINE = ("console=ttyS0", "quiet", "panic=1", "no_timer_check", "rdinit=/init")
# Fixed timestamp for reproducible file systems (2024-01-01T00:00:00Z).
EPOCH = 1704067200
KEEP_BUILDS = 2


def default_cache() -> Path:
    """CONTRAST_IMAGE_CACHE, or build/guest in the repository (gitignored)."""
    return Path(os.environ.get("CONTRAST_IMAGE_CACHE", REPO / "build" / "guest"))


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_image(cache: Path | None = None, *, force: bool = False) -> GuestImage:
    """The image for the current inputs: reused from ``cache`` or built into it.

    Concurrent callers serialise on a lock file, so one build serves all of them.
    Raises ImageError (or a subclass) when a build step fails.
    """
    cache = cache or default_cache()
    kernel = find_kernel()
    sources = debian_sources()
    key = cache_key(REPO, kernel, sources)
    final = cache / key[:16]
    with _locked(cache):
        if final.is_dir() and not force:
            log.info("guest image %s reused from %s", key[:16], final)
            return load(final)
        if final.exists():
            shutil.rmtree(final)
        work = cache / f".build-{key[:16]}-{os.getpid()}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        try:
            _build(work, key, kernel, sources)
            work.rename(final)
        finally:
            if work.exists():
                shutil.rmtree(work)
        _prune(cache, keep=final)
        return load(final)


def _build(work: Path, key: str, kernel: Kernel, sources: list[str]) -> None:
    started = time.monotonic()
    tree = work / "tree"
    log.info("bootstrapping Debian into %s", tree)
    rootfs.bootstrap(tree, sources, EPOCH)
    packages = rootfs.package_versions(tree)
    dists = rootfs.install_python(tree, REPO)
    rootfs.install_init(tree)
    missing = rootfs.install_modules(tree, kernel)
    rootfs.trim(tree)
    log.info("building the initrd")
    initrd.build(tree, kernel, work / INITRD)
    log.info("packing the root file system")
    verity.make_erofs(tree, work / ROOT, EPOCH, key)
    root = verity.append_hash_tree(work / ROOT, salt=key)
    shutil.copyfile(kernel.vmlinuz, work / KERNEL)
    tree_bytes = sum(p.lstat().st_size for p in tree.rglob("*") if p.is_file())
    shutil.rmtree(tree)
    manifest = Manifest(
        key=key,
        kernel_version=kernel.version,
        cmdline=(*BASE_CMDLINE, *root.cmdline()),
        root_hash=root.root_hash,
        verity={
            "data_blocks": root.data_blocks,
            "hash_offset": root.hash_offset,
            "salt": root.salt,
            "hash_algorithm": "sha256",
        },
        sizes={
            "root_tree_bytes": tree_bytes,
            "root_data_bytes": root.data_bytes,
            "root_image_bytes": root.total_bytes,
            "initrd_bytes": (work / INITRD).stat().st_size,
            "kernel_bytes": (work / KERNEL).stat().st_size,
        },
        packages=packages,
        python_distributions=dists,
        missing_optional_modules=missing,
        build_seconds=round(time.monotonic() - started, 1),
    )
    write_manifest(work, manifest)


def _prune(cache: Path, keep: Path) -> None:
    builds = sorted(
        (p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in [b for b in builds if b != keep][KEEP_BUILDS - 1 :]:
        log.info("removing old guest image %s", old)
        shutil.rmtree(old)
