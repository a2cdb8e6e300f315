"""The asset manifest: which files make up one runtime, where they come from, how to check them.

A manifest is a TOML file (format documented in ``installer/README.md``)::

    format = 1
    platform = "metal-qemu-snp"

    [[asset]]
    path = "bin/containerd-shim-contrast-cc-v2"   # below /opt/contrast/<handler>/
    source = "assets/containerd-shim-contrast-cc-v2"  # local path (relative to the manifest)
    mode = "0755"                                   # or an http(s) URL
    role = "shim"
    integrity = "sha256-…"                          # required for URLs

Exactly one asset has role ``shim`` (containerd's ``runtime_path``) and one has role
``runtime-config`` (the runtime options' ``ConfigPath``).
"""

from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from installer.errors import ManifestError
from installer.integrity import Integrity

FORMAT = 1
# Placeholders replaced in assets marked ``substitute = true``, after verification.
PLACEHOLDERS = ("@@HANDLER@@", "@@HANDLER_DIR@@", "@@PLATFORM@@")


class Platform(enum.Enum):
    """Where pod-VMs run; part of the runtime handler name."""

    METAL_QEMU_SNP = "metal-qemu-snp"
    METAL_QEMU_TDX = "metal-qemu-tdx"
    # No hardware protection: development and CI machines (TCG or plain KVM).
    QEMU_INSECURE = "qemu-insecure"


class Role(enum.Enum):
    """What an asset is for; ``shim`` and ``runtime-config`` are wired into containerd."""

    SHIM = "shim"
    RUNTIME_CONFIG = "runtime-config"
    DAEMON = "daemon"
    KERNEL = "kernel"
    INITRD = "initrd"
    ROOTFS = "rootfs"
    FIRMWARE = "firmware"
    OTHER = "other"


@dataclass(frozen=True)
class AssetSpec:
    """One file of the runtime as the manifest declares it."""

    path: PurePosixPath  # relative, below the handler directory
    source: str  # absolute local path or http(s) URL
    integrity: Integrity | None
    mode: int
    role: Role
    substitute: bool

    @property
    def is_url(self) -> bool:
        return urlsplit(self.source).scheme in ("http", "https")


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest."""

    path: Path
    platform: Platform
    assets: tuple[AssetSpec, ...]

    def asset_with_role(self, role: Role) -> AssetSpec:
        return next(a for a in self.assets if a.role is role)


_ASSET_KEYS = {"path", "source", "integrity", "mode", "role", "substitute"}
_TOP_KEYS = {"format", "platform", "asset"}


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file; raises ManifestError naming the file and problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ManifestError(f"{path}: cannot read manifest: {err.strerror or err}") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not a valid TOML manifest: {err}") from err
    return parse_manifest(raw, path)


def parse_manifest(raw: dict[str, Any], path: Path) -> Manifest:
    """Validate an already-parsed manifest document; relative sources resolve against ``path``."""
    where = str(path)
    _no_unknown_keys(raw, _TOP_KEYS, where)
    if raw.get("format") != FORMAT:
        raise ManifestError(f"{where}: format must be {FORMAT}, got {raw.get('format')!r}")
    try:
        platform = Platform(raw.get("platform"))
    except ValueError as err:
        choices = ", ".join(p.value for p in Platform)
        raise ManifestError(
            f"{where}: platform {raw.get('platform')!r} is not one of {choices}"
        ) from err
    entries = raw.get("asset")
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{where}: needs at least one [[asset]] table")
    assets = tuple(
        _parse_asset(entry, f"{where}: asset #{i + 1}", path.parent)
        for i, entry in enumerate(entries)
    )
    seen: set[PurePosixPath] = set()
    for asset in assets:
        if asset.path in seen:
            raise ManifestError(f"{where}: two assets install to {asset.path}")
        seen.add(asset.path)
    for role in (Role.SHIM, Role.RUNTIME_CONFIG):
        count = sum(a.role is role for a in assets)
        if count != 1:
            raise ManifestError(
                f"{where}: needs exactly one asset with role {role.value!r}, found {count}"
            )
    return Manifest(path, platform, assets)


def _parse_asset(entry: Any, where: str, base: Path) -> AssetSpec:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: must be a table")
    _no_unknown_keys(entry, _ASSET_KEYS, where)
    rel = _string(entry, "path", where)
    target = PurePosixPath(rel)
    if target.is_absolute() or not target.parts or ".." in target.parts or rel.endswith("/"):
        raise ManifestError(f"{where}: path {rel!r} must be a relative file path without '..'")
    source = _string(entry, "source", where)
    scheme = urlsplit(source).scheme
    integrity_raw = entry.get("integrity")
    if integrity_raw is not None and not isinstance(integrity_raw, str):
        raise ManifestError(f"{where}: integrity must be a string")
    integrity = Integrity.parse(integrity_raw) if integrity_raw is not None else None
    if scheme in ("http", "https"):
        if integrity is None:
            raise ManifestError(f"{where}: source {source!r} is a URL and needs an integrity value")
    elif scheme in ("", "file"):
        local = Path(source.removeprefix("file://")) if scheme else Path(source)
        source = str(local if local.is_absolute() else (base / local).resolve())
    else:
        raise ManifestError(f"{where}: source {source!r}: only local paths and http(s) URLs")
    mode_raw = entry.get("mode", "0644")
    try:
        mode = int(mode_raw, 8) if isinstance(mode_raw, str) else -1
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ManifestError(f"{where}: mode {mode_raw!r} must be an octal string like '0755'")
    try:
        role = Role(entry.get("role", Role.OTHER.value))
    except ValueError as err:
        choices = ", ".join(r.value for r in Role)
        raise ManifestError(f"{where}: role {entry.get('role')!r} is not one of {choices}") from err
    substitute = entry.get("substitute", False)
    if not isinstance(substitute, bool):
        raise ManifestError(f"{where}: substitute must be true or false")
    return AssetSpec(target, source, integrity, mode, role, substitute)


def _string(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: {key} must be a non-empty string")
    return value


def _no_unknown_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)}")
