"""The initrd: busybox, dmsetup with its libraries, the root-disk modules, /init."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from guest.image import command, cpio
from guest.image.errors import ImageError
from guest.image.kernel import INITRD_MODULES, INITRD_OPTIONAL_MODULES, Kernel, module_closure
from guest.init import INITRD_INIT

_BINARIES = ("/usr/sbin/dmsetup",)
_SKELETON = (
    "bin",
    "dev",
    "etc",
    "lib",
    "lib64",
    "newroot",
    "proc",
    "run",
    "sbin",
    "sys",
    "usr",
    "usr/bin",
    "usr/sbin",
)


def resolve_in_root(root: Path, path: str) -> PurePosixPath:
    """Follow symlinks of the absolute ``path`` as if ``root`` were ``/``.

    Raises ImageError on a symlink loop.
    """
    parts = list(PurePosixPath(path).parts[1:])
    resolved = PurePosixPath("/")
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved.parent
            continue
        candidate = resolved / part
        host = root / str(candidate).lstrip("/")
        if host.is_symlink():
            hops += 1
            if hops > 40:
                raise ImageError(f"symlink loop resolving {path} in {root}")
            target = str(host.readlink())
            if target.startswith("/"):
                resolved = PurePosixPath("/")
            parts = list(PurePosixPath(target).parts) + parts
            if target.startswith("/"):
                parts = parts[1:]
        else:
            resolved = candidate
    return resolved


def shared_libraries(root: Path, binary: str) -> list[str]:
    """Absolute paths (inside ``root``) of the libraries ``binary`` loads."""
    out = command.run(["chroot", root, "ldd", binary], timeout=60)
    libs = []
    for line in out.splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            libs.append(match.group(1))
    if not libs:
        raise ImageError(f"ldd found no libraries for {binary}: {out}")
    return libs


def entries(root: Path, kernel: Kernel) -> list[cpio.Entry]:
    """Every member of the initrd."""
    members = [cpio.directory(d) for d in _SKELETON]
    members.append(cpio.from_path("init", INITRD_INIT))
    busybox = root / str(resolve_in_root(root, "/bin/busybox")).lstrip("/")
    members.append(cpio.file("bin/busybox", busybox.read_bytes(), executable=True))
    files: dict[str, Path] = {}
    for binary in _BINARIES:
        files[binary] = root / str(resolve_in_root(root, binary)).lstrip("/")
        for lib in shared_libraries(root, binary):
            files[lib] = root / str(resolve_in_root(root, lib)).lstrip("/")
    dirs: set[str] = set()
    for dest, source in files.items():
        name = dest.lstrip("/")
        parent = PurePosixPath(name).parent
        while str(parent) not in (".", *_SKELETON):
            dirs.add(str(parent))
            parent = parent.parent
        members.append(cpio.from_path(name, source))
    members += module_entries(kernel, dirs)
    members += [cpio.directory(d) for d in sorted(dirs)]
    return members


def module_entries(kernel: Kernel, dirs: set[str]) -> list[cpio.Entry]:
    """The initrd's kernel modules, their modules.dep and the lists /init loads; the
    directories they need are added to ``dirs``. Raises ImageError for a required
    module the kernel lacks."""
    members: list[cpio.Entry] = []
    modules, _ = module_closure(kernel.modules_dir, INITRD_MODULES)
    # The optional ones (and what they need beyond the required), absent ones skipped.
    extra, _ = module_closure(kernel.modules_dir, (), INITRD_OPTIONAL_MODULES)
    optional = [rel for rel in extra if rel not in modules]
    # /init loads them all with one `modprobe -a` in this order (dependencies and soft
    # dependencies first), one exec instead of one insmod each: modules.dep lists
    # each without dependencies, so modprobe loads exactly what it is named. The
    # optional ones follow with a second one whose failure is no error.
    base = f"lib/modules/{kernel.version}"
    listed = (*modules, *optional)
    for rel in listed:
        parent = PurePosixPath(base, rel).parent
        while str(parent) not in (".", "lib"):
            dirs.add(str(parent))
            parent = parent.parent
        members.append(cpio.file(f"{base}/{rel}", (kernel.modules_dir / rel).read_bytes()))
    members.append(cpio.file(f"{base}/modules.dep", "".join(f"{m}:\n" for m in listed).encode()))
    members.append(cpio.file("etc/modules.order", "".join(m + "\n" for m in modules).encode()))
    members.append(cpio.file("etc/modules.optional", "".join(m + "\n" for m in optional).encode()))
    return members


def build(root: Path, kernel: Kernel, out: Path) -> None:
    """Write the uncompressed initrd to ``out``.

    Uncompressed on purpose: QEMU loads it by DMA in no time, while decompressing a
    few MiB under TCG costs a measurable part of the boot.
    """
    with out.open("wb") as f:
        cpio.write(f, entries(root, kernel))
