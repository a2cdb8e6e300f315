"""Debian's kernel from the build host, and the closure of the modules the guest needs.

The kernel is the host's installed ``linux-image-amd64`` (a Debian package from the
same mirror), so the image needs no second kernel download.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from guest.image.errors import ImageError

# Modules the initrd loads, in this order, to reach the verity root.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "dm_mod", "dm_verity", "erofs")

# Loaded by the initrd after those when the kernel has them, before dm-verity's table
# is set up: the kernel's SIMD sha256 (SHA-NI, AVX2, AVX or SSSE3, whichever the CPU
# has), which dm-verity then picks over the built-in sha256-generic for every block
# of the root it hashes. On a CPU without SSSE3 it does not load and verity keeps
# sha256-generic.
INITRD_OPTIONAL_MODULES = ("sha256_ssse3",)

# Present only in newer kernels; recorded as missing in the manifest when absent.
OPTIONAL_ROOT_MODULES = ("tdx_guest",)

# Modules the running guest may need later; loaded on demand with modprobe.
ROOT_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "virtio_rng",
    "vmw_vsock_virtio_transport",
    "dm_mod",
    "dm_verity",
    "dm_crypt",
    "dm_integrity",
    # The secure image store's authenc(hmac(sha256),xts(aes)) (hmac, sha256, aes built in).
    "xts",
    "authenc",
    # Their implementations with the CPU's instructions (AES-NI; SHA-NI, AVX2, AVX or
    # SSSE3): the store loads them before its format (guest/securemount/luks.py), since
    # the kernel never asks for a module for an algorithm it has built in.
    "aesni_intel",
    "sha256_ssse3",
    "erofs",
    "overlay",
    "ext4",
    "squashfs",
    "loop",
    "button",
    "evdev",
    "sev-guest",
    "veth",
    "bridge",
    "br_netfilter",
    "tun",
)


@dataclass(frozen=True)
class Kernel:
    """One installed kernel: its version, image file and module tree."""

    version: str
    vmlinuz: Path
    modules_dir: Path

    def digest(self) -> str:
        """SHA-256 of the kernel image (part of the image's cache key)."""
        h = hashlib.sha256()
        with self.vmlinuz.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


def find_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> Kernel:
    """The newest kernel that has both /boot/vmlinuz-<v> and /lib/modules/<v>.

    Raises ImageError when there is none (install linux-image-amd64).
    """
    env_version = os.environ.get("CONTRAST_GUEST_KERNEL")
    candidates = []
    for image in boot.glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        if (modules / version / "modules.dep").is_file():
            candidates.append(Kernel(version, image, modules / version))
    if env_version:
        candidates = [k for k in candidates if k.version == env_version]
    if not candidates:
        raise ImageError(
            f"no kernel with modules under {boot} and {modules}"
            + (f" for version {env_version}" if env_version else "")
            + ": install linux-image-amd64"
        )
    return max(candidates, key=lambda k: _version_key(k.version))


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.replace("-", ".").split("."):
        parts.append(int(piece) if piece.isdigit() else -1)
    return tuple(parts)


def _normalise(name: str) -> str:
    return name.replace("-", "_")


def read_module_deps(modules_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """Map module name -> (relative path, [relative paths of its dependencies])."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        name = _normalise(Path(path).name.split(".ko")[0])
        deps[name] = (path, rest.split())
    return deps


def builtin_modules(modules_dir: Path) -> set[str]:
    """Names of modules compiled into the kernel (nothing to load for them)."""
    path = modules_dir / "modules.builtin"
    if not path.exists():
        return set()
    return {_normalise(Path(p).name.split(".ko")[0]) for p in path.read_text().split()}


def read_softdeps(modules_dir: Path) -> dict[str, list[str]]:
    """Map module name -> names (or aliases) it wants loaded before itself."""
    soft: dict[str, list[str]] = {}
    path = modules_dir / "modules.softdep"
    if not path.exists():
        return soft
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "softdep":
            continue
        pre: list[str] = []
        taking = False
        for word in words[2:]:
            if word.endswith(":"):
                taking = word == "pre:"
            elif taking:
                pre.append(word)
        soft.setdefault(_normalise(words[1]), []).extend(pre)
    return soft


def resolve_alias(modules_dir: Path, name: str, known: set[str]) -> str | None:
    """A module name for ``name``: itself if it is one, else the alias target,
    preferring the portable ``*_generic`` implementation when there are several."""
    key = _normalise(name)
    if key in known:
        return key
    targets = []
    for line in (modules_dir / "modules.alias").read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias" and words[1] == name:
            targets.append(_normalise(words[2]))
    generic = [t for t in targets if t.endswith("_generic")]
    candidates = generic or targets
    if not candidates or candidates[0] not in known:
        return None
    return candidates[0]


def module_closure(
    modules_dir: Path, names: tuple[str, ...], optional: tuple[str, ...] = ()
) -> tuple[list[str], list[str]]:
    """Relative paths of ``names`` and everything they depend on, dependencies first,
    and the ``optional`` names this kernel lacks.

    Built-in modules are skipped; a required module that is neither built in nor
    present raises ImageError naming it.
    """
    deps = read_module_deps(modules_dir)
    builtin = builtin_modules(modules_dir)
    softdeps = read_softdeps(modules_dir)
    by_path = {path: name for name, (path, _) in deps.items()}
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for soft in softdeps.get(by_path[path], []):
            target = resolve_alias(modules_dir, soft, set(deps))
            if target is not None:
                visit(deps[target][0])
        for dep in deps[by_path[path]][1]:
            visit(dep)
        ordered.append(path)

    missing: list[str] = []
    for name in (*names, *optional):
        key = _normalise(name)
        if key in deps:
            visit(deps[key][0])
        elif key in builtin:
            continue
        elif name in optional:
            missing.append(name)
        else:
            raise ImageError(f"kernel module {name!r} not found in {modules_dir}")
    return ordered, missing
