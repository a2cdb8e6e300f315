"""What the node image holds: the one description both builds follow.

``nodeimage.build`` (Debian packages by mmdebstrap, our wheels, the guest image built
here) and the root ``Containerfile`` (for users with a registry; rendered from this
module by ``python -m nodeimage containerfile``, a unit test keeps the committed copy
current) lay out the same files at the same paths:

- ``/usr/local/bin/<script>`` for every console script of ``pyproject.toml`` (the shim
  launcher runs ``/usr/local/bin/containerd-shim-contrast-cc-v2``; the DaemonSet's
  commands are ``contrast-node-installer`` and ``contrast-node-daemon``);
- ``/usr/share/contrast/manifest.toml`` and ``assets/`` (what the installer installs),
  ``/usr/share/contrast/handler`` (the handler name those assets hash to).

SETUP (packaging/node/image-setup.sh) runs last in both (a ``RUN`` there, ``chroot``
here), so the platform edit and the handler come from the same lines.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[1]
SHARE = PurePosixPath("/usr/share/contrast")
ASSETS = SHARE / "assets"
BIN = PurePosixPath("/usr/local/bin")
HANDLER_FILE = SHARE / "handler"
MANIFEST_FILE = SHARE / "manifest.toml"
CMD = ("contrast-node-daemon",)
DEFAULT_PLATFORM = "metal-qemu-snp"
# The distribution and extra pip installs; systemd-python compiles against libsystemd.
REQUIREMENT = "contrast-node[systemd]"

# Debian packages on top of Debian's Essential set (python3 is bookworm's 3.11).
# qemu-utils: qemu-img; iproute2 (ip, tc) and iptables (the port-forward's nat rule in
# the pod's netns); util-linux: nsenter (installer, shim launcher); libsystemd0 for
# systemd-python (sd_notify, journal).
DEBIAN_PACKAGES = (
    "python3",
    "qemu-system-x86",
    "qemu-utils",
    "iproute2",
    "iptables",
    "util-linux",
    "libsystemd0",
)
# Build-only packages of the Containerfile's wheel stage (here: the build host's).
BUILD_PACKAGES = ("gcc", "libc6-dev", "pkg-config", "libsystemd-dev")


@dataclass(frozen=True)
class Copy:
    """A file of the checkout at a path of the image."""

    source: str  # relative to the repository
    dest: PurePosixPath
    mode: int = 0o644


REPO_FILES = (
    Copy("packaging/node/shim-launcher.sh", ASSETS / "containerd-shim-contrast-cc-v2", 0o755),
    Copy("packaging/node/runtime.toml", ASSETS / "runtime.toml"),
    Copy("packaging/node/manifest.toml", MANIFEST_FILE),
)

# The guest image's files (the Containerfile's GUEST_IMAGE has them under /guest/ by
# these names), copied to ASSETS under the same name. guest.image names its root
# "root.img": GUEST_BUILD_NAMES maps.
GUEST_FILES = ("vmlinuz", "initrd.img", "rootfs.img", "manifest.json", "OVMF.fd")
GUEST_BUILD_NAMES = {
    "vmlinuz": "vmlinuz",
    "initrd.img": "initrd.img",
    "rootfs.img": "root.img",
    "manifest.json": "manifest.json",
}
# Platforms without a TEE boot the kernel directly: no firmware asset (SETUP removes it).
NO_FIRMWARE_PLATFORMS = ("qemu-insecure",)
# Run last in the image's root with PLATFORM set, then removed.
SETUP = Copy("packaging/node/image-setup.sh", PurePosixPath("/tmp/image-setup.sh"), 0o755)


def console_scripts(repo: Path = REPO) -> tuple[str, ...]:
    """The console scripts pyproject.toml declares, sorted."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    return tuple(sorted(project["scripts"]))


def guest_files(platform: str) -> tuple[str, ...]:
    if platform in NO_FIRMWARE_PLATFORMS:
        return tuple(name for name in GUEST_FILES if name != "OVMF.fd")
    return GUEST_FILES


def contract(platform: str, repo: Path = REPO) -> list[PurePosixPath]:
    """The image paths both builds must produce for ``platform``, sorted."""
    paths = {BIN / name for name in console_scripts(repo)}
    paths |= {c.dest for c in REPO_FILES}
    paths |= {ASSETS / name for name in guest_files(platform)}
    paths.add(HANDLER_FILE)
    return sorted(paths)
