"""Content digests and verification while streaming.

Every byte the puller uses passes through a ``VerifyingReader``: it hashes and counts
as it reads, refuses to read past the expected size, and ``verify()`` checks the digest
and size once the stream is drained. Nothing read is trusted before ``verify()`` passes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from guest.imagepull.errors import VerificationError

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[a-f0-9]+$")
CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Digest:
    """An ``algorithm:hex`` content digest (sha256 or sha512)."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``sha256:<64 hex>`` (or sha512). Raises VerificationError when malformed."""
        algorithm, colon, value = text.partition(":")
        if not colon or algorithm not in _ALGORITHMS:
            raise VerificationError(
                f"digest {text[:100]!r}: algorithm must be one of {sorted(_ALGORITHMS)}"
            )
        if len(value) != _ALGORITHMS[algorithm] or not _HEX.match(value):
            raise VerificationError(
                f"digest {text[:100]!r}: expected {_ALGORITHMS[algorithm]} lowercase hex digits"
            )
        return cls(algorithm, value)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data``."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class VerifyingReader:
    """A binary reader that hashes what passes through and refuses to exceed a size.

    ``expected_size`` None means unknown; ``limit`` bounds the bytes read in any case.
    """

    def __init__(
        self,
        source: Readable,
        expected: Digest,
        expected_size: int | None,
        limit: int | None = None,
        what: str = "blob",
    ) -> None:
        self._source = source
        self.expected = expected
        self.expected_size = expected_size
        self._limit = expected_size if expected_size is not None else limit
        self._hash = expected.hasher()
        self.count = 0
        self.what = what

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            size = CHUNK
        if self._limit is not None:
            # Ask for one byte beyond the limit so an oversized stream is noticed.
            size = min(size, self._limit - self.count + 1)
            if size <= 0:
                return b""
        data = self._source.read(size)
        self.count += len(data)
        if self._limit is not None and self.count > self._limit:
            raise VerificationError(
                f"{self.what} {self.expected}: more than {self._limit} bytes "
                f"({'declared size' if self.expected_size is not None else 'size limit'})"
            )
        self._hash.update(data)
        return data

    def drain(self) -> None:
        """Read and hash whatever the source still holds."""
        while self.read(CHUNK):
            pass

    def verify(self) -> None:
        """Drain the source, then check size and digest.

        Raises VerificationError naming the expected digest and what was found.
        """
        self.drain()
        if self.expected_size is not None and self.count != self.expected_size:
            raise VerificationError(
                f"{self.what} {self.expected}: got {self.count} bytes, "
                f"descriptor says {self.expected_size}"
            )
        actual = self._hash.hexdigest()
        if actual != self.expected.hex:
            raise VerificationError(
                f"{self.what} {self.expected}: content does not match its digest "
                f"(got {self.expected.algorithm}:{actual})"
            )


def read_verified(
    source: BinaryIO | Readable,
    expected: Digest,
    limit: int,
    expected_size: int | None = None,
    what: str = "blob",
) -> bytes:
    """Read a whole small blob (manifest, config), at most ``limit`` bytes, and verify it.

    Raises VerificationError when it is too large or does not match.
    """
    if expected_size is not None and expected_size > limit:
        raise VerificationError(
            f"{what} {expected}: declared size {expected_size} exceeds the limit of {limit} bytes"
        )
    reader = VerifyingReader(source, expected, expected_size, limit=limit, what=what)
    parts = []
    while chunk := reader.read(CHUNK):
        parts.append(chunk)
    reader.verify()
    return b"".join(parts)
