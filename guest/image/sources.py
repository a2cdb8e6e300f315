"""The Debian mirror the build host's apt uses, as mmdebstrap source lines."""

from __future__ import annotations

import os
from pathlib import Path

from guest.image.errors import ImageError

SUITE = "bookworm"
_SUITES = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")


def debian_sources(apt_dir: Path = Path("/etc/apt")) -> list[str]:
    """One-line ``deb URI SUITE COMPONENTS`` entries for Debian bookworm.

    ``CONTRAST_IMAGE_MIRROR`` (lines separated by ``|``) overrides what the host's
    apt configuration says. Raises ImageError when no Debian bookworm source is found.
    """
    override = os.environ.get("CONTRAST_IMAGE_MIRROR")
    if override:
        return [line.strip() for line in override.split("|") if line.strip()]
    lines: list[str] = []
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        lines += _from_deb822(path.read_text())
    for path in [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]:
        if path.is_file():
            lines += _from_one_line(path.read_text())
    if not lines:
        raise ImageError(f"no Debian {SUITE} source found under {apt_dir}")
    return lines


def _is_debian(uri: str) -> bool:
    return uri.rstrip("/").rsplit("/", 1)[-1] in ("debian", "debian-security")


def _from_deb822(text: str) -> list[str]:
    lines = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        components = fields.get("components", "main")
        for uri in fields.get("uris", "").split():
            if not _is_debian(uri):
                continue
            for suite in fields.get("suites", "").split():
                if suite in _SUITES:
                    lines.append(f"deb {uri} {suite} {components}")
    return lines


def _from_one_line(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) < 4 or words[0] != "deb":
            continue
        if words[1].startswith("["):  # options like [signed-by=...]
            end = next((i for i, w in enumerate(words) if w.endswith("]")), len(words))
            words = ["deb", *words[end + 1 :]]
        if len(words) >= 4 and _is_debian(words[1]) and words[2] in _SUITES:
            lines.append(" ".join(words))
    return lines
