"""Build the node image once per set of inputs, into a cache (like guest.image's)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from guest.image import command
from guest.image.build import _locked
from guest.image.build import ensure_image as ensure_guest_image
from guest.image.errors import ImageError
from guest.image.rootfs import package_versions
from guest.image.sources import SUITE, debian_sources
from nodeimage import layout, oci, wheels

log = logging.getLogger(__name__)

RECIPE_VERSION = "1"
EPOCH = 1704067200  # 2024-01-01T00:00:00Z, as the guest image
KEEP_BUILDS = 2
SUMMARY = "image.json"
LAYOUT = "oci"
PYTHON_SITE = "usr/local/lib/python3.11/dist-packages"
_DPKG_EXCLUDES = (
    "/usr/share/man/*",
    "/usr/share/doc/*",
    "/usr/share/locale/*",
    "/usr/share/info/*",
)
_TRIM = ("var/cache/apt", "var/lib/apt/lists", "var/log", "usr/share/doc", "usr/share/man")
_RECIPE = ("nodeimage", "packaging/node")
# The fully qualified name (what CRI normalises contrast-node to).
IMAGE_NAME = "docker.io/library/contrast-node"


@dataclass(frozen=True)
class NodeImage:
    directory: Path
    summary: dict[str, object]

    @property
    def layout(self) -> Path:
        return self.directory / LAYOUT

    @property
    def handler(self) -> str:
        return str(self.summary["handler"])

    @property
    def reference(self) -> str:
        """The name:tag the layout's index carries (the tag is the handler)."""
        return f"{IMAGE_NAME}:{self.handler}"


def default_cache() -> Path:
    """CONTRAST_NODE_IMAGE_CACHE, or build/node-image in the repository (gitignored)."""
    return Path(os.environ.get("CONTRAST_NODE_IMAGE_CACHE", layout.REPO / "build" / "node-image"))


def cache_key(repo: Path, platform: str, guest_key: str, sources: list[str]) -> str:
    """SHA-256 over recipe, our wheel's sources, pins, packages, guest image, platform, mirror."""
    h = hashlib.sha256()

    def add(label: str, value: bytes) -> None:
        h.update(label.encode() + b"\0" + len(value).to_bytes(8, "little") + value)

    add("recipe-version", RECIPE_VERSION.encode())
    recipe = [p for folder in _RECIPE for p in sorted((repo / folder).rglob("*")) if p.is_file()]
    for path in recipe:
        if "__pycache__" not in path.parts:
            add(f"recipe:{path.relative_to(repo).as_posix()}", path.read_bytes())
    for rel in wheels.source_files(repo):
        add(f"file:{rel.as_posix()}", (repo / rel).read_bytes())
    add("constraints", wheels.constraints().encode())
    add("packages", "\n".join(layout.DEBIAN_PACKAGES).encode())
    add("guest", guest_key.encode())
    add("platform", platform.encode())
    add("sources", "\n".join(sources).encode())
    return h.hexdigest()


def ensure_image(platform: str, cache: Path | None = None, *, force: bool = False) -> NodeImage:
    """The node image for ``platform`` and the current inputs, reused or built into ``cache``.

    The guest image comes from guest.image's own cache. Raises ImageError.
    """
    if platform not in layout.NO_FIRMWARE_PLATFORMS:
        raise ImageError(
            f"platform {platform!r} needs a firmware (OVMF.fd) the guest image built here "
            f"does not have: build {'/'.join(layout.NO_FIRMWARE_PLATFORMS)} here, or use the "
            "Containerfile with a GUEST_IMAGE that holds /guest/OVMF.fd"
        )
    cache = cache or default_cache()
    guest = ensure_guest_image()
    sources = debian_sources()
    key = cache_key(layout.REPO, platform, guest.manifest.key, sources)
    final = cache / key[:16]
    with _locked(cache):
        if (final / SUMMARY).is_file() and not force:
            log.info("node image %s reused from %s", key[:16], final)
            return load(final)
        if final.exists():
            shutil.rmtree(final)
        work = cache / f".build-{key[:16]}-{os.getpid()}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        try:
            _build(work, key, platform, guest.directory, sources)
            work.rename(final)
        finally:
            if work.exists():
                shutil.rmtree(work)
        _prune(cache, keep=final)
        return load(final)


def load(directory: Path) -> NodeImage:
    try:
        summary = json.loads((directory / SUMMARY).read_text())
    except (OSError, ValueError) as err:
        raise ImageError(f"{directory}: no readable {SUMMARY}: {err}") from err
    return NodeImage(directory, summary)


def _chroot(tree: Path, *args: str, env: dict[str, str] | None = None) -> str:
    pairs = [f"{k}={v}" for k, v in (env or {}).items()]
    return command.run(["chroot", tree, "env", "-i", "PATH=" + _PATH, *pairs, *args], timeout=900)


_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _build(work: Path, key: str, platform: str, guest_dir: Path, sources: list[str]) -> None:
    started = time.monotonic()
    wheel_dir = wheels.build(layout.REPO, work)
    tree = work / "tree"
    log.info("bootstrapping Debian into %s", tree)
    args: list[str] = [
        "mmdebstrap", "--mode=root", "--variant=essential", "--format=directory",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        '--aptopt=APT::Install-Recommends "false"',
        f"--include={','.join(layout.DEBIAN_PACKAGES)}",
        *[f"--dpkgopt=path-exclude={p}" for p in _DPKG_EXCLUDES],
        SUITE, str(tree), *sources,
    ]  # fmt: skip
    command.run(args, timeout=1800, env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    packages = package_versions(tree)
    # pip runs once, from /tmp, with the image's python3; it is not left in the image.
    shutil.copytree(wheels.pip_package(), tree / "tmp/pip/pip")
    shutil.copytree(wheel_dir, tree / "tmp/wheels")
    _chroot(
        tree, "python3", "-m", "pip", "install", "--quiet", "--no-index",
        "--find-links", "/tmp/wheels", "--no-compile", "--break-system-packages",
        "--disable-pip-version-check", "--root-user-action", "ignore",
        layout.REQUIREMENT,
        env={"PYTHONPATH": "/tmp/pip"},
    )  # fmt: skip
    _chroot(tree, "python3", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
            "/" + PYTHON_SITE)  # fmt: skip
    dists = _chroot(
        tree, "python3", "-c",
        "import importlib.metadata as m\n"
        "for d in sorted(m.distributions(path=['/" + PYTHON_SITE + "']), "
        "key=lambda d: d.metadata['Name'].lower()):\n"
        "    print(d.metadata['Name'], d.version)",
    )  # fmt: skip
    for copy in layout.REPO_FILES:
        _place(layout.REPO / copy.source, tree, copy)
    for name in layout.guest_files(platform):
        dest = tree / layout.ASSETS.relative_to("/") / name
        shutil.copyfile(guest_dir / layout.GUEST_BUILD_NAMES[name], dest)
    _place(layout.REPO / layout.SETUP.source, tree, layout.SETUP)
    setup = str(layout.SETUP.dest)
    handler = _chroot(tree, "sh", setup, env={"PLATFORM": platform}).strip().splitlines()[-1]
    for rel in ("tmp/pip", "tmp/wheels", setup.lstrip("/")):
        path = tree / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for rel in _TRIM:
        if (tree / rel).is_dir():
            shutil.rmtree(tree / rel)
            (tree / rel).mkdir()
    contract = layout.contract(platform)
    missing = [str(p) for p in contract if not (tree / p.relative_to("/")).exists()]
    if missing:
        raise ImageError(f"the node image lacks {', '.join(missing)}")
    log.info("writing the OCI layout (handler %s)", handler)
    built = oci.write_layout(
        tree,
        work / LAYOUT,
        name=IMAGE_NAME,
        tag=handler,
        cmd=list(layout.CMD),
        labels={"org.opencontainers.image.title": "contrast-node", "io.contrast.handler": handler},
        mtime=EPOCH,
    )
    shutil.rmtree(tree)
    summary = {
        "key": key,
        "platform": platform,
        "handler": handler,
        "reference": f"{IMAGE_NAME}:{handler}",
        "manifest_digest": built.manifest_digest,
        "layer_bytes": built.layer_bytes,
        "tree_bytes": built.tree_bytes,
        "build_seconds": round(time.monotonic() - started, 1),
        "debian_packages": packages,
        "python_distributions": dict(line.split(" ", 1) for line in dists.splitlines()),
    }
    (work / SUMMARY).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")


def _place(source: Path, tree: Path, copy: layout.Copy) -> None:
    dest = tree / copy.dest.relative_to("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    dest.chmod(copy.mode)


def _prune(cache: Path, keep: Path) -> None:
    builds = sorted(
        (p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in [b for b in builds if b != keep][KEEP_BUILDS - 1 :]:
        log.info("removing old node image %s", old)
        shutil.rmtree(old)
