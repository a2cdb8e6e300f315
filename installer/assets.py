"""Runtime assets: resolve the manifest into a handler name, install and remove the files.

Assets land in ``/opt/contrast/<handler>/`` below the host root. A file is written only
when its content (or mode) differs from what is there; every write goes through a temp
file that is verified against the asset's integrity before it is renamed into place.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from installer.atomicfile import atomic_replace, sync_dir
from installer.errors import FetchError, InstallerError, WriteError
from installer.integrity import CHUNK, Integrity
from installer.manifest import AssetSpec, Manifest, Role
from installer.sources import open_source, read_chunks

log = logging.getLogger(__name__)

INSTALL_ROOT = PurePosixPath("/opt/contrast")
HANDLER_PREFIX = "contrast-cc"
HANDLER_RE = re.compile(r"^contrast-cc-[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}$")
# Substituted assets are configuration files, read whole into memory.
MAX_SUBSTITUTE_BYTES = 4 << 20


@dataclass(frozen=True)
class ResolvedAsset:
    """An asset with the integrity its content must have (declared, or computed locally)."""

    spec: AssetSpec
    integrity: Integrity


@dataclass(frozen=True)
class Bundle:
    """A manifest resolved into the runtime it installs: handler name and asset paths."""

    manifest: Manifest
    assets: tuple[ResolvedAsset, ...]
    handler: str

    @property
    def handler_dir(self) -> PurePosixPath:
        """The handler's directory as the host (and containerd) sees it."""
        return INSTALL_ROOT / self.handler

    def host_path(self, spec: AssetSpec) -> PurePosixPath:
        return self.handler_dir / spec.path

    def role_path(self, role: Role) -> PurePosixPath:
        return self.host_path(self.manifest.asset_with_role(role))


class Action(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    MODE = "mode"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class AssetChange:
    path: PurePosixPath
    action: Action


def resolve(manifest: Manifest) -> Bundle:
    """Compute each asset's integrity and the handler name; raises FetchError."""
    resolved = []
    for spec in manifest.assets:
        integrity = spec.integrity
        if integrity is None:  # local file without a declared value: hash it now
            with open_source(spec) as stream:
                h = hashlib.sha256()
                for chunk in read_chunks(stream, spec.source):
                    h.update(chunk)
            integrity = Integrity("sha256", h.digest())
        resolved.append(ResolvedAsset(spec, integrity))
    assets = tuple(resolved)
    return Bundle(manifest, assets, handler_name(manifest, assets))


def handler_name(manifest: Manifest, assets: tuple[ResolvedAsset, ...]) -> str:
    """``contrast-cc-<platform>-<8 hex>``: the hash covers every asset's path, content, mode.

    Two runtime versions therefore get different handlers and can be installed side by
    side; the same assets always give the same name, whatever their source location.
    """
    canonical = json.dumps(
        {
            "platform": manifest.platform.value,
            "assets": sorted(
                [
                    str(a.spec.path),
                    str(a.integrity),
                    f"{a.spec.mode:04o}",
                    a.spec.role.value,
                    a.spec.substitute,
                ]
                for a in assets
            ),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    return f"{HANDLER_PREFIX}-{manifest.platform.value}-{digest}"


def install_assets(bundle: Bundle, host_root: Path, *, dry_run: bool) -> list[AssetChange]:
    """Put every asset in place below ``host_root``; returns what changed (or would).

    Raises FetchError, IntegrityError or WriteError; files already published stay (each
    is complete and verified), the failing one is left as it was.
    """
    changes = []
    for asset in bundle.assets:
        target = host_root / bundle.host_path(asset.spec).relative_to("/")
        action = _install_one(bundle, asset, target, dry_run)
        log.debug("asset %s: %s", bundle.host_path(asset.spec), action.value)
        changes.append(AssetChange(bundle.host_path(asset.spec), action))
    return changes


def _install_one(bundle: Bundle, asset: ResolvedAsset, target: Path, dry_run: bool) -> Action:
    spec = asset.spec
    existing_mode = _mode_of(target)
    regular = existing_mode is not None and existing_mode >= 0
    if spec.substitute:
        content = _substituted(bundle, asset)
        same = regular and _read(target) == content
    else:
        content = None
        same = regular and asset.integrity.matches(_digest_of(target, asset.integrity.algorithm))
    if same:
        if existing_mode == spec.mode:
            return Action.UNCHANGED
        if not dry_run:
            try:
                target.chmod(spec.mode)
            except OSError as err:
                raise WriteError(f"{target}: chmod failed: {err}") from err
        return Action.MODE
    action = Action.CREATE if existing_mode is None else Action.UPDATE
    if dry_run:
        return action
    _make_dirs(target.parent)
    with atomic_replace(target, spec.mode, owner=(0, 0) if os.geteuid() == 0 else None) as out:
        if content is not None:
            out.write(content)
        else:
            h = asset.integrity.hasher()
            with open_source(spec) as stream:
                for chunk in read_chunks(stream, spec.source):
                    h.update(chunk)
                    out.write(chunk)
            # Raising here discards the temp file: unverified bytes are never published.
            asset.integrity.check(h.digest(), spec.source)
    return action


def _substituted(bundle: Bundle, asset: ResolvedAsset) -> bytes:
    spec = asset.spec
    h = asset.integrity.hasher()
    data = bytearray()
    with open_source(spec) as stream:
        for chunk in read_chunks(stream, spec.source):
            h.update(chunk)
            data += chunk
            if len(data) > MAX_SUBSTITUTE_BYTES:
                raise FetchError(
                    f"{spec.source}: larger than {MAX_SUBSTITUTE_BYTES} bytes; "
                    "substitution is for configuration files"
                )
    asset.integrity.check(h.digest(), spec.source)
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as err:
        raise FetchError(f"{spec.source}: substitute = true needs UTF-8 text: {err}") from err
    values = {
        "@@HANDLER@@": bundle.handler,
        "@@HANDLER_DIR@@": str(bundle.handler_dir),
        "@@PLATFORM@@": bundle.manifest.platform.value,
    }
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text.encode("utf-8")


def remove_assets(handler: str, host_root: Path, *, dry_run: bool) -> bool:
    """Delete ``/opt/contrast/<handler>`` below ``host_root``; returns whether it existed."""
    if not HANDLER_RE.match(handler):
        raise InstallerError(f"refusing to remove assets of {handler!r}: not a Contrast handler")
    directory = host_root / INSTALL_ROOT.relative_to("/") / handler
    if not directory.exists():
        return False
    if not dry_run:
        try:
            shutil.rmtree(directory)
            sync_dir(directory.parent)
        except OSError as err:
            raise WriteError(f"{directory}: removal failed: {err}") from err
    return True


def _make_dirs(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(f"{directory}: cannot create directory: {err}") from err


def _mode_of(path: Path) -> int | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise WriteError(f"{path}: cannot stat: {err}") from err
    # Anything but a regular file (a symlink planted there, say) is replaced.
    return st.st_mode & 0o777 if path.is_file() and not path.is_symlink() else -1


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise WriteError(f"{path}: cannot read: {err}") from err


def _digest_of(path: Path, algorithm: str) -> bytes:
    h = hashlib.new(algorithm)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except OSError as err:
        raise WriteError(f"{path}: cannot read: {err}") from err
    return h.digest()
