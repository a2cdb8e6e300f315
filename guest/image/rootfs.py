"""The guest's root filesystem tree: Debian packages, our Python code, kernel modules."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
from pathlib import Path

from guest.image import command
from guest.image.errors import ImageError
from guest.image.kernel import OPTIONAL_ROOT_MODULES, ROOT_MODULES, Kernel, module_closure
from guest.image.sources import SUITE
from guest.init import ROOT_FSTAB, ROOT_INIT

log = logging.getLogger(__name__)

# Debian packages on top of the Essential set. busybox-static also serves the initrd.
PACKAGES = (
    "python3",
    "crun",
    "cryptsetup-bin",
    "e2fsprogs",  # mkfs.ext4 for the secure image store (guest.securemount)
    "kmod",
    "iproute2",
    "mount",
    "busybox-static",
    "dmsetup",
    # protobuf's upb extension links against it; without it protobuf silently falls
    # back to its pure-Python implementation, seconds slower to import under TCG.
    "libstdc++6",
    "libatomic1",  # regopy's librego_shared.so
)

# Python distributions copied from the build host's environment: Debian's
# python3-protobuf is far older than the generated code needs. The guest's python3
# is 3.11 like the host's, so binary wheels built for the host's glibc work too.
# Each maps to the module the build imports in the guest's python3 to prove it loads.
PYTHON_DISTRIBUTIONS = {
    "protobuf": "google.protobuf",
    "regopy": "regopy",
    "zstandard": "zstandard",
}

# Our own packages in the guest. guest.image is the recipe itself, not guest code.
OUR_PACKAGES = ("ttrpc", "api", "guest")
EXCLUDED_PACKAGES = ("guest/image",)

PYTHON_DIR = Path("usr/lib/contrast/python")
_DPKG_EXCLUDES = (
    "/usr/share/man/*",
    "/usr/share/doc/*",
    "/usr/share/locale/*",
    "/usr/share/info/*",
)
_TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/log",
)


def bootstrap(target: Path, sources: list[str], epoch: int) -> None:
    """Install Debian's Essential set plus PACKAGES into ``target`` with mmdebstrap.

    Runs as root (mode "root"); merged /usr comes from mmdebstrap's hook, which keeps
    the usrmerge package (and perl with it) out of the image.
    """
    if os.geteuid() != 0:
        raise ImageError("building the guest image needs root (mmdebstrap --mode=root)")
    args: list[str] = [
        "mmdebstrap",
        "--mode=root",
        "--variant=essential",
        "--format=directory",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        '--aptopt=APT::Install-Recommends "false"',
        f"--include={','.join(PACKAGES)}",
    ]
    args += [f"--dpkgopt=path-exclude={p}" for p in _DPKG_EXCLUDES]
    args += [SUITE, str(target), *sources]
    command.run(args, timeout=1800, env={"SOURCE_DATE_EPOCH": str(epoch)})


def package_versions(target: Path) -> dict[str, str]:
    """Installed Debian packages and versions, read from dpkg's status file."""
    versions: dict[str, str] = {}
    status = (target / "var/lib/dpkg/status").read_text()
    for stanza in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            versions[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(versions.items()))


def our_source_files(repo: Path) -> list[Path]:
    """Our Python files that go into the guest, relative to the repository root."""
    files: list[Path] = []
    for package in OUR_PACKAGES:
        for path in sorted((repo / package).rglob("*.py")):
            rel = path.relative_to(repo)
            if "__pycache__" in rel.parts:
                continue
            if any(rel.as_posix().startswith(ex + "/") for ex in EXCLUDED_PACKAGES):
                continue
            files.append(rel)
    return files


def distribution_files(name: str) -> tuple[str, list[Path]]:
    """Version and absolute paths of an installed distribution's files."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError as err:
        raise ImageError(
            f"Python distribution {name!r} is not installed on the build host"
        ) from err
    paths = []
    for entry in dist.files or []:
        if "__pycache__" in entry.parts or entry.parts[0].endswith(".dist-info"):
            continue
        path = Path(str(dist.locate_file(entry)))
        if path.is_file():
            paths.append(path)
    return dist.version, sorted(paths)


def install_python(target: Path, repo: Path) -> dict[str, str]:
    """Copy our packages and PYTHON_DISTRIBUTIONS under PYTHON_DIR and byte-compile.

    Returns the copied distributions' versions.
    """
    dest = target / PYTHON_DIR
    dest.mkdir(parents=True, exist_ok=True)
    for rel in our_source_files(repo):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest / rel)
    versions: dict[str, str] = {}
    for name in PYTHON_DISTRIBUTIONS:
        version, files = distribution_files(name)
        versions[name] = version
        site = Path(str(importlib.metadata.distribution(name).locate_file("")))
        for path in files:
            out = dest / path.relative_to(site)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
    # The root is read-only: without .pyc files every boot would compile again.
    # unchecked-hash pyc files are reproducible and skip the source stat.
    command.run(
        [
            "chroot",
            target,
            "python3",
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            "/" + PYTHON_DIR.as_posix(),
        ],
        timeout=600,
    )
    imports = ", ".join(PYTHON_DISTRIBUTIONS.values())
    command.run(
        ["chroot", target, "env", f"PYTHONPATH=/{PYTHON_DIR.as_posix()}", "python3", "-c",
         f"import {imports}"],
        timeout=120,
    )  # fmt: skip
    versions["protobuf-implementation"] = _protobuf_implementation(target)
    return versions


def _protobuf_implementation(target: Path) -> str:
    """Which protobuf implementation the guest's python3 loads; only upb is accepted."""
    out = command.run(
        ["chroot", target, "env", f"PYTHONPATH=/{PYTHON_DIR.as_posix()}", "python3", "-c",
         "from google.protobuf.internal import api_implementation as a; print(a.Type())"],
        timeout=120,
    ).strip()  # fmt: skip
    if out != "upb":
        why = ""
        try:
            command.run(
                ["chroot", target, "env", f"PYTHONPATH=/{PYTHON_DIR.as_posix()}", "python3",
                 "-c", "import google._upb._message"],
                timeout=120,
            )  # fmt: skip
        except ImageError as err:
            why = f": {err}"
        raise ImageError(f"the guest's protobuf uses the {out!r} implementation, not upb{why}")
    return out


def install_init(target: Path) -> None:
    """PID 1 of the real root and the runtime mounts it makes."""
    init = target / "sbin/contrast-init"
    shutil.copyfile(ROOT_INIT, init)
    init.chmod(0o755)
    fstab = target / "usr/lib/contrast/fstab"
    fstab.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT_FSTAB, fstab)


def install_modules(target: Path, kernel: Kernel) -> list[str]:
    """Copy ROOT_MODULES (with dependencies) and index them; return missing optional ones."""
    paths, missing = module_closure(kernel.modules_dir, ROOT_MODULES, OPTIONAL_ROOT_MODULES)
    dest = target / "usr/lib/modules" / kernel.version
    for rel in paths:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kernel.modules_dir / rel, dest / rel)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (kernel.modules_dir / name).exists():
            shutil.copy2(kernel.modules_dir / name, dest / name)
    command.run(["chroot", target, "depmod", kernel.version], timeout=120)
    return missing


def trim(target: Path) -> None:
    """Drop documentation, caches and logs the guest never reads."""
    for rel in _TRIM:
        path = target / rel
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir()
