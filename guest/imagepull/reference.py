"""Parse image references; only digest-pinned ones are accepted for pulls.

Grammar as in the distribution reference package: ``[host[:port]/]path[:tag]@algo:hex``.
The host is the first component when it contains ``.`` or ``:`` or is ``localhost``;
otherwise the reference names Docker Hub (``docker.io``, ``library/`` for single names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guest.imagepull.digest import Digest
from guest.imagepull.errors import InvalidReference, VerificationError

DOCKER_HUB = "docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(
    r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?$"
)
MAX_REFERENCE = 4096


@dataclass(frozen=True)
class Reference:
    """A parsed image reference. ``digest`` is None only for unpinned references."""

    registry: str
    repository: str
    tag: str | None
    digest: Digest | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def pinned(self) -> Digest:
        """The digest this reference is pinned to.

        Raises InvalidReference when the reference carries no ``@sha256:`` digest.
        """
        if self.digest is None:
            raise InvalidReference(
                f"image reference {str(self)!r} is not pinned by digest: "
                "only references with @sha256:<hex> are pulled"
            )
        return self.digest


def parse(text: str) -> Reference:
    """Parse ``text`` into a Reference (digest optional here; see Reference.pinned).

    Raises InvalidReference naming what is wrong.
    """
    if not text or len(text) > MAX_REFERENCE:
        raise InvalidReference(f"image reference is empty or longer than {MAX_REFERENCE} bytes")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(f"image reference {text!r} contains whitespace")
    rest, at, digest_text = text.partition("@")
    digest = None
    if at:
        try:
            digest = Digest.parse(digest_text)
        except VerificationError as err:
            raise InvalidReference(f"image reference {text!r}: {err}") from err
    name, tag = rest, None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference(f"image reference {text!r}: invalid tag {tag!r}")
    registry, repository = _split_name(text, name)
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def _split_name(text: str, name: str) -> tuple[str, str]:
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.match(first):
            raise InvalidReference(f"image reference {text!r}: invalid registry host {first!r}")
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, name
        if "/" not in path:
            path = f"library/{path}"
    if not path or not all(_COMPONENT.match(c) for c in path.split("/")):
        raise InvalidReference(
            f"image reference {text!r}: invalid repository {path!r} "
            "(lowercase letters, digits and separators . _ __ - only)"
        )
    if len(path) > 255:
        raise InvalidReference(f"image reference {text!r}: repository longer than 255 bytes")
    return registry, path
